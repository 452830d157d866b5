"""The incremental DAG, run by Airflow (``dag.test()``) on real Online Retail days, end to end."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pendulum
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "recsys_incremental_update"
DAYS = ["2010-12-01", "2010-12-02", "2010-12-03"]


LOCKS = "registry/locks/"  # lease files of the store locks (recsys.storage.lock): bookkeeping, a few kept per lock


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest), the locks' lease files left out."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not str(p.relative_to(root)).startswith(LOCKS)
    }


@pytest.fixture(scope="module")
def pipeline(airflow_db, tmp_path_factory):
    """Land three days, run the DAG for each through Airflow; yields (dag, store root, runs)."""
    import os

    from airflow.dag_processing.dagbag import DagBag

    from recsys.datasets.landing import land_days
    from recsys.storage.local import LocalStore

    root = tmp_path_factory.mktemp("store")
    old = os.environ.get("RECSYS_STORAGE_ROOT")
    os.environ["RECSYS_STORAGE_ROOT"] = str(root)
    store = LocalStore(root)
    landed = land_days(store, pendulum.date(2010, 12, 1), days=3)
    assert [x.day.isoformat() for x in landed] == DAYS

    dagbag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert dagbag.import_errors == {}
    dag = dagbag.get_dag(DAG_ID)
    runs = {day: dag.test(logical_date=pendulum.parse(day)) for day in DAYS}
    yield dag, root, store, runs
    if old is None:
        os.environ.pop("RECSYS_STORAGE_ROOT")
    else:
        os.environ["RECSYS_STORAGE_ROOT"] = old


def test_each_run_succeeds(pipeline):
    _, _, _, runs = pipeline
    assert {day: run.state for day, run in runs.items()} == dict.fromkeys(DAYS, "success")


def test_registry_records_a_decision_per_date_and_the_champion_changes(pipeline):
    from recsys import registry

    _, _, store, _ = pipeline
    reg = registry.load(store)
    assert sorted(reg["decisions"]) == DAYS
    assert sorted(int(v) for v in reg["versions"]) == [1, 2, 3]
    for day in DAYS:
        decision = reg["decisions"][day]
        assert decision["reason"]
        assert decision["eval_users"] > 0
    deploys = [h for h in reg["history"] if h["action"] == "deployed"]
    assert deploys[0]["from"] is None and deploys[0]["to"] == 1
    # a champion was replaced by a later candidate at least once
    assert any(h["from"] is not None and h["to"] != h["from"] for h in deploys)
    assert reg["champion"] == deploys[-1]["to"]
    # deploy only ever happened for blessed candidates
    blessed = {d["candidate_version"] for d in reg["decisions"].values() if d["blessed"]}
    assert {h["to"] for h in deploys} <= blessed
    champion_dir = Path(store.uri(f"models/two_tower/versions/{reg['champion']}").removeprefix("file://"))
    assert (champion_dir / "saved_model.pb").is_file() and (champion_dir / "index.parquet").is_file()


def test_deploy_task_skipped_exactly_when_not_blessed(pipeline):
    from recsys import registry

    _, _, store, runs = pipeline
    reg = registry.load(store)
    for day, run in runs.items():
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        expected = "success" if reg["decisions"][day]["blessed"] else "skipped"
        assert states["deploy"] == expected, (day, states)
        # the catalog is applied to the serving index every day, deploy or not
        assert states["refresh_serving_index"] == "success", (day, states)


def test_rerun_of_a_processed_date_changes_nothing(pipeline):
    dag, root, _, _ = pipeline
    before = tree_digest(root)
    # a manual rerun from the trigger form: another logical date, the partition date as a param
    run = dag.test(logical_date=pendulum.datetime(2010, 12, 20), run_conf={"partition_date": DAYS[1]})
    assert run.state == "success"
    after = tree_digest(root)
    assert after == before
