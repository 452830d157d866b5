"""recsys.report: the human-readable summary per date and the showcase."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from recsys import registry, schema
from recsys.report import date_lines, showcase_text, summary_text


def _validation(store, day: str, **summary) -> None:
    store.write_json(f"reports/validation/dt={day}/summary.json", summary)


def _features_stats(store, day: str) -> None:
    store.write_json(
        f"features/dt={day}/stats.json",
        {"examples": 4, "train_examples": 3, "holdout_examples": 1, "holdout_users": 1, "new_users": 2,
         "new_items": 5},
    )


def _decision(**kw) -> dict:
    base = {"candidate_version": 2, "champion_version": 1, "candidate_metrics": {"recall@100": 0.5, "recall@20": 0.25},
            "champion_metrics": {"recall@100": 0.25, "recall@20": 0.125}, "blessed": True, "reason": "better"}
    return base | kw


def _empty_reg(**decisions) -> dict:
    return {"champion": None, "versions": {}, "decisions": decisions, "history": []}


def test_date_lines_of_a_fully_processed_date(store):
    _validation(store, "2011-01-04", success=True, problem=None, failed=[], rows=3, checks=[{}, {}])
    _features_stats(store, "2011-01-04")
    assert date_lines(store, "2011-01-04", _empty_reg(**{"2011-01-04": _decision()})) == [
        "== 2011-01-04",
        "   validation : passed, 3 events, 2 checks",
        "   examples   : 4 (3 train, 1 held out from 1 users); +2 users, +5 items",
        "   recall@100 : candidate v2 0.5000 vs champion v1 0.2500",
        "   decision   : DEPLOY - better",
    ]


def test_date_lines_of_a_failed_validation(store):
    _validation(store, "2011-01-04", success=False, problem="no data files", failed=[], rows=0, checks=[])
    _validation(store, "2011-01-05", success=False, problem=None, failed=["expect_a", "expect_b"], rows=7,
                checks=[{}] * 17)
    assert date_lines(store, "2011-01-04", _empty_reg()) == [
        "== 2011-01-04", "   validation : FAILED (no data files), 0 events, 0 checks",
    ]
    assert date_lines(store, "2011-01-05", _empty_reg()) == [
        "== 2011-01-05", "   validation : FAILED (expect_a, expect_b), 7 events, 17 checks",
    ]


def test_date_lines_of_a_validation_accepted_by_on_call(store):
    _validation(store, "2011-01-04", success=False, problem=None, failed=["expect_a"], rows=7, checks=[{}] * 3,
                accepted={"reason": "known promotion"})
    assert date_lines(store, "2011-01-04", _empty_reg()) == [
        "== 2011-01-04",
        "   validation : failed (expect_a) but ACCEPTED by on-call: known promotion, 7 events, 3 checks",
    ]


def test_date_lines_of_a_rejected_candidate_without_metrics_or_champion(store):
    decision = _decision(candidate_version=1, champion_version=None, candidate_metrics={}, champion_metrics=None,
                         blessed=False, reason="only 0 held-out users (< 10): too few to decide")
    assert date_lines(store, "2011-01-04", _empty_reg(**{"2011-01-04": decision})) == [
        "== 2011-01-04",
        "   validation : not run",
        "   metric : candidate v1 n/a vs no champion",
        "   decision   : REJECT - only 0 held-out users (< 10): too few to decide",
    ]


def test_summary_text_of_an_empty_store(store):
    assert summary_text(store) == "Champion: none deployed yet"


def test_summary_text_lists_dates_in_order_then_the_champion(store):
    store.mark_success("raw/events/dt=2011-01-05")
    store.write_bytes("raw/events/dt=2011-01-06/part-0.parquet", b"")  # not published: not listed
    registry.add_version(store, 1, {"trained_on": "2011-01-04"}, None)
    registry.record_decision(store, date(2011, 1, 4), _decision(candidate_version=1), None)
    registry.set_champion(store, 1, "deployed", "better", None)
    text = summary_text(store)
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("==")] == ["== 2011-01-04", "== 2011-01-05"]
    assert lines[-1] == "Champion: version 1, fine-tuned on 2011-01-04"
    only = summary_text(store, "2011-01-05")
    assert only == "== 2011-01-05\n   validation : not run"


def test_showcase_without_champion(store):
    assert showcase_text(store) == "No champion deployed yet."


@pytest.fixture
def showcase_store(store, put_vocab, put_version):
    put_vocab(store, "users", ["u1", "u2"])
    put_vocab(store, "items", ["A", "B", "C"])
    put_version(store, 1, date(2011, 1, 4), [[-1, -1], [1, 0], [0, 1]], [[10, 10], [3, 0], [0, 2], [1, 0.5]])
    # u1: A 3, C 1, B 0
    examples = pd.DataFrame({schema.USER_ID: ["u1", "u1", "u2"], schema.ITEM_ID: ["A", "B", "A"],
                             schema.USER_ROW: [1, 1, 2], schema.ITEM_ROW: [1, 2, 1],
                             schema.SPLIT: ["train", "holdout", "train"]})
    store.write_parquet("features/dt=2011-01-04/examples.parquet", examples)
    store.mark_success("features/dt=2011-01-04")
    catalog = pd.DataFrame({schema.ITEM_ID: ["A", "B", "C"], schema.TITLE: ["Lantern", "Heart", "Warmer"],
                            schema.CATEGORY: [None] * 3, schema.PRICE: [1.0, 2.0, 3.0],
                            schema.AVAILABLE: [True] * 3}).astype(schema.CATALOG_DTYPES)
    store.write_parquet("raw/catalog/dt=2011-01-04/part-00000.parquet", catalog)
    store.mark_success("raw/catalog/dt=2011-01-04")
    index = catalog[[schema.ITEM_ID, schema.TITLE, schema.PRICE]].assign(row=[1, 2, 3])
    store.write_parquet("models/two_tower/versions/1/index.parquet", index)
    registry.set_champion(store, 1, "deployed", "test", None)
    return store


def test_showcase_for_the_most_active_customer(showcase_store):
    assert showcase_text(showcase_store).splitlines() == [
        "Champion: version 1 (fine-tuned on 2011-01-04, 2 users x 3 items)",
        "Customer u1 bought 2 distinct items in these days, e.g.:",
        "   - Lantern",
        "   - Heart",
        "Top 10 recommendations for customer u1:",
        "   1. Lantern  (bought before)",
        "   2. Warmer",
        "   3. Heart  (bought before)",
    ]
