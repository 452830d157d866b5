"""What a running recsys task needs: its settings and its partition date (one rule for both).

Secrets come from Airflow inside Airflow: the alert channel's address and credentials from the connections
``recsys_smtp`` (type smtp: host, port, login, password; extra ``from_email``) and ``recsys_webhook`` (type
http: the whole URL, token included, in the password; or a URL as host), looked up through Airflow's
secrets backends (environment ``AIRFLOW_CONN_*``, a Vault or cloud backend, the metadata database) when a
task runs. Undefined connections fall back to the ``RECSYS_NOTIFY_*`` settings, as the CLI reads them. Every
secret is registered with Airflow's secrets masker, so no task log shows it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from recsys.config import Settings

SMTP_CONN_ID = "recsys_smtp"
WEBHOOK_CONN_ID = "recsys_webhook"
ALERT_PREFIX = "RECSYS_NOTIFY_"


def kerberos_security() -> bool:
    """Airflow's ``[core] security`` is ``kerberos`` (the WebHDFS sensor then authenticates with SPNEGO)."""
    from airflow.sdk.configuration import conf

    return str(conf.get("core", "security", fallback="")).strip().lower() == "kerberos"


def with_connection(settings: Settings, conn: Any) -> Settings:
    """``settings`` with the NameNode address and user of a ``webhdfs`` Airflow connection.

    The connection is the one the ``WebHdfsSensor`` uses: host (several NameNodes separated by commas),
    port (WebHDFS, 9870), login (the HDFS user) and schema (an optional URL prefix) and the extra
    ``{"use_ssl": true}`` for https. When Airflow's ``[core] security`` is ``kerberos`` the provider's hook
    (so the sensor) uses SPNEGO with the worker's ticket and ignores the login; the store then does the same
    (``webhdfs_auth=kerberos``, the user only from ``RECSYS_WEBHDFS_USER``, which names a user to impersonate).
    """
    from recsys.storage.webhdfs import namenode_url

    use_ssl = str(conn.extra_dejson.get("use_ssl", False)).lower() == "true"
    url = namenode_url(conn.host or "", conn.port, conn.schema, use_ssl)
    if kerberos_security():
        return settings.replace(webhdfs_url=url, webhdfs_auth="kerberos")
    return settings.replace(webhdfs_url=url, webhdfs_user=conn.login or settings.webhdfs_user)


def _connection(conn_id: str) -> Any | None:
    """The Airflow connection ``conn_id`` through the secrets backends, or None if it is not defined."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def webhook_url(conn: Any) -> str | None:
    """The URL of a ``recsys_webhook`` connection: its password if that is a URL (the token is in it), else
    its host if that is a URL, else ``https://host[:port]`` and the extra ``endpoint``."""
    if conn.password and "://" in conn.password:
        return str(conn.password)
    if not conn.host:
        return None
    if "://" in conn.host:
        return str(conn.host)
    port = f":{conn.port}" if conn.port else ""
    return f"{conn.schema or 'https'}://{conn.host}{port}{conn.extra_dejson.get('endpoint', '')}"


def alert_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the alert channel's address and secret from its Airflow connection, if one is defined.

    Only the connection of ``RECSYS_NOTIFY_BACKEND`` is looked up (smtp: ``recsys_smtp``, webhook:
    ``recsys_webhook``); what it defines replaces the matching ``RECSYS_NOTIFY_*`` values.
    """
    result = dict(env)
    backend = env.get(f"{ALERT_PREFIX}BACKEND", "log").strip().lower()
    if backend == "smtp" and (conn := _connection(SMTP_CONN_ID)) is not None:
        values = {"SMTP_HOST": conn.host, "SMTP_PORT": conn.port, "SMTP_USER": conn.login,
                  "SMTP_PASSWORD": conn.password, "SMTP_FROM": conn.extra_dejson.get("from_email")}
        result |= {f"{ALERT_PREFIX}{name}": str(value) for name, value in values.items() if value}
    elif backend == "webhook" and (conn := _connection(WEBHOOK_CONN_ID)) is not None:
        if url := webhook_url(conn):
            result[f"{ALERT_PREFIX}WEBHOOK_URL"] = url
    return result


def _masked(settings: Settings) -> Settings:
    from airflow.sdk.log import mask_secret

    for name in settings.secret_fields():  # the task log redacts them, should anything print one
        if getattr(settings, name):
            mask_secret(getattr(settings, name), name)
    return settings


def alert_settings() -> Settings:
    """A task's settings with the alert channel from its Airflow connection (:func:`alert_env`); secrets masked."""
    from recsys.config import Settings

    return _masked(Settings.from_env(alert_env(os.environ)))


def settings_without_alerts() -> Settings:
    """``RECSYS_*`` without the alert settings: for DAG files when parsed and the UI, which send no alert (the
    alert secrets may live in Airflow connections, looked up only when a task runs)."""
    from recsys.config import Settings

    return Settings.from_env({k: v for k, v in os.environ.items() if not k.startswith(ALERT_PREFIX)})


def settings() -> Settings:
    """A task's settings: ``RECSYS_*`` of the worker, the alert channel from its Airflow connection
    (:func:`alert_settings`); on HDFS the NameNode comes from the Airflow connection.

    The secret fields (``Settings.secret_fields``) are registered with Airflow's secrets masker.

    The connection is ``Settings.webhdfs_conn_id`` (``RECSYS_WEBHDFS_CONN_ID``, default ``webhdfs_default``).
    """
    result = alert_settings()
    if result.storage_backend != "webhdfs":
        return result
    from airflow.providers.apache.hdfs.hooks.webhdfs import WebHDFSHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    conn_id = result.webhdfs_conn_id
    try:
        conn = WebHDFSHook.get_connection(conn_id)
    except AirflowNotFoundException as err:
        raise AirflowFailException(
            f"the Airflow connection {conn_id!r} is not defined: create it (type webhdfs, host = the NameNode, "
            f"port = its WebHDFS port, login = the HDFS user) or set AIRFLOW_CONN_{conn_id.upper()}"
        ) from err
    return with_connection(result, conn)


def announced_days(events: Any) -> list[date]:
    """The days announced by a run's triggering asset events, oldest first, each once.

    ``events``: the run's ``triggering_asset_events`` (a mapping of asset to its events), or None. An event
    the Kafka watcher made (``extra = {"from_trigger": true, "payload": {"date": "YYYY-MM-DD", ...}}``, the
    payload being :func:`recsys_airflow.assets.closed_day`'s return value) names one day; other events none.
    """
    return days_in_extras(getattr(event, "extra", None) for asset_events in (events or {}).values()
                          for event in asset_events)


def days_in_extras(extras: Any) -> list[date]:
    """The days named by asset events' ``extra`` dicts (see :func:`announced_days`), oldest first, each once;
    also what the UI's links read from a run's consumed asset events in the metadata database."""
    days: set[date] = set()
    for extra in extras:
        payload = (extra or {}).get("payload")
        if isinstance(payload, dict) and payload.get("date"):
            days.add(date.fromisoformat(str(payload["date"])))
    return sorted(days)


def partition_day(params: Any, logical_date: Any, events: Any = None) -> date | None:
    """A run's partition date: the ``partition_date`` param if set, else the logical date's day, else the
    oldest day its triggering asset events announce (an event-driven run has no logical date), else None.

    Scheduled runs use a data-interval timetable, so their logical date is the start of the day they
    process; a manual run's logical date is the date the operator picked. An event-driven run whose events
    announce several days (they queued while the previous run ran) processes the oldest; its last task
    announces the oldest closed day not processed yet (:func:`recsys.streaming.days.next_unprocessed`).
    """
    explicit = (params or {}).get("partition_date")
    if explicit:
        return date.fromisoformat(str(explicit))
    if logical_date is not None:
        return logical_date.date()
    announced = announced_days(events)
    return announced[0] if announced else None


def require_partition_day(params: Any, logical_date: Any, events: Any = None) -> date:
    """:func:`partition_day`, failing the task when the run has neither a param, a logical date nor an
    announced day."""
    day = partition_day(params, logical_date, events)
    if day is None:
        raise AirflowFailException(
            "this run has no logical date and no announced day: trigger it with the 'Partition date' parameter set"
        )
    return day


def _logical_date(context: Any) -> Any:
    logical = context.get("logical_date")
    return logical if logical is not None else getattr(context.get("dag_run"), "logical_date", None)


def context_day(context: Any) -> date | None:
    """:func:`partition_day` of a running task's context (params, logical date, triggering asset events)."""
    return partition_day(context.get("params"), _logical_date(context), context.get("triggering_asset_events"))


def require_context_day(context: Any) -> date:
    """:func:`require_partition_day` of a running task's context."""
    return require_partition_day(context.get("params"), _logical_date(context), context.get("triggering_asset_events"))
