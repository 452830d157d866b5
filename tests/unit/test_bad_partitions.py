"""Every kind of bad delivery the upstream job can produce, stopped at the validation layer.

Each test publishes one bad partition into a store that already has a champion, and checks: the error
names the problem (with the same words on both engines: every test runs on pandas and on Spark,
``RECSYS_COMPUTE``), the partition was copied to quarantine with a reason.json, the raw files are
byte-identical afterwards (nothing lost), the champion and the registry are unchanged, and the summary
and Data Docs were written.
"""

from __future__ import annotations

import hashlib
import io
from datetime import date

import pandas as pd
import pytest

from recsys import registry
from recsys.config import Settings
from recsys.spark import steps
from recsys.storage import layout
from recsys.validation.partition import ValidationFailed

DAY = date(2011, 1, 4)
RAW = layout.raw_events(DAY)
QUARANTINE = layout.quarantine_events(DAY)
SUMMARY = f"{layout.validation_report(DAY)}/summary.json"

GOOD = [
    ("581001-0", "2011-01-04 08:00:00", "17850", "85123A", "purchase", 6, 2.55),
    ("581001-1", "2011-01-04 09:30:00", "17850", "71053", "add_to_cart", 1, 3.39),
    ("581002-0", "2011-01-04 12:00:00", "13047", "22633", "view", 1, 0.85),
    ("581003-0", "2011-01-04 23:59:59", "12583", "84406B", "purchase", 2, 2.75),
]


@pytest.fixture(params=["pandas", "spark"], autouse=True)
def engine(request) -> str:
    """Every test on both engines (the Spark one in the test session's local SparkSession)."""
    if request.param == "spark":
        request.getfixturevalue("spark")
    return request.param


@pytest.fixture
def validate_partition(engine):
    """The validate step on this test's engine (``settings.compute``), with the step's own arguments."""

    def validate(store, settings, day, **kwargs):
        return steps.validate_partition(store, settings.replace(compute=engine), day, **kwargs)

    return validate


@pytest.fixture
def stopped(validate_partition):
    """:func:`_stopped` on this test's engine."""
    return lambda store, *needles: _stopped(validate_partition, store, *needles)


def _files(store, directory: str) -> dict[str, str]:
    """name -> sha256 of every file directly under ``directory``."""
    return {n: hashlib.sha256(store.read_bytes(f"{directory}/{n}")).hexdigest() for n in store.list_dir(directory)}


@pytest.fixture
def champion_store(store, put_version):
    """A store whose registry has version 1 as champion (trained on the day before)."""
    put_version(store, 1, date(2011, 1, 3), [[0.0, 0.0]] * 3, [[0.0, 0.0]] * 3)
    registry.set_champion(store, 1, "deployed", "test champion", run_id="test")
    return store


def _stopped(validate_partition, store, *needles: str) -> str:
    """Validate DAY expecting a stop; check the message, quarantine, raw bytes and the champion."""
    raw_before = _files(store, RAW)
    registry_before = registry.load(store)
    with pytest.raises(ValidationFailed) as info:
        validate_partition(store, Settings(), DAY)
    message = str(info.value)
    for needle in needles:
        assert needle in message, (needle, message)
    assert QUARANTINE in message and "Data Docs" in message and "champion is unchanged" in message
    # nothing lost: raw untouched, and every raw file copied to quarantine next to the reasons
    assert _files(store, RAW) == raw_before
    quarantined = _files(store, QUARANTINE)
    assert {n: quarantined[n] for n in raw_before} == raw_before
    reason = store.read_json(f"{QUARANTINE}/reason.json")
    assert reason["date"] == DAY.isoformat() and reason["report_path"] == SUMMARY
    assert reason["problem"] or reason["failed"]
    # the champion and the registry are exactly as before
    assert registry.load(store) == registry_before
    assert registry.load(store)["champion"] == 1
    summary = store.read_json(SUMMARY)
    assert summary["success"] is False and summary["accepted"] is None
    assert store.exists("reports/validation/site/index.html")
    return message


def _put_frame(store, frame: pd.DataFrame) -> None:
    store.write_parquet(f"{RAW}/part-00000.parquet", frame)
    store.mark_success(RAW)


def test_bad_missing_column(champion_store, make_events, stopped):
    _put_frame(champion_store, make_events(GOOD).drop(columns=["item_id"]))
    stopped(champion_store, "expect_column_to_exist(item_id)", "column item_id present")


def test_bad_renamed_column(champion_store, make_events, stopped):
    _put_frame(champion_store, make_events(GOOD).rename(columns={"user_id": "customer_id"}))
    stopped(champion_store, "expect_column_to_exist(user_id)")


def test_bad_wrong_column_types(champion_store, make_events, stopped):
    frame = make_events(GOOD)
    frame["user_id"] = frame["user_id"].astype("int64")  # numbers, not text
    frame["quantity"] = frame["quantity"].astype(str)  # text, not a number
    frame["event_time"] = frame["event_time"].astype(str)  # text, not a timestamp
    _put_frame(champion_store, frame)
    stopped(champion_store, "[user_id is text]", "[quantity is an integer]", "[event_time is a UTC timestamp]")


def test_bad_null_user_ids(champion_store, make_events, stopped):
    frame = make_events(GOOD)
    frame.loc[[0, 2], "user_id"] = pd.NA
    _put_frame(champion_store, frame)
    message = stopped(champion_store, "expect_column_values_to_not_be_null(user_id)", "2 unexpected value(s)")
    assert "[user_id not null]" in message


def test_bad_unknown_event_types(champion_store, publish_events, stopped):
    publish_events(champion_store, DAY, [*GOOD, ("581004-0", "2011-01-04 13:00:00", "12583", "22633", "click", 1, 1.0)])
    stopped(champion_store, "[event types]", "'click'")


def test_bad_timestamps_outside_the_day(champion_store, publish_events, stopped):
    # two days early: far beyond the late-event tolerance (1 hour by default)
    publish_events(champion_store, DAY, [*GOOD, ("581004-0", "2011-01-02 13:00:00", "12583", "22", "purchase", 1, 1.0)])
    message = stopped(champion_store, "[event_time inside the day]")
    assert "[event_time not in the future]" not in message


def test_late_events_within_the_tolerance_pass(store, publish_events, validate_partition):
    publish_events(store, DAY, [*GOOD, ("581004-0", "2011-01-03 23:30:00", "12583", "22633", "purchase", 1, 1.0)])
    assert validate_partition(store, Settings(), DAY).success is True


def test_bad_timestamps_in_the_future(champion_store, publish_events, stopped):
    publish_events(champion_store, DAY, [*GOOD, ("581004-0", "2099-01-04 13:00:00", "12583", "22", "purchase", 1, 1.0)])
    stopped(champion_store, "[event_time not in the future]", "[event_time inside the day]")


def test_bad_negative_prices_and_zero_quantities(champion_store, publish_events, stopped):
    publish_events(champion_store, DAY, [
        *GOOD,
        ("581004-0", "2011-01-04 13:00:00", "12583", "22633", "purchase", 0, 1.0),
        ("581004-1", "2011-01-04 13:00:00", "12583", "22633", "purchase", 1, -4.5),
    ])
    stopped(champion_store, "[quantity range]", "[price range]", "-4.5")


def test_a_few_bad_prices_within_the_tolerance_pass(store, publish_events, validate_partition):
    publish_events(store, DAY, [*GOOD, ("581004-1", "2011-01-04 13:00:00", "12583", "22633", "purchase", 1, -4.5)])
    settings = Settings.from_env({"RECSYS_VALIDATION_RANGE_TOLERANCE": "0.25"})  # 1 of 5 rows is 0.2
    report = validate_partition(store, settings, DAY)
    assert report.success
    price = next(c for c in report.checks if c["check"] == "price range")
    assert price["unexpected_count"] == 1 and price["expected"]["mostly"] == 0.75


def test_bad_empty_partition(champion_store, make_events, stopped):
    _put_frame(champion_store, make_events([]))
    message = stopped(champion_store, "is empty", "0 rows")
    assert champion_store.read_json(SUMMARY)["problem"].startswith(f"partition {DAY} is empty")
    assert "Traceback" not in message


def test_bad_marker_without_data(champion_store, stopped):
    champion_store.mark_success(RAW)
    stopped(champion_store, "has a _SUCCESS marker but no data files")


def test_identical_redelivery_passes_and_changes_nothing(champion_store, publish_events, tmp_path, validate_partition):
    publish_events(champion_store, DAY, GOOD)
    first = validate_partition(champion_store, Settings(), DAY)
    champion_store.mark_success(layout.features(DAY))  # the date was processed
    root = champion_store.root
    before = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    publish_events(champion_store, DAY, GOOD)  # upstream delivers the same data again
    again = validate_partition(champion_store, Settings(), DAY)
    after = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    assert again.success and again.fingerprint == first.fingerprint
    assert after == before


def test_bad_different_redelivery_of_a_processed_date(champion_store, publish_events, validate_partition, stopped):
    publish_events(champion_store, DAY, GOOD)
    first = validate_partition(champion_store, Settings(), DAY)
    champion_store.mark_success(layout.features(DAY))  # features were built from the first delivery
    publish_events(champion_store, DAY, GOOD[:3])  # upstream re-runs and delivers different data
    message = stopped(champion_store, "was already processed", "later delivery differs", first.fingerprint[:12])
    assert "cannot be accepted" not in message
    with pytest.raises(ValidationFailed, match="cannot be accepted"):
        validate_partition(champion_store, Settings(), DAY, accept_invalid=True, accept_reason="looks fine")


def test_bad_truncated_parquet(champion_store, make_events, stopped):
    buf = io.BytesIO()
    make_events(GOOD).to_parquet(buf, index=False)
    champion_store.write_bytes(f"{RAW}/part-00000.parquet", buf.getvalue()[: len(buf.getvalue()) // 2])
    champion_store.mark_success(RAW)
    stopped(champion_store, "cannot be read", "truncated or corrupt parquet")


def test_bad_corrupt_data_file(champion_store, stopped):
    champion_store.write_bytes(f"{RAW}/part-00000.parquet", b"PAR1\x00\x01garbage")
    champion_store.mark_success(RAW)
    stopped(champion_store, "truncated or corrupt parquet")


def test_bad_non_utf8_text(champion_store, make_events, validate_partition, stopped):
    frame = make_events(GOOD)
    frame.loc[0, "user_id"] = "Zoë"
    champion_store.write_bytes(f"{RAW}/part-00000.csv", frame.to_csv(index=False).encode("latin-1"))
    champion_store.mark_success(RAW)
    stopped(champion_store, "is not UTF-8 text", "0xeb")


def _accepted_history(validate_partition, store, publish_events, days: list[date], rows: int) -> None:
    """Validated partitions of ``rows`` distinct events each (the volume check's history)."""
    for n, day in enumerate(days):
        publish_events(store, day, [
            (f"{n}-{i}", f"{day} 10:00:00", f"u{i}", f"i{i}", "purchase", 1, 1.0) for i in range(rows)
        ])
        assert validate_partition(store, Settings(), day).success


def test_bad_volume_spike(champion_store, publish_events, validate_partition, stopped):
    _accepted_history(validate_partition, champion_store, publish_events, [date(2011, 1, 2), date(2011, 1, 3)], rows=20)
    publish_events(champion_store, DAY, [
        (f"x-{i}", "2011-01-04 10:00:00", f"u{i % 20}", f"i{i % 150}", "purchase", 1, 1.0) for i in range(200)
    ])  # 10x the trailing average of 20
    stopped(champion_store, "[volume within the trailing average]", "observed 200", "'max_value': 101")
    notes = champion_store.read_json(SUMMARY)["notes"]
    assert "averaged 20 rows" in notes["volume within the trailing average"]


def test_bad_volume_drop(champion_store, publish_events, validate_partition, stopped):
    _accepted_history(validate_partition, champion_store, publish_events, [date(2011, 1, 2), date(2011, 1, 3)], rows=20)
    publish_events(champion_store, DAY, GOOD[:2])  # 2 rows against an average of 20 (factor 5: at least 4)
    stopped(champion_store, "[volume within the trailing average]", "observed 2")


def test_bad_absurdly_long_ids(champion_store, publish_events, stopped):
    long_id = "9" * 5000
    publish_events(champion_store, DAY, [*GOOD, ("581004-0", "2011-01-04 13:00:00", long_id, "22", "purchase", 1, 1.0)])
    stopped(champion_store, "[user_id length]")


def test_bad_control_character_ids(champion_store, publish_events, stopped):
    bad_id = "226\x0033\n"
    publish_events(champion_store, DAY, [*GOOD, ("581004-0", "2011-01-04 13:00:00", "125", bad_id, "purchase", 1, 1.0)])
    stopped(champion_store, "[item_id is a valid id]")


def test_bad_share_of_new_users(champion_store, publish_events, put_vocab, stopped):
    put_vocab(champion_store, "users", ["17850", "13047", "12583"], first_seen="2011-01-03")
    put_vocab(champion_store, "items", ["85123A", "71053", "22633", "84406B"], first_seen="2011-01-03")
    # upstream switched to hashed customer ids: every user is unknown
    publish_events(champion_store, DAY, [(e, t, f"h{hash(u) & 0xffff:x}", i, k, q, p) for e, t, u, i, k, q, p in GOOD])
    stopped(champion_store, "[share of new users]", "observed 1.0")


def test_bad_top_item_share(champion_store, publish_events, stopped):
    # a stuck upstream job repeats one item for half of the day's events
    publish_events(champion_store, DAY, [
        (f"x-{i}", "2011-01-04 10:00:00", f"u{i}", "85123A" if i % 2 else f"i{i}", "purchase", 1, 1.0)
        for i in range(120)
    ])
    stopped(champion_store, "[top item share]", "observed 0.5")


def test_bad_catalog_snapshot(champion_store, publish_events, stopped):
    catalog = pd.DataFrame({"item_id": ["85123A", "85123A"], "title": ["A", "B"], "category": [None, None],
                            "price": [2.55, -1.0], "available": [True, True]})
    champion_store.write_parquet(f"{layout.raw_catalog(DAY)}/part-00000.parquet", catalog)
    champion_store.mark_success(layout.raw_catalog(DAY))
    publish_events(champion_store, DAY, GOOD)
    stopped(champion_store, "[catalog item_id unique]", "[catalog price range]")


# --- on-call acceptance -----------------------------------------------------------------------------
def test_acceptance_without_a_reason_is_refused(champion_store, publish_events, validate_partition):
    publish_events(champion_store, DAY, [*GOOD, ("581004-0", "2011-01-04 13:00:00", "12583", "22633", "click", 1, 1.0)])
    with pytest.raises(ValidationFailed, match="needs a reason"):
        validate_partition(champion_store, Settings(), DAY, accept_invalid=True, accept_reason="  ")
    assert not champion_store.exists(SUMMARY)
    assert [h["action"] for h in registry.load(champion_store)["history"]] == ["trained", "deployed"]


def test_acceptance_with_a_reason_passes_and_is_recorded(champion_store, publish_events, validate_partition):
    publish_events(champion_store, DAY, [*GOOD, ("581004-0", "2011-01-04 13:00:00", "12583", "22633", "click", 1, 1.0)])
    with pytest.raises(ValidationFailed):
        validate_partition(champion_store, Settings(), DAY)
    report = validate_partition(
        champion_store, Settings(), DAY, accept_invalid=True, accept_reason="new click tracking, known and harmless",
        run_id="r1",
    )
    assert report.success is False and report.accepted is not None
    entry = registry.load(champion_store)["history"][-1]
    assert entry["action"] == "accepted_invalid" and entry["date"] == DAY.isoformat()
    assert entry["reason"] == "new click tracking, known and harmless" and entry["run_id"] == "r1"
    assert any("[event types]" in f for f in entry["failed_expectations"])
    assert registry.load(champion_store)["champion"] == 1
    summary = champion_store.read_json(SUMMARY)
    assert summary["accepted"]["reason"] == entry["reason"]
    # an accepted partition counts as history and is not validated again on an identical rerun
    assert validate_partition(champion_store, Settings(), DAY).accepted == summary["accepted"]


def test_unreadable_partition_cannot_be_accepted(champion_store, validate_partition):
    champion_store.write_bytes(f"{RAW}/part-00000.parquet", b"not parquet")
    champion_store.mark_success(RAW)
    with pytest.raises(ValidationFailed, match=r"cannot be accepted: .*truncated or corrupt"):
        validate_partition(champion_store, Settings(), DAY, accept_invalid=True, accept_reason="please")
    assert not any(h["action"] == "accepted_invalid" for h in registry.load(champion_store)["history"])


def test_a_second_quarantine_of_a_different_delivery_keeps_the_first(
    champion_store, publish_events, validate_partition
):
    publish_events(champion_store, DAY, [*GOOD, ("581004-0", "2011-01-04 13:00:00", "12583", "22633", "click", 1, 1.0)])
    with pytest.raises(ValidationFailed):
        validate_partition(champion_store, Settings(), DAY)
    first = champion_store.read_bytes(f"{QUARANTINE}/part-00000.parquet")
    first_print = champion_store.read_json(f"{QUARANTINE}/reason.json")["fingerprint"]
    publish_events(champion_store, DAY, [*GOOD, ("581004-0", "2011-01-04 13:00:00", "12583", "22633", "tap", 1, 1.0)])
    with pytest.raises(ValidationFailed, match="'tap'"):
        validate_partition(champion_store, Settings(), DAY)
    kept = f"{QUARANTINE}/_previous/{first_print[:16]}"
    assert champion_store.read_bytes(f"{kept}/part-00000.parquet") == first
    assert champion_store.read_bytes(f"{QUARANTINE}/part-00000.parquet") != first


# --- column-name anomalies (issue 18 #10, #12): a clear validation failure, never a silent rename --------
GOOD_CSV_HEADER = "event_id,event_time,user_id,item_id,event_type,quantity,price"


def _put_csv(store, header: str, rows: list[str]) -> None:
    store.write_bytes(f"{RAW}/part-00000.csv", "\n".join([header, *rows, ""]).encode())
    store.mark_success(RAW)


@pytest.mark.parametrize(("header", "needle"), [
    (GOOD_CSV_HEADER + ",user_id", "duplicate column user_id"),
    (GOOD_CSV_HEADER + ",User_ID", "columns 'user_id' and 'User_ID' differ only by case or spaces"),
    (GOOD_CSV_HEADER + ", user_id", "column ' user_id' has spaces around its name"),
    (GOOD_CSV_HEADER + ",", "column 8 has an empty name"),
    (GOOD_CSV_HEADER.replace("price", "price\x07"), "holds a control character"),
])
def test_bad_csv_column_names(champion_store, header, needle, stopped):
    # the second user_id holds different values: pandas would rename it user_id.1 and keep the first
    _put_csv(champion_store, header, ["581001-0,2011-01-04T08:00:00Z,17850,85123A,purchase,6,2.55,99999"])
    message = stopped(champion_store, needle, "invalid header")
    assert champion_store.read_json(SUMMARY)["problem"].endswith("Each column must appear once, with a non-empty name")
    assert needle in champion_store.read_json(f"{QUARANTINE}/reason.json")["problem"]
    assert "not a valid CSV" not in message


def test_bad_csv_rows_longer_than_the_header(champion_store, stopped):
    # pandas would silently make the first field the index and shift every column by one
    _put_csv(champion_store, GOOD_CSV_HEADER, ["x,581001-0,2011-01-04T08:00:00Z,17850,85123A,purchase,6,2.55"])
    stopped(champion_store, "more fields than its header has names")


@pytest.mark.parametrize("names", [["user_id", "user_id"], ["user_id", "USER_ID "]])
def test_bad_parquet_column_names(champion_store, names, stopped):
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [pa.array([str(v) for v in column]) for column in zip(*GOOD, strict=True)]
    table = pa.table([*columns, pa.array(["1", "2", "3", "4"])], names=[*GOOD_CSV_HEADER.split(","), names[1]])
    buf = io.BytesIO()
    pq.write_table(table, buf)
    champion_store.write_bytes(f"{RAW}/part-00000.parquet", buf.getvalue())
    champion_store.mark_success(RAW)
    message = stopped(champion_store, "invalid header")
    assert "truncated or corrupt" not in message
    assert ("duplicate column user_id" if names[1] == "user_id" else "differ only by case or spaces") in message


# --- entries of a partition that are not readable data files (issue 18 #13) ---------------------------
def _bad_entry(store, kind: str, outside) -> str:
    """Put one bad entry next to a good data file; the entry's name."""
    import os

    directory = store.root / RAW
    if kind == "link out of the store":
        outside.write_text(GOOD_CSV_HEADER + "\n581009-0,2011-01-04T08:00:00Z,666,85123A,purchase,1,1.0\n")
        os.symlink(outside, directory / "part-00001.csv")
    elif kind == "dangling link":
        os.symlink(directory / "gone.csv", directory / "part-00001.csv")
    elif kind == "subdirectory":
        (directory / "part-00001.csv").mkdir()
        (directory / "part-00001.csv" / "inner.csv").write_text("x\n")
    elif kind == "unknown extension":
        (directory / "part-00001.json").write_text("{}")
        return "part-00001.json"
    elif kind == "empty file":
        (directory / "part-00001.csv").write_bytes(b"")
    elif kind == "marker linked out of the store":
        (directory / "_SUCCESS").unlink()
        outside.write_text("")
        os.symlink(outside, directory / "_SUCCESS")
        return "_SUCCESS"
    return "part-00001.csv"


@pytest.mark.parametrize(("kind", "needle"), [
    ("link out of the store", "escapes the store root"),
    ("dangling link", "does not exist"),
    ("subdirectory", "is a directory"),
    ("unknown extension", "unknown data file type"),
    ("empty file", "empty file (0 bytes)"),
    ("marker linked out of the store", "escapes the store root"),
])
def test_bad_entries_are_validation_failures(
    champion_store, publish_events, tmp_path, kind, needle, validate_partition
):
    publish_events(champion_store, DAY, GOOD)
    name = _bad_entry(champion_store, kind, tmp_path / "outside.csv")
    good_bytes = champion_store.read_bytes(f"{RAW}/part-00000.parquet")
    registry_before = registry.load(champion_store)
    with pytest.raises(ValidationFailed) as info:
        validate_partition(champion_store, Settings(), DAY)
    message = str(info.value)
    assert name in message and needle in message and QUARANTINE in message, message
    summary = champion_store.read_json(SUMMARY)
    assert summary["success"] is False and needle in summary["problem"] and summary["fingerprint"]
    reason = champion_store.read_json(f"{QUARANTINE}/reason.json")
    assert needle in reason["problem"]
    assert champion_store.read_bytes(f"{QUARANTINE}/part-00000.parquet") == good_bytes
    readable = kind in ("unknown extension", "empty file")
    assert (name in reason["not_copied"]) is not readable
    if kind == "link out of the store":  # never followed: its target is neither read nor copied
        assert "666" not in message and not (champion_store.root / QUARANTINE / name).exists()
    assert registry.load(champion_store) == registry_before
    assert champion_store.read_bytes(f"{RAW}/part-00000.parquet") == good_bytes


def test_a_delivery_replaced_while_it_is_validated_is_not_reported_as_validated(
    store, publish_events, monkeypatch, validate_partition
):
    """issue 18 #2: the summary's fingerprint is that of the bytes the suites checked, or nothing is written.

    The fingerprint is taken by the code both engines share (recsys.validation.partition); each engine's
    read of the events must notice that the files it read are not those."""
    from recsys.storage import StorageError
    from recsys.validation import partition

    module = partition
    publish_events(store, DAY, GOOD)
    real = module.fingerprint

    def then_redelivered(store_, directory):  # upstream republishes right after the fingerprint is taken
        first = real(store_, directory)
        publish_events(store_, DAY, GOOD[:2])
        return first

    monkeypatch.setattr(module, "fingerprint", then_redelivered)
    with pytest.raises(StorageError, match="changed while it was being validated"):
        validate_partition(store, Settings(), DAY)
    assert not store.exists(SUMMARY) and not store.exists(QUARANTINE)
    monkeypatch.undo()
    assert validate_partition(store, Settings(), DAY).success  # the rerun validates the new delivery
