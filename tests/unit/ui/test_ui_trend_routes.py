"""The trend on the Validation view and its export (``/recsys/api/validation/trend``), through the app factory.

``ui_store`` (conftest): 12-01 passed, 12-02 failed, 12-03 accepted, 12-04 landed but not validated.
"""

from __future__ import annotations

import csv
import io
from datetime import date

from recsys.storage import layout
from recsys.validation import health

DAYS = ["2010-12-01", "2010-12-02", "2010-12-03", "2010-12-04"]


def test_the_validation_page_shows_the_trend_above_the_partitions(client):
    page = client.get("/validation").text
    assert page.index('id="trend"') < page.index('id="partitions"')
    assert page.count('class="day"') == 4
    # a failed day links to its report (in the same frame: inside Airflow the page is an iframe, as its other links)
    assert '<a href="/recsys/validation/2010-12-02"><rect class="failed-bar FAILED"' in page
    assert "1 passed, 1 failed, 1 accepted, 1 not validated" in page
    assert 'href="/recsys/api/validation/trend?format=csv"' in page


def test_the_trend_as_json(client):
    response = client.get("/api/validation/trend")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    rows = response.json()
    assert [r["date"] for r in rows] == DAYS
    assert [r["status"] for r in rows] == ["PASSED", "FAILED", "ACCEPTED", "NOT VALIDATED"]
    assert [r["failed_checks"] for r in rows] == [0, 1, 1, None]
    assert rows[2]["accepted_reason"] == "known promotion"


def test_the_trend_as_csv_for_a_spreadsheet(client):
    response = client.get("/api/validation/trend", params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert 'filename="validation-trend.csv"' in response.headers["content-disposition"]
    parsed = list(csv.DictReader(io.StringIO(response.text)))
    assert list(parsed[0]) == list(health.CSV_COLUMNS)
    assert [(r["date"], r["status"], r["events"]) for r in parsed] == [
        ("2010-12-01", "PASSED", "5"), ("2010-12-02", "FAILED", "5"), ("2010-12-03", "ACCEPTED", "5"),
        ("2010-12-04", "NOT VALIDATED", "")]


def test_an_unknown_export_format_is_422(client):
    assert client.get("/api/validation/trend", params={"format": "xlsx"}).status_code == 422


def test_an_empty_store_has_an_empty_trend(store):
    from fastapi.testclient import TestClient
    from recsys_ui.app import create_app

    client = TestClient(create_app(lambda: store, lambda: "recall@100"), root_path="/recsys")
    assert client.get("/api/validation/trend").json() == []
    assert client.get("/api/validation/trend", params={"format": "csv"}).text == ",".join(health.CSV_COLUMNS) + "\n"
    assert 'id="trend-plot-empty"' in client.get("/validation").text


def test_markup_from_the_data_is_escaped_on_the_page(client, ui_store, summary):
    evil = "<script>window.hit=1</script>"
    day = date(2010, 12, 5)
    ui_store.mark_success(layout.raw_events(day))
    accepted = summary("2010-12-05", False, accepted={"reason": f"promo {evil}"},
                       notes={health.TOP_ITEM_CHECK: f"item {evil} has 30.0% of the events; at most 20% allowed"})
    accepted["checks"].append({"suite": "raw_events", "check": health.TOP_ITEM_CHECK, "success": False,
                               "expectation": "expect_column_mean_to_be_between", "observed_value": 0.3,
                               "expected": {"min_value": 0.0, "max_value": 0.2}})
    ui_store.write_json(layout.validation_summary(day), accepted)
    page = client.get("/validation").text
    assert "<script" not in page
    assert "promo &lt;script&gt;window.hit=1&lt;/script&gt;" in page
    assert "top item &lt;script&gt;window.hit=1&lt;/script&gt; 30.0%, limit 20.0%" in page
    one = client.get("/validation/2010-12-05").text
    assert "<script" not in one and 'id="margins"' in one
