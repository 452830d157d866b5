"""Validate one raw events partition against the ``raw_events`` suite in ``expectations/``.

The result is always written to ``reports/validation/dt=<day>/summary.json``. A partition that
fails (an expectation, or a problem GX cannot express such as an unreadable file) is copied to
``quarantine/events/dt=<day>/`` with a ``reason.json`` and :class:`ValidationFailed` is raised; the
raw partition itself is never modified or deleted.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from recsys import schema
from recsys.storage import PartitionStore, StorageError, layout

log = logging.getLogger(__name__)

SUITES_DIR = Path(__file__).resolve().parents[2] / "expectations"
EVENTS_SUITE = "raw_events"


class ValidationFailed(RuntimeError):
    """A partition broke the data contract; it was quarantined and must not be trained on."""


@dataclass
class ValidationReport:
    """The compact, JSON-able outcome of validating one partition."""

    day: date
    success: bool
    rows: int
    checks: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None  # a partition-level problem that GX could not evaluate
    report_path: str = ""

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
        }


def load_suite(name: str = EVENTS_SUITE) -> dict[str, Any]:
    """The suite definition ``expectations/<name>.json`` as a dict."""
    path = SUITES_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ValidationFailed(f"expectation suite {path} is missing") from err


def read_partition(store: PartitionStore, partition_dir: str) -> pd.DataFrame:
    """Read every data file of a complete partition; partition-level problems raise StorageError."""
    if not store.is_complete(partition_dir):
        raise StorageError(f"{store.uri(partition_dir)} has no _SUCCESS marker: the partition is not published yet")
    files = store.data_files(partition_dir)
    if not files:
        raise StorageError(f"{store.uri(partition_dir)} has a _SUCCESS marker but no data files")
    frames = []
    for path in files:
        try:
            if path.endswith(".parquet"):
                frames.append(store.read_parquet(path))
            elif path.endswith(".csv"):
                frames.append(_read_csv(store.read_bytes(path)))
            else:
                raise StorageError(f"{store.uri(path)}: unknown data file type (expected .parquet or .csv)")
        except StorageError:
            raise
        except (OSError, ValueError) as err:  # pyarrow and pandas raise these for corrupt input
            raise StorageError(f"{store.uri(path)} cannot be read: {err}") from err
    return pd.concat(frames, ignore_index=True)


def _read_csv(data: bytes) -> pd.DataFrame:
    """A CSV data file with the canonical types: ids as text, ``event_time`` parsed as UTC.

    Unparseable times become nulls, which the suite's not-null expectation then reports.
    """
    import io

    frame = pd.read_csv(io.BytesIO(data), encoding="utf-8", dtype=str, keep_default_na=False, na_values=[""])
    for column, dtype in schema.EVENT_DTYPES.items():
        if column not in frame.columns:
            continue
        if column == schema.EVENT_TIME:
            frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce", format="ISO8601")
        elif dtype in ("int64", "float64"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
        else:
            frame[column] = frame[column].astype("string")
    return frame


def run_suite(frame: pd.DataFrame, day: date, suite: dict[str, Any]) -> list[dict[str, Any]]:
    """Run a GX suite over ``frame`` for partition ``day``; one compact dict per expectation."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("partition").add_dataframe_asset("events")
    batch = asset.add_batch_definition_whole_dataframe("whole")
    gx_suite = context.suites.add(gx.ExpectationSuite(**suite))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite['name']}-{day}", data=batch, suite=gx_suite)
    )
    day_start = datetime.combine(day, time.min, tzinfo=UTC)
    params = {
        "day_start": pd.Timestamp(day_start),
        "day_end": pd.Timestamp(day_start + timedelta(days=1) - timedelta(microseconds=1)),
    }
    result = definition.run(
        batch_parameters={"dataframe": frame}, expectation_parameters=params, result_format="SUMMARY"
    )
    checks = []
    for r in result.results:
        cfg = r.expectation_config
        if cfg is None:
            raise ValidationFailed(f"GX returned a result without its expectation for suite {suite['name']}")
        detail = r.result or {}
        error = (r.exception_info or {}).get("exception_message") if not r.success else None
        checks.append(
            {
                "expectation": cfg.type,
                "column": cfg.kwargs.get("column"),
                "success": bool(r.success),
                "observed_value": _jsonable(detail.get("observed_value")),
                "unexpected_count": detail.get("unexpected_count"),
                "unexpected_examples": [_jsonable(v) for v in detail.get("partial_unexpected_list", [])][:5],
                "error": error,
            }
        )
    return checks


def validate_partition(store: PartitionStore, day: date) -> ValidationReport:
    """Validate ``raw/events/dt=<day>``; write the report; quarantine and raise on failure."""
    partition_dir = layout.raw_events(day)
    report_path = f"{layout.validation_report(day)}/summary.json"
    if not store.is_complete(partition_dir):
        # not a bad partition, a missing one: nothing to quarantine (the sensor should have waited)
        raise StorageError(
            f"{store.uri(partition_dir)} has no _SUCCESS marker: the partition is not published yet"
        )
    try:
        frame = read_partition(store, partition_dir)
    except StorageError as err:
        report = ValidationReport(day, False, 0, problem=str(err), report_path=report_path)
    else:
        checks = run_suite(frame, day, load_suite())
        report = ValidationReport(
            day, all(c["success"] for c in checks), len(frame), checks, report_path=report_path
        )
    store.write_json(report_path, report.as_dict())
    if report.success:
        log.info("%s passed validation: %d rows, %d checks", day, report.rows, len(report.checks))
        return report
    _quarantine(store, day, report)
    what = report.problem or "failed expectations: " + ", ".join(
        f"{c['expectation']}({c['column']})" if c["column"] else c["expectation"] for c in report.failed
    )
    raise ValidationFailed(
        f"partition {day} is invalid and was quarantined to "
        f"{store.uri(layout.quarantine_events(day))}; {what}. Report: {store.uri(report_path)}. "
        "The champion is unchanged. Fix the upstream data and republish the partition, then rerun this date."
    )


def _quarantine(store: PartitionStore, day: date, report: ValidationReport) -> None:
    """Copy the partition's files to quarantine with the reasons; the raw data stays untouched."""
    source = layout.raw_events(day)
    target = layout.quarantine_events(day)
    for name in store.list_dir(source):
        if name.startswith("."):
            continue
        store.write_bytes(f"{target}/{name}", store.read_bytes(f"{source}/{name}"))
    store.write_json(
        f"{target}/reason.json",
        {
            "date": day.isoformat(),
            "quarantined_at": datetime.now(UTC).isoformat(),
            "problem": report.problem,
            "failed": report.failed,
            "report_path": report.report_path,
        },
    )
    log.error("quarantined %s: %s", day, report.problem or [c["expectation"] for c in report.failed])


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)
