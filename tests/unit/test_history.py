"""recsys.features.history: bounded per-customer purchase histories (the query tower's input)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys.features import history

D1, D2, D3 = date(2011, 1, 4), date(2011, 1, 5), date(2011, 1, 6)


def _pairs(*pairs: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["user_id", "item_id"])


def test_update_counts_days_orders_by_recency_and_keeps_the_newest_length_items():
    snap = history.update(history.empty(), _pairs(("u1", "a"), ("u1", "b"), ("u2", "a")), D1, length=2)
    snap = history.update(snap, _pairs(("u1", "a"), ("u1", "a"), ("u1", "c")), D2, length=2)
    users = history.by_user(snap)
    # u1: a (D1, D2: 2 days) and c (D2) are the newest; b (D1 only) falls out at length 2
    assert users["u1"] == (["a", "c"], [2, 1])
    assert users["u2"] == (["a"], [1])
    assert len(snap) == 3


def test_update_of_an_empty_day_keeps_the_snapshot():
    snap = history.update(history.empty(), _pairs(("u1", "a")), D1, length=5)
    again = history.update(snap, _pairs(), D2, length=5)
    assert history.by_user(again) == history.by_user(snap)


def test_length_below_one_is_refused():
    with pytest.raises(ValueError, match="history length"):
        history.update(history.empty(), _pairs(), D1, length=0)


def test_attach_gives_each_example_its_users_history_and_empty_lists_to_new_users():
    snap = history.update(history.empty(), _pairs(("u1", "a"), ("u1", "b")), D1, length=5)
    examples = history.attach(_pairs(("u1", "c"), ("u9", "a")), snap)
    assert examples["hist_items"].tolist() == [["a", "b"], []]
    assert examples["hist_days"].tolist() == [[1, 1], []]


def test_to_rows_pads_skips_items_without_a_row_and_cuts_at_length():
    rows, days = history.to_rows([["a", "pending", "b", "c"], []], [[3, 1, 2, 1], []],
                                 {"a": 5, "b": 7, "c": 9, "pending": 0}, length=2)
    assert rows.tolist() == [[5, 7], [0, 0]]
    assert days.tolist() == [[3.0, 2.0], [0.0, 0.0]]
    assert rows.dtype == np.int64 and days.dtype == np.float32


def test_load_before_reads_the_latest_earlier_snapshot(store):
    from recsys.storage import layout

    for day, item in ((D1, "a"), (D2, "b")):
        out = layout.features(day)
        snap = history.update(history.load_before(store, day), _pairs(("u1", item)), day, length=5)
        store.write_parquet(f"{out}/{history.HISTORY_FILE}", snap)
        store.mark_success(out)
    assert history.by_user(history.load_before(store, D1)) == {}
    assert history.by_user(history.load_before(store, D2))["u1"] == (["a"], [1])
    assert history.by_user(history.load_before(store, D3))["u1"] == (["b", "a"], [1, 1])
    assert history.by_user(history.load_latest(store))["u1"] == (["b", "a"], [1, 1])
