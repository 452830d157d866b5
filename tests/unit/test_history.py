"""recsys.features.history: bounded per-customer purchase histories (the query tower's input)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys.features import history
from recsys.storage import layout

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


def test_query_table_holds_each_users_history_once_and_indexes_it_per_example():
    snap = history.update(history.empty(), _pairs(("u1", "a"), ("u1", "b"), ("u2", "c"), ("u3", "d")), D1, length=5)
    users = pd.Series(["u1", "u1", "u3", "u9"])
    index, table = history.query_table(snap, users)
    assert index.tolist() == [1, 1, 2, 0]  # u1 and u3 have histories (in id order), u9 none; u2 is not asked for
    assert table[history.HIST_INDEX].tolist() == [1, 1, 2]
    assert table["item_id"].tolist() == ["a", "b", "d"]
    assert history.lists_from_table(index, table) == ([["a", "b"], ["a", "b"], ["d"], []], [[1, 1], [1, 1], [1], []])


def test_query_table_cuts_each_history_at_length_keeping_the_most_recent():
    snap = history.update(history.empty(), _pairs(("u1", "a"), ("u1", "b")), D1, length=5)
    snap = history.update(snap, _pairs(("u1", "c"), ("u2", "a")), D2, length=5)
    index, table = history.query_table(snap, pd.Series(["u1", "u2"]), length=2)
    assert history.lists_from_table(index, table) == ([["c", "a"], ["a"]], [[1, 1], [1]])
    index, table = history.query_table(snap, pd.Series(["u1"]))
    assert history.lists_from_table(index, table)[0] == [["c", "a", "b"]]


def _update_by_strings(previous: pd.DataFrame, pairs: pd.DataFrame, day: date, length: int) -> pd.DataFrame:
    """The string group-by update that ``history.update`` replaced (its output must not change)."""
    today = pairs[["user_id", "item_id"]].astype(str).drop_duplicates().assign(days=1, last_day=day.isoformat())
    both = pd.concat([previous[list(history.COLUMNS)].astype({"user_id": str, "item_id": str}), today],
                     ignore_index=True)
    merged = both.groupby(["user_id", "item_id"], as_index=False, sort=False).agg(
        days=("days", "sum"), last_day=("last_day", "max"))
    merged = merged.sort_values(["user_id", "last_day", "item_id"], ascending=[True, False, True])
    merged = merged.groupby("user_id", sort=False).head(length)
    return merged.reset_index(drop=True).astype(
        {"user_id": "string", "item_id": "string", "days": "int64", "last_day": "string"})


def test_update_on_codes_gives_exactly_the_string_group_by_snapshot():
    rng = np.random.default_rng(3)
    snap = ref = history.empty()
    for n, day in enumerate((D1, D2, D3)):
        pairs = pd.DataFrame({"user_id": [f"u{u}" for u in rng.integers(0, 30, 400)],
                              "item_id": [f"i{i}" for i in rng.integers(0, 60, 400)]})
        snap = history.update(snap, pairs, day, length=4 + n)
        ref = _update_by_strings(ref, pairs, day, length=4 + n)
        pd.testing.assert_frame_equal(snap, ref)


def test_matrix_gives_one_row_per_index_skipping_items_without_a_row():
    table = history.table_from_lists([["a", "pending", "b", "c"], [], ["zz", "c"]], [[3, 1, 2, 1], [], [4, 5]])
    rows, days = history.matrix(table, 4, pd.Index(["a", "b", "c", "pending"]), np.array([5, 7, 9, 0]), length=2)
    assert rows.tolist() == [[5, 7], [0, 0], [9, 0], [0, 0]]
    assert days.tolist() == [[3.0, 2.0], [0.0, 0.0], [5.0, 0.0], [0.0, 0.0]]
    assert rows.dtype == np.int32 and days.dtype == np.float32


def test_to_rows_pads_skips_items_without_a_row_and_cuts_at_length():
    rows, days = history.to_rows([["a", "pending", "b", "c"], []], [[3, 1, 2, 1], []],
                                 {"a": 5, "b": 7, "c": 9, "pending": 0}, length=2)
    assert rows.tolist() == [[5, 7], [0, 0]]
    assert days.tolist() == [[3.0, 2.0], [0.0, 0.0]]
    assert rows.dtype == np.int64 and days.dtype == np.float32


def test_load_before_reads_the_latest_earlier_snapshot(store):

    for day, item in ((D1, "a"), (D2, "b")):
        out = layout.features(day)
        snap = history.update(history.load_before(store, day), _pairs(("u1", item)), day, length=5)
        store.write_parquet(f"{out}/{layout.HISTORY_FILE}", snap)
        store.mark_success(out)
    assert history.by_user(history.load_before(store, D1)) == {}
    assert history.by_user(history.load_before(store, D2))["u1"] == (["a"], [1])
    assert history.by_user(history.load_before(store, D3))["u1"] == (["b", "a"], [1, 1])
    assert history.by_user(history.load_latest(store))["u1"] == (["b", "a"], [1, 1])


def test_matrix_and_to_rows_agree():
    rng = np.random.default_rng(0)
    ids = [f"i{n}" for n in range(20)]
    row_of = {i: int(r) for i, r in zip(ids, rng.integers(0, 5, 20), strict=True)}  # some pending (0)
    lists = [[str(i) for i in rng.choice([*ids, "unknown"], rng.integers(0, 8), replace=False)] for _ in range(30)]
    days = [[int(d) for d in rng.integers(1, 9, len(h))] for h in lists]
    rows, counts = history.to_rows(lists, days, row_of, length=3)
    table = history.table_from_lists(lists, days)
    m_rows, m_days = history.matrix(table, len(lists), pd.Index(list(row_of)), np.array(list(row_of.values())), 3)
    assert np.array_equal(m_rows, rows) and np.array_equal(m_days, counts)
