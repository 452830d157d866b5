"""recsys/spark/ranges.py: ``write_by_range`` (the Spark engine's features, a range of users at a time) writes
the files, vocabularies and stats ``recsys.features.build.write_features`` writes of the whole day, byte for byte.

No Spark here: the day's pairs are a ``DayPairs`` and the ranges are sliced from it as the Spark engine fetches
them (tests/integration/test_spark_parity.py runs the real thing). Days follow each other, so later days merge
into a snapshot with users of other days and thin days; ranges of one user up to all, and row groups of a few
rows (cut inside a range and across ranges) as well as the real size.
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recsys import schema
from recsys.config import Settings
from recsys.features import chunks
from recsys.features.build import DayPairs, write_features
from recsys.features.cleaning import CleaningStats
from recsys.spark import ranges
from recsys.storage import layout
from recsys.storage.local import LocalStore

START = date(2024, 5, 1)


def _day_pairs(n: int, seed: int) -> DayPairs:
    """``n`` events' distinct pairs (some users of every day, some of one), sorted by user, then item code."""
    rng = np.random.default_rng(seed)
    users = [f"U{u}" for u in rng.integers(0, 40, n)] + [f"N{seed}-{u}" for u in rng.integers(0, 6, n // 4)]
    items = [f"I{i}" for i in rng.integers(0, 25, len(users))]
    frame = pd.DataFrame({schema.USER_ID: users, schema.ITEM_ID: items}).drop_duplicates(ignore_index=True)
    pairs = DayPairs.from_frame(frame)
    keys = np.sort((pairs.user_code.astype(np.int64) << 32) | pairs.item_code)
    return DayPairs(pairs.user_ids, pairs.item_ids, (keys >> 32).astype(np.int32),
                    (keys & 0xFFFFFFFF).astype(np.int32))


def _ids(pairs: DayPairs) -> ranges.DayIds:
    return ranges.DayIds(pairs.user_ids, pairs.user_counts().to_numpy(np.int64), pairs.item_ids,
                         pairs.item_counts().to_numpy(np.int64), len(pairs))


def _fetch(pairs: DayPairs, fetched: list[tuple[int, int]]) -> ranges.FetchPairs:
    def fetch(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        fetched.append((start, stop))
        keep = (pairs.user_code >= start) & (pairs.user_code < stop)
        return pairs.user_code[keep], pairs.item_code[keep]

    return fetch


def _files(store: LocalStore) -> dict[str, str]:
    return {str(p.relative_to(store.root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("range_users", "group_rows"), [(1, 7), (3, 5), (17, 1000), (10_000, 7), (250_000, None)])
def test_by_range_writes_what_write_features_writes(monkeypatch, tmp_path, range_users, group_rows):
    monkeypatch.setattr(ranges, "RANGE_USERS", range_users)
    if group_rows:
        monkeypatch.setattr(chunks, "ROW_GROUP_ROWS", group_rows)
    settings = Settings(min_user_count=2, min_item_count=2, history_length=3, repeat_length=5)
    whole, by_range = LocalStore(tmp_path / "whole"), LocalStore(tmp_path / "ranges")
    sizes = [60, 0, 90, 40]  # the second day is thin: no pairs
    for n, size in enumerate(sizes):
        day = START + timedelta(days=n)
        pairs = _day_pairs(size, seed=n)
        cleaning = CleaningStats(rows_in=size + 3, rows_out=size, duplicate_event_ids=1, invalid_ids=1,
                                 non_positive_quantity=1)
        expected = write_features(whole, settings, day, pairs, cleaning, f"fp-{n}")
        fetched: list[tuple[int, int]] = []
        files_before, at_save = _files(by_range), []
        got = ranges.write_by_range(by_range, settings, day, _ids(pairs), _fetch(pairs, fetched), cleaning,
                                    f"fp-{n}", before_save=lambda at=at_save: at.append(_files(by_range)))
        assert got == expected
        assert _files(by_range) == _files(whole), day
        users = len(pairs.user_ids)
        assert fetched == [(s, min(s + range_users, users)) for s in range(0, max(users, 1), range_users)]
        assert at_save == [files_before]  # called once, every range fetched, nothing of the day written yet
    examples = by_range.read_parquet(f"{layout.features(START + timedelta(days=3))}/{layout.EXAMPLES_FILE}")
    assert len(examples) > 30 and examples["hist_index"].max() > 1  # histories of earlier days, many users


def test_a_range_that_gives_other_pairs_than_the_day_has_fails_before_writing(tmp_path):
    store = LocalStore(tmp_path / "store")
    pairs = _day_pairs(30, seed=1)
    ids = ranges.DayIds(pairs.user_ids, pairs.user_counts().to_numpy(np.int64), pairs.item_ids,
                        pairs.item_counts().to_numpy(np.int64), len(pairs) + 1)
    cleaning = CleaningStats(rows_in=30, rows_out=30, duplicate_event_ids=0, invalid_ids=0, non_positive_quantity=0)
    with pytest.raises(RuntimeError, match="pairs"):
        ranges.write_by_range(store, Settings(), START, ids, _fetch(pairs, []), cleaning, "fp")
    assert _files(store) == {}


def test_every_snapshot_row_is_in_the_range_of_its_user_sorted_or_not(monkeypatch):
    from recsys.features import history

    monkeypatch.setattr(ranges, "RANGE_USERS", 2)
    day_users = np.array(["b", "d", "f", "h", "j"], object)  # ranges: [.., f), [f, j), [j, ..)
    snapshot_users = np.array(["a", "b", "c", "d", "g", "h", "z", "e"], object)
    for user in (np.arange(8, dtype=np.int32), np.array([6, 0, 7, 3, 1, 5, 2, 4, 0], np.int32)):
        coded = history.Coded(snapshot_users, snapshot_users, snapshot_users, user, user,
                              np.ones(len(user), np.int64), user)
        got = ranges._ranges(pa.array(day_users), coded)
        assert [(start, stop) for start, stop, _ in got] == [(0, 2), (2, 4), (4, 5)]
        in_range = [sorted(snapshot_users[user[rows]]) for _, _, rows in got]
        expected = [[u for u in sorted(snapshot_users[user]) if test(u)]
                    for test in (lambda u: u < "f", lambda u: "f" <= u < "j", lambda u: u >= "j")]
        assert in_range == expected
