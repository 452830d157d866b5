"""recsys.training and recsys.features.inputs: replay sampling, stored tables, and fine-tuning across two days."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys import registry, schema
from recsys.config import Settings
from recsys.features import FeatureError, build_features, load_examples
from recsys.features.inputs import replay_sample
from recsys.model.tables import load_tables
from recsys.training import TrainingError, fine_tune, train_from_scratch

D1, D2, D3 = date(2011, 1, 4), date(2011, 1, 5), date(2011, 1, 6)


def _examples(users: list[str], split: str = "train") -> pd.DataFrame:
    return pd.DataFrame({
        schema.USER_ID: users,
        schema.ITEM_ID: ["A"] * len(users),
        schema.USER_ROW: range(1, len(users) + 1),
        schema.ITEM_ROW: [1] * len(users),
        schema.SPLIT: split,
    })


@pytest.fixture
def feature_days(store):
    for day, users in [(D1, ["a1", "a2", "a3"]), (D2, ["b1", "b2"])]:
        store.write_parquet(f"features/dt={day.isoformat()}/examples.parquet", _examples(users))
        store.mark_success(f"features/dt={day.isoformat()}")
    store.write_parquet("features/dt=2011-01-03/examples.parquet", _examples(["x"]))  # no marker: ignored
    return store


def test_replay_takes_everything_when_the_pool_is_small(feature_days):
    replay = replay_sample(feature_days, D3, size=10, seed=0)
    assert list(replay[schema.USER_ID]) == ["a1", "a2", "a3", "b1", "b2"]
    assert list(replay["day"]) == [D1.toordinal()] * 3 + [D2.toordinal()] * 2  # each example's partition


def test_replay_only_uses_days_before(feature_days):
    assert list(replay_sample(feature_days, D2, size=10, seed=0)[schema.USER_ID]) == ["a1", "a2", "a3"]
    assert replay_sample(feature_days, D1, size=10, seed=0).empty


def test_replay_of_size_zero_is_empty_with_the_example_columns(feature_days):
    replay = replay_sample(feature_days, D3, size=0, seed=0)
    assert replay.empty
    assert tuple(replay.columns) == (*schema.EXAMPLE_COLUMNS, "hist_items", "hist_days", "day")


def test_replay_sample_is_seeded(feature_days):
    first = replay_sample(feature_days, D3, size=2, seed=5)
    assert len(first) == 2
    assert set(first[schema.USER_ID]) <= {"a1", "a2", "a3", "b1", "b2"}
    pd.testing.assert_frame_equal(first, replay_sample(feature_days, D3, size=2, seed=5))
    draws = {tuple(replay_sample(feature_days, D3, size=2, seed=s)[schema.USER_ID]) for s in range(10)}
    assert len(draws) > 1


def test_load_tables_reads_the_stored_arrays(store, put_version):
    put_version(store, 3, D1, [[0, 0], [1, 2]], [[0, 0], [3, 4], [5, 6]])
    tables = load_tables(store, 3)
    assert sorted(tables) == ["item", "user"]
    assert np.array_equal(tables["user"], np.array([[0, 0], [1, 2]], np.float32))
    assert tables["item"].shape == (3, 2)


# --- fine_tune (TensorFlow) ---------------------------------------------------------------------

DAY1 = [(f"d1-{n}", "2011-01-04 10:00:00", u, i, "purchase", 1, 1.0) for n, (u, i) in enumerate(
    [("u1", "i1"), ("u1", "i2"), ("u2", "i2"), ("u3", "i3"), ("u4", "i1"), ("u5", "i4"), ("u6", "i2")]
)]
DAY2 = [(f"d2-{n}", "2011-01-05 10:00:00", u, i, "purchase", 1, 1.0) for n, (u, i) in enumerate(
    [("u1", "i3"), ("u2", "i1"), ("u3", "i4"), ("u7", "i5"), ("u4", "i2")]
)]


@pytest.fixture
def publish_events(publish_events):
    """conftest's publish_events, with the delivery recorded as passed validation (features need that)."""
    from recsys.storage import layout
    from recsys.storage.raw import fingerprint
    from recsys.validation.results import ValidationReport

    def publish(store, day, rows):
        partition = publish_events(store, day, rows)
        current = fingerprint(store, partition)
        report = ValidationReport(day, True, len(rows), report_path=layout.validation_summary(day),
                                  fingerprint=current, passed_fingerprint=current)
        store.write_json(layout.validation_summary(day), report.as_dict())
        return partition

    return publish


@pytest.fixture
def tiny(store, publish_events):
    """Two days of features: 6 users x 4 items, then one new user (u7) and one new item (i5)."""
    publish_events(store, D1, DAY1)
    publish_events(store, D2, DAY2)
    stats = [build_features(store, Settings(holdout_fraction=0.25, min_user_count=1), day) for day in (D1, D2)]
    settings = Settings(storage_root=str(store.root), epochs=1, embedding_dim=8, batch_size=4, replay_examples=100)
    return store, settings, stats


@pytest.mark.slow
def test_fine_tune_cold_start_then_warm_start_then_reuse(tiny):
    store, settings, (stats1, stats2) = tiny
    assert (stats1.user_vocab_size, stats1.item_vocab_size) == (7, 5)
    assert (stats2.user_vocab_size, stats2.item_vocab_size) == (8, 6)

    v1 = fine_tune(store, settings, D1, run_id="r1")
    assert (v1["version"], v1["parent"], v1["cold_start"], v1["reused"]) == (1, None, True, False)
    assert (v1["train_examples"], v1["replay_examples"]) == (stats1.train_examples, 0)
    assert (v1["user_rows"], v1["item_rows"], v1["embedding_dim"], v1["epochs"]) == (7, 5, 8, 1)
    assert np.isfinite(v1["final_loss"])
    t1 = load_tables(store, 1)
    assert (t1["user"].shape, t1["item"].shape) == ((7, 8), (5, 8))
    # the session weights are fitted with the version (recsys.model.session); these days hold too few moments
    assert (v1["session_fit"]["session_weight"], v1["session_fit"]["session_query_weight"]) == (0.0, 0.0)
    assert "fewer than" in v1["session_fit"]["reason"]
    assert (float(t1["session_weight"]), float(t1["session_query_weight"])) == (0.0, 0.0)

    v2 = fine_tune(store, settings, D2)
    assert (v2["version"], v2["parent"], v2["cold_start"], v2["reused"]) == (2, 1, False, False)
    assert v2["replay_examples"] == stats1.examples  # the whole (small) pool of day 1
    assert v2["train_examples"] == stats2.train_examples
    t2 = load_tables(store, 2)
    assert (t2["user"].shape, t2["item"].shape) == ((8, 8), (6, 8))
    # warm start: the OOV rows are in no example, so they are carried over from version 1 unchanged
    assert np.array_equal(t2["user"][0], t1["user"][0])
    assert np.array_equal(t2["item"][0], t1["item"][0])

    reg = registry.load(store)
    assert sorted(reg["versions"]) == ["1", "2"]
    assert reg["versions"]["2"]["trained_on"] == "2011-01-05"
    assert store.read_json("models/two_tower/versions/2/metadata.json")["parent"] == 1
    tables_bytes = store.read_bytes("models/two_tower/versions/2/tables.npz")
    history = reg["history"]

    again = fine_tune(store, settings, D2)
    assert again["reused"] is True
    assert again["version"] == 2
    assert again["parent"] == 1
    reg = registry.load(store)
    assert sorted(reg["versions"]) == ["1", "2"]
    assert reg["history"] == history
    assert store.read_bytes("models/two_tower/versions/2/tables.npz") == tables_bytes
    assert store.list_dir("models/two_tower/versions") == ["1", "2"]


# a 2-customer day whose customers are both held out (is_holdout at the default fraction 0.25 on 2011-01-05)
THIN_DAY2 = [("t-0", "2011-01-05 10:00:00", "c6", "i1", "purchase", 1, 1.0),
             ("t-1", "2011-01-05 11:00:00", "c8", "i2", "purchase", 2, 1.0)]


def test_a_thin_first_day_keeps_no_candidate_and_says_why(store, publish_events):
    """issue 18 #9: no training examples and no replay sample: no version, a recorded 'no candidate' decision."""
    from recsys.evaluation import evaluate_candidate
    from recsys.serving.deploy import DeployError, deploy

    settings = Settings(storage_root=str(store.root))
    publish_events(store, D2, THIN_DAY2)
    stats = build_features(store, settings, D2)
    assert (stats.train_examples, stats.holdout_users) == (0, 2)
    result = fine_tune(store, settings, D2, run_id="r1")
    assert (result["version"], result["trained"]) == (None, False)
    assert "its 2 customer(s) were all held out" in result["reason"] and "no replay sample" in result["reason"]
    assert registry.load(store)["versions"] == {}
    assert fine_tune(store, settings, D2) == result  # a rerun decides the same
    decision = evaluate_candidate(store, settings, D2, run_id="r1")
    assert (decision["candidate_version"], decision["blessed"]) == (None, False)
    assert decision["reason"] == "no candidate: " + result["reason"]
    reg = registry.load(store)
    assert reg["decisions"]["2011-01-05"]["reason"] == decision["reason"] and reg["champion"] is None
    assert reg["history"][-1]["action"] == registry.REJECTED and "version" not in reg["history"][-1]
    assert evaluate_candidate(store, settings, D2)["reused"] is True
    with pytest.raises(DeployError, match="not blessed"):
        deploy(store, settings, D2)
    with pytest.raises(registry.RegistryError, match="no candidate to deploy"):
        registry.deploy_override(store, D2, registry.FORCE, "on-call insists", run_id="r1")


@pytest.mark.slow
def test_a_thin_day_after_others_trains_on_the_replay_sample(tiny, publish_events):
    """issue 18 #9: every customer of the day held out, older days exist: the candidate learns from the replay."""
    from recsys.evaluation import evaluate_candidate

    store, settings, _ = tiny
    fine_tune(store, settings, D1)
    fine_tune(store, settings, D2)
    publish_events(store, D3, [("t3-0", "2011-01-06 10:00:00", "u1", "i1", "purchase", 1, 1.0),
                               ("t3-1", "2011-01-06 11:00:00", "u2", "i2", "purchase", 1, 1.0)])
    stats = build_features(store, settings.replace(holdout_fraction=0.99999), D3)
    assert stats.train_examples == 0
    v3 = fine_tune(store, settings, D3)
    assert (v3["version"], v3["parent"], v3["train_examples"]) == (3, 2, 0)
    assert v3["replay_examples"] > 0 and "trained on the replay sample of earlier days only" in v3["note"]
    decision = evaluate_candidate(store, settings, D3)
    assert decision["candidate_version"] == 3
    assert "it was trained on the replay sample of earlier days only" in decision["reason"]


@pytest.mark.slow
def test_fine_tune_before_the_features_step_raises(store):
    with pytest.raises(FeatureError, match="run the features step first"):
        fine_tune(store, Settings(storage_root=str(store.root)), D1)


@pytest.mark.slow
def test_train_from_scratch_uses_all_history_and_fine_tunes_continue_from_it(tiny):
    store, settings, (stats1, stats2) = tiny
    full = train_from_scratch(store, settings, D2, run_id="retrain")
    # every example of day 1, only the train split of day 2 (its holdout evaluates the day's candidate)
    assert full["train_examples"] == stats1.examples + stats2.train_examples
    assert (full["version"], full["kind"], full["parent"], full["cold_start"]) == (1, "full_retrain", None, True)
    assert (full["user_rows"], full["item_rows"]) == (8, 6)
    reg = registry.load(store)
    # a full retrain is not the day's candidate: the fine-tune of D2 still runs, from the retrain
    assert registry.version_for_date(reg, D2) is None
    assert registry.parent_for_date(reg, D3) == 1
    v2 = fine_tune(store, settings, D2)
    assert (v2["version"], v2["kind"], v2["parent"]) == (2, "fine_tune", None)
    assert registry.parent_for_date(registry.load(store), D3) == 2  # same date: the later version wins


@pytest.mark.slow
def test_train_from_scratch_needs_the_days_features(store):
    with pytest.raises(TrainingError, match="no features for 2011-01-04"):
        train_from_scratch(store, Settings(storage_root=str(store.root)), D1)


@pytest.mark.slow
def test_fine_tune_with_the_logq_correction_trains_and_records_it(tiny):
    store, settings, _ = tiny
    plain = fine_tune(store, settings.replace(logq_correction=False), D1)
    corrected = fine_tune(store, settings.replace(logq_correction=True), D2)
    assert plain["logq_correction"] is False and corrected["logq_correction"] is True
    assert np.isfinite(corrected["final_loss"])
    # the correction changes the loss: the same day trained both ways gives different weights
    other = train_from_scratch(store, settings.replace(logq_correction=True), D1)  # v1 is without it
    assert not np.array_equal(load_tables(store, other["version"])["item"], load_tables(store, 1)["item"])


@pytest.mark.slow
def test_the_exported_saved_model_ranks_exactly_as_the_scorer(tiny, tmp_path):
    """Serving paths agree: the SavedModel (TF Serving) and the numpy scorer (recsys serve, evaluation)
    give the same top items for customers with and without histories, repeat term included."""
    import tensorflow as tf

    from recsys.serving.export import export_saved_model
    from recsys.serving.index import load_scorer

    store, settings, _ = tiny
    fine_tune(store, settings, D1)
    fine_tune(store, settings, D2)
    scorer = load_scorer(store, 2)
    assert scorer.histories and scorer.repeat_weight != 0.0
    rows = list(range(1, len(scorer.item_ids)))
    users = ["u1", "u2", "u7", "stranger"]
    assert max(len(scorer.history(u)[0]) for u in users) > 1
    # as stored, then with a query over the most recent item only (the repeat term still covers them all)
    for query_length in (scorer.query_length, 1):
        scorer.query_length = query_length
        export_saved_model(scorer, rows, tmp_path / f"model{query_length}", k=3)
        serve = tf.saved_model.load(str(tmp_path / f"model{query_length}")).signatures["serving_default"]
        out = serve(user_id=tf.constant(users))
        exported = [[i.decode() for i in row] for row in out["item_ids"].numpy()]
        assert exported == scorer.top_k(users, 3)
        np.testing.assert_allclose(out["scores"].numpy()[:, 0], scorer.scores(users)[:, 1:].max(1), rtol=1e-5)


@pytest.mark.slow
def test_a_fine_tune_refuses_to_change_the_embedding_size_and_says_what_to_do(tiny):
    store, settings, _ = tiny
    fine_tune(store, settings, D1)
    with pytest.raises(TrainingError, match=r"version 1 has 8-d embeddings but RECSYS_EMBEDDING_DIM is 16.*retrain"):
        fine_tune(store, settings.replace(embedding_dim=16), D2)


def test_replay_draws_exactly_what_dataframe_sample_draws_with_each_users_history(tiny):
    store, _, _ = tiny
    pool = pd.concat([load_examples(store, d, histories=True) for d in (D1, D2)], ignore_index=True)
    for size, seed in ((3, 0), (5, 7), (len(pool) - 1, 2)):
        expected = pool.sample(n=size, random_state=seed).reset_index(drop=True)
        replay = replay_sample(store, D3, size=size, seed=seed)
        assert replay[schema.USER_ID].tolist() == expected[schema.USER_ID].tolist()
        assert replay[schema.ITEM_ID].tolist() == expected[schema.ITEM_ID].tolist()
        assert replay["hist_items"].tolist() == [list(h) for h in expected["hist_items"]]
        assert replay["hist_days"].tolist() == [list(h) for h in expected["hist_days"]]
    assert any(len(h) for h in replay_sample(store, D3, size=100, seed=0)["hist_items"])  # D2 has histories


def test_training_dataset_gives_every_example_once_per_epoch_with_its_history_reshuffled_by_seed():
    import tensorflow as tf

    from recsys.model import two_tower
    from recsys.training import training_dataset

    n = 10
    features = {schema.USER_ROW: np.arange(n, dtype=np.int32) + 100, schema.ITEM_ROW: np.arange(n, dtype=np.int32)}
    hist_index = (np.arange(n) % 3).astype(np.int32)  # example k has history k % 3 (0: none)
    hist_rows = np.array([[0, 0], [5, 0], [6, 7]], np.int32)
    hist_days = np.array([[0, 0], [2, 0], [1, 3]], np.uint16)

    def epochs(seed: int) -> list[list[int]]:
        tf.keras.utils.set_random_seed(seed)  # as fine_tune does before building its dataset
        dataset = training_dataset(features, hist_index, hist_rows, hist_days, batch_size=4, seed=seed)
        out = []
        for _ in range(3):  # an iteration is an epoch of fit
            order = []
            for batch in dataset:
                items = batch[schema.ITEM_ROW].numpy()
                assert len(items) <= 4
                assert (batch[schema.USER_ROW].numpy() == items + 100).all()
                assert (batch[two_tower.HIST_ROWS].numpy() == hist_rows[hist_index[items]]).all()
                assert batch[two_tower.HIST_DAYS].dtype == tf.float32
                assert (batch[two_tower.HIST_DAYS].numpy() == hist_days[hist_index[items]]).all()
                order += items.tolist()
            assert sorted(order) == list(range(n))
            out.append(order)
        return out

    first = epochs(1)
    assert len({tuple(o) for o in first}) > 1  # reshuffled every epoch
    assert epochs(1) == first  # and reproducibly


@pytest.mark.slow
def test_fine_tune_is_deterministic_per_seed(tiny, tmp_path):
    import shutil

    from recsys.storage.local import LocalStore

    store, settings, _ = tiny
    shutil.copytree(store.root, tmp_path / "copy")
    copy = LocalStore(tmp_path / "copy")
    for day in (D1, D2):
        fine_tune(store, settings, day)
        fine_tune(copy, settings.replace(storage_root=str(copy.root)), day)
    for version in (1, 2):
        path = f"models/two_tower/versions/{version}/tables.npz"
        assert store.read_bytes(path) == copy.read_bytes(path)


@pytest.mark.slow
def test_the_trend_term_is_trained_and_folded_into_the_served_item_bias(tiny):
    from recsys.features import trend
    from recsys.serving.index import load_scorer

    store, settings, _ = tiny
    fine_tune(store, settings, D1)
    meta = fine_tune(store, settings, D2)
    tables = load_tables(store, 2)
    # D2's examples see D1's purchases as their trend, so the weight moves from its start at 0
    assert meta["trend_weight"] == pytest.approx(float(tables["trend_weight"])) and meta["trend_weight"] != 0.0
    recent = trend.vector(store, D3, len(tables["item_bias"]), settings.trend_days)
    assert recent.any()
    for scorer in (load_scorer(store, 2, before=D3), load_scorer(store, 2)):  # serving ranks the day after D2
        np.testing.assert_allclose(scorer.item_bias, tables["item_bias"] + tables["trend_weight"] * recent, rtol=1e-6)
        # the whole catalog is ranked with the learned repeat weight times RECSYS_REPEAT_SCALE (default 2)
        assert meta["repeat_scale"] == settings.repeat_scale == 2.0
        assert scorer.repeat_weight == pytest.approx(2.0 * float(tables["repeat_weight"]))


def test_a_retrain_window_beyond_the_calendar_does_not_overflow(store):
    """issue 18 #11: the window start is held at 0001-01-01 (was: OverflowError)."""
    with pytest.raises(TrainingError, match="no features for 2011-01-04"):
        train_from_scratch(store, Settings(storage_root=str(store.root)), D1, window_days=10**9)
