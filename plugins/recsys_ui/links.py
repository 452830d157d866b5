"""Extra links on the pipeline's tasks: the validate task opens its partition's validation report, the
training, evaluation, deployment and rollback tasks open the model registry at their version (and date).

They are *global* operator links (every task of every DAG gets the buttons); ``get_link`` returns ``""``
for tasks outside the recsys DAGs, which the UI shows as no link. The API server computes them when a
task's page is opened (:data:`MODEL_TASKS` says, per DAG, which tasks get the registry link and where it
reads the version and date):

- ``recsys_incremental_update``: the date is the run's ``partition_date`` param (``dag_run.conf``) or else
  its logical date; the version is the task's XCom return value (``fine_tune``/``deploy``/
  ``refresh_serving_index``: ``version``, ``evaluate``: ``candidate_version``), for ``deploy_if_blessed``
  (which returns a bool) that of ``evaluate``.
- ``recsys_full_retrain``: the version as above, falling back to ``evaluate`` and ``train_from_scratch``;
  the date is the retrain's end day from those return values (``trained_on`` of ``train_from_scratch``,
  ``date`` of ``evaluate``), else the run's ``end_date`` param; never the logical date (a weekly run's
  logical date is not a partition date).
- ``recsys_rollback``: the version rolled back to (``rollback`` returns it as ``version``); no date.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal
from urllib.parse import urlencode

from airflow.sdk import BaseOperatorLink

log = logging.getLogger(__name__)

URL_PREFIX = "/recsys"  # where recsys_plugin.py mounts the app
DAG_PREFIX = "recsys_"  # the DAGs these links belong to
VALIDATION_TASKS = frozenset({"validate"})
VERSION_KEYS = ("version", "candidate_version")  # fine_tune/deploy/rollback/train_from_scratch, evaluate
DAY_KEYS = ("trained_on", "date")  # train_from_scratch/fine_tune, evaluate


@dataclass(frozen=True)
class ModelTasks:
    """Which tasks of a DAG get the "Model registry" link and where the link's version and date come from.

    ``sources`` maps each task to the tasks whose XCom return values are read, in order: the version is the
    first one naming a version (:data:`VERSION_KEYS`). ``date``: ``"run"`` (the run's ``partition_date``
    param, else its logical date), ``"returned"`` (the first return value naming a day, :data:`DAY_KEYS`,
    else the run's ``date_param`` param) or None (the link has no date).
    """

    sources: dict[str, tuple[str, ...]]
    date: Literal["run", "returned"] | None = None
    date_param: str | None = None


MODEL_TASKS: dict[str, ModelTasks] = {
    "recsys_incremental_update": ModelTasks(
        sources={
            "fine_tune": ("fine_tune",),
            "evaluate": ("evaluate",),
            "deploy_if_blessed": ("evaluate",),
            "deploy": ("deploy", "evaluate"),
            "refresh_serving_index": ("refresh_serving_index",),
        },
        date="run",
    ),
    "recsys_full_retrain": ModelTasks(
        sources={
            "train_from_scratch": ("train_from_scratch",),
            "evaluate": ("evaluate", "train_from_scratch"),
            "deploy_if_blessed": ("evaluate", "train_from_scratch"),
            "deploy": ("deploy", "evaluate", "train_from_scratch"),
        },
        date="returned",
        date_param="end_date",
    ),
    "recsys_rollback": ModelTasks(sources={"rollback": ("rollback",)}),
}


def validation_url(day: date | None, base: str = "") -> str:
    """The validation page of ``day`` (the list of every partition when the date is unknown)."""
    return f"{base}{URL_PREFIX}/validation" + (f"/{day.isoformat()}" if day else "")


def registry_url(day: date | None, version: int | None, base: str = "") -> str:
    """The registry page, highlighting partition ``day`` and ``version`` when known."""
    query = {k: v for k, v in (("date", day.isoformat() if day else None), ("version", version)) if v is not None}
    anchor = f"#v-{version}" if version is not None else (f"#d-{day.isoformat()}" if day else "")
    return f"{base}{URL_PREFIX}/registry" + (f"?{urlencode(query)}" if query else "") + anchor


def version_from(value: Any) -> int | None:
    """The model version a task returned (``version`` or ``candidate_version``), if any."""
    if isinstance(value, dict):
        for key in VERSION_KEYS:
            found = value.get(key)
            if isinstance(found, int) and not isinstance(found, bool):
                return found
    return None


def day_from(value: Any) -> date | None:
    """The partition day a task returned (``trained_on`` or ``date``, ISO), if any."""
    if isinstance(value, dict):
        for key in DAY_KEYS:
            try:
                return date.fromisoformat(str(value[key]))
            except (KeyError, ValueError):
                continue
    return None


def link_target(
    dag_id: str, task_id: str, returned: Callable[[str], Any], run: Callable[[], tuple[Any, ...] | None],
) -> tuple[date | None, int | None] | None:
    """The (date, version) the "Model registry" link of ``dag_id.task_id`` opens; None: the task gets no link.

    ``returned(task_id)`` gives a task's XCom return value in this run (None if none); ``run()`` the run's
    ``(conf, logical_date, consumed asset events' extras)`` (None if the run is gone); both are called only when
    needed.
    """
    tasks = MODEL_TASKS.get(dag_id)
    if tasks is None or task_id not in tasks.sources:
        return None
    version: int | None = None
    day: date | None = None
    for source in tasks.sources[task_id]:
        value = returned(source)
        version = version if version is not None else version_from(value)
        if tasks.date == "returned" and day is None:
            day = day_from(value)
        if version is not None and (day is not None or tasks.date != "returned"):
            break
    if tasks.date == "run" or (tasks.date == "returned" and day is None and tasks.date_param):
        found = run()
        if tasks.date == "run":
            day = partition_day(*found) if found else None
        else:
            day = day_from({"date": (found[0] or {}).get(tasks.date_param)}) if found else None
    return day, version


def partition_day(conf: dict[str, Any] | None, logical_date: Any, extras: Any = ()) -> date | None:
    """The run's partition date, as its tasks find it (:func:`recsys_airflow.runtime.partition_day`): its
    ``partition_date`` param, else the logical date's day, else the oldest day its consumed asset events
    announce (``extras``: their ``extra`` dicts; an event-driven run has no logical date), else None."""
    from recsys_airflow.runtime import days_in_extras

    explicit = (conf or {}).get("partition_date")
    if explicit:
        try:
            return date.fromisoformat(str(explicit))
        except ValueError:
            return None
    if logical_date is not None:
        return logical_date.date()
    try:
        announced = days_in_extras(extras)
    except ValueError:
        return None
    return announced[0] if announced else None


def _base_path() -> str:
    """The path of the Airflow UI's base URL (``[api] base_url``), '' when served at the root."""
    from urllib.parse import urlsplit

    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def _run(dag_id: str, run_id: str) -> tuple[Any, Any, list[Any]] | None:
    """The run's ``(conf, logical_date, extras of the asset events it consumed)``; None if it is not in the
    metadata database."""
    from airflow.models.asset import AssetEvent
    from airflow.models.asset import association_table as link
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.execute(
            select(DagRun.id, DagRun.conf, DagRun.logical_date).where(DagRun.dag_id == dag_id,
                                                                      DagRun.run_id == run_id)
        ).first()
        if row is None:
            return None
        extras = []
        if row.logical_date is None:  # an event-driven run: its day is in the events that created it
            extras = list(session.scalars(
                select(AssetEvent.extra).join(link, link.c.event_id == AssetEvent.id).where(link.c.dag_run_id == row.id)
            ))
    return row.conf, row.logical_date, extras


def _run_day(dag_id: str, run_id: str) -> date | None:
    run = _run(dag_id, run_id)
    return partition_day(*run) if run else None


def _returned(ti_key: Any, task_id: str) -> Any:
    """The XCom return value of ``task_id`` in ``ti_key``'s run (None if none or unreadable)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    try:
        with create_session() as session:
            row = session.execute(
                XComModel.get_many(
                    key="return_value", run_id=ti_key.run_id, dag_ids=ti_key.dag_id, task_ids=task_id,
                    map_indexes=ti_key.map_index,
                ).with_only_columns(XComModel.value)
            ).first()
        return XComModel.deserialize_value(row) if row else None
    except Exception:
        log.warning("could not read the XCom of %s.%s for its version", ti_key, task_id, exc_info=True)
        return None


class ValidationReportLink(BaseOperatorLink):
    """"Validation report" on the validate task: that partition's checks and Data Docs."""

    name = "Validation report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if not ti_key.dag_id.startswith(DAG_PREFIX) or ti_key.task_id not in VALIDATION_TASKS:
            return ""
        return validation_url(_run_day(ti_key.dag_id, ti_key.run_id), _base_path())


class ModelRegistryLink(BaseOperatorLink):
    """"Model registry" on the tasks that train, evaluate, deploy or roll back: the registry at their version."""

    name = "Model registry"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if not ti_key.dag_id.startswith(DAG_PREFIX):
            return ""
        target = link_target(
            ti_key.dag_id, ti_key.task_id, lambda task: _returned(ti_key, task),
            lambda: _run(ti_key.dag_id, ti_key.run_id),
        )
        return "" if target is None else registry_url(*target, _base_path())
