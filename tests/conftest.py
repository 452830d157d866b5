"""Test-wide setup: an isolated Airflow home, so tests never touch var/ or ~/airflow.

Airflow reads its configuration when first imported, so these variables are set at conftest import,
before any test module imports airflow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGS_FOLDER = REPO_ROOT / "dags"
AIRFLOW_INIT = REPO_ROOT / "scripts" / "airflow-init.sh"  # `airflow db migrate` and the recsys pools

_airflow_home = tempfile.mkdtemp(prefix="recsys-test-airflow-")
os.environ["AIRFLOW_HOME"] = _airflow_home
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO_ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# the product's own default storage root must never be used by tests
os.environ["RECSYS_STORAGE_ROOT"] = str(Path(_airflow_home) / "store-unset")


def _migrate_airflow_db() -> None:
    import subprocess
    import sys

    airflow = Path(sys.executable).with_name("airflow")
    # the schema and the registry pool, as every deployment gets them
    subprocess.run([str(AIRFLOW_INIT)], check=True, capture_output=True, env=os.environ | {"AIRFLOW": str(airflow)})


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated SQLite Airflow metadata database (with the recsys pools) in the session's Airflow home."""
    _migrate_airflow_db()
    return _airflow_home


# --- a real HDFS ------------------------------------------------------------------------------------
HDFS_SCRIPT = REPO_ROOT / "scripts" / "hdfs-minicluster.sh"
HDFS_STATE = Path(os.environ.get("HDFS_MINICLUSTER_HOME", REPO_ROOT / "var" / "hdfs-minicluster"))
HDFS_KERBEROS_STATE = Path(
    os.environ.get("HDFS_MINICLUSTER_KERBEROS_HOME", REPO_ROOT / "var" / "hdfs-minicluster-kerberos")
)
HDFS_START_TIMEOUT = 240  # seconds; a start takes about 10 s on 2 cores, the first build about 30 s more
HDFS_USER = "recsys"


class HdfsCluster:
    """The running test HDFS: its addresses and a factory of stores in fresh directories."""

    def __init__(self, ready: dict) -> None:
        self.webhdfs_url: str = ready["webhdfs"]
        self.namenode: str = ready["namenode"]
        self.start_seconds: float = ready["start_seconds"]
        self.user = HDFS_USER

    def store(self, name: str = "store"):
        """A WebHDFS store in a directory no other test uses (``/recsys-test/<name>-<random>``)."""
        import uuid

        from recsys.storage.webhdfs import WebHDFSStore

        return WebHDFSStore(self.webhdfs_url, f"/recsys-test/{name}-{uuid.uuid4().hex[:8]}", user=self.user)

    def connection_uri(self) -> str:
        """The Airflow connection of this NameNode, as an ``AIRFLOW_CONN_*`` value."""
        import json
        from urllib.parse import urlsplit

        web = urlsplit(self.webhdfs_url)
        return json.dumps({"conn_type": "webhdfs", "host": web.hostname, "port": web.port, "login": self.user})


def _shared_cluster(mode: str, state: Path):
    """Start (or join) the test cluster of ``scripts/hdfs-minicluster.sh ... <mode>``; yield its ready.json.

    The first session that needs it starts it; every session registers itself while it uses it, and
    the last one to finish stops it. A cluster started by hand is used and left running. If it cannot
    start, every test that needs it fails (never skips) with the script's message and the log's tail.
    """
    import fcntl
    import json
    import subprocess

    from recsys.storage.base import pid_alive
    from tests.daemons import log_tail

    log = state / "cluster.log"
    env = os.environ | {
        "HDFS_MINICLUSTER_HOME": str(HDFS_STATE), "HDFS_MINICLUSTER_KERBEROS_HOME": str(HDFS_KERBEROS_STATE),
        "HDFS_MINICLUSTER_TIMEOUT": str(HDFS_START_TIMEOUT),
    }
    script = [str(HDFS_SCRIPT)]
    state.mkdir(parents=True, exist_ok=True)
    users = state / "test-sessions"
    users.mkdir(exist_ok=True)
    started_by_tests = state / "started-by-tests"
    me = users / str(os.getpid())

    with open(state / "fixture.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one session at a time decides whether to start it
        running = subprocess.run([*script, "status", mode], capture_output=True, text=True, env=env)
        if running.returncode != 0:
            try:
                start = subprocess.run(
                    [*script, "start", mode], capture_output=True, text=True, env=env,
                    timeout=HDFS_START_TIMEOUT + 120,
                )
            except subprocess.TimeoutExpired as err:
                subprocess.run([*script, "stop", mode], capture_output=True, env=env)
                pytest.fail(
                    f"the test HDFS ({mode}) did not start within {err.timeout:.0f} s\n{log_tail(log)}",
                    pytrace=False,
                )
            if start.returncode != 0:
                pytest.fail(
                    f"the test HDFS did not start (scripts/hdfs-minicluster.sh start {mode} exited "
                    f"{start.returncode}):\n{start.stderr}\n{log_tail(log)}",
                    pytrace=False,
                )
            if "already running" not in start.stderr and "started by someone else" not in start.stderr:
                started_by_tests.touch()
        ready_file = state / "ready.json"
        if not ready_file.exists():
            pytest.fail(f"the test HDFS reports no {ready_file}\n{log_tail(log)}", pytrace=False)
        ready = json.loads(ready_file.read_text())
        me.touch()

    yield ready

    with open(state / "fixture.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        me.unlink(missing_ok=True)
        others = [p for p in users.iterdir() if p.name.isdigit() and pid_alive(int(p.name))]
        if not others and started_by_tests.exists():
            subprocess.run([*script, "stop", mode], capture_output=True, env=env)
            started_by_tests.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def hdfs_cluster():
    """A real single-node HDFS (scripts/hdfs-minicluster.sh), shared by the test sessions of this checkout."""
    for ready in _shared_cluster("simple", HDFS_STATE):
        yield HdfsCluster(ready)


class KerberizedHdfsCluster(HdfsCluster):
    """The Kerberized test HDFS: SPNEGO on WebHDFS, its KDC's client krb5.conf, principal and keytab."""

    def __init__(self, ready: dict) -> None:
        super().__init__(ready)
        self.realm: str = ready["realm"]
        self.krb5_conf = Path(ready["krb5_conf"])
        self.principal: str = ready["client_principal"]
        self.keytab = Path(ready["client_keytab"])

    def store(self, name: str = "store"):
        """A WebHDFS store with Kerberos authentication (needs a ticket: fixture ``kerberos_ticket``)."""
        import uuid

        from recsys.storage.webhdfs import WebHDFSStore

        return WebHDFSStore(self.webhdfs_url, f"/recsys-test/{name}-{uuid.uuid4().hex[:8]}", auth="kerberos")

    def kinit(self, ccache: Path) -> None:
        """Get the client principal's ticket from its keytab into ``ccache`` (what ``kinit -kt`` does)."""
        import gssapi

        name = gssapi.Name(self.principal, gssapi.NameType.kerberos_principal)
        store: dict[bytes | str, bytes | str] = {"client_keytab": str(self.keytab), "ccache": f"FILE:{ccache}"}
        gssapi.Credentials(name=name, usage="initiate", store=store)


@pytest.fixture(scope="session")
def hdfs_kerberos_cluster():
    """A Kerberized single-node HDFS with its KDC (scripts/hdfs-minicluster.sh start kerberos)."""
    for ready in _shared_cluster("kerberos", HDFS_KERBEROS_STATE):
        yield KerberizedHdfsCluster(ready)


@pytest.fixture
def kerberos_ticket(hdfs_kerberos_cluster, tmp_path, monkeypatch) -> KerberizedHdfsCluster:
    """This test holds a ticket of the cluster's client principal (KRB5_CONFIG, KRB5CCNAME in tmp_path)."""
    ccache = tmp_path / "krb5cc"
    monkeypatch.setenv("KRB5_CONFIG", str(hdfs_kerberos_cluster.krb5_conf))
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{ccache}")
    hdfs_kerberos_cluster.kinit(ccache)
    return hdfs_kerberos_cluster


@pytest.fixture(scope="session")
def spark_standalone():
    """A real Spark standalone master + worker on loopback (scripts/spark.sh; see tests/spark_cluster.py)."""
    from tests.spark_cluster import cluster_session

    yield from cluster_session()


@pytest.fixture(scope="session")
def spark():
    """One local-mode SparkSession for every test that needs Spark (tests/spark_session.py); fails if it
    cannot start."""
    from tests.spark_session import session

    yield from session()
