"""Shared Airflow glue of the recsys DAGs (not a DAG file: listed in ``.airflowignore``).

- :func:`settings`: ``recsys.config.Settings`` from the environment; on HDFS the NameNode comes from the
  Airflow connection ``RECSYS_WEBHDFS_CONN_ID``.
- :class:`RecsysFailureNotifier`: the ``on_failure_callback`` of every recsys task. Airflow calls it
  when a task fails for good (after its retries, or at once for a domain error); it sends
  :func:`recsys.notify.failure_alert` through the notifier ``RECSYS_NOTIFY_BACKEND`` chooses.
- :func:`alert_if_late` and :class:`LateAwareWebHdfsSensor`: the partition sensors call it on every look
  that finds no ``_SUCCESS`` marker; past ``RECSYS_PARTITION_LATE_HOUR`` it warns once per partition.

DAG files import this module by name: Airflow puts the DAG folder on ``sys.path`` when it parses and
runs DAGs, and :func:`importable` does the same for tools that load a DAG file by path.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, date, datetime
from typing import Any

from airflow.providers.apache.hdfs.sensors.web_hdfs import WebHdfsSensor
from airflow.sdk import BaseNotifier
from airflow.sdk.exceptions import AirflowFailException

from recsys.errors import DOMAIN_ERRORS

log = logging.getLogger(__name__)


def webhdfs_conn_id() -> str:
    import os

    return os.environ.get("RECSYS_WEBHDFS_CONN_ID", "").strip() or "webhdfs_default"


def settings() -> Any:
    """Settings from the environment; on HDFS the NameNode address and user come from the Airflow connection.

    The connection (``RECSYS_WEBHDFS_CONN_ID``, type ``webhdfs``) is the one the ``WebHdfsSensor`` uses:
    host (several NameNodes separated by commas), port (WebHDFS, 9870), login (the HDFS user), schema (an
    optional URL prefix) and the extra ``{"use_ssl": true}`` for https.
    """
    from recsys.config import Settings

    result = Settings.from_env()
    if result.storage_backend != "webhdfs":
        return result
    from airflow.providers.apache.hdfs.hooks.webhdfs import WebHDFSHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    from recsys.storage.webhdfs import namenode_url

    conn_id = webhdfs_conn_id()
    try:
        conn = WebHDFSHook.get_connection(conn_id)
    except AirflowNotFoundException as err:
        raise AirflowFailException(
            f"the Airflow connection {conn_id!r} is not defined: create it (type webhdfs, host = the NameNode, "
            f"port = its WebHDFS port, login = the HDFS user) or set AIRFLOW_CONN_{conn_id.upper()}"
        ) from err
    use_ssl = str(conn.extra_dejson.get("use_ssl", False)).lower() == "true"
    return result.replace(
        webhdfs_url=namenode_url(conn.host or "", conn.port, conn.schema, use_ssl),
        webhdfs_user=conn.login or result.webhdfs_user,
    )


def partition_day(params: Any, logical_date: Any) -> date | None:
    """The ``partition_date`` param if set, else the logical date's day, else None."""
    explicit = (params or {}).get("partition_date")
    if explicit:
        return date.fromisoformat(str(explicit))
    return logical_date.date() if logical_date is not None else None


class RecsysFailureNotifier(BaseNotifier):
    """Failure callback: one alert per task that failed for good, through ``RECSYS_NOTIFY_BACKEND``.

    A notifier that cannot deliver (SMTP relay down, webhook refusing) logs the alert instead; the
    callback itself never raises, so a broken alert channel cannot hide the task's own error.
    ``partitioned``: the DAG processes one partition per run (the alert names its date).
    """

    def __init__(self, partitioned: bool = False) -> None:
        super().__init__()
        self.partitioned = partitioned

    def notify(self, context: Any) -> None:
        from recsys.config import ConfigError, Settings
        from recsys.notify import LogNotifier, NotifyError, deliver, failure_alert, notifier_from_settings

        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        day = None
        if self.partitioned:
            with contextlib.suppress(ValueError):
                day = partition_day(context.get("params"), getattr(dag_run, "logical_date", None))
        error = context.get("exception")
        alert = failure_alert(
            dag_id=getattr(ti, "dag_id", "?"), task_id=getattr(ti, "task_id", "?"),
            run_id=str(context.get("run_id") or getattr(dag_run, "run_id", "?")),
            partition=day.isoformat() if day else None,
            error=f"{type(error).__name__}: {error}" if error is not None else "unknown (no exception in the context)",
            try_number=getattr(ti, "try_number", None), log_url=getattr(ti, "log_url", None),
        )
        try:
            notifier = notifier_from_settings(Settings.from_env())
        except ConfigError as err:
            log.error("alert settings are invalid (%s); logging the alert instead", err)
            notifier = LogNotifier()
        try:
            deliver(alert, notifier)
        except NotifyError:
            pass  # deliver() logged the alert and why it could not be sent


def alert_if_late(context: Any) -> dict[str, Any] | None:
    """Warn once if the run's partition is missing past ``RECSYS_PARTITION_LATE_HOUR`` (see recsys.notify).

    Never fails the sensor: a broken alert channel or store is logged and the sensor keeps looking.
    """
    from recsys.notify import check_late, notifier_from_settings
    from recsys.storage import open_store

    day = partition_day(context.get("params"), context.get("logical_date"))
    if day is None:
        return None
    try:
        current = settings()
        return check_late(open_store(current), current, day, datetime.now(UTC), notifier_from_settings(current),
                          run_id=context.get("run_id"))
    except DOMAIN_ERRORS as err:
        log.warning("could not check or report whether partition %s is late: %s", day, err)
        return None


class LateAwareWebHdfsSensor(WebHdfsSensor):
    """The HDFS provider's ``WebHdfsSensor`` that also reports a late partition (:func:`alert_if_late`)."""

    def poke(self, context: Any) -> bool:
        found = bool(super().poke(context))
        if not found:
            alert_if_late(context)
        return found


def failure_callbacks(partitioned: bool = False) -> dict[str, Any]:
    """``default_args`` entries that alert on a task's final failure (see :class:`RecsysFailureNotifier`)."""
    return {"on_failure_callback": RecsysFailureNotifier(partitioned)}
