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


def _query_by_strings(
    snapshot: pd.DataFrame, user_ids: pd.Series, length: int | None
) -> tuple[np.ndarray, pd.DataFrame]:
    """The pandas text query table that ``history.query_table`` replaced (its output must not change)."""
    ids = user_ids.astype(str)
    mine = snapshot[snapshot["user_id"].astype(str).isin(pd.unique(ids.to_numpy(object)))]
    mine = mine.sort_values(["user_id", "last_day", "item_id"], ascending=[True, False, True])
    if length is not None:
        mine = mine[mine.groupby("user_id", sort=False).cumcount().to_numpy() < length]
    code, with_history = pd.factorize(mine["user_id"].astype(str), sort=True)
    table = pd.DataFrame({history.HIST_INDEX: (code + 1).astype(np.int32),
                          "item_id": mine["item_id"].astype(str).astype("string").array,
                          history.DAYS: mine[history.DAYS].to_numpy(np.int32)})
    return (pd.Index(with_history).get_indexer(ids.to_numpy(object)) + 1).astype(np.int32), table


def _random_snapshots(seed: int) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    names = ["Ω9", "b", "a", "10", "9", "ä", "A", "zz", "b1", "1", "é", ""]  # text order is not first appearance
    snaps, snap = [], history.empty()
    for n, day in enumerate((D1, D2, D3)):
        pairs = pd.DataFrame({"user_id": [f"u{names[u % 12]}{u // 12}" for u in rng.integers(0, 30, 300)],
                              "item_id": [f"i{names[i % 12]}{i // 12}" for i in rng.integers(0, 40, 300)]})
        snap = history.update(snap, pairs, day, length=3 + 2 * n)
        snaps.append(snap)
    return snaps


def test_query_table_on_codes_gives_exactly_the_text_query_table():
    """Snapshots of 3 days (several days per item, ids out of text order), asked for users with and without
    histories, repeated, in any order, at lengths 1, 2, 4 and unbounded."""
    rng = np.random.default_rng(5)
    for snap in [history.empty(), *_random_snapshots(11)]:
        asked = [*sorted(set(snap["user_id"].astype(str))), "nobody", "u"]
        users = pd.Series(rng.choice(asked, 80))
        for length in (1, 2, 4, None):
            index, table = history.query_table(snap, users, length)
            ref_index, ref_table = _query_by_strings(snap, users, length)
            assert index.dtype == np.int32 and np.array_equal(index, ref_index), length
            pd.testing.assert_frame_equal(table, ref_table)
    assert (index > 0).any() and (index == 0).any() and table[history.DAYS].max() > 1


def test_load_coded_reads_the_snapshot_as_codes_whatever_its_row_groups(store):
    """A snapshot written in row groups of 7 rows (each its own dictionary) reads back as codes equal to the
    frame; the query table and the update from those codes equal the ones from the frame."""
    snap = _random_snapshots(2)[-1]
    out = layout.features(D3)
    store.write_bytes(f"{out}/{layout.HISTORY_FILE}", _parquet(snap, row_group_size=7))
    store.mark_success(out)
    coded = history.load_coded(store, D3)
    pd.testing.assert_frame_equal(coded.frame(), snap)
    assert coded.users() == snap["user_id"].nunique()
    users = np.asarray([*sorted(set(snap["user_id"])), "new"], object)
    index, table = history.query_coded(coded, users, 2)
    ref_index, ref_table = history.query_table(snap, pd.Series(users), 2)
    assert np.array_equal(index, ref_index)
    pd.testing.assert_frame_equal(table.frame(), ref_table)
    day = date(2011, 1, 7)
    after = history.update_coded(coded, users, np.asarray(["ia0", "zz"], object), np.array([0, 3, len(users) - 1]),
                                 np.array([0, 1, 1]), day, length=4)
    pd.testing.assert_frame_equal(after.frame(), history.update(snap, pd.DataFrame(
        {"user_id": users[[0, 3, len(users) - 1]], "item_id": ["ia0", "zz", "zz"]}), day, length=4))
    assert len(history.load_coded_before(store, D3)) == 0 and len(history.load_coded_before(store, day)) == len(snap)


def _parquet(frame: pd.DataFrame, **kwargs) -> bytes:
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False, **kwargs)
    return buf.getvalue()
