"""The daily catalog rebuilt from item events: the day before + the day's events in event-time order."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from recsys import schema
from recsys.storage import layout
from recsys.storage.local import LocalStore
from recsys.streaming import StreamingError
from recsys.streaming.catalog import apply_item_events, rebuild

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
DAY = date(2026, 12, 1)


def item(n: int, item_id: str, kind: str, minutes: int = 0, **extra: object) -> dict[str, object]:
    return {"event_id": f"c{n}", "event_time": T0 + timedelta(minutes=minutes), "item_id": item_id,
            "event_type": kind, "price": None, "title": None, "category": None, **extra}


def base() -> pd.DataFrame:
    return pd.DataFrame({schema.ITEM_ID: ["a", "b"], schema.TITLE: ["mug", "cup"], schema.CATEGORY: [None, None],
                         schema.PRICE: [1.0, 2.0], schema.AVAILABLE: [True, True]}).astype(schema.CATALOG_DTYPES)


def rows(frame: pd.DataFrame) -> dict[str, tuple[object, ...]]:
    return {r[schema.ITEM_ID]: (r[schema.TITLE], r[schema.PRICE], bool(r[schema.AVAILABLE]))
            for r in frame.to_dict("records")}


def test_events_apply_in_event_time_order_not_arrival_order() -> None:
    got = apply_item_events(base(), [
        item(2, "a", "back_in_stock", minutes=5),  # arrives first, happened last
        item(1, "a", "out_of_stock", minutes=1),
        item(3, "b", "price_change", minutes=2, price=2.5),
        item(4, "b", "delisted", minutes=3),
        item(5, "c", "listed", minutes=4, title="new lamp", price=9.0),
        item(5, "c", "delisted", minutes=6),  # the same event id again: applied once
    ])
    assert rows(got) == {"a": ("mug", 1.0, True), "b": ("cup", 2.5, False), "c": ("new lamp", 9.0, True)}
    assert list(got.dtypes.astype(str)) == [str(schema.CATALOG_DTYPES[c]) for c in schema.CATALOG_COLUMNS]


def test_no_events_keep_the_base_and_an_unknown_item_is_added_untitled() -> None:
    assert rows(apply_item_events(base(), [])) == rows(base())
    got = apply_item_events(base(), [item(1, "z", "out_of_stock")])
    assert rows(got)["z"][0] == "" and rows(got)["z"][2] is False


def test_rebuild_writes_the_partition_from_the_day_before(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    before = DAY - timedelta(days=1)
    store.write_parquet(f"{layout.raw_catalog(before)}/part-00000.parquet", base())
    store.mark_success(layout.raw_catalog(before))
    rebuild(store, DAY, [item(1, "a", "out_of_stock")])
    assert store.is_complete(layout.raw_catalog(DAY))
    written = pd.read_parquet(tmp_path / layout.raw_catalog(DAY) / "part-00000.parquet")
    assert rows(written) == {"a": ("mug", 1.0, False), "b": ("cup", 2.0, True)}
    with pytest.raises(StreamingError, match="complete already"):
        rebuild(store, DAY, [])
    rebuild(store, DAY, [], replace=True)
    assert rows(pd.read_parquet(tmp_path / layout.raw_catalog(DAY) / "part-00000.parquet")) == rows(base())
