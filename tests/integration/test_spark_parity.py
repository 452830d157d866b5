"""Parity of the two engines of validate and build_features (``RECSYS_COMPUTE=pandas|spark``).

The same deliveries are processed day by day into two stores, one per engine (Spark: the test session's
local SparkSession, fixture ``spark``), and everything a later step reads must be identical: the verdicts and
validation summaries (every check, observed value, note and margin), the quarantined copies, the examples,
query histories, history snapshots and stats of ``features/``, and the vocabularies (the same id -> row
assignment). Not a benchmark: bench/scale/spark.py measures.

Online Retail: five days landed from the package's bundle, the fourth redelivered with repeated and corrupted
lines (it fails validation and is quarantined on both engines; the day after it still builds). Synthetic: a
day in several part files with repeated event ids across files (the first in delivery order is kept), ties
of popular items, and every event type.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime

import pandas as pd
import pytest

from recsys.config import Settings
from recsys.datasets import landing, online_retail, synthetic
from recsys.spark import steps
from recsys.storage import layout
from recsys.storage.local import LocalStore
from recsys.validation.results import ValidationFailed

pytestmark = pytest.mark.integration

ENGINES = ("pandas", "spark")
RETAIL_START = date(2010, 12, 1)
FIXED_NOW = datetime(2026, 1, 1, tzinfo=UTC)  # "now" of the future check: the same on both engines


@pytest.fixture(autouse=True)
def fixed_now(monkeypatch):
    """The suites' ``now`` parameter fixed, so the two engines' summaries can be compared whole."""
    from recsys.validation import suites

    class Fixed(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return FIXED_NOW if tz is not None else FIXED_NOW.replace(tzinfo=None)

    monkeypatch.setattr(suites, "datetime", Fixed)


def _settings(engine: str, **extra: str) -> Settings:
    from tests.spark_session import spark_settings

    return spark_settings(RECSYS_COMPUTE=engine, RECSYS_MIN_USER_COUNT="1", RECSYS_MIN_ITEM_COUNT="1", **extra)


def _run(store: LocalStore, engine: str, days: list[date], **extra: str) -> dict[date, str]:
    """validate then build_features for each day in order on ``engine`` (``extra`` RECSYS_* settings); day ->
    "passed" or the failure."""
    settings = _settings(engine, **extra)
    verdicts: dict[date, str] = {}
    for day in days:
        try:
            steps.validate_partition(store, settings, day, run_id="parity")
        except ValidationFailed as err:
            verdicts[day] = str(err).replace(str(store.root), "<store>")
            continue
        steps.build_features(store, settings, day, run_id="parity")
        verdicts[day] = "passed"
    return verdicts


def _summary(store: LocalStore, day: date) -> dict:
    """The summary of ``day`` without what names the run's clock or the store (the notes name its URI)."""
    text = json.dumps(store.read_json(layout.validation_summary(day)))
    summary = json.loads(text.replace(str(store.root), "<store>"))
    for volatile in ("validated_at", "data_docs"):  # the run's clock and the Data Docs page names of that run
        summary.pop(volatile, None)
    if summary.get("accepted"):
        summary["accepted"].pop("at", None)  # when on-call's acceptance was recorded: the run's clock
    return summary


def _tree(store: LocalStore, top: str) -> dict[str, str]:
    """path under the store -> sha256 of every file below ``top`` (empty if absent)."""
    root = store.root / top
    if not root.exists():
        return {}
    return {str(p.relative_to(store.root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_same(stores: dict[str, LocalStore], days: list[date]) -> None:
    pandas_store, spark_store = stores["pandas"], stores["spark"]
    for day in days:
        assert _summary(spark_store, day) == _summary(pandas_store, day), day
    for top in (layout.FEATURES, "vocab", "quarantine"):
        pandas_files, spark_files = _tree(pandas_store, top), _tree(spark_store, top)
        assert sorted(spark_files) == sorted(pandas_files), top
        differ = [path for path in pandas_files if spark_files[path] != pandas_files[path]]
        for path in differ:  # say what differs, not only that the bytes do
            if path.endswith(".parquet"):
                pd.testing.assert_frame_equal(spark_store.read_parquet(path), pandas_store.read_parquet(path))
        assert differ == [] or all(p.endswith("reason.json") for p in differ), differ
    for name in ("users", "items"):  # the same id -> row assignment, read as the model reads it
        from recsys.features import vocab

        pd.testing.assert_frame_equal(vocab.load(spark_store, name), vocab.load(pandas_store, name))


def _corrupt(events: pd.DataFrame) -> pd.DataFrame:
    """A bad redelivery of a real day: a fifth of its lines repeated with negative prices, one user id lost."""
    bad = events.sample(frac=0.2, random_state=3).copy()
    bad["price"] = -bad["price"].abs() - 1.0
    out = pd.concat([events, bad], ignore_index=True)
    out.loc[0, "user_id"] = pd.NA
    return out


def test_online_retail_days_identical_on_both_engines(spark, tmp_path):
    raw = online_retail.load_source()
    days = landing.select_days(online_retail.source_days(raw), RETAIL_START, 5)
    failing = days[3]
    stores = {engine: LocalStore(tmp_path / engine) for engine in ENGINES}
    for store in stores.values():
        landing.land_days(store, days[0], len(days))
        path = f"{layout.raw_events(failing)}/{landing.DATA_FILE}"
        store.write_parquet(path, _corrupt(store.read_parquet(path)))
        store.mark_success(layout.raw_events(failing))

    verdicts = {engine: _run(stores[engine], engine, days) for engine in ENGINES}

    assert verdicts["spark"] == verdicts["pandas"]
    assert [d for d, v in verdicts["pandas"].items() if v != "passed"] == [failing]
    assert "[price range]" in verdicts["pandas"][failing] and "[user_id not null]" in verdicts["pandas"][failing]
    assert stores["pandas"].exists(f"{layout.quarantine_events(failing)}/reason.json")
    assert all(stores["pandas"].is_complete(layout.features(d)) for d in days if d != failing)
    _assert_same(stores, days)


def test_synthetic_day_identical_on_both_engines(spark, tmp_path):
    day = date(2024, 3, 5)
    config = synthetic.SyntheticConfig(events=6_000, users=400, items=300, chunk_events=1_500, seed=11)
    stores = {engine: LocalStore(tmp_path / engine) for engine in ENGINES}
    for store in stores.values():
        synthetic.publish_day(store, config, day)
        files = store.data_files(layout.raw_events(day))
        assert len(files) > 2
        # a later part file repeating event ids of the first with other users and items (a retried upload):
        # cleaning keeps the first in delivery order, on both engines
        first = store.read_parquet(files[0]).head(40).copy()
        first["user_id"] = first["user_id"].astype("string") + "x"
        first["item_id"] = pd.Series(["I-late"] * len(first), dtype="string")
        store.write_parquet(f"{layout.raw_events(day)}/part-99999.parquet", first)

    duplicates = {"RECSYS_VALIDATION_MAX_DUPLICATE_RATIO": "0.01"}
    verdicts = {engine: _run(stores[engine], engine, [day], **duplicates) for engine in ENGINES}

    assert verdicts == {"pandas": {day: "passed"}, "spark": {day: "passed"}}
    stats = stores["spark"].read_json(f"{layout.features(day)}/{layout.STATS_FILE}")
    assert stats["cleaning"]["duplicate_event_ids"] == 40
    _assert_same(stores, [day])


def test_features_a_range_of_users_at_a_time_identical_on_both_engines(spark, monkeypatch, tmp_path):
    """The Spark engine fetches the day's pairs a range of users at a time (recsys/spark/ranges.py): with ranges
    of 37 users and row groups of 500 rows (cut inside and across ranges), two days (the second merging into
    the first's snapshot) are still the pandas path's, byte for byte; the ids' codes are joined by a shuffle (more
    ids than a broadcast takes)."""
    from recsys.features import chunks
    from recsys.spark import features, ranges

    monkeypatch.setattr(ranges, "RANGE_USERS", 37)
    monkeypatch.setattr(features, "BROADCAST_IDS", 50)
    monkeypatch.setattr(chunks, "ROW_GROUP_ROWS", 500)
    days = [date(2024, 3, 5), date(2024, 3, 6)]
    stores = {engine: LocalStore(tmp_path / engine) for engine in ENGINES}
    for n, day in enumerate(days):
        config = synthetic.SyntheticConfig(events=4_000, users=300, items=200, chunk_events=2_000, seed=21 + n)
        for store in stores.values():
            synthetic.publish_day(store, config, day)

    verdicts = {engine: _run(stores[engine], engine, days) for engine in ENGINES}

    assert verdicts == {engine: {day: "passed" for day in days} for engine in ENGINES}
    stats = stores["spark"].read_json(f"{layout.features(days[1])}/{layout.STATS_FILE}")
    assert stats["users"] > 3 * 37 and stats["examples"] > 2 * 500 and stats["history_rows"] > 2 * 500
    _assert_same(stores, days)


# the id rule's edge cases (tests/unit/test_id_rule.py) and more line terminators and lengths: Java's "$" would
# match before a final "\n", "\r\n", "\r", U+0085, U+2028 or U+2029
_ID_CASES = [None, "17135", "85123A", "ÄÖ-12", "a b", ".a", "a.", ". a", "C581001-0", "x" * 64, "100%", "a?b#c", "日本",
             "éé", "", " 17135", "17135 ", " ", "a\u2028b", "a\u2029b", "a\u202eb", "a\x85b", "a\x9fb", "a\x00b",
             "a\tb", "a\nb", "17135\n", "17135\r\n", "17135\r", "17135\x85", "17135\u2028", "17135\u2029", "\n17135",
             "a\u200bb", "\ufeff17135", "a\u00a0b", "a\u3000b", "a\u00adb", "a\U000e0041b", "a\ue000b", "item/1", ".",
             "..", "...", ". ", "x" * 65, "é" * 64, "é" * 65, "日" * 64, "a\U0001F600b", "\U00020000", "a\U000110bdb",
             "a\U000F0000b", "17135\U000E0020", "\uffff", "a\ufffdb", "a]b", "a[b", "a\\b", "a^b", "-", "a-b", "'",
             '"', "a\x7fb", "a\U0001F600", "_", "A_b-9", "--", "a_b\n", "Ab-9" * 17]


@pytest.mark.parametrize("max_length", [64, 5])
def test_the_id_rule_on_spark_gives_python_s_verdicts(spark, max_length):
    """The features step's id rule on Spark (a JVM expression, no Python worker) agrees with
    recsys.schema.valid_id on every edge case, missing ids refused."""
    from pyspark.sql import functions as F

    from recsys import schema
    from recsys.spark.features import valid_id_column

    frame = spark.createDataFrame([(n, text) for n, text in enumerate(_ID_CASES)], "n long, id string")
    got = {row["n"]: row["valid"] for row in
           frame.select("n", valid_id_column(F.col("id"), max_length).alias("valid")).collect()}
    expected = {n: text is not None and schema.valid_id(text, max_length) for n, text in enumerate(_ID_CASES)}
    assert got == expected
    assert sum(expected.values()) >= 10 and not all(expected.values())


def test_an_accepted_day_with_invalid_ids_identical_on_both_engines(spark, tmp_path):
    """On-call accepted a day whose ids break the rule in every way: both engines drop the same rows, count
    them alike and write the same features and vocabularies."""
    day = date(2024, 3, 6)
    ids = [text for text in _ID_CASES if text is not None]
    rows = []
    for n, text in enumerate(ids):  # each bad id as a user and as an item, beside good ones; one repeated event
        rows.append((f"e-{n}-u", text, f"I{n % 7}", 1 + n % 3))
        rows.append((f"e-{n}-i", f"U{n % 5}", text, 0 if n % 11 == 0 else 2))
    rows.append(("e-0-u", "U-late", "I-late", 1))
    events = pd.DataFrame(rows, columns=["event_id", "user_id", "item_id", "quantity"])
    events = events.assign(
        event_time=pd.Timestamp("2024-03-06 10:00", tz="UTC"), event_type="purchase", price=1.5,
    )[["event_id", "event_time", "user_id", "item_id", "event_type", "quantity", "price"]]
    for column in ("event_id", "user_id", "item_id", "event_type"):
        events[column] = events[column].astype("string")
    stores = {engine: LocalStore(tmp_path / engine) for engine in ENGINES}
    for engine, store in stores.items():
        store.write_parquet(f"{layout.raw_events(day)}/part-00000.parquet", events)
        store.mark_success(layout.raw_events(day))
        settings = _settings(engine)
        with pytest.raises(ValidationFailed):
            steps.validate_partition(store, settings, day, run_id="parity")
        steps.validate_partition(store, settings, day, run_id="parity", accept_invalid=True,
                                 accept_reason="test: every kind of bad id")
        steps.build_features(store, settings, day, run_id="parity")

    cleaning = stores["spark"].read_json(f"{layout.features(day)}/{layout.STATS_FILE}")["cleaning"]
    assert cleaning["duplicate_event_ids"] == 1 and cleaning["invalid_ids"] > 40 and cleaning["rows_out"] > 10
    _assert_same(stores, [day])
