"""Validate one day's raw partition against the suites in ``expectations/`` (see :mod:`.suites`).

Every run writes ``reports/validation/dt=<day>/summary.json`` (each expectation, observed value,
pass/fail) and rebuilds the Data Docs at ``reports/validation/site/`` (see :mod:`recsys.validation.docs`).
A partition that fails is copied to ``quarantine/events/dt=<day>/`` with a ``reason.json`` and
:class:`ValidationFailed` is raised; the raw partition itself is never modified or deleted. On-call may
accept a failed partition with a reason (recorded in the registry history); an identical redelivery of
a partition that already passed changes nothing.

The partition is read in chunks of at most ``RECSYS_CHUNK_ROWS`` rows (:class:`recsys.features.chunks.ChunkReader`),
so memory is bounded by the chunk, not the partition: a first pass counts what the partition-level parameters
need (rows, new users and items against the vocab tables, the top item, the event ids' hashes), a second runs
the events suite on each chunk and merges the chunks' results into the one a run over the whole partition
gives (:mod:`recsys.validation.merge`; same verdict, summary and Data Docs). A partition of one chunk, or
whose chunks differ in their columns' dtypes (e.g. a null in some part files only), is validated as one frame.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pandas as pd

from recsys import registry, schema
from recsys.config import Settings
from recsys.features import vocab
from recsys.features.chunks import ChunkReader, FirstOccurrence, release_memory
from recsys.storage import PartitionStore, StorageError, layout
from recsys.storage.raw import fingerprint, read_delivery, read_partition
from recsys.validation.docs import OVERVIEW, SITE_INDEX, DocsRun, docs_run, rewrite_stored
from recsys.validation.health import margins
from recsys.validation.merge import PartitionAggregates, merge_results
from recsys.validation.quarantine import quarantine
from recsys.validation.results import (
    ValidationFailed,
    ValidationReport,
    compact,
    describe,
    other_summaries,
    previous_summary,
)
from recsys.validation.suites import (
    CATALOG_SUITE,
    EVENTS_SUITE,
    INTEGRITY_SUITE,
    NEW_ITEM,
    NEW_USER,
    TOP_ITEM,
    TRAILING_KEYS,
    EventTotals,
    add_counts,
    catalog_parameters,
    derived_columns,
    event_parameters,
    item_counts,
    known_ids,
    load_suite,
    new_id_flags,
    partition_parameters,
    suite_columns,
    top_item,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventsEngine:
    """How a partition's events are read and checked; everything around it (publication, reruns, acceptance,
    catalog, reports, Data Docs, quarantine) is :func:`validate_partition`'s, the same for every engine.

    ``read(store, settings, day, fingerprint, passed_fingerprint)`` -> (the partition-level problem or None,
    the read delivery with its ``rows``); ``check(store, settings, day, gx_run, report, delivery)`` runs the
    events suite and puts its checks, notes and margins into ``report``. pandas: :data:`PANDAS`; Spark:
    :func:`recsys.spark.validate.validate_partition`.
    """

    read: Callable[[PartitionStore, Settings, date, str, str | None], tuple[str | None, Any]]
    check: Callable[[PartitionStore, Settings, date, DocsRun, ValidationReport, Any], None]


def validate_partition(
    store: PartitionStore,
    settings: Settings,
    day: date,
    *,
    run_id: str | None = None,
    accept_invalid: bool = False,
    accept_reason: str | None = None,
    force: bool = False,
    engine: EventsEngine | None = None,
) -> ValidationReport:
    """Validate ``raw/events/dt=<day>`` (and its catalog); report, Data Docs; quarantine and raise on failure.

    ``accept_invalid`` with a non-empty ``accept_reason`` lets a partition that fails its expectations
    pass anyway (on-call's decision, recorded in the registry history with ``run_id``); partitions that
    cannot be read or differ from an already processed delivery cannot be accepted. ``force`` runs the
    suites again even when this delivery was validated before (e.g. after the expectations changed); it is
    recorded in the registry history as ``revalidation_forced``. ``engine`` reads and checks the events
    (default :data:`PANDAS`, in chunks of ``settings.chunk_rows``).
    """
    reason = (accept_reason or "").strip()
    if accept_invalid and not reason:
        raise ValidationFailed(
            f"accepting partition {day} despite failed validation needs a reason: rerun with accept_reason "
            "set to why the data is fine to train on (it is recorded in the registry history)"
        )
    partition_dir = layout.raw_events(day)
    if not _published(store, partition_dir):
        # not a bad partition, a missing one: nothing to quarantine (the sensor should have waited)
        raise StorageError(
            f"{store.uri(partition_dir)} has no _SUCCESS marker: the partition is not published yet"
        )

    current = fingerprint(store, partition_dir)
    before = previous_summary(store, day)
    passed_print = (before or {}).get("passed_fingerprint")
    if force:
        registry.record_manual(store, registry.REVALIDATION_FORCED, None, run_id, date=day.isoformat())
    elif before and passed_print == current and before.get("fingerprint") == current:
        log.info("%s was validated before from the identical delivery %s; nothing changes", day, current[:12])
        return ValidationReport.from_summary(day, before)

    report = _run_suites(store, settings, day, current, passed_print, reason if accept_invalid else None, run_id,
                         engine or PANDAS)
    store.write_json(report.report_path, report.as_dict())
    _conclude(store, day, report, accept_invalid)
    return report


def _published(store: PartitionStore, partition_dir: str) -> bool:
    """True if the partition has its marker, or a marker that cannot be checked (a link out of the store:
    reported by the suites' read like any other unreadable entry)."""
    try:
        return store.is_complete(partition_dir)
    except StorageError:
        return True


def _run_suites(
    store: PartitionStore, settings: Settings, day: date, current: str, passed_print: str | None,
    accept_reason: str | None, run_id: str | None, engine: EventsEngine,
) -> ValidationReport:
    """Run the suites that apply, record an acceptance (``accept_reason`` given), publish the Data Docs."""
    with docs_run(store, day) as gx_run:
        problem, scan = engine.read(store, settings, day, current, passed_print)
        report = ValidationReport(
            day, False, 0 if scan is None else scan.rows, report_path=layout.validation_summary(day),
            fingerprint=current, validated_at=gx_run.run_time.isoformat(timespec="seconds"),
            passed_fingerprint=passed_print,
        )
        if problem is not None or scan is None:
            report.problem = problem
            integrity = load_suite(INTEGRITY_SUITE)
            result = gx_run.run(integrity, pd.DataFrame({"problem": pd.Series([problem], dtype="string")}), {})
            report.checks = compact(result, integrity)
        else:
            engine.check(store, settings, day, gx_run, report, scan)
            report.checks += _validate_catalog(store, day, settings, gx_run, report)
        report.success = report.problem is None and all(c["success"] for c in report.checks)
        if report.success:
            report.passed_fingerprint = current
        elif accept_reason is not None and report.problem is None:
            report.accepted = registry.record_accepted_invalid(
                store, day, accept_reason, [describe(c) for c in report.failed], run_id
            )
            report.passed_fingerprint = current
        report.data_docs = {"index": SITE_INDEX, "overview": OVERVIEW, "pages": gx_run.pages}
        gx_run.publish([*other_summaries(store, day), report.as_dict()])
    return report


def _run_events_suite(
    store: PartitionStore, settings: Settings, day: date, gx_run: DocsRun, report: ValidationReport, scan: Scan
) -> None:
    """The events suite over the partition: one run over one frame, or one per chunk merged into one result."""
    events_suite = load_suite(EVENTS_SUITE)
    if scan.frame is not None:  # one chunk, or chunks whose dtypes differ: the whole partition as one frame
        derived, params, report.notes = event_parameters(store, day, scan.frame, settings)
        derived = suite_columns(derived, events_suite)
        scan.frame = None  # the suite's columns live on in ``derived`` (shared, not copied); the rest can go
        average, days, top = (params.pop(key) for key in TRAILING_KEYS)
        result = gx_run.run(events_suite, derived, params)
        del derived
    else:
        params, report.notes = partition_parameters(store, day, settings, scan.totals, scan.known_counts)
        average, days, top = (params.pop(key) for key in TRAILING_KEYS)
        result = _run_chunked(gx_run, events_suite, params, scan)
    report.checks = compact(result, events_suite)
    report.margins = margins(report.checks, average=average, days=days, top_item=top)


def _run_chunked(gx_run: DocsRun, suite: dict[str, Any], params: dict[str, Any], scan: Scan) -> Any:
    """The suite over every chunk of the partition (a second read), merged into the whole partition's result."""
    runs = []
    distinct = 0
    for chunk in scan.reader:
        if schema.EVENT_ID in chunk.columns:
            ids = chunk[schema.EVENT_ID]
            distinct += int((ids.notna() & ~scan.event_ids.duplicated(ids)).sum())
        derived = suite_columns(derived_columns(chunk, scan.known, scan.totals.top_item), suite)
        del chunk
        runs.append(gx_run.run(suite, derived, params))
        rows = len(derived)
        del derived
        release_memory(rows)
    if scan.reader.fingerprint != scan.fingerprint:
        raise StorageError(
            f"{gx_run.store.uri(scan.reader.partition_dir)} changed while it was being validated (a redelivery in "
            f"progress?): rerun the validate step for {gx_run.day} once upstream has finished publishing it"
        )
    totals = scan.totals
    aggregates = PartitionAggregates(
        rows=scan.rows, distinct={schema.EVENT_ID: distinct}, nonnull={schema.EVENT_ID: scan.nonnull_event_ids},
        sums={NEW_USER: float(totals.new_users), NEW_ITEM: float(totals.new_items), TOP_ITEM: float(totals.top_count)},
    )
    merged = merge_results(runs, aggregates)
    keys = list({key.to_tuple(): key for key in gx_run.result_ids}.values())  # every chunk's run: one key
    gx_run.result_ids[:] = keys
    for key in keys:
        if key.expectation_suite_identifier.name == suite["name"]:
            rewrite_stored(gx_run._result_file(key), merged)
    return merged


@dataclass
class Scan:
    """The first read of a partition: what the partition-level parameters need, counted over every chunk.

    ``frame`` holds the whole partition when it is validated as one frame (a single chunk, or chunks whose
    columns or dtypes differ, where only one frame gives today's dtypes); else ``reader`` reads the chunks
    again for the suite runs.
    """

    reader: ChunkReader
    fingerprint: str | None
    rows: int = 0
    chunks: int = 0
    known: dict[str, pd.Index] = field(default_factory=dict)
    totals: EventTotals = field(default_factory=lambda: EventTotals(0, 0, 0, None, 0))
    nonnull_event_ids: int = 0
    event_ids: FirstOccurrence = field(default_factory=FirstOccurrence)
    frame: pd.DataFrame | None = None
    frame_print: str | None = None  # the fingerprint of a second, whole read (``frame`` of differing chunks)

    @property
    def known_counts(self) -> dict[str, int]:
        return {name: len(ids) for name, ids in self.known.items()}


def _scan(store: PartitionStore, settings: Settings, day: date) -> Scan:
    """Read the partition once in chunks (StorageError as ``read_delivery`` raises it); see :class:`Scan`."""
    reader = ChunkReader(store, layout.raw_events(day), chunk_rows=settings.chunk_rows)
    scan = Scan(reader, None, known=known_ids(store, day))
    signature: list[tuple[str, str]] | None = None
    uniform = True
    counts: dict[str, int] = {}
    new_users = new_items = 0
    first: pd.DataFrame | None = None
    for chunk in reader:
        mine = [(str(c), str(t)) for c, t in chunk.dtypes.items()]
        signature = mine if signature is None else signature
        uniform = uniform and mine == signature
        scan.rows += len(chunk)
        scan.chunks += 1
        first = chunk if scan.chunks == 1 else None
        if schema.EVENT_ID in chunk.columns:
            scan.event_ids.add(chunk[schema.EVENT_ID])
            scan.nonnull_event_ids += int(chunk[schema.EVENT_ID].notna().sum())
        new_users += int(new_id_flags(chunk, schema.USER_ID, scan.known[vocab.USERS]).sum())
        new_items += int(new_id_flags(chunk, schema.ITEM_ID, scan.known[vocab.ITEMS]).sum())
        add_counts(counts, item_counts(chunk))
        rows = len(chunk)
        del chunk
        release_memory(rows)
    scan.fingerprint = reader.fingerprint
    top, top_count = top_item(counts)
    del counts
    scan.totals = EventTotals(scan.rows, new_users, new_items, top, top_count)
    if scan.chunks == 1:
        scan.frame = first
    elif not uniform:  # e.g. a column with nulls in some chunks only: today's dtypes come from one frame
        scan.frame, scan.frame_print = read_delivery(store, reader.partition_dir)
    return scan


def processed_differently(store: PartitionStore, day: date, current: str, passed_print: str | None) -> str | None:
    """The problem of a delivery ``current`` of ``day`` whose features were built from another delivery (None:
    no features yet, or built from this one). Both engines' reads check it first."""
    if not store.is_complete(layout.features(day)):
        return None
    stats_path = f"{layout.features(day)}/{layout.STATS_FILE}"
    built = (store.read_json(stats_path) if store.exists(stats_path) else {}).get("fingerprint") or passed_print
    if built in (None, current):
        return None
    return (f"partition {day} was already processed (features built from the delivery "
            f"{str(built)[:12]}), and this later delivery differs from it "
            f"({current[:12]}): the model of {day} was trained on the earlier one, not on this")


def _read_events(
    store: PartitionStore, settings: Settings, day: date, current: str, passed_print: str | None
) -> tuple[str | None, Scan | None]:
    """(the partition-level problem or None, the partition's :class:`Scan` or None)."""
    partition_dir = layout.raw_events(day)
    processed = processed_differently(store, day, current, passed_print)
    if processed is not None:
        return processed, None
    try:
        scan = _scan(store, settings, day)
    except StorageError as err:
        return str(err), None
    if scan.fingerprint != current or scan.frame_print not in (None, current):
        # what the report names must be what the suites saw
        raise StorageError(
            f"{store.uri(partition_dir)} changed while it was being validated (a redelivery in progress?): rerun "
            f"the validate step for {day} once upstream has finished publishing it"
        )
    if scan.rows == 0:
        files = len(store.data_files(partition_dir))
        return f"partition {day} is empty: its {files} data file(s) hold 0 rows", scan
    return None, scan


def _conclude(store: PartitionStore, day: date, report: ValidationReport, accept_invalid: bool) -> None:
    """Log a pass or an acceptance; quarantine and raise otherwise."""
    if report.success:
        if accept_invalid:
            log.info("%s passed validation; accept_invalid was not needed and nothing was recorded", day)
        log.info("%s passed validation: %d rows, %d checks", day, report.rows, len(report.checks))
        return
    if report.accepted is not None:
        log.warning("%s failed validation but was accepted by on-call: %s", day, report.accepted.get("reason"))
        return
    quarantine(store, day, report)
    summary = store.uri(report.report_path)
    if accept_invalid:  # not accepted although asked: the partition has a problem acceptance cannot override
        raise ValidationFailed(
            f"partition {day} cannot be accepted: {report.problem}. Acceptance only overrides failed "
            f"expectations of readable data. Report: {summary}; Data Docs: "
            f"{store.uri(OVERVIEW)}. The champion is unchanged."
        )
    what = report.problem or "failed expectations: " + "; ".join(describe(c) for c in report.failed)
    raise ValidationFailed(
        f"partition {day} is invalid and was quarantined to "
        f"{store.uri(layout.quarantine_events(day))}; {what}. Report: {summary}; Data Docs: "
        f"{store.uri(OVERVIEW)}. The champion is unchanged and later dates wait. Fix the upstream data and "
        "republish the partition, then rerun this date; or, if the data is fine to train on, rerun it with "
        "accept_invalid and an accept_reason."
    )


def _validate_catalog(
    store: PartitionStore, day: date, settings: Settings, gx_run: DocsRun, report: ValidationReport
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
    report.notes["catalog"] = f"{len(catalog)} items in {store.uri(catalog_dir)}"
    return compact(gx_run.run(suite, catalog, catalog_parameters(settings)), suite)


# the default engine: pandas in this process, the partition in chunks of settings.chunk_rows
PANDAS = EventsEngine(read=_read_events, check=_run_events_suite)
