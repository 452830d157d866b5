"""The data-health trend on the Validation view, in a real headless Chromium (Debian's, driven by Playwright).

The store holds the demo's days (``make demo``: 5 days of Online Retail from 2010-12-01; there is no
Saturday 2010-12-04), each validated by the real suites with its features built (so later days' shares are
checked against the vocabulary), plus two planted deliveries: 12-07 with an unknown event type, accepted
by on-call with a reason holding markup, and 12-08 whose most frequent item id is markup (it fails the
top-item share and the id rule, and is quarantined). The plugin's app is served by uvicorn under /recsys,
as Airflow mounts it. Screenshots go to test-artifacts/validation_trend*.png.
"""

from __future__ import annotations

import csv
import io
import sys
import threading
import time
from datetime import date
from pathlib import Path

import pytest

from tests.browser import chromium_page
from tests.postgres import free_port

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT / "plugins") not in sys.path:  # as Airflow puts its plugins folder on the path
    sys.path.insert(0, str(REPO_ROOT / "plugins"))
ARTIFACTS = REPO_ROOT / "test-artifacts"
DEMO_START, DEMO_DAYS = date(2010, 12, 1), 5
DEMO_DATES = ["2010-12-01", "2010-12-02", "2010-12-03", "2010-12-05", "2010-12-06"]
ACCEPTED, FAILED = date(2010, 12, 7), date(2010, 12, 8)
REASON = 'known promotion <img src=x onerror="window.__xss=1">'
EVIL_ITEM = "<img src=x onerror=window.__xss=2>"


def _plant(store, day: date, change) -> None:
    """Land ``day`` of Online Retail, then replace its events with ``change(events)`` (the test is upstream)."""
    from recsys.datasets.landing import DATA_FILE, land_days
    from recsys.storage import layout
    from recsys.storage.raw import read_partition

    land_days(store, day, 1, exact=True)
    events = read_partition(store, layout.raw_events(day))
    store.write_parquet(f"{layout.raw_events(day)}/{DATA_FILE}", change(events))


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    from recsys import schema
    from recsys.config import Settings
    from recsys.datasets.landing import land_days
    from recsys.features import build_features
    from recsys.storage.local import LocalStore
    from recsys.validation import ValidationFailed, validate_partition

    store = LocalStore(tmp_path_factory.mktemp("trend") / "store")
    settings = Settings()
    landed = [x.day.isoformat() for x in land_days(store, DEMO_START, DEMO_DAYS)]
    assert landed == DEMO_DATES
    for day in map(date.fromisoformat, DEMO_DATES):
        assert validate_partition(store, settings, day, run_id="t").success
        build_features(store, settings, day)

    def click(events):
        out = events.copy()
        out.loc[out.index[:3], schema.EVENT_TYPE] = "click"
        return out

    def evil_top_item(events):
        out = events.copy()
        out.loc[out.index[: int(len(out) * 0.3)], schema.ITEM_ID] = EVIL_ITEM
        return out

    _plant(store, ACCEPTED, click)
    report = validate_partition(store, settings, ACCEPTED, run_id="t", accept_invalid=True, accept_reason=REASON)
    assert report.accepted is not None
    build_features(store, settings, ACCEPTED)
    _plant(store, FAILED, evil_top_item)
    with pytest.raises(ValidationFailed):
        validate_partition(store, settings, FAILED, run_id="t")
    return store


@pytest.fixture(scope="module")
def server(demo_store):
    """The plugin's app mounted at /recsys (as the Airflow API server mounts it), served by uvicorn."""
    import uvicorn
    from recsys_ui.app import create_app
    from starlette.applications import Starlette
    from starlette.routing import Mount

    root = Starlette(routes=[Mount("/recsys", app=create_app(lambda: demo_store, lambda: "recall@100"))])
    port = free_port()
    config = uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        if time.monotonic() > deadline:
            pytest.fail("uvicorn did not start within 30 s", pytrace=False)
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}/recsys"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def browser_page(tmp_path):
    with chromium_page(tmp_path / "chromium-profile", timeout_ms=15_000) as page:
        yield page


def test_the_trend_section_shows_the_demo_days_in_chromium(browser_page, server):
    page = browser_page
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(f"{server}/validation")
    section = page.locator("#trend")
    section.wait_for()
    plot = page.locator("#trend-plot")
    assert plot.is_visible()
    days = [d for d in plot.locator("rect.day").evaluate_all("els => els.map(e => e.dataset.date)")]
    assert days == [*DEMO_DATES[:3], "2010-12-04", *DEMO_DATES[3:], "2010-12-07", "2010-12-08"]
    assert plot.locator('rect.missing[data-date="2010-12-04"]').count() == 4  # one grey column per panel
    assert plot.locator("rect.band").count() == 6  # every day after the first had a trailing average
    assert "5 passed, 1 failed, 1 accepted, 1 missing" in section.inner_text()

    # markup from the data is text: nothing ran, and the tooltips show it as written
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("img[src=x]").count() == 0
    accepted_tip = plot.locator('rect.day[data-date="2010-12-07"] title').text_content() or ""
    assert f"accepted by on-call: {REASON}" in accepted_tip
    failed_tip = plot.locator('rect.day[data-date="2010-12-08"] title').text_content() or ""
    assert f"top item {EVIL_ITEM}" in failed_tip and "(quarantined)" in failed_tip

    # hovering a passed day's point lands on its column, whose tooltip has the day's numbers
    dot = plot.locator('circle.events[data-date="2010-12-03"]')
    box = dot.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    under = page.evaluate("([x, y]) => { const e = document.elementFromPoint(x, y); "
                          "return [e.getAttribute('class'), e.querySelector('title')?.textContent]; }", [x, y])
    assert under[0] == "day"
    assert under[1].startswith("2010-12-03: PASSED") and "x of the trailing average" in under[1]
    section.screenshot(path=str(ARTIFACTS / "validation_trend.png"))
    page.screenshot(path=str(ARTIFACTS / "validation_trend_page.png"), full_page=True)
    assert (ARTIFACTS / "validation_trend.png").stat().st_size > 10_000

    # the export has every date; the failed day's red point opens its report
    exported = page.request.get(f"{server}/api/validation/trend?format=csv")
    assert exported.ok
    rows = list(csv.DictReader(io.StringIO(exported.text())))
    assert [r["status"] for r in rows] == ["PASSED"] * 3 + ["MISSING"] + ["PASSED"] * 2 + ["ACCEPTED", "FAILED"]
    assert rows[-1]["top_item"] == EVIL_ITEM and float(rows[-1]["top_item_margin"]) < 0
    plot.locator('circle.events.FAILED[data-date="2010-12-08"]').click()
    page.wait_for_url(f"{server}/validation/2010-12-08")
    assert "FAILED" in page.locator("#verdict").inner_text()
    assert page.locator("#margins").is_visible()
