"""Validate one day's raw partition against the suites in ``expectations/``.

Suites: ``raw_events`` (the events), ``catalog`` (the day's item catalog snapshot, when one was landed)
and ``partition_integrity`` (problems of the whole partition that column rules cannot express: an
unreadable, truncated or non-UTF-8 file, no rows, a marker without data, a second delivery of a
processed date that differs from the first).

Every run writes ``reports/validation/dt=<day>/summary.json`` (each expectation, observed value,
pass/fail) and rebuilds the Data Docs at ``reports/validation/site/`` (see :mod:`recsys.validation.docs`).
A partition that fails is copied to ``quarantine/events/dt=<day>/`` with a ``reason.json`` and
:class:`ValidationFailed` is raised; the raw partition itself is never modified or deleted. On-call may
accept a failed partition with a reason (recorded in the registry history); an identical redelivery of
a partition that already passed changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys import schema
from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.storage import PartitionStore, StorageError, layout
from recsys.storage.raw import fingerprint, read_partition

log = logging.getLogger(__name__)

SUITES_DIR = Path(__file__).resolve().parents[2] / "expectations"
EVENTS_SUITE = "raw_events"
CATALOG_SUITE = "catalog"
INTEGRITY_SUITE = "partition_integrity"
SUMMARY_FILE = "summary.json"
# derived columns the share expectations of raw_events read (added to a copy of the partition)
NEW_USER, NEW_ITEM, TOP_ITEM = "_new_user", "_new_item", "_top_item"
EVENT_TIME_DTYPE = "_event_time_dtype"


class ValidationFailed(RecsysError, RuntimeError):
    """A partition broke the data contract; it was quarantined and must not be trained on."""


@dataclass
class ValidationReport:
    """The compact, JSON-able outcome of validating one partition."""

    day: date
    success: bool
    rows: int
    checks: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None  # a partition-level problem that the column rules could not evaluate
    report_path: str = ""
    fingerprint: str | None = None  # sha256 over the data files (name and content) that were validated
    # the fingerprint of the delivery of this date that passed (or was accepted): what features were built from
    passed_fingerprint: str | None = None
    notes: dict[str, str] = field(default_factory=dict)  # what the history-based checks compared with
    data_docs: dict[str, Any] = field(default_factory=dict)  # store paths of the site index and pages
    accepted: dict[str, Any] | None = None  # on-call accepted this failed partition (who, why)
    validated_at: str | None = None

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["success"]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "date": self.day.isoformat(),
            "success": self.success,
            "rows": self.rows,
            "problem": self.problem,
            "checks": self.checks,
            "failed": [c["expectation"] for c in self.failed],
            "report_path": self.report_path,
            "fingerprint": self.fingerprint,
            "passed_fingerprint": self.passed_fingerprint,
            "notes": self.notes,
            "data_docs": self.data_docs,
            "accepted": self.accepted,
            "validated_at": self.validated_at,
        }


def load_suite(name: str = EVENTS_SUITE) -> dict[str, Any]:
    """The suite definition ``expectations/<name>.json`` as a dict."""
    import json

    path = SUITES_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ValidationFailed(f"expectation suite {path} is missing") from err


# --- parameters of the suites -----------------------------------------------------------------------
def _history(store: PartitionStore, day: date, n: int) -> list[dict[str, Any]]:
    """Summaries of the last ``n`` accepted partitions before ``day`` (passed, or accepted by on-call)."""
    days = [d for d in store.partitions(layout.VALIDATION_REPORTS, complete_only=False) if d < day]
    accepted = []
    for earlier in reversed(days):
        path = f"{layout.validation_report(earlier)}/{SUMMARY_FILE}"
        if not store.exists(path):
            continue
        summary = store.read_json(path)
        if summary.get("success") or summary.get("accepted"):
            accepted.append(summary)
        if len(accepted) == n:
            break
    return accepted


def suite_columns(frame: pd.DataFrame, suite: dict[str, Any]) -> pd.DataFrame:
    """The columns of ``frame`` that ``suite``'s expectations read, in their order; all of them if one
    expectation is about the table's columns as a whole.

    Great Expectations keeps the batch's DataFrame for the whole run and computes its metrics over it;
    columns no expectation reads (``session_id``, ``country``) only cost memory there (bench/scale).
    """
    wanted: set[str] = set()
    for expectation in suite.get("expectations", []):
        kwargs = expectation.get("kwargs", {})
        if expectation["type"].startswith("expect_table_column") or "column_list" in kwargs:
            return frame
        for key in ("column", "column_A", "column_B"):
            if isinstance(kwargs.get(key), str):
                wanted.add(kwargs[key])
    return frame[[c for c in frame.columns if c in wanted]]


def event_parameters(
    store: PartitionStore, day: date, frame: pd.DataFrame, settings: Settings
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, str]]:
    """The frame with the derived share columns, the suite parameters, and notes on what was compared.

    History-based checks pass with an explanatory note while there is no history yet.
    """
    from recsys.features import vocab  # here, not at import: recsys.features imports this module

    day_start = datetime.combine(day, time.min, tzinfo=UTC)
    params: dict[str, Any] = {
        "day_start": pd.Timestamp(day_start - timedelta(hours=settings.validation_late_hours)),
        "day_end": pd.Timestamp(day_start + timedelta(days=1) - timedelta(microseconds=1)),
        "now": pd.Timestamp(datetime.now(UTC)),
        "max_id_length": settings.validation_max_id_length,
        "max_quantity": settings.validation_max_quantity,
        "max_price": settings.validation_max_price,
        "min_unique_event_ids": 1.0 - settings.validation_max_duplicate_ratio,
        "range_mostly": 1.0 - settings.validation_range_tolerance,
    }
    notes: dict[str, str] = {}

    history = _history(store, day, settings.validation_history)
    if history:
        average = sum(int(s["rows"]) for s in history) / len(history)
        factor = settings.validation_volume_factor
        params["volume_min"] = max(1, int(average / factor))
        params["volume_max"] = int(average * factor) + 1
        notes["volume within the trailing average"] = (
            f"{len(frame)} rows; the last {len(history)} accepted partitions "
            f"({history[-1]['date']} .. {history[0]['date']}) averaged {average:.0f} rows, "
            f"so {params['volume_min']} .. {params['volume_max']} are expected (factor {factor:g})"
        )
    else:
        params["volume_min"], params["volume_max"] = 1, None
        notes["volume within the trailing average"] = (
            f"{len(frame)} rows; no accepted partition before {day} yet, so only non-empty is checked"
        )

    # a shallow copy (copy-on-write: the added columns never reach ``frame``), so the partition's columns
    # are not held twice; the dtype column is one category, not one string per row (10M rows: 10 MB, not 280)
    derived = frame.copy(deep=False)
    time_dtype = str(frame[schema.EVENT_TIME].dtype) if schema.EVENT_TIME in frame.columns else "missing"
    derived[EVENT_TIME_DTYPE] = pd.Series(
        pd.Categorical.from_codes(np.zeros(len(frame), dtype="int8"), categories=[time_dtype]), index=frame.index
    )
    cutoff = day.isoformat()
    for column, name, kind, limit_name in (
        (schema.USER_ID, vocab.USERS, NEW_USER, "max_new_user_share"),
        (schema.ITEM_ID, vocab.ITEMS, NEW_ITEM, "max_new_item_share"),
    ):
        table = vocab.load(store, name)
        known = set(table.loc[table[vocab.FIRST_SEEN] < cutoff, vocab.ID].astype(str))
        check = f"share of new {name}"
        limit = getattr(settings, f"validation_{limit_name}")
        if column in frame.columns:
            derived[kind] = (~frame[column].astype(str).isin(known)).astype("float64")
        else:
            derived[kind] = pd.Series(0.0, index=frame.index)
        if known:
            params[limit_name] = limit
            share = float(derived[kind].mean()) if len(frame) else 0.0
            notes[check] = (
                f"{share:.1%} of the events are by {name} not seen before {day} "
                f"({len(known)} known); at most {limit:.0%} allowed"
            )
        else:
            params[limit_name] = 1.0
            notes[check] = f"no vocabulary before {day} yet (first partition): every id is new, not checked"

    check = "top item share"
    if schema.ITEM_ID in frame.columns and len(frame):
        top = frame[schema.ITEM_ID].astype(str).value_counts().index[0]
        derived[TOP_ITEM] = (frame[schema.ITEM_ID].astype(str) == top).astype("float64")
        share = float(derived[TOP_ITEM].mean())
    else:
        top, share = None, 0.0
        derived[TOP_ITEM] = pd.Series(0.0, index=frame.index)
    if len(frame) >= settings.validation_min_rows_for_shares:
        params["max_top_item_share"] = settings.validation_max_top_item_share
        notes[check] = (
            f"item {top} has {share:.1%} of the events; at most "
            f"{settings.validation_max_top_item_share:.0%} allowed"
        )
    else:
        params["max_top_item_share"] = 1.0
        notes[check] = (
            f"item {top} has {share:.1%} of the events; not checked below "
            f"{settings.validation_min_rows_for_shares} rows"
        )
    return derived, params, notes


# --- running the suites -----------------------------------------------------------------------------
def compact(result: Any, suite: dict[str, Any]) -> list[dict[str, Any]]:
    """One JSON-able dict per expectation of a GX suite result."""
    checks = []
    for r in result.results:
        cfg = r.expectation_config
        if cfg is None:
            raise ValidationFailed(f"GX returned a result without its expectation for suite {suite['name']}")
        detail = r.result or {}
        error = (r.exception_info or {}).get("exception_message") if not r.success else None
        kwargs = {k: _jsonable(v) for k, v in cfg.kwargs.items() if k not in ("column", "batch_id", "result_format")}
        checks.append(
            {
                "suite": suite["name"],
                "check": (cfg.meta or {}).get("check", cfg.type),
                "expectation": cfg.type,
                "column": cfg.kwargs.get("column"),
                "success": bool(r.success),
                "observed_value": _jsonable(detail.get("observed_value")),
                "unexpected_count": detail.get("unexpected_count"),
                "unexpected_examples": [_jsonable(v) for v in detail.get("partial_unexpected_list", [])][:5],
                "expected": kwargs,
                "error": error,
            }
        )
    return checks


def run_suite(
    frame: pd.DataFrame, day: date, suite: dict[str, Any], params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Run a GX suite over ``frame`` in an ephemeral context (no Data Docs); one dict per expectation."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("partition").add_dataframe_asset("events")
    batch = asset.add_batch_definition_whole_dataframe("whole")
    gx_suite = context.suites.add(gx.ExpectationSuite(**suite))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite['name']}-{day}", data=batch, suite=gx_suite)
    )
    result = definition.run(
        batch_parameters={"dataframe": frame}, expectation_parameters=params or {}, result_format="SUMMARY"
    )
    return compact(result, suite)


def describe(check: dict[str, Any]) -> str:
    """One failed check in words: ``expectation(column) [check]: what was seen``."""
    name = f"{check['expectation']}({check['column']})" if check.get("column") else check["expectation"]
    name += f" [{check.get('check', check['expectation'])}]"
    if check.get("error"):
        return f"{name}: could not be evaluated ({check['error']})"
    if check.get("unexpected_count"):
        examples = ", ".join(repr(v)[:80] for v in check.get("unexpected_examples", [])[:3])
        return f"{name}: {check['unexpected_count']} unexpected value(s), e.g. {examples}"
    expected = {k: v for k, v in (check.get("expected") or {}).items() if k in ("min_value", "max_value")}
    return f"{name}: observed {check.get('observed_value')!r}" + (f", expected {expected}" if expected else "")


def _summary_path(day: date) -> str:
    return f"{layout.validation_report(day)}/{SUMMARY_FILE}"


def previous_summary(store: PartitionStore, day: date) -> dict[str, Any] | None:
    """The summary of the last validation of ``day``, if any."""
    path = _summary_path(day)
    return store.read_json(path) if store.exists(path) else None


def validate_partition(
    store: PartitionStore,
    day: date,
    settings: Settings | None = None,
    *,
    accept_invalid: bool = False,
    accept_reason: str | None = None,
    run_id: str | None = None,
    force: bool = False,
) -> ValidationReport:
    """Validate ``raw/events/dt=<day>`` (and its catalog); report, Data Docs; quarantine and raise on failure.

    ``accept_invalid`` with a non-empty ``accept_reason`` lets a partition that fails its expectations
    pass anyway (on-call's decision, recorded in the registry history with ``run_id``); partitions that
    cannot be read or differ from an already processed delivery cannot be accepted. ``force`` runs the
    suites again even when this delivery was validated before (e.g. after the expectations changed); it is
    recorded in the registry history as ``revalidation_forced``.
    """
    settings = settings or Settings.from_env()
    reason = (accept_reason or "").strip()
    if accept_invalid and not reason:
        raise ValidationFailed(
            f"accepting partition {day} despite failed validation needs a reason: rerun with accept_reason "
            "set to why the data is fine to train on (it is recorded in the registry history)"
        )
    partition_dir = layout.raw_events(day)
    report_path = _summary_path(day)
    if not store.is_complete(partition_dir):
        # not a bad partition, a missing one: nothing to quarantine (the sensor should have waited)
        raise StorageError(
            f"{store.uri(partition_dir)} has no _SUCCESS marker: the partition is not published yet"
        )

    current = fingerprint(store, partition_dir)
    before = previous_summary(store, day)
    processed = store.is_complete(layout.features(day))
    passed_print = (before or {}).get("passed_fingerprint")
    if force:
        from recsys import registry

        registry.record_manual(store, "revalidation_forced", None, run_id, date=day.isoformat())
    elif before and passed_print == current and before.get("fingerprint") == current:
        log.info("%s was validated before from the identical delivery %s; nothing changes", day, current[:12])
        return _report_from_summary(day, before)

    from recsys.validation.docs import OVERVIEW, SITE_INDEX, docs_run

    with docs_run(store, day) as gx_run:
        problem: str | None = None
        frame: pd.DataFrame | None = None
        if processed and passed_print not in (None, current):
            problem = (
                f"partition {day} was already processed (features built from the delivery "
                f"{str(passed_print)[:12]}), and this second delivery differs from it "
                f"({current[:12]}): the model trained on the first one"
            )
        else:
            try:
                frame = read_partition(store, partition_dir)
            except StorageError as err:
                problem = str(err)
            else:
                if frame.empty:
                    files = len(store.data_files(partition_dir))
                    problem = f"partition {day} is empty: its {files} data file(s) hold 0 rows"
        report = ValidationReport(
            day, False, 0 if frame is None else len(frame), report_path=report_path, fingerprint=current,
            validated_at=gx_run.run_time.isoformat(timespec="seconds"), passed_fingerprint=passed_print,
        )
        if problem is not None or frame is None:
            report.problem = problem
            integrity = load_suite(INTEGRITY_SUITE)
            result = gx_run.run(integrity, pd.DataFrame({"problem": pd.Series([problem], dtype="string")}), {})
            report.checks = compact(result, integrity)
        else:
            derived, params, report.notes = event_parameters(store, day, frame, settings)
            events_suite = load_suite(EVENTS_SUITE)
            derived = suite_columns(derived, events_suite)
            del frame  # the suite's columns live on in ``derived`` (shared, not copied); the rest can go
            report.checks = compact(gx_run.run(events_suite, derived, params), events_suite)
            report.checks += _validate_catalog(store, day, settings, gx_run, report)
        report.success = report.problem is None and all(c["success"] for c in report.checks)
        if report.success:
            report.passed_fingerprint = current
        refused = not report.success and accept_invalid and report.problem is not None
        if not report.success and accept_invalid and not refused:
            from recsys import registry

            report.accepted = registry.record_accepted_invalid(
                store, day, reason, [describe(c) for c in report.failed], run_id
            )
            report.passed_fingerprint = current
        report.data_docs = {"index": SITE_INDEX, "overview": OVERVIEW, "pages": gx_run.pages}
        gx_run.publish([*_other_summaries(store, day), report.as_dict()])

    if refused:
        store.write_json(report_path, report.as_dict())
        _quarantine(store, day, report)
        raise ValidationFailed(
            f"partition {day} cannot be accepted: {report.problem}. Acceptance only overrides failed "
            f"expectations of readable data. Report: {store.uri(report_path)}; Data Docs: "
            f"{store.uri(OVERVIEW)}. The champion is unchanged."
        )
    if report.accepted is not None:
        store.write_json(report_path, report.as_dict())
        log.warning("%s failed validation but was accepted by on-call: %s", day, reason)
        return report
    store.write_json(report_path, report.as_dict())
    if report.success:
        if accept_invalid:
            log.info("%s passed validation; accept_invalid was not needed and nothing was recorded", day)
        log.info("%s passed validation: %d rows, %d checks", day, report.rows, len(report.checks))
        return report
    _quarantine(store, day, report)
    what = report.problem or "failed expectations: " + "; ".join(describe(c) for c in report.failed)
    raise ValidationFailed(
        f"partition {day} is invalid and was quarantined to "
        f"{store.uri(layout.quarantine_events(day))}; {what}. Report: {store.uri(report_path)}; Data Docs: "
        f"{store.uri(OVERVIEW)}. The champion is unchanged and later dates wait. Fix the upstream data and "
        "republish the partition, then rerun this date; or, if the data is fine to train on, rerun it with "
        "accept_invalid and an accept_reason."
    )


def _validate_catalog(
    store: PartitionStore, day: date, settings: Settings, gx_run: Any, report: ValidationReport
) -> list[dict[str, Any]]:
    """The catalog suite over the day's catalog snapshot; a missing snapshot is noted, not failed."""
    catalog_dir = layout.raw_catalog(day)
    if not store.is_complete(catalog_dir):
        report.notes["catalog"] = f"no catalog snapshot for {day} ({store.uri(catalog_dir)}); not checked"
        return []
    try:
        catalog = read_partition(store, catalog_dir)
    except StorageError as err:
        report.problem = f"the catalog snapshot {err}"
        return []
    suite = load_suite(CATALOG_SUITE)
    params = {"max_id_length": settings.validation_max_id_length, "max_price": settings.validation_max_price}
    report.notes["catalog"] = f"{len(catalog)} items in {store.uri(catalog_dir)}"
    return compact(gx_run.run(suite, catalog, params), suite)


def _other_summaries(store: PartitionStore, day: date) -> list[dict[str, Any]]:
    """The latest summary of every validated date except ``day`` (for the Data Docs overview)."""
    summaries = []
    for other in store.partitions(layout.VALIDATION_REPORTS, complete_only=False):
        summary = previous_summary(store, other) if other != day else None
        if summary is not None:
            summaries.append(summary)
    return summaries


def _report_from_summary(day: date, summary: dict[str, Any]) -> ValidationReport:
    return ValidationReport(
        day, bool(summary["success"]), int(summary["rows"]), list(summary["checks"]), summary.get("problem"),
        summary.get("report_path", _summary_path(day)), summary.get("fingerprint"),
        summary.get("passed_fingerprint"), dict(summary.get("notes") or {}), dict(summary.get("data_docs") or {}),
        summary.get("accepted"), summary.get("validated_at"),
    )


def _quarantine(store: PartitionStore, day: date, report: ValidationReport) -> None:
    """Copy the partition's files to quarantine with the reasons; the raw data stays untouched.

    An earlier quarantined delivery of the same date that differs from this one is kept under
    ``_previous/<fingerprint>/``, so nothing that was ever delivered is lost.
    """
    import json
    import tempfile

    source = layout.raw_events(day)
    target = layout.quarantine_events(day)
    with tempfile.TemporaryDirectory(prefix="recsys-quarantine-") as tmp:
        local = Path(tmp) / "q"
        if store.exists(target):
            store.download_dir(target, local)
            old_reason = local / "reason.json"
            old = json.loads(old_reason.read_text()) if old_reason.exists() else {}
            old_print = old.get("fingerprint")
            keep = [p for p in local.iterdir() if p.name != "_previous"]
            if old_print and old_print != report.fingerprint:
                aside = local / "_previous" / str(old_print)[:16]
                aside.mkdir(parents=True, exist_ok=True)
                for path in keep:
                    path.rename(aside / path.name)
            else:
                for path in keep:  # the same delivery quarantined again: replace its copy
                    if path.is_file():
                        path.unlink()
        local.mkdir(parents=True, exist_ok=True)
        for name in store.list_dir(source):
            if name.startswith("."):
                continue
            (local / name).write_bytes(store.read_bytes(f"{source}/{name}"))
        (local / "reason.json").write_text(
            json.dumps(
                {
                    "date": day.isoformat(),
                    "quarantined_at": datetime.now(UTC).isoformat(),
                    "problem": report.problem,
                    "failed": report.failed,
                    "failed_descriptions": [describe(c) for c in report.failed],
                    "report_path": report.report_path,
                    "data_docs": report.data_docs,
                    "fingerprint": report.fingerprint,
                },
                indent=2, sort_keys=True, default=str,
            )
            + "\n"
        )
        store.publish_dir(local, target)
    log.error("quarantined %s: %s", day, report.problem or [c["check"] for c in report.failed])


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)  # numpy integers are ints; plain ones print without "np.int64(...)"
    if isinstance(value, float):
        return float(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        return _jsonable(value.item())  # other numpy scalars
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
