"""A throwaway Redis server for tests that need a real Celery broker.

``throwaway_redis()`` starts Debian's ``redis-server`` on a free loopback port with no persistence (no RDB
snapshots, no append-only file, its working directory a fresh temp dir), waits until it answers ``PING``,
yields its ``redis://`` URL and stops it afterwards, also when the test failed. A missing ``redis-server``
or a server that does not answer fails the test (never skips). Import it as
``from tests.redis_server import throwaway_redis`` and wrap it in a fixture of the scope you need.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import free_port

START_TIMEOUT = 30  # s: it answers within a few ms on a quiet machine


def redis_server() -> str:
    """The path of ``redis-server``; fails the test (never skips) without one."""
    path = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if path is None:
        pytest.fail("redis-server is not installed: apt-get install redis-server (.ci/run does)", pytrace=False)
    return path


def ping(port: int) -> bool:
    """True if a Redis server on 127.0.0.1:``port`` answers ``PING`` with ``PONG``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def throwaway_redis() -> Iterator[str]:
    """A running ``redis-server`` on 127.0.0.1 without persistence; yields ``redis://127.0.0.1:<port>/0``."""
    binary = redis_server()
    root = Path(tempfile.mkdtemp(prefix="recsys-test-redis-"))
    port = free_port()
    log = root / "redis.log"
    cmd = [
        binary,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",  # no RDB snapshots
        "--appendonly", "no",
        "--dir", str(root),
        "--logfile", str(log),
        "--daemonize", "no",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
                pytest.fail(f"redis-server did not start on 127.0.0.1:{port} (exit {proc.poll()}):\n{text}",
                            pytrace=False)
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
