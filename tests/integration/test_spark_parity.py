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
