"""The registry page's inline SVG plot of the deciding metric per partition date (no scripts, works offline).

Rows are ``recsys.report.decision_rows`` (oldest first) and ``recsys.report.retrain_rows``; every value from
the store is escaped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Any

from recsys import report
from recsys_ui.cells import fmt, nice_ceiling

DEPLOY_COLOUR = "#176b2c"
REJECT_COLOUR = "#b00020"
SERVING_COLOUR = "#1f5fa8"
Y_TICKS = 5  # horizontal grid lines, 0 to the top
MAX_DATE_LABELS = 12  # more dates than this: label every n-th


def serving_value(row: dict[str, Any]) -> float | None:
    """The key metric of the model that served after a decision: the candidate if blessed, else the champion."""
    return row["candidate"] if row["blessed"] else row["champion"]


@dataclass(frozen=True)
class _Frame:
    """The plot area in pixels (margins ``left`` and ``top``, size ``plot_w`` x ``plot_h``) and its scales:
    ``slots`` dates evenly on x (one in the middle), 0..``y_max`` on y."""

    width: int
    height: int
    left: int
    top: int
    plot_w: int
    plot_h: int
    y_max: float
    slots: int

    def x(self, i: int) -> float:
        return self.left + (self.plot_w / 2 if self.slots == 1 else self.plot_w * i / (self.slots - 1))

    def y(self, v: float) -> float:
        return self.top + self.plot_h * (1 - v / self.y_max)


def _frame(rows: list[dict[str, Any]], slots: int, width: int, height: int, retrain_legend: bool) -> _Frame:
    """The frame for ``rows`` (their candidate and champion values) on ``slots`` dates; the legend of the full
    retrains takes one more line at the bottom."""
    left, right, top, bottom = 60, 20, 20, 70 + (18 if retrain_legend else 0)
    values = [v for r in rows for v in (r["candidate"], r["champion"]) if v is not None]
    y_max = nice_ceiling(max(max(values), 1e-6) * 1.1)
    return _Frame(width, height, left, top, width - left - right, height - top - bottom, y_max, slots)


def _open_svg(f: _Frame, metric: str) -> list[str]:
    return [
        f'<svg id="metric-plot" xmlns="http://www.w3.org/2000/svg" width="{f.width}" height="{f.height}" '
        f'viewBox="0 0 {f.width} {f.height}" role="img" aria-label="{escape(metric)} per partition date">',
        f'<rect x="{f.left}" y="{f.top}" width="{f.plot_w}" height="{f.plot_h}" fill="#fff" stroke="#999"/>',
    ]


def _axes(f: _Frame, dates: list[str], metric: str) -> list[str]:
    """Grid lines with their values, the date labels (rotated) and the metric's name."""
    parts = []
    for k in range(Y_TICKS):
        v = f.y_max * k / (Y_TICKS - 1)
        y = f.y(v)
        parts.append(f'<line x1="{f.left}" x2="{f.left + f.plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{f.left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{v:.3g}</text>')
    label_every = max(1, math.ceil(f.slots / MAX_DATE_LABELS))
    below = f.top + f.plot_h + 14
    for i, day in enumerate(dates):
        if i % label_every == 0 or i == f.slots - 1:
            parts.append(
                f'<text x="{f.x(i):.1f}" y="{below}" font-size="11" text-anchor="end" '
                f'transform="rotate(-35 {f.x(i):.1f} {below})">{escape(day)}</text>'
            )
    middle = f.top + f.plot_h / 2
    parts.append(
        f'<text x="14" y="{middle:.1f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {middle:.1f})">{escape(metric)}</text>'
    )
    return parts


def _serving_line(f: _Frame, points: list[dict[str, Any]], slot: dict[str, int]) -> list[str]:
    """The model serving after each decision: a line (two or more points) and a dot per decision."""
    serving = [(f.x(slot[r["date"]]), f.y(value)) for r in points if (value := serving_value(r)) is not None]
    parts = []
    if len(serving) > 1:
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in serving)
        parts.append(f'<polyline class="serving" points="{path}" fill="none" stroke="{SERVING_COLOUR}" '
                     'stroke-width="2"/>')
    for px, py in serving:
        parts.append(f'<circle class="serving" cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{SERVING_COLOUR}"/>')
    return parts


def _champion_text(r: dict[str, Any]) -> str:
    return f"champion v{r['champion_version']} {fmt(r['champion'])}" if r["champion"] is not None else "no champion"


def _colour(blessed: bool) -> str:
    return DEPLOY_COLOUR if blessed else REJECT_COLOUR


def _candidate(f: _Frame, r: dict[str, Any], i: int) -> str:
    """A daily candidate at slot ``i``: a dot coloured by the decision, its numbers as the tooltip."""
    verdict = report.verdict(r["blessed"])
    tip = f"{r['date']}: candidate v{r['candidate_version']} {fmt(r['candidate'])} vs {_champion_text(r)}: {verdict}"
    return (
        f'<circle class="candidate {verdict}" data-date="{escape(r["date"])}" cx="{f.x(i):.1f}" '
        f'cy="{f.y(r["candidate"]):.1f}" r="5.5" fill="{_colour(r["blessed"])}" stroke="#fff">'
        f"<title>{escape(tip)}</title></circle>"
    )


def _retrain(f: _Frame, r: dict[str, Any], i: int) -> str:
    """A judged full retrain at slot ``i`` (its end date): a diamond coloured by the decision."""
    verdict = report.verdict(r["blessed"])
    px, py = f.x(i), f.y(r["candidate"])
    window = f", {r['window_days']} days" if r.get("window_days") else ""
    tip = (f"full retrain v{r['version']} ending {r['date']}{window}: {fmt(r['candidate'])} vs {_champion_text(r)}: "
           f"{verdict}")
    return (
        f'<polygon class="retrain {verdict}" data-version="{r["version"]}" data-date="{escape(r["date"])}" '
        f'points="{px:.1f},{py - 7:.1f} {px + 7:.1f},{py:.1f} {px:.1f},{py + 7:.1f} {px - 7:.1f},{py:.1f}" '
        f'fill="{_colour(r["blessed"])}" stroke="#222"><title>{escape(tip)}</title></polygon>'
    )


def _legend(f: _Frame, retrains: bool) -> list[str]:
    """The legend under the axis: the retrain diamonds (when there are any), the candidates and the line."""
    left, legend_y = f.left, f.height - 12
    parts = []
    if retrains:
        ry = legend_y - 18
        parts += [
            f'<polygon points="{left + 6},{ry - 10} {left + 12},{ry - 4} {left + 6},{ry + 2} {left},{ry - 4}" '
            f'fill="{DEPLOY_COLOUR}" stroke="#222"/>',
            f'<polygon points="{left + 22},{ry - 10} {left + 28},{ry - 4} {left + 22},{ry + 2} {left + 16},{ry - 4}" '
            f'fill="{REJECT_COLOUR}" stroke="#222"/>',
            f'<text x="{left + 36}" y="{ry}" font-size="12">full retrain blessed / rejected (its end date\'s '
            "held-out users)</text>",
        ]
    return [
        *parts,
        f'<circle cx="{left + 6}" cy="{legend_y - 4}" r="5" fill="{DEPLOY_COLOUR}"/>',
        f'<text x="{left + 16}" y="{legend_y}" font-size="12">candidate deployed</text>',
        f'<circle cx="{left + 156}" cy="{legend_y - 4}" r="5" fill="{REJECT_COLOUR}"/>',
        f'<text x="{left + 166}" y="{legend_y}" font-size="12">candidate rejected</text>',
        f'<line x1="{left + 300}" x2="{left + 324}" y1="{legend_y - 4}" y2="{legend_y - 4}" '
        f'stroke="{SERVING_COLOUR}" stroke-width="2"/>',
        f'<text x="{left + 330}" y="{legend_y}" font-size="12">model serving after the decision '
        "(each day's held-out users)</text>",
    ]


def metric_plot_svg(
    rows: list[dict[str, Any]], metric: str, width: int = 760, height: int = 300,
    retrains: list[dict[str, Any]] | None = None,
) -> str:
    """An inline SVG of ``metric`` per decided date: each candidate (green deployed, red rejected) and a line
    of the model serving after the decision. ``rows`` are ``recsys.report.decision_rows``, oldest first.

    ``retrains`` (``recsys.report.retrain_rows``) add each judged full retrain as a diamond at its end date
    (green blessed, red rejected), on the same axis: it was scored on that day's held-out users too. The
    x axis has one slot per date that has a daily decision or a full retrain.
    """
    points = [r for r in rows if r["candidate"] is not None or r["champion"] is not None]
    retrain_points = [r for r in retrains or [] if r["candidate"] is not None and r["date"]]
    if not points and not retrain_points:
        return '<p class="muted" id="metric-plot-empty">No evaluated candidate yet: the plot appears after the ' \
               "first evaluation.</p>"
    dates = sorted({r["date"] for r in points} | {r["date"] for r in retrain_points})
    slot = {day: i for i, day in enumerate(dates)}
    f = _frame(points + retrain_points, len(dates), width, height, bool(retrain_points))
    return "\n".join([
        *_open_svg(f, metric),
        *_axes(f, dates, metric),
        *_serving_line(f, points, slot),
        *(_candidate(f, r, slot[r["date"]]) for r in points if r["candidate"] is not None),
        *(_retrain(f, r, slot[r["date"]]) for r in retrain_points),
        *_legend(f, bool(retrain_points)),
        "</svg>",
    ])
