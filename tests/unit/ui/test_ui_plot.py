"""plugins/recsys_ui/plot.py: the metric plot, by hand-computed coordinates."""

from __future__ import annotations

import re

import pytest
from recsys_ui import cells, plot

from recsys import report

METRIC = "recall@100"


@pytest.mark.parametrize(("value", "ceiling"), [(0.11, 0.2), (0.3, 0.5), (0.05, 0.05), (0.51, 1.0), (7, 10),
                                                (0.22, 0.25)])
def test_nice_ceiling(value, ceiling):
    assert cells.nice_ceiling(value) == pytest.approx(ceiling)  # the metric plot's and the trend's axis top


def test_plot_places_candidates_and_the_serving_line_by_hand_computed_coordinates(registry_doc):
    rows = report.decision_rows(registry_doc, METRIC)[:2]  # 0.1 deployed (no champion), 0.05 rejected (champion 0.1)
    svg = plot.metric_plot_svg(rows, METRIC)  # 760 x 300: plot x 60..740, y 20..230; y max 0.2 (0.1 x 1.1)
    assert svg.startswith('<svg id="metric-plot"') and svg.endswith("</svg>")
    circles = re.findall(r'<circle class="candidate (\w+)" data-date="([\d-]+)" cx="([\d.]+)" cy="([\d.]+)"', svg)
    assert circles == [("DEPLOY", "2010-12-01", "60.0", "125.0"), ("REJECT", "2010-12-02", "740.0", "177.5")]
    # after the rejection the champion (0.1) still serves
    assert 'points="60.0,125.0 740.0,125.0"' in svg
    assert "2010-12-02: candidate v2 0.0500 vs champion v1 0.1000: REJECT" in svg
    assert ">0.2</text>" in svg and ">0.1</text>" in svg  # y axis ticks


def test_full_retrains_are_diamonds_on_the_union_of_dates_by_hand_computed_coordinates(registry_doc):
    # 12-01: candidate 0.1 (no champion); a rejected retrain ending 12-05 at 0.2 (no daily decision that day)
    retrain = {"version": 9, "date": "2010-12-05", "window_days": 90, "candidate": 0.2, "champion_version": 1,
               "champion": 0.1, "blessed": False}
    svg = plot.metric_plot_svg(report.decision_rows(registry_doc, METRIC)[:1], METRIC, retrains=[retrain])
    # two date slots at x 60 and 740; the retrain legend row makes the bottom margin 88: plot y 20..212
    # (height 192); y max = ceiling(0.2 x 1.1 = 0.22) = 0.25; y(0.1) = 20 + 192 x 0.6, y(0.2) = 20 + 192 x 0.2
    assert re.findall(r'class="candidate (\w+)" data-date="([\d-]+)" cx="([\d.]+)" cy="([\d.]+)"', svg) == [
        ("DEPLOY", "2010-12-01", "60.0", "135.2")]
    assert '<polygon class="retrain REJECT" data-version="9" data-date="2010-12-05" ' \
           'points="740.0,51.4 747.0,58.4 740.0,65.4 733.0,58.4"' in svg
    assert "full retrain v9 ending 2010-12-05, 90 days: 0.2000 vs champion v1 0.1000: REJECT" in svg
    assert ">2010-12-05</text>" in svg and "full retrain blessed / rejected" in svg
    # only full retrains: still a plot
    assert 'class="retrain REJECT"' in plot.metric_plot_svg([], METRIC, retrains=[retrain])


def test_plot_of_no_decision_says_so():
    assert 'id="metric-plot-empty"' in plot.metric_plot_svg([], METRIC)


def test_one_decision_is_plotted_in_the_middle(registry_doc):
    svg = plot.metric_plot_svg(report.decision_rows(registry_doc, METRIC)[:1], METRIC)
    assert re.search(r'class="candidate DEPLOY" data-date="2010-12-01" cx="400.0"', svg)
