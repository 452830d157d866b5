"""Spark validates counts first and asks for unexpected examples only where something was unexpected
(:data:`recsys.validation.docs.COUNTS_FIRST`): the stored result, what Data Docs and the summary read, must be
the one a single ``"SUMMARY"`` run stores, on a frame where some checks find bad rows and others find none."""

from __future__ import annotations

import json
from datetime import date

import pytest

from recsys.storage.local import LocalStore
from recsys.validation import docs

pytestmark = pytest.mark.integration

DAY = date(2024, 5, 2)
SUITE = {
    "name": "examples_check",
    "expectations": [
        {"type": "expect_table_row_count_to_be_between",
         "kwargs": {"min_value": 1, "max_value": {"$PARAMETER": "most"}}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "user_id"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "item_id"}},
        {"type": "expect_column_values_to_not_match_regex", "kwargs": {"column": "item_id", "regex": "[^A-Z0-9]"}},
        {"type": "expect_column_values_to_not_match_regex", "kwargs": {"column": "user_id", "regex": "[^a-z0-9]"}},
        {"type": "expect_column_values_to_be_between",
         "kwargs": {"column": "price", "min_value": 0, "max_value": 100, "mostly": 0.5}},
        {"type": "expect_column_values_to_be_in_set",
         "kwargs": {"column": "event_type", "value_set": ["view", "purchase"]}},
    ],
}


def _stored(spark, root, monkeypatch, result_format) -> list[dict]:
    rows = [(f"u{n % 4}" if n != 3 else None, f"I{n % 9}" if n % 5 else f"i-{n}", float(n * 7 % 130),
             "view" if n % 2 else "purchase") for n in range(60)]
    frame = spark.createDataFrame(rows, "user_id string, item_id string, price double, event_type string")
    monkeypatch.setattr(docs, "COUNTS_FIRST", result_format)
    with docs.docs_run(LocalStore(root), DAY) as run:
        run.run(SUITE, frame, {"most": 1000})
        (key,) = run.result_ids
        return json.loads(run._result_file(key).read_text(encoding="utf-8"))["results"]


def test_counts_first_stores_what_one_summary_run_stores(spark, tmp_path, monkeypatch):
    counts_first = _stored(spark, tmp_path / "counts", monkeypatch, docs.COUNTS_FIRST)
    summary = _stored(spark, tmp_path / "summary", monkeypatch, "SUMMARY")

    def comparable(results):
        return [(r["expectation_config"]["type"], r["expectation_config"]["kwargs"].get("column"), r["success"],
                 r["result"], r["exception_info"]) for r in results]

    assert comparable(counts_first) == comparable(summary)
    by_check = {(t, c): (ok, result) for t, c, ok, result, _ in comparable(summary)}
    # the frame exercises both cases: examples of failures (and of a pass with a few bad rows), and clean checks
    assert by_check[("expect_column_values_to_not_match_regex", "item_id")][1]["partial_unexpected_list"]
    assert by_check[("expect_column_values_to_not_be_null", "user_id")][1]["unexpected_count"] == 1
    ok, price = by_check[("expect_column_values_to_be_between", "price")]
    assert ok and price["partial_unexpected_counts"]
    assert by_check[("expect_column_values_to_be_in_set", "event_type")][1]["partial_unexpected_counts"] == []
