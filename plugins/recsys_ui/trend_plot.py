"""The data-health trend as one inline SVG (server-rendered, no scripts, works offline).

Four panels share one x axis with a slot per partition date (``recsys.validation.health.trend_rows``,
oldest first): the day's events on a log axis inside the accepted volume band (the band is a factor
around the trailing average, so it is symmetric there); the new-user, new-item and top-item shares with
their thresholds (dashed); the duplicate event-id ratio with its limit; the number of failed checks.
Failed days are red, accepted ones amber, and both are links to the day's report; a date with no
partition is a grey column. Hovering anywhere in a date's column shows its numbers (SVG ``<title>``).
Every value from the data is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape
from typing import Any
from urllib.parse import quote

from recsys.validation import health
from recsys_ui.cells import nice_ceiling

WIDTH = 960
LEFT, RIGHT, TOP = 70, 20, 10
PANEL_GAP = 34  # room for a panel's title above it
# (key, title, height) from top to bottom
PANELS = (
    ("events", "Events per day (log scale) and the accepted volume band", 170),
    ("shares", "Shares of the events, with their thresholds (dashed)", 150),
    ("duplicates", "Duplicate event ids (share of rows), with the limit (dashed)", 90),
    ("failed", "Failed checks", 90),
)
DATE_ROOM, LEGEND_ROOM = 70, 44

STATUS_COLOUR = {"PASSED": "#176b2c", "FAILED": "#b00020", "ACCEPTED": "#d98c00", "NOT VALIDATED": "#888",
                 "MISSING": "#bbb"}
BAND_COLOUR, EVENTS_COLOUR = "#cfe8d5", "#1f5fa8"
# (row key of the value, row key of its limit, colour, label)
SHARES = (
    ("new_user_share", "new_user_limit", "#1f5fa8", "new users"),
    ("new_item_share", "new_item_limit", "#7b3fa0", "new items"),
    ("top_item_share", "top_item_limit", "#c25400", "top item"),
)
DUPLICATE_COLOUR = "#555"


def panel_tops() -> dict[str, tuple[float, float]]:
    """Panel key -> (y of its top edge, its height) in SVG units."""
    out, y = {}, TOP
    for key, _title, height in PANELS:
        y += PANEL_GAP
        out[key] = (float(y), float(height))
        y += height
    return out


def height() -> int:
    """The SVG's height: the panels, the rotated date labels and the legend."""
    top, h = panel_tops()[PANELS[-1][0]]
    return int(top + h + DATE_ROOM + LEGEND_ROOM)


def slot_x(i: int, n: int) -> float:
    """The centre x of date ``i`` of ``n`` (each date owns an equal slot of the plot width)."""
    return LEFT + (WIDTH - LEFT - RIGHT) * (i + 0.5) / n


def log_range(rows: list[dict[str, Any]]) -> tuple[int, int]:
    """Powers of ten (low, high) around every positive event count and band end."""
    values = [float(v) for r in rows
              for v in (r.get("events"), *((r.get("volume_min"), r.get("volume_max")) if _has_band(r) else ()))
              if isinstance(v, int | float) and v > 0]
    if not values:
        return 0, 1
    low, high = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    return low, max(high, low + 1)


def _has_band(row: dict[str, Any]) -> bool:
    """The date had history: both ends of its volume band are known (without, only non-empty was checked)."""
    return _num(row.get("volume_min")) is not None and _num(row.get("volume_max")) is not None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _pct(value: Any) -> str:
    number = _num(value)
    return "—" if number is None else f"{number:.1%}"


def point_text(row: dict[str, Any]) -> str:
    """Everything about one date as plain text lines (not escaped): what its hover shows."""
    status = str(row.get("status"))
    lines = [f"{row.get('date')}: {status}" + (" (quarantined)" if row.get("quarantined") else "")]
    if status == "MISSING":
        return "\n".join([*lines, "no partition landed for this date"])
    if row.get("events") is not None:
        band = ""
        if row.get("volume_max") is not None:
            band = f"; accepted band {row.get('volume_min')} .. {row.get('volume_max')}"
        lines.append(f"{row['events']} events{band}")
    found = row.get("margins") or {}
    for margin in (found[k] for k in health.MARGIN_KEYS if k in found):
        if isinstance(margin, dict) and margin.get("text"):
            lines.append(str(margin["text"]))
    if row.get("failed_checks"):
        lines.append(f"{row['failed_checks']} failed: " + ", ".join(str(f) for f in row.get("failed") or []))
    if row.get("problem"):
        lines.append(f"problem: {row['problem']}")
    if row.get("accepted_reason"):
        lines.append(f"accepted by on-call: {row['accepted_reason']}")
    if row.get("report"):
        lines.append("click for the day's report")
    return "\n".join(lines)


def _link(base: str, row: dict[str, Any], inner: str) -> str:
    """``inner`` wrapped in a link to the date's validation page when it has a report."""
    if not row.get("report"):
        return inner
    href = escape(f"{base}/validation/{quote(str(row['date']))}")
    return f'<a href="{href}">{inner}</a>'  # in the same frame, as the page's other links


def _runs(points: list[tuple[int, float | None]]) -> list[list[tuple[int, float]]]:
    """Consecutive known values, split where a value is unknown (a line never bridges a gap)."""
    runs: list[list[tuple[int, float]]] = [[]]
    for i, value in points:
        if value is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((i, value))
    return [r for r in runs if r]


def _polyline(points: list[tuple[float, float]], colour: str, css: str, dashed: bool = False,
              width: float = 1.5) -> str:
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dash = ' stroke-dasharray="5 3"' if dashed else ""
    return (f'<polyline class="{css}" points="{path}" fill="none" stroke="{colour}" stroke-width="{width}"'
            f'{dash} pointer-events="none"/>')


def trend_svg(rows: list[dict[str, Any]], base: str) -> str:
    """The trend of ``rows`` (``trend_rows``, oldest first) as an ``<svg id="trend-plot">``; a short
    paragraph instead when there is no row. Links go to ``{base}/validation/<date>``.
    """
    if not rows:
        return ('<p class="muted" id="trend-plot-empty">No partition has landed or been validated yet: the trend '
                "appears with the first validated partition.</p>")
    n = len(rows)
    tops = panel_tops()
    total_h = height()
    plot_w = WIDTH - LEFT - RIGHT
    slot = plot_w / n
    small = n > 60
    radius = 2.0 if small else 4.0
    xs = [slot_x(i, n) for i in range(n)]

    parts = [
        f'<svg id="trend-plot" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{total_h}" '
        f'viewBox="0 0 {WIDTH} {total_h}" role="img" aria-label="data health per partition date">',
    ]
    for key, _title, h in PANELS:
        top = tops[key][0]
        parts.append(f'<rect class="panel" data-panel="{key}" x="{LEFT}" y="{top:.1f}" width="{plot_w}" '
                     f'height="{h}" fill="#fff" stroke="#999"/>')
        for i, row in enumerate(rows):  # a date without a partition: a grey column in every panel
            if row.get("status") == "MISSING":
                parts.append(f'<rect class="missing" data-date="{escape(str(row["date"]))}" '
                             f'x="{xs[i] - slot / 2:.1f}" y="{top:.1f}" width="{slot:.2f}" height="{h}" '
                             'fill="#e6e6e6" shape-rendering="crispEdges" pointer-events="none"/>')
    for key, title, _h in PANELS:
        parts.append(f'<text x="{LEFT}" y="{tops[key][0] - 8:.1f}" font-size="13" font-weight="bold">'
                     f"{escape(title)}</text>")

    # an invisible column per date across every panel: hovering it shows the date's numbers, a click opens
    # its report (points on top let the pointer through, except the linked failed and accepted ones)
    first_top = tops[PANELS[0][0]][0]
    last_top, last_h = tops[PANELS[-1][0]]
    for i, row in enumerate(rows):
        column = (f'<rect class="day" data-date="{escape(str(row["date"]))}" x="{xs[i] - slot / 2:.1f}" '
                  f'y="{first_top:.1f}" width="{slot:.2f}" height="{last_top + last_h - first_top:.1f}" '
                  f'fill="#000" fill-opacity="0" pointer-events="all"><title>{escape(point_text(row))}</title></rect>')
        parts.append(_link(base, row, column))

    parts += _events_panel(rows, xs, slot, tops["events"], radius, base)
    parts += _shares_panel(rows, xs, tops["shares"])
    parts += _duplicates_panel(rows, xs, tops["duplicates"])
    parts += _failed_panel(rows, xs, slot, tops["failed"], base)

    label_every = max(1, math.ceil(n / 14))
    axis_y = last_top + last_h + 14
    for i, row in enumerate(rows):
        # every label_every-th date, and the last one (dropping a regular label too close before it)
        if (i % label_every == 0 and n - 1 - i >= label_every / 2) or i == n - 1:
            parts.append(f'<text x="{xs[i]:.1f}" y="{axis_y:.1f}" font-size="11" text-anchor="end" '
                         f'transform="rotate(-35 {xs[i]:.1f} {axis_y:.1f})">{escape(str(row["date"]))}</text>')
    parts += _legend(total_h - 14)
    parts.append("</svg>")
    return "\n".join(parts)


def _axis(values: list[float], label: Callable[[float], str], y: Callable[[float], float]) -> list[str]:
    parts = []
    for v in values:
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                     'stroke="#eee"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">{label(v)}</text>')
    return parts


def _events_panel(rows: list[dict[str, Any]], xs: list[float], slot: float, panel: tuple[float, float],
                  radius: float, base: str) -> list[str]:
    top, h = panel
    low, high = log_range(rows)

    def y(v: float) -> float:
        return top + h * (1 - (math.log10(v) - low) / (high - low))

    parts = _axis([10.0**k for k in range(low, high + 1)], lambda v: f"{v:,.0f}", y)
    for i, row in enumerate(rows):  # the band: a step area, one slot wide per date that had history
        vmin, vmax = _num(row.get("volume_min")), _num(row.get("volume_max"))
        if vmin is None or vmax is None or vmin <= 0 or vmax <= vmin:
            continue
        parts.append(f'<rect class="band" data-date="{escape(str(row["date"]))}" x="{xs[i] - slot / 2:.1f}" '
                     f'y="{y(vmax):.1f}" width="{slot:.2f}" height="{y(vmin) - y(vmax):.1f}" fill="{BAND_COLOUR}" '
                     'shape-rendering="crispEdges" pointer-events="none"/>')
    known = [(i, v if (v := _num(r.get("events"))) is not None and v > 0 else None) for i, r in enumerate(rows)]
    for run in _runs(known):
        if len(run) > 1:
            parts.append(_polyline([(xs[i], y(v)) for i, v in run], EVENTS_COLOUR, "events-line"))
    for i, row in enumerate(rows):
        events = _num(row.get("events"))
        if events is None:
            continue
        status = str(row.get("status"))
        marked = status in ("FAILED", "ACCEPTED")
        # an empty partition sits on the panel's floor (a log axis has no 0)
        cy = y(events) if events > 0 else top + h
        common = (f'class="events {escape(status.replace(" ", "-"))}" data-date="{escape(str(row["date"]))}" '
                  f'cx="{xs[i]:.1f}" cy="{cy:.1f}"')
        if marked:
            dot = (f'<circle {common} r="{radius * 1.6:.1f}" fill="{STATUS_COLOUR[status]}" stroke="#fff" '
                   f'stroke-width="0.5"><title>{escape(point_text(row))}</title></circle>')
            parts.append(_link(base, row, dot))
        else:
            parts.append(f'<circle {common} r="{radius:.1f}" fill="{EVENTS_COLOUR}" pointer-events="none"/>')
    parts.append(f'<text x="14" y="{top + h / 2:.1f}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 14 {top + h / 2:.1f})">events</text>')
    return parts


def _limit_and_value(rows: list[dict[str, Any]], xs: list[float], y: Callable[[float], float], value_key: str,
                     limit_key: str, colour: str, css: str) -> list[str]:
    parts = []
    for run in _runs([(i, _num(r.get(limit_key))) for i, r in enumerate(rows)]):
        points = [(xs[i], y(v)) for i, v in run]
        if len(points) == 1:  # one day: a short dash across its slot
            x0, y0 = points[0]
            points = [(x0 - 6, y0), (x0 + 6, y0)]
        parts.append(_polyline(points, colour, f"limit {css}", dashed=True, width=1.2))
    for run in _runs([(i, _num(r.get(value_key))) for i, r in enumerate(rows)]):
        if len(run) > 1:
            parts.append(_polyline([(xs[i], y(v)) for i, v in run], colour, f"value {css}"))
        elif run:
            i, v = run[0]
            parts.append(f'<circle class="value {css}" cx="{xs[i]:.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}" '
                         'pointer-events="none"/>')
    return parts


def _shares_panel(rows: list[dict[str, Any]], xs: list[float], panel: tuple[float, float]) -> list[str]:
    top, h = panel

    def y(v: float) -> float:
        return top + h * (1 - min(max(v, 0.0), 1.0))

    parts = _axis([0.0, 0.25, 0.5, 0.75, 1.0], lambda v: f"{v:.0%}", y)
    for value_key, limit_key, colour, _label in SHARES:
        parts += _limit_and_value(rows, xs, y, value_key, limit_key, colour, value_key.removesuffix("_share"))
    return parts


def _duplicates_panel(rows: list[dict[str, Any]], xs: list[float], panel: tuple[float, float]) -> list[str]:
    top, h = panel
    seen = [v for r in rows for k in ("duplicate_ratio", "duplicate_limit") if (v := _num(r.get(k))) is not None]
    y_max = nice_ceiling(max([*seen, 0.005]) * 1.2)

    def y(v: float) -> float:
        return top + h * (1 - min(max(v, 0.0), y_max) / y_max)

    parts = _axis([0.0, y_max / 2, y_max], lambda v: f"{v:.2%}", y)
    return parts + _limit_and_value(rows, xs, y, "duplicate_ratio", "duplicate_limit", DUPLICATE_COLOUR,
                                    "duplicates")


def _failed_panel(rows: list[dict[str, Any]], xs: list[float], slot: float, panel: tuple[float, float],
                  base: str) -> list[str]:
    top, h = panel
    counts = [int(c) for r in rows if (c := _num(r.get("failed_checks"))) is not None]
    y_max = max(1.0, nice_ceiling(max(counts))) if counts and max(counts) > 0 else 1.0

    def y(v: float) -> float:
        return top + h * (1 - v / y_max)

    parts = _axis([0.0, y_max / 2, y_max] if y_max >= 2 else [0.0, y_max], lambda v: f"{v:g}", y)
    bar_w = max(2.0, min(slot * 0.7, 24.0))
    for i, row in enumerate(rows):
        count = _num(row.get("failed_checks"))
        status = str(row.get("status"))
        if not count and status not in ("FAILED", "ACCEPTED"):
            continue
        # a failed day with no failed check counted (e.g. an unreadable partition) still gets a visible bar
        height_px = max(y(0) - y(count or 0), 3.0)
        rect = (f'<rect class="failed-bar {escape(status.replace(" ", "-"))}" data-date="{escape(str(row["date"]))}" '
                f'x="{xs[i] - bar_w / 2:.1f}" y="{top + h - height_px:.1f}" width="{bar_w:.1f}" '
                f'height="{height_px:.1f}" fill="{STATUS_COLOUR.get(status, "#888")}">'
                f"<title>{escape(point_text(row))}</title></rect>")
        parts.append(_link(base, row, rect))
    return parts


def _legend(y: float) -> list[str]:
    parts, x = [], float(LEFT)
    items: list[tuple[str, str]] = [
        (f'<rect x="{{x}}" y="{y - 10}" width="14" height="10" fill="{BAND_COLOUR}"/>', "volume band"),
        (f'<circle cx="{{cx}}" cy="{y - 5}" r="4" fill="{EVENTS_COLOUR}"/>', "events"),
        (f'<circle cx="{{cx}}" cy="{y - 5}" r="5" fill="{STATUS_COLOUR["FAILED"]}"/>', "failed (link)"),
        (f'<circle cx="{{cx}}" cy="{y - 5}" r="5" fill="{STATUS_COLOUR["ACCEPTED"]}"/>', "accepted (link)"),
        (f'<rect x="{{x}}" y="{y - 10}" width="14" height="10" fill="#e6e6e6"/>', "no partition"),
        *[(f'<line x1="{{x}}" x2="{{x2}}" y1="{y - 5}" y2="{y - 5}" stroke="{c}" stroke-width="2"/>', label)
          for _v, _l, c, label in SHARES],
        (f'<line x1="{{x}}" x2="{{x2}}" y1="{y - 5}" y2="{y - 5}" stroke="#555" stroke-width="1.2" '
         'stroke-dasharray="5 3"/>', "threshold"),
    ]
    for shape, label in items:
        parts.append(shape.format(x=f"{x:.0f}", cx=f"{x + 7:.0f}", x2=f"{x + 14:.0f}"))
        parts.append(f'<text x="{x + 18:.0f}" y="{y}" font-size="12">{escape(label)}</text>')
        x += 26 + 7 * len(label)
    return parts


def _margin_cell(margin: dict[str, Any]) -> str:
    value = _num(margin.get("margin"))
    if not margin.get("checked") or value is None:
        return '<span class="muted">not checked</span>'
    if str(margin.get("unit", "")).startswith("x"):
        amount = f"{abs(value):.2f}x"
    else:
        amount = f"{abs(value):.1%}"
    verdict = "inside" if value >= 0 else "beyond"
    css = "FAILED" if value < 0 else ""
    return f'<span class="{css}">{amount} {verdict}</span>'


def trend_section(rows: list[dict[str, Any]], base: str) -> str:
    """The Validation view's trend section: the plot, the export links and the newest validated day's
    margins to each threshold (``rows`` as in :func:`trend_svg`)."""
    counts = {status: sum(1 for r in rows if r.get("status") == status) for status in STATUS_COLOUR}
    summary = ", ".join(f"{n} {status.lower()}" for status, n in counts.items() if n)
    parts = [
        '<section id="trend">',
        "<h2>Data health over time</h2>",
        '<p class="muted">One column per partition date'
        + (f" ({escape(str(rows[0]['date']))} .. {escape(str(rows[-1]['date']))}: {escape(summary)})" if rows else "")
        + ". The band is the event count the volume check accepted that day (a factor around the average of the "
        "trailing accepted partitions); dashed lines are each check's threshold. Red days failed and were "
        "quarantined, amber ones failed and were accepted by on-call; click one for its report. Hover a date "
        f'for its numbers. Export: <a href="{escape(base)}/api/validation/trend">JSON</a> | '
        f'<a href="{escape(base)}/api/validation/trend?format=csv">CSV</a>.</p>',
        trend_svg(rows, base),
    ]
    newest = next((r for r in reversed(rows) if r.get("margins")), None)
    if newest is not None:
        day = escape(str(newest["date"]))
        lines = []
        found = newest.get("margins") or {}
        for key in (*health.MARGIN_KEYS, *sorted(set(found) - set(health.MARGIN_KEYS))):
            margin = found.get(key)
            if not isinstance(margin, dict):
                continue
            lines.append(f"<tr><td>{escape(str(margin.get('check', '')))}</td><td>{escape(str(margin.get('text', '')))}"
                         f"</td><td>{_margin_cell(margin)}</td></tr>")
        parts.append(f'<h3 id="margins">Margins to the thresholds on {day} (the newest validated partition)</h3>')
        parts.append('<table id="margins-table"><thead><tr><th>check</th><th>that day</th><th>margin to the limit'
                     "</th></tr></thead><tbody>" + "".join(lines) + "</tbody></table>")
    parts.append("</section>")
    return "\n".join(parts)
