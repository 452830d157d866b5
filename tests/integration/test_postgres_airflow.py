"""Airflow's metadata database on a real PostgreSQL server: migrate it and run the incremental DAG on it.

The test starts a throwaway cluster of Debian's ``postgresql`` package (``initdb`` + ``pg_ctl`` on a free
loopback port, as the ``postgres`` user when run as root) and stops it afterwards. Airflow runs in
subprocesses (its database is chosen when it is first imported, and this session's is SQLite).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "recsys_incremental_update"
DAY = "2010-12-01"


def _pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if not versions:
        pytest.fail("PostgreSQL is not installed: apt-get install postgresql (.ci/run and scripts/setup.sh do)",
                    pytrace=False)
    return versions[-1].parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A running PostgreSQL cluster with an ``airflow`` database; yields its SQLAlchemy URL.

    The cluster lives in its own directory under the system temp dir (pytest's are private to root),
    owned by the ``postgres`` user when the tests run as root (PostgreSQL refuses to run as root).
    """
    bindir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="recsys-test-postgres-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        root.chmod(0o755)
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def run(*cmd: str, timeout: int = 120) -> None:
        out = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
            f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "airflow")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/airflow"
    finally:
        _stop(as_user, bindir, data)
        shutil.rmtree(root, ignore_errors=True)


def _stop(as_user: list[str], bindir: Path, data: Path) -> None:
    """pg_ctl's fast shutdown; if that fails, SIGINT (fast shutdown) to the postmaster of ``postmaster.pid``."""
    import signal
    import time

    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().split()[0])
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                   capture_output=True, timeout=120)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


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
