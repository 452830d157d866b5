"""Airflow's metadata database on a real PostgreSQL server: migrate it and run the incremental DAG on it.

The test starts a throwaway cluster of Debian's ``postgresql`` package (tests/postgres.py: ``initdb`` +
``pg_ctl`` on a free loopback port, as the ``postgres`` user when run as root) and stops it afterwards.
Airflow runs in subprocesses (its database is chosen when it is first imported, and this session's is SQLite).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from tests.postgres import throwaway_postgres

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "recsys_incremental_update"
DAY = "2010-12-01"


@pytest.fixture(scope="module")
def postgres():
    """A running PostgreSQL cluster with an ``airflow`` database (tests/postgres.py); yields its SQLAlchemy URL."""
    with throwaway_postgres() as url:
        yield url


def test_the_incremental_dag_runs_with_its_metadata_in_postgresql(postgres, tmp_path):
    """Migrate the schema, run one date with ``airflow dags test``; runs and task states are in PostgreSQL."""
    import psycopg2

    from recsys.datasets.landing import land_days
    from recsys.storage.local import LocalStore

    store_root = tmp_path / "store"
    land_days(LocalStore(store_root), date.fromisoformat(DAY), days=1)
    home = tmp_path / "airflow-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS_"))} | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres,
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "RECSYS_STORAGE_ROOT": str(store_root),
    }
    airflow = str(Path(sys.executable).with_name("airflow"))

    def airflow_cli(*args: str, timeout: int) -> str:
        out = subprocess.run([airflow, *args], capture_output=True, text=True, env=env, timeout=timeout)
        assert out.returncode == 0, f"airflow {' '.join(args)} exited {out.returncode}:\n{out.stdout[-3000:]}\n" \
                                    f"{out.stderr[-5000:]}"
        return out.stdout

    airflow_cli("db", "migrate", timeout=300)
    assert "postgresql" in airflow_cli("config", "get-value", "database", "sql_alchemy_conn", timeout=120)
    airflow_cli("dags", "test", DAG_ID, DAY, timeout=600)

    with psycopg2.connect(postgres.replace("postgresql+psycopg2", "postgresql")) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id, state FROM dag_run WHERE dag_id = %s", (DAG_ID,))
        runs = cur.fetchall()
        assert len(runs) == 1 and runs[0][1] == "success", runs
        cur.execute("SELECT task_id, state FROM task_instance WHERE dag_id = %s AND run_id = %s", (DAG_ID, runs[0][0]))
        states = dict(cur.fetchall())
    assert set(states) == {"wait_for_partition", "validate", "build_features", "fine_tune", "evaluate",
                           "deploy_if_blessed", "deploy", "refresh_serving_index"}
    assert all(state == "success" for state in states.values()), states
    registry = LocalStore(store_root).read_json("registry/two_tower.json")
    assert registry["champion"] == 1 and registry["history"][-1]["run_id"] == runs[0][0]
