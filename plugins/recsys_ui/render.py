"""Server-side HTML of the recsys pages: plain HTML, inline CSS and an inline SVG plot (``plot.py``; works
offline).

Every function takes already-loaded data (``recsys.report`` rows) and a ``base`` path (where the app is
mounted, e.g. ``/recsys``) and returns a string; every value from the store is escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

from recsys import registry, report
from recsys.validation import health
from recsys_ui.cells import fmt
from recsys_ui.plot import metric_plot_svg
from recsys_ui.trend_plot import trend_section

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.2em 2em; color: #222; }
nav a { margin-right: 1.2em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; width: 100%; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; font-size: 92%; }
th { background: #f2f2f2; }
tr.focus td { background: #fff6d5; }
.box { border: 1px solid #bbb; border-radius: 6px; padding: .6em 1em; background: #fafafa; }
.focus-box { border-color: #d9a400; background: #fff6d5; }
.PASSED, .DEPLOY { color: #176b2c; font-weight: bold; }
.FAILED, .REJECT { color: #b00020; font-weight: bold; }
.ACCEPTED { color: #9a5b00; font-weight: bold; } .NOT-VALIDATED { color: #666; font-weight: bold; }
tr.on-call td { background: #f3efff; }
.muted { color: #666; } code { font-size: 90%; } ul { margin: 0; padding-left: 1.2em; }
svg text { font-family: system-ui, sans-serif; }
"""


def page(title: str, base: str, body: str) -> str:
    """A complete page with the recsys navigation bar (``base`` ends with ``/recsys``; above it is Airflow)."""
    airflow = base.rsplit("/", 1)[0]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>{_STYLE}</style></head><body>
<nav><a href="{base}/registry">Model registry</a><a href="{base}/validation">Validation reports</a>
<a href="{base}/reports/site/partitions.html">Data Docs overview</a>
<a href="{airflow}/" target="_top">Airflow</a></nav>
<h1>{escape(title)}</h1>
{body}
</body></html>
"""


def message_page(title: str, base: str, message: str) -> str:
    """A page that only says something (an error, an empty store)."""
    return page(title, base, f'<p class="box">{escape(message)}</p>')


# --- the registry page ---------------------------------------------------------------------------------


# keys every history entry may have, shown in their own columns (the rest go into the description)
_HISTORY_COLUMNS = ("at", "action", "reason", "run_id")


def _v(version: Any) -> str:
    return "none" if version is None else f"v{version}"


def _of_day(entry: Mapping[str, Any]) -> str:
    return f" of {entry['date']}" if entry.get("date") else ""


def _trained(entry: Mapping[str, Any]) -> str:
    version, day = entry.get("version"), entry.get("date")
    return f"trained {_v(version)} on partition {day}" if day else f"trained {_v(version)}"


def _gate(entry: Mapping[str, Any]) -> str:
    verdict = "blessed (deploy)" if entry.get("action") == registry.BLESSED else "rejected (no deploy)"
    if entry.get("kind") == registry.FULL_RETRAIN:
        return f"gate {verdict} full retrain {_v(entry.get('version'))} ending {entry.get('date')}"
    return f"gate {verdict} candidate {_v(entry.get('version'))}{_of_day(entry)}"


def _deploy_skipped(entry: Mapping[str, Any]) -> str:
    blessed = entry.get("gate_blessed")
    gate = "" if blessed is None else f" (the gate had {'blessed' if blessed else 'rejected'} it)"
    return f"on-call skipped the deploy of candidate {_v(entry.get('version'))}{_of_day(entry)}{gate}"


def _deploy_forced(entry: Mapping[str, Any]) -> str:
    said = entry.get("gate_reason")
    return f"on-call forced the deploy of candidate {_v(entry.get('version'))}{_of_day(entry)}" + (
        f" (the gate said: {said})" if said else "")


def _accepted_invalid(entry: Mapping[str, Any]) -> str:
    failed = ", ".join(str(f) for f in entry.get("failed_expectations") or [])
    return f"on-call accepted partition {entry.get('date')} although it failed validation" + (
        f" (failed: {failed})" if failed else "")


_SENTENCES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    registry.TRAINED: _trained,
    registry.BLESSED: _gate,
    registry.REJECTED: _gate,
    registry.DEPLOYED: lambda e: f"deployed {_v(e.get('to'))} as champion (was {_v(e.get('from'))})",
    registry.ROLLBACK: lambda e: f"on-call rolled the champion back from {_v(e.get('from'))} to {_v(e.get('to'))}",
    registry.DEPLOY_SKIPPED: _deploy_skipped,
    registry.DEPLOY_FORCED: _deploy_forced,
    registry.REVALIDATION_FORCED: lambda e: f"on-call forced the re-validation of partition {e.get('date')}",
    registry.ACCEPTED_INVALID: _accepted_invalid,
    registry.PRUNED: lambda e: "retention pruned " + ", ".join(_v(v) for v in e.get("versions") or [])
    + f" (keeping the last {e.get('keep')} trained and every protected version)",
}


def history_text(entry: Mapping[str, Any]) -> str:
    """One registry history entry as a plain sentence (not escaped): what happened to which version and date.

    Knows every action the pipeline and on-call write (``trained``, ``blessed``/``rejected`` of a date or of
    a full retrain, ``deployed``, ``rollback``, ``deploy_skipped``, ``deploy_forced``, ``revalidation_forced``,
    ``accepted_invalid``, ``pruned``); any other action is shown with its fields, so nothing is hidden.
    """
    action = entry.get("action")
    sentence = _SENTENCES.get(str(action))
    if sentence is not None:
        return sentence(entry)
    rest = ", ".join(f"{k} {v}" for k, v in entry.items() if k not in _HISTORY_COLUMNS and v is not None)
    return f"{action}: {rest}" if rest else str(action)


def registry_page(
    base: str,
    metric: str,
    champion: dict[str, Any] | None,
    versions: list[dict[str, Any]],
    decisions: list[dict[str, Any]],
    history: Sequence[Mapping[str, Any]],
    focus_date: str | None = None,
    focus_version: int | None = None,
    retrains: list[dict[str, Any]] | None = None,
) -> str:
    """The model registry: champion, a plot of ``metric``, decisions, full retrains, versions and history.

    ``retrains`` are ``recsys.report.retrain_rows`` (the gate's decisions on full retrains).
    ``focus_date`` / ``focus_version`` (from the task links) are highlighted and summarised at the top.
    """
    retrains = retrains or []
    body = [
        _focus_box(base, metric, versions, decisions, focus_date, focus_version, retrains),
        _champion_section(metric, champion, versions),
        _plot_section(metric, decisions, retrains),
        _decisions_section(base, metric, decisions, focus_date),
        _retrains_section(metric, retrains, focus_version),
        _versions_section(metric, versions, focus_version),
        _history_section(history),
    ]
    return page("Model registry", base, "\n".join(part for part in body if part))


def _champion_section(metric: str, champion: dict[str, Any] | None, versions: list[dict[str, Any]]) -> str:
    """The serving champion: its kind, training day, table sizes, metric and the switch that made it champion."""
    if champion is None:
        return ('<p class="box" id="champion">No champion deployed yet: the first blessed candidate becomes '
                "the champion.</p>")
    meta, since = champion["metadata"], champion["since"] or {}
    champ_row = next((v for v in versions if v["version"] == champion["version"]), None)
    value = f"; {escape(metric)} {fmt(champ_row['metric'])} when it was evaluated" if champ_row else ""
    return (
        f'<div class="box" id="champion"><b>Champion: version {champion["version"]}</b> '
        f"({escape(str(meta.get('kind', registry.FINE_TUNE)))}, trained on {fmt(meta.get('trained_on'))}, "
        f"{fmt(meta.get('user_rows'))} user rows x {fmt(meta.get('item_rows'))} item rows"
        f"{_megabytes(meta.get('table_megabytes'), ', ')}{value}).<br>"
        f"Champion since {fmt(since.get('at'))} ({fmt(since.get('action'))}): {fmt(since.get('reason'))}</div>"
    )


def _plot_section(metric: str, decisions: list[dict[str, Any]], retrains: list[dict[str, Any]]) -> str:
    return "\n".join([
        f"<h2>{escape(metric)} over time</h2>",
        '<p class="muted">Each day the candidate trained on the day and the champion are evaluated on the '
        "same held-out users of that day; the candidate is deployed only when the thresholds say so. A full "
        "retrain (diamond) is judged the same way on its end date's held-out users. Hover a point for its "
        "numbers.</p>",
        metric_plot_svg(decisions, metric, retrains=retrains),
    ])


def _decisions_section(base: str, metric: str, decisions: list[dict[str, Any]], focus_date: str | None) -> str:
    """The daily decisions, newest first; the focused date's row highlighted."""
    rows = []
    for d in reversed(decisions):
        verdict = report.verdict(d["blessed"])
        cls = ' class="focus"' if d["date"] == focus_date else ""
        rows.append(
            f'<tr id="d-{escape(d["date"])}"{cls}><td>{escape(d["date"])}</td>'
            f'<td><a href="#v-{fmt(d["candidate_version"])}">v{fmt(d["candidate_version"])}</a> '
            f"{fmt(d['candidate'])}</td><td>{_champion_cell(d)}</td>"
            f'<td class="{verdict}">{verdict}</td><td>{fmt(d["reason"])}</td><td>{fmt(d["eval_users"])}</td>'
            f'<td><a href="{base}/validation/{quote(d["date"])}">validation</a></td></tr>'
        )
    return "\n".join([
        f'<h2 id="decisions">Decisions ({len(decisions)})</h2>',
        _table(["date", f"candidate {escape(metric)}", f"champion {escape(metric)}", "decision", "reason",
                "held-out users", "data"], rows, "No decision yet."),
    ])


def _retrains_section(metric: str, retrains: list[dict[str, Any]], focus_version: int | None) -> str:
    """The full retrains the gate judged, newest first; the focused version's row highlighted."""
    rows = []
    for r in reversed(retrains):
        verdict = report.verdict(r["blessed"])
        cls = ' class="focus"' if r["version"] == focus_version else ""
        rows.append(
            f'<tr id="r-{r["version"]}"{cls}><td><a href="#v-{r["version"]}">v{r["version"]}</a></td>'
            f"<td>{fmt(r['date'])}</td><td>{fmt(r['window_days'])}</td><td>{fmt(r['candidate'])}</td>"
            f"<td>{_champion_cell(r)}</td><td class=\"{verdict}\">{verdict}</td><td>{fmt(r['reason'])}</td>"
            f"<td>{fmt(r['eval_users'])}</td><td>{'yes' if r['deployed'] else 'no'}</td>"
            f"<td>{fmt(r['decided_at'])}</td></tr>"
        )
    return "\n".join([
        f'<h2 id="retrains">Full retrains ({len(retrains)})</h2>',
        '<p class="muted">Models trained from scratch on a window of days (the <code>recsys_full_retrain'
        "</code> DAG), judged by the same gate as a daily candidate on their end date's held-out users. A "
        "rejected retrain is never deployed nor used as the starting point of later fine-tunes.</p>",
        _table(["version", "end date", "window (days)", f"retrain {escape(metric)}", f"champion {escape(metric)}",
                "decision", "reason", "held-out users", "deployed", "decided"], rows,
               "No full retrain was judged yet."),
    ])


def _version_status(version: dict[str, Any]) -> str:
    return "champion" if version["champion"] else ("served before" if version["served"] else "never served")


def _version_decision(version: dict[str, Any]) -> str:
    """The decision on a version with its reason (and a link to the full-retrain gate's row)."""
    if not version["decision"]:
        return '<span class="muted">not decided</span>'
    gate = (f' <a class="muted" href="#r-{version["version"]}">(full-retrain gate)</a>'
            if version.get("decided_by") == report.DECIDED_BY_RETRAIN else "")
    return f'<span class="{version["decision"]}">{version["decision"]}</span>{gate}: {fmt(version["reason"])}'


def _versions_section(metric: str, versions: list[dict[str, Any]], focus_version: int | None) -> str:
    """Every trained version, newest first; the focused one highlighted."""
    rows = []
    for v in versions:
        cls = ' class="focus"' if v["version"] == focus_version else ""
        others = ", ".join(f"{escape(k)} {fmt(val)}" for k, val in sorted(v["metrics"].items()) if k != metric)
        rows.append(
            f'<tr id="v-{v["version"]}"{cls}><td>v{v["version"]}</td><td>{escape(_version_status(v))}</td>'
            f"<td>{_kind_cell(v)}</td><td>{fmt(v['trained_on'])}</td><td>{_version_or_none(v['parent'])}</td>"
            f"<td>{fmt(v['metric'])}</td><td>{others or '—'}</td><td>{_version_decision(v)}</td>"
            f"<td>{fmt(v['train_examples'])}</td><td>{_megabytes(v.get('table_megabytes'))}</td>"
            f"<td>{rows_added(v)}</td><td>{fmt(v['final_loss'], 2)}</td><td>{fmt(v['created_at'])}</td></tr>"
        )
    return "\n".join([
        f'<h2 id="versions">Versions ({len(versions)})</h2>',
        _table(["version", "status", "kind", "trained on", "parent", escape(metric), "other metrics", "decision",
                "train examples", "tables (MB)", "rows added", "final loss", "created"], rows,
               "No version trained yet."),
    ])


def _history_section(history: Sequence[Mapping[str, Any]]) -> str:
    """Every history entry, newest first; on-call decisions highlighted."""
    rows = []
    for h in reversed(history):
        action = str(h.get("action"))
        by = ' class="on-call"' if action in registry.ON_CALL_ACTIONS else ""
        rows.append(
            f"<tr{by}><td>{fmt(h.get('at'))}</td><td><code>{escape(action)}</code></td>"
            f"<td>{escape(history_text(h))}</td><td>{fmt(h.get('reason'))}</td>"
            f"<td><code>{fmt(h.get('run_id'))}</code></td></tr>"
        )
    return "\n".join([
        f'<h2 id="history">History ({len(history)} entries, newest first)</h2>',
        '<p class="muted">On-call decisions (rollbacks, deploy overrides, forced re-validations, accepted '
        "invalid partitions) are highlighted.</p>",
        _table(["at", "action", "what happened", "reason", "run"], rows, "Nothing happened yet."),
    ])


def _megabytes(value: Any, prefix: str = "") -> str:
    """Embedding table size in MB (two decimals), '' with a prefix or '—' alone when unknown."""
    if value is None:
        return "" if prefix else "—"
    return f"{prefix}{float(value):.2f} MB" if prefix else f"{float(value):.2f}"


def rows_added(version: dict[str, Any]) -> str:
    """The user and item table rows a version added over its parent ('+u users, +i items'); '—' if unknown."""
    users, items = version.get("new_user_rows"), version.get("new_item_rows")
    if users is None and items is None:
        return "—"
    return f"+{fmt(users)} users, +{fmt(items)} items"


def _kind_cell(version: dict[str, Any]) -> str:
    window = version.get("window_days")
    return fmt(version["kind"]) + (f" ({fmt(window)} days)" if window else "")


def _champion_cell(decision: dict[str, Any]) -> str:
    if decision["champion_version"] is None:
        return '<span class="muted">no champion</span>'
    return f"{_version_or_none(decision['champion_version'])} {fmt(decision['champion'])}"


def _version_or_none(version: Any) -> str:
    return "—" if version is None else f"v{escape(str(version))}"


def _table(headers: list[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f"<th>{h}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>"


def _focus_box(
    base: str, metric: str, versions: list[dict[str, Any]], decisions: list[dict[str, Any]],
    focus_date: str | None, focus_version: int | None, retrains: Sequence[dict[str, Any]] = (),
) -> str:
    lines = []
    if focus_date is not None:
        decision = next((d for d in decisions if d["date"] == focus_date), None)
        trained = [v for v in versions if v["trained_on"] == focus_date]
        names = ", ".join(f'<a href="#v-{v["version"]}">v{v["version"]}</a> ({escape(v["kind"])})' for v in trained)
        lines.append(f"<b>Partition {escape(focus_date)}</b>: trained {names or 'no version'}.")
        if decision is None:
            lines.append("No decision recorded for this date (evaluation has not run or failed).")
        else:
            verdict = report.verdict(decision["blessed"])
            lines.append(
                f'Decision <span class="{verdict}">{verdict}</span>: candidate v{fmt(decision["candidate_version"])} '
                f"{escape(metric)} {fmt(decision['candidate'])} vs champion "
                f"{_version_or_none(decision['champion_version'])} {fmt(decision['champion'])}. "
                f"{fmt(decision['reason'])}"
            )
        for r in retrains:
            if r["date"] == focus_date:
                lines.append(f"Full retrain {_retrain_summary(r, metric)}")
        lines.append(f'<a href="{base}/validation/{quote(focus_date)}">Validation report of {escape(focus_date)}</a>')
    if focus_version is not None:
        row = next((v for v in versions if v["version"] == focus_version), None)
        if row is None:
            lines.append(f"<b>Version {focus_version}</b> is not in the registry.")
        else:
            status = "the champion" if row["champion"] else "served before" if row["served"] else "never served"
            lines.append(f'<b>Version {focus_version}</b>: {escape(row["kind"])} on {fmt(row["trained_on"])}, '
                         f"{escape(metric)} {fmt(row['metric'])}, {status}.")
            retrain = next((r for r in retrains if r["version"] == focus_version), None)
            if retrain is not None and retrain["date"] != focus_date:
                lines.append(f"Full retrain {_retrain_summary(retrain, metric)}")
    if not lines:
        return ""
    return '<div class="box focus-box" id="focus">' + "<br>".join(lines) + "</div>"


def _retrain_summary(r: dict[str, Any], metric: str) -> str:
    verdict = report.verdict(r["blessed"])
    window = f", {fmt(r['window_days'])} days" if r["window_days"] else ""
    return (f'<a href="#r-{r["version"]}">v{r["version"]}</a> (ending {fmt(r["date"])}{window}): '
            f'<span class="{verdict}">{verdict}</span>, {escape(metric)} {fmt(r["candidate"])} vs champion '
            f"{_version_or_none(r['champion_version'])} {fmt(r['champion'])}. {fmt(r['reason'])}")


# --- the validation pages ------------------------------------------------------------------------------


def _status_span(status: str) -> str:
    return f'<span class="{status.replace(" ", "-")}">{escape(status)}</span>'


def _docs_links(base: str, summary: dict[str, Any] | None) -> list[str]:
    """Links to a partition's Data Docs pages (served by this app from ``reports/validation/``)."""
    if not summary:
        return []
    pages = (summary.get("data_docs") or {}).get("pages") or {}
    links = [
        f'<a href="{base}/reports/{quote(_report_relative(path))}">{escape(suite)} Data Docs</a>'
        for suite, path in sorted(pages.items())
    ]
    links.append(f'<a href="{base}/reports/{quote(_report_relative(summary.get("report_path", "")))}">summary.json</a>')
    return links


REPORTS_PREFIX = "reports/validation/"


def _report_relative(store_path: str) -> str:
    """A store path under ``reports/validation/``, relative to it (the app's ``/reports/`` route)."""
    return store_path.removeprefix(REPORTS_PREFIX)


def validation_list_page(base: str, rows: list[dict[str, Any]], trend: list[dict[str, Any]] | None = None) -> str:
    """Every partition (newest first) with its status, failed checks and links to its report and Data Docs;
    above them the data-health trend of ``trend`` (``recsys.validation.health.trend_rows``) when given."""
    body = [
        '<p>One row per partition date. <b>PASSED</b>: the day met every rule. <b>FAILED</b>: a rule broke; the '
        "partition was quarantined and the model was not touched. <b>ACCEPTED</b>: it failed and on-call let it "
        "through with a reason. <b>NOT VALIDATED</b>: landed, not validated yet. "
        f'The <a href="{base}/reports/site/partitions.html">Data Docs overview</a> has the same list as the '
        "Great Expectations site.</p>"
    ]
    table = []
    for r in rows:
        s = r["summary"] or {}
        failed = list(s.get("failed") or [])
        if s.get("problem"):
            failed.insert(0, f"partition problem: {s['problem']}")
        failed_html = "<ul>" + "".join(f"<li>{escape(str(f))}</li>" for f in failed) + "</ul>" if failed else "none"
        links = [f'<a href="{base}/validation/{quote(r["date"])}">report</a>', *_docs_links(base, r["summary"])]
        table.append(
            f'<tr id="dt-{escape(r["date"])}"><td>{escape(r["date"])}</td><td>{_status_span(r["status"])}</td>'
            f"<td>{fmt(s.get('rows'))}</td><td>{failed_html if r['summary'] else '—'}</td>"
            f"<td>{' | '.join(links)}</td></tr>"
        )
    if trend is not None:
        body.append(trend_section(trend, base))
        body.append('<h2 id="partitions">Every partition</h2>')
    body.append(_table(["date", "status", "rows", "failed checks", "reports"], table, "No partition has landed yet."))
    return page("Validation reports", base, "\n".join(body))


def validation_partition_page(base: str, day: str, status: str, summary: dict[str, Any] | None) -> str:
    """One partition's validation: verdict, every check with what it observed, and its Data Docs."""
    if summary is None:
        return page(f"Validation of {day}", base,
                    f'<p class="box">Partition {escape(day)}: {_status_span(status)}. Its validation has not run '
                    "yet (or the partition has not landed).</p>")
    head = [f"<b>Partition {escape(day)}</b>: {_status_span(status)}, {fmt(summary.get('rows'))} events, "
            f"validated at {fmt(summary.get('validated_at'))}."]
    if summary.get("problem"):
        head.append(f"Partition problem: {escape(str(summary['problem']))}")
    if summary.get("accepted"):
        acc = summary["accepted"]
        head.append(f"Accepted by on-call: {fmt(acc.get('reason'))} ({fmt(acc.get('at'))}, "
                    f"run {fmt(acc.get('run_id'))})")
    if status == report.FAILED:
        head.append(f"The partition was copied to <code>quarantine/events/dt={escape(day)}/</code> with a "
                    "<code>reason.json</code>; later dates wait until it is fixed or accepted.")
    head.append(" | ".join(_docs_links(base, summary)))
    body = ['<div class="box" id="verdict">' + "<br>".join(head) + "</div>"]
    notes = summary.get("notes") or {}
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li><b>{escape(str(k))}</b>: {escape(str(v))}</li>"
                                                   for k, v in sorted(notes.items())) + "</ul>")
    margins = health.margin_lines(summary)
    if margins:
        body.append('<h2 id="margins">Margins to the thresholds</h2><ul>'
                    + "".join(f"<li>{escape(line)}</li>" for line in margins) + "</ul>")
    checks = sorted(summary.get("checks") or [], key=lambda c: bool(c.get("success")))
    rows = []
    for c in checks:
        verdict = report.PASSED if c.get("success") else report.FAILED
        examples = ", ".join(map(repr, c.get("unexpected_examples") or []))
        rows.append(
            f"<tr><td>{_status_span(verdict)}</td><td>{fmt(c.get('suite'))}</td>"
            f"<td>{fmt(c.get('check'))}<br><code>{fmt(c.get('expectation'))}</code></td><td>{fmt(c.get('column'))}</td>"
            f"<td>{fmt(c.get('observed_value'))}</td><td>{fmt(c.get('unexpected_count'))}</td>"
            f"<td>{escape(examples) or '—'}</td><td>{fmt(c.get('error'))}</td></tr>"
        )
    failed = sum(1 for c in checks if not c.get("success"))
    body.append(f"<h2>Checks ({len(checks)}, {failed} failed; failed first)</h2>")
    body.append(_table(["result", "suite", "check", "column", "observed", "unexpected", "examples", "error"], rows,
                       "No check ran (see the partition problem)."))
    return page(f"Validation of {day}", base, "\n".join(body))
