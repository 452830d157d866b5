"""What a running recsys task needs: its settings and its partition date (one rule for both)."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from recsys.config import Settings


def with_connection(settings: Settings, conn: Any) -> Settings:
    """``settings`` with the NameNode address and user of a ``webhdfs`` Airflow connection.

    The connection is the one the ``WebHdfsSensor`` uses: host (several NameNodes separated by commas),
    port (WebHDFS, 9870), login (the HDFS user), schema (an optional URL prefix) and the extra
    ``{"use_ssl": true}`` for https.
    """
    from recsys.storage.webhdfs import namenode_url

    use_ssl = str(conn.extra_dejson.get("use_ssl", False)).lower() == "true"
    return settings.replace(
        webhdfs_url=namenode_url(conn.host or "", conn.port, conn.schema, use_ssl),
        webhdfs_user=conn.login or settings.webhdfs_user,
    )


def settings() -> Settings:
    """A task's settings: ``RECSYS_*`` of the worker; on HDFS the NameNode comes from the Airflow connection.

    The secret fields (``Settings.secret_fields``) are registered with Airflow's secrets masker.

    The connection is ``Settings.webhdfs_conn_id`` (``RECSYS_WEBHDFS_CONN_ID``, default ``webhdfs_default``).
    """
    from airflow.sdk.log import mask_secret

    from recsys.config import Settings

    result = Settings.from_env()
    for name in Settings.secret_fields():  # the task log redacts them, should anything print one
        if getattr(result, name):
            mask_secret(getattr(result, name), name)
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


def partition_day(params: Any, logical_date: Any) -> date | None:
    """A run's partition date: the ``partition_date`` param if set, else the logical date's day, else None.

    Scheduled runs use a data-interval timetable, so their logical date is the start of the day they
    process; a manual run's logical date is the date the operator picked.
    """
    explicit = (params or {}).get("partition_date")
    if explicit:
        return date.fromisoformat(str(explicit))
    return logical_date.date() if logical_date is not None else None


def require_partition_day(params: Any, logical_date: Any) -> date:
    """:func:`partition_day`, failing the task when the run has neither a param nor a logical date."""
    day = partition_day(params, logical_date)
    if day is None:
        raise AirflowFailException("this run has no logical date: trigger it with the 'Partition date' parameter set")
    return day
