"""The Airflow UI plugin's data, pages and routes (plugins/recsys_ui), on a small literal store.

The routes run through FastAPI's TestClient on the app factory; the plugin module itself is loaded to
check what it registers with Airflow and that its app refuses requests without an Airflow login.
"""

from __future__ import annotations

import copy
import re
import sys
from datetime import date
from pathlib import Path

import pytest

from recsys import report
from recsys.storage import StorageError, layout

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

from recsys_ui import links, render  # noqa: E402
from recsys_ui.app import create_app, report_path  # noqa: E402

METRIC = "recall@100"

# two fine-tunes and a full retrain; v1 deployed on 12-01, v2 rejected on 12-02, v3 deployed on 12-03
REGISTRY = {
    "champion": 3,
    "versions": {
        "1": {"trained_on": "2010-12-01", "kind": "fine_tune", "parent": None, "created_at": "t1",
              "train_examples": 100, "final_loss": 90.5, "user_rows": 11, "item_rows": 21},
        "2": {"trained_on": "2010-12-02", "parent": 1, "created_at": "t2", "train_examples": 120, "final_loss": 80.0},
        "3": {"trained_on": "2010-12-03", "kind": "full_retrain", "parent": None, "created_at": "t3",
              "train_examples": 300, "final_loss": 70.25, "user_rows": 31, "item_rows": 41},
    },
    "decisions": {
        "2010-12-01": {"blessed": True, "candidate_version": 1, "candidate_metrics": {METRIC: 0.1, "recall@20": 0.05},
                       "champion_version": None, "champion_metrics": None, "reason": "no champion yet",
                       "eval_users": 12},
        "2010-12-02": {"blessed": False, "candidate_version": 2, "candidate_metrics": {METRIC: 0.05},
                       "champion_version": 1, "champion_metrics": {METRIC: 0.1},
                       "reason": "candidate <b>worse</b> than the champion", "eval_users": 15},
        "2010-12-03": {"blessed": True, "candidate_version": 3, "candidate_metrics": {METRIC: 0.2},
                       "champion_version": 1, "champion_metrics": {METRIC: 0.15}, "reason": "better", "eval_users": 20},
    },
    "history": [
        {"at": "h1", "action": "trained", "version": 1, "date": "2010-12-01", "run_id": "r1"},
        {"at": "h2", "action": "deployed", "from": None, "to": 1, "reason": "no champion yet", "run_id": "r1"},
        {"at": "h3", "action": "rejected", "version": 2, "date": "2010-12-02", "reason": "worse", "run_id": "r2"},
        {"at": "h4", "action": "deployed", "from": 1, "to": 3, "reason": "better", "run_id": "r3"},
    ],
}


# REGISTRY plus two full retrains ending 12-03 (v4 blessed and deployed, v5 rejected), then on-call's actions;
# v4 and v5 carry the newer metadata (table size, rows added, window)
REGISTRY_OPS = copy.deepcopy(REGISTRY) | {"champion": 3}
REGISTRY_OPS["versions"] |= {
    "4": {"trained_on": "2010-12-03", "kind": "full_retrain", "parent": None, "created_at": "t4",
          "train_examples": 400, "final_loss": 60.0, "user_rows": 31, "item_rows": 41, "new_user_rows": 31,
          "new_item_rows": 41, "table_megabytes": 2.5, "window_days": 3, "history_length": 10, "batch_size": 256},
    "5": {"trained_on": "2010-12-03", "kind": "full_retrain", "parent": None, "created_at": "t5",
          "train_examples": 250, "final_loss": 65.5, "user_rows": 31, "item_rows": 41, "new_user_rows": 31,
          "new_item_rows": 41, "table_megabytes": 1.25, "window_days": 2},
}
REGISTRY_OPS["retrains"] = {
    "4": {"kind": "full_retrain", "date": "2010-12-03", "window_days": 3, "candidate_version": 4,
          "candidate_metrics": {METRIC: 0.25, "recall@20": 0.1}, "champion_version": 3,
          "champion_metrics": {METRIC: 0.2}, "blessed": True, "reason": "better by 25%", "eval_users": 20,
          "decided_at": "d4"},
    "5": {"kind": "full_retrain", "date": "2010-12-03", "window_days": 2, "candidate_version": 5,
          "candidate_metrics": {METRIC: 0.12}, "champion_version": 4, "champion_metrics": {METRIC: 0.25},
          "blessed": False, "reason": "worse than the champion", "eval_users": 20, "decided_at": "d5"},
}
REGISTRY_OPS["history"] = REGISTRY["history"] + [
    {"at": "h5", "action": "trained", "version": 4, "date": "2010-12-03", "run_id": "fr1"},
    {"at": "h6", "action": "blessed", "kind": "full_retrain", "version": 4, "date": "2010-12-03",
     "reason": "better by 25%", "run_id": "fr1"},
    {"at": "h7", "action": "deployed", "from": 3, "to": 4, "reason": "full retrain: better by 25%", "run_id": "fr1"},
    {"at": "h8", "action": "rejected", "kind": "full_retrain", "version": 5, "date": "2010-12-03",
     "reason": "worse than the champion", "run_id": "fr2"},
    {"at": "h9", "action": "rollback", "from": 4, "to": 3, "reason": "v4 recommends delisted items", "run_id": "rb1"},
    {"at": "h10", "action": "deploy_skipped", "date": "2010-12-02", "version": 2, "gate_blessed": False,
     "reason": "hold deploys", "run_id": "m1"},
    {"at": "h11", "action": "deploy_forced", "date": "2010-12-02", "version": 2, "gate_reason": "worse",
     "reason": "business approved", "run_id": "m2"},
    {"at": "h12", "action": "revalidation_forced", "date": "2010-12-01", "reason": None, "run_id": "m3"},
    {"at": "h13", "action": "accepted_invalid", "date": "2010-12-03", "reason": "known promotion",
     "failed_expectations": ["expect_a", "expect_b"], "run_id": "m4"},
    {"at": "h14", "action": "index_refreshed", "version": 3, "items": 40, "reason": None, "run_id": "m5"},
]


def _summary(day: str, success: bool, **extra) -> dict:
    checks = [{"suite": "raw_events", "check": "event types", "expectation": "expect_column_values_to_be_in_set",
               "column": "event_type", "success": success, "observed_value": None,
               "unexpected_count": 0 if success else 2, "unexpected_examples": [] if success else ["click"],
               "error": None}]
    return {
        "date": day, "success": success, "rows": 5, "checks": checks, "problem": None,
        "failed": [] if success else ["expect_column_values_to_be_in_set"],
        "report_path": f"reports/validation/dt={day}/summary.json",
        "data_docs": {"pages": {"raw_events": f"reports/validation/site/validations/raw_events/{day}.html"}},
        "accepted": None, "validated_at": f"{day}T01:00:00+00:00", **extra,
    }


@pytest.fixture
def ui_store(store):
    """Registry above; 12-01 passed, 12-02 failed, 12-03 accepted, 12-04 landed but not validated."""
    store.write_json(layout.REGISTRY, REGISTRY)
    for day in ("2010-12-01", "2010-12-02", "2010-12-03", "2010-12-04"):
        store.mark_success(layout.raw_events(date.fromisoformat(day)))
    reports = {
        "2010-12-01": _summary("2010-12-01", True),
        "2010-12-02": _summary("2010-12-02", False),
        "2010-12-03": _summary("2010-12-03", False, accepted={"reason": "known promotion", "run_id": "r3"}),
    }
    for day, summary in reports.items():
        store.write_json(f"{layout.validation_report(date.fromisoformat(day))}/summary.json", summary)
        store.write_bytes(summary["data_docs"]["pages"]["raw_events"], f"<html>GX page of {day}</html>".encode())
    store.write_bytes("reports/validation/site/partitions.html", b"<html><body>every partition</body></html>")
    store.write_bytes("reports/validation/site/static/styles/data_docs.css", b"body { color: red }")
    return store


@pytest.fixture
def client(ui_store):
    from fastapi.testclient import TestClient

    return TestClient(create_app(lambda: ui_store, lambda: METRIC), root_path="/recsys")


# --- recsys.report's read-only views ---------------------------------------------------------------------


def test_version_rows_join_versions_with_their_decisions_newest_first():
    rows = report.version_rows(REGISTRY, METRIC)
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


def test_decision_rows_oldest_first_with_candidate_and_champion_metric():
    rows = report.decision_rows(REGISTRY, METRIC)
    assert [(r["date"], r["candidate"], r["champion"], r["blessed"]) for r in rows] == [
        ("2010-12-01", 0.1, None, True), ("2010-12-02", 0.05, 0.1, False), ("2010-12-03", 0.2, 0.15, True)]
    assert rows[1]["champion_version"] == 1 and rows[1]["eval_users"] == 15


def test_champion_info_names_the_switch_that_made_it_champion():
    info = report.champion_info(REGISTRY)
    assert info["version"] == 3 and info["metadata"]["kind"] == "full_retrain"
    assert info["since"]["at"] == "h4" and info["since"]["from"] == 1
    assert report.champion_info({"champion": None, "versions": {}, "history": []}) is None


def test_validation_rows_newest_first_with_status(ui_store):
    rows = report.validation_rows(ui_store)
    assert [(r["date"], r["status"]) for r in rows] == [
        ("2010-12-04", "NOT VALIDATED"), ("2010-12-03", "ACCEPTED"), ("2010-12-02", "FAILED"), ("2010-12-01", "PASSED")]
    assert rows[0]["summary"] is None and rows[3]["summary"]["rows"] == 5


def test_validation_rows_include_a_validated_date_whose_raw_partition_is_gone(store):
    store.write_json(f"{layout.validation_report(date(2011, 1, 4))}/summary.json", _summary("2011-01-04", False))
    store.write_bytes("reports/validation/site/index.html", b"")  # not a partition
    assert [(r["date"], r["status"]) for r in report.validation_rows(store)] == [("2011-01-04", "FAILED")]


def test_retrain_rows_are_the_full_retrain_decisions_oldest_first():
    rows = report.retrain_rows(REGISTRY_OPS, METRIC)
    assert [(r["version"], r["date"], r["window_days"], r["candidate"], r["champion_version"], r["champion"],
             r["blessed"], r["deployed"]) for r in rows] == [
        (4, "2010-12-03", 3, 0.25, 3, 0.2, True, True), (5, "2010-12-03", 2, 0.12, 4, 0.25, False, False)]
    assert rows[1]["reason"] == "worse than the champion" and rows[0]["decided_at"] == "d4"
    assert report.retrain_rows(REGISTRY, METRIC) == []  # a registry from before full retrains were judged


def test_version_rows_take_a_full_retrain_decision_from_retrains_and_show_table_growth():
    rows = {r["version"]: r for r in report.version_rows(REGISTRY_OPS, METRIC)}
    assert list(rows) == [5, 4, 3, 2, 1]
    v5, v4 = rows[5], rows[4]
    assert (v5["metric"], v5["decision"], v5["decided_by"], v5["reason"]) == (
        0.12, "REJECT", "retrain", "worse than the champion")
    assert (v4["metric"], v4["metrics"], v4["decision"], v4["served"], v4["champion"]) == (
        0.25, {METRIC: 0.25, "recall@20": 0.1}, "DEPLOY", True, False)
    assert (v4["table_megabytes"], v4["new_user_rows"], v4["new_item_rows"], v4["window_days"]) == (2.5, 31, 41, 3)
    assert rows[3]["decided_by"] == "date" and rows[3]["champion"]  # the rollback made v3 champion again
    assert (rows[2]["table_megabytes"], rows[2]["new_user_rows"]) == (None, None)  # older metadata
    assert report.champion_info(REGISTRY_OPS)["since"]["action"] == "rollback"


def test_key_metric_is_recall_at_k():
    assert report.key_metric(100) == "recall@100"


# --- the plot ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "ceiling"), [(0.11, 0.2), (0.3, 0.5), (0.05, 0.05), (0.51, 1.0), (7, 10),
                                                (0.22, 0.25)])
def test_nice_ceiling(value, ceiling):
    assert render._nice_ceiling(value) == pytest.approx(ceiling)


def test_plot_places_candidates_and_the_serving_line_by_hand_computed_coordinates():
    rows = report.decision_rows(REGISTRY, METRIC)[:2]  # 0.1 deployed (no champion), 0.05 rejected (champion 0.1)
    svg = render.metric_plot_svg(rows, METRIC)  # 760 x 300: plot x 60..740, y 20..230; y max 0.2 (0.1 x 1.1)
    assert svg.startswith('<svg id="metric-plot"') and svg.endswith("</svg>")
    circles = re.findall(r'<circle class="candidate (\w+)" data-date="([\d-]+)" cx="([\d.]+)" cy="([\d.]+)"', svg)
    assert circles == [("DEPLOY", "2010-12-01", "60.0", "125.0"), ("REJECT", "2010-12-02", "740.0", "177.5")]
    # after the rejection the champion (0.1) still serves
    assert 'points="60.0,125.0 740.0,125.0"' in svg
    assert "2010-12-02: candidate v2 0.0500 vs champion v1 0.1000: REJECT" in svg
    assert ">0.2</text>" in svg and ">0.1</text>" in svg  # y axis ticks


def test_full_retrains_are_diamonds_on_the_union_of_dates_by_hand_computed_coordinates():
    # 12-01: candidate 0.1 (no champion); a rejected retrain ending 12-05 at 0.2 (no daily decision that day)
    retrain = {"version": 9, "date": "2010-12-05", "window_days": 90, "candidate": 0.2, "champion_version": 1,
               "champion": 0.1, "blessed": False}
    svg = render.metric_plot_svg(report.decision_rows(REGISTRY, METRIC)[:1], METRIC, retrains=[retrain])
    # two date slots at x 60 and 740; the retrain legend row makes the bottom margin 88: plot y 20..212
    # (height 192); y max = ceiling(0.2 x 1.1 = 0.22) = 0.25; y(0.1) = 20 + 192 x 0.6, y(0.2) = 20 + 192 x 0.2
    assert re.findall(r'class="candidate (\w+)" data-date="([\d-]+)" cx="([\d.]+)" cy="([\d.]+)"', svg) == [
        ("DEPLOY", "2010-12-01", "60.0", "135.2")]
    assert '<polygon class="retrain REJECT" data-version="9" data-date="2010-12-05" ' \
           'points="740.0,51.4 747.0,58.4 740.0,65.4 733.0,58.4"' in svg
    assert "full retrain v9 ending 2010-12-05, 90 days: 0.2000 vs champion v1 0.1000: REJECT" in svg
    assert ">2010-12-05</text>" in svg and "full retrain blessed / rejected" in svg
    # only full retrains: still a plot
    assert 'class="retrain REJECT"' in render.metric_plot_svg([], METRIC, retrains=[retrain])


def test_plot_of_no_decision_says_so():
    assert 'id="metric-plot-empty"' in render.metric_plot_svg([], METRIC)


def test_one_decision_is_plotted_in_the_middle():
    svg = render.metric_plot_svg(report.decision_rows(REGISTRY, METRIC)[:1], METRIC)
    assert re.search(r'class="candidate DEPLOY" data-date="2010-12-01" cx="400.0"', svg)


# --- the routes ------------------------------------------------------------------------------------------


def test_registry_page_shows_champion_plot_decisions_versions_and_history(client):
    response = client.get("/registry")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "Champion: version 3" in html and "full_retrain" in html
    assert html.count('<circle class="candidate') == 3
    assert re.search(r'<tr id="d-2010-12-02"><td>2010-12-02</td>.*?class="REJECT">REJECT', html)
    assert 'id="v-1"' in html and 'id="v-2"' in html and 'id="v-3"' in html
    assert "candidate &lt;b&gt;worse&lt;/b&gt; than the champion" in html and "<b>worse</b>" not in html
    assert "deployed v3 as champion (was v1)" in html  # the history's deploy
    assert "No full retrain was judged yet" in html
    assert 'href="/recsys/validation/2010-12-02"' in html  # links are under the mount point
    assert 'id="focus"' not in html


def test_registry_page_highlights_the_date_and_version_of_a_task_link(client):
    html = client.get("/registry", params={"date": "2010-12-02", "version": 2}).text
    focus = re.search(r'<div class="box focus-box" id="focus">(.*?)</div>', html).group(1)
    assert "Partition 2010-12-02" in focus and "REJECT" in focus and "v2" in focus
    assert "Version 2</b>: fine_tune on 2010-12-02" in focus and "never served" in focus
    assert '<tr id="d-2010-12-02" class="focus">' in html and '<tr id="v-2" class="focus">' in html


@pytest.fixture
def ops_client(store):
    from fastapi.testclient import TestClient

    store.write_json(layout.REGISTRY, REGISTRY_OPS)
    return TestClient(create_app(lambda: store, lambda: METRIC), root_path="/recsys")


def test_registry_page_shows_full_retrains_table_size_and_rows_added(ops_client):
    html = ops_client.get("/registry").text
    assert 'id="retrains">Full retrains (2)' in html
    r5 = re.search(r'<tr id="r-5">(.*?)</tr>', html).group(1)
    assert re.fullmatch(
        r'<td><a href="#v-5">v5</a></td><td>2010-12-03</td><td>2</td><td>0.1200</td><td>v4 0.2500</td>'
        r'<td class="REJECT">REJECT</td><td>worse than the champion</td><td>20</td><td>no</td><td>d5</td>', r5)
    assert "<td>yes</td>" in re.search(r'<tr id="r-4">(.*?)</tr>', html).group(1)  # v4 was deployed
    assert html.count('<polygon class="retrain') == 2 and html.count('<circle class="candidate') == 3
    v5 = re.search(r'<tr id="v-5">(.*?)</tr>', html).group(1)
    assert "full_retrain (2 days)" in v5 and "<td>0.1200</td>" in v5
    assert '<span class="REJECT">REJECT</span> <a class="muted" href="#r-5">(full-retrain gate)</a>' in v5
    assert "<td>1.25</td><td>+31 users, +41 items</td>" in v5
    v2 = re.search(r'<tr id="v-2">(.*?)</tr>', html).group(1)
    assert "<td>—</td><td>—</td>" in v2  # no table size or rows added recorded for v2
    assert "2.50 MB" not in html.split('id="champion"')[1].split("</div>")[0]  # champion v3 has no size
    assert ops_client.get("/api/registry").json()["retrains"] == report.retrain_rows(REGISTRY_OPS, METRIC)


HISTORY_TEXT = [
    ("h1", "trained", "trained v1 on partition 2010-12-01"),
    ("h2", "deployed", "deployed v1 as champion (was none)"),
    ("h3", "rejected", "gate rejected (no deploy) candidate v2 of 2010-12-02"),
    ("h6", "blessed", "gate blessed (deploy) full retrain v4 ending 2010-12-03"),
    ("h8", "rejected", "gate rejected (no deploy) full retrain v5 ending 2010-12-03"),
    ("h9", "rollback", "on-call rolled the champion back from v4 to v3"),
    ("h10", "deploy_skipped", "on-call skipped the deploy of candidate v2 of 2010-12-02 (the gate had rejected it)"),
    ("h11", "deploy_forced", "on-call forced the deploy of candidate v2 of 2010-12-02 (the gate said: worse)"),
    ("h12", "revalidation_forced", "on-call forced the re-validation of partition 2010-12-01"),
    ("h13", "accepted_invalid",
     "on-call accepted partition 2010-12-03 although it failed validation (failed: expect_a, expect_b)"),
    ("h14", "index_refreshed", "index_refreshed: version 3, items 40"),  # unknown: every field shown
]


@pytest.mark.parametrize(("at", "action", "text"), HISTORY_TEXT)
def test_every_history_action_reads_as_a_sentence(at, action, text):
    entry = next(h for h in REGISTRY_OPS["history"] if h["at"] == at)
    assert entry["action"] == action and render.history_text(entry) == text


def test_registry_history_marks_on_call_decisions_with_their_reason_and_run(ops_client):
    html = ops_client.get("/registry").text
    history = html.split('id="history"')[1]
    assert history.count('<tr class="on-call">') == 5  # rollback, skip, force, re-validation, acceptance
    row = re.search(r'<tr class="on-call"><td>h9</td>(.*?)</tr>', history).group(1)
    assert row == ("<td><code>rollback</code></td><td>on-call rolled the champion back from v4 to v3</td>"
                   "<td>v4 recommends delisted items</td><td><code>rb1</code></td>")
    assert history.index("<td>h14</td>") < history.index("<td>h1</td>")  # newest first
    assert "the gate said: worse" in history


def test_registry_focus_on_a_full_retrain_version_shows_its_gate_decision(ops_client):
    html = ops_client.get("/registry", params={"version": 5}).text
    focus = re.search(r'<div class="box focus-box" id="focus">(.*?)</div>', html).group(1)
    assert "Version 5</b>: full_retrain on 2010-12-03, recall@100 0.1200, never served." in focus
    assert ('Full retrain <a href="#r-5">v5</a> (ending 2010-12-03, 2 days): <span class="REJECT">REJECT</span>, '
            "recall@100 0.1200 vs champion v4 0.2500. worse than the champion") in focus
    assert '<tr id="r-5" class="focus">' in html and '<tr id="v-5" class="focus">' in html
    by_date = ops_client.get("/registry", params={"date": "2010-12-03"}).text
    focus = re.search(r'id="focus">(.*?)</div>', by_date).group(1)
    assert focus.count("Full retrain <a") == 2  # both retrains ending that day, next to the daily decision


def test_registry_page_rejects_a_bad_date_or_version(client):
    assert client.get("/registry", params={"date": "2010-13-01"}).status_code == 422
    assert client.get("/registry", params={"date": "yesterday"}).status_code == 422
    assert client.get("/registry", params={"version": 0}).status_code == 422


def test_registry_json_is_the_report_data(client):
    data = client.get("/api/registry").json()
    assert data["metric"] == METRIC and data["champion"]["version"] == 3
    assert data["versions"] == report.version_rows(REGISTRY, METRIC)
    assert data["decisions"] == report.decision_rows(REGISTRY, METRIC)
    assert data["retrains"] == [] and len(data["history"]) == 4


def test_registry_page_of_an_empty_store(tmp_path):
    from fastapi.testclient import TestClient

    from recsys.storage.local import LocalStore

    client = TestClient(create_app(lambda: LocalStore(tmp_path / "empty"), lambda: METRIC))
    html = client.get("/registry").text
    assert "No champion deployed yet" in html and 'id="metric-plot-empty"' in html
    assert "No partition has landed yet" in client.get("/validation").text


def test_validation_list_links_each_partition_to_its_report_and_data_docs(client):
    html = client.get("/validation").text
    for day, status in (("2010-12-04", "NOT-VALIDATED"), ("2010-12-03", "ACCEPTED"), ("2010-12-02", "FAILED"),
                        ("2010-12-01", "PASSED")):
        row = re.search(rf'<tr id="dt-{day}">(.*?)</tr>', html, re.S).group(1)
        assert f'class="{status}"' in row
        assert f'href="/recsys/validation/{day}"' in row
    failed = re.search(r'<tr id="dt-2010-12-02">(.*?)</tr>', html, re.S).group(1)
    assert "expect_column_values_to_be_in_set" in failed
    assert 'href="/recsys/reports/site/validations/raw_events/2010-12-02.html"' in failed
    assert 'href="/recsys/reports/dt%3D2010-12-02/summary.json"' in failed
    assert 'href="/recsys/reports/site/partitions.html"' in html


def test_validation_page_of_one_partition_lists_its_checks(client):
    html = client.get("/validation/2010-12-02").text
    assert '<span class="FAILED">FAILED</span>' in html and "quarantine/events/dt=2010-12-02/" in html
    assert "event types" in html and "&#x27;click&#x27;" in html
    assert "Accepted by on-call: known promotion" in client.get("/validation/2010-12-03").text
    assert "has not run yet" in client.get("/validation/2010-12-04").text


def test_validation_page_of_an_unknown_or_malformed_date_is_404(client):
    assert client.get("/validation/2011-01-01").status_code == 404
    assert client.get("/validation/2010-12-1").status_code == 404
    assert client.get("/validation/..%2Fregistry").status_code == 404


def test_report_files_are_served_from_the_store_with_their_type(client):
    page = client.get("/reports/site/partitions.html")
    assert page.status_code == 200 and page.text == "<html><body>every partition</body></html>"
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "connect-src 'none'" in page.headers["content-security-policy"]
    css = client.get("/reports/site/static/styles/data_docs.css")
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    summary = client.get("/reports/dt=2010-12-02/summary.json")
    assert summary.status_code == 200 and summary.json()["success"] is False
    page = client.get("/reports/site/validations/raw_events/2010-12-01.html")
    assert page.text == "<html>GX page of 2010-12-01</html>"


@pytest.mark.parametrize("path", [
    "/reports/..%2Fregistry/two_tower.json", "/reports/site/..%2F..%2F..%2Fregistry%2Ftwo_tower.json",
    "/reports/%2Fetc%2Fpasswd", "/reports/site/.tmp-x", "/reports/site", "/reports/site/missing.html",
    "/reports/site//partitions.html", "/reports/site%5C..%5Cpartitions.html",
])
def test_report_files_outside_the_reports_or_missing_are_404(client, path):
    response = client.get(path)
    assert response.status_code == 404, path
    assert "trained_on" not in response.text  # nothing of the registry document leaks


@pytest.mark.parametrize("relative", ["../registry/two_tower.json", "site/../../registry/two_tower.json", "/etc/passwd",
                                      "", "site/", "site/./x", ".hidden", "a\\..\\b", "dt=2010-12-01/\x00"])
def test_report_path_refuses_anything_but_plain_names(relative):
    with pytest.raises(ValueError, match="not a report path"):
        report_path(relative)


def test_report_path_of_a_data_docs_page():
    assert report_path("site/validations/raw_events/x/20101202T000000.000000Z/abc.html") == (
        "reports/validation/site/validations/raw_events/x/20101202T000000.000000Z/abc.html")


def test_an_unreadable_store_is_503_with_the_reason():
    from fastapi.testclient import TestClient

    def broken():
        raise StorageError("NameNode not reachable at http://nn:9870")

    client = TestClient(create_app(broken, lambda: METRIC))
    response = client.get("/registry", headers={"accept": "text/html"})
    assert response.status_code == 503 and "NameNode not reachable" in response.text
    assert response.headers["content-type"].startswith("text/html")
    assert client.get("/api/registry").json() == {
        "detail": "the partition store cannot be opened: NameNode not reachable at http://nn:9870"}


def test_the_root_redirects_to_the_registry(client):
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/recsys/registry"


# --- the links -------------------------------------------------------------------------------------------


def test_link_urls():
    assert links.validation_url(date(2010, 12, 2)) == "/recsys/validation/2010-12-02"
    assert links.validation_url(None, "/airflow") == "/airflow/recsys/validation"
    assert links.registry_url(date(2010, 12, 2), 7) == "/recsys/registry?date=2010-12-02&version=7#v-7"
    assert links.registry_url(date(2010, 12, 2), None) == "/recsys/registry?date=2010-12-02#d-2010-12-02"
    assert links.registry_url(None, None) == "/recsys/registry"


def test_version_from_a_task_return_value():
    assert links.version_from({"version": 3, "changed": True}) == 3
    assert links.version_from({"candidate_version": 4, "blessed": False}) == 4
    assert links.version_from({"version": 2, "previous": 5, "changed": True}) == 2  # rollback's return value
    assert links.version_from({"version": True}) is None
    assert links.version_from(True) is None and links.version_from(None) is None


def _target(dag_id, task_id, returned, run=None):
    """links.link_target over literal XCom values; records which tasks' values were read."""
    read = []

    def value(task):
        read.append(task)
        return returned.get(task)

    def run_info():
        read.append("<run>")
        return run

    return links.link_target(dag_id, task_id, value, run_info), read


def test_incremental_tasks_link_to_the_run_date_and_their_version():
    from datetime import datetime

    run = ({"partition_date": "2010-12-05"}, datetime(2026, 11, 28))
    xcom = {"fine_tune": {"version": 7, "trained_on": "2010-12-05"}, "deploy_if_blessed": True,
            "evaluate": {"candidate_version": 7, "date": "2010-12-05", "blessed": True},
            "deploy": {"version": 7, "changed": True, "previous": 6}}
    inc = "recsys_incremental_update"
    assert _target(inc, "fine_tune", xcom, run) == ((date(2010, 12, 5), 7), ["fine_tune", "<run>"])
    assert _target(inc, "deploy_if_blessed", xcom, run)[0] == (date(2010, 12, 5), 7)  # from evaluate
    assert _target(inc, "deploy", xcom, run)[0] == (date(2010, 12, 5), 7)
    assert _target(inc, "deploy", {}, (None, datetime(2010, 12, 6)))[0] == (date(2010, 12, 6), None)
    assert _target(inc, "build_features", xcom, run) == (None, [])


def test_full_retrain_tasks_link_to_the_retrained_version_at_its_end_date():
    from datetime import datetime

    run = ({"end_date": None, "window_days": None}, datetime(2026, 11, 29, 3))  # a weekly run: not a partition
    xcom = {"train_from_scratch": {"version": 9, "kind": "full_retrain", "trained_on": "2010-12-20"},
            "evaluate": {"candidate_version": 9, "date": "2010-12-20", "blessed": True}, "deploy_if_blessed": True,
            "deploy": {"version": 9, "changed": True, "previous": 7}}
    fr = "recsys_full_retrain"
    assert _target(fr, "train_from_scratch", xcom, run) == ((date(2010, 12, 20), 9), ["train_from_scratch"])
    assert _target(fr, "evaluate", xcom, run) == ((date(2010, 12, 20), 9), ["evaluate"])
    assert _target(fr, "deploy_if_blessed", xcom, run) == ((date(2010, 12, 20), 9), ["evaluate"])
    assert _target(fr, "deploy", xcom, run) == ((date(2010, 12, 20), 9), ["deploy", "evaluate"])
    # the training failed: no return value; the End date param if given, never the logical date
    assert _target(fr, "train_from_scratch", {}, ({"end_date": "2010-12-19"}, None))[0] == (date(2010, 12, 19), None)
    assert _target(fr, "train_from_scratch", {}, run)[0] == (None, None)
    assert _target(fr, "train", xcom, run) == (None, [])  # no such task


def test_rollback_links_to_the_version_rolled_back_to_without_a_date():
    xcom = {"rollback": {"version": 2, "index_catalog_date": "2010-12-20", "previous": 5, "changed": True}}
    assert _target("recsys_rollback", "rollback", xcom) == ((None, 2), ["rollback"])
    assert links.registry_url(None, 2) == "/recsys/registry?version=2#v-2"


def test_model_tasks_name_real_tasks_of_the_real_dags():
    from airflow.dag_processing.dagbag import DagBag

    dagbag = DagBag(dag_folder=str(PLUGINS.parent / "dags"))
    assert dagbag.import_errors == {}
    assert set(links.MODEL_TASKS) <= set(dagbag.dag_ids)
    for dag_id, tasks in links.MODEL_TASKS.items():
        task_ids = set(dagbag.dags[dag_id].task_ids)
        for task_id, sources in tasks.sources.items():
            assert {task_id, *sources} <= task_ids, (dag_id, task_id, sources)
        if tasks.date_param:
            assert tasks.date_param in dagbag.dags[dag_id].params
    assert set(links.MODEL_TASKS["recsys_full_retrain"].sources) == set(dagbag.dags["recsys_full_retrain"].task_ids)
    assert links.VALIDATION_TASKS <= set(dagbag.dags["recsys_incremental_update"].task_ids)


def test_partition_day_prefers_the_param_over_the_logical_date():
    from datetime import datetime

    logical = datetime(2026, 11, 28, 3, 49)
    assert links.partition_day({"partition_date": "2010-12-01"}, logical) == date(2010, 12, 1)
    assert links.partition_day({"partition_date": None}, logical) == date(2026, 11, 28)
    assert links.partition_day(None, None) is None
    assert links.partition_day({"partition_date": "not a date"}, logical) is None


def test_links_are_empty_for_tasks_outside_the_recsys_dags():
    from types import SimpleNamespace

    other = SimpleNamespace(dag_id="example_etl", task_id="validate", run_id="r", map_index=-1)
    unrelated = SimpleNamespace(dag_id="recsys_incremental_update", task_id="build_features", run_id="r", map_index=-1)
    for link in (links.ValidationReportLink(), links.ModelRegistryLink()):
        assert link.get_link(None, ti_key=other) == ""
        assert link.get_link(None, ti_key=unrelated) == ""


# --- the plugin as Airflow loads it ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plugin_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("recsys_plugin_under_test", PLUGINS / "recsys_plugin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_plugin_registers_the_app_nav_views_and_links(plugin_module):
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES

    plugin = plugin_module.RecsysPlugin
    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == "/recsys" and not app["url_prefix"].startswith(tuple(RESERVED_URL_PREFIXES))
    routes = {route.path for route in app["app"].routes}
    views = {v["url_route"]: v for v in plugin.external_views}
    assert set(views) == {"recsys-registry", "recsys-validation"}
    for view in views.values():
        assert not view["href"].startswith("/")  # relative to the UI's base URL, as Airflow requires
        assert view["href"].removeprefix("recsys") in routes
        assert view["destination"] == "nav"
    assert {type(link).__name__ for link in plugin.global_operator_extra_links} == {
        "ValidationReportLink", "ModelRegistryLink"}


def test_the_plugin_app_needs_an_airflow_login(plugin_module):
    from fastapi.testclient import TestClient

    client = TestClient(plugin_module.app)
    for path in ("/registry", "/validation", "/reports/site/partitions.html", "/api/registry"):
        response = client.get(path)
        assert response.status_code == 401, path
    assert "Log in to Airflow first" in client.get("/registry", headers={"accept": "text/html"}).text
