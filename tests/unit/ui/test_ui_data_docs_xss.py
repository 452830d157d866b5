"""Stored XSS through the Data Docs (issue 18 #1): markup in a partition's values or a data file's name is only
text in every page Great Expectations builds, and the plugin serves those pages sandboxed with a CSP that
allows what GX's pages load and nothing else.
"""

from __future__ import annotations

import html
import json
import re
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from recsys.config import Settings
from recsys.storage import layout
from recsys.storage.local import LocalStore
from recsys.validation.docs import ESCAPED_MARK, RESULTS_DIR, SITE_DIR, escape_result, escape_stored_result
from recsys.validation.partition import ValidationFailed, validate_partition
from tests.xss_payloads import BAD_FILE, PAYLOADS, csp_directives, markup_from_data, plant

DAY, FILE_DAY = date(2011, 1, 4), date(2011, 1, 5)


def _validate_failing(store: LocalStore, day: date) -> dict:
    with pytest.raises(ValidationFailed):
        validate_partition(store, Settings(), day)
    return store.read_json(layout.validation_summary(day))


def _site_pages(store: LocalStore) -> dict[str, str]:
    site = Path(store.uri(SITE_DIR).removeprefix("file://"))
    return {p.relative_to(site).as_posix(): p.read_text(encoding="utf-8") for p in sorted(site.rglob("*.html"))}


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> LocalStore:
    """A store whose 2011-01-04 events and catalog hold every payload, 2011-01-05 a file with a markup name."""
    store = LocalStore(tmp_path_factory.mktemp("xss") / "store")
    plant(store, DAY, FILE_DAY)
    for day in (DAY, FILE_DAY):
        _validate_failing(store, day)
    return store


def test_values_and_file_names_from_the_data_are_only_text_in_every_data_docs_page(planted):
    pages = _site_pages(planted)
    summary = planted.read_json(layout.validation_summary(DAY))
    assert {"raw_events", "catalog"} <= set(summary["data_docs"]["pages"])
    assert len(pages) >= 5  # GX's index, our overview, the events, catalog and integrity pages
    shown = []
    for name, page in pages.items():
        executable, text = markup_from_data(page)
        assert executable == [], f"{name}: markup from the data: {executable}"
        shown.append(text)
    text = "\n".join(shown)
    for payload in PAYLOADS:  # each is shown, as the data has it (not dropped, not escaped twice)
        assert payload in text, payload
    assert BAD_FILE in text
    assert "&lt;" not in text and "&amp;" not in text.replace("&amp;lt;DATAFRAME", "")


def test_each_expectation_page_names_the_offending_values(planted):
    summary = planted.read_json(layout.validation_summary(DAY))
    page = planted.read_bytes(summary["data_docs"]["pages"]["raw_events"]).decode()
    executable, text = markup_from_data(page)
    assert not executable and all(p in text for p in PAYLOADS)
    files = planted.read_json(layout.validation_summary(FILE_DAY))["data_docs"]["pages"]["partition_integrity"]
    assert BAD_FILE in markup_from_data(planted.read_bytes(files).decode())[1]


def test_stored_results_are_escaped_once_and_marked(planted):
    results = Path(planted.uri(RESULTS_DIR).removeprefix("file://"))
    files = sorted(results.rglob("*.json"))
    assert len(files) == 3
    for path in files:
        stored = json.loads(path.read_text())
        assert stored["meta"][ESCAPED_MARK] is True
        assert not [s for s in _strings(stored, skip="expectation_config") if set(s) & set("<>\"'")]
        assert escape_stored_result(path) is False  # not escaped twice
        assert json.loads(path.read_text()) == stored


def _strings(value, skip: str):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v, skip)
    elif isinstance(value, dict):
        for k, v in value.items():
            if k != skip:
                yield k
                yield from _strings(v, skip)


def test_escape_result_escapes_every_string_and_key():
    assert escape_result({"<k>": ["<b>", 1, None, 2.5, True, {"x": "'\"&"}]}) == {
        "&lt;k&gt;": ["&lt;b&gt;", 1, None, 2.5, True, {"x": "&#x27;&quot;&amp;"}]}


def test_results_stored_before_the_fix_are_escaped_and_their_pages_rebuilt_by_the_next_run(tmp_path):
    store = LocalStore(tmp_path / "store")
    plant(store, DAY, FILE_DAY)
    page = _validate_failing(store, DAY)["data_docs"]["pages"]["raw_events"]
    # what an earlier release left: the raw values in the stored result, and a page that runs them
    results = Path(store.uri(RESULTS_DIR).removeprefix("file://"))
    for path in results.rglob("*.json"):
        stored = json.loads(path.read_text())
        del stored["meta"][ESCAPED_MARK]
        path.write_text(json.dumps(_unescaped(stored)))
    assert "<script>window.__xss=1</script>" in "".join(p.read_text() for p in results.rglob("*.json"))
    store.write_bytes(page, b"<html><script>window.__xss=1</script></html>")

    _validate_failing(store, FILE_DAY)
    executable, text = markup_from_data(store.read_bytes(page).decode())
    assert executable == [] and all(p in text for p in PAYLOADS)
    for path in results.rglob("*.json"):
        assert json.loads(path.read_text())["meta"][ESCAPED_MARK] is True


def _unescaped(value):
    if isinstance(value, str):
        return html.unescape(value)
    if isinstance(value, list):
        return [_unescaped(v) for v in value]
    if isinstance(value, dict):
        return {html.unescape(k): _unescaped(v) for k, v in value.items()}
    return value


# --- served by the plugin --------------------------------------------------------------------------------------


def test_the_plugin_serves_gx_pages_sandboxed_and_their_csp_allows_what_they_load(planted):
    from fastapi.testclient import TestClient
    from recsys_ui import security
    from recsys_ui.app import create_app

    client = TestClient(create_app(lambda: planted, lambda: "recall@100"), root_path="/recsys")
    summary = planted.read_json(layout.validation_summary(DAY))
    gx_pages = [summary["data_docs"]["index"], *summary["data_docs"]["pages"].values()]
    for store_path in gx_pages:
        response = client.get(f"/reports/{store_path.removeprefix(f'{layout.VALIDATION_REPORTS}/')}")
        assert response.status_code == 200 and response.headers["content-type"] == "text/html; charset=utf-8"
        csp = csp_directives(response.headers["content-security-policy"])
        assert csp["sandbox"] == ["allow-scripts"] and csp["default-src"] == ["'none'"]
        assert "connect-src" not in csp and "frame-src" not in csp  # default-src 'none' covers them
        assert response.headers["x-content-type-options"] == "nosniff"

        page = response.text
        scripts = re.findall(r'<script[^>]*\ssrc="([^"]+)"', page)
        assert scripts and set(scripts) <= set(csp["script-src"]), set(scripts) - set(csp["script-src"])
        styles = re.findall(r'<link[^>]*rel="stylesheet"[^>]*href="([^"]+)"', page)
        assert styles and {f"https://{urlsplit(s).netloc}" for s in styles} <= set(csp["style-src"])
        images = {f"https://{urlsplit(s).netloc}" for s in re.findall(r'(?:src="|url\(\')(https://[^"\'?]+)', page)
                  if not s.endswith(tuple(security.GX_SCRIPTS))}
        assert images <= set(csp["img-src"]), (store_path, images - set(csp["img-src"]))

    overview = client.get("/reports/site/partitions.html")
    csp = csp_directives(overview.headers["content-security-policy"])
    assert csp["sandbox"] == [] and csp["default-src"] == ["'none'"] and "script-src" not in csp
    assert markup_from_data(overview.text)[0] == []


# --- the plugin's own pages ------------------------------------------------------------------------------------


def test_the_plugin_pages_show_values_reasons_and_file_names_from_the_store_only_as_text(planted, tmp_path):
    from fastapi.testclient import TestClient
    from recsys_ui.app import create_app

    # on-call accepts the day with a reason that is markup too; it goes into the summary and the registry history
    accepted = LocalStore(tmp_path / "store")
    plant(accepted, DAY, FILE_DAY)
    reason = " ".join(PAYLOADS)
    report = validate_partition(accepted, Settings(), DAY, run_id=PAYLOADS[1], accept_invalid=True,
                                accept_reason=reason)
    assert report.accepted and report.accepted["reason"] == reason
    # url -> what it must show as text (the list page names only the failed checks)
    pages = ((planted, {"/validation": [], f"/validation/{DAY}": PAYLOADS[:5],  # five examples per check
                        f"/validation/{FILE_DAY}": [BAD_FILE]}),
             (accepted, {"/validation": [], f"/validation/{DAY}": [reason], "/registry": [reason],
                         f"/registry?date={DAY}": [reason]}))
    for store, expected in pages:
        client = TestClient(create_app(lambda store=store: store, lambda: "recall@100"), root_path="/recsys")
        for url, shown in expected.items():
            response = client.get(url)
            assert response.status_code == 200, url
            executable, text = markup_from_data(response.text)
            assert executable == [], (url, executable)
            assert all(value in text for value in shown), url
