"""The response headers of every route of the plugin's app (``recsys_ui.security``): no script from the store can
run in the Airflow UI's origin, and no report is served with a type it was not made for.
"""

from __future__ import annotations

import pytest

from tests.xss_payloads import csp_directives

METRIC = "recall@100"
# one request per route of the app (the test below checks that none is missing)
ROUTE_REQUESTS = {
    "/": ["/"],
    "/api/registry": ["/api/registry"],
    "/registry": ["/registry", "/registry?date=2010-12-02&version=2", "/registry?date=bad"],
    "/validation": ["/validation"],
    "/api/validation/trend": ["/api/validation/trend", "/api/validation/trend?format=csv"],
    "/validation/{day}": ["/validation/2010-12-02", "/validation/2011-01-01"],
    "/reports/{relative:path}": ["/reports/site/partitions.html", "/reports/dt=2010-12-02/summary.json",
                                 "/reports/site/missing.html"],
}


def test_every_route_is_covered(client):
    paths = {r.path for r in client.app.routes if getattr(r, "include_in_schema", True) or r.path == "/"}
    assert paths == set(ROUTE_REQUESTS)


@pytest.mark.parametrize("url", [u for urls in ROUTE_REQUESTS.values() for u in urls])
@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_every_response_runs_no_script_and_is_not_sniffed(client, url, accept):
    response = client.get(url, headers={"Accept": accept}, follow_redirects=False)
    assert response.headers["x-content-type-options"] == "nosniff", url
    csp = csp_directives(response.headers["content-security-policy"])
    assert csp["default-src"] == ["'none'"], url
    assert "script-src" not in csp, url  # the app's pages and our overview run no script at all
    assert csp["frame-ancestors"] == ["'self'"] and csp["base-uri"] == ["'none'"], url
    assert csp["form-action"] == ["'none'"], url
    if url.startswith("/reports/") and response.status_code == 200:
        assert csp["sandbox"] == [], url  # an opaque origin, and no scripts


def test_the_app_pages_allow_inline_styles_only(client):
    csp = csp_directives(client.get("/registry").headers["content-security-policy"])
    assert csp == {"default-src": ["'none'"], "style-src": ["'unsafe-inline'"], "img-src": ["'self'", "data:"],
                   "base-uri": ["'none'"], "form-action": ["'none'"], "frame-ancestors": ["'self'"]}


def test_gx_pages_run_their_scripts_only_in_a_sandbox_without_the_airflow_origin(client):
    from recsys_ui import security

    response = client.get("/reports/site/validations/raw_events/2010-12-01.html")
    assert response.status_code == 200 and response.headers["content-type"] == "text/html; charset=utf-8"
    csp = csp_directives(response.headers["content-security-policy"])
    assert csp["sandbox"] == ["allow-scripts"]  # never allow-same-origin: no cookies, no API of Airflow
    assert csp["default-src"] == ["'none'"] and csp["script-src"] == ["'unsafe-inline'", *security.GX_SCRIPTS]
    assert "connect-src" not in csp and "frame-src" not in csp and "object-src" not in csp
    assert not [s for s in security.GX_SCRIPTS if not s.startswith("https://") or s.endswith("/")]
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize(("relative", "media_type"), [
    ("site/static/styles/data_docs.css", "text/css; charset=utf-8"),
    ("dt=2010-12-02/summary.json", "application/json"),
    ("results/raw_events/dt=2010-12-02/x/y.json", "application/json"),
    ("site/static/images/logo.svg", "image/svg+xml"),
    ("site/static/images/favicon.ico", "image/x-icon"),
    ("site/static/fonts/HKGrotesk/HKGrotesk-Bold.otf", "font/otf"),
    ("site/static/x.js", "application/octet-stream"),  # no script is served from the store
    ("dt=2010-12-02/page.html", "application/octet-stream"),  # HTML only inside the Data Docs site
    ("site/page.htm", "application/octet-stream"),
    ("site/page.xhtml", "application/octet-stream"),
    ("site/page.xml", "application/octet-stream"),
    ("site/noext", "application/octet-stream"),
])
def test_report_files_get_a_fixed_type_and_a_sandbox(ui_store, client, relative, media_type):
    ui_store.write_bytes(f"reports/validation/{relative}", b"<html><script>alert(1)</script></html>")
    response = client.get(f"/reports/{relative}")
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.headers["x-content-type-options"] == "nosniff"
    csp = csp_directives(response.headers["content-security-policy"])
    assert csp["sandbox"] == [] and csp["default-src"] == ["'none'"] and "script-src" not in csp
    if media_type == "application/octet-stream":
        assert response.headers["content-disposition"] == "attachment"


def test_errors_and_redirects_carry_the_headers_too(client):
    for response in (client.get("/reports/..%2Fregistry/two_tower.json", headers={"Accept": "text/html"}),
                     client.get("/", follow_redirects=False)):
        assert response.status_code in (307, 404)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert csp_directives(response.headers["content-security-policy"])["default-src"] == ["'none'"]


def test_the_overview_is_the_page_the_pipeline_writes():
    from recsys_ui import security

    from recsys.validation import docs

    assert security.OVERVIEW_FILE == docs.OVERVIEW_FILE and security.SITE_PREFIX + docs.OVERVIEW_FILE == (
        docs.OVERVIEW.removeprefix("reports/validation/"))
