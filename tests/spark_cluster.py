"""A real Spark standalone cluster for tests: the master and worker of scripts/spark.sh, shared by the test
sessions of a checkout.

``cluster_session()`` is the body of the session fixture ``spark_standalone`` (tests/conftest.py). The first
session that needs the cluster starts it; every session registers itself while it uses it, and the last one
stops the cluster if a test session started it (a cluster started by hand is used and left running). If it
cannot start, every test that needs it fails (never skips) with the script's message and the logs' tails.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.storage.base import pid_alive
from tests.daemons import log_tail

REPO_ROOT = Path(__file__).resolve().parents[1]
SPARK_SCRIPT = REPO_ROOT / "scripts" / "spark.sh"
SPARK_STATE = Path(os.environ.get("SPARK_STANDALONE_HOME", REPO_ROOT / "var" / "spark-standalone"))
START_TIMEOUT = 180  # seconds; a start takes about 10 s on 2 cores


class SparkStandalone:
    """The running test cluster: its master URL (``spark://127.0.0.1:<port>``), REST URL and worker resources."""

    def __init__(self, ready: dict) -> None:
        self.master: str = ready["master"]
        self.rest: str = ready["rest"]
        self.cores: int = int(ready["cores"])
        self.memory: str = ready["memory"]
        self.start_seconds: float = ready["start_seconds"]

    def connection_uri(self, deploy_mode: str = "client") -> str:
        """The Airflow connection ``spark_default`` of this master, as an ``AIRFLOW_CONN_*`` value."""
        host, port = self.master.removeprefix("spark://").split(":")
        rest_port = self.rest.rsplit(":", 1)[1]
        return json.dumps({"conn_type": "spark", "host": f"spark://{host}", "port": int(port),
                           "extra": {"deploy-mode": deploy_mode, "rest-port": int(rest_port)}})


def _logs() -> str:
    return "\n".join(log_tail(SPARK_STATE / f"{role}.log", 30) for role in ("master", "worker"))


def _script(command: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"SPARK_STANDALONE_HOME": str(SPARK_STATE), "SPARK_STANDALONE_TIMEOUT": str(START_TIMEOUT)}
    return subprocess.run([str(SPARK_SCRIPT), command], capture_output=True, text=True, env=env, timeout=timeout)


def cluster_session() -> Iterator[SparkStandalone]:
    """Start (or join) the test cluster; yield it; stop it when the last test session using it ends."""
    SPARK_STATE.mkdir(parents=True, exist_ok=True)
    users = SPARK_STATE / "test-sessions"
    users.mkdir(exist_ok=True)
    started_by_tests = SPARK_STATE / "started-by-tests"
    me = users / str(os.getpid())
    with open(SPARK_STATE / "fixture.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one session at a time decides whether to start it
        if _script("status").returncode != 0:
            try:
                start = _script("start", timeout=START_TIMEOUT + 60)
            except subprocess.TimeoutExpired as err:
                _script("stop")
                pytest.fail(f"the test Spark cluster did not start within {err.timeout:.0f} s\n{_logs()}",
                            pytrace=False)
            if start.returncode != 0:
                pytest.fail(f"the test Spark cluster did not start (scripts/spark.sh start exited "
                            f"{start.returncode}):\n{start.stderr}\n{_logs()}", pytrace=False)
            if "already running" not in start.stderr:
                started_by_tests.touch()
        ready_file = SPARK_STATE / "ready.json"
        if not ready_file.exists():
            pytest.fail(f"the test Spark cluster reports no {ready_file}\n{_logs()}", pytrace=False)
        cluster = SparkStandalone(json.loads(ready_file.read_text()))
        me.touch()

    yield cluster

    with open(SPARK_STATE / "fixture.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        me.unlink(missing_ok=True)
        others = [p for p in users.iterdir() if p.name.isdigit() and pid_alive(int(p.name))]
        if not others and started_by_tests.exists():
            _script("stop")
            started_by_tests.unlink(missing_ok=True)
