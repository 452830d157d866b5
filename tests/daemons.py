"""Helpers shared by the fixtures that start test daemons (the HDFS minicluster, the Kafka broker)."""

from __future__ import annotations

from pathlib import Path


def log_tail(log: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a daemon's ``log``, headed by its path, for a failing test's message."""
    if not log.exists():
        return f"(no {log})"
    return f"--- last {lines} lines of {log} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
