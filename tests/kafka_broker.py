"""A real Kafka broker for tests: the single KRaft node of scripts/kafka.sh, shared by the sessions of a checkout.

``broker_session()`` is the body of a session fixture (``yield from broker_session()``). The first session
that needs the broker starts it; every session registers itself while it uses it, and the last one stops
the broker if a test session started it (a broker started by hand is used and left running). If it cannot
start, every test that needs it fails (never skips) with the script's message and the log's tail.
Import it as ``from tests.kafka_broker import broker_session`` (pytest's importlib mode makes ``tests``
importable).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.storage.base import pid_alive
from tests.daemons import log_tail

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA_SCRIPT = REPO_ROOT / "scripts" / "kafka.sh"
KAFKA_STATE = Path(os.environ.get("KAFKA_HOME", REPO_ROOT / "var" / "kafka"))
START_TIMEOUT = 180  # seconds; a start takes about 10 s on 2 cores, the first build a little more


class KafkaBroker:
    """The running test broker: its address and a factory of fresh topics."""

    def __init__(self, ready: dict) -> None:
        self.bootstrap: str = ready["bootstrap"]
        self.start_seconds: float = ready["start_seconds"]
        self.pid: int = ready["pid"]

    def new_topic(self, name: str = "events", partitions: int = 3) -> str:
        """A topic no other test uses (``test-<name>-<random>``), created with ``partitions`` partitions."""
        from recsys.streaming.topics import ensure_topic

        topic = f"test-{name}-{uuid.uuid4().hex[:8]}"
        assert ensure_topic(self.bootstrap, topic, partitions) == partitions
        return topic

    def kill(self) -> None:
        """SIGKILL the broker process (a crash: no clean shutdown) and wait until it is gone."""
        import signal
        import time

        os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while pid_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(self.pid), f"broker pid {self.pid} survived SIGKILL"

    def restart(self) -> None:
        """Start the broker again on its data and ports (after :meth:`kill`); the same bootstrap address."""
        marker = KAFKA_STATE / "started-by-tests"
        ours = marker.exists()  # `start` clears it: the session that started the broker still stops it
        start = _script("start", timeout=START_TIMEOUT + 60)
        if start.returncode != 0:
            pytest.fail(f"the test Kafka broker did not restart:\n{start.stderr}\n{_log_tail()}", pytrace=False)
        if ours:
            marker.touch()
        ready = json.loads((KAFKA_STATE / "ready.json").read_text())
        assert ready["bootstrap"] == self.bootstrap
        self.pid = ready["pid"]


def _log_tail() -> str:
    return log_tail(KAFKA_STATE / "kafka.log")


def _script(command: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"KAFKA_HOME": str(KAFKA_STATE), "KAFKA_TIMEOUT": str(START_TIMEOUT)}
    return subprocess.run([str(KAFKA_SCRIPT), command], capture_output=True, text=True, env=env, timeout=timeout)


def broker_session() -> Iterator[KafkaBroker]:
    """Start (or join) the test broker; yield it; stop it when the last test session using it ends."""
    KAFKA_STATE.mkdir(parents=True, exist_ok=True)
    users = KAFKA_STATE / "test-sessions"
    users.mkdir(exist_ok=True)
    started_by_tests = KAFKA_STATE / "started-by-tests"
    me = users / str(os.getpid())
    with open(KAFKA_STATE / "fixture.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one session at a time decides whether to start it
        if _script("status").returncode != 0:
            try:
                start = _script("start", timeout=START_TIMEOUT + 120)
            except subprocess.TimeoutExpired as err:
                _script("stop")
                pytest.fail(f"the test Kafka broker did not start within {err.timeout:.0f} s\n{_log_tail()}",
                            pytrace=False)
            if start.returncode != 0:
                pytest.fail(f"the test Kafka broker did not start (scripts/kafka.sh start exited "
                            f"{start.returncode}):\n{start.stderr}\n{_log_tail()}", pytrace=False)
            if "already running" not in start.stderr and "started by someone else" not in start.stderr:
                started_by_tests.touch()
        ready_file = KAFKA_STATE / "ready.json"
        if not ready_file.exists():
            pytest.fail(f"the test Kafka broker reports no {ready_file}\n{_log_tail()}", pytrace=False)
        broker = KafkaBroker(json.loads(ready_file.read_text()))
        me.touch()

    yield broker

    with open(KAFKA_STATE / "fixture.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        me.unlink(missing_ok=True)
        others = [p for p in users.iterdir() if p.name.isdigit() and pid_alive(int(p.name))]
        if not others and started_by_tests.exists():
            _script("stop")
            started_by_tests.unlink(missing_ok=True)
