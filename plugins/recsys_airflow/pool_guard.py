"""A scheduler listener that keeps a missing registry pool from silently holding the recsys DAGs.

Airflow 3.3 leaves a task whose pool does not exist in "scheduled" for ever: the scheduler only logs
"Tasks using non-existent pool ... will not be scheduled" (no DAG warning, no failure, no alert). The pool
is created by scripts/airflow-init.sh; should a deployment skip it (or someone delete it), the first recsys
DAG run that starts creates it with its one slot, in the scheduler's own transaction, and logs a warning
that says so. An existing pool is never changed (an operator may have set its slots to 0 to hold writes).
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl

from recsys_airflow.dag_support import REGISTRY_POOL, REGISTRY_POOL_SLOTS

log = logging.getLogger(__name__)

DAG_PREFIX = "recsys_"
CREATED_DESCRIPTION = (
    "recsys: one task at a time writes the model registry (registry/two_tower.json); created by the recsys "
    "plugin because it was missing (scripts/airflow-init.sh creates it)"
)


def ensure_registry_pool(session: Any) -> bool:
    """Create the registry pool in ``session`` if it does not exist; True if it was created."""
    from airflow.models.pool import Pool
    from sqlalchemy import select

    if session.scalar(select(Pool.id).where(Pool.pool == REGISTRY_POOL)) is not None:
        return False
    session.add(Pool(pool=REGISTRY_POOL, slots=REGISTRY_POOL_SLOTS, description=CREATED_DESCRIPTION,
                     include_deferred=False))
    session.flush()
    log.warning("the pool %r was missing: created it with %d slot (run scripts/airflow-init.sh when you set up "
                "Airflow)", REGISTRY_POOL, REGISTRY_POOL_SLOTS)
    return True


class RegistryPoolGuard:
    """``on_dag_run_running`` (in the scheduler): a recsys DAG run starts only with the registry pool in place."""

    @hookimpl
    def on_dag_run_running(self, dag_run: Any, msg: str) -> None:
        if not str(getattr(dag_run, "dag_id", "")).startswith(DAG_PREFIX):
            return
        from sqlalchemy.orm import object_session
        from sqlalchemy.orm.exc import UnmappedInstanceError

        try:
            session = object_session(dag_run)  # the scheduler's: the pool commits with the run's start
        except UnmappedInstanceError:
            session = None
        if session is not None:
            ensure_registry_pool(session)
            return
        from airflow.utils.session import create_session

        with create_session() as own:
            ensure_registry_pool(own)
