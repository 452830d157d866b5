"""Bounded memory on real days (issue 14): block evaluation and snapshot serving give today's answers.

One store of six real Online Retail days (the bundled data: landed, validated by the real suites,
features built) is shared by the tests of this module. The versions scored on it have random tables
(every term of the model: ids, title words, price bands, bias, repeat and trend weights) over the real
vocabularies, so the users, items, histories and held-out sets are the real ones.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys import registry, schema
from recsys.config import ConfigError, Settings
from recsys.datasets.landing import land_days
from recsys.evaluation import compare_with_champion, recall_at_k
from recsys.features import vocab
from recsys.features.build import build_features
from recsys.features.items import PRICE_BANDS, TITLE_WORDS, WORD_BUCKETS
from recsys.serving.deploy import INDEX_FILE, INDEX_META_FILE, build_index, index_metadata
from recsys.serving.index import load_scorer, top_k_rows
from recsys.serving.model_holder import LoadedVersion, load_version
from recsys.storage import layout
from recsys.storage.local import LocalStore
from recsys.validation import validate_partition

FIRST = date(2010, 12, 1)
DAYS = 6
DIM = 16


def _put_random_version(store: LocalStore, version: int, day: date, seed: int) -> None:
    """A version with every table the model stores, random values, sized to the vocabularies."""
    rng = np.random.default_rng(seed)
    users = len(vocab.with_rows(vocab.load(store, vocab.USERS))) + 1
    items = len(vocab.with_rows(vocab.load(store, vocab.ITEMS))) + 1
    item = rng.normal(size=(items, DIM)).astype(np.float32)
    item_words = rng.integers(0, WORD_BUCKETS, size=(items, TITLE_WORDS)).astype(np.int32)
    item_words[:, TITLE_WORDS // 2:] = 0  # padding, as short titles have
    item_price = rng.integers(0, PRICE_BANDS, size=items).astype(np.int32)
    bias = rng.normal(scale=0.5, size=items).astype(np.float32)
    # exact ties: rows 11..20 copy rows 1..10 (same vectors, words, band and bias)
    for table in (item, item_words, item_price, bias):
        table[11:21] = table[1:11]
    tables = {
        "user": rng.normal(size=(users, DIM)).astype(np.float32), "item": item,
        "word": rng.normal(scale=0.3, size=(WORD_BUCKETS, DIM)).astype(np.float32),
        "price": rng.normal(scale=0.3, size=(PRICE_BANDS, DIM)).astype(np.float32),
        "item_bias": bias, "repeat_weight": np.asarray(5.0, np.float32), "trend_weight": np.asarray(0.4, np.float32),
        "item_words": item_words, "item_price": item_price,
    }
    buf = io.BytesIO()
    np.savez(buf, **tables)  # type: ignore[arg-type]
    vdir = layout.model_version(version)
    store.write_bytes(f"{vdir}/{layout.TABLES_FILE}", buf.getvalue())
    meta = {"version": version, "trained_on": day.isoformat(), "user_rows": users, "item_rows": items,
            "history_length": 50, "repeat_length": 200, "repeat_scale": 2.0, "trend_days": 7}
    store.write_bytes(f"{vdir}/{layout.METADATA_FILE}", json.dumps(meta).encode())
    registry.add_version(store, version, meta, run_id="test")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def real_days(tmp_path_factory) -> tuple[LocalStore, Settings, list[date]]:
    root = tmp_path_factory.mktemp("online_retail")
    store = LocalStore(root)
    settings = Settings(storage_root=str(root), holdout_fraction=0.5, k=10, min_eval_users=1,
                        min_recall=0.0, max_regression=0.05)
    days = [date.fromisoformat(str(d.as_dict()["date"])) for d in land_days(store, FIRST, DAYS)]
    for day in days:
        assert validate_partition(store, settings, day).success
        build_features(store, settings, day)
    _put_random_version(store, 1, days[-2], seed=1)
    _put_random_version(store, 2, days[-1], seed=2)
    return store, settings, days


def _one_shot_metrics(store: LocalStore, version: int, day: date, k: int,
                      only: list[str] | None = None) -> dict[str, float]:
    """Today's evaluation before blocks: one dense [users x items] matrix, then recall_at_k."""
    examples = pd.read_parquet(store.root / layout.features(day) / layout.EXAMPLES_FILE)
    holdout = examples[examples[schema.SPLIT] == "holdout"]
    relevant_by_user = holdout.groupby(schema.USER_ID)[schema.ITEM_ID].agg(set)
    if only is not None:
        relevant_by_user = relevant_by_user[relevant_by_user.index.isin(only)]
    users = [str(u) for u in relevant_by_user.index]
    relevant = [set(items) for items in relevant_by_user]
    scorer = load_scorer(store, version, before=day)
    scores = scorer.scores(users)
    assert scores.shape == (len(users), len(scorer.item_table))
    scores[:, vocab.OOV_ROW] = -np.inf
    best, best_scores = top_k_rows(scores, max(k, 20))
    ranked = [[scorer.item_ids[r] for r, s in zip(row, srow, strict=True) if np.isfinite(s)]
              for row, srow in zip(best, best_scores, strict=True)]
    return {f"recall@{k}": recall_at_k(ranked, relevant, k), "recall@20": recall_at_k(ranked, relevant, 20)}


def test_block_evaluation_equals_one_shot_evaluation_on_real_days(real_days):
    store, settings, days = real_days
    day = days[-1]
    held_out = compare_with_champion(store, settings, day, 2, 1)["eval_users"]
    assert held_out > 30 and held_out % 7  # a block size of 7 leaves a partial last block
    expected_candidate = _one_shot_metrics(store, 2, day, settings.k)
    expected_champion = _one_shot_metrics(store, 1, day, settings.k)
    assert expected_candidate["recall@20"] > 0 and expected_candidate != expected_champion
    for block in (1, 7, held_out - 1, held_out, 4096, None):
        result = compare_with_champion(store, settings, day, 2, 1, block_users=block)
        assert result["candidate_metrics"] == expected_candidate, block
        assert result["champion_metrics"] == expected_champion, block
        assert result["eval_users"] == held_out and "eval_sample" not in result


def test_top_k_in_blocks_ranks_every_user_as_one_block_does(real_days):
    store, _, days = real_days
    scorer = load_scorer(store, 2, before=days[-1])
    users = [*sorted(scorer.user_rows)[:50], "never-seen"]
    one_shot = scorer.top_k(users, 20, block=len(users))
    for block in (1, 3, 50):
        assert scorer.top_k(users, 20, block=block) == one_shot
        assert [len(part) for part in scorer.top_k_blocks(users, 20, block=block)] == \
            [min(block, len(users) - s) for s in range(0, len(users), block)]
    with pytest.raises(ValueError, match="block must be >= 1"):
        scorer.top_k(users, 5, block=0)


# --- serving state from the newest history snapshot -----------------------------------------------

def _deploy(store: LocalStore, version: int, day: date) -> None:
    """What deploy writes next to a version (index.parquet + index.json), then the champion pointer."""
    index = build_index(store, version, day)
    buf = io.BytesIO()
    index.to_parquet(buf, index=False)
    vdir = layout.model_version(version)
    store.write_bytes(f"{vdir}/{INDEX_FILE}", buf.getvalue())
    store.write_json(f"{vdir}/{INDEX_META_FILE}", index_metadata(buf.getvalue(), index, day, None))
    registry.set_champion(store, version, registry.DEPLOYED, "test", None)


def _from_every_partition(store: LocalStore, loaded: LoadedVersion) -> LoadedVersion:
    """``loaded`` with purchases and popularity computed as before snapshots: from the examples of every
    feature partition ever written (the code this change replaced, kept here as the reference)."""
    frames = [store.read_parquet(f"{layout.features(d)}/{layout.EXAMPLES_FILE}")[[schema.USER_ID, schema.ITEM_ID]]
              .astype(str) for d in store.partitions(layout.FEATURES)]
    pairs = pd.concat(frames, ignore_index=True).drop_duplicates()
    served = pairs[pairs[schema.ITEM_ID].isin(loaded.position)]
    served_pos = served[schema.ITEM_ID].map(loaded.position).to_numpy(dtype=np.int64)
    buyers = np.bincount(served_pos, minlength=len(loaded.titles)).astype(np.int64)
    buyers[vocab.OOV_ROW] = -1
    popular = np.lexsort((np.arange(len(loaded.titles)), -buyers))[:-1]
    purchases = {str(user): np.unique(group.to_numpy())
                 for user, group in pd.Series(served_pos).groupby(served[schema.USER_ID].to_numpy())}
    return dataclasses.replace(loaded, purchases=purchases, buyers=buyers, popular=popular)


def _distinct_items(store: LocalStore) -> pd.Series:
    frames = [store.read_parquet(f"{layout.features(d)}/{layout.EXAMPLES_FILE}")[[schema.USER_ID, schema.ITEM_ID]]
              for d in store.partitions(layout.FEATURES)]
    return pd.concat(frames).astype(str).drop_duplicates().groupby(schema.USER_ID).size()


def test_serving_from_the_snapshot_gives_the_answers_of_every_partition(real_days):
    """Same purchases, popularity and answers as reading every partition, except where the snapshot's
    bound applies: a customer with more than LENGTH distinct items keeps only the LENGTH most recent
    as purchases (the older ones are neither excluded nor counted as bought by them)."""
    store, settings, days = real_days
    length = max(settings.history_length, settings.repeat_length)
    _deploy(store, 2, days[-1])
    new = load_version(store, 2)
    old = _from_every_partition(store, new)
    heavy = set(_distinct_items(store).pipe(lambda n: n[n > length]).index)
    assert heavy == {"12748"}  # 263 distinct items in six days: the one customer the bound cuts
    assert set(new.purchases) == set(old.purchases)
    dropped = np.zeros(len(new.buyers), np.int64)
    for user, bought in old.purchases.items():
        if user in heavy:
            assert set(new.purchases[user]) < set(bought)
            np.add.at(dropped, np.setdiff1d(bought, new.purchases[user]), 1)
        else:
            np.testing.assert_array_equal(new.purchases[user], bought)
    np.testing.assert_array_equal(old.buyers - new.buyers, dropped)
    assert dropped.sum() > 0
    # the popular fallback: the most bought items keep their order (their counts are lower, see below)
    np.testing.assert_array_equal(new.popular[:20], old.popular[:20])

    users = [*sorted(vocab.load(store, vocab.USERS)[vocab.ID].astype(str)), "never-seen", "12345"]
    compared = 0
    for user in users:
        for exclude in (False, True):
            if exclude and user in heavy:
                continue
            got, want = new.recommend(user, 10, exclude), old.recommend(user, 10, exclude)
            if got.fallback is None:
                assert got == want, (user, exclude)
            else:  # most bought first: the same items, each with its buyers less the cut-off ones
                assert got.item_ids == want.item_ids, (user, exclude)
                assert got.scores == [w - dropped[new.position[i]] for i, w in zip(want.item_ids, want.scores,
                                                                                  strict=True)]
            compared += 1
    assert compared > 2 * len(users) - 5


def test_serving_reads_no_examples_beyond_the_trend_window(real_days, tmp_path):
    """Load time does not grow with the days: without the examples of days before the trend window, the
    loaded version answers the same (the trend term reads the last ``trend_days`` days only)."""
    store, _, days = real_days
    _deploy(store, 2, days[-1])
    copy = LocalStore(shutil.copytree(store.root, tmp_path / "copy"))
    reg = json.loads((copy.root / layout.REGISTRY).read_text())
    reg["versions"]["2"]["trend_days"] = 2  # a window of the last two days: 2010-12-06 and -07
    (copy.root / layout.REGISTRY).write_text(json.dumps(reg))
    expected = load_version(copy, 2)
    for day in days[:-2]:
        (copy.root / layout.features(day) / layout.EXAMPLES_FILE).unlink()
    loaded = load_version(copy, 2)
    assert loaded.purchases.keys() == expected.purchases.keys()
    assert all(np.array_equal(loaded.purchases[u], p) for u, p in expected.purchases.items())
    np.testing.assert_array_equal(loaded.buyers, expected.buyers)
    np.testing.assert_array_equal(loaded.scorer.item_bias, expected.scorer.item_bias)
    for user in ["never-seen", *list(expected.purchases)[:50]]:
        assert loaded.recommend(user, 10, True) == expected.recommend(user, 10, True)


def _histories_by_row_loop(snapshot: pd.DataFrame, item_rows: dict[str, int], rows: int, length: int) -> dict:
    """The per-user loop histories_by_row replaced (history.by_user + history.to_rows), as the reference."""
    from recsys.features import history

    known = {i: r for i, r in item_rows.items() if 0 < r < rows}
    out = {}
    for user, (ids, days) in history.by_user(snapshot).items():
        matrix_rows, matrix_days = history.to_rows([ids], [days], known, length)
        keep = matrix_rows[0] > 0
        if keep.any():
            out[user] = (matrix_rows[0][keep], matrix_days[0][keep])
    return out


def test_histories_by_row_equals_the_per_user_loop_on_real_snapshots(real_days):
    from recsys.features import history
    from recsys.serving.index import histories_by_row

    store, _, days = real_days
    items = vocab.with_rows(vocab.load(store, vocab.ITEMS))
    item_rows = dict(zip(items[vocab.ID].astype(str), items[vocab.ROW].astype(int), strict=True))
    checked = 0
    for day in days:
        snapshot = history.load(store, day)
        for rows, length in ((len(items) + 1, 200), (len(items) + 1, 50), (len(items) // 2, 3), (1, 50)):
            expected = _histories_by_row_loop(snapshot, item_rows, rows, length)
            got = histories_by_row(snapshot, item_rows, rows, length)
            assert list(got) == list(expected)
            for user, (want_rows, want_days) in expected.items():
                # item rows held as int32 in one flat table (recsys.serving.ids.IdLists), days as float32
                assert got[user][0].dtype == np.int32 and got[user][1].dtype == want_days.dtype
                np.testing.assert_array_equal(got[user][0], want_rows)
                np.testing.assert_array_equal(got[user][1], want_days)
            checked += len(expected)
    assert checked > 1000
    assert histories_by_row(history.empty(), item_rows, len(items) + 1, 50) == {}


def _user_recalls(store: LocalStore, version: int, day: date, users: list[str], k: int) -> np.ndarray:
    examples = pd.read_parquet(store.root / layout.features(day) / layout.EXAMPLES_FILE)
    holdout = examples[examples[schema.SPLIT] == "holdout"]
    relevant = holdout.groupby(schema.USER_ID)[schema.ITEM_ID].agg(set)
    ranked = load_scorer(store, version, before=day).top_k(users, max(k, 20))
    return np.array([len(set(r[:k]) & relevant[u]) / len(relevant[u]) for u, r in zip(users, ranked, strict=True)])


def test_a_capped_evaluation_scores_a_deterministic_sample_and_records_its_standard_error(real_days):
    from recsys.evaluation import sample_users

    store, settings, days = real_days
    day = days[-1]
    full = compare_with_champion(store, settings, day, 2, 1)
    held_out = full["eval_users"]
    assert compare_with_champion(store, settings.replace(max_eval_users=held_out), day, 2, 1)["candidate_metrics"] \
        == full["candidate_metrics"]  # a cap at or above the held-out users changes nothing
    capped = compare_with_champion(store, settings.replace(max_eval_users=20), day, 2, 1)
    examples = pd.read_parquet(store.root / layout.features(day) / layout.EXAMPLES_FILE)
    everyone = sorted(examples.loc[examples[schema.SPLIT] == "holdout", schema.USER_ID].astype(str).unique())
    chosen = [everyone[i] for i in sample_users(everyone, day, 20)]
    assert capped["eval_users"] == 20 and len(set(chosen)) == 20
    assert capped["candidate_metrics"] == _one_shot_metrics(store, 2, day, settings.k, only=chosen)
    assert capped["champion_metrics"] == _one_shot_metrics(store, 1, day, settings.k, only=chosen)
    candidate = _user_recalls(store, 2, day, chosen, settings.k)
    champion = _user_recalls(store, 1, day, chosen, settings.k)
    sample = capped["eval_sample"]
    assert (sample["users"], sample["held_out_users"]) == (20, held_out)
    assert sample["candidate_se"] == pytest.approx(candidate.std(ddof=1) / np.sqrt(20))
    assert sample["champion_se"] == pytest.approx(champion.std(ddof=1) / np.sqrt(20))
    assert sample["difference_se"] == pytest.approx((candidate - champion).std(ddof=1) / np.sqrt(20))
    assert f"a sample of 20 of {held_out} held-out users" in capped["reason"]
    again = compare_with_champion(store, settings.replace(max_eval_users=20), day, 2, 1)
    assert (again["candidate_metrics"], again["eval_sample"]) == (capped["candidate_metrics"], sample)
    assert sample_users(everyone, days[-2], 20) != sample_users(everyone, day, 20)  # each day its own sample
    with pytest.raises(ConfigError, match="RECSYS_MAX_EVAL_USERS must be positive"):
        settings.replace(max_eval_users=0)
