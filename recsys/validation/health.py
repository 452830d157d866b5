"""Data health over time: one row per partition date, from what validation already wrote.

Sources: ``reports/validation/dt=D/summary.json`` (every check with what it observed and the limits it
applied that day), ``quarantine/events/dt=D/reason.json`` and the registry's ``accepted_invalid`` history
entries. Nothing is recomputed from the raw data, so a year of dates costs one small read per date.

:func:`margins` says how close a day came to each threshold (the volume band around the trailing
average, the new-user, new-item and top-item shares, the duplicate ratio); validation stores its result
in ``summary.json`` under ``margins``, and :func:`trend_rows` falls back to computing it from the checks
of summaries written before that.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import date
from typing import Any

from recsys.storage import PartitionStore, StorageError, layout

PASSED, FAILED, ACCEPTED = "PASSED", "FAILED", "ACCEPTED"
MISSING = "MISSING"  # a date inside the range with no partition landed and no report
NOT_VALIDATED = "NOT VALIDATED"  # landed, no (readable) report yet
STATUSES = (PASSED, FAILED, ACCEPTED, MISSING, NOT_VALIDATED)
# the longest run of MISSING dates listed between two known ones (a partition far from the data: no flood)
MAX_MISSING_RUN = 31

# the ``check`` names (``meta.check`` in expectations/raw_events.json) of the checks with a threshold
VOLUME_CHECK = "volume within the trailing average"
NEW_USER_CHECK = "share of new users"
NEW_ITEM_CHECK = "share of new items"
TOP_ITEM_CHECK = "top item share"
DUPLICATE_CHECK = "duplicate event ids"
# margins key -> (check, label in the text)
SHARE_MARGINS = {
    "new_users": (NEW_USER_CHECK, "new users"),
    "new_items": (NEW_ITEM_CHECK, "new items"),
    "top_item": (TOP_ITEM_CHECK, "top item"),
}
MARGIN_KEYS = ("volume", "new_users", "new_items", "top_item", "duplicates")

# the flat columns of the CSV export, in order (the JSON rows have these plus ``failed`` and ``margins``)
CSV_COLUMNS = (
    "date", "status", "events", "volume_min", "volume_max", "volume_average", "volume_days", "volume_ratio",
    "volume_low_limit", "volume_high_limit", "volume_margin",
    "new_user_share", "new_user_limit", "new_user_margin", "new_item_share", "new_item_limit", "new_item_margin",
    "top_item", "top_item_share", "top_item_limit", "top_item_margin",
    "duplicate_ratio", "duplicate_limit", "duplicate_margin",
    "failed_checks", "failed_names", "problem", "accepted_reason", "quarantined", "validated_at", "report",
)
# margins key -> the prefix of its flat columns
_PREFIX = {"volume": "volume", "new_users": "new_user", "new_items": "new_item", "top_item": "top_item",
           "duplicates": "duplicate"}
# the notes validation wrote before ``margins`` were stored (their numbers are the fallback)
_VOLUME_NOTE = re.compile(r"the last (\d+) accepted partitions .*averaged (\d+) rows")
_TOP_NOTE = re.compile(r"^item (.*) has \d+(?:\.\d+)?% of the events", re.DOTALL)


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, not a number, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _find(checks: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((c for c in checks if c.get("check") == name), None)


def volume_margin(events: float | None, band: tuple[float | None, float | None], average: float | None,
                  days: int | None, passed: bool | None = None) -> dict[str, Any]:
    """How close ``events`` came to the volume band ``(min, max)`` around the trailing ``average``.

    ``value`` is events / average (``x`` of the trailing average), ``limit`` the nearer end of the band in
    the same unit (geometrically nearer: the band is ``[average / f, average * f]``) and ``margin`` the
    distance to it, negative when outside. Without history (no average or no upper end) nothing is compared.
    """
    low, high = band
    out: dict[str, Any] = {"check": VOLUME_CHECK, "unit": "x of the trailing average", "events": events,
                           "average": average, "days": days, "band": [low, high], "passed": passed}
    if events is None or not average or low is None or high is None:
        reason = f"{events:.0f} events; " if events is not None else ""
        return out | {"checked": False, "value": None, "limit": None, "low_limit": None, "high_limit": None,
                      "margin": None, "side": None,
                      "text": f"volume: {reason}no accepted history yet, only non-empty is checked"}
    ratio, low_limit, high_limit = events / average, low / average, high / average
    # the band is multiplicative, so which end is nearer is decided in log space (0 events: the lower one)
    upper = ratio > 0 and math.log(ratio / low_limit) > math.log(high_limit / ratio)
    limit, margin = (high_limit, high_limit - ratio) if upper else (low_limit, ratio - low_limit)
    text = (f"volume {ratio:.2f}x of the trailing average ({average:.0f} events over {days} accepted days), "
            f"limit {limit:.2f}x")
    return out | {"checked": True, "value": ratio, "limit": limit, "low_limit": low_limit,
                  "high_limit": high_limit, "margin": margin, "side": "max" if upper else "min", "text": text}


def share_margin(check: str, label: str, value: float | None, limit: float | None,
                 passed: bool | None = None, **extra: Any) -> dict[str, Any]:
    """How far a share ``value`` (0..1) stayed below its ``limit``; a limit of 1 or more is not checked."""
    out: dict[str, Any] = {"check": check, "unit": "share of the events", "value": value, "passed": passed, **extra}
    if value is None or limit is None or limit >= 1.0:
        seen = f"{value:.1%}, " if value is not None else ""
        return out | {"checked": False, "limit": None, "margin": None, "side": None,
                      "text": f"{label} {seen}not checked"}
    return out | {"checked": True, "limit": limit, "margin": limit - value, "side": "max",
                  "text": f"{label} {value:.1%}, limit {limit:.1%}"}


def margins(checks: list[dict[str, Any]], *, average: float | None, days: int | None,
            top_item: str | None = None) -> dict[str, dict[str, Any]]:
    """The margin to the threshold of each check with one, from a summary's ``checks`` (as validation
    writes them) and the trailing ``average`` over ``days`` accepted partitions (None: no history).

    Keys: ``volume``, ``new_users``, ``new_items``, ``top_item`` (with the item's id), ``duplicates``; a
    check that did not run (the partition was unreadable) has no key. Each value has ``check``,
    ``checked``, ``value``, ``limit``, ``margin`` (positive: inside the limit; negative: broken), ``unit``,
    ``passed`` and a ``text`` such as "volume 0.31x of the trailing average (...), limit 0.20x".
    """
    out: dict[str, dict[str, Any]] = {}
    volume = _find(checks, VOLUME_CHECK)
    if volume is not None:
        expected = volume.get("expected") or {}
        band = (_number(expected.get("min_value")), _number(expected.get("max_value")))
        out["volume"] = volume_margin(_number(volume.get("observed_value")), band, average, days,
                                      volume.get("success"))
    for key, (name, label) in SHARE_MARGINS.items():
        check = _find(checks, name)
        if check is None:
            continue
        extra = {"item_id": top_item} if key == "top_item" else {}
        if key == "top_item" and top_item is not None:
            label = f"top item {top_item}"
        out[key] = share_margin(name, label, _number(check.get("observed_value")),
                                _number((check.get("expected") or {}).get("max_value")), check.get("success"),
                                **extra)
    duplicates = _find(checks, DUPLICATE_CHECK)
    if duplicates is not None:
        unique = _number(duplicates.get("observed_value"))
        least = _number((duplicates.get("expected") or {}).get("min_value"))
        ratio = None if unique is None else max(0.0, 1.0 - unique)
        limit = None if least is None else max(0.0, 1.0 - least)
        margin = share_margin(DUPLICATE_CHECK, "duplicate event ids", ratio, limit, duplicates.get("success"))
        if limit is not None and ratio is not None:  # a limit of 0 (no duplicates at all) is still a limit
            margin |= {"checked": True, "limit": limit, "margin": limit - ratio, "side": "max",
                       "text": f"duplicate event ids {ratio:.2%}, limit {limit:.2%}"}
        out["duplicates"] = margin
    return out


def summary_margins(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The summary's stored ``margins``; for summaries written before they were stored, computed from its
    checks and the numbers in its notes (the trailing average there is rounded to whole events)."""
    if isinstance(summary.get("margins"), dict):
        return summary["margins"]
    notes = summary.get("notes") or {}
    found = _VOLUME_NOTE.search(str(notes.get(VOLUME_CHECK, "")))
    days, average = (int(found.group(1)), float(found.group(2))) if found else (None, None)
    top = _TOP_NOTE.match(str(notes.get(TOP_ITEM_CHECK, "")))
    return margins(list(summary.get("checks") or []), average=average, days=days,
                   top_item=top.group(1) if top else None)


def _status(summary: dict[str, Any] | None, landed: bool) -> str:
    if summary is None:
        return NOT_VALIDATED if landed else MISSING
    if summary.get("accepted"):
        return ACCEPTED
    return PASSED if summary.get("success") else FAILED


def _accepted_by_registry(store: PartitionStore) -> dict[str, dict[str, Any]]:
    """ISO date -> the newest ``accepted_invalid`` history entry of the registry (none if unreadable)."""
    from recsys import registry

    try:
        history = registry.load(store).get("history", [])
    except StorageError:
        return {}
    accepted: dict[str, dict[str, Any]] = {}
    for entry in history:
        if entry.get("action") == registry.ACCEPTED_INVALID and entry.get("date"):
            accepted[str(entry["date"])] = dict(entry)
    return accepted


def _dates(store: PartitionStore) -> tuple[set[date], set[date], set[date]]:
    """Landed (complete raw partitions), reported and quarantined dates (one listing each)."""
    def listed(directory: str) -> set[date]:
        return {d for name in store.list_dir(directory) if (d := layout.parse_partition_name(name)) is not None}

    return set(store.partitions(layout.RAW_EVENTS)), listed(layout.VALIDATION_REPORTS), \
        listed(layout.QUARANTINE_EVENTS)


def trend_row(day: date, summary: dict[str, Any] | None, *, landed: bool, quarantined: bool = False,
              accepted_entry: dict[str, Any] | None = None, problem: str | None = None) -> dict[str, Any]:
    """One date's row (keys :data:`CSV_COLUMNS` plus ``failed``, the failed checks' names, and ``margins``)."""
    row: dict[str, Any] = dict.fromkeys(CSV_COLUMNS)
    row |= {"date": day.isoformat(), "status": _status(summary, landed), "quarantined": quarantined,
            "failed": [], "margins": {}, "problem": problem}
    if summary is None:
        return row
    checks = list(summary.get("checks") or [])
    failed = [str(c.get("check") or c.get("expectation")) for c in checks if not c.get("success")]
    reason = None
    if row["status"] == ACCEPTED:  # the summary keeps on-call's entry; the registry has it too
        reason = (summary.get("accepted") or {}).get("reason") or (accepted_entry or {}).get("reason")
    row |= {"events": summary.get("rows"), "failed_checks": len(failed), "failed": failed,
            "failed_names": "; ".join(failed), "problem": summary.get("problem"), "accepted_reason": reason,
            "validated_at": summary.get("validated_at"),
            "report": summary.get("report_path") or layout.validation_summary(day)}
    found = summary_margins(summary)
    row["margins"] = found
    volume = found.get("volume")
    if volume is not None:
        low, high = (volume.get("band") or [None, None])[:2]
        row |= {"volume_min": low, "volume_max": high, "volume_average": volume.get("average"),
                "volume_days": volume.get("days"), "volume_ratio": volume.get("value"),
                "volume_low_limit": volume.get("low_limit"), "volume_high_limit": volume.get("high_limit"),
                "volume_margin": volume.get("margin")}
    for key in ("new_users", "new_items", "top_item", "duplicates"):
        entry = found.get(key)
        if entry is None:
            continue
        prefix = _PREFIX[key]
        value_column = f"{prefix}_ratio" if key == "duplicates" else f"{prefix}_share"
        row |= {value_column: entry.get("value"), f"{prefix}_limit": entry.get("limit"),
                f"{prefix}_margin": entry.get("margin")}
        if key == "top_item":
            row["top_item"] = entry.get("item_id")
    return row


def trend_rows(store: PartitionStore, start: date | None = None, end: date | None = None) -> list[dict[str, Any]]:
    """One row per date, oldest first, from the first to the last date that landed, was validated or was
    quarantined (limited to ``start`` .. ``end`` when given); dates in between with nothing are MISSING
    (up to :data:`MAX_MISSING_RUN` in a row; a longer run of them is left out).

    See :func:`trend_row` for the keys. A ``summary.json`` that cannot be read gives a NOT VALIDATED row
    whose ``problem`` says why, so one bad file does not hide the others.
    """
    landed, reported, quarantined = _dates(store)
    known = landed | reported | quarantined
    if not known:
        return []
    first, last = start or min(known), end or max(known)
    accepted = _accepted_by_registry(store) if reported else {}
    rows = []
    for day in _row_dates(known, first, last):
        summary, problem = None, None
        if day in reported:
            path = layout.validation_summary(day)
            try:
                summary = store.read_json(path) if store.exists(path) else None
            except StorageError as err:
                problem = f"the validation summary cannot be read: {err}"
        rows.append(trend_row(day, summary, landed=day in landed or problem is not None,
                              quarantined=day in quarantined, accepted_entry=accepted.get(day.isoformat()),
                              problem=problem))
    return rows


def _row_dates(known: set[date], first: date, last: date) -> list[date]:
    """The dates of the table: ``first``, ``last`` and every known date between them, and the dates with
    nothing in between when at most :data:`MAX_MISSING_RUN` of them follow each other (a partition dated
    0001-01-01 next to 2011 data does not list seven hundred thousand MISSING days)."""
    if first > last:
        return []
    anchors = sorted({first, last} | {d for d in known if first <= d <= last})
    days: list[date] = []
    for previous, current in zip([None, *anchors], anchors, strict=False):
        if previous is not None and current.toordinal() - previous.toordinal() - 1 <= MAX_MISSING_RUN:
            days += [date.fromordinal(o) for o in range(previous.toordinal() + 1, current.toordinal())]
        days.append(current)
    return days


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".")  # readable, and never an exponent
    return str(value)


def rows_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV with a header (:data:`CSV_COLUMNS`); empty cells for unknown values.

    A cell starting with ``=``, ``+``, ``-``, ``@`` (a formula in a spreadsheet) that is not a number is
    prefixed with ``'`` so an id or reason from the data cannot run as a formula where stakeholders open it.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        cells = []
        for column in CSV_COLUMNS:
            cell = _cell(row.get(column))
            if cell[:1] in ("=", "+", "-", "@", "\t", "\r") and _number_text(cell) is None:
                cell = "'" + cell
            cells.append(cell)
        writer.writerow(cells)
    return buffer.getvalue()


def _number_text(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def rows_json(rows: list[dict[str, Any]]) -> str:
    """The rows as a JSON array (``NaN`` never appears: unknown values are null)."""
    return json.dumps(rows, indent=2, sort_keys=True, default=str, allow_nan=False)


def margin_lines(summary: dict[str, Any]) -> list[str]:
    """The margins of one summary as readable lines (for ``recsys summary``), checked ones first."""
    found = summary_margins(summary)
    ordered = [found[k] for k in MARGIN_KEYS if k in found]
    lines = []
    for entry in sorted(ordered, key=lambda m: not m.get("checked")):
        text = str(entry.get("text", ""))
        margin = entry.get("margin")
        if entry.get("checked") and margin is not None:
            unit = "x" if entry.get("unit", "").startswith("x") else " of the events"
            amount = f"{abs(margin):.2f}x" if unit == "x" else f"{abs(margin):.1%}{unit}"
            text += f" ({amount} {'inside' if margin >= 0 else 'beyond'} the limit)"
        lines.append(text)
    return lines
