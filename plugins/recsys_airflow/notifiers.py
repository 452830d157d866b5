"""The failure callback of every recsys task: one alert through ``RECSYS_NOTIFY_BACKEND``.

The channel's address and secret come from the Airflow connection ``recsys_smtp`` or ``recsys_webhook`` when
defined (:func:`recsys_airflow.runtime.alert_settings`), else from ``RECSYS_NOTIFY_*``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseNotifier

from recsys_airflow.runtime import alert_settings, context_day

log = logging.getLogger(__name__)


class RecsysFailureNotifier(BaseNotifier):
    """Send :func:`recsys.notify.failure_alert` when a task fails for good (after its retries, or at once).

    A notifier that cannot deliver (SMTP relay down, webhook refusing) logs the alert instead; the
    callback itself never raises, so a broken alert channel cannot hide the task's own error.

    :param partitioned: the DAG processes one partition per run (the alert names its date).
    """

    template_fields: Sequence[str] = ()

    def __init__(self, *, partitioned: bool = False) -> None:
        super().__init__()
        self.partitioned = partitioned

    def notify(self, context: Any) -> None:
        from recsys.config import ConfigError
        from recsys.notify import LogNotifier, NotifyError, deliver, failure_alert, notifier_from_settings

        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        day = None
        if self.partitioned:
            with contextlib.suppress(ValueError):
                day = context_day(context)
        error = context.get("exception")
        alert = failure_alert(
            dag_id=getattr(ti, "dag_id", "?"), task_id=getattr(ti, "task_id", "?"),
            run_id=str(context.get("run_id") or getattr(dag_run, "run_id", "?")),
            partition=day.isoformat() if day else None,
            error=f"{type(error).__name__}: {error}" if error is not None else "unknown (no exception in the context)",
            try_number=getattr(ti, "try_number", None), log_url=getattr(ti, "log_url", None),
        )
        notifier: Any
        try:
            notifier = notifier_from_settings(alert_settings())
        except ConfigError as err:
            log.error("alert settings are invalid (%s); logging the alert instead", err)
            notifier = LogNotifier()
        try:
            deliver(alert, notifier)
        except NotifyError:
            pass  # deliver() logged the alert and why it could not be sent
