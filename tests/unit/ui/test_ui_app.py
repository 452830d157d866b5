"""plugins/recsys_ui/app.py: the routes through FastAPI's TestClient: parameters, JSON, report files, path
traversal, an unreadable store."""

from __future__ import annotations

import pytest
from recsys_ui.app import create_app, report_path

from recsys import report
from recsys.storage import StorageError

METRIC = "recall@100"


def test_registry_page_rejects_a_bad_date_or_version(client):
    assert client.get("/registry", params={"date": "2010-13-01"}).status_code == 422
    assert client.get("/registry", params={"date": "yesterday"}).status_code == 422
    assert client.get("/registry", params={"version": 0}).status_code == 422


def test_registry_json_is_the_report_data(client, registry_doc):
    data = client.get("/api/registry").json()
    assert data["metric"] == METRIC and data["champion"]["version"] == 3
    assert data["versions"] == report.version_rows(registry_doc, METRIC)
    assert data["decisions"] == report.decision_rows(registry_doc, METRIC)
    assert data["retrains"] == [] and len(data["history"]) == 4


def test_validation_page_of_an_unknown_or_malformed_date_is_404(client):
    assert client.get("/validation/2011-01-01").status_code == 404
    assert client.get("/validation/2010-12-1").status_code == 404
    assert client.get("/validation/..%2Fregistry").status_code == 404


def test_report_files_are_served_from_the_store_with_their_type(client):
    page = client.get("/reports/site/partitions.html")
    assert page.status_code == 200 and page.text == "<html><body>every partition</body></html>"
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"].startswith("sandbox; default-src 'none';")
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
