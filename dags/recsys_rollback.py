"""
# Roll the serving model back

Manual only. Points the champion back to an earlier deployed version, with the same code as
`recsys rollback --to VERSION --reason ...` (`recsys.serving.deploy.rollback`):

- **Version**: the version to serve again; leave it empty for the version deployed before the current
  champion (repeated rollbacks walk back in time). It must have been deployed once (it has a serving index).
- **Reason**: required; recorded in the registry history with this run's id.

Before the switch the target's serving index is rebuilt from the newest catalog, so items delisted since
it last served stay out. The serving process picks the new champion up at its next registry poll; the
switch is one atomic pointer write, so requests never see a half-switched model.

The daily `recsys_incremental_update` DAG keeps running: its next blessed candidate replaces the rolled-back
champion as usual. To stop that, trigger its dates with **Deploy decision** `skip` until the cause is fixed.
A failed rollback alerts through `RECSYS_NOTIFY_BACKEND` like every recsys task.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task
from recsys_airflow import assets
from recsys_airflow import dag_support as support

DAG_ID = "recsys_rollback"
CHAMPION = assets.champion(support.settings_without_alerts())  # the store's champion pointer


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=pendulum.datetime(2010, 12, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["recsys", "serving", "rollback"],
    default_args=support.default_args(retry_delay=timedelta(seconds=30)),
    params={
        "version": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Version",
            description="Model version to serve again (see the registry). Empty: the version deployed before "
            "the current champion.",
        ),
        "reason": Param(
            "",
            type="string",
            minLength=1,
            title="Reason",
            description="Why the rollback (for example 'v42 recommends delisted items; incident 123'). Recorded in "
            "the registry history with this run's id.",
        ),
    },
)
def recsys_rollback() -> None:
    # the registry pool's next slot goes to a rollback before any waiting daily or retrain step
    @task(priority_weight=100, outlets=[CHAMPION], **support.REGISTRY_WRITER)
    @support.fails_on_domain_error
    def rollback() -> dict[str, Any]:
        """Switch the champion back (recsys.serving.deploy.rollback, as the CLI does)."""
        from recsys.serving.deploy import rollback as rollback_to

        step = support.current_step()
        version = step.params.get("version")
        result = rollback_to(step.store, str(step.params.get("reason") or ""),
                             int(version) if version is not None else None, run_id=step.run_id)
        return support.champion_event(CHAMPION, result)

    rollback()


recsys_rollback()
