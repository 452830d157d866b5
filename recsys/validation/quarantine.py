"""Quarantine: a copy of a failed partition with the reasons, under ``quarantine/events/dt=<day>/``.

The raw partition itself is never modified or deleted.
"""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

from recsys.storage import PartitionStore, StorageError, layout
from recsys.storage.raw import read_data_file
from recsys.validation.results import ValidationReport, describe

log = logging.getLogger(__name__)


def quarantine(store: PartitionStore, day: date, report: ValidationReport) -> None:
    """Copy the partition's files to quarantine with the reasons; the raw data stays untouched.

    An earlier quarantined delivery of the same date that differs from this one is kept under
    ``_previous/<fingerprint>/``, so nothing that was ever delivered is lost. Entries that cannot be read
    (a subdirectory, a link leading out of the store or nowhere) are listed under ``not_copied`` with why.
    """
    source = layout.raw_events(day)
    target = layout.quarantine_events(day)
    with tempfile.TemporaryDirectory(prefix="recsys-quarantine-") as tmp:
        local = Path(tmp) / "q"
        if store.exists(target):
            store.download_dir(target, local)
            old_reason = local / layout.REASON_FILE
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
        not_copied = {}
        for name in store.list_dir(source):
            if name.startswith("."):
                continue
            try:  # a subdirectory or a link out of the store is named in the reasons, never followed
                data = read_data_file(store, f"{source}/{name}")
            except StorageError as err:
                not_copied[name] = str(err)
                continue
            (local / name).write_bytes(data)
        (local / layout.REASON_FILE).write_text(
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
                    "not_copied": not_copied,  # entries of the partition that could not be read, and why
                },
                indent=2, sort_keys=True, default=str,
            )
            + "\n"
        )
        store.publish_dir(local, target)
    log.error("quarantined %s: %s", day, report.problem or [c["check"] for c in report.failed])
