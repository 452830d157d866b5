"""Bad partitions through the real DAG (``dag.test()``): the run fails at validate, nothing downstream runs,
the champion stays, the partition is quarantined, and the next date is held back by ``depends_on_past``.
On-call's "accept anyway" (a rerun with ``accept_invalid`` and ``accept_reason``) lets a failed date through
and is recorded in the registry history.

The good first day (2010-12-01, champion v1) is processed through the DAG once; every test then works on
its own copy of that store (``RECSYS_STORAGE_ROOT``), and the landed 2010-12-02 is broken as upstream
might break it.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import pandas as pd
import pendulum
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "recsys_incremental_update"
GOOD_DAY, BAD_DAY, LATER_DAY = "2010-12-01", "2010-12-02", "2010-12-03"
RAW_BAD = f"raw/events/dt={BAD_DAY}"
DOWNSTREAM = ("build_features", "fine_tune", "evaluate", "deploy_if_blessed", "deploy")


def _delete_runs(keep: str | None = None) -> None:
    """Remove this DAG's runs (but ``keep``) from the session's Airflow DB.

    Runs of one test must not hold back another's (``depends_on_past`` looks at the previous logical
    date), and other e2e modules run the same dates.
    """
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from sqlalchemy import delete

    session = settings.Session()
    session.execute(delete(DagRun).where(DagRun.dag_id == DAG_ID, DagRun.run_id != (keep or "")))
    session.commit()


@pytest.fixture(scope="module")
def processed_first_day(airflow_db, tmp_path_factory):
    """A store with 3 landed days and the first one processed through the DAG (champion v1); the DAG."""
    import os

    from airflow.dag_processing.dagbag import DagBag

    from recsys import registry
    from recsys.datasets.landing import land_days
    from recsys.storage.local import LocalStore

    _delete_runs()
    root = tmp_path_factory.mktemp("template-store")
    old = os.environ.get("RECSYS_STORAGE_ROOT")
    os.environ["RECSYS_STORAGE_ROOT"] = str(root)
    store = LocalStore(root)
    land_days(store, pendulum.date(2010, 12, 1), days=3)
    dag = DagBag(dag_folder=str(REPO_ROOT / "dags")).get_dag(DAG_ID)
    run = dag.test(logical_date=pendulum.parse(GOOD_DAY))
    assert run.state == "success"
    assert registry.load(store)["champion"] == 1
    yield dag, root, run.run_id
    _delete_runs()
    if old is None:
        os.environ.pop("RECSYS_STORAGE_ROOT")
    else:
        os.environ["RECSYS_STORAGE_ROOT"] = old


@pytest.fixture
def fresh_store(processed_first_day, tmp_path, monkeypatch):
    """This test's own copy of the processed store, made the DAG's store, and a freshly parsed DAG.

    (``dag.test(run_conf=...)`` leaves the conf in the DAG object's params, so no DAG object is shared.)
    """
    from airflow.dag_processing.dagbag import DagBag

    from recsys.storage.local import LocalStore

    _, template, good_run_id = processed_first_day
    # dag.test() runs are manual, and with catchup on Airflow's depends_on_past chains only scheduled and
    # backfill runs (manual ones rerun dates by hand): this DAG chains them as with catchup off
    monkeypatch.setenv("RECSYS_SCHEDULE_CATCHUP", "false")
    dag = DagBag(dag_folder=str(REPO_ROOT / "dags")).get_dag(DAG_ID)
    _delete_runs(keep=good_run_id)  # only the good first day's run exists: it succeeded
    root = tmp_path / "store"
    shutil.copytree(template, root)
    monkeypatch.setenv("RECSYS_STORAGE_ROOT", str(root))
    return dag, LocalStore(root)


def _digest(store, directory: str) -> dict[str, str]:
    """name -> sha256 of each readable file under ``directory`` (a link out of the store is never read)."""
    from recsys.storage import StorageError

    digests = {}
    for name in store.list_dir(directory):
        try:
            digests[name] = hashlib.sha256(store.read_bytes(f"{directory}/{name}")).hexdigest()
        except StorageError:
            continue
    return digests


def _events(store, day: str = BAD_DAY) -> pd.DataFrame:
    return store.read_parquet(f"raw/events/dt={day}/part-00000.parquet")


def _run_bad_day(dag, store, **conf):
    """Run BAD_DAY through the DAG; check it stopped at validate with everything kept. Returns the summary."""
    from recsys import registry

    raw_before = _digest(store, RAW_BAD)
    registry_before = registry.load(store)
    run = dag.test(logical_date=pendulum.parse(BAD_DAY), run_conf=conf or None)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "failed", states
    assert states["wait_for_partition"] == "success" and states["validate"] == "failed", states
    assert all(states[t] in ("upstream_failed", None) for t in DOWNSTREAM), states
    # champion and registry untouched, raw untouched, a copy in quarantine, no features for the bad day
    assert registry.load(store) == registry_before and registry.load(store)["champion"] == 1
    assert _digest(store, RAW_BAD) == raw_before
    quarantined = _digest(store, f"quarantine/events/dt={BAD_DAY}")
    assert {n: quarantined[n] for n in raw_before} == raw_before
    assert "reason.json" in quarantined
    assert not store.exists(f"features/dt={BAD_DAY}")
    summary = store.read_json(f"reports/validation/dt={BAD_DAY}/summary.json")
    assert summary["success"] is False
    assert store.exists(summary["data_docs"]["overview"]) and store.exists(summary["data_docs"]["index"])
    return summary


def _later_run_waits(dag) -> list[str]:
    """Create the next date's run as the scheduler would and evaluate its dependencies.

    ``depends_on_past`` holds each task until the same task of the previous date succeeded: the next
    date's sensor may still look for its marker (harmless), but its ``validate``, and so everything after
    it, cannot start while the previous date's ``validate`` is failed. (``dag.test()`` of that date would
    wait forever, so the run is created and evaluated directly.) Returns the reasons ``validate`` gives.
    """
    from airflow import settings
    from airflow.models.dagrun import DagRun, get_or_create_dagrun
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.ti_deps.dep_context import DepContext
    from airflow.utils.state import TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    session = settings.Session()
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    logical = pendulum.parse(LATER_DAY)
    run = get_or_create_dagrun(
        dag=scheduler_dag,
        start_date=logical,
        logical_date=logical,
        data_interval=coerce_to_core_timetable(dag.timetable).infer_manual_data_interval(run_after=logical),
        run_after=logical,
        run_id=DagRun.generate_run_id(run_type=DagRunType.MANUAL, logical_date=logical, run_after=logical),
        session=session,
        conf={},
        triggered_by=DagRunTriggeredByType.TEST,
        triggering_user_name="test",
    )
    schedulable, _ = run.update_state(session=session, execute_callbacks=False)
    assert [ti.task_id for ti in schedulable] == ["wait_for_partition"]
    # the marker of the next date is there: its sensor succeeds
    sensed = run.get_task_instance("wait_for_partition", session=session)
    sensed.state = TaskInstanceState.SUCCESS
    session.commit()
    schedulable, _ = run.update_state(session=session, execute_callbacks=False)
    session.commit()
    assert schedulable == [], [ti.task_id for ti in schedulable]
    held = run.get_task_instance("validate", session=session)
    assert held is not None and held.state is None
    held.task = scheduler_dag.get_task("validate")
    reasons = [s.reason for s in held.get_failed_dep_statuses(dep_context=DepContext(), session=session)]
    session.delete(run)
    session.commit()
    return reasons


def test_dag_stops_unknown_event_types_and_holds_the_next_date(fresh_store):
    dag, store = fresh_store
    events = _events(store)
    events.loc[events.index[:25], "event_type"] = "click"
    store.write_parquet(f"{RAW_BAD}/part-00000.parquet", events)
    summary = _run_bad_day(dag, store)
    assert summary["failed"] == ["expect_column_values_to_be_in_set"]
    reason = store.read_json(f"quarantine/events/dt={BAD_DAY}/reason.json")
    assert "[event types]" in reason["failed_descriptions"][0] and "'click'" in reason["failed_descriptions"][0]
    # order of fine-tunes: the next date does not start while this one is failed
    reasons = _later_run_waits(dag)
    assert any("depends_on_past" in r and "not in a successful state" in r for r in reasons), reasons
    assert not store.exists(f"reports/validation/dt={LATER_DAY}")


def test_dag_stops_a_truncated_parquet_file(fresh_store):
    dag, store = fresh_store
    data = store.read_bytes(f"{RAW_BAD}/part-00000.parquet")
    store.write_bytes(f"{RAW_BAD}/part-00000.parquet", data[: len(data) // 3])
    summary = _run_bad_day(dag, store)
    assert "truncated or corrupt parquet" in summary["problem"]


def test_dag_stops_a_link_out_of_the_store_and_reports_it(fresh_store, tmp_path):
    """issue 18 #13: a validation failure like any other (summary, quarantine, reason), the link never followed."""
    import os

    dag, store = fresh_store
    outside = tmp_path / "outside.parquet"
    outside.write_bytes(store.read_bytes(f"{RAW_BAD}/part-00000.parquet"))
    os.symlink(outside, store.root / RAW_BAD / "part-00001.parquet")
    summary = _run_bad_day(dag, store)
    assert "part-00001.parquet cannot be read" in summary["problem"] and "escapes the store root" in summary["problem"]
    reason = store.read_json(f"quarantine/events/dt={BAD_DAY}/reason.json")
    assert list(reason["not_copied"]) == ["part-00001.parquet"]


def test_dag_stops_a_csv_with_a_duplicate_column(fresh_store):
    """issue 18 #10: a second user_id column is a validation failure, not a silent rename."""
    dag, store = fresh_store
    events = _events(store)
    text = events.to_csv(index=False).splitlines()
    rows = [text[0] + ",user_id", *(line + ",99999" for line in text[1:])]
    store.write_bytes(f"{RAW_BAD}/part-00000.csv", ("\n".join(rows) + "\n").encode())
    (store.root / RAW_BAD / "part-00000.parquet").unlink()  # the delivery is the CSV alone
    summary = _run_bad_day(dag, store)
    assert "duplicate column user_id" in summary["problem"]


def test_dag_stops_a_tenfold_volume_spike(fresh_store):
    dag, store = fresh_store
    events = _events(store)
    copies = []
    for n in range(10):
        copy = events.copy()
        copy["event_id"] = copy["event_id"] + f"-{n}"
        copies.append(copy)
    store.write_parquet(f"{RAW_BAD}/part-00000.parquet", pd.concat(copies, ignore_index=True))
    summary = _run_bad_day(dag, store)
    assert summary["failed"] == ["expect_table_row_count_to_be_between"]
    assert "averaged 1942 rows" in summary["notes"]["volume within the trailing average"]


def test_dag_stops_a_different_redelivery_of_a_processed_date(fresh_store):
    from recsys import registry

    dag, store = fresh_store
    raw_good = f"raw/events/dt={GOOD_DAY}"
    events = _events(store, GOOD_DAY)
    buf = io.BytesIO()
    events.iloc[:-10].to_parquet(buf, index=False)  # upstream re-ran the day and lost ten rows
    store.write_bytes(f"{raw_good}/part-00000.parquet", buf.getvalue())
    registry_before = registry.load(store)
    features_before = _digest(store, f"features/dt={GOOD_DAY}")
    # on-call reruns the processed date by hand, as the README describes
    run = dag.test(logical_date=pendulum.datetime(2010, 12, 20), run_conf={"partition_date": GOOD_DAY})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "failed" and states["validate"] == "failed", states
    assert all(states[t] in ("upstream_failed", None) for t in DOWNSTREAM), states
    assert registry.load(store) == registry_before
    assert _digest(store, f"features/dt={GOOD_DAY}") == features_before
    reason = store.read_json(f"quarantine/events/dt={GOOD_DAY}/reason.json")
    assert "already processed" in reason["problem"] and "differs" in reason["problem"]


def test_dag_accepts_a_failed_partition_only_with_a_reason(fresh_store):
    from recsys import registry

    dag, store = fresh_store
    events = _events(store)
    events.loc[events.index[:3], "price"] = -1.0  # three refunds booked as negative prices
    store.write_parquet(f"{RAW_BAD}/part-00000.parquet", events)
    summary = _run_bad_day(dag, store)
    assert summary["failed"] == ["expect_column_values_to_be_between"]

    # accepting without a reason is refused, and changes nothing
    _run_bad_day(dag, store, accept_invalid=True)
    assert not any(h["action"] == "accepted_invalid" for h in registry.load(store)["history"])

    # with a reason the date goes through, and the acceptance is in the registry history
    reason = "refunds booked as negative prices; cleaning keeps them out of training"
    run = dag.test(logical_date=pendulum.parse(BAD_DAY), run_conf={"accept_invalid": True, "accept_reason": reason})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert states["validate"] == "success" and states["fine_tune"] == "success" and states["evaluate"] == "success"
    reg = registry.load(store)
    accepted = [h for h in reg["history"] if h["action"] == "accepted_invalid"]
    assert len(accepted) == 1
    assert accepted[0]["date"] == BAD_DAY and accepted[0]["reason"] == reason and accepted[0]["run_id"] == run.run_id
    assert any("[price range]" in f for f in accepted[0]["failed_expectations"])
    assert BAD_DAY in reg["decisions"]
    validated = store.read_json(f"reports/validation/dt={BAD_DAY}/summary.json")
    assert validated["success"] is False and validated["accepted"]["reason"] == reason


def test_dag_params_for_acceptance_are_typed_and_documented(fresh_store):
    dag, _ = fresh_store
    accept = dag.params.get_param("accept_invalid")
    why = dag.params.get_param("accept_reason")
    assert accept.value is False and accept.schema["type"] == "boolean"
    assert accept.schema["title"] and accept.description
    assert why.schema["title"] and "Required" in why.description
