"""recsys.features.build: examples, split and vocabulary growth for one partition."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys import schema
from recsys.config import Settings
from recsys.features import FeatureError, build_features, chunks, history, load_examples, vocab
from recsys.features.build import (
    day_pairs,
    is_holdout,
    load_query_history,
    load_stats,
    validated_delivery,
    write_features,
)
from recsys.features.cleaning import clean_events
from recsys.storage import StorageError, layout
from recsys.storage.layout import EXAMPLES_FILE, STATS_FILE
from recsys.storage.local import LocalStore

D1, D2 = date(2011, 1, 4), date(2011, 1, 5)
FRACTION = 0.5
SETTINGS = Settings(holdout_fraction=FRACTION, min_user_count=1)  # every id gets a row (see the min-count test)

DAY1 = [
    ("e1", "2011-01-04 09:00:00", "u1", "i1", "purchase", 1, 1.0),
    ("e2", "2011-01-04 09:01:00", "u1", "i2", "purchase", 2, 1.0),
    ("e3", "2011-01-04 09:02:00", "u1", "i1", "purchase", 1, 1.0),  # same (user, item) again
    ("e4", "2011-01-04 09:03:00", "u2", "i2", "view", 1, 1.0),
    ("e5", "2011-01-04 09:04:00", "u3", "i3", "purchase", 0, 1.0),  # quantity 0: cleaned away
    ("e4", "2011-01-04 09:05:00", "u4", "i4", "purchase", 1, 1.0),  # repeated event id: cleaned away
    ("e6", "2011-01-04 09:06:00", "u5", "i3", "purchase", 1, 1.0),
]
DAY2 = [
    ("f1", "2011-01-05 10:00:00", "u1", "i3", "purchase", 1, 1.0),
    ("f2", "2011-01-05 10:01:00", "u6", "i1", "purchase", 1, 1.0),
    ("f3", "2011-01-05 10:02:00", "u0", "i9", "purchase", 1, 1.0),
]


@pytest.fixture
def publish_events(publish_events):
    """conftest's publish_events, with the delivery recorded as passed validation (features need that)."""

    def publish(store, day, rows):
        partition = publish_events(store, day, rows)
        mark_validated(store, day)
        return partition

    return publish


def mark_validated(store, day: date) -> None:
    """The validation summary of a passing delivery, as the validate step writes it (tests/unit/test_training too)."""
    from recsys.storage import layout
    from recsys.storage.raw import fingerprint
    from recsys.validation.results import ValidationReport

    current = fingerprint(store, layout.raw_events(day))
    report = ValidationReport(day, True, 1, report_path=layout.validation_summary(day), fingerprint=current,
                              passed_fingerprint=current)
    store.write_json(layout.validation_summary(day), report.as_dict())


# sha256("<user>|<day>")[:8] / 2**64, computed once by hand with hashlib:
#   2011-01-04: u1 0.9759, u2 0.0887, u5 0.1787   -> with fraction 0.5: u2 and u5 held out
#   2011-01-05: u1 0.9652, u6 0.0269


def test_is_holdout_is_a_fixed_hash_of_user_and_day():
    users = pd.Series(["u1", "u2", "u5"])
    assert list(is_holdout(users, D1, FRACTION)) == [False, True, True]
    # the bucket of u2 on D1 is 0.0887...: just above 0.088, just below 0.09
    assert list(is_holdout(pd.Series(["u2"]), D1, 0.09)) == [True]
    assert list(is_holdout(pd.Series(["u2"]), D1, 0.088)) == [False]
    # the same user falls elsewhere on another day (u6: 0.6864 on D1, 0.0269 on D2)
    assert list(is_holdout(pd.Series(["u6"]), D1, FRACTION)) == [False]
    assert list(is_holdout(pd.Series(["u6"]), D2, FRACTION)) == [True]


def test_is_holdout_is_deterministic_and_close_to_the_fraction():
    users = pd.Series([f"user{i}" for i in range(4000)])
    first = is_holdout(users, D1, 0.25)
    pd.testing.assert_series_equal(first, is_holdout(users.copy(), D1, 0.25))
    assert 0.22 < first.mean() < 0.28
    # numeric ids are hashed as their text
    assert list(is_holdout(pd.Series([17850]), D1, 0.5)) == list(is_holdout(pd.Series(["17850"]), D1, 0.5))


def test_build_features_writes_examples_stats_and_vocab(store, publish_events):
    publish_events(store, D1, DAY1)
    stats = build_features(store, SETTINGS, D1)
    assert stats.as_dict() == {
        "date": "2011-01-04",
        "cleaning": {"rows_in": 7, "rows_out": 5, "duplicate_event_ids": 1, "invalid_ids": 0,
                     "non_positive_quantity": 1},
        "examples": 4,  # (u1,i1) (u1,i2) (u2,i2) (u5,i3)
        "train_examples": 2,  # u1's two pairs
        "holdout_examples": 2,
        "users": 3,
        "holdout_users": 2,  # u2, u5
        "items": 3,
        "new_users": 3,
        "new_items": 3,
        "user_vocab_size": 4,  # u1, u2, u5 + OOV
        "item_vocab_size": 4,
        "pending_users": 0,
        "pending_items": 0,
        "min_user_count": 1,
        "min_item_count": 1,
        "history_users": 3,  # after the day: u1 (i1, i2), u2 (i2), u5 (i3)
        "history_rows": 4,
        "fingerprint": store.read_json("reports/validation/dt=2011-01-04/summary.json")["passed_fingerprint"],
    }
    assert load_stats(store, D1) == stats.as_dict()
    assert store.is_complete("features/dt=2011-01-04")

    examples = load_examples(store, D1)
    assert tuple(examples.columns) == (*schema.EXAMPLE_COLUMNS, "hist_index")
    assert (examples["hist_index"] == 0).all()  # nothing was known before the first day
    assert all(len(h) == 0 for h in load_examples(store, D1, histories=True)["hist_items"])
    assert load_query_history(store, D1).empty
    assert [tuple(r)[:5] for r in examples.itertuples(index=False)] == [
        ("u1", "i1", 1, 1, "train"),
        ("u1", "i2", 1, 2, "train"),
        ("u2", "i2", 2, 2, "holdout"),
        ("u5", "i3", 3, 3, "holdout"),
    ]
    users = vocab.load(store, vocab.USERS)
    assert list(users["id"]) == ["u1", "u2", "u5"]  # cleaned-away u3, u4 never got a row
    assert list(vocab.load(store, vocab.ITEMS)["id"]) == ["i1", "i2", "i3"]


def test_build_features_is_idempotent(store, publish_events):
    publish_events(store, D1, DAY1)
    build_features(store, SETTINGS, D1)
    paths = ["features/dt=2011-01-04/stats.json", "features/dt=2011-01-04/examples.parquet",
             "features/dt=2011-01-04/query_history.parquet", "features/dt=2011-01-04/history.parquet",
             "vocab/users.parquet", "vocab/items.parquet"]
    before = {p: store.read_bytes(p) for p in paths}
    build_features(store, SETTINGS, D1)
    assert {p: store.read_bytes(p) for p in paths} == before


def test_a_later_day_grows_the_vocabularies_and_keeps_old_rows(store, publish_events):
    publish_events(store, D1, DAY1)
    publish_events(store, D2, DAY2)
    build_features(store, SETTINGS, D1)
    day1_stats = store.read_bytes("features/dt=2011-01-04/stats.json")
    stats = build_features(store, SETTINGS, D2)
    assert (stats.new_users, stats.new_items) == (2, 1)
    assert (stats.user_vocab_size, stats.item_vocab_size) == (6, 5)
    users = vocab.load(store, vocab.USERS)
    assert list(zip(users["id"], users["row"], strict=True)) == [
        ("u1", 1), ("u2", 2), ("u5", 3), ("u0", 4), ("u6", 5),
    ]
    examples = load_examples(store, D2)
    assert list(zip(examples["user_id"], examples["user_row"], examples["item_row"], strict=True)) == [
        ("u0", 4, 4), ("u1", 1, 3), ("u6", 5, 1),
    ]
    # rerunning the earlier day after the vocabularies grew writes the same stats (counted from first_seen)
    build_features(store, SETTINGS, D1)
    assert store.read_bytes("features/dt=2011-01-04/stats.json") == day1_stats


def test_a_partition_with_nothing_left_after_cleaning_is_a_thin_day(store, publish_events):
    """issue 18 #9: never an error that holds later dates: empty examples, nothing grows, stats say why."""
    publish_events(store, D1, DAY1)
    build_features(store, SETTINGS, D1)
    vocab_before = store.read_bytes("vocab/users.parquet")
    history_before = store.read_parquet("features/dt=2011-01-04/history.parquet")
    publish_events(store, D2, [("f1", "2011-01-05 09:00:00", "u1", "i1", "purchase", 0, 1.0)])
    stats = build_features(store, SETTINGS, D2)
    assert (stats.examples, stats.train_examples, stats.holdout_users, stats.new_users) == (0, 0, 0, 0)
    assert stats.cleaning["non_positive_quantity"] == 1 and stats.cleaning["rows_out"] == 0
    assert load_examples(store, D2).empty and store.is_complete("features/dt=2011-01-05")
    assert store.read_bytes("vocab/users.parquet") == vocab_before
    pd.testing.assert_frame_equal(store.read_parquet("features/dt=2011-01-05/history.parquet"), history_before)


def test_load_examples_before_the_features_step_raises(store):
    with pytest.raises(FeatureError, match="run the features step first"):
        load_examples(store, D1)


def test_examples_written_with_history_lists_or_without_histories_still_load(store):
    from recsys.storage import layout

    old = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "item_id": ["i1", "i1", "i2"], "user_row": [1, 2, 3],
                        "item_row": [1, 1, 2], "split": ["train", "train", "holdout"],
                        "hist_items": [["i9", "i8"], [], ["i7"]], "hist_days": [[2, 1], [], [1]]})
    store.write_parquet(f"{layout.features(D1)}/examples.parquet", old)
    store.mark_success(layout.features(D1))
    examples = load_examples(store, D1, histories=True)
    assert examples["hist_index"].tolist() == [1, 0, 2]
    assert examples["hist_items"].tolist() == [["i9", "i8"], [], ["i7"]]
    assert examples["hist_days"].tolist() == [[2, 1], [], [1]]
    assert load_examples(store, D1, rows=np.array([2, 0]))["hist_index"].tolist() == [2, 1]
    store.write_parquet(f"{layout.features(D2)}/examples.parquet", old.drop(columns=["hist_items", "hist_days"]))
    store.mark_success(layout.features(D2))
    assert load_examples(store, D2)["hist_index"].tolist() == [0, 0, 0]
    assert load_query_history(store, D2).empty
    with pytest.raises(ValueError, match="no columns"):
        load_examples(store, D2, columns=["price"])




def test_features_of_a_missing_partition_say_it_is_not_published(store):
    with pytest.raises((FeatureError, StorageError)) as info:
        build_features(store, SETTINGS, D1)
    assert "has a _SUCCESS marker" not in str(info.value)


def test_features_of_an_unpublished_partition_are_refused(store, make_events):
    store.write_parquet("raw/events/dt=2011-01-04/part-00000.parquet", make_events(DAY1))  # no _SUCCESS yet
    with pytest.raises((FeatureError, StorageError)):
        build_features(store, SETTINGS, D1)
    assert not store.exists("features/dt=2011-01-04")


def test_examples_carry_the_users_history_before_the_day_and_the_snapshot_moves_on(store, publish_events):
    from recsys.features import history

    publish_events(store, D1, DAY1)
    publish_events(store, D2, DAY2)
    build_features(store, SETTINGS, D1)
    build_features(store, SETTINGS, D2)
    examples = load_examples(store, D2, histories=True).set_index("user_id")
    # u1 bought i1 and i2 on D1 (same day: by id), u6 and u0 are new
    assert list(examples.loc["u1", "hist_items"]) == ["i1", "i2"]
    assert list(examples.loc["u1", "hist_days"]) == [1, 1]
    assert len(examples.loc["u6", "hist_items"]) == 0
    # stored once per user: D2's query table holds u1's two entries, the example points to them
    queries = load_query_history(store, D2)
    assert queries["item_id"].tolist() == ["i1", "i2"]
    assert examples.loc["u1", "hist_index"] == 1 and examples.loc["u6", "hist_index"] == 0
    snapshot = history.by_user(history.load(store, D2))
    assert snapshot["u1"] == (["i3", "i1", "i2"], [1, 1, 1])  # D2's purchase first
    assert history.by_user(history.load_before(store, D2)) == history.by_user(history.load(store, D1))


def test_a_minimum_user_count_keeps_one_off_customers_on_the_oov_row(store, publish_events):
    publish_events(store, D1, DAY1)
    stats = build_features(store, SETTINGS.replace(min_user_count=2), D1)
    # u1 has two examples (i1, i2) and qualifies; u2 and u5 have one each and wait
    assert (stats.user_vocab_size, stats.pending_users, stats.min_user_count) == (2, 2, 2)
    examples = load_examples(store, D1).set_index("user_id")
    assert examples.loc["u2", "user_row"] == 0
    assert examples.loc["u1", "user_row"].tolist() == [1, 1]


# --- features only from the validated delivery (issue 18 #2) ------------------------------------------
VALID_DAY1 = [row for row in DAY1 if row[0] not in ("e5", "e4") or row[4] == "view"]  # nothing to clean


def test_a_redelivery_between_validate_and_features_is_refused(store, make_events):
    from recsys import report
    from recsys.storage import layout
    from recsys.storage.raw import fingerprint
    from recsys.validation import ValidationFailed, validate_partition

    raw = layout.raw_events(D1)
    store.write_parquet(f"{raw}/part-00000.parquet", make_events(VALID_DAY1))
    store.mark_success(raw)
    first = validate_partition(store, SETTINGS, D1)
    assert first.success and store.read_json(first.report_path)["passed_fingerprint"] == first.fingerprint
    # upstream redelivers after validate, before features: different data that never passed validation
    store.write_parquet(f"{raw}/part-00000.parquet", make_events(VALID_DAY1[:2]))
    with pytest.raises(FeatureError, match="changed since it was validated") as info:
        build_features(store, SETTINGS, D1)
    assert "Run the validate step for 2011-01-04 again" in str(info.value) and first.fingerprint[:12] in str(info.value)
    assert not store.exists(layout.features(D1)) and not store.exists("vocab")
    # re-validated, the second delivery is the one features are built from, and the stats say so
    second = validate_partition(store, SETTINGS, D1)
    assert second.success and second.fingerprint != first.fingerprint
    stats = build_features(store, SETTINGS, D1)
    assert stats.fingerprint == second.fingerprint == load_stats(store, D1)["fingerprint"]
    assert stats.examples == 2
    # a third delivery after features: refused at validate, and the report names what trained the model
    store.write_parquet(f"{raw}/part-00000.parquet", make_events(VALID_DAY1[:1]))
    third = fingerprint(store, raw)
    with pytest.raises(ValidationFailed, match="already processed"):
        validate_partition(store, SETTINGS, D1)
    with pytest.raises(FeatureError, match="changed since it was validated"):
        build_features(store, SETTINGS, D1)  # a rerun of the date cannot switch to it either
    text = report.summary_text(store, D1.isoformat())
    assert f"examples built from the delivery {second.fingerprint[:12]}" in text, text
    assert f"a later delivery {third[:12]} was refused (not trained on)" in text, text
    summary = store.read_json(layout.validation_summary(D1))
    assert summary["passed_fingerprint"] == second.fingerprint and summary["fingerprint"] == third
    assert f"features built from the delivery {second.fingerprint[:12]}" in summary["problem"]


def test_features_of_a_date_that_was_not_validated_or_failed_are_refused(store, make_events):
    from recsys.storage import layout
    from recsys.validation import ValidationFailed, validate_partition

    raw = layout.raw_events(D1)
    store.write_parquet(f"{raw}/part-00000.parquet", make_events([*VALID_DAY1, ("x", "2011-01-04 09:00:00", "u1", "i1",
                                                                          "click", 1, 1.0)]))
    store.mark_success(raw)
    with pytest.raises(FeatureError, match=r"was not validated .*run the validate step first"):
        build_features(store, SETTINGS, D1)
    with pytest.raises(ValidationFailed):
        validate_partition(store, SETTINGS, D1)
    with pytest.raises(FeatureError, match=r"did not pass validation \(failed expectations: "):
        build_features(store, SETTINGS, D1)
    assert not store.exists(layout.features(D1))


def test_a_date_before_processed_dates_is_refused(store, publish_events):
    publish_events(store, D1, DAY1)
    publish_events(store, D2, DAY2)
    build_features(store, SETTINGS, D2)
    with pytest.raises(FeatureError, match="processed in date order"):
        build_features(store, SETTINGS, D1)
    build_features(store, SETTINGS, D2)  # a rerun of a processed date is fine


def test_windows_around_a_date_stop_at_the_calendar_edges(store, publish_events):
    """issue 18 #11: trend, serving and health windows at 0001-01-01 and 9999-12-31 never overflow."""
    from recsys.features import trend
    from recsys.storage import layout
    from recsys.validation import health

    first, last = date.min, date.max
    assert layout.shift_day(last, 1) == last and layout.shift_day(first, -(10**12)) == first
    assert layout.shift_day(D1, 1) == D2 and layout.shift_day(D2, -1) == D1
    assert trend.window(store, D1, 10**9) == []
    for day in (first, last):
        store.mark_success(layout.features(day))
        store.write_json(layout.validation_summary(day), {"date": day.isoformat(), "success": True, "rows": 1,
                                                          "checks": []})
    assert trend.window(store, last, 10**9) == [first]
    assert trend.serving_day(store) == last
    rows = health.trend_rows(store, start=date(9999, 12, 30))
    assert [r["date"] for r in rows] == ["9999-12-30", "9999-12-31"]
    # the health table lists the known dates, not the 3.6 million MISSING days between them
    assert [r["date"] for r in health.trend_rows(store)] == ["0001-01-01", "9999-12-31"]
    store.write_json(layout.validation_summary(D1), {"date": D1.isoformat(), "success": True, "rows": 1, "checks": []})
    store.write_json(layout.validation_summary(D1.replace(day=8)), {"date": "2011-01-08", "success": True,
                                                                    "rows": 1, "checks": []})
    rows = health.trend_rows(store)
    assert [r["date"] for r in rows] == ["0001-01-01", "2011-01-04", "2011-01-05", "2011-01-06", "2011-01-07",
                                         "2011-01-08", "9999-12-31"]
    assert [r["status"] for r in rows][2:5] == [health.MISSING] * 3


def _text_steps(store, settings: Settings, day: date, pairs: pd.DataFrame) -> tuple[pd.DataFrame, ...]:
    """What write_features computed from the text pairs before it worked on codes (its outputs must not change):
    (examples, query table, users vocabulary, items vocabulary), the vocabularies grown from the ones stored."""
    users, _ = vocab.grow(vocab.load(store, vocab.USERS), pairs[schema.USER_ID], day, settings.min_user_count)
    items, _ = vocab.grow(vocab.load(store, vocab.ITEMS), pairs[schema.ITEM_ID], day, settings.min_item_count)
    examples = pairs.copy()
    examples[schema.USER_ROW] = vocab.rows_for(users, pairs[schema.USER_ID])
    examples[schema.ITEM_ROW] = vocab.rows_for(items, pairs[schema.ITEM_ID])
    examples[schema.SPLIT] = is_holdout(pairs[schema.USER_ID], day, settings.holdout_fraction).map(
        {True: "holdout", False: "train"})
    snapshot = history.load_before(store, day)
    ids = pairs[schema.USER_ID].astype(str)
    mine = snapshot[snapshot[schema.USER_ID].astype(str).isin(pd.unique(ids.to_numpy(object)))]
    mine = mine.sort_values([schema.USER_ID, history.LAST_DAY, schema.ITEM_ID], ascending=[True, False, True])
    mine = mine[mine.groupby(schema.USER_ID, sort=False).cumcount().to_numpy() < settings.history_length]
    code, with_history = pd.factorize(mine[schema.USER_ID].astype(str), sort=True)
    queries = pd.DataFrame({history.HIST_INDEX: (code + 1).astype(np.int32),
                            schema.ITEM_ID: mine[schema.ITEM_ID].astype(str).astype("string").array,
                            history.DAYS: mine[history.DAYS].to_numpy(np.int32)})
    examples[history.HIST_INDEX] = (pd.Index(with_history).get_indexer(ids.to_numpy(object)) + 1).astype(np.int32)
    return examples, queries, users, items


def test_the_codes_write_what_the_text_steps_wrote_and_a_frame_of_pairs_writes_the_same_bytes(
        tmp_path, publish_events, monkeypatch):
    """Three days of ids whose first appearance is not their text order (unicode, digits, repeats across
    chunks), chunks of 7 rows, a minimum count of 2, files written in row groups of 5 rows: the examples, query
    tables and vocabularies equal the text steps' on the same pairs (the query table as it was built from a
    frame of the snapshot's text), and write_features given the text pairs as a frame (the Spark engine's call)
    writes the same bytes as the chunked codes."""
    monkeypatch.setattr(chunks, "ROW_GROUP_ROWS", 5)
    rng = np.random.default_rng(7)
    names = ["Ω9", "b", "a", "10", "9", "ä", "A", "zz", "b1", "1"]
    settings = Settings(holdout_fraction=0.4, min_user_count=2, min_item_count=2, history_length=2,
                        repeat_length=3, chunk_rows=7)
    coded, framed = LocalStore(tmp_path / "coded"), LocalStore(tmp_path / "framed")
    for n, day in enumerate((D1, D2, date(2011, 1, 6))):
        rows = [(f"e{n}-{k}", f"{day} 09:{k % 60:02d}:00", f"u{names[int(u)]}", f"i{names[int(i)]}", "purchase",
                 int(q), 1.0)
                for k, (u, i, q) in enumerate(zip(rng.integers(0, 10, 60), rng.integers(0, 10, 60),
                                                  rng.integers(0, 3, 60), strict=True))]
        rows.append((f"e{n}-once", f"{day} 10:00:00", f"once{n}", "ib", "purchase", 1, 1.0))  # pending at day's end
        for store in (coded, framed):
            publish_events(store, day, rows)
        passed = validated_delivery(coded, day)
        pairs, cleaning = day_pairs(coded, day, passed, chunk_rows=settings.chunk_rows)
        text = pairs.frame()
        events = coded.read_parquet(f"{layout.raw_events(day)}/part-00000.parquet")
        cleaned, expected_cleaning = clean_events(events)
        pd.testing.assert_frame_equal(text, cleaned[[schema.USER_ID, schema.ITEM_ID]].astype(str).drop_duplicates()
                                      .sort_values([schema.USER_ID, schema.ITEM_ID]).reset_index(drop=True))
        assert cleaning == expected_cleaning
        examples, queries, users, items = _text_steps(coded, settings, day, text)
        write_features(coded, settings, day, pairs, cleaning, passed)
        write_features(framed, settings, day, text.copy(), cleaning, validated_delivery(framed, day))
        out = layout.features(day)
        pd.testing.assert_frame_equal(load_examples(coded, day), examples)
        pd.testing.assert_frame_equal(load_query_history(coded, day), queries)
        pd.testing.assert_frame_equal(vocab.load(coded, vocab.USERS), users)
        pd.testing.assert_frame_equal(vocab.load(coded, vocab.ITEMS), items)
        for name in (EXAMPLES_FILE, layout.QUERY_FILE, layout.HISTORY_FILE, STATS_FILE):
            assert coded.read_bytes(f"{out}/{name}") == framed.read_bytes(f"{out}/{name}"), (day, name)
        for name in (vocab.USERS, vocab.ITEMS):
            assert coded.read_bytes(layout.vocab_table(name)) == framed.read_bytes(layout.vocab_table(name))
    assert (examples[schema.USER_ROW] == 0).any() and (examples[history.HIST_INDEX] > 0).any()
    assert set(examples[schema.SPLIT]) == {"train", "holdout"}
    assert min(len(examples), len(queries), len(history.load(coded, D2))) > 5  # more than one row group each
