"""Training inputs assembled from the feature partitions: a day's examples, the replay sample of older
days, and the history matrices the model reads (see :mod:`recsys.training`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from recsys import schema
from recsys.features import history, vocab
from recsys.features.build import load_examples, load_query_history
from recsys.storage import PartitionStore, layout

REPLAY_DAY = "day"  # replay_sample column: the example's partition (date ordinal)


def replay_sample(store: PartitionStore, day: date, size: int, seed: int) -> pd.DataFrame:
    """Up to ``size`` examples drawn uniformly from all feature partitions before ``day``.

    The example columns plus ``hist_items`` / ``hist_days`` (each example user's history as lists) and
    ``day`` (the example's partition, as a date ordinal).
    The draw is ``pandas.DataFrame.sample(n=size, random_state=seed)`` of all those days' examples
    concatenated in date order, but only the drawn rows are ever read (a day of 10M events holds
    7.5M examples).
    """
    older = [d for d in store.partitions(layout.FEATURES) if d < day]
    columns = [*schema.EXAMPLE_COLUMNS, history.HIST_ITEMS, history.HIST_DAYS, REPLAY_DAY]
    if size == 0 or not older:
        return pd.DataFrame(columns=columns)
    counts = np.array([_example_count(store, d) for d in older], np.int64)
    total = int(counts.sum())
    # what DataFrame.sample draws (numpy's RandomState.choice without replacement), or every row in order
    drawn = np.arange(total) if total <= size else np.random.RandomState(seed).choice(total, size=size, replace=False)
    starts = np.concatenate([[0], np.cumsum(counts)])
    which = np.searchsorted(starts, drawn, side="right") - 1
    frames = []
    order = []
    for n, d in enumerate(older):
        mine = np.flatnonzero(which == n)
        if not len(mine):
            continue
        picked = load_examples(store, d, rows=drawn[mine] - starts[n])
        items_, days_ = history.lists_from_table(
            picked[history.HIST_INDEX].to_numpy(), _query_rows(load_query_history(store, d), picked)
        )
        frames.append(picked[list(schema.EXAMPLE_COLUMNS)].assign(
            **{history.HIST_ITEMS: items_, history.HIST_DAYS: days_, REPLAY_DAY: d.toordinal()}))
        order.append(mine)
    replay = pd.concat(frames, ignore_index=True)
    # back into the order of the draw
    return replay.iloc[np.argsort(np.concatenate(order), kind="stable")].reset_index(drop=True)


def replay_size(store: PartitionStore, day: date, size: int) -> int:
    """How many examples :func:`replay_sample` draws for ``day`` (without reading any of them)."""
    if size == 0:
        return 0
    return min(size, sum(_example_count(store, d) for d in store.partitions(layout.FEATURES) if d < day))


def _example_count(store: PartitionStore, day: date) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = store.read_bytes(f"{layout.features(day)}/{layout.EXAMPLES_FILE}")
    return int(pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows)


def _query_rows(table: pd.DataFrame, examples: pd.DataFrame) -> pd.DataFrame:
    """The entries of ``table`` that ``examples`` point to."""
    return table[table[history.HIST_INDEX].isin(examples[history.HIST_INDEX].unique())]


@dataclass(frozen=True)
class Part:
    """Examples of one source (a day's train split, or the replay sample) as the model reads them:
    int32 rows, each example's index into ``table``, the source's long history table (0: none), and
    each example's day (date ordinal: the day its trend is counted before)."""

    user_row: np.ndarray
    item_row: np.ndarray
    hist_index: np.ndarray
    table: pd.DataFrame
    day: np.ndarray

    @property
    def size(self) -> int:
        return len(self.user_row)

    @property
    def histories(self) -> int:
        """Rows of this part's history matrix (index 0 included)."""
        top = [int(self.hist_index.max()) if self.size else 0]
        if len(self.table):
            top.append(int(self.table[history.HIST_INDEX].max()))
        return max(top) + 1

    @staticmethod
    def empty() -> Part:
        none = np.zeros(0, np.int32)
        return Part(none, none, none, history.empty_query_table(), none)


def train_part(store: PartitionStore, day: date, only_train: bool) -> Part:
    """A day's examples (its train split only if ``only_train``) and its query histories."""
    examples = load_examples(store, day, columns=[schema.USER_ROW, schema.ITEM_ROW, schema.SPLIT, history.HIST_INDEX])
    if only_train:
        examples = examples[examples[schema.SPLIT].to_numpy() == "train"]
    return Part(
        examples[schema.USER_ROW].to_numpy(np.int32), examples[schema.ITEM_ROW].to_numpy(np.int32),
        examples[history.HIST_INDEX].to_numpy(np.int32), load_query_history(store, day),
        np.full(len(examples), day.toordinal(), np.int32),
    )


def replay_part(replay: pd.DataFrame) -> Part:
    """The replay sample (histories as lists): example n has its own history, index n + 1."""
    table = history.table_from_lists(replay[history.HIST_ITEMS], replay[history.HIST_DAYS])
    table[history.HIST_INDEX] += 1
    return Part(
        replay[schema.USER_ROW].to_numpy(np.int32), replay[schema.ITEM_ROW].to_numpy(np.int32),
        np.arange(1, len(replay) + 1, dtype=np.int32), table, replay[REPLAY_DAY].to_numpy(np.int32),
    )


def history_inputs(
    parts: list[Part], items_vocab: pd.DataFrame, length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(history rows [H, length] int32, days [H, length] uint16, each example's row in them [N] int32):
    one matrix row per user history of a part, not per example (bench/scale: 3.4 GB -> ~0.3 GB at 10M)."""
    item_index = pd.Index(items_vocab[vocab.ID].astype(str).to_numpy(object))
    item_rows = items_vocab[vocab.ROW].to_numpy(np.int64)
    rows, days, index = [], [], []
    offset = 0
    for part in parts:
        r, d = history.matrix(part.table, part.histories, item_index, item_rows, length)
        rows.append(r)
        days.append(np.minimum(d, np.iinfo(np.uint16).max).astype(np.uint16))
        index.append(part.hist_index + np.int32(offset))
        offset += len(r)
    return np.concatenate(rows), np.concatenate(days), np.concatenate(index).astype(np.int32)
