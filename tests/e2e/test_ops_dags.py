"""On-call operations through the real DAGs (``dag.test()``): deploy skip/force with a reason, forced
re-validation, rollback, full retrain, failure alerts to a real local webhook, the lateness alert.

One store for the module: 2010-12-01 and 2010-12-02 landed; the first date runs normally (champion v1),
then the tests build on each other in file order (skip, force, rollback, retrain).
Every ``dag.test()`` runs under a time limit: with ``depends_on_past`` a blocked run would wait forever.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pendulum
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
INCREMENTAL, RETRAIN, ROLLBACK = "recsys_incremental_update", "recsys_full_retrain", "recsys_rollback"
DAY1, DAY2 = "2010-12-01", "2010-12-02"
RUN_LIMIT_SECONDS = 300


@contextlib.contextmanager
def time_limit(seconds: int = RUN_LIMIT_SECONDS):
    """Fail (TimeoutError) instead of hanging when a run blocks, e.g. on ``depends_on_past``."""

    def expired(signum, frame):
        raise TimeoutError(f"the DAG run did not finish within {seconds} s (blocked?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _delete_runs(dag_id: str) -> None:
    """Other e2e modules run the same dates: their runs must not hold ours back (depends_on_past)."""
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from sqlalchemy import delete

    session = settings.Session()
    session.execute(delete(DagRun).where(DagRun.dag_id == dag_id))
    session.commit()


def run(dag_id: str, logical_date: str, **conf):
    """Parse the DAG folder afresh (conf sticks to a DAG object) and run ``dag_id`` under a time limit."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert bag.import_errors == {}
    with time_limit():
        dag_run = bag.get_dag(dag_id).test(logical_date=pendulum.parse(logical_date), run_conf=conf or None)
    return dag_run, {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


@pytest.fixture(scope="module")
def ops(airflow_db, tmp_path_factory):
    """The store (DAY1 processed through the DAG, DAY2 landed) made the DAGs' store; yields it."""
    import os

    from recsys import registry
    from recsys.datasets.landing import land_days
    from recsys.storage.local import LocalStore

    root = tmp_path_factory.mktemp("ops-store")
    saved = {k: os.environ.get(k) for k in ("RECSYS_STORAGE_ROOT", "RECSYS_NOTIFY_BACKEND")}
    os.environ["RECSYS_STORAGE_ROOT"] = str(root)
    os.environ["RECSYS_NOTIFY_BACKEND"] = "log"
    store = LocalStore(root)
    land_days(store, pendulum.date(2010, 12, 1), days=2)
    _delete_runs(INCREMENTAL)
    dag_run, states = run(INCREMENTAL, DAY1)
    assert dag_run.state == "success", states
    assert registry.load(store)["champion"] == 1
    yield store
    _delete_runs(INCREMENTAL)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _history(store, action: str) -> list[dict]:
    from recsys import registry

    return [h for h in registry.load(store)["history"] if h["action"] == action]


def test_an_override_without_a_reason_fails_before_any_work(ops):
    from recsys import registry

    before = registry.load(ops)
    dag_run, states = run(INCREMENTAL, DAY2, deploy_mode="force")
    assert dag_run.state == "failed" and states["validate"] == "failed", states
    assert states["build_features"] == "upstream_failed"
    assert registry.load(ops) == before and not ops.exists(f"features/dt={DAY2}")


def test_skip_deploy_keeps_the_champion_and_is_recorded_with_the_run(ops):
    from recsys import registry

    reason = "marketing freeze until Monday"
    dag_run, states = run(INCREMENTAL, DAY2, deploy_mode="skip", deploy_reason=reason)
    assert dag_run.state == "success", states
    assert states["deploy_if_blessed"] == "success" and states["deploy"] == "skipped", states
    assert states["refresh_serving_index"] == "success"
    reg = registry.load(ops)
    assert reg["champion"] == 1 and reg["decisions"][DAY2]["candidate_version"] == 2
    [skipped] = _history(ops, "deploy_skipped")
    assert (skipped["date"], skipped["version"], skipped["reason"], skipped["run_id"]) == (
        DAY2, 2, reason, dag_run.run_id)


def test_force_deploy_makes_the_candidate_champion_and_keeps_the_gates_reason(ops):
    from recsys import registry

    gate_reason = registry.load(ops)["decisions"][DAY2]["reason"]
    reason = "business approved the new catalogue model"
    # a rerun of the processed date from the trigger form: its own logical date, the date as a param
    dag_run, states = run(INCREMENTAL, "2010-12-20", partition_date=DAY2, deploy_mode="force", deploy_reason=reason)
    assert dag_run.state == "success", states
    assert states["deploy"] == "success", states
    reg = registry.load(ops)
    assert reg["champion"] == 2
    decision = reg["decisions"][DAY2]
    assert decision["blessed"] is True and decision["gate_reason"] == gate_reason
    assert decision["forced"]["run_id"] == dag_run.run_id and reason in decision["reason"]
    [forced] = _history(ops, "deploy_forced")
    assert forced["run_id"] == dag_run.run_id and forced["reason"] == reason and forced["version"] == 2
    deployed = _history(ops, "deployed")[-1]
    assert deployed["to"] == 2 and deployed["run_id"] == dag_run.run_id


def test_forced_revalidation_runs_the_suites_again_and_is_recorded(ops):
    summary_path = f"reports/validation/dt={DAY1}/summary.json"
    before = ops.read_json(summary_path)
    dag_run, states = run(INCREMENTAL, "2010-12-21", partition_date=DAY1, force_revalidate=True)
    assert dag_run.state == "success", states
    after = ops.read_json(summary_path)
    assert after["success"] is True and after["validated_at"] != before["validated_at"]
    assert [c["check"] for c in after["checks"]] == [c["check"] for c in before["checks"]]
    assert after["checks"] != before["checks"]  # evaluated again: "not in the future" has a new bound
    [entry] = _history(ops, "revalidation_forced")
    assert entry["date"] == DAY1 and entry["run_id"] == dag_run.run_id


def test_rollback_dag_returns_to_the_previous_champion_with_the_reason(ops):
    from recsys import registry

    dag_run, states = run(ROLLBACK, "2010-12-22", reason="v2 recommends out-of-season items")
    assert dag_run.state == "success", states
    reg = registry.load(ops)
    assert reg["champion"] == 1
    entry = reg["history"][-1]
    assert (entry["action"], entry["from"], entry["to"], entry["run_id"]) == ("rollback", 2, 1, dag_run.run_id)


@pytest.fixture
def webhook(monkeypatch):
    """A real local HTTP server as the alert webhook (RECSYS_NOTIFY_BACKEND=webhook); yields received bodies."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("RECSYS_NOTIFY_BACKEND", "webhook")
    monkeypatch.setenv("RECSYS_NOTIFY_WEBHOOK_URL", f"http://127.0.0.1:{server.server_address[1]}/alerts")
    yield received
    server.shutdown()
    server.server_close()


def test_a_failed_task_alerts_through_the_configured_webhook(ops, webhook):
    from recsys import registry

    before = registry.load(ops)
    dag_run, states = run(ROLLBACK, "2010-12-23", version=99, reason="wrong version on purpose")
    assert dag_run.state == "failed" and states["rollback"] == "failed", states
    assert registry.load(ops) == before
    [alert] = webhook  # one alert: a domain error fails at once, without a retry
    assert alert["subject"] == "recsys_rollback.rollback failed" and alert["severity"] == "error"
    assert "version 99 was never deployed" in alert["details"]["error"]
    assert alert["details"]["run_id"] == dag_run.run_id


def test_full_retrain_dag_trains_from_scratch_and_goes_through_the_gate(ops):
    from recsys import registry

    champion_before = registry.load(ops)["champion"]
    dag_run, states = run(RETRAIN, "2010-12-24", window_days=2)
    assert dag_run.state == "success", states
    reg = registry.load(ops)
    retrains = [int(v) for v, meta in reg["versions"].items() if meta["kind"] == "full_retrain"]
    assert len(retrains) == 1
    version = retrains[0]
    meta = reg["versions"][str(version)]
    assert meta["trained_on"] == DAY2 and meta["parent"] is None
    decision = reg["retrains"][str(version)]
    assert decision["champion_version"] == champion_before and decision["reason"]
    entry = [h for h in reg["history"] if h.get("kind") == "full_retrain"][-1]
    assert entry["version"] == version and entry["run_id"] == dag_run.run_id
    if decision["blessed"]:
        assert states["deploy"] == "success" and reg["champion"] == version
    else:
        assert states["deploy"] == "skipped" and reg["champion"] == champion_before


def test_a_missing_partition_alerts_once_as_late_then_fails_at_the_sensor_time_out(ops, webhook, monkeypatch):
    # 2010-12-04 is a Saturday: Online Retail has no data for it, nothing was landed
    monkeypatch.setenv("RECSYS_SENSOR_POKE_SECONDS", "1")
    monkeypatch.setenv("RECSYS_SENSOR_TIMEOUT_SECONDS", "3")
    monkeypatch.setenv("RECSYS_PARTITION_LATE_HOUR", "6")
    _delete_runs(INCREMENTAL)
    dag_run, states = run(INCREMENTAL, "2010-12-04")
    assert dag_run.state == "failed" and states["wait_for_partition"] == "failed", states
    assert states["validate"] == "upstream_failed"
    late = [a for a in webhook if a["subject"] == "partition 2010-12-04 is late"]
    failed = [a for a in webhook if a["subject"] == f"{INCREMENTAL}.wait_for_partition for 2010-12-04 failed"]
    assert len(late) == 1 and late[0]["severity"] == "warning", webhook
    assert len(failed) == 1, webhook
    record = ops.read_json("alerts/late/dt=2010-12-04.json")
    assert record["notifier"] == "webhook" and record["deadline"] == "2010-12-05T06:00:00+00:00"
