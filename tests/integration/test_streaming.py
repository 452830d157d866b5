"""Collector -> real Kafka broker -> sink -> partition store, exactly once, also when the sink is killed.

The broker is the single KRaft node of scripts/kafka.sh (fails, never skips, when it cannot start). Event
times are relative to now (the collector refuses events older than 7 days): day D is two days ago, so the
wall-clock watermark of a caught-up sink always passes D + 1 day + 1 hour of allowed lateness.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from recsys.config import Settings
from recsys.storage import layout
from recsys.storage.local import LocalStore
from recsys.storage.raw import fingerprint, read_partition
from recsys.streaming.collector import CollectorConfig, create_app
from recsys.streaming.sink import SINK_MARKER, Sink, SinkConfig, read_events
from recsys.validation.partition import validate_partition
from tests.kafka_broker import KafkaBroker, broker_session

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    yield from broker_session()


def make_events(prefix: str, day: date, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` events spread over ``day`` (UTC): 30 users, 40 items, every event type."""
    rng = random.Random(seed)
    start = datetime.combine(day, datetime.min.time(), UTC)
    return [{
        "event_id": f"{prefix}-{i}",
        "event_time": (start + timedelta(seconds=rng.randrange(86_400))).isoformat(),
        "user_id": f"u{rng.randrange(30)}",
        "item_id": f"item-{rng.randrange(40)}",
        "event_type": rng.choice(["view", "add_to_cart", "purchase"]),
        "quantity": rng.randrange(1, 5),
        "price": round(rng.uniform(0.5, 20), 2),
        "session_id": f"s{rng.randrange(100)}",
        "country": "United Kingdom",
    } for i in range(n)]


def recent_events(prefix: str, n: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [{"event_id": f"{prefix}-{i}", "event_time": (now - timedelta(seconds=30 + i)).isoformat(),
             "user_id": f"u{i % 30}", "item_id": f"item-{i % 40}", "event_type": "view", "quantity": 1,
             "price": 1.0} for i in range(n)]


def post_all(client: TestClient, batch: list[dict[str, Any]], size: int = 100) -> int:
    accepted = 0
    for i in range(0, len(batch), size):
        answer = client.post("/events", json=batch[i:i + size])
        assert answer.status_code == 202, answer.text
        accepted += answer.json()["accepted"]
    return accepted


def run_sink(sink: Sink, until: Any, timeout: float = 120.0) -> None:
    """Run ``sink`` in a thread until ``until(sink)``; fail after ``timeout`` s."""
    stop = threading.Event()
    errors: list[Exception] = []

    def target() -> None:
        try:
            sink.run(stop, until=until)
        except Exception as err:  # noqa: BLE001 - any failure of the thread is re-raised by the test
            errors.append(err)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout)
    stop.set()
    thread.join(30)
    assert not errors, errors
    assert until(sink), f"the sink did not get there within {timeout:.0f} s: {sink.session}, closed {sink.closed}"


def ids_in_sink_files(store: LocalStore, *folders: str) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for folder in folders:
        counts.update(read_events(store, folder)["event_id"].astype(str))
    return counts


def test_collector_to_store_exactly_once_then_late_events_and_validation(kafka_broker: KafkaBroker,
                                                                         tmp_path: Path) -> None:
    topic = kafka_broker.new_topic("e2e")
    store = LocalStore(tmp_path / "store")
    today = datetime.now(UTC).date()
    day, day2 = today - timedelta(days=2), today - timedelta(days=1)
    old, newer, current = make_events("d", day, 300, 1), make_events("d2", day2, 100, 2), recent_events("now", 20)
    config = CollectorConfig(bootstrap=kafka_broker.bootstrap, topic=topic)

    with TestClient(create_app(config)) as client:
        accepted = post_all(client, old) + post_all(client, newer)
        ndjson = "\n".join(json.dumps(e) for e in current)
        answer = client.post("/events", content=ndjson, headers={"content-type": "application/x-ndjson"})
        assert answer.status_code == 202 and answer.json()["accepted"] == 20
        accepted += 20
        # a client that did not see the answer resends a batch: the topic holds it twice
        resent = post_all(client, old[:50])
        bad = client.post("/events", json=[*make_events("bad", day, 3, 3), {"event_id": "x"}])
        assert bad.status_code == 422
        metrics = client.get("/metrics").text
    assert accepted == 420
    assert f'recsys_collector_events_total{{result="accepted"}} {accepted + resent}' in metrics
    assert 'recsys_collector_events_total{result="batch_refused"} 3' in metrics

    group = f"sink-{uuid.uuid4().hex[:6]}"
    closed_topic = kafka_broker.new_topic("closed", partitions=1)
    sink_config = SinkConfig(bootstrap=kafka_broker.bootstrap, topic=topic, group=group, instance_id=group,
                             max_file_events=64, max_file_seconds=0.5, allowed_lateness=timedelta(hours=1),
                             close_check_seconds=0.2, closed_topic=closed_topic)
    sink = Sink(store, sink_config)
    run_sink(sink, lambda s: s.session["consumed"] >= accepted + resent and day in s.closed
             and not any(p.buffer for p in s.parts.values()))

    assert sink.session == {"consumed": 470, "written": 420, "duplicates": 50, "late": 0, "invalid": 0}
    partition = layout.raw_events(day)
    assert store.is_complete(partition) and store.exists(f"{partition}/{SINK_MARKER}")
    frame = read_partition(store, partition)
    assert sorted(frame["event_id"]) == sorted(e["event_id"] for e in old)
    assert str(frame["event_time"].dtype) == "datetime64[ns, UTC]" and str(frame["user_id"].dtype) == "string"
    assert ids_in_sink_files(store, layout.raw_events(day2)) == collections.Counter(e["event_id"] for e in newer)
    assert ids_in_sink_files(store, layout.raw_events(today)) == collections.Counter(e["event_id"] for e in current)
    assert not store.exists(layout.RAW_INVALID_EVENTS)
    delivered = fingerprint(store, partition)

    # after day D closed: its late events go to the late area (counted), a resent one is still a duplicate
    late = make_events("late", day, 10, 4)
    with TestClient(create_app(config)) as client:
        assert post_all(client, [*late, old[0]]) == 11
    sink = Sink(store, sink_config)
    run_sink(sink, lambda s: s.session["consumed"] >= 11 and not any(p.buffer for p in s.parts.values()))
    assert sink.session == {"consumed": 11, "written": 0, "duplicates": 1, "late": 10, "invalid": 0}
    assert sink.totals()["late"] == 10 and sink.totals()["written"] == 420  # kept across runs
    assert ids_in_sink_files(store, layout.late_events(day)) == collections.Counter(e["event_id"] for e in late)
    assert fingerprint(store, partition) == delivered  # a closed partition is never modified

    # a sink under a new group name (or whose group's offsets expired) continues where the store is, it does
    # not write the topic again from its beginning
    fresh = recent_events("fresh", 5)
    with TestClient(create_app(config)) as client:
        assert post_all(client, fresh) == 5
    renamed = f"{group}-renamed"
    sink = Sink(store, replace(sink_config, group=renamed, instance_id=renamed))
    run_sink(sink, lambda s: s.session["written"] >= 5 and not any(p.buffer for p in s.parts.values()))
    assert sink.session["written"] == 5 and sink.session["consumed"] < 100  # the last chunks only, not 486
    everything = ids_in_sink_files(store, layout.raw_events(day), layout.raw_events(day2), layout.raw_events(today),
                                   layout.late_events(day))
    assert set(everything.values()) == {1} and len(everything) == 435

    report = validate_partition(store, day=day, settings=Settings.from_env())
    assert report.success, [c for c in report.checks if not c["success"]]
    assert report.rows == 300

    # the closed day was announced once (three sink runs later), with what its _sink.json says
    announced = [m for m in _read_topic(kafka_broker, closed_topic) if m[0] == day.isoformat()]
    assert len(announced) == 1
    assert announced[0][1]["partition"] == partition and announced[0][1]["files"] == len(store.data_files(partition))
    assert "announced_at" in store.read_json(f"{partition}/{SINK_MARKER}")


def _read_topic(kafka_broker: KafkaBroker, topic: str) -> list[tuple[str, dict[str, Any]]]:
    """Every message of a one-partition topic: (key, JSON value)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": f"read-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    _low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.assign([TopicPartition(topic, 0, 0)])
    found: list[tuple[str, dict[str, Any]]] = []
    deadline = time.monotonic() + 30
    while len(found) < high and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            found.append(((msg.key() or b"").decode(), json.loads(msg.value() or b"{}")))
    consumer.close()
    return found


def _sink_process(kafka_broker: KafkaBroker, topic: str, group: str, root: Path, log: Path, max_file_events: int,
                  failpoint: str | None = None, closed_topic: str = "",
                  compact_max_rows: int | None = None) -> subprocess.Popen[bytes]:
    env = os.environ | {"RECSYS_STORAGE_BACKEND": "local", "RECSYS_STORAGE_ROOT": str(root)}
    if compact_max_rows is not None:
        env["RECSYS_SINK_COMPACT_MAX_ROWS"] = str(compact_max_rows)
    env.pop("RECSYS_SINK_FAILPOINT", None)
    if failpoint:
        env["RECSYS_SINK_FAILPOINT"] = failpoint
    return subprocess.Popen(
        [sys.executable, "-m", "recsys.streaming.sink", "--bootstrap", kafka_broker.bootstrap, "--topic", topic,
         "--group", group, "--instance-id", group, "--max-file-events", str(max_file_events),
         "--max-file-seconds", "0.5", "--lateness-seconds", "3600", "--closed-topic", closed_topic],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=open(log, "ab"),
    )


def _data_files(store: LocalStore, *folders: str) -> list[str]:
    return [f for folder in folders for f in store.data_files(folder)]


def test_kill_9_of_the_sink_mid_chunk_then_restart_stores_every_event_once(kafka_broker: KafkaBroker,
                                                                           tmp_path: Path) -> None:
    topic = kafka_broker.new_topic("kill")
    root = tmp_path / "store"
    store = LocalStore(root)
    today = datetime.now(UTC).date()
    day, day2 = today - timedelta(days=2), today - timedelta(days=1)
    batch = make_events("k1", day, 300, 5) + make_events("k2", day2, 300, 6)
    random.Random(7).shuffle(batch)  # every chunk holds both days: two files per chunk
    with TestClient(create_app(CollectorConfig(bootstrap=kafka_broker.bootstrap, topic=topic))) as client:
        assert post_all(client, batch) == 600
    folders = (layout.raw_events(day), layout.raw_events(day2))
    group, log = f"sink-{uuid.uuid4().hex[:6]}", tmp_path / "sink.log"

    # 1. killed by SIGKILL after its 3rd file: the first file of its second chunk is out, the second is not
    first = _sink_process(kafka_broker, topic, group, root, log, 50, failpoint="publish:3")
    assert first.wait(timeout=120) == -signal.SIGKILL, log.read_text()
    assert len(_data_files(store, *folders)) == 3

    # 2. killed by SIGKILL from outside while it works; restarted with larger files (a new configuration), it
    # must still cut the interrupted chunk where the killed sink did, or that chunk's events would be doubled
    second = _sink_process(kafka_broker, topic, group, root, log, 80)
    deadline = time.monotonic() + 120
    while len(_data_files(store, *folders)) < 9 and time.monotonic() < deadline and second.poll() is None:
        time.sleep(0.02)
    second.kill()
    assert second.wait(timeout=30) == -signal.SIGKILL, log.read_text()
    assert "rewriting the interrupted chunk" in log.read_text()

    # 3. killed by SIGKILL while it compacts day D before closing it: its first merged file (of at most 100 rows)
    # is out, and one of the small files it holds is deleted, the other not
    compacting = _sink_process(kafka_broker, topic, group, root, log, 80, "compact:2", compact_max_rows=100)
    assert compacting.wait(timeout=120) == -signal.SIGKILL, log.read_text()[-3000:]
    assert not store.is_complete(folders[0])
    assert sum(ids_in_sink_files(store, folders[0]).values()) > 300  # the merged file's rows twice for now

    # 4. restarted with the default bound (other groups): finishes the compaction, closes day D and is killed by
    # SIGKILL just before announcing it
    closed_topic = kafka_broker.new_topic("closed-kill", partitions=1)
    third = _sink_process(kafka_broker, topic, group, root, log, 80, "announce", closed_topic)
    assert third.wait(timeout=120) == -signal.SIGKILL, log.read_text()[-3000:]
    assert store.is_complete(folders[0])
    assert "announced_at" not in store.read_json(f"{folders[0]}/{SINK_MARKER}")
    assert len(store.data_files(folders[0])) == 3  # compacted: one file per topic partition
    assert ids_in_sink_files(store, folders[0]) == collections.Counter(e["event_id"] for e in batch
                                                                       if e["event_id"].startswith("k1-"))

    # 5. runs to the end (announcing D, which the killed one did not) and is stopped cleanly
    third = _sink_process(kafka_broker, topic, group, root, log, 80, closed_topic=closed_topic)
    expected = collections.Counter(e["event_id"] for e in batch)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and third.poll() is None:
        if "announced_at" in store.read_json(f"{folders[0]}/{SINK_MARKER}") and \
                ids_in_sink_files(store, *folders) == expected:
            break
        time.sleep(0.2)
    third.send_signal(signal.SIGTERM)
    out, _ = third.communicate(timeout=60)
    assert third.returncode == 0, log.read_text()[-3000:]

    found = ids_in_sink_files(store, *folders, layout.late_events(day), layout.late_events(day2))
    assert found == expected, (sum(found.values()), [i for i, n in found.items() if n > 1][:5])
    assert store.is_complete(folders[0])
    assert json.loads(out.decode().strip().splitlines()[-1])["session"]["late"] == 0
    assert [key for key, _ in _read_topic(kafka_broker, closed_topic)].count(day.isoformat()) == 1

    report = validate_partition(store, day=day, settings=Settings.from_env())
    assert report.success, [c for c in report.checks if not c["success"]]
    assert report.rows == 300


@pytest.mark.hdfs
def test_the_sink_writes_a_partition_on_hdfs_that_validation_passes(kafka_broker: KafkaBroker, hdfs_cluster: Any,
                                                                    tmp_path: Path) -> None:
    """The same path with the production store: WebHDFS on the real single-node HDFS."""
    topic = kafka_broker.new_topic("hdfs")
    store = hdfs_cluster.store("sink")
    day = datetime.now(UTC).date() - timedelta(days=2)
    old = make_events("h", day, 150, 8)
    with TestClient(create_app(CollectorConfig(bootstrap=kafka_broker.bootstrap, topic=topic))) as client:
        assert post_all(client, old) + post_all(client, old[:20]) == 170
    group = f"sink-{uuid.uuid4().hex[:6]}"
    sink = Sink(store, SinkConfig(bootstrap=kafka_broker.bootstrap, topic=topic, group=group, instance_id=group,
                                  max_file_events=64, max_file_seconds=0.5, close_check_seconds=0.2))
    run_sink(sink, lambda s: s.session["consumed"] >= 170 and day in s.closed)
    assert sink.session == {"consumed": 170, "written": 150, "duplicates": 20, "late": 0, "invalid": 0}
    frame = read_partition(store, layout.raw_events(day))
    assert sorted(frame["event_id"]) == sorted(e["event_id"] for e in old)
    assert len(store.data_files(layout.raw_events(day))) <= 3  # compacted on HDFS too: a file per topic partition
    report = validate_partition(store, day=day, settings=Settings.from_env())
    assert report.success, [c for c in report.checks if not c["success"]]


def _collector_process(kafka_broker: KafkaBroker, topic: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys.streaming.collector", "--bootstrap", kafka_broker.bootstrap, "--topic", topic,
         "--port", str(port)], cwd=REPO_ROOT, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"the collector did not get ready: {log.read_text()[-2000:]}")


def test_kill_9_of_the_collector_mid_batch_then_resend_stores_every_event_once(kafka_broker: KafkaBroker,
                                                                               tmp_path: Path) -> None:
    """A client whose request died with the collector resends it to the restarted one: nothing lost or doubled."""
    from tests.postgres import free_port

    topic = kafka_broker.new_topic("collector-kill")
    store = LocalStore(tmp_path / "store")
    day = datetime.now(UTC).date() - timedelta(days=2)
    small, big = make_events("c", day, 300, 10), make_events("big", day, 8000, 11)
    port, log = free_port(), tmp_path / "collector.log"
    url = f"http://127.0.0.1:{port}/events"

    collector = _collector_process(kafka_broker, topic, port, log)
    assert httpx.post(url, json=small[:100], timeout=30).status_code == 202
    outcome: list[object] = []
    sender = threading.Thread(target=lambda: outcome.append(_post_or_error(url, big)))
    sender.start()
    # kill it once part of the big batch is in the topic, before the client has its answer
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": "probe"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(
            probe.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in range(3)) <= 100:
        time.sleep(0.005)
    collector.kill()
    probe.close()
    assert collector.wait(timeout=30) == -signal.SIGKILL
    sender.join(60)
    assert outcome and outcome[0] != 202, outcome  # the client never got an answer: it must resend

    collector = _collector_process(kafka_broker, topic, port, log)
    try:
        assert httpx.post(url, json=big, timeout=60).status_code == 202
        assert httpx.post(url, json=small[100:], timeout=30).status_code == 202
    finally:
        collector.send_signal(signal.SIGTERM)
        collector.wait(timeout=30)

    expected = collections.Counter(e["event_id"] for e in small + big)
    group = f"sink-{uuid.uuid4().hex[:6]}"
    sink = Sink(store, SinkConfig(bootstrap=kafka_broker.bootstrap, topic=topic, group=group, instance_id=group,
                                  max_file_events=2000, max_file_seconds=0.5, close_check_seconds=0.2))
    run_sink(sink, lambda s: day in s.closed)
    assert ids_in_sink_files(store, layout.raw_events(day), layout.late_events(day)) == expected
    assert sink.session["written"] == 8300
    assert sink.session["consumed"] == 8300 + sink.session["duplicates"]
    assert sink.session["duplicates"] > 0  # part of the killed batch had reached the topic


def _post_or_error(url: str, batch: list[dict[str, Any]]) -> object:
    try:
        return httpx.post(url, json=batch, timeout=60).status_code
    except httpx.HTTPError as err:
        return repr(err)


def _post_until_accepted(client: TestClient, batch: list[dict[str, Any]], timeout: float = 120.0) -> list[int]:
    """What a client does: resend a refused batch (503) until the collector accepts it; the statuses seen."""
    statuses = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.post("/events", json=batch)
        statuses.append(answer.status_code)
        if answer.status_code == 202:
            return statuses
        assert answer.status_code == 503, answer.text
        time.sleep(0.5)
    raise AssertionError(f"the batch was not accepted within {timeout:.0f} s: {statuses}")


def test_kill_9_of_the_broker_then_restart_loses_and_doubles_nothing(kafka_broker: KafkaBroker,
                                                                      tmp_path: Path) -> None:
    """Runs last in this module: the shared test broker is killed and restarted on the same data and port."""
    topic = kafka_broker.new_topic("broker-kill")
    store = LocalStore(tmp_path / "store")
    day = datetime.now(UTC).date() - timedelta(days=2)
    batch = make_events("b", day, 400, 9)
    batches = [batch[i:i + 50] for i in range(0, len(batch), 50)]
    group = f"sink-{uuid.uuid4().hex[:6]}"
    # The sink's clock stands inside the day until every batch is in: a day whose lateness has passed by the wall
    # clock closes as soon as the sink is caught up, and this test is about the outage, not about late events.
    clock = [datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12)]
    sink = Sink(store, SinkConfig(bootstrap=kafka_broker.bootstrap, topic=topic, group=group, instance_id=group,
                                  max_file_events=64, max_file_seconds=0.5, close_check_seconds=0.2),
                clock=lambda: clock[0])
    expected = collections.Counter(e["event_id"] for e in batch)
    done = threading.Event()
    errors: list[Exception] = []

    def consume() -> None:
        try:
            sink.run(done)
        except Exception as err:  # noqa: BLE001 - the sink must survive the outage; the test reports why not
            errors.append(err)

    sink_thread = threading.Thread(target=consume)
    sink_thread.start()
    try:
        with TestClient(create_app(CollectorConfig(bootstrap=kafka_broker.bootstrap, topic=topic,
                                                   delivery_timeout_s=3.0))) as client:
            for part in batches[:4]:
                assert _post_until_accepted(client, part) == [202]
            kafka_broker.kill()
            down = client.post("/events", json=batches[4])
            assert down.status_code == 503, down.text  # refused, never a silent drop
            assert down.json()["stored"] == 0
            kafka_broker.restart()
            for part in batches[4:]:
                _post_until_accepted(client, part)
        clock[0] = datetime.now(UTC)  # every event is in: the day may close
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if store.is_complete(layout.raw_events(day)) and \
                    ids_in_sink_files(store, layout.raw_events(day)) == expected:
                break
            time.sleep(0.2)
    finally:
        done.set()
        sink_thread.join(60)
    assert not errors, errors
    assert ids_in_sink_files(store, layout.raw_events(day), layout.late_events(day)) == expected
    assert store.is_complete(layout.raw_events(day))
    assert sink.session["written"] == 400 and sink.session["late"] == 0


def test_a_closed_day_no_run_reached_is_announced_again_until_it_is_processed(kafka_broker: KafkaBroker,
                                                                              tmp_path: Path) -> None:
    from recsys import registry

    topic, closed_topic = kafka_broker.new_topic("reannounce"), kafka_broker.new_topic("closed-again", partitions=1)
    store = LocalStore(tmp_path / "store")
    day = datetime.now(UTC).date() - timedelta(days=2)
    with TestClient(create_app(CollectorConfig(bootstrap=kafka_broker.bootstrap, topic=topic))) as client:
        assert post_all(client, make_events("r", day, 40, 8)) == 40
    group = f"sink-{uuid.uuid4().hex[:6]}"
    config = SinkConfig(bootstrap=kafka_broker.bootstrap, topic=topic, group=group, instance_id=group,
                        max_file_seconds=0.5, close_check_seconds=0.2, closed_topic=closed_topic,
                        reannounce_seconds=1.0)
    sink = Sink(store, config)
    # closed and announced; no run reaches it (the announcement was lost): announced again after 1 s, then 2 s
    run_sink(sink, lambda s: len(s.announced) >= 3, timeout=60)
    assert sink.closed == [day] and sink.announced == [day] * 3
    assert store.read_json(f"{layout.raw_events(day)}/{SINK_MARKER}")["reannounced"] == 2
    registry.update(store, lambda reg: reg["decisions"].__setitem__(
        day.isoformat(), {"blessed": False, "candidate_version": None, "reason": "a thin day"}))  # processed
    sink = Sink(store, config)
    started = time.monotonic()
    run_sink(sink, lambda s: time.monotonic() - started > 6, timeout=60)  # past the next re-announcement's time
    assert sink.announced == []
    announced = [value for key, value in _read_topic(kafka_broker, closed_topic) if key == day.isoformat()]
    assert [a.get("reannounced") for a in announced] == [None, 1, 2]
