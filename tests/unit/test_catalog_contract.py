"""The catalog suite (expectations/catalog.json) stops every catalog the serving index cannot be built from.

Issue 18 #3: a catalog with blank ``available`` values passed validation and then broke refresh-index,
deploy and rollback. The class: a null or unparseable value in a column a later step reads. Each bad
snapshot here is stopped by validation; the good one passes and builds an index.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from recsys import registry, schema
from recsys.config import Settings
from recsys.serving.deploy import build_index
from recsys.storage import layout
from recsys.validation import ValidationFailed, validate_partition

DAY = date(2011, 1, 4)
EVENTS = [
    ("581001-0", "2011-01-04 08:00:00", "17850", "85123A", "purchase", 6, 2.55),
    ("581002-0", "2011-01-04 12:00:00", "13047", "22633", "view", 1, 0.85),
]
ITEMS = ["85123A", "22633", "71053"]


def _catalog(**overrides) -> pd.DataFrame:
    frame = pd.DataFrame({
        schema.ITEM_ID: pd.array(ITEMS, dtype="string"),
        schema.TITLE: pd.array(["Heart", "Lantern", "Warmer"], dtype="string"),
        schema.CATEGORY: pd.array([None] * 3, dtype="string"),
        schema.PRICE: [2.55, 0.85, 3.39],
        schema.AVAILABLE: [True, True, False],
    })
    for column, values in overrides.items():
        if values is None:
            frame = frame.drop(columns=[column])
        else:
            frame[column] = values
    return frame


BAD = {
    "blank availability": (_catalog(available=pd.array([True, None, False], dtype="boolean")),
                           "[catalog availability not null]"),
    "availability as text": (_catalog(available=pd.array(["yes", "yes", "no"], dtype="string")),
                             "[catalog availability is a true/false column]"),
    "no availability column": (_catalog(available=None), "[catalog column available present]"),
    "blank title": (_catalog(title=pd.array(["Heart", None, "Warmer"], dtype="string")), "[catalog title not null]"),
    "blank price": (_catalog(price=[2.55, float("nan"), 3.39]), "[catalog price not null]"),
    "price as text": (_catalog(price=pd.array(["2.55", "0.85", "3.39"], dtype="string")),
                      "[catalog price is a number]"),
    "blank item id": (_catalog(item_id=pd.array(["85123A", None, "71053"], dtype="string")),
                      "[catalog item_id not null]"),
}


@pytest.fixture
def day_store(store, publish_events, put_vocab, put_version):
    """The day's events, and a version 1 that knows the catalog's items."""
    publish_events(store, DAY, EVENTS)
    put_vocab(store, "users", ["17850", "13047"])
    put_vocab(store, "items", ITEMS)
    put_version(store, 1, date(2011, 1, 3), [[0.0, 0.0]] * 3, [[0.0, 0.0]] * 4)
    return store


def _land(store, catalog: pd.DataFrame) -> None:
    store.write_parquet(f"{layout.raw_catalog(DAY)}/part-00000.parquet", catalog)
    store.mark_success(layout.raw_catalog(DAY))


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_catalog_the_later_steps_cannot_read_is_stopped_by_validation(day_store, kind):
    catalog, check = BAD[kind]
    _land(day_store, catalog)
    with pytest.raises(ValidationFailed) as info:
        validate_partition(day_store, Settings(), DAY)
    assert check in str(info.value)
    assert registry.load(day_store)["champion"] is None


def test_a_good_catalog_passes_and_builds_the_index(day_store):
    _land(day_store, _catalog())
    assert validate_partition(day_store, Settings(), DAY).success
    index = build_index(day_store, 1, DAY)
    assert list(index[schema.ITEM_ID]) == ["85123A", "22633"]
