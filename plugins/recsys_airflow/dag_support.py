"""What the recsys DAG files share: default_args, Jinja macros, the domain-error wrapper and step inputs."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, ParamSpec, TypeVar

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException

from recsys.errors import DOMAIN_ERRORS
from recsys_airflow.notifiers import RecsysFailureNotifier
from recsys_airflow.runtime import require_context_day, require_partition_day, settings, settings_without_alerts

if TYPE_CHECKING:
    from recsys.config import Settings
    from recsys.storage import PartitionStore

P = ParamSpec("P")
R = TypeVar("R")

# One task at a time writes registry/two_tower.json: every task whose step writes it (validate, fine-tune,
# evaluate, the deploy gate, deploy, the full retrain's steps, rollback) takes this pool's one slot. The
# store-level lock (recsys.registry) serialises each write; the pool keeps whole steps of the three DAGs
# from interleaving. scripts/airflow-init.sh creates it; without it, Airflow 3.3 leaves these tasks
# "scheduled" for ever (the scheduler only logs "Tasks using non-existent pool ... will not be scheduled").
REGISTRY_POOL = "recsys_registry"
REGISTRY_POOL_SLOTS = 1
REGISTRY_WRITER: dict[str, Any] = {"pool": REGISTRY_POOL}


def default_args(
    *, retry_delay: timedelta = timedelta(minutes=1), partitioned: bool = False, depends_on_past: bool = False
) -> dict[str, Any]:
    """``default_args`` of a recsys DAG: owner, one retry, and an alert when a task fails for good.

    ``partitioned``: one partition per run (the alert names its date); ``depends_on_past``: a date waits
    until the previous one succeeded.
    """
    args: dict[str, Any] = {
        "owner": "ml-platform",
        "retries": 1,
        "retry_delay": retry_delay,
        "on_failure_callback": RecsysFailureNotifier(partitioned=partitioned),
    }
    if depends_on_past:
        args["depends_on_past"] = True
    return args


def training_queue(settings: Settings) -> dict[str, Any]:
    """``queue=`` of the training tasks: ``RECSYS_TRAINING_QUEUE`` if set, else nothing (Airflow's default)."""
    return {"queue": settings.training_queue} if settings.training_queue else {}


def success_marker(params: Any, dag_run: Any, triggering_asset_events: Any = None) -> str:
    """Absolute HDFS path of the run's ``_SUCCESS`` marker: the ``WebHdfsSensor``'s templated filepath."""
    from recsys.storage import layout

    day = require_partition_day(params, dag_run.logical_date, triggering_asset_events)
    root = settings_without_alerts().storage_root.rstrip("/")
    return f"{root}/{layout.raw_events(day)}/{layout.SUCCESS}"


def user_defined_macros() -> dict[str, Callable[..., Any]]:
    """The Jinja macros of a partitioned DAG: the partition date rule and the ``_SUCCESS`` marker path."""
    return {"recsys_partition_day": require_partition_day, "recsys_success_marker": success_marker}


def fails_on_domain_error(body: Callable[P, R]) -> Callable[P, R]:
    """Task body wrapper: a recsys domain error fails the task at once (no retry), naming the task.

    Anything else (a lost connection, a programming error) keeps its traceback and is retried.
    """

    @functools.wraps(body)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return body(*args, **kwargs)
        except DOMAIN_ERRORS as err:
            raise AirflowFailException(f"{body.__name__} failed: {err}") from err

    return run


class Step(NamedTuple):
    """The inputs of one recsys step in a running task."""

    store: PartitionStore
    settings: Settings
    run_id: str
    params: Mapping[str, Any]


def current_step() -> Step:
    """The running task's store, settings, run id and params."""
    from recsys.storage import open_store

    context = get_current_context()
    current = settings()
    return Step(open_store(current), current, str(context["run_id"]), context["params"])


def current_day() -> date:
    """The running task's partition date (see :func:`recsys_airflow.runtime.partition_day`)."""
    return require_context_day(get_current_context())


def validation_result(store: PartitionStore, report: Any) -> dict[str, Any]:
    """The ``validate`` task's return value: the verdict of a :class:`recsys.validation.results.ValidationReport`
    with its report and Data Docs as store URIs (the same whether pandas or Spark validated)."""
    return {"date": report.day.isoformat(), "success": report.success, "rows": report.rows,
            "accepted": report.accepted is not None, "report": store.uri(report.report_path),
            "data_docs": store.uri(report.data_docs.get("index", report.report_path))}


def champion_event(asset: Any, result: dict[str, Any]) -> dict[str, Any]:
    """A task that switched the champion (an outlet ``asset``): its asset event carries the version, the
    champion and whether it changed (``extra``); returns ``result`` unchanged."""
    context = get_current_context()
    context["outlet_events"][asset].extra = {
        key: result[key] for key in ("version", "champion", "changed", "date") if key in result
    } | {"run_id": str(context["run_id"])}
    return result
