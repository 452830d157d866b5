"""Great Expectations results as the product keeps them: one JSON-able dict per expectation, the
partition's :class:`ValidationReport` and its summary file (``reports/validation/dt=<day>/summary.json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from recsys.errors import RecsysError
from recsys.registry import HistoryEntry
from recsys.storage import PartitionStore, layout


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
    accepted: HistoryEntry | None = None  # on-call accepted this failed partition (who, why)
    validated_at: str | None = None
    # how close the day came to each threshold (:func:`recsys.validation.health.margins`)
    margins: dict[str, Any] = field(default_factory=dict)

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
            "margins": self.margins,
        }

    @classmethod
    def from_summary(cls, day: date, summary: dict[str, Any]) -> ValidationReport:
        """The report a stored summary (:meth:`as_dict`) describes."""
        return cls(
            day, bool(summary["success"]), int(summary["rows"]), list(summary["checks"]), summary.get("problem"),
            summary.get("report_path", layout.validation_summary(day)), summary.get("fingerprint"),
            summary.get("passed_fingerprint"), dict(summary.get("notes") or {}),
            dict(summary.get("data_docs") or {}), summary.get("accepted"), summary.get("validated_at"),
            dict(summary.get("margins") or {}),
        )


def previous_summary(store: PartitionStore, day: date) -> dict[str, Any] | None:
    """The summary of the last validation of ``day``, if any."""
    path = layout.validation_summary(day)
    return store.read_json(path) if store.exists(path) else None


def other_summaries(store: PartitionStore, day: date) -> list[dict[str, Any]]:
    """The latest summary of every validated date except ``day`` (for the Data Docs overview)."""
    summaries = []
    for other in store.partitions(layout.VALIDATION_REPORTS, complete_only=False):
        summary = previous_summary(store, other) if other != day else None
        if summary is not None:
            summaries.append(summary)
    return summaries


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
