"""Stored XSS through the Data Docs (issue 18 #1), in a real headless Chromium (Debian's, driven by Playwright).

Markup payloads are planted in a partition's values and in a data file's name, the partitions are validated,
and the plugin's app (mounted under ``/recsys`` as the Airflow API server mounts it, served by uvicorn) serves
the Data Docs. No payload may run: each would set ``window.__xss``, the title, or open a dialog. A page
stored by an earlier release with a raw script still runs sandboxed: in an opaque origin, without the
site's cookies and without any request to the API. Requests leaving 127.0.0.1 are refused (the GX pages'
CDN scripts), so the test is the same with and without internet access. Screenshots in test-artifacts/.
"""

from __future__ import annotations

import threading
import time
from datetime import date
from pathlib import Path

import pytest

from tests.browser import chromium_page
from tests.postgres import free_port
from tests.xss_payloads import BAD_FILE, PAYLOADS, plant

pytestmark = [pytest.mark.integration, pytest.mark.browser]

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
PLUGINS = REPO_ROOT / "plugins"
DAY, FILE_DAY = date(2011, 1, 4), date(2011, 1, 5)
# a page as an earlier release could have stored it: the data's markup raw; it reports what it could reach
STALE_PAGE = b"""<!DOCTYPE html><html><head><title>stale</title></head><body><p>stale page</p><script>
window.__xss = 'ran';
try { window.__cookie = document.cookie; } catch (e) { window.__cookie = 'blocked: ' + e.name; }
fetch('/recsys/api/registry').then(() => { window.__fetch = 'answered'; }, () => { window.__fetch = 'refused'; });
</script></body></html>"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The plugin's app over a store with the payloads validated, at ``http://127.0.0.1:<port>/recsys``."""
    import sys

    import uvicorn
    from fastapi import FastAPI

    from recsys.config import Settings
    from recsys.storage.local import LocalStore
    from recsys.validation.partition import ValidationFailed, validate_partition

    if str(PLUGINS) not in sys.path:
        sys.path.insert(0, str(PLUGINS))
    from recsys_ui.app import create_app

    store = LocalStore(tmp_path_factory.mktemp("xss-browser") / "store")
    plant(store, DAY, FILE_DAY)
    for day in (DAY, FILE_DAY):
        with pytest.raises(ValidationFailed):
            validate_partition(store, Settings(), day)
    root = FastAPI()
    root.mount("/recsys", create_app(lambda: store, lambda: "recall@100"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield store, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def browser_page(tmp_path, served):
    """A Chromium page that records dialogs, refuses requests outside 127.0.0.1 and has a site cookie."""
    _, base = served
    with chromium_page(tmp_path / "chromium-profile", timeout_ms=15_000) as page:
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base)
                   else route.abort())
        page.context.add_cookies([{"name": "_token", "value": "secret-session", "url": base}])
        yield page, dialogs


def _open(page, url: str) -> None:
    page.goto(url)
    page.wait_for_load_state("load")
    page.wait_for_timeout(500)  # onload / onerror handlers and timers of a payload would have run by now


def _url(base: str, store_path: str) -> str:
    """The plugin's address of a file under ``reports/validation/``."""
    return f"{base}/recsys/reports/{store_path.removeprefix('reports/validation/')}"


def _ran(page) -> dict:
    return page.evaluate("() => ({xss: window.__xss ?? null, title: document.title, origin: window.origin})")


def test_no_payload_from_the_data_runs_in_any_data_docs_page(browser_page, served):
    store, base = served
    page, dialogs = browser_page
    ARTIFACTS.mkdir(exist_ok=True)
    summary = store.read_json(f"reports/validation/dt={DAY}/summary.json")
    integrity = store.read_json(f"reports/validation/dt={FILE_DAY}/summary.json")["data_docs"]["pages"]
    pages = [*summary["data_docs"]["pages"].values(), *integrity.values(), summary["data_docs"]["overview"],
             summary["data_docs"]["index"]]
    assert len(pages) == 5
    for path in pages:
        url = _url(base, path)
        _open(page, url)
        state = _ran(page)
        assert state["xss"] is None and "__xss" not in state["title"], (url, state)
        assert state["origin"] == "null", (url, state)  # sandboxed: not the Airflow UI's origin
        assert dialogs == [], (url, dialogs)
    # the values are shown as the data has them
    _open(page, _url(base, summary["data_docs"]["pages"]["raw_events"]))
    text = page.inner_text("body")
    for payload in PAYLOADS[:5]:
        assert payload in text, payload
    page.screenshot(path=str(ARTIFACTS / "data_docs_xss_payloads.png"), full_page=True)
    _open(page, _url(base, integrity["partition_integrity"]))
    assert BAD_FILE in page.inner_text("body")


def test_a_raw_page_stored_by_an_earlier_release_reaches_no_cookie_and_no_api(browser_page, served):
    store, base = served
    page, _ = browser_page
    store.write_bytes("reports/validation/site/validations/stale/page.html", STALE_PAGE)
    _open(page, f"{base}/recsys/reports/site/validations/stale/page.html")
    page.wait_for_function("() => window.__fetch !== undefined")
    state = page.evaluate("() => ({xss: window.__xss, cookie: window.__cookie, fetch: window.__fetch,"
                          " origin: window.origin})")
    assert state["xss"] == "ran"  # the GX pages keep their scripts, inside the sandbox
    assert state == {"xss": "ran", "cookie": "blocked: SecurityError", "fetch": "refused", "origin": "null"}
    # in the app's own pages (Airflow's origin) the same cookie is there
    _open(page, f"{base}/recsys/validation/{DAY}")
    assert page.evaluate("() => [window.origin, document.cookie]") == [base, "_token=secret-session"]
