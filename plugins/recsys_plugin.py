"""The recsys Airflow plugin: model registry and validation report pages in the Airflow UI, and task links.

- A FastAPI app (``recsys_ui/app.py``) that the API server mounts under ``/recsys``: ``/recsys/registry``,
  ``/recsys/validation``, ``/recsys/validation/<date>`` and ``/recsys/reports/...`` (the Data Docs).
  Every route needs a logged-in Airflow user allowed to read DAGs (the UI's session cookie does it).
- Two entries in the Airflow navigation bar, *Registry* and *Validation*, that show those
  pages inside the UI (``/plugin/recsys-registry``, ``/plugin/recsys-validation``).
- A listener (``recsys_airflow/pool_guard.py``): when a recsys DAG run starts, the scheduler creates the
  registry pool if it is missing (Airflow would otherwise leave its tasks "scheduled" for ever).
- Extra links on the recsys DAGs' tasks (``recsys_ui/links.py``): *Validation report* on ``validate``,
  *Model registry* on the tasks that train, evaluate, deploy or roll back a version (``MODEL_TASKS``: the
  incremental DAG's ``fine_tune`` .. ``refresh_serving_index``, the full retrain's ``train_from_scratch`` ..
  ``deploy``, the rollback DAG's ``rollback``).

The pages read the partition store that the pipeline writes (``RECSYS_STORAGE_*`` of the API server's
environment; on HDFS the NameNode comes from ``RECSYS_WEBHDFS_URL`` or else the Airflow connection
``RECSYS_WEBHDFS_CONN_ID``, as in the DAG: ``recsys_airflow.runtime.with_connection``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends
from recsys_airflow.pool_guard import RegistryPoolGuard
from recsys_ui.app import create_app
from recsys_ui.links import URL_PREFIX, ModelRegistryLink, ValidationReportLink

if TYPE_CHECKING:
    from recsys.config import Settings
    from recsys.storage import PartitionStore


@functools.cache
def _settings() -> Settings:
    """The API server's recsys settings (read once; on HDFS with the NameNode of the Airflow connection)."""
    from recsys_airflow.runtime import settings_without_alerts, with_connection

    settings = settings_without_alerts()  # the UI sends no alerts: their secrets stay with the tasks
    if settings.storage_backend != "webhdfs" or settings.webhdfs_url:
        return settings
    from airflow.models.connection import Connection

    return with_connection(settings, Connection.get_connection_from_secrets(settings.webhdfs_conn_id))


def open_store() -> PartitionStore:
    from recsys.storage import open_store as open_partition_store

    return open_partition_store(_settings())


def key_metric() -> str:
    from recsys.report import key_metric as name

    return name(_settings().k)


def _require_dag_reader() -> Any:
    """Airflow's own check: an authenticated user (JWT cookie or bearer token) who may read DAGs."""
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return Depends(requires_access_dag(method="GET"))


app = create_app(open_store, key_metric, dependencies=[_require_dag_reader()])

ICON = (
    "data:image/svg+xml;utf8,<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' fill='none' "
    "stroke='%234a5568' stroke-width='2'><path d='{}'/></svg>"
)


class RecsysPlugin(AirflowPlugin):
    name = "recsys"
    # AirflowPlugin declares these as plain list attributes (not ClassVar), so overrides keep that type
    fastapi_apps: list[Any] = [  # noqa: RUF012
        {"app": app, "url_prefix": URL_PREFIX, "name": "recsys registry and validation reports"}
    ]
    external_views: list[Any] = [  # noqa: RUF012
        {
            "name": "Registry",
            "href": f"{URL_PREFIX.lstrip('/')}/registry",
            "url_route": "recsys-registry",
            "destination": "nav",
            "nav_top_level": True,
            "icon": ICON.format("M3 17l5-5 4 4 8-8M14 8h6v6"),
        },
        {
            "name": "Validation",
            "href": f"{URL_PREFIX.lstrip('/')}/validation",
            "url_route": "recsys-validation",
            "destination": "nav",
            "nav_top_level": True,
            "icon": ICON.format("M9 11l3 3 8-8M20 12v7a1 1 0 0 1-1 1H5a1 1 0 0 1-1-1V5a1 1 0 0 1 1-1h11"),
        },
    ]
    global_operator_extra_links: list[Any] = [ValidationReportLink(), ModelRegistryLink()]  # noqa: RUF012
    # in the scheduler: a recsys DAG run never waits for ever on a missing registry pool
    listeners: list[Any] = [RegistryPoolGuard()]  # noqa: RUF012
