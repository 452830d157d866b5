"""recsys.arrays: the same values and counts as np.unique, by sorting."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.arrays import distinct, distinct_counts


@pytest.mark.parametrize("values", [
    np.zeros(0, np.int64), np.array([7], np.int64), np.array([3, 3, 3], np.uint64),
    np.array([5, -1, 5, 2, -1, 9], np.int64), np.array([2**63 - 1, 0, 2**63 - 1], np.int64),
    np.random.default_rng(0).integers(0, 50, 1000).astype(np.int32),
    np.random.default_rng(1).integers(0, 2**64 - 1, 5000, dtype=np.uint64),
])
def test_distinct_is_np_unique(values: np.ndarray) -> None:
    expected, counts = np.unique(values, return_counts=True)
    np.testing.assert_array_equal(distinct(values), expected)
    got, got_counts = distinct_counts(values)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got_counts, counts)
    assert got.dtype == values.dtype and got_counts.sum() == len(values)


def test_the_input_is_not_changed() -> None:
    values = np.array([3, 1, 2, 1], np.int64)
    distinct(values), distinct_counts(values)
    assert values.tolist() == [3, 1, 2, 1]
