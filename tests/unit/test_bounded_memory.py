"""Bounded memory on real days (issue 14): block evaluation and snapshot serving give today's answers.

One store of six real Online Retail days (the bundled data: landed, validated by the real suites,
features built) is shared by the tests of this module. The versions scored on it have random tables
(every term of the model: ids, title words, price bands, bias, repeat and trend weights) over the real
vocabularies, so the users, items, histories and held-out sets are the real ones.
"""

from __future__ import annotations

import io
import json
from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys import registry, schema
from recsys.config import Settings
from recsys.datasets.landing import land_days
from recsys.evaluation import compare_with_champion, recall_at_k
from recsys.features import vocab
from recsys.features.build import build_features
from recsys.features.items import PRICE_BANDS, TITLE_WORDS, WORD_BUCKETS
from recsys.serving.index import load_scorer, top_k_rows
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


def _one_shot_metrics(store: LocalStore, version: int, day: date, k: int) -> dict[str, float]:
    """Today's evaluation before blocks: one dense [users x items] matrix, then recall_at_k."""
    examples = pd.read_parquet(store.root / layout.features(day) / layout.EXAMPLES_FILE)
    holdout = examples[examples[schema.SPLIT] == "holdout"]
    relevant_by_user = holdout.groupby(schema.USER_ID)[schema.ITEM_ID].agg(set)
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
        assert result["eval_users"] == held_out


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
