"""plugins/recsys_ui/trend_plot.py: the data-health SVG's coordinates, a year of dates, an empty store, escaping.

The SVG is parsed as XML (so markup from the data that escaped would break the parse or add elements);
coordinates are worked out by hand from the layout constants: plot x from 70 to 940 (870 wide), panels
events y 44..214, shares 248..398, duplicates 432..522, failed checks 556..646.
"""

from __future__ import annotations

import itertools
import math
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from typing import Any

import pytest
from recsys_ui import trend_plot

from recsys.validation import health

SVG = "{http://www.w3.org/2000/svg}"
BASE = "/recsys"


def _row(day: str, status: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(health.CSV_COLUMNS)
    row |= {"date": day, "status": status, "failed": [], "margins": {}, "quarantined": False}
    if status != health.MISSING:
        row["report"] = f"reports/validation/dt={day}/summary.json"
    return row | values


# 2011-01-03 passed (first day: no band yet), 2011-01-04 missing, 2011-01-05 failed with 2 checks
ROWS = [
    _row("2011-01-03", "PASSED", events=100, volume_min=1, top_item_share=0.05, top_item_limit=0.2,
         duplicate_ratio=0.0, duplicate_limit=0.01, failed_checks=0),
    _row("2011-01-04", "MISSING"),
    _row("2011-01-05", "FAILED", events=1000, volume_min=200, volume_max=5000, top_item_share=0.1,
         top_item_limit=0.2, new_user_share=0.5, new_user_limit=0.95, duplicate_ratio=0.0, duplicate_limit=0.01,
         failed_checks=2, failed=["volume within the trailing average", "share of new items"], quarantined=True),
]


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def _all(root: ET.Element, tag: str, css: str | None = None) -> list[ET.Element]:
    found = root.iter(f"{SVG}{tag}")
    return [e for e in found if css is None or css in (e.get("class") or "").split()]


def _f(element: ET.Element, name: str) -> float:
    return float(element.get(name, "nan"))


def test_coordinates_of_a_small_literal_case():
    root = _parse(trend_plot.trend_svg(ROWS, BASE))
    # three slots of 870 / 3 = 290 wide, centres at 70 + 145, + 435, + 725
    assert [trend_plot.slot_x(i, 3) for i in range(3)] == [215.0, 505.0, 795.0]
    days = _all(root, "rect", "day")
    assert [(_f(d, "x"), _f(d, "width")) for d in days] == [(70.0, 290.0), (360.0, 290.0), (650.0, 290.0)]
    assert {(_f(d, "y"), _f(d, "height")) for d in days} == {(44.0, 602.0)}  # from the first panel to the last
    # events on a log axis from 10^2 to 10^4 (100 .. the band's 5000): 100 at the floor y 214, 1000 half way
    dots = {d.get("data-date"): d for d in _all(root, "circle", "events")}
    assert (_f(dots["2011-01-03"], "cx"), _f(dots["2011-01-03"], "cy")) == (215.0, 214.0)
    assert (_f(dots["2011-01-05"], "cx"), _f(dots["2011-01-05"], "cy")) == (795.0, 129.0)
    # the band of 2011-01-05 only (the first day had no history): 5000 at 44 + 170 * (1 - log10(50) / 2)
    (band,) = _all(root, "rect", "band")
    assert band.get("data-date") == "2011-01-05"
    assert _f(band, "x") == 650.0
    assert _f(band, "y") == pytest.approx(44 + 170 * (1 - math.log10(50) / 2), abs=0.05)
    assert _f(band, "y") + _f(band, "height") == pytest.approx(44 + 170 * (1 - math.log10(2) / 2), abs=0.1)
    # the top item's share 5% and 10% on the 0..100% shares panel (y 248 + 150 * (1 - share)), limit 20% at 368
    # (each a single day between gaps: a dot, and a short dash of the limit across its centre)
    limits = [e.get("points") for e in _all(root, "polyline", "top_item")]
    assert limits == ["209.0,368.0 221.0,368.0", "789.0,368.0 801.0,368.0"]
    top_values = _all(root, "circle", "top_item")
    assert [(_f(c, "cx"), _f(c, "cy")) for c in top_values] == [(215.0, 390.5), (795.0, 383.0)]
    # failed checks: 2 of an axis up to 2, the whole panel 556 .. 646; a bar 24 wide around x 795
    (bar,) = _all(root, "rect", "failed-bar")
    assert (_f(bar, "x"), _f(bar, "y"), _f(bar, "width"), _f(bar, "height")) == (783.0, 556.0, 24.0, 90.0)
    # the missing date is grey in each of the four panels
    assert [(_f(r, "x"), _f(r, "y")) for r in _all(root, "rect", "missing")] == \
        [(360.0, 44.0), (360.0, 248.0), (360.0, 432.0), (360.0, 556.0)]


def test_failed_and_accepted_days_link_to_their_report_and_hover_shows_numbers():
    rows = [*ROWS, _row("2011-01-06", "ACCEPTED", events=900, volume_min=200, volume_max=5000, failed_checks=1,
                        accepted_reason="a promotion")]
    root = _parse(trend_plot.trend_svg(rows, BASE))
    links = {a.get("href") for a in root.iter(f"{SVG}a")}
    assert f"{BASE}/validation/2011-01-05" in links and f"{BASE}/validation/2011-01-06" in links
    assert f"{BASE}/validation/2011-01-04" not in links  # nothing to open for a missing date
    for a in root.iter(f"{SVG}a"):
        if a.get("href") == f"{BASE}/validation/2011-01-05":
            assert a[0].get("class") in ("day", "events FAILED", "failed-bar FAILED")
    failed_dot = next(c for c in _all(root, "circle", "FAILED"))
    title = failed_dot.find(f"{SVG}title")
    assert title is not None and title.text is not None
    assert title.text.splitlines()[0] == "2011-01-05: FAILED (quarantined)"
    assert "1000 events; accepted band 200 .. 5000" in title.text
    assert "2 failed: volume within the trailing average, share of new items" in title.text
    accepted = next(c for c in _all(root, "circle", "ACCEPTED"))
    assert accepted.get("fill") == trend_plot.STATUS_COLOUR["ACCEPTED"]
    assert "accepted by on-call: a promotion" in (accepted.findtext(f"{SVG}title") or "")


def test_a_year_of_dates_stays_readable():
    start = date(2011, 1, 1)
    rows = [
        _row((start + timedelta(days=i)).isoformat(), "FAILED" if i % 50 == 7 else "PASSED",
             events=1000 + 10 * (i % 30), volume_min=200, volume_max=5000, new_user_share=0.3, new_user_limit=0.95,
             duplicate_ratio=0.0, duplicate_limit=0.0, failed_checks=1 if i % 50 == 7 else 0)
        for i in range(365)
    ]
    svg = trend_plot.trend_svg(rows, BASE)
    root = _parse(svg)
    assert root.get("width") == str(trend_plot.WIDTH)
    days = _all(root, "rect", "day")
    assert len(days) == 365
    assert all(70 <= _f(d, "x") and _f(d, "x") + _f(d, "width") <= 940.01 for d in days)
    labels = [t for t in root.iter(f"{SVG}text") if (t.text or "").startswith("20") and t.get("transform")]
    assert 10 <= len(labels) <= 15  # every 27th date and the last (not one just before it)
    xs = sorted(_f(t, "x") for t in labels)
    assert min(b - a for a, b in itertools.pairwise(xs)) >= 40  # labels do not overlap
    dots = _all(root, "circle", "events")
    assert len(dots) == 365 and all(_f(c, "r") <= 3.5 for c in dots)
    assert len(_all(root, "rect", "failed-bar")) == 8
    assert len(svg) < 1_000_000


def test_an_empty_store_says_so():
    html = trend_plot.trend_svg([], BASE)
    assert 'id="trend-plot-empty"' in html and "<svg" not in html


def test_markup_in_an_item_id_or_reason_is_escaped():
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    margins = {"top_item": health.share_margin(health.TOP_ITEM_CHECK, f"top item {evil}", 0.3, 0.2, False,
                                               item_id=evil)}
    rows = [_row("2011-01-05", "ACCEPTED", events=100, top_item=evil, top_item_share=0.3, top_item_limit=0.2,
                 failed_checks=1, failed=[evil], accepted_reason=f"reason {evil}", problem=f"problem {evil}",
                 margins=margins)]
    svg = trend_plot.trend_svg(rows, BASE)
    assert "<script" not in svg and "<img" not in svg
    root = _parse(svg)
    assert not list(root.iter(f"{SVG}script")) and not list(root.iter("script"))
    title = _all(root, "rect", "day")[0].findtext(f"{SVG}title") or ""
    assert f"top item {evil} 30.0%, limit 20.0%" in title  # the text is intact once unescaped
    assert f"accepted by on-call: reason {evil}" in title
    assert f"problem: problem {evil}" in title


def test_the_section_has_the_plot_the_exports_and_the_newest_margins_escaped():
    evil = "<script>alert(1)</script>"
    margins = {"top_item": health.share_margin(health.TOP_ITEM_CHECK, f"top item {evil}", 0.3, 0.2, False,
                                               item_id=evil),
               "volume": health.volume_margin(310, (200, 5001), 1000.0, 7, True)}
    rows = [*ROWS, _row("2011-01-06", "ACCEPTED", events=310, margins=margins)]
    html = trend_plot.trend_section(rows, BASE)
    assert "<script" not in html
    assert f'href="{BASE}/api/validation/trend?format=csv"' in html and f'href="{BASE}/api/validation/trend"' in html
    assert "Margins to the thresholds on 2011-01-06" in html
    assert "volume 0.31x of the trailing average (1000 events over 7 accepted days), limit 0.20x" in html
    assert "0.11x inside" in html and "10.0% beyond" in html
    assert "2 passed" not in html and "1 passed, 1 failed, 1 accepted, 1 missing" in html
    assert 'id="trend-plot-empty"' in trend_plot.trend_section([], BASE)


def test_margins_are_listed_volume_first_whatever_order_they_were_stored_in():
    margins = {"top_item": health.share_margin(health.TOP_ITEM_CHECK, "top item 1", 0.1, 0.2),
               "duplicates": health.share_margin(health.DUPLICATE_CHECK, "duplicate event ids", 0.0, 0.5),
               "volume": health.volume_margin(310, (200, 5001), 1000.0, 7)}
    row = _row("2011-01-06", "PASSED", events=310, margins=margins)
    lines = trend_plot.point_text(row).splitlines()
    assert [line.split(" ")[0] for line in lines[2:5]] == ["volume", "top", "duplicate"]
    html = trend_plot.trend_section([row], BASE)
    assert html.index("volume within") < html.index("top item share") < html.index("duplicate event ids</td>")
