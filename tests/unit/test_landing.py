"""recsys.datasets.landing: the upstream simulator that publishes raw partitions."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from recsys import schema
from recsys.datasets import landing
from recsys.datasets.landing import Landed, land_days, select_days
from recsys.datasets.online_retail import SOURCE_COLUMNS, SourceError

UK = "United Kingdom"
D1, D3, D6 = date(2010, 12, 1), date(2010, 12, 3), date(2010, 12, 6)

DAYS = {
    "2010-12-01": [
        ("536365", "85123A", "WHITE HANGING HEART", "6", "2010-12-01 08:26:00", "2.55", "17850.0", UK),
        ("536365", "71053", "WHITE METAL LANTERN", "6", "2010-12-01 08:26:00", "3.39", "17850.0", UK),
        ("536414", "22139", "", "56", "2010-12-01 11:52:00", "0.00", "", UK),  # guest
    ],
    "2010-12-03": [
        ("536500", "22633", "HAND WARMER", "4", "2010-12-03 10:00:00", "1.85", "13047.0", UK),
        ("C536501", "85123A", "WHITE HANGING HEART", "-1", "2010-12-03 11:00:00", "2.55", "17850.0", UK),
    ],
    "2010-12-06": [
        ("536600", "71053", "WHITE METAL LANTERN", "2", "2010-12-06 09:00:00", "3.50", "12583.0", "France"),
    ],
}


@pytest.fixture
def source(tmp_path):
    """A directory of per-day CSVs with data on Wed 1, Fri 3 and Mon 6 December 2010."""
    directory = tmp_path / "source"
    directory.mkdir()
    for day, rows in DAYS.items():
        pd.DataFrame(rows, columns=list(SOURCE_COLUMNS)).to_csv(directory / f"{day}.csv", index=False)
    return directory


def _snapshot(store) -> dict[str, bytes]:
    return {
        str(p.relative_to(store.root)): p.read_bytes() for p in sorted(store.root.rglob("*")) if p.is_file()
    }


def test_select_days_skips_days_without_data():
    available = [D1, D3, D6]
    assert select_days(available, date(2010, 12, 2), 2) == [D3, D6]
    assert select_days(available, D1, 1) == [D1]
    assert select_days(available, D1, 10) == [D1, D3, D6]


def test_select_days_errors():
    with pytest.raises(SourceError, match="--days must be positive, got 0"):
        select_days([D1], D1, 0)
    with pytest.raises(SourceError, match="2010-12-01 to 2010-12-06") as info:
        select_days([D1, D3, D6], date(2010, 12, 7), 1)
    assert "no Online Retail data on or after 2010-12-07" in str(info.value)


def test_land_days_publishes_events_catalog_and_markers(store, source):
    landed = land_days(store, date(2010, 12, 2), days=2, source=source)
    assert landed == [Landed(D3, 1, 4, False), Landed(D6, 1, 4, False)]
    assert landed[0].as_dict() == {"date": "2010-12-03", "events": 1, "catalog_items": 4, "already_present": False}
    assert store.partitions("raw/events") == [D3, D6]
    assert store.partitions("raw/catalog") == [D3, D6]
    assert store.list_dir("raw/events/dt=2010-12-03") == ["_SUCCESS", "_source_stats.json", "part-00000.parquet"]
    assert store.list_dir("raw/catalog/dt=2010-12-03") == ["_SUCCESS", "part-00000.parquet"]
    assert store.read_json("raw/events/dt=2010-12-03/_source_stats.json") == {
        "source_rows": 2, "events": 1, "guest_checkouts": 0, "cancellations": 1, "non_positive_quantity": 0,
    }
    events = store.read_parquet("raw/events/dt=2010-12-03/part-00000.parquet")
    assert list(events[schema.EVENT_ID]) == ["536500-0"]
    assert list(events[schema.USER_ID]) == ["13047"]
    # the catalog of a day knows every item seen up to that day, with the latest price
    catalog = store.read_parquet("raw/catalog/dt=2010-12-06/part-00000.parquet")
    assert list(catalog[schema.ITEM_ID]) == ["22139", "22633", "71053", "85123A"]
    assert catalog.set_index(schema.ITEM_ID).loc["71053", schema.PRICE] == 3.50


def test_land_days_exact_lands_that_day(store, source):
    landed = land_days(store, D1, source=source, exact=True)
    assert landed == [Landed(D1, 2, 3, False)]
    assert store.partitions("raw/events") == [D1]


def test_landing_twice_is_idempotent(store, source):
    land_days(store, D1, days=2, source=source)
    before = _snapshot(store)
    again = land_days(store, D1, days=2, source=source)
    assert [x.already_present for x in again] == [True, True]
    assert [(x.day, x.events) for x in again] == [(D1, 2), (D3, 1)]
    assert _snapshot(store) == before


def test_an_events_partition_without_marker_is_landed_again(store, source):
    land_days(store, D1, source=source)
    store.root.joinpath("raw/events/dt=2010-12-01/_SUCCESS").unlink()  # as if the upstream job crashed
    landed = land_days(store, D1, source=source)
    assert landed == [Landed(D1, 2, 3, False)]
    assert store.is_complete("raw/events/dt=2010-12-01")


def test_exact_day_without_data_raises_and_writes_nothing(store):
    with pytest.raises(SourceError, match="no invoice lines on 2010-12-04") as info:
        land_days(store, date(2010, 12, 4), exact=True)  # the shipped bundle; a Saturday
    assert "Saturday" in str(info.value)
    assert "2010-12-01 to 2011-12-09" in str(info.value)
    assert store.list_dir("") == []


def test_the_bundle_lands_the_next_day_with_data_after_a_saturday(store):
    landed = land_days(store, date(2010, 12, 4), days=1)
    assert [x.day for x in landed] == [date(2010, 12, 5)]
    stats = store.read_json("raw/events/dt=2010-12-05/_source_stats.json")
    assert stats["events"] == landed[0].events
    assert stats["source_rows"] == (
        stats["events"] + stats["guest_checkouts"] + stats["cancellations"] + stats["non_positive_quantity"]
    )
    assert len(store.read_parquet("raw/events/dt=2010-12-05/" + landing.DATA_FILE)) == stats["events"]


def test_an_empty_source_raises_source_error(store, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    pd.DataFrame(columns=list(SOURCE_COLUMNS)).to_csv(empty / "2010-12-01.csv", index=False)
    with pytest.raises(SourceError):
        land_days(store, D1, source=empty)
