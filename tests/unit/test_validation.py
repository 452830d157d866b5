"""recsys.validation (partition, suites, results, quarantine): real Great Expectations runs (no mocks)."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from recsys.config import Settings
from recsys.storage import StorageError
from recsys.storage.raw import read_partition
from recsys.validation.partition import validate_partition
from recsys.validation.results import ValidationFailed, ValidationReport
from recsys.validation.suites import load_suite, suite_columns

DAY = date(2011, 1, 4)
RAW = "raw/events/dt=2011-01-04"
QUARANTINE = "quarantine/events/dt=2011-01-04"
SUMMARY = "reports/validation/dt=2011-01-04/summary.json"

VALID = [
    ("581001-0", "2011-01-04 00:00:00", "17850", "85123A", "purchase", 6, 2.55),
    ("581001-1", "2011-01-04 09:30:00", "17850", "71053", "add_to_cart", 1, 3.39),
    ("581002-0", "2011-01-04 23:59:59", "13047", "85123A", "view", 1, 0.0),
]
SUITE_SIZE = 36  # expectations in expectations/raw_events.json (no catalog snapshot in these tests)


def _files(store, directory: str) -> dict[str, bytes]:
    return {name: store.read_bytes(f"{directory}/{name}") for name in store.list_dir(directory)}


def test_a_valid_partition_passes_and_writes_its_summary(store, publish_events):
    publish_events(store, DAY, VALID)
    report = validate_partition(store, Settings(), DAY)
    assert report.success is True
    assert report.rows == 3
    assert len(report.checks) == SUITE_SIZE
    assert report.failed == []
    summary = store.read_json(SUMMARY)
    assert summary["success"] is True
    assert summary["rows"] == 3
    assert summary["failed"] == []
    assert summary["date"] == "2011-01-04"
    assert not store.exists("quarantine")


def test_an_unknown_event_type_fails_and_quarantines(store, publish_events):
    rows = [*VALID, ("581003-0", "2011-01-04 12:00:00", "12583", "22633", "click", 1, 1.0)]
    publish_events(store, DAY, rows)
    raw_before = _files(store, RAW)

    with pytest.raises(ValidationFailed) as info:
        validate_partition(store, Settings(), DAY)
    message = str(info.value)
    assert "expect_column_values_to_be_in_set(event_type)" in message
    assert QUARANTINE in message
    assert "rerun this date" in message

    # the raw partition is untouched, and copied (data, marker) to quarantine with the reasons
    assert _files(store, RAW) == raw_before
    quarantined = _files(store, QUARANTINE)
    assert sorted(quarantined) == ["_SUCCESS", "part-00000.parquet", "reason.json"]
    assert quarantined["part-00000.parquet"] == raw_before["part-00000.parquet"]
    reason = store.read_json(f"{QUARANTINE}/reason.json")
    assert reason["date"] == "2011-01-04"
    assert reason["problem"] is None
    assert [c["expectation"] for c in reason["failed"]] == ["expect_column_values_to_be_in_set"]
    assert reason["failed"][0]["column"] == "event_type"
    assert reason["failed"][0]["unexpected_count"] == 1
    assert reason["failed"][0]["unexpected_examples"] == ["click"]
    assert reason["report_path"] == SUMMARY

    summary = store.read_json(SUMMARY)
    assert summary["success"] is False
    assert summary["rows"] == 4
    assert summary["failed"] == ["expect_column_values_to_be_in_set"]


@pytest.mark.parametrize(
    ("bad_row", "expectation", "column"),
    [
        # an event of the next day in this day's partition
        (("581003-0", "2011-01-05 00:00:00", "12583", "22633", "purchase", 1, 1.0),
         "expect_column_values_to_be_between", "event_time"),
        # a repeated event id
        # (the duplicate ratio 1/4 is above the default tolerance 0)
        (("581001-0", "2011-01-04 12:00:00", "12583", "22633", "purchase", 1, 1.0),
         "expect_column_proportion_of_unique_values_to_be_between", "event_id"),
        # quantity 0
        (("581003-0", "2011-01-04 12:00:00", "12583", "22633", "purchase", 0, 1.0),
         "expect_column_values_to_be_between", "quantity"),
        # negative price
        (("581003-0", "2011-01-04 12:00:00", "12583", "22633", "purchase", 1, -1.0),
         "expect_column_values_to_be_between", "price"),
    ],
)
def test_each_broken_rule_is_reported(store, publish_events, bad_row, expectation, column):
    publish_events(store, DAY, [*VALID, bad_row])
    with pytest.raises(ValidationFailed, match=rf"{expectation}\({column}\)"):
        validate_partition(store, Settings(), DAY)
    failed = store.read_json(f"{QUARANTINE}/reason.json")["failed"]
    assert [(c["expectation"], c["column"]) for c in failed] == [(expectation, column)]


def test_a_null_user_is_reported(store, make_events):
    frame = make_events(VALID)
    frame.loc[1, "user_id"] = pd.NA
    store.write_parquet(f"{RAW}/part-00000.parquet", frame)
    store.mark_success(RAW)
    with pytest.raises(ValidationFailed, match=r"expect_column_values_to_not_be_null\(user_id\)"):
        validate_partition(store, Settings(), DAY)


def test_a_missing_column_is_reported(store, make_events):
    store.write_parquet(f"{RAW}/part-00000.parquet", make_events(VALID).drop(columns=["price"]))
    store.mark_success(RAW)
    with pytest.raises(ValidationFailed, match=r"expect_column_to_exist\(price\)"):
        validate_partition(store, Settings(), DAY)
    assert "expect_column_to_exist" in store.read_json(SUMMARY)["failed"]


def test_a_marker_without_data_files_is_quarantined_with_a_clear_problem(store):
    store.write_json(f"{RAW}/_source_stats.json", {"events": 0})
    store.mark_success(RAW)
    with pytest.raises(ValidationFailed, match="has a _SUCCESS marker but no data files"):
        validate_partition(store, Settings(), DAY)
    reason = store.read_json(f"{QUARANTINE}/reason.json")
    assert "no data files" in reason["problem"]
    # the problem is reported by the one check of the partition_integrity suite, with the problem as value
    assert [c["check"] for c in reason["failed"]] == ["partition readable and complete"]
    assert "no data files" in reason["failed"][0]["unexpected_examples"][0]
    assert sorted(store.list_dir(QUARANTINE)) == ["_SUCCESS", "_source_stats.json", "reason.json"]
    summary = store.read_json(SUMMARY)
    assert summary["success"] is False
    assert summary["rows"] == 0
    assert [c["suite"] for c in summary["checks"]] == ["partition_integrity"]
    assert "no data files" in summary["problem"]


def test_an_unreadable_data_file_is_quarantined(store):
    store.write_bytes(f"{RAW}/part-00000.parquet", b"this is not parquet")
    store.mark_success(RAW)
    with pytest.raises(ValidationFailed, match="cannot be read"):
        validate_partition(store, Settings(), DAY)
    assert store.read_bytes(f"{QUARANTINE}/part-00000.parquet") == b"this is not parquet"
    assert store.read_bytes(f"{RAW}/part-00000.parquet") == b"this is not parquet"


def test_an_unknown_data_file_type_is_quarantined(store):
    store.write_bytes(f"{RAW}/part-00000.json", b"[]")
    store.mark_success(RAW)
    with pytest.raises(ValidationFailed, match="unknown data file type"):
        validate_partition(store, Settings(), DAY)
    assert "unknown data file type" in store.read_json(SUMMARY)["problem"]


def test_a_missing_marker_raises_storage_error_and_quarantines_nothing(store, make_events):
    store.write_parquet(f"{RAW}/part-00000.parquet", make_events(VALID))  # data, but not yet published
    with pytest.raises(StorageError, match="no _SUCCESS marker"):
        validate_partition(store, Settings(), DAY)
    assert not store.exists("quarantine")
    assert not store.exists(SUMMARY)


def test_read_partition_concatenates_every_data_file(store, make_events):
    store.write_parquet(f"{RAW}/part-00000.parquet", make_events(VALID[:2]))
    store.write_parquet(f"{RAW}/part-00001.parquet", make_events(VALID[2:]))
    store.mark_success(RAW)
    frame = read_partition(store, RAW)
    assert list(frame["event_id"]) == ["581001-0", "581001-1", "581002-0"]


def test_read_partition_reads_only_the_asked_columns_of_parquet_and_csv_files(store, make_events):
    store.write_parquet(f"{RAW}/part-00000.parquet", make_events(VALID[:2]))
    store.write_bytes(f"{RAW}/part-00001.csv", make_events(VALID[2:]).to_csv(index=False).encode())
    store.mark_success(RAW)
    frame = read_partition(store, RAW, columns=["user_id", "quantity"])
    assert list(frame.columns) == ["user_id", "quantity"]
    assert list(frame["user_id"]) == ["17850", "17850", "13047"]
    assert list(frame["quantity"]) == [6, 1, 1]
    assert str(frame["quantity"].dtype) == "int64"
    with pytest.raises(StorageError, match=r"part-00000\.parquet has no column basket_id \(it has event_id, "):
        read_partition(store, RAW, columns=["user_id", "basket_id"])


def test_great_expectations_gets_only_the_columns_its_suite_reads(make_events):
    frame = make_events(VALID)
    picked = suite_columns(frame, load_suite())
    assert list(picked.columns) == ["event_id", "event_time", "user_id", "item_id", "event_type", "quantity", "price"]
    table_rule = {"expectations": [{"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": []}}]}
    assert list(suite_columns(frame, table_rule).columns) == list(frame.columns)


def test_a_valid_csv_partition_passes(store, make_events):
    store.write_bytes(f"{RAW}/part-00000.csv", make_events(VALID).to_csv(index=False).encode())
    store.mark_success(RAW)
    assert validate_partition(store, Settings(), DAY).success is True


def test_load_suite_reads_the_shipped_suite_and_reports_a_missing_one():
    suite = load_suite()
    assert suite["name"] == "raw_events"
    assert len(suite["expectations"]) == SUITE_SIZE
    with pytest.raises(ValidationFailed, match=r"no_such_suite\.json is missing"):
        load_suite("no_such_suite")


def test_report_as_dict_lists_failed_expectation_names():
    report = ValidationReport(
        DAY, False, 2,
        checks=[{"expectation": "a", "success": True}, {"expectation": "b", "success": False}],
        report_path="r.json",
    )
    assert report.as_dict() == {
        "date": "2011-01-04", "success": False, "rows": 2, "problem": None,
        "checks": [{"expectation": "a", "success": True}, {"expectation": "b", "success": False}],
        "failed": ["b"], "report_path": "r.json", "fingerprint": None, "passed_fingerprint": None, "notes": {},
        "data_docs": {}, "accepted": None, "validated_at": None, "margins": {},
    }


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RECSYS_VALIDATION_VOLUME_FACTOR", "1"),
        ("RECSYS_VALIDATION_MAX_DUPLICATE_RATIO", "1.5"),
        ("RECSYS_VALIDATION_MAX_NEW_USER_SHARE", "-0.1"),
        ("RECSYS_VALIDATION_LATE_HOURS", "-1"),
        ("RECSYS_VALIDATION_HISTORY", "0"),
        ("RECSYS_VALIDATION_MAX_ID_LENGTH", "abc"),
    ],
)
def test_validation_thresholds_are_checked_and_name_the_variable(variable, value):
    from recsys.config import ConfigError, Settings

    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def test_validation_thresholds_come_from_the_environment(store, publish_events):
    settings = Settings.from_env({"RECSYS_VALIDATION_MAX_PRICE": "3.0", "RECSYS_VALIDATION_LATE_HOURS": "0"})
    assert (settings.validation_max_price, settings.validation_late_hours) == (3.0, 0.0)
    publish_events(store, DAY, VALID)  # prices up to 3.39
    with pytest.raises(ValidationFailed, match=r"\[price range\]"):
        validate_partition(store, settings, DAY)


def test_parquet_written_without_pandas_metadata_validates_like_pandas_output(store, make_events):
    """Spark and plain Arrow writers store no pandas metadata: text columns come back as str, not string."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recsys.storage import layout

    day = date(2011, 1, 4)
    events = make_events([("e1", "2011-01-04 09:00:00", "u1", "i1", "purchase", 1, 1.0),
                          ("e2", "2011-01-04 09:05:00", "u2", "i2", "purchase", 2, 3.5)])
    partition = layout.raw_events(day)
    target = store.root / partition / "part-00000.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(events, preserve_index=False).replace_schema_metadata(None), target)
    store.mark_success(partition)
    frame = read_partition(store, partition)
    assert frame["user_id"].dtype == "string"
    report = validate_partition(store, Settings(), day)
    assert report.success, report.failed
