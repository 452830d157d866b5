"""recsys.features.vocab: append-only id -> row tables (row 0 = OOV)."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from recsys.features import vocab

D1, D2, D3 = date(2011, 1, 4), date(2011, 1, 5), date(2011, 1, 6)


def _rows(table: pd.DataFrame) -> list[tuple[str, int, str]]:
    return [(str(i), int(r), str(s)) for i, r, s in zip(table["id"], table["row"], table["first_seen"], strict=True)]


def test_empty_has_the_vocabulary_columns():
    table = vocab.empty()
    assert list(table.columns) == ["id", "row", "first_seen", "count", "qualified", "last_day"]
    assert len(table) == 0
    assert table["row"].dtype == "int64"


def test_load_of_a_store_without_vocab_is_empty(store):
    assert len(vocab.load(store, vocab.USERS)) == 0


def test_grow_from_empty_starts_at_row_1_sorted_by_id():
    table, added = vocab.grow(vocab.empty(), pd.Series(["b", "a", "b", None]), D1)
    assert added == 2
    assert _rows(table) == [("a", 1, "2011-01-04"), ("b", 2, "2011-01-04")]


def test_grow_keeps_existing_rows_and_appends_new_ids_after_the_max():
    first, _ = vocab.grow(vocab.empty(), pd.Series(["u2", "u1"]), D1)
    grown, added = vocab.grow(first, pd.Series(["u3", "u1", "u0"]), D2)
    assert added == 2
    assert _rows(grown) == [
        ("u1", 1, "2011-01-04"),
        ("u2", 2, "2011-01-04"),
        ("u0", 3, "2011-01-05"),  # new ids sorted among themselves, after every old row
        ("u3", 4, "2011-01-05"),
    ]
    columns = ["id", "row", "first_seen", "qualified"]
    pd.testing.assert_frame_equal(grown.iloc[:2][columns], first[columns])


def test_grow_starts_after_the_largest_row_even_with_gaps():
    table = pd.DataFrame({"id": ["x", "y"], "row": [1, 5], "first_seen": ["2011-01-04"] * 2}).astype(
        {"id": "string", "row": "int64", "first_seen": "string"}
    )
    grown, added = vocab.grow(table, pd.Series(["z"]), D2)
    assert added == 1
    assert _rows(grown)[-1] == ("z", 6, "2011-01-05")


def test_grow_with_nothing_new_returns_the_table_unchanged():
    first, _ = vocab.grow(vocab.empty(), pd.Series(["a"]), D1)
    same, added = vocab.grow(first, pd.Series(["a", "a"]), D2)
    assert added == 0
    assert _rows(same) == [("a", 1, "2011-01-04")]


def test_grow_compares_ids_as_text():
    table, _ = vocab.grow(vocab.empty(), pd.Series([17850, 9]), D1)
    # text order: "17850" < "9"
    assert _rows(table) == [("17850", 1, "2011-01-04"), ("9", 2, "2011-01-04")]
    _, added = vocab.grow(table, pd.Series(["17850", "9"]), D2)
    assert added == 0


def test_save_and_load_roundtrip(store):
    table, _ = vocab.grow(vocab.empty(), pd.Series(["b", "a"]), D1)
    vocab.save(store, vocab.ITEMS, table)
    assert store.exists("vocab/items.parquet")
    assert _rows(vocab.load(store, vocab.ITEMS)) == _rows(table)
    assert len(vocab.load(store, vocab.USERS)) == 0


def test_size_counts_the_oov_row():
    assert vocab.size(vocab.empty()) == 1
    table, _ = vocab.grow(vocab.empty(), pd.Series(["a", "b", "c"]), D1)
    assert vocab.size(table) == 4


def test_growth_on_counts_ids_first_seen_that_day_and_rows_as_of_its_end():
    table, _ = vocab.grow(vocab.empty(), pd.Series(["a", "b"]), D1)
    table, _ = vocab.grow(table, pd.Series(["c"]), D2)
    table, _ = vocab.grow(table, pd.Series(["d", "e"]), D3)
    assert vocab.growth_on(table, date(2011, 1, 3)) == (0, 1)  # only the OOV row
    assert vocab.growth_on(table, D1) == (2, 3)  # a, b + OOV
    assert vocab.growth_on(table, D2) == (1, 4)
    assert vocab.growth_on(table, D3) == (2, 6)


def test_rows_for_maps_unknown_ids_to_the_oov_row():
    table, _ = vocab.grow(vocab.empty(), pd.Series(["a", "b"]), D1)
    rows = vocab.rows_for(table, pd.Series(["b", "zzz", "a", "b"]))
    assert list(rows) == [2, 0, 1, 2]
    assert rows.dtype == "int64"
    assert vocab.OOV_ROW == 0


def test_rows_for_accepts_numeric_ids():
    table, _ = vocab.grow(vocab.empty(), pd.Series(["12583", "17850"]), D1)
    assert list(vocab.rows_for(table, pd.Series([17850, 12583, 1]))) == [2, 1, 0]


def test_ids_below_the_minimum_count_wait_on_the_oov_row_until_they_qualify():
    table, added = vocab.grow(vocab.empty(), pd.Series(["a", "b", "b"]), D1, min_count=2)
    assert added == 1  # b was seen twice
    assert vocab.rows_for(table, pd.Series(["a", "b", "zz"])).tolist() == [0, 1, 0]
    assert vocab.pending_on(table, D1) == 1
    assert vocab.growth_on(table, D1) == (1, 2)
    table, added = vocab.grow(table, pd.Series(["a", "c"]), D2, min_count=2)
    assert added == 1  # a reaches 2 on D2; c (seen once) waits
    assert vocab.rows_for(table, pd.Series(["a", "b", "c"])).tolist() == [2, 1, 0]
    row_a = table.set_index("id").loc["a"]
    assert (row_a["first_seen"], row_a["qualified"], int(row_a["count"])) == ("2011-01-04", "2011-01-05", 2)
    assert vocab.growth_on(table, D2) == (1, 3)
    assert (vocab.pending_on(table, D1), vocab.pending_on(table, D2)) == (1, 1)  # a on D1, c on D2
    assert vocab.size(table) == 3


def test_counting_the_same_day_twice_changes_nothing():
    once, _ = vocab.grow(vocab.empty(), pd.Series(["a"]), D1, min_count=2)
    twice, added = vocab.grow(once, pd.Series(["a"]), D1, min_count=2)
    assert added == 0
    pd.testing.assert_frame_equal(once, twice)
    assert vocab.rows_for(twice, pd.Series(["a"])).tolist() == [0]


def test_a_table_written_before_minimum_counts_loads_as_qualified(store, put_vocab):
    put_vocab(store, vocab.USERS, ["u1", "u2"])
    table = vocab.load(store, vocab.USERS)
    assert table["qualified"].tolist() == ["2011-01-04", "2011-01-04"]
    assert table["count"].tolist() == [1, 1]
    assert vocab.growth_on(table, D1) == (2, 3)


def test_minimum_count_below_one_is_refused():
    with pytest.raises(ValueError, match="min_count"):
        vocab.grow(vocab.empty(), pd.Series(["a"]), D1, min_count=0)


def test_new_id_flags_looks_ids_up_as_isin_does():
    """The hash-table lookup flags exactly the ids ``isin`` would: text, numbers compared as text, missing values,
    an empty vocabulary, and an index with repeats (looked up with ``isin``)."""
    import numpy as np

    from recsys.validation.suites import new_id_flags

    frame = pd.DataFrame({"user_id": ["u1", "u2", 17, None, np.nan, "17", "u9", "nan"]}, index=range(10, 18))
    for known in (pd.Index(["u1", "17", "u3"], dtype=object), pd.Index([], dtype=object),
                  pd.Index(["u1", "u1", "17", "nan"], dtype=object)):
        flags = new_id_flags(frame, "user_id", known)
        expected = (~frame["user_id"].astype(str).isin(known)).astype("float64")
        pd.testing.assert_series_equal(flags, expected, check_names=False)
    assert new_id_flags(frame, "user_id", pd.Index(["u1", "17"], dtype=object)).tolist() == [0, 1, 0, 1, 1, 0, 1, 1]
    assert new_id_flags(frame, "item_id", pd.Index(["u1"], dtype=object)).tolist() == [0.0] * 8


def test_thirty_days_of_random_ids_keep_every_rule_of_the_table():
    """grow_counts works on Arrow arrays by position: check its rules over many days of overlapping ids, with a
    re-counted day, against counts kept here by hand."""
    import numpy as np

    rng = np.random.default_rng(7)
    table, given, counts = vocab.empty(), {}, {}
    universe = [f"id{n}" for n in range(300)] + ["é", "Z", "a b", "10", "9"]
    for d in range(30):
        day = date(2011, 1, 1 + d)
        seen = pd.Series(rng.integers(1, 4, 40), index=pd.Index(rng.choice(universe, 40))).groupby(level=0).sum()
        for again in (False, True):  # the same day twice: counted once
            table, added = vocab.grow_counts(table, seen, day, min_count=3)
            if not again:
                for i, c in seen.items():
                    counts[i] = counts.get(i, 0) + int(c)
            if again:
                assert added == 0
        assert dict(zip(table["id"], table["count"], strict=True)) == counts
        rows = dict(zip(table["id"], table["row"], strict=True))
        assert all(rows[i] == r for i, r in given.items())  # a row once given never changes
        fresh = sorted(i for i, r in rows.items() if r and i not in given)
        assert [rows[i] for i in fresh] == list(range(len(given) + 1, len(given) + 1 + len(fresh)))  # id order
        given.update({i: rows[i] for i in fresh})
        assert all((rows[i] > 0) == (c >= 3) for i, c in counts.items())
        with_row = table[table["row"] > 0]
        assert with_row["row"].tolist() == sorted(with_row["row"]) and len(with_row) == len(given)
        pending = table[table["row"] == 0]["id"].tolist()
        assert table["id"].tolist() == with_row["id"].tolist() + pending and pending == sorted(pending)
        assert (table[table["id"].isin(fresh)]["qualified"] == day.isoformat()).all()
        assert (table[table["id"].isin(seen.index)]["last_day"] == day.isoformat()).all()
        assert vocab.rows_for(table, pd.Series([*rows, "never"])).tolist() == [*rows.values(), 0]
        assert table.dtypes.astype(str).to_dict() == {k: str(pd.Series(dtype=v).dtype) for k, v in vocab.DTYPES.items()}
