"""The partition sensor on a Kerberized HDFS: with Airflow's ``[core] security = kerberos`` the task's store
and the provider's ``WebHdfsSensor`` both authenticate with SPNEGO (the worker's ticket) through the same
Airflow connection.

The HDFS provider reads ``[core] security`` once, when its hook module is imported, so each case runs in a
fresh Python process with its own ``AIRFLOW__CORE__SECURITY``. The cluster is the Kerberized MiniDFSCluster
with Hadoop's MiniKdc (scripts/hdfs-minicluster.sh start kerberos); these tests fail, never skip, when it
cannot start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.hdfs]

REPO_ROOT = Path(__file__).resolve().parents[2]

POKE = """
import json, sys
import pendulum
from recsys_airflow.runtime import settings
from recsys_airflow.sensors import LateAwareWebHdfsSensor
from recsys.storage import open_store

root, landed, missing = sys.argv[1:]
current = settings()  # as a task gets them: the NameNode from the connection webhdfs_default
store = open_store(current)
store.write_bytes(f"raw/events/dt={landed}/part-00000.parquet", b"data")
store.mark_success(f"raw/events/dt={landed}")

def poke(day):
    sensor = LateAwareWebHdfsSensor(task_id="wait_for_partition", filepath=f"{root}/raw/events/dt={day}/_SUCCESS")
    context = {"params": {}, "logical_date": pendulum.parse(day), "run_id": "scheduled__" + day}
    return sensor.poke(context)

print(json.dumps({"auth": current.webhdfs_auth, "user": current.webhdfs_user, "landed": poke(landed),
                  "missing": poke(missing)}))
"""


def _poke(cluster, security: str, root: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__CORE__SECURITY", "RECSYS_"))} | {
        "AIRFLOW__CORE__SECURITY": security,
        "AIRFLOW_CONN_WEBHDFS_DEFAULT": cluster.connection_uri(),  # login 'recsys': simple auth's user
        "RECSYS_STORAGE_BACKEND": "webhdfs", "RECSYS_STORAGE_ROOT": root, "RECSYS_PARTITION_LATE_HOUR": "none",
        "PYTHONPATH": str(REPO_ROOT / "plugins"),
    }
    return subprocess.run([sys.executable, "-c", POKE, root, "2011-01-04", "2011-01-05"], capture_output=True,
                          text=True, env=env, timeout=300)


def test_with_kerberos_security_the_sensor_finds_the_marker_the_store_wrote(kerberos_ticket):
    root = f"/recsys-test/sensor-{uuid.uuid4().hex[:8]}"
    out = _poke(kerberos_ticket, "kerberos", root)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # the store: SPNEGO with the ticket, no impersonation of the connection's login
    assert (result["auth"], result["user"]) == ("kerberos", None)
    assert result == {"auth": "kerberos", "user": None, "landed": True, "missing": False}


def test_without_kerberos_security_the_sensor_is_refused_by_the_kerberized_namenode(kerberos_ticket):
    out = _poke(kerberos_ticket, "", f"/recsys-test/sensor-{uuid.uuid4().hex[:8]}")
    # simple authentication: the store's first write is answered 401, naming the setting
    assert out.returncode != 0
    assert "Authentication failure" in out.stderr and "RECSYS_WEBHDFS_AUTH=kerberos" in out.stderr, out.stderr[-3000:]
