"""recsys.report's read-only views of the registry and the validation reports, as the UI shows them."""

from __future__ import annotations

from datetime import date

from recsys import report
from recsys.storage import layout

METRIC = "recall@100"


def test_version_rows_join_versions_with_their_decisions_newest_first(registry_doc):
    rows = report.version_rows(registry_doc, METRIC)
    assert [r["version"] for r in rows] == [3, 2, 1]
    v3, v2, v1 = rows
    assert (v3["kind"], v3["metric"], v3["decision"], v3["champion"], v3["served"]) == (
        "full_retrain", 0.2, "DEPLOY", True, True)
    assert (v2["kind"], v2["metric"], v2["decision"], v2["champion"], v2["served"]) == (
        "fine_tune", 0.05, "REJECT", False, False)
    assert v2["reason"] == "candidate <b>worse</b> than the champion"
    assert (v1["metric"], v1["decision"], v1["champion"], v1["served"]) == (0.1, "DEPLOY", False, True)
    assert v1["metrics"] == {METRIC: 0.1, "recall@20": 0.05}


def test_a_version_without_a_decision_has_no_metric():
    reg = {"champion": None, "versions": {"1": {"trained_on": "2010-12-01"}}, "decisions": {}, "history": []}
    (row,) = report.version_rows(reg, METRIC)
    assert (row["metric"], row["decision"], row["reason"], row["served"]) == (None, None, None, False)


def test_decision_rows_oldest_first_with_candidate_and_champion_metric(registry_doc):
    rows = report.decision_rows(registry_doc, METRIC)
    assert [(r["date"], r["candidate"], r["champion"], r["blessed"]) for r in rows] == [
        ("2010-12-01", 0.1, None, True), ("2010-12-02", 0.05, 0.1, False), ("2010-12-03", 0.2, 0.15, True)]
    assert rows[1]["champion_version"] == 1 and rows[1]["eval_users"] == 15


def test_champion_info_names_the_switch_that_made_it_champion(registry_doc):
    info = report.champion_info(registry_doc)
    assert info["version"] == 3 and info["metadata"]["kind"] == "full_retrain"
    assert info["since"]["at"] == "h4" and info["since"]["from"] == 1
    assert report.champion_info({"champion": None, "versions": {}, "history": []}) is None


def test_validation_rows_newest_first_with_status(ui_store):
    rows = report.validation_rows(ui_store)
    assert [(r["date"], r["status"]) for r in rows] == [
        ("2010-12-04", "NOT VALIDATED"), ("2010-12-03", "ACCEPTED"), ("2010-12-02", "FAILED"), ("2010-12-01", "PASSED")]
    assert rows[0]["summary"] is None and rows[3]["summary"]["rows"] == 5


def test_validation_rows_include_a_validated_date_whose_raw_partition_is_gone(store, summary):
    store.write_json(f"{layout.validation_report(date(2011, 1, 4))}/summary.json", summary("2011-01-04", False))
    store.write_bytes("reports/validation/site/index.html", b"")  # not a partition
    assert [(r["date"], r["status"]) for r in report.validation_rows(store)] == [("2011-01-04", "FAILED")]


def test_retrain_rows_are_the_full_retrain_decisions_oldest_first(registry_ops, registry_doc):
    rows = report.retrain_rows(registry_ops, METRIC)
    assert [(r["version"], r["date"], r["window_days"], r["candidate"], r["champion_version"], r["champion"],
             r["blessed"], r["deployed"]) for r in rows] == [
        (4, "2010-12-03", 3, 0.25, 3, 0.2, True, True), (5, "2010-12-03", 2, 0.12, 4, 0.25, False, False)]
    assert rows[1]["reason"] == "worse than the champion" and rows[0]["decided_at"] == "d4"
    assert report.retrain_rows(registry_doc, METRIC) == []  # a registry from before full retrains were judged


def test_version_rows_take_a_full_retrain_decision_from_retrains_and_show_table_growth(registry_ops):
    rows = {r["version"]: r for r in report.version_rows(registry_ops, METRIC)}
    assert list(rows) == [5, 4, 3, 2, 1]
    v5, v4 = rows[5], rows[4]
    assert (v5["metric"], v5["decision"], v5["decided_by"], v5["reason"]) == (
        0.12, "REJECT", "retrain", "worse than the champion")
    assert (v4["metric"], v4["metrics"], v4["decision"], v4["served"], v4["champion"]) == (
        0.25, {METRIC: 0.25, "recall@20": 0.1}, "DEPLOY", True, False)
    assert (v4["table_megabytes"], v4["new_user_rows"], v4["new_item_rows"], v4["window_days"]) == (2.5, 31, 41, 3)
    assert rows[3]["decided_by"] == "date" and rows[3]["champion"]  # the rollback made v3 champion again
    assert (rows[2]["table_megabytes"], rows[2]["new_user_rows"]) == (None, None)  # older metadata
    assert report.champion_info(registry_ops)["since"]["action"] == "rollback"


def test_key_metric_is_recall_at_k():
    assert report.key_metric(100) == "recall@100"
