"""Recent popularity: each item's purchases in the days just before a day, the model's trend input.

An item's learned bias is its long-run prior; what sells *this week* (on Online Retail: Christmas
items from October on) moves faster than a daily fine-tune moves a bias, and new customers, who
have no history, are ranked by little else (bench/replay_quality: the trailing-7-day most purchased
items find more of a new customer's items than a model's bias does). So the score adds::

    trend_weight * ln(1 + purchases of the item in the ``days`` calendar days before the day)

with ``trend_weight`` learned (``two_tower.py``) and the counts read from the feature partitions
(a purchase is an example: one customer, one item, one day). A model for day D sees the counts
before D; a serving process those of the days up to its newest partition.
"""

from __future__ import annotations

from datetime import date

import numpy as np

from recsys import schema
from recsys.storage import PartitionStore, layout

TREND = "trend"  # training feature: [batch, batch] trend of each in-batch candidate as of each row's day
TREND_DAY = "trend_day"  # training feature: the example's row in the batch's trend table


def window(store: PartitionStore, day: date, days: int) -> list[date]:
    """The feature partitions in the ``days`` calendar days before ``day`` (``day`` itself excluded)."""
    return _within(store.partitions(layout.FEATURES), day, days)


def _within(partitions: list[date], day: date, days: int) -> list[date]:
    first = layout.shift_day(day, -days)
    return [d for d in partitions if first <= d < day]


def daily_counts(store: PartitionStore, day: date, item_rows: int) -> np.ndarray:
    """[item_rows] int64 purchases of each item row in ``day``'s examples (rows the table lacks: dropped)."""
    from recsys.features import load_examples

    rows = load_examples(store, day, columns=[schema.ITEM_ROW])[schema.ITEM_ROW].to_numpy(np.int64)
    return np.bincount(rows[rows < item_rows], minlength=item_rows)


def table(store: PartitionStore, days: list[date], item_rows: int, window_days: int) -> np.ndarray:
    """[len(days), item_rows] float32: row n is ln(1 + purchases) over the window before ``days[n]``.

    The partitions are listed once, and each is read once however many windows it falls in.
    """
    out = np.zeros((len(days), item_rows), np.float32)
    if window_days <= 0:
        return out
    partitions = store.partitions(layout.FEATURES)
    counts: dict[date, np.ndarray] = {}
    for n, day in enumerate(days):
        total = np.zeros(item_rows, np.int64)
        for d in _within(partitions, day, window_days):
            if d not in counts:
                counts[d] = daily_counts(store, d, item_rows)
            total += counts[d]
        out[n] = np.log1p(total)
    return out


def vector(store: PartitionStore, day: date, item_rows: int, window_days: int) -> np.ndarray:
    """[item_rows] float32 ln(1 + purchases) of each item row in the ``window_days`` days before ``day``."""
    return table(store, [day], item_rows, window_days)[0]


def serving_day(store: PartitionStore) -> date | None:
    """The day a serving process ranks for: the one after its newest feature partition (None: none yet)."""
    days = store.partitions(layout.FEATURES)
    return layout.shift_day(days[-1], 1) if days else None
