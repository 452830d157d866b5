"""A throwaway PostgreSQL server for tests that need Airflow's metadata database on a real server.

``throwaway_postgres()`` starts a cluster of Debian's ``postgresql`` package (``initdb`` + ``pg_ctl`` on a
free loopback port, as the ``postgres`` user when run as root, since PostgreSQL refuses to run as root),
creates an ``airflow`` database, yields its SQLAlchemy URL and stops the server afterwards, also when the
test failed. Import it as ``from tests.postgres import throwaway_postgres`` (pytest's importlib mode makes
``tests`` importable) and wrap it in a fixture of the scope you need.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def pg_bin() -> Path:
    """The ``bin`` directory of the newest installed PostgreSQL; fails the test (never skips) without one."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if not versions:
        pytest.fail(
            "PostgreSQL is not installed: apt-get install postgresql (.ci/run and scripts/setup.sh do)", pytrace=False
        )
    return versions[-1].parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def throwaway_postgres(database: str = "airflow") -> Iterator[str]:
    """A running PostgreSQL cluster with an empty ``database``; yields its ``postgresql+psycopg2://`` URL.

    The cluster lives in its own directory under the system temp dir (pytest's are private to root),
    owned by the ``postgres`` user when the tests run as root. fsync is off: it is thrown away.
    """
    bindir = pg_bin()
    root = Path(tempfile.mkdtemp(prefix="recsys-test-postgres-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        root.chmod(0o755)
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def run(*cmd: str, timeout: int = 120) -> None:
        out = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{database}"
    finally:
        _stop(as_user, bindir, data)
        shutil.rmtree(root, ignore_errors=True)


def _stop(as_user: list[str], bindir: Path, data: Path) -> None:
    """pg_ctl's fast shutdown; if that fails, SIGINT (fast shutdown) to the postmaster of ``postmaster.pid``."""
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().split()[0])
    subprocess.run(
        [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
        capture_output=True,
        timeout=120,
    )
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
