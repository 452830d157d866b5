"""plugins/recsys_ui/render.py: the registry and validation pages (rendered through the app's routes) and the
history's sentences."""

from __future__ import annotations

import re

import pytest
from recsys_ui import render
from recsys_ui.app import create_app

from recsys import report

METRIC = "recall@100"


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


def test_registry_page_shows_full_retrains_table_size_and_rows_added(ops_client, registry_ops):
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
    assert ops_client.get("/api/registry").json()["retrains"] == report.retrain_rows(registry_ops, METRIC)


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
def test_every_history_action_reads_as_a_sentence(at, action, text, registry_ops):
    entry = next(h for h in registry_ops["history"] if h["at"] == at)
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


def test_a_retention_prune_reads_as_a_sentence():
    entry = {"at": "t", "action": "pruned", "versions": [2, 5], "keep": 10, "reason": "retention", "run_id": None}
    assert render.history_text(entry) == (
        "retention pruned v2, v5 (keeping the last 10 trained and every protected version)")
