"""recsys.features.trend: recent purchases per item, in training batches and folded into serving."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys import schema
from recsys.features import trend

D1, D2, D3, D9 = date(2011, 1, 1), date(2011, 1, 2), date(2011, 1, 3), date(2011, 1, 9)


def _day(store, day: date, item_rows: list[int]) -> None:
    store.write_parquet(f"features/dt={day.isoformat()}/examples.parquet", pd.DataFrame({
        schema.USER_ID: [f"u{n}" for n in range(len(item_rows))], schema.ITEM_ID: [f"i{r}" for r in item_rows],
        schema.USER_ROW: np.arange(1, len(item_rows) + 1), schema.ITEM_ROW: item_rows, schema.SPLIT: "train",
    }))
    store.mark_success(f"features/dt={day.isoformat()}")


@pytest.fixture
def days(store):
    _day(store, D1, [1, 1, 2])  # item 1 bought twice, item 2 once
    _day(store, D2, [2, 3, 9])  # row 9 is beyond a 5-row table: not counted
    _day(store, D3, [4])
    return store


def test_window_is_the_calendar_days_before_the_day(days):
    assert trend.window(days, D3, 7) == [D1, D2]
    assert trend.window(days, D3, 1) == [D2]
    assert trend.window(days, D9, 7) == [D2, D3]  # 2011-01-02 .. 01-08
    assert trend.window(days, D9, 6) == [D3]
    assert trend.window(days, D1, 7) == []


def test_table_counts_purchases_in_each_window_as_ln1p(days):
    table = trend.table(days, [D1, D3, D9], 5, 7)
    np.testing.assert_allclose(table, np.log1p([
        [0, 0, 0, 0, 0],  # nothing before D1
        [0, 2, 2, 1, 0],  # D1 + D2
        [0, 0, 1, 1, 1],  # D2 + D3
    ]), rtol=1e-6)
    np.testing.assert_array_equal(trend.vector(days, D3, 5, 7), table[1])
    assert not trend.table(days, [D3], 5, 0).any()  # trend_days 0: no trend
    assert trend.serving_day(days) == date(2011, 1, 4)


def test_training_batches_carry_each_candidates_trend_as_of_each_rows_day():
    from recsys.model import two_tower
    from recsys.training import training_dataset

    table = np.array([[0.0, 1.0, 2.0, 3.0], [0.0, 10.0, 20.0, 30.0]], np.float32)  # two days x 4 items
    features = {schema.USER_ROW: np.array([1, 2, 3], np.int32), schema.ITEM_ROW: np.array([1, 3, 2], np.int32),
                trend.TREND_DAY: np.array([0, 1, 1], np.int32)}
    hist = np.zeros((1, 2), np.int32)
    batch = next(iter(training_dataset(features, np.zeros(3, np.int32), hist, hist.astype(np.uint16),
                                       batch_size=3, seed=0, trend_table=table)))
    assert trend.TREND_DAY not in batch and two_tower.HIST_ROWS in batch
    items, got = batch[schema.ITEM_ROW].numpy(), batch[trend.TREND].numpy()
    rows = {1: 0, 2: 1, 3: 1}  # user row -> its day
    for i, user in enumerate(batch[schema.USER_ROW].numpy()):
        np.testing.assert_array_equal(got[i], table[rows[int(user)], items])
