"""recsys.validation.health: the data-health trend per partition date, on a literal store.

The store holds the files validation writes (summary.json in its real shape, a quarantine reason.json,
the registry's accepted_invalid entry, raw partitions' _SUCCESS markers): a passed, a missing, a failed
(quarantined), an accepted, a not-validated and a second passed date. Every expected number is worked out
by hand in the comments.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from typing import Any

import pytest

from recsys import registry
from recsys.storage import layout
from recsys.storage.local import LocalStore
from recsys.validation import health

D1, D2, D3, D4, D5, D6 = (date(2011, 1, d) for d in range(3, 9))


def _check(name: str, expectation: str, observed: Any, expected: dict[str, Any], success: bool = True,
           column: str | None = None) -> dict[str, Any]:
    return {"suite": "raw_events", "check": name, "expectation": expectation, "column": column,
            "success": success, "observed_value": observed, "unexpected_count": None, "unexpected_examples": [],
            "expected": expected, "error": None}


def _checks(rows: int, band: tuple[int, int | None], new_users: tuple[float, float], new_items: tuple[float, float],
            top: tuple[float, float], unique: float, failed: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    volume = {"min_value": band[0]} | ({"max_value": band[1]} if band[1] is not None else {})
    checks = [
        _check("event types", "expect_column_values_to_be_in_set", None, {}, "event types" not in failed,
               "event_type"),
        _check(health.VOLUME_CHECK, "expect_table_row_count_to_be_between", rows, volume,
               health.VOLUME_CHECK not in failed),
        _check(health.NEW_USER_CHECK, "expect_column_mean_to_be_between", new_users[0],
               {"min_value": 0.0, "max_value": new_users[1]}, health.NEW_USER_CHECK not in failed, "_new_user"),
        _check(health.NEW_ITEM_CHECK, "expect_column_mean_to_be_between", new_items[0],
               {"min_value": 0.0, "max_value": new_items[1]}, health.NEW_ITEM_CHECK not in failed, "_new_item"),
        _check(health.TOP_ITEM_CHECK, "expect_column_mean_to_be_between", top[0],
               {"min_value": 0.0, "max_value": top[1]}, health.TOP_ITEM_CHECK not in failed, "_top_item"),
        _check(health.DUPLICATE_CHECK, "expect_column_proportion_of_unique_values_to_be_between", unique,
               {"min_value": 0.99, "max_value": 1}, health.DUPLICATE_CHECK not in failed, "event_id"),
    ]
    return checks


def _summary(day: date, rows: int, checks: list[dict[str, Any]], notes: dict[str, str],
             accepted: dict[str, Any] | None = None) -> dict[str, Any]:
    failed = [c["expectation"] for c in checks if not c["success"]]
    return {"date": day.isoformat(), "success": not failed, "rows": rows, "problem": None, "checks": checks,
            "failed": failed, "report_path": f"{layout.validation_report(day)}/summary.json", "notes": notes,
            "accepted": accepted, "validated_at": f"{day.isoformat()}T06:00:00+00:00", "data_docs": {}}


def _land(store, day: date) -> None:
    store.write_bytes(f"{layout.raw_events(day)}/part-00000.parquet", b"not read by the trend")
    store.mark_success(layout.raw_events(day))


ACCEPT_REASON = "promotion of <b>one</b> item & its <script>alert(1)</script>"


@pytest.fixture
def health_store(store):
    """D1 passed (no history), D2 missing, D3 failed (volume and new items; quarantined), D4 accepted (top item
    share), D5 landed but not validated, D6 passed. Summaries in the format validation wrote before it stored
    ``margins`` (the trailing average only in its note), except D6, which stores its margins."""
    for day in (D1, D3, D4, D5, D6):
        _land(store, day)
    # D1: 1000 rows, no history: band 1 .. (none); shares not checked yet (limit 1.0); top item 5% of 20%
    d1 = _summary(D1, 1000, _checks(1000, (1, None), (1.0, 1.0), (1.0, 1.0), (0.05, 0.2), 1.0), {
        health.VOLUME_CHECK: "1000 rows; no accepted partition before 2011-01-03 yet, so only non-empty is checked",
        health.TOP_ITEM_CHECK: "item 85123A has 5.0% of the events; at most 20% allowed",
    })
    # D3: 150 rows against the average 1000 of D1 (factor 5): band 200 .. 5001; 150 / 1000 = 0.15x, limit
    # 200 / 1000 = 0.20x, margin -0.05; new users 0.5 of 0.95 (margin 0.45); new items 0.6 of 0.5 (-0.1);
    # unique event ids 0.995 -> duplicates 0.005 of 0.01 (margin 0.005)
    d3 = _summary(D3, 150, _checks(150, (200, 5001), (0.5, 0.95), (0.6, 0.5), (0.1, 0.2), 0.995,
                                   failed=(health.VOLUME_CHECK, health.NEW_ITEM_CHECK)), {
        health.VOLUME_CHECK: "150 rows; the last 1 accepted partitions (2011-01-03 .. 2011-01-03) averaged 1000 "
                             "rows, so 200 .. 5001 are expected (factor 5)",
        health.TOP_ITEM_CHECK: "item 85123A has 10.0% of the events; at most 20% allowed",
    })
    store.write_json(f"{layout.quarantine_events(D3)}/reason.json", {"date": D3.isoformat()})
    # D4: 1200 rows, average still 1000 (D3 failed): 1.2x, nearer end 5001 / 1000 = 5.001x, margin 3.801;
    # top item "<img src=x onerror=alert(1)>" has 25% of 20% (margin -0.05); accepted by on-call
    entry = registry.record_accepted_invalid(store, D4, ACCEPT_REASON, ["expect_column_mean_to_be_between"], "r4")
    d4 = _summary(D4, 1200, _checks(1200, (200, 5001), (0.3, 0.95), (0.1, 0.5), (0.25, 0.2), 1.0,
                                    failed=(health.TOP_ITEM_CHECK,)), {
        health.VOLUME_CHECK: "1200 rows; the last 1 accepted partitions (2011-01-03 .. 2011-01-03) averaged 1000 "
                             "rows, so 200 .. 5001 are expected (factor 5)",
        health.TOP_ITEM_CHECK: "item <img src=x onerror=alert(1)> has 25.0% of the events; at most 20% allowed",
    }, accepted=dict(entry))
    # D6: 330 rows; average of D1 and D4 = 1100 (stored exactly); band 220 .. 5501: 0.30x, limit 0.20x, margin 0.10
    checks6 = _checks(330, (220, 5501), (0.2, 0.95), (0.05, 0.5), (0.19, 0.2), 1.0)
    d6 = _summary(D6, 330, checks6, {})
    d6["margins"] = health.margins(checks6, average=1100.0, days=2, top_item="22423")
    for summary in (d1, d3, d4, d6):
        store.write_json(f"{layout.validation_report(date.fromisoformat(summary['date']))}/summary.json", summary)
    return store


def test_one_row_per_date_with_its_status(health_store):
    rows = health.trend_rows(health_store)
    assert [r["date"] for r in rows] == [d.isoformat() for d in (D1, D2, D3, D4, D5, D6)]
    assert [r["status"] for r in rows] == [health.PASSED, health.MISSING, health.FAILED, health.ACCEPTED,
                                           health.NOT_VALIDATED, health.PASSED]
    assert [r["events"] for r in rows] == [1000, None, 150, 1200, None, 330]
    assert [r["failed_checks"] for r in rows] == [0, None, 2, 1, None, 0]
    assert rows[2]["failed"] == [health.VOLUME_CHECK, health.NEW_ITEM_CHECK]
    assert [r["quarantined"] for r in rows] == [False, False, True, False, False, False]
    assert rows[3]["accepted_reason"] == ACCEPT_REASON
    assert rows[0]["report"] == "reports/validation/dt=2011-01-03/summary.json"
    assert rows[1]["report"] is None and rows[4]["report"] is None


def test_volume_band_and_margin_to_the_trailing_average(health_store):
    rows = {r["date"]: r for r in health.trend_rows(health_store)}
    first = rows[D1.isoformat()]
    assert (first["volume_min"], first["volume_max"], first["volume_average"]) == (1, None, None)
    assert first["volume_margin"] is None and first["margins"]["volume"]["checked"] is False

    failed = rows[D3.isoformat()]
    assert (failed["volume_min"], failed["volume_max"], failed["volume_average"], failed["volume_days"]) == \
        (200, 5001, 1000.0, 1)
    assert failed["volume_ratio"] == pytest.approx(0.15)
    assert failed["volume_low_limit"] == pytest.approx(0.2)
    assert failed["volume_high_limit"] == pytest.approx(5.001)
    assert failed["volume_margin"] == pytest.approx(-0.05)
    assert failed["margins"]["volume"]["text"] == \
        "volume 0.15x of the trailing average (1000 events over 1 accepted days), limit 0.20x"

    accepted = rows[D4.isoformat()]  # above the average: the upper end is the nearer one
    assert accepted["volume_ratio"] == pytest.approx(1.2)
    assert accepted["margins"]["volume"]["side"] == "max"
    assert accepted["volume_margin"] == pytest.approx(5.001 - 1.2)

    stored = rows[D6.isoformat()]  # margins stored by validation: the exact average
    assert stored["volume_average"] == 1100.0 and stored["volume_days"] == 2
    assert stored["volume_ratio"] == pytest.approx(0.3)
    assert stored["volume_margin"] == pytest.approx(0.1)


def test_shares_and_duplicates_against_their_thresholds(health_store):
    rows = {r["date"]: r for r in health.trend_rows(health_store)}
    first = rows[D1.isoformat()]
    assert first["new_user_share"] == 1.0 and first["new_user_limit"] is None  # not checked without history
    assert first["top_item"] == "85123A"
    assert (first["top_item_share"], first["top_item_limit"]) == (0.05, 0.2)
    assert first["top_item_margin"] == pytest.approx(0.15)
    assert first["duplicate_ratio"] == 0.0 and first["duplicate_limit"] == pytest.approx(0.01)

    failed = rows[D3.isoformat()]
    assert (failed["new_user_share"], failed["new_user_limit"]) == (0.5, 0.95)
    assert failed["new_user_margin"] == pytest.approx(0.45)
    assert failed["new_item_margin"] == pytest.approx(-0.1)
    assert failed["duplicate_ratio"] == pytest.approx(0.005)
    assert failed["duplicate_margin"] == pytest.approx(0.005)

    accepted = rows[D4.isoformat()]
    assert accepted["top_item"] == "<img src=x onerror=alert(1)>"
    assert accepted["top_item_margin"] == pytest.approx(-0.05)
    assert rows[D6.isoformat()]["top_item"] == "22423"


def test_range_limits_and_an_empty_store(health_store, tmp_path):
    rows = health.trend_rows(health_store, start=D3, end=D4)
    assert [r["date"] for r in rows] == [D3.isoformat(), D4.isoformat()]
    assert health.trend_rows(LocalStore(tmp_path / "empty")) == []


def test_an_unreadable_summary_is_one_not_validated_row(health_store):
    health_store.write_bytes(f"{layout.validation_report(D6)}/summary.json", b"{not json")
    row = health.trend_rows(health_store)[-1]
    assert row["status"] == health.NOT_VALIDATED
    assert "cannot be read" in row["problem"]


def test_accepted_reason_from_the_registry_when_the_summary_lacks_it(health_store):
    path = f"{layout.validation_report(D4)}/summary.json"
    summary = health_store.read_json(path)
    summary["accepted"] = {"at": "t"}  # an older summary: no reason kept
    health_store.write_json(path, summary)
    row = next(r for r in health.trend_rows(health_store) if r["date"] == D4.isoformat())
    assert row["accepted_reason"] == ACCEPT_REASON


def test_csv_export_has_every_row_and_neutralises_formulas(health_store):
    rows = health.trend_rows(health_store)
    rows[0]["top_item"] = "=HYPERLINK(\"http://x\")"
    parsed = list(csv.DictReader(io.StringIO(health.rows_csv(rows))))
    assert [r["date"] for r in parsed] == [r["date"] for r in rows]
    assert list(parsed[0]) == list(health.CSV_COLUMNS)
    assert parsed[0]["top_item"] == "'=HYPERLINK(\"http://x\")"
    assert parsed[2]["volume_margin"] == "-0.05"  # a negative number stays a number
    assert parsed[2]["volume_ratio"] == "0.15"
    assert parsed[1]["events"] == "" and parsed[1]["status"] == "MISSING"
    assert parsed[2]["failed_names"] == f"{health.VOLUME_CHECK}; {health.NEW_ITEM_CHECK}"
    assert parsed[2]["quarantined"] == "true"


def test_json_export_round_trips(health_store):
    rows = health.trend_rows(health_store)
    assert json.loads(health.rows_json(rows)) == json.loads(json.dumps(rows))


def test_margin_lines_name_the_limit_and_the_distance(health_store):
    summary = health_store.read_json(f"{layout.validation_report(D3)}/summary.json")
    lines = health.margin_lines(summary)
    assert lines[0] == ("volume 0.15x of the trailing average (1000 events over 1 accepted days), limit 0.20x "
                        "(0.05x beyond the limit)")
    assert "new users 50.0%, limit 95.0% (45.0% of the events inside the limit)" in lines
    assert "new items 60.0%, limit 50.0% (10.0% of the events beyond the limit)" in lines


def test_volume_margin_of_an_empty_day_is_below_the_band():
    margin = health.volume_margin(0, (200, 5001), 1000.0, 7)
    assert margin["side"] == "min" and margin["margin"] == pytest.approx(-0.2)


def test_the_trend_of_days_validated_by_the_real_suites(store, publish_events):
    """Two real validations (Great Expectations): 3 events, then 6; the second day's band is 1 .. 16 around
    the average 3 (factor 5: int(3 / 5) -> at least 1, int(3 * 5) + 1 = 16), 6 / 3 = 2.00x of the average,
    the upper end 16 / 3 = 5.33x is the nearer one (log 2.67 < log 6), margin 3.33x."""
    from recsys.config import Settings
    from recsys.validation import validate_partition

    first = [(f"a-{i}", f"2011-01-03 0{i}:00:00", f"u{i}", "85123A", "purchase", 1, 2.5) for i in range(3)]
    second = [(f"b-{i}", f"2011-01-04 0{i}:00:00", f"u{i}", f"i{i % 3}", "purchase", 1, 2.5) for i in range(6)]
    publish_events(store, D1, first)
    publish_events(store, date(2011, 1, 4), second)
    for day in (D1, date(2011, 1, 4)):
        assert validate_partition(store, Settings(), day).success
    rows = health.trend_rows(store)
    assert [(r["date"], r["status"], r["events"], r["failed_checks"]) for r in rows] == [
        ("2011-01-03", health.PASSED, 3, 0), ("2011-01-04", health.PASSED, 6, 0)]
    assert (rows[0]["volume_min"], rows[0]["volume_max"], rows[0]["volume_margin"]) == (1, None, None)
    assert rows[0]["top_item"] == "85123A" and rows[0]["top_item_share"] == 1.0
    assert rows[0]["top_item_limit"] is None  # fewer than 100 rows: not checked
    day2 = rows[1]
    assert (day2["volume_min"], day2["volume_max"], day2["volume_average"], day2["volume_days"]) == (1, 16, 3.0, 1)
    assert day2["volume_ratio"] == pytest.approx(2.0)
    assert day2["volume_high_limit"] == pytest.approx(16 / 3)
    assert day2["volume_margin"] == pytest.approx(16 / 3 - 2)
    assert day2["duplicate_ratio"] == 0.0 and day2["duplicate_limit"] == 0.0 and day2["duplicate_margin"] == 0.0
    assert day2["top_item_share"] == pytest.approx(2 / 6)
    # validation stored the margins with the exact average, and the same numbers come back from the summary
    stored = store.read_json(layout.validation_summary(date(2011, 1, 4)))["margins"]
    assert stored["volume"]["average"] == 3.0 and stored["volume"]["days"] == 1
    assert stored["volume"]["text"] == \
        "volume 2.00x of the trailing average (3 events over 1 accepted days), limit 5.33x"
    assert stored["top_item"]["item_id"] in ("i0", "i1", "i2")
    assert store.read_json(layout.validation_summary(D1))["margins"]["volume"]["checked"] is False


def test_recsys_summary_shows_the_margins_and_exports_the_trend(health_store, monkeypatch, capsys):
    from recsys import report
    from recsys.cli import main

    lines = report.date_lines(health_store, D3.isoformat(), registry.load(health_store))
    assert lines[2] == ("   margins    : volume 0.15x of the trailing average (1000 events over 1 accepted days), "
                        "limit 0.20x (0.05x beyond the limit)")
    assert "                new users 50.0%, limit 95.0% (45.0% of the events inside the limit)" in lines

    monkeypatch.setenv("RECSYS_STORAGE_ROOT", health_store.uri("").removeprefix("file://"))
    assert main(["summary", "--format", "csv"]) == 0
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["date"], r["status"]) for r in parsed] == [
        ("2011-01-03", "PASSED"), ("2011-01-04", "MISSING"), ("2011-01-05", "FAILED"), ("2011-01-06", "ACCEPTED"),
        ("2011-01-07", "NOT VALIDATED"), ("2011-01-08", "PASSED")]
    assert parsed[2]["volume_margin"] == "-0.05"
    assert main(["summary", "--format", "json", "--date", "2011-01-06"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"] == "ACCEPTED" and row["top_item_margin"] == pytest.approx(-0.05)
