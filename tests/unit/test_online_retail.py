"""recsys.datasets.online_retail: UCI Online Retail lines -> canonical events and catalog."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from recsys import schema
from recsys.datasets import online_retail
from recsys.datasets.online_retail import SOURCE_COLUMNS, MappingStats, SourceError

UK = "United Kingdom"

# One day of invoice lines, every value text as in the per-day CSVs.
LINES = [
    # InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice, CustomerID, Country
    ("536365", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", "6", "2010-12-01 08:26:00", "2.55", "17850.0", UK),
    ("536365", "71053", "WHITE METAL LANTERN", "6", "2010-12-01 08:26:00", "3.39", "17850.0", UK),
    ("536366", "22633", "HAND WARMER UNION JACK", "0", "2010-12-01 08:28:00", "1.85", "13047.0", UK),  # qty 0
    ("536366", "22632", "HAND WARMER RED POLKA DOT", "3", "2010-12-01 08:28:00", "1.85", "13047.0", UK),
    ("C536379", "D", "Discount", "-1", "2010-12-01 09:41:00", "27.50", "14527.0", UK),  # cancellation
    ("536414", "22139", "", "56", "2010-12-01 11:52:00", "0.00", "", UK),  # guest checkout
    ("536367", "84879", "ASSORTED COLOUR BIRD ORNAMENT", "32", "2010-12-01 08:34:00", "1.69", "13047.0", "France"),
    ("536368", "71053", "WHITE METAL LANTERN", "-2", "2010-12-01 08:35:00", "3.39", "14527.0", UK),  # adjustment
]


def lines_frame(rows=LINES) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(SOURCE_COLUMNS))


def test_to_events_maps_purchases_to_the_canonical_schema():
    events, _ = online_retail.to_events(lines_frame())
    # kept: lines 0, 1, 3 (position 1 of invoice 536366: position counts every line of the invoice), 6
    assert list(events[schema.EVENT_ID]) == ["536365-0", "536365-1", "536366-1", "536367-0"]
    assert list(events[schema.USER_ID]) == ["17850", "17850", "13047", "13047"]
    assert list(events[schema.ITEM_ID]) == ["85123A", "71053", "22632", "84879"]
    assert set(events[schema.EVENT_TYPE]) == {"purchase"}
    assert list(events[schema.QUANTITY]) == [6, 6, 3, 32]
    assert list(events[schema.PRICE]) == [2.55, 3.39, 1.85, 1.69]
    assert list(events[schema.SESSION_ID]) == ["536365", "536365", "536366", "536367"]
    assert list(events[schema.COUNTRY]) == [UK, UK, UK, "France"]
    assert list(events[schema.EVENT_TIME]) == [
        pd.Timestamp("2010-12-01 08:26:00", tz="UTC"),
        pd.Timestamp("2010-12-01 08:26:00", tz="UTC"),
        pd.Timestamp("2010-12-01 08:28:00", tz="UTC"),
        pd.Timestamp("2010-12-01 08:34:00", tz="UTC"),
    ]
    assert list(events.index) == [0, 1, 2, 3]


def test_to_events_has_the_canonical_columns_and_dtypes():
    events, _ = online_retail.to_events(lines_frame())
    assert tuple(events.columns) == schema.EVENT_COLUMNS
    assert {c: str(t) for c, t in events.dtypes.items()} == schema.EVENT_DTYPES


def test_mapping_stats_count_every_line_once():
    _, stats = online_retail.to_events(lines_frame())
    assert stats == MappingStats(
        source_rows=8, events=4, guest_checkouts=1, cancellations=1, non_positive_quantity=2
    )
    assert stats.events + stats.guest_checkouts + stats.cancellations + stats.non_positive_quantity == 8
    assert stats.as_dict() == {
        "source_rows": 8, "events": 4, "guest_checkouts": 1, "cancellations": 1, "non_positive_quantity": 2,
    }


def test_a_guest_cancellation_counts_as_guest_and_bad_quantity_as_non_positive():
    rows = [
        ("C536391", "22556", "PLASTERS IN TIN", "-12", "2010-12-01 10:24:00", "1.65", " ", UK),
        ("536400", "22557", "PLASTERS", "many", "2010-12-01 10:25:00", "1.65", "17850.0", UK),
        ("536401", "22558", "CLOTHES PEGS", "1", "2010-12-01 10:26:00", "1.65", "17850", UK),
    ]
    events, stats = online_retail.to_events(lines_frame(rows))
    assert stats == MappingStats(3, 1, 1, 0, 1)
    assert list(events[schema.EVENT_ID]) == ["536401-0"]
    assert list(events[schema.USER_ID]) == ["17850"]  # an id without the .0 suffix stays as it is


def test_catalog_snapshot_takes_latest_non_blank_title_and_latest_price():
    rows = [
        # out of time order on purpose: the snapshot sorts by InvoiceDate
        ("536500", "A", "", "1", "2010-12-03 09:00:00", "0.50", "", UK),  # latest A: blank title
        ("536300", "A", "old title", "1", "2010-12-01 09:00:00", "1.00", "1.0", UK),
        ("536400", "A", " new title ", "1", "2010-12-02 09:00:00", "2.00", "1.0", UK),
        ("536301", "B", "", "1", "2010-12-01 09:00:00", "3.00", "1.0", UK),  # never titled
        ("536302", "C", "first", "1", "2010-12-01 10:00:00", "4.00", "1.0", UK),
        ("536303", "C", "second", "1", "2010-12-01 10:00:00", "5.00", "1.0", UK),  # same time, later line
    ]
    catalog = online_retail.catalog_snapshot(lines_frame(rows))
    assert tuple(catalog.columns) == schema.CATALOG_COLUMNS
    assert {c: str(t) for c, t in catalog.dtypes.items()} == schema.CATALOG_DTYPES
    assert list(catalog[schema.ITEM_ID]) == ["A", "B", "C"]
    assert list(catalog[schema.TITLE]) == ["new title", "", "second"]
    assert list(catalog[schema.PRICE]) == [0.50, 3.00, 5.00]
    assert list(catalog[schema.AVAILABLE]) == [True, True, True]
    assert catalog[schema.CATEGORY].isna().all()


def _write_csv(path, rows) -> None:
    lines_frame(rows).to_csv(path, index=False)


def test_load_source_reads_a_directory_of_day_csvs(tmp_path):
    _write_csv(tmp_path / "2010-12-02.csv", [LINES[0]])
    _write_csv(tmp_path / "2010-12-01.csv", [LINES[5], LINES[6]])
    raw = online_retail.load_source(tmp_path)
    assert list(raw.columns) == [*SOURCE_COLUMNS, "day"]
    # files in name order, values kept as text (the blank CustomerID stays "", not NaN)
    assert list(raw["InvoiceNo"]) == ["536414", "536367", "536365"]
    assert list(raw["CustomerID"]) == ["", "13047.0", "17850.0"]
    assert list(raw["Quantity"]) == ["56", "32", "6"]
    assert list(raw["day"]) == [date(2010, 12, 1), date(2010, 12, 1), date(2010, 12, 1)]
    assert online_retail.source_days(raw) == [date(2010, 12, 1)]


def test_source_days_are_sorted_and_unique(tmp_path):
    late = ("536999", "A", "x", "1", "2010-12-05 09:00:00", "1.0", "1.0", UK)
    _write_csv(tmp_path / "a.csv", [late, LINES[0], late])
    raw = online_retail.load_source(tmp_path)
    assert online_retail.source_days(raw) == [date(2010, 12, 1), date(2010, 12, 5)]


def test_load_source_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        online_retail.load_source(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match=r"holds no \*\.csv files"):
        online_retail.load_source(empty)
    partial = tmp_path / "partial"
    partial.mkdir()
    lines_frame().drop(columns=["UnitPrice", "Country"]).to_csv(partial / "2010-12-01.csv", index=False)
    with pytest.raises(SourceError, match="UnitPrice") as info:
        online_retail.load_source(partial)
    assert "Country" in str(info.value)


def test_the_shipped_bundle_has_the_documented_shape():
    raw = online_retail.load_source()
    assert len(raw) == 541_909  # datasets/data/README.md
    days = online_retail.source_days(raw)
    assert (days[0], days[-1]) == (date(2010, 12, 1), date(2011, 12, 9))
    assert all(d.weekday() != 5 for d in days)  # no Saturdays
