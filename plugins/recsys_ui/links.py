"""Extra links on the pipeline's tasks: the validate task opens its partition's validation report, the
training, evaluation and deployment tasks open the model registry at their date (and version).

They are *global* operator links (every task of every DAG gets the buttons); ``get_link`` returns ``""``
for tasks outside the recsys DAGs, which the UI shows as no link. The API server computes them when a
task's page is opened: the partition date is the run's ``partition_date`` param (``dag_run.conf``) or else
its logical date, and the version comes from the task's XCom return value when it has one.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any
from urllib.parse import urlencode

from airflow.sdk import BaseOperatorLink

log = logging.getLogger(__name__)

URL_PREFIX = "/recsys"  # where recsys_plugin.py mounts the app
DAG_PREFIX = "recsys_"  # the DAGs these links belong to
VALIDATION_TASKS = frozenset({"validate"})
# tasks that produce or judge a model version (their XCom return value may name it)
MODEL_TASKS = frozenset({
    "fine_tune", "evaluate", "deploy", "deploy_if_blessed", "refresh_serving_index",
    "train_from_scratch", "full_retrain", "train", "rollback",
})
VERSION_KEYS = ("version", "candidate_version", "to")  # fine_tune/deploy, evaluate, rollback


def validation_url(day: date | None, base: str = "") -> str:
    """The validation page of ``day`` (the list of every partition when the date is unknown)."""
    return f"{base}{URL_PREFIX}/validation" + (f"/{day.isoformat()}" if day else "")


def registry_url(day: date | None, version: int | None, base: str = "") -> str:
    """The registry page, highlighting partition ``day`` and ``version`` when known."""
    query = {k: v for k, v in (("date", day.isoformat() if day else None), ("version", version)) if v is not None}
    anchor = f"#v-{version}" if version is not None else (f"#d-{day.isoformat()}" if day else "")
    return f"{base}{URL_PREFIX}/registry" + (f"?{urlencode(query)}" if query else "") + anchor


def version_from(value: Any) -> int | None:
    """The model version a task returned (``version``, ``candidate_version`` or ``to``), if any."""
    if isinstance(value, dict):
        for key in VERSION_KEYS:
            found = value.get(key)
            if isinstance(found, int) and not isinstance(found, bool):
                return found
    return None


def partition_day(conf: dict[str, Any] | None, logical_date: Any) -> date | None:
    """The run's partition date: its ``partition_date`` param, else the logical date's day, else None."""
    explicit = (conf or {}).get("partition_date")
    if explicit:
        try:
            return date.fromisoformat(str(explicit))
        except ValueError:
            return None
    return logical_date.date() if logical_date is not None else None


def _base_path() -> str:
    """The path of the Airflow UI's base URL (``[api] base_url``), '' when served at the root."""
    from urllib.parse import urlsplit

    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def _run_day(dag_id: str, run_id: str) -> date | None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.execute(
            select(DagRun.conf, DagRun.logical_date).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        ).first()
    return partition_day(run.conf, run.logical_date) if run else None


def _returned_version(ti_key: Any) -> int | None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(
                key="return_value", run_id=ti_key.run_id, dag_ids=ti_key.dag_id, task_ids=ti_key.task_id,
                map_indexes=ti_key.map_index,
            ).with_only_columns(XComModel.value)
        ).first()
    return version_from(XComModel.deserialize_value(row)) if row else None


class ValidationReportLink(BaseOperatorLink):
    """"Validation report" on the validate task: that partition's checks and Data Docs."""

    name = "Validation report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if not ti_key.dag_id.startswith(DAG_PREFIX) or ti_key.task_id not in VALIDATION_TASKS:
            return ""
        return validation_url(_run_day(ti_key.dag_id, ti_key.run_id), _base_path())


class ModelRegistryLink(BaseOperatorLink):
    """"Model registry" on the tasks that train, evaluate, deploy or roll back: the registry at their date."""

    name = "Model registry"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if not ti_key.dag_id.startswith(DAG_PREFIX) or ti_key.task_id not in MODEL_TASKS:
            return ""
        day = _run_day(ti_key.dag_id, ti_key.run_id)
        try:
            version = _returned_version(ti_key)
        except Exception:
            log.warning("could not read the XCom of %s for its version", ti_key, exc_info=True)
            version = None
        return registry_url(day, version, _base_path())
