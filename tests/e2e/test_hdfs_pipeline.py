"""The incremental DAG on a real HDFS: Airflow (``dag.test()``) senses, validates, fine-tunes, evaluates
and deploys Online Retail days stored on the single-node cluster of scripts/hdfs-minicluster.sh.

The DAG is configured exactly as in production: ``RECSYS_STORAGE_BACKEND=webhdfs``, the store root an
HDFS path, and the NameNode only in the Airflow connection ``webhdfs_default`` (``RECSYS_WEBHDFS_URL``
is not set), which the provider's ``WebHdfsSensor`` and the tasks both use.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import date
from pathlib import Path

import pendulum
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration, pytest.mark.hdfs]

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "recsys_incremental_update"
DAYS = ["2010-12-01", "2010-12-02"]
LATE_DAY = "2010-12-03"
MARKER_DELAY_SECONDS = 6
# a sensor that never sees its marker fails the run after this long instead of waiting 12 hours
SENSOR_TIMEOUT_SECONDS = 120


@pytest.fixture(scope="module")
def hdfs_env(hdfs_cluster):
    """The environment of an Airflow deployment on HDFS; yields the store the DAG uses."""
    store = hdfs_cluster.store("e2e")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("RECSYS_WEBHDFS_URL", "RECSYS_WEBHDFS_USER", "RECSYS_WEBHDFS_CONN_ID"):
            mp.delenv(name, raising=False)
        mp.setenv("RECSYS_STORAGE_BACKEND", "webhdfs")
        mp.setenv("RECSYS_STORAGE_ROOT", store.root)
        mp.setenv("RECSYS_SENSOR_POKE_SECONDS", "1")
        mp.setenv("RECSYS_SENSOR_TIMEOUT_SECONDS", str(SENSOR_TIMEOUT_SECONDS))
        mp.setenv("AIRFLOW_CONN_WEBHDFS_DEFAULT", hdfs_cluster.connection_uri())
        yield store


@pytest.fixture(scope="module")
def pipeline(airflow_db, hdfs_env):
    """Land two days on HDFS, run the DAG for each through Airflow; yields (dag, store, runs, seconds).

    The session's Airflow database is shared with the other e2e modules, which run the same dates: this
    module starts from, and leaves, no runs of the DAG.
    """
    from airflow.dag_processing.dagbag import DagBag

    from recsys.datasets.landing import land_days

    _delete_runs()
    store = hdfs_env
    landed = land_days(store, date.fromisoformat(DAYS[0]), days=len(DAYS))
    assert [x.day.isoformat() for x in landed] == DAYS

    dagbag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert dagbag.import_errors == {}
    dag = dagbag.get_dag(DAG_ID)
    started = time.perf_counter()
    runs = {}
    for day in DAYS:
        runs[day] = run = dag.test(logical_date=pendulum.parse(day))
        # depends_on_past: a later date would wait for this one forever (dag.test does not give up)
        _fail_unless_succeeded(run, day)
    seconds = time.perf_counter() - started
    log.warning("HDFS e2e: %d partitions through Airflow in %.1f s", len(DAYS), seconds)
    yield dag, store, runs, seconds
    _delete_runs()


def _fail_unless_succeeded(run, day: str) -> None:
    if run.state != "success":
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        pytest.fail(f"the run of {day} ended {run.state}: {states}", pytrace=False)


def _delete_runs() -> None:
    """Remove this DAG's runs from the session's Airflow DB (other e2e modules run the same dates)."""
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from sqlalchemy import delete

    session = settings.Session()
    session.execute(delete(DagRun).where(DagRun.dag_id == DAG_ID))
    session.commit()


def test_the_dag_senses_hdfs_with_the_providers_sensor(pipeline):
    from airflow.providers.apache.hdfs.sensors.web_hdfs import WebHdfsSensor

    dag, _, _, _ = pipeline
    sensor = dag.get_task("wait_for_partition")
    assert isinstance(sensor, WebHdfsSensor)
    assert (sensor.mode, sensor.poke_interval, sensor.webhdfs_conn_id) == ("reschedule", 1, "webhdfs_default")
    assert sensor.timeout == SENSOR_TIMEOUT_SECONDS


def test_each_run_succeeds(pipeline):
    _, _, runs, seconds = pipeline
    assert {day: run.state for day, run in runs.items()} == dict.fromkeys(DAYS, "success")
    print(f"HDFS e2e wall time: {len(DAYS)} partitions in {seconds:.1f} s")


def test_every_task_ran(pipeline):
    from recsys import registry

    _, store, runs, _ = pipeline
    reg = registry.load(store)
    for day, run in runs.items():
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        expected_deploy = "success" if reg["decisions"][day]["blessed"] else "skipped"
        # the serving index is refreshed once some version has been deployed (on this date or before)
        champion_by_then = any(reg["decisions"][d]["blessed"] for d in DAYS if d <= day)
        assert states == {
            "wait_for_partition": "success", "validate": "success", "build_features": "success",
            "fine_tune": "success", "evaluate": "success", "deploy_if_blessed": "success", "deploy": expected_deploy,
            "refresh_serving_index": "success" if champion_by_then else "skipped",
        }, day


def test_outputs_and_registry_are_on_hdfs(pipeline):
    from recsys import registry
    from recsys.storage import layout

    _, store, _, _ = pipeline
    reg = registry.load(store)  # read back from HDFS
    assert sorted(reg["decisions"]) == DAYS
    assert sorted(int(v) for v in reg["versions"]) == [1, 2]
    for day in DAYS:
        decision = reg["decisions"][day]
        assert decision["reason"] and decision["eval_users"] > 0
        assert store.exists(f"{layout.features(date.fromisoformat(day))}/examples.parquet")
        assert store.exists(f"{layout.validation_report(date.fromisoformat(day))}/summary.json")
    # the first date is a cold start and deploys when it clears the floor; the champion is a deployed version
    deploys = [h for h in reg["history"] if h["action"] == "deployed"]
    assert deploys and deploys[0]["from"] is None
    assert reg["champion"] == deploys[-1]["to"]
    champion = layout.model_version(reg["champion"])
    deployed_files = {"saved_model.pb", "index.parquet", "tables.npz", "metadata.json", "variables"}
    assert deployed_files <= set(store.list_dir(champion))
    assert store.uri(champion).startswith("webhdfs://127.0.0.1:9870/recsys-test/")
    # nothing went to a local directory of the same name
    assert not Path(store.root).exists()


def test_a_partition_whose_marker_arrives_late_is_sensed_when_it_arrives(pipeline, tmp_path):
    """Data files are there but ``_SUCCESS`` is not: the sensor waits, and succeeds once it is written."""
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session

    from recsys import registry
    from recsys.datasets.landing import land_days
    from recsys.storage import layout
    from recsys.storage.local import LocalStore

    dag, store, runs, _ = pipeline
    assert all(run.state == "success" for run in runs.values())  # else this date would wait for them
    day = date.fromisoformat(LATE_DAY)
    events = layout.raw_events(day)
    # upstream has written everything but the events marker (landed elsewhere, copied without it)
    staging = LocalStore(tmp_path / "staging")
    land_days(staging, day, exact=True)
    for partition in (layout.raw_catalog(day), events):
        for name in staging.list_dir(partition):
            if partition == events and name == layout.SUCCESS:
                continue
            store.write_bytes(f"{partition}/{name}", staging.read_bytes(f"{partition}/{name}"))
    assert store.data_files(events) and not store.is_complete(events)

    marked_at: list[pendulum.DateTime] = []

    def publish_marker_later() -> None:
        time.sleep(MARKER_DELAY_SECONDS)
        store.mark_success(events)
        marked_at.append(pendulum.now("UTC"))

    writer = threading.Thread(target=publish_marker_later, daemon=True)
    started = pendulum.now("UTC")
    writer.start()
    run = dag.test(logical_date=pendulum.parse(LATE_DAY))
    writer.join(timeout=60)

    assert run.state == "success"
    assert marked_at, "the marker was never written"
    sensor = run.get_task_instance("wait_for_partition")
    assert sensor.state == "success"
    # it looked before the marker existed (and was rescheduled), and finished only after it was written
    with create_session() as session:
        reschedules = session.query(TaskReschedule).filter(TaskReschedule.ti_id == sensor.id).all()
    assert reschedules, "the sensor never had to wait: the marker was there at its first look"
    assert min(r.start_date for r in reschedules) < marked_at[0]
    assert sensor.end_date >= marked_at[0]
    assert (sensor.end_date - started).total_seconds() >= MARKER_DELAY_SECONDS
    # and the rest of the run went on from there, as for any date
    decision = registry.load(store)["decisions"][LATE_DAY]
    assert run.get_task_instance("deploy").state == ("success" if decision["blessed"] else "skipped")
