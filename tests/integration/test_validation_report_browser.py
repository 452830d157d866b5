"""The Data Docs of a failed partition, opened in a real headless Chromium (Debian's, driven by Playwright).

Stakeholders read these pages: the test opens the site index from the store, follows the failed
partition's link to its validation page, and finds the failing expectation and the offending value there.
Screenshots are kept in test-artifacts/.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from tests.browser import chromium_page

pytestmark = [pytest.mark.integration, pytest.mark.browser]

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
DAY = date(2011, 1, 4)


@pytest.fixture
def browser_page(tmp_path):
    """A page of a fresh headless Chromium (its own user-data-dir); fails if Chromium is missing."""
    with chromium_page(tmp_path / "chromium-profile", timeout_ms=10_000) as page:
        yield page


@pytest.fixture
def failed_store(tmp_path):
    """A local store with a good first day and a failed (quarantined) second day with an unknown event type."""
    from recsys import schema
    from recsys.config import Settings
    from recsys.storage import layout
    from recsys.storage.local import LocalStore
    from recsys.validation.partition import ValidationFailed, validate_partition

    store = LocalStore(tmp_path / "store")
    for day, event_type in ((date(2011, 1, 3), "purchase"), (DAY, "click")):
        frame = pd.DataFrame({
            schema.EVENT_ID: [f"{day}-{i}" for i in range(5)],
            schema.EVENT_TIME: pd.Timestamp(f"{day} 10:00:00", tz="UTC"),
            schema.USER_ID: ["17850", "13047", "12583", "17850", "13047"],
            schema.ITEM_ID: ["85123A", "71053", "22633", "84406B", "22632"],
            schema.EVENT_TYPE: ["purchase", "purchase", event_type, "purchase", "purchase"],
            schema.QUANTITY: 1,
            schema.PRICE: 2.5,
        }).astype({c: t for c, t in schema.EVENT_DTYPES.items() if c in schema.REQUIRED_EVENT_COLUMNS})
        store.write_parquet(f"{layout.raw_events(day)}/part-00000.parquet", frame)
        store.mark_success(layout.raw_events(day))
    assert validate_partition(store, Settings(), date(2011, 1, 3)).success
    with pytest.raises(ValidationFailed, match="event types"):
        validate_partition(store, Settings(), DAY)
    return store


def test_failed_partition_data_docs_show_the_failing_expectation_in_chromium(browser_page, failed_store):
    from recsys.storage import layout

    page = browser_page
    ARTIFACTS.mkdir(exist_ok=True)
    summary = failed_store.read_json(f"{layout.validation_report(DAY)}/summary.json")
    index = Path(failed_store.uri(summary["data_docs"]["index"]).removeprefix("file://"))
    assert index.is_file(), index

    # the overview lists both partitions; the failed one names the failing check and links to its page
    overview = Path(failed_store.uri(summary["data_docs"]["overview"]).removeprefix("file://"))
    page.goto(overview.as_uri())
    page.wait_for_load_state("load")
    row = page.locator("tr", has_text="2011-01-04")
    assert "FAILED" in row.inner_text() and "event types" in row.inner_text() and "'click'" in row.inner_text()
    assert "PASSED" in page.locator("tr", has_text="2011-01-03").inner_text()
    # the earlier day's page survived the later day's rebuild
    earlier = failed_store.read_json(f"{layout.validation_report(date(2011, 1, 3))}/summary.json")
    assert failed_store.exists(earlier["data_docs"]["pages"]["raw_events"])
    page.screenshot(path=str(ARTIFACTS / "validation_overview.png"), full_page=True)
    row.get_by_role("link", name="raw_events details").click()
    page.wait_for_load_state("load")
    expected_page = Path(failed_store.uri(summary["data_docs"]["pages"]["raw_events"]).removeprefix("file://"))
    assert Path(page.url.removeprefix("file://")).resolve() == expected_page.resolve()

    # the page says the run failed, and shows the event type rule with the unexpected value
    text = page.inner_text("body")
    assert re.search(r"Status:\s*Failed", text) and re.search(r"Unsuccessful Expectations\s+1\b", text), text[:3000]
    rule = page.locator("tr", has_text="values must belong to this set: view add_to_cart purchase").filter(
        has_text="click"
    ).last
    rule.scroll_into_view_if_needed()
    assert rule.is_visible()
    assert "values must belong to this set" in rule.inner_text()
    page.screenshot(path=str(ARTIFACTS / "validation_failed_partition.png"), full_page=True)
    rule.screenshot(path=str(ARTIFACTS / "validation_failed_expectation.png"))
    assert (ARTIFACTS / "validation_failed_partition.png").stat().st_size > 10_000
