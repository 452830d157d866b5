"""recsys.spark.features.event_ids_proven_unique: the features step on Spark skips its duplicate-id window only
when the validation summary of the very delivery proves that no event id repeats (no missing id, a share of
distinct ids of exactly 1). tests/integration/test_spark_parity.py runs both branches on real days, byte for
byte against pandas."""

from __future__ import annotations

from datetime import date

import pytest

from recsys.spark.features import NOT_NULL, event_ids_proven_unique
from recsys.storage import layout
from recsys.storage.local import LocalStore
from recsys.validation.merge import UNIQUE_PROPORTION

DAY = date(2024, 5, 2)
PRINT = "f" * 64


def _summary(nulls=0, share=1.0, fingerprint=PRINT, column="event_id", error=None) -> dict:
    return {"date": DAY.isoformat(), "fingerprint": fingerprint, "passed_fingerprint": fingerprint, "checks": [
        {"expectation": NOT_NULL, "column": column, "unexpected_count": nulls, "observed_value": None, "error": None},
        {"expectation": UNIQUE_PROPORTION, "column": column, "unexpected_count": None, "observed_value": share,
         "error": error},
    ]}


@pytest.mark.parametrize(("summary", "proven"), [
    (_summary(), True),
    (_summary(share=0.999999), False),  # a repeated id
    (_summary(nulls=1), False),  # one missing id: fine alone, but the check says nothing of two
    (_summary(nulls=2), False),  # two missing ids repeat each other (as pandas' duplicated counts them)
    (_summary(fingerprint="0" * 64), False),  # the summary of another delivery
    (_summary(column="user_id"), False),  # the checks of another column
    (_summary(error="metric failed"), False),  # a check that raised proves nothing
    ({"date": DAY.isoformat(), "fingerprint": PRINT, "checks": []}, False),  # a suite without the checks
])
def test_only_a_summary_of_the_same_delivery_with_both_checks_proves_unique_ids(tmp_path, summary, proven):
    store = LocalStore(tmp_path)
    store.write_json(layout.validation_summary(DAY), summary)
    assert event_ids_proven_unique(store, DAY, PRINT) is proven


def test_no_summary_proves_nothing(tmp_path):
    assert event_ids_proven_unique(LocalStore(tmp_path), DAY, PRINT) is False
