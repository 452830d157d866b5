"""recsys.datasets.synthetic: distribution properties, schema, determinism, and real validation runs."""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from recsys import schema
from recsys.config import Settings
from recsys.datasets import synthetic
from recsys.features import build_features
from recsys.storage import layout
from recsys.storage.local import LocalStore
from recsys.validation import validate_partition

DAY = date(2026, 1, 5)
CONFIG = synthetic.SyntheticConfig(events=60_000, seed=11)


@pytest.fixture(scope="module")
def day_events() -> pd.DataFrame:
    return synthetic.generate_day(CONFIG, DAY)


def test_the_day_has_the_canonical_schema_and_exactly_the_requested_rows(day_events):
    assert list(day_events.columns) == list(schema.EVENT_COLUMNS)
    assert {c: str(t) for c, t in day_events.dtypes.items()} == {
        c: str(pd.Series(dtype=t).dtype) for c, t in schema.EVENT_DTYPES.items()
    }
    assert len(day_events) == 60_000
    assert day_events[schema.EVENT_ID].is_unique
    assert day_events.notna().all().all()
    start = pd.Timestamp(DAY.isoformat(), tz="UTC")
    assert day_events[schema.EVENT_TIME].min() >= start
    assert day_events[schema.EVENT_TIME].max() < start + pd.Timedelta(days=1)
    assert set(day_events[schema.EVENT_TYPE]) == set(schema.EVENT_TYPES)
    assert (day_events[schema.QUANTITY] >= 1).all()
    assert (day_events.loc[day_events[schema.EVENT_TYPE] != "purchase", schema.QUANTITY] == 1).all()


def test_item_popularity_has_a_zipf_head(day_events):
    counts = day_events[schema.ITEM_ID].value_counts().to_numpy()
    n_items = CONFIG.n_items  # 1,200
    head = counts[: n_items // 100].sum() / len(day_events)  # the top 1% of the catalog
    assert head > 0.25, f"top 1% of items got only {head:.1%} of the events"
    assert counts[0] / len(day_events) < 0.2  # but no single item dominates (the validation limit)
    # the rank-frequency curve falls like a power law: log-log slope of ranks 2..100 near -zipf_s
    ranks = np.arange(2, 101)
    slope = np.polyfit(np.log(ranks), np.log(counts[1:100]), 1)[0]
    assert -1.6 < slope < -0.5, slope


def test_user_activity_is_skewed(day_events):
    per_user = day_events.groupby(schema.USER_ID)[schema.SESSION_ID].nunique().sort_values(ascending=False)
    top_decile = per_user.iloc[: len(per_user) // 10].sum() / per_user.sum()
    assert top_decile > 0.25, f"the most active 10% of users have only {top_decile:.1%} of the sessions"
    assert per_user.iloc[0] >= 5 * per_user.median()


def test_sessions_are_one_user_time_ordered_and_about_the_configured_length(day_events):
    sessions = day_events.groupby(schema.SESSION_ID)
    assert (sessions[schema.USER_ID].nunique() == 1).all()
    assert (sessions[schema.COUNTRY].nunique() == 1).all()
    assert sessions[schema.EVENT_TIME].is_monotonic_increasing.all()
    mean_length = sessions.size().mean()
    assert 0.8 * CONFIG.session_mean < mean_length < 1.2 * CONFIG.session_mean
    # a session keeps to its focus category: its most common category is most of it
    catalog = synthetic.Universe(CONFIG).catalog().set_index(schema.ITEM_ID)[schema.CATEGORY]
    cats = day_events[schema.ITEM_ID].map(catalog)
    longer = sessions.size()[lambda s: s >= 8].index
    focus = (
        cats[day_events[schema.SESSION_ID].isin(longer)]
        .groupby(day_events[schema.SESSION_ID])
        .agg(lambda c: c.value_counts(normalize=True).iloc[0])
    )
    assert focus.mean() > 0.55


def test_event_mix_and_catalog_titles(day_events):
    mix = day_events[schema.EVENT_TYPE].value_counts(normalize=True)
    assert mix["view"] > mix["add_to_cart"] > mix["purchase"] > 0.02
    catalog = synthetic.Universe(CONFIG).catalog()
    assert list(catalog.columns) == list(schema.CATALOG_COLUMNS)
    assert len(catalog) == CONFIG.n_items and catalog[schema.ITEM_ID].is_unique
    assert catalog[schema.TITLE].str.split().str.len().min() >= 4  # colour adjective material noun
    assert catalog[schema.TITLE].nunique() > 0.5 * len(catalog)
    assert 0 < (~catalog[schema.AVAILABLE]).sum() < 0.1 * len(catalog)
    prices = catalog.set_index(schema.ITEM_ID)[schema.PRICE]
    assert np.allclose(day_events[schema.PRICE], day_events[schema.ITEM_ID].map(prices))


def test_deterministic_per_seed_and_day(day_events):
    again = synthetic.generate_day(CONFIG, DAY)
    pd.testing.assert_frame_equal(day_events, again)
    other_seed = synthetic.generate_day(synthetic.SyntheticConfig(events=60_000, seed=12), DAY)
    assert not other_seed[schema.USER_ID].equals(day_events[schema.USER_ID])
    next_day = synthetic.generate_day(CONFIG, DAY + timedelta(days=1))
    assert not next_day[schema.ITEM_ID].equals(day_events[schema.ITEM_ID])
    # the same universe on every day: the next day's items overlap today's heavily
    shared = set(next_day[schema.ITEM_ID]) & set(day_events[schema.ITEM_ID])
    assert len(shared) > 0.7 * day_events[schema.ITEM_ID].nunique()


def test_chunks_are_whole_sessions_and_add_up_to_the_day():
    config = synthetic.SyntheticConfig(events=10_000, chunk_events=3_000, seed=3)
    chunks = list(synthetic.iter_chunks(synthetic.Universe(config), DAY))
    assert [len(c) for c in chunks] == [3_000, 3_000, 3_000, 1_000]
    ids = [set(c.column(schema.SESSION_ID).to_pylist()) for c in chunks]
    assert all(not (a & b) for n, a in enumerate(ids) for b in ids[n + 1 :])  # no session in two chunks


@pytest.mark.parametrize(
    "bad",
    [
        {"events": 0},
        {"zipf_s": 0},
        {"session_mean": 0.5},
        {"session_focus": 1.5},
        {"event_mix": (0.5, 0.5, 0.5)},
        {"delisted_share": 1.0},
        {"chunk_events": 0},
        {"users": -1},
    ],
)
def test_bad_configs_are_refused_with_the_field_named(bad):
    with pytest.raises(synthetic.SyntheticError, match=next(iter(bad)).split("_")[0]):
        synthetic.SyntheticConfig(**bad)


def test_published_days_pass_validation_and_build_features(store):
    config = synthetic.SyntheticConfig(events=20_000, chunk_events=7_000, seed=5)
    published = synthetic.publish_days(store, config, DAY, days=2)
    assert [p.files for p in published] == [3, 3]
    assert store.list_dir(layout.raw_events(DAY)) == [
        "_SUCCESS",
        "_synthetic.json",
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert store.is_complete(layout.raw_catalog(DAY))
    for n, day in enumerate([DAY, DAY + timedelta(days=1)]):
        report = validate_partition(store, Settings(), day)
        assert report.success, [c for c in report.failed]
        assert report.rows == 20_000
        if n == 1:  # the second day is checked against the first's vocabulary: most users and items known
            assert "not checked" not in report.notes["share of new items"]
        stats = build_features(store, Settings(), day)
        assert stats.cleaning["rows_out"] == 20_000
        assert 0 < stats.holdout_examples < stats.train_examples
    again = synthetic.publish_day(store, config, DAY)
    assert again.already_present


def test_republishing_replaces_an_unfinished_attempt(store):
    day_dir = layout.raw_events(DAY)
    store.write_bytes(f"{day_dir}/part-00009.parquet", b"left over from a crashed attempt")
    config = synthetic.SyntheticConfig(events=2_000, seed=1)
    synthetic.publish_day(store, config, DAY)
    assert "part-00009.parquet" not in store.list_dir(day_dir)
    assert validate_partition(store, Settings(), DAY).success


def test_the_cli_publishes_days_and_refuses_bad_sizes(tmp_path, monkeypatch, capsys):
    from recsys.cli import main

    monkeypatch.setenv("RECSYS_STORAGE_ROOT", str(tmp_path / "store"))
    argv = ["generate-synthetic", "--from", "2026-01-05", "--days", "2", "--events", "3000", "--chunk-events", "1000"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(d["day"], d["events"], d["files"]) for d in out] == [("2026-01-05", 3000, 3), ("2026-01-06", 3000, 3)]
    store = LocalStore(tmp_path / "store")
    assert store.partitions(layout.RAW_EVENTS) == [DAY, DAY + timedelta(days=1)]

    assert main(["generate-synthetic", "--from", "2026-01-05", "--events", "0"]) == 2
    assert "recsys generate-synthetic: events must be positive, got 0" in capsys.readouterr().err
