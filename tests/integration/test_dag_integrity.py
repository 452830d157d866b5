"""Every DAG file imports cleanly, is documented and light to parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import airflow.sdk  # noqa: F401 - puts plugins/ on sys.path (recsys_airflow)
import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO_ROOT / "dags").glob("*.py"))
HEAVY = ("tensorflow", "tensorflow_recommenders", "pandas", "great_expectations", "numpy")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO_ROOT / "dags"))


def test_dag_folder_has_dags():
    assert DAG_FILES, "no DAG files found"


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "recsys_incremental_update" in dagbag.dag_ids


def test_every_dag_has_tags_retries_and_docs(dagbag):
    assert dagbag.dags
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 200, f"{dag_id} has no real documentation"
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"


def test_incremental_dag_runs_in_date_order_once_each(dagbag):
    dag = dagbag.dags["recsys_incremental_update"]
    assert dag.max_active_runs == 1
    # missed dates are run by the scheduler itself, from RECSYS_SCHEDULE_START (default: Online Retail's first day)
    assert dag.catchup is True and dag.start_date.isoformat() == "2010-12-01T00:00:00+00:00"
    assert dagbag.dags["recsys_full_retrain"].catchup is False  # the next retrain covers the missed window
    assert all(task.depends_on_past for task in dag.tasks)
    param = dag.params.get_param("partition_date")
    assert param.schema["format"] == "date" and param.schema.get("title")
    assert set(dag.task_ids) == {
        "wait_for_partition", "validate", "build_features", "fine_tune", "evaluate", "deploy_if_blessed", "deploy",
        "refresh_serving_index",
    }
    assert dag.get_task("deploy").upstream_task_ids == {"deploy_if_blessed"}
    refresh = dag.get_task("refresh_serving_index")
    assert refresh.upstream_task_ids == {"deploy"}
    assert refresh.trigger_rule == "none_failed"  # runs after a skipped deploy too
    assert dag.get_task("deploy_if_blessed").ignore_downstream_trigger_rules is False
    assert dag.get_task("wait_for_partition").mode == "reschedule"


PROBE = """
import importlib.util, json, sys, time
import airflow.sdk  # the DAG processor has Airflow loaded already; we time the DAG files themselves
start = time.perf_counter()
for i, path in enumerate(sys.argv[1:]):
    spec = importlib.util.spec_from_file_location(f"dag_{i}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "modules": sorted(m.split(".")[0] for m in sys.modules)}))
"""


def test_dag_folder_imports_fast_without_heavy_libraries():
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, DAG_FILES)], capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    loaded = set(result["modules"])
    assert not loaded & set(HEAVY), f"DAG files import heavy libraries: {sorted(loaded & set(HEAVY))}"
    # parse time is a benchmark target (bench/dag_parse), not a timed assertion: this machine is shared


PLUGIN_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import recsys_plugin  # as Airflow's plugins manager loads it (api-server, scheduler, DAG processor, tasks)
print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
"""


def test_the_plugin_imports_without_heavy_libraries():
    """Airflow imports plugins in every one of its processes: the recsys plugin (its pages, links and
    listener) loads pandas, Great Expectations or TensorFlow only when a page needs them."""
    out = subprocess.run([sys.executable, "-c", PLUGIN_PROBE, str(REPO_ROOT / "plugins")], capture_output=True,
                         text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "recsys_plugin" in loaded and "recsys_ui" in loaded
    assert not loaded & set(HEAVY), f"the plugin imports heavy libraries: {sorted(loaded & set(HEAVY))}"


def test_on_hdfs_the_dag_waits_with_the_providers_sensor_and_parses_as_fast(monkeypatch):
    from types import SimpleNamespace

    import pendulum
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.apache.hdfs.sensors.web_hdfs import WebHdfsSensor

    env = {
        "RECSYS_STORAGE_BACKEND": "webhdfs", "RECSYS_STORAGE_ROOT": "/data/recsys",
        "RECSYS_WEBHDFS_CONN_ID": "hdfs_prod", "RECSYS_SENSOR_POKE_SECONDS": "300",
        "RECSYS_SENSOR_TIMEOUT_SECONDS": "7200",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    dag = DagBag(dag_folder=str(REPO_ROOT / "dags")).dags["recsys_incremental_update"]
    sensor = dag.get_task("wait_for_partition")
    assert isinstance(sensor, WebHdfsSensor)
    assert (sensor.mode, sensor.poke_interval, sensor.webhdfs_conn_id) == ("reschedule", 300, "hdfs_prod")
    assert sensor.timeout == 7200
    assert sensor.retries >= 1 and sensor.depends_on_past
    assert sensor.downstream_task_ids == {"validate"}
    # the templated filepath: the marker of the logical date's partition, or of the partition_date param
    marker = dag.user_defined_macros["recsys_success_marker"]
    run = SimpleNamespace(logical_date=pendulum.datetime(2011, 1, 4, tz="UTC"))
    assert marker({"partition_date": None}, run) == "/data/recsys/raw/events/dt=2011-01-04/_SUCCESS"
    assert marker({"partition_date": "2010-12-02"}, run) == "/data/recsys/raw/events/dt=2010-12-02/_SUCCESS"
    assert "recsys_success_marker" in sensor.filepath

    out = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, DAG_FILES)], capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert not set(result["modules"]) & set(HEAVY)
    # parse time is a benchmark target (bench/dag_parse), not a timed assertion: this machine is shared


def test_the_schedule_starts_at_the_configured_date_and_a_malformed_one_is_an_import_error(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("RECSYS_SCHEDULE_START", "2011-03-01")
    dag = DagBag(dag_folder=str(REPO_ROOT / "dags")).dags["recsys_incremental_update"]
    assert dag.start_date.isoformat() == "2011-03-01T00:00:00+00:00" and dag.catchup is True
    monkeypatch.setenv("RECSYS_SCHEDULE_CATCHUP", "false")  # missed dates left to backfills
    assert DagBag(dag_folder=str(REPO_ROOT / "dags")).dags["recsys_incremental_update"].catchup is False
    monkeypatch.setenv("RECSYS_SCHEDULE_START", "2011-02-30")
    errors = DagBag(dag_folder=str(REPO_ROOT / "dags")).import_errors
    assert any("RECSYS_SCHEDULE_START='2011-02-30'" in error for error in errors.values()), errors


def test_a_malformed_poke_interval_is_an_import_error_naming_the_variable(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("RECSYS_SENSOR_POKE_SECONDS", "soon")
    errors = DagBag(dag_folder=str(REPO_ROOT / "dags")).import_errors
    # the DAG files read Settings when parsed (the same parser as every task; the rollback's for the champion
    # asset's store, whose rollback task would fail on the same setting): they fail, naming it
    assert {Path(path).name for path in errors} == {"recsys_incremental_update.py", "recsys_full_retrain.py",
                                                    "recsys_rollback.py"}
    assert all("RECSYS_SENSOR_POKE_SECONDS='soon'" in error for error in errors.values())


def test_every_file_of_the_dag_folder_is_a_dag_and_the_glue_is_a_package_the_plugin_manager_skips(dagbag):
    from airflow._shared.module_loading import find_path_from_directory

    # dags/ holds DAG files only (no sys.path edits, no support modules): every file defines a DAG
    assert {Path(dag.fileloc).name for dag in dagbag.dags.values()} == {path.name for path in DAG_FILES}
    assert not any("sys.path" in path.read_text() for path in DAG_FILES)
    assert set(dagbag.dag_ids) >= {"recsys_incremental_update", "recsys_full_retrain", "recsys_rollback"}
    # the glue is the package plugins/recsys_airflow, imported by name; the plugin manager never loads
    # its modules as plugin files of their own
    plugins = REPO_ROOT / "plugins"
    assert (plugins / "recsys_airflow" / "dag_support.py").exists()
    loaded = {Path(p).relative_to(plugins).as_posix() for p in find_path_from_directory(plugins, ".airflowignore")}
    assert {p for p in loaded if p.endswith(".py")} == {"recsys_plugin.py"}


def test_every_recsys_task_alerts_on_failure(dagbag):
    for dag_id in ("recsys_incremental_update", "recsys_full_retrain", "recsys_rollback"):
        for task in dagbag.dags[dag_id].tasks:
            callbacks = task.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert any(type(c).__name__ == "RecsysFailureNotifier" for c in callbacks), (dag_id, task.task_id)


def test_manual_operations_are_typed_documented_params(dagbag):
    incremental = dagbag.dags["recsys_incremental_update"]
    mode = incremental.params.get_param("deploy_mode")
    assert mode.value == "gate" and mode.schema["enum"] == ["gate", "skip", "force"]
    for dag_id, names in {
        "recsys_incremental_update": ["partition_date", "accept_invalid", "accept_reason", "force_revalidate",
                                      "deploy_mode", "deploy_reason"],
        "recsys_full_retrain": ["end_date", "window_days"],
        "recsys_rollback": ["version", "reason"],
    }.items():
        params = dagbag.dags[dag_id].params
        for name in names:
            param = params.get_param(name)
            assert param.schema.get("title") and len(param.description or "") > 30, (dag_id, name)
    reason = dagbag.dags["recsys_rollback"].params.get_param("reason")
    assert reason.schema["minLength"] == 1  # the trigger form refuses an empty reason


def test_retrain_is_weekly_and_rollback_manual(dagbag):
    retrain = dagbag.dags["recsys_full_retrain"]
    from airflow.serialization.encoders import coerce_to_core_timetable

    assert coerce_to_core_timetable(retrain.timetable).summary == "0 3 * * 0" and retrain.max_active_runs == 1
    assert retrain.get_task("deploy").upstream_task_ids == {"deploy_if_blessed", "evaluate"}
    assert type(dagbag.dags["recsys_rollback"].timetable).__name__ == "NullTimetable"  # manual only
    assert dagbag.dags["recsys_rollback"].task_ids == ["rollback"]


@pytest.fixture(scope="module")
def call_graph():
    from tests.registry_writers import CallGraph

    return CallGraph()


def test_the_call_graph_finds_the_registry_writers(call_graph):
    # the analysis itself: the store write in registry.update and the steps that reach it through it
    writers = call_graph.writers()
    assert {"recsys.registry.update", "recsys.registry.save", "recsys.training.fine_tune",
            "recsys.serving.deploy.rollback", "recsys.validation.partition.validate_partition"} <= writers
    assert "recsys.registry.load" not in writers and "recsys.features.build.build_features" not in writers


@pytest.mark.parametrize("container", ["", "docker", "kubernetes", "kubernetes-job"])
def test_every_task_that_writes_the_registry_takes_the_registry_pool_and_no_other_does(
    container, call_graph, monkeypatch
):
    """Derived from the code: a task is in the pool iff what it runs can reach a write of the registry."""
    from airflow.dag_processing.dagbag import DagBag
    from recsys_airflow.dag_support import REGISTRY_POOL

    from tests.registry_writers import task_writes_registry

    monkeypatch.setenv("RECSYS_TRAIN_IN_CONTAINER", container)
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert bag.import_errors == {}
    pooled, writing = set(), set()
    for dag_id, dag in bag.dags.items():
        for task in dag.tasks:
            if task_writes_registry(call_graph, task):
                writing.add((dag_id, task.task_id))
            if task.pool == REGISTRY_POOL:
                pooled.add((dag_id, task.task_id))
                assert task.pool_slots == 1
    assert pooled == writing
    # every DAG has writers; the sensor, features and index refresh do not hold the slot
    assert {dag_id for dag_id, _ in writing} == set(bag.dag_ids)
    assert ("recsys_incremental_update", "fine_tune") in writing
    assert ("recsys_incremental_update", "wait_for_partition") not in pooled


def test_the_setup_creates_the_registry_pool_with_one_slot(airflow_db):
    from recsys_airflow.dag_support import REGISTRY_POOL, REGISTRY_POOL_SLOTS

    # the session's Airflow home was initialised by scripts/airflow-init.sh (tests/conftest.py), as the demo's is
    airflow = Path(sys.executable).with_name("airflow")
    out = subprocess.run([str(airflow), "pools", "get", REGISTRY_POOL, "--output", "json"], capture_output=True,
                         text=True, check=True)
    (pool,) = json.loads(out.stdout)
    assert (pool["pool"], int(pool["slots"])) == (REGISTRY_POOL, REGISTRY_POOL_SLOTS)
    init = (REPO_ROOT / "scripts" / "airflow-init.sh").read_text()
    assert f"POOL={REGISTRY_POOL}\n" in init and 'pools set "$POOL" 1 ' in init
    for script in ("scripts/demo.sh",):  # every place that initialises an Airflow home goes through it
        text = (REPO_ROOT / script).read_text()
        assert "scripts/airflow-init.sh" in text and "airflow db migrate" not in text, script


def test_a_missing_registry_pool_is_created_when_a_recsys_run_starts_and_an_existing_one_is_kept(airflow_db):
    from types import SimpleNamespace

    from airflow.listeners.listener import get_listener_manager
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session
    from recsys_airflow.dag_support import REGISTRY_POOL
    from recsys_airflow.pool_guard import CREATED_DESCRIPTION, RegistryPoolGuard
    from sqlalchemy import delete, select, update

    def slots() -> int | None:
        with create_session() as session:
            return session.scalar(select(Pool.slots).where(Pool.pool == REGISTRY_POOL))

    # the plugin registers the guard with Airflow's listener manager, as the scheduler loads it
    manager = get_listener_manager()
    assert any(isinstance(p, RegistryPoolGuard) for p in manager.pm.get_plugins())
    with create_session() as session:
        session.execute(delete(Pool).where(Pool.pool == REGISTRY_POOL))
    try:
        manager.hook.on_dag_run_running(dag_run=SimpleNamespace(dag_id="someone_elses_dag"), msg="started")
        assert slots() is None
        manager.hook.on_dag_run_running(dag_run=SimpleNamespace(dag_id="recsys_rollback"), msg="started")
        assert slots() == 1
        with create_session() as session:
            assert session.scalar(select(Pool.description).where(Pool.pool == REGISTRY_POOL)) == CREATED_DESCRIPTION
            session.execute(update(Pool).where(Pool.pool == REGISTRY_POOL).values(slots=0))  # on-call holds writes
        manager.hook.on_dag_run_running(dag_run=SimpleNamespace(dag_id="recsys_incremental_update"), msg="started")
        assert slots() == 0
    finally:
        with create_session() as session:
            session.execute(delete(Pool).where(Pool.pool == REGISTRY_POOL))
            session.add(Pool(pool=REGISTRY_POOL, slots=1, description="recsys", include_deferred=False))


def test_the_assets_give_the_three_dags_their_lineage(dagbag):
    """Sensor mode (no RECSYS_DAYS_CLOSED_TOPIC, the embedded default): the daily timetable and the sensor as
    before; the raw partitions flow into the daily DAG, and the daily, retrain and rollback DAGs all switch the
    same champion asset."""
    from airflow.sdk import Asset, CronDataIntervalTimetable

    daily = dagbag.dags["recsys_incremental_update"]
    assert isinstance(daily.timetable, CronDataIntervalTimetable)  # not event-driven unless configured
    assert not {"check_earlier_days", "rebuild_catalog", "announce_later_days"} & set(daily.task_ids)
    (raw,) = daily.get_task("wait_for_partition").inlets
    # known by name alone (the URI is the name: a store change must not make a new, conflicting asset); where
    # the data lives is in extra
    assert isinstance(raw, Asset) and (raw.name, raw.uri) == ("recsys_raw_events", "recsys_raw_events")
    assert raw.extra["location"].endswith("/raw/events")
    assert raw.watchers == []
    champions = {(dag_id, task_id): dagbag.dags[dag_id].get_task(task_id).outlets for dag_id, task_id in [
        ("recsys_incremental_update", "deploy"), ("recsys_full_retrain", "deploy"), ("recsys_rollback", "rollback")]}
    registry = raw.extra["location"].replace("/raw/events", "/registry/two_tower.json")
    assert {(a.name, a.uri, a.extra["location"]) for outlets in champions.values() for a in outlets} == {
        ("recsys_champion", "recsys_champion", registry)}
    for dag in dagbag.dags.values():  # nothing else claims to change the champion
        for task in dag.tasks:
            assert (dag.dag_id, task.task_id) in champions or not task.outlets, (dag.dag_id, task.task_id)


def test_event_driven_runs_are_scheduled_by_the_watcher_of_the_closed_days_topic(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.definitions.timetables.assets import AssetTriggeredTimetable
    from airflow.serialization.serialized_objects import DagSerialization

    monkeypatch.setenv("RECSYS_DAYS_CLOSED_TOPIC", "recsys.days-closed")
    monkeypatch.setenv("RECSYS_KAFKA_CONN_ID", "kafka_shop")
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags["recsys_incremental_update"]
    assert isinstance(dag.timetable, AssetTriggeredTimetable)
    raw = dag.timetable.asset_condition
    assert raw.name == "recsys_raw_events" and dag.get_task("wait_for_partition").inlets == [raw]
    (watcher,) = raw.watchers
    classpath, kwargs = watcher.trigger.serialize()  # what the triggerer runs
    assert classpath == "airflow.providers.apache.kafka.triggers.await_message.AwaitMessageTrigger"
    assert kwargs["topics"] == ["recsys.days-closed"] and kwargs["kafka_config_id"] == "kafka_shop"
    assert kwargs["apply_function"] == "recsys_airflow.assets.closed_day" and kwargs["commit_offset"] is True
    # the same tasks, one at a time, plus: a day waits for the closed days before it (first), the day's catalog
    # rebuilt from the item events before validate reads it, and the hand-over of the next closed day (last)
    assert dag.max_active_runs == 1
    assert dag.get_task("check_earlier_days").upstream_task_ids == set()
    assert dag.get_task("rebuild_catalog").upstream_task_ids == {"check_earlier_days", "wait_for_partition"}
    assert dag.get_task("rebuild_catalog").downstream_task_ids == {"validate"}
    assert dag.get_task("announce_later_days").upstream_task_ids == {"refresh_serving_index"}
    assert dag.get_task("announce_later_days").trigger_rule == "none_failed"
    for task_id in ("check_earlier_days", "rebuild_catalog", "announce_later_days"):  # none writes the registry
        assert dag.get_task(task_id).pool != "recsys_registry"
    # the DAG processor stores it serialised, watcher included
    serialized = json.dumps(DagSerialization.to_dict(dag), default=str)
    assert "recsys_days_closed" in serialized and "recsys.days-closed" in serialized
    # the other two DAGs do not change with the mode
    assert set(bag.dags["recsys_rollback"].task_ids) == {"rollback"}
    out = subprocess.run([sys.executable, "-c", PROBE, *map(str, DAG_FILES)], capture_output=True, text=True,
                         check=True, env={**os.environ, "RECSYS_DAYS_CLOSED_TOPIC": "recsys.days-closed"})
    assert not set(json.loads(out.stdout.strip().splitlines()[-1])["modules"]) & set(HEAVY)
