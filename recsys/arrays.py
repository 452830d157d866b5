"""Distinct values of large integer arrays, by sorting.

NumPy 2.3+ finds ``np.unique``'s values of integer arrays with a hash table. On this project's key arrays (int64
pair keys, hashes: millions of values) that is about 100x slower than sorting and grows faster than n log n with
the array (bench/scale: a third of the features step at 3M events), so the data steps use these instead. Same
results as ``np.unique`` (sorted distinct values; counts).
"""

from __future__ import annotations

import numpy as np


def _starts(ordered: np.ndarray) -> np.ndarray:
    """Where each run of equal values of sorted ``ordered`` starts."""
    if not len(ordered):
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))


def distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of 1-d ``values`` (``np.unique(values)``)."""
    ordered = np.sort(np.asarray(values).ravel())
    return ordered[_starts(ordered)]


def distinct_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct values of 1-d ``values`` and how often each occurs
    (``np.unique(values, return_counts=True)``)."""
    ordered = np.sort(np.asarray(values).ravel())
    starts = _starts(ordered)
    return ordered[starts], np.diff(np.append(starts, len(ordered))).astype(np.int64)
