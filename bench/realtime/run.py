"""Real time end to end: event accepted by ``POST /events`` -> reflected in ``GET /recommendations``.

Runs the real pieces as separate processes on one machine: the Kafka broker (``scripts/kafka.sh``; started if
it is not running), ``recsys collect``, ``recsys serve`` with ``RECSYS_SERVE_LIVE=1`` over a store with one
history-aware version (``live_store.py``), and ``recsys sink`` writing the events topic to the same store.

1. **Load + probes** (``--seconds`` at ``--rate`` events/s): background events of random customers and items
   are POSTed in batches every 100 ms; besides them,
   - a *behaviour probe* every ``--probe-every`` s: one event of a probe customer (new to the model: their
     answer is the popular fallback until the event is applied) on a fresh item; the latency is from the
     202 answer to the first ``GET /recommendations`` whose ``last_event_at`` is the event's time and which
     holds the item;
   - a *stock probe* every ``--stock-every`` s: ``out_of_stock`` for the first item of a probe customer's
     answer; the latency is from the 202 to the first answer without it.
2. **Exactly once**: after the load, waits for the sink's files and counts every accepted event id in
   ``raw/events`` (lost = accepted but absent, duplicated = rows beyond one per id).
3. **Collector throughput**: ``--throughput-clients`` clients POST batches of ``--throughput-batch`` events
   as fast as the collector accepts them, for ``--throughput-seconds``.

Results (with the commit and dirty flag) go to ``bench/realtime/results/``. Run it niced:
``nice -n 15 .venv/bin/python bench/realtime/run.py``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE.parent), str(HERE)]

import live_store  # noqa: E402
from _harness import cpu_name, free_port, git_state, running, stop, wait_until  # noqa: E402

from recsys.storage.base import pid_alive  # noqa: E402


def _time(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _event(user: str, item: str, kind: str = "view") -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "event_time": _time(datetime.now(UTC)), "user_id": user, "item_id": item,
            "event_type": kind, "quantity": 1, "price": 1.0}


def _percentiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    found: dict[str, Any] = {"n": len(values)}
    found |= {f"p{q}": round(float(np.percentile(a, q)), 4) for q in (50, 95, 99)}
    return found | {"max": round(float(a.max()), 4)}


KAFKA_STATE = ROOT / "var" / "kafka"
KAFKA_SCRIPT = str(ROOT / "scripts" / "kafka.sh")


def _broker() -> tuple[str, bool]:
    """The embedded broker's address; started here if it is not running (True: this run started it).

    The run registers itself as a user of the broker the way test sessions do (tests/kafka_broker.py), so a
    test session that started the broker does not stop it under the benchmark.
    """
    users = KAFKA_STATE / "test-sessions"
    users.mkdir(parents=True, exist_ok=True)
    started = False
    with open(KAFKA_STATE / "fixture.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if subprocess.run([KAFKA_SCRIPT, "status"], capture_output=True).returncode != 0:
            start = subprocess.run([KAFKA_SCRIPT, "start"], capture_output=True, text=True)
            if start.returncode != 0:
                raise SystemExit(f"scripts/kafka.sh start failed:\n{start.stderr}")
            started = True
        (users / str(os.getpid())).touch()
    return str(json.loads((KAFKA_STATE / "ready.json").read_text())["bootstrap"]), started


def _broker_pid() -> int:
    return int(json.loads((KAFKA_STATE / "ready.json").read_text())["pid"])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _release_broker(started: bool) -> None:
    """Unregister; stop the broker if this run started it and no test session uses it."""
    users = KAFKA_STATE / "test-sessions"
    with open(KAFKA_STATE / "fixture.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (users / str(os.getpid())).unlink(missing_ok=True)
        others = [p for p in users.iterdir() if p.name.isdigit() and pid_alive(int(p.name))]
        if started and not others:
            subprocess.run([KAFKA_SCRIPT, "stop"], capture_output=True)


class Load:
    """The client side: background events, probes, and the ids of every accepted event."""

    def __init__(self, collector: str, service: str, users: list[str], items: list[str]) -> None:
        self.collector, self.service, self.users, self.items = collector, service, users, items
        self.accepted: list[str] = []
        self.refused = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.behaviour: list[float] = []
        self.behaviour_from_send: list[float] = []
        self.stock: list[float] = []
        self.timeouts = {"behaviour": 0, "stock": 0}
        self.sent_rate: float = 0.0
        self.gone: set[str] = set()  # items the stock probes sent out of stock

    def _post(self, client: httpx.Client, batch: list[dict[str, Any]]) -> bool:
        answer = client.post(self.collector + "/events", json=batch, timeout=30)
        with self.lock:
            if answer.status_code == 202:
                self.accepted += [e["event_id"] for e in batch]
                return True
            self.refused += len(batch)
        return False

    def background(self, rate: float, seconds: float) -> None:
        rng = random.Random(1)
        per_tick = max(1, round(rate / 10))
        with httpx.Client() as client:
            started = time.monotonic()
            tick = 0
            ticks = round(seconds * 10)  # every tick's events are sent (late ticks catch up): rate x seconds
            while tick < ticks and not self.stop.is_set():
                batch = [_event(rng.choice(self.users), rng.choice(self.items),
                                rng.choice(("view", "view", "add_to_cart", "purchase"))) for _ in range(per_tick)]
                self._post(client, batch)
                tick += 1
                delay = started + tick * 0.1 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self.sent_rate = tick * per_tick / (time.monotonic() - started)

    def _answer(self, client: httpx.Client, user: str) -> dict[str, Any]:
        return client.get(f"{self.service}/recommendations/{user}", params={"k": 10}, timeout=10).json()

    def behaviour_probes(self, every: float, timeout: float = 10.0) -> None:
        rng = random.Random(2)
        n = 0
        with httpx.Client() as client:
            while not self.stop.is_set():
                n += 1
                user, item = f"probe-{uuid.uuid4().hex[:10]}", rng.choice(self.items)
                event = _event(user, item, "purchase")
                sent = time.monotonic()
                if not self._post(client, [event]):
                    continue
                accepted = time.monotonic()
                while True:
                    answer = self._answer(client, user)
                    # an item a stock probe took out of stock is applied but (rightly) not shown
                    if answer.get("last_event_at") == event["event_time"] and (
                            item in self.gone or item in [x["item_id"] for x in answer["items"]]):
                        now = time.monotonic()
                        self.behaviour.append(now - accepted)
                        self.behaviour_from_send.append(now - sent)
                        break
                    if time.monotonic() - accepted > timeout:
                        self.timeouts["behaviour"] += 1
                        break
                    time.sleep(0.005)
                self.stop.wait(max(0.0, every - (time.monotonic() - sent)))

    def stock_probes(self, every: float, timeout: float = 10.0) -> None:
        rng = random.Random(3)
        with httpx.Client() as client:
            while not self.stop.wait(every):
                user = rng.choice(self.users)
                top = [x["item_id"] for x in self._answer(client, user)["items"]]
                if not top:
                    continue
                gone = top[0]
                self.gone.add(gone)
                event = {"event_id": uuid.uuid4().hex, "event_time": _time(datetime.now(UTC)), "item_id": gone,
                         "event_type": "out_of_stock"}
                answer = client.post(self.collector + "/events", json=[event], timeout=30)
                if answer.status_code != 202:
                    continue
                accepted = time.monotonic()
                while gone in [x["item_id"] for x in self._answer(client, user)["items"]]:
                    if time.monotonic() - accepted > timeout:
                        self.timeouts["stock"] += 1
                        break
                    time.sleep(0.005)
                else:
                    self.stock.append(time.monotonic() - accepted)


def _background_process(collector: str, service: str, users: list[str], items: list[str], rate: float,
                        seconds: float, out: Path) -> None:
    """:meth:`Load.background` in a process of its own; the accepted ids, refusals and rate to ``out``."""
    load = Load(collector, service, users, items)
    load.background(rate, seconds)
    out.write_text(json.dumps({"accepted": load.accepted, "refused": load.refused, "rate": load.sent_rate}))


def _stored_ids(root: Path) -> list[str]:
    import pyarrow.parquet as pq

    found: list[str] = []
    for path in sorted((root / "raw" / "events").glob("dt=*/part-*.parquet")):
        found += pq.read_table(path, columns=["event_id"]).column("event_id").to_pylist()
    return found


def _throughput(collector: str, users: list[str], items: list[str], clients: int, batch: int,
                seconds: float) -> dict[str, Any]:
    """Events/s the collector accepts from ``clients`` concurrent clients posting ``batch``-event requests."""
    accepted = [0] * clients
    refused = [0] * clients
    ids: list[list[str]] = [[] for _ in range(clients)]

    def client(n: int, deadline: float) -> None:
        rng = random.Random(10 + n)
        with httpx.Client() as http:
            while time.monotonic() < deadline:
                batch_ = [_event(rng.choice(users), rng.choice(items)) for _ in range(batch)]
                answer = http.post(collector + "/events", content=json.dumps(batch_).encode(),
                                   headers={"content-type": "application/json"}, timeout=60)
                if answer.status_code == 202:
                    accepted[n] += batch
                    ids[n] += [e["event_id"] for e in batch_]
                else:
                    refused[n] += batch

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n, started + seconds)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    return {"clients": clients, "batch": batch, "seconds": round(took, 2), "accepted": sum(accepted),
            "refused": sum(refused), "events_per_second": round(sum(accepted) / took, 1),
            "ids": [i for part in ids for i in part]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="background events per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--probe-every", type=float, default=0.1)
    parser.add_argument("--stock-every", type=float, default=1.0)
    parser.add_argument("--throughput-seconds", type=float, default=15.0)
    parser.add_argument("--throughput-clients", type=int, default=4)
    parser.add_argument("--throughput-batch", type=int, default=1000)
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from recsys.streaming.topics import ensure_topic

    bootstrap, started_broker = _broker()
    broker_pid = _broker_pid()
    run = uuid.uuid4().hex[:8]
    topic, catalog_topic = f"bench-events-{run}", f"bench-catalog-{run}"
    ensure_topic(bootstrap, topic, 3)
    ensure_topic(bootstrap, catalog_topic, 1)
    work = Path(tempfile.mkdtemp(prefix="bench-realtime-"))
    root = work / "store"
    live_store.build(root, args.users, args.items)
    users, items = live_store.user_ids(args.users), live_store.item_ids(args.items)
    env = {**os.environ, "RECSYS_STORAGE_BACKEND": "local", "RECSYS_STORAGE_ROOT": str(root),
           "RECSYS_SERVE_LIVE": "1", "RECSYS_KAFKA_BOOTSTRAP": bootstrap}
    cport, sport = free_port(), free_port()
    py = sys.executable
    procs: list[subprocess.Popen] = []
    logs = {name: (work / f"{name}.log").open("w") for name in ("collect", "serve", "sink")}
    result: dict[str, Any] = {"benchmark": "realtime", **git_state(ROOT), "cpu": cpu_name(), "cores": os.cpu_count(),
                              "started": _time(datetime.now(UTC)), "args": {k: str(v) for k, v in vars(args).items()},
                              "work": str(work)}
    try:
        for name, cmd in (
            ("collect", [py, "-m", "recsys.cli", "collect", "--bootstrap", bootstrap, "--topic", topic,
                         "--catalog-topic", catalog_topic, "--port", str(cport)]),
            ("serve", [py, "-m", "recsys.cli", "serve", "--port", str(sport), "--events-topic", topic,
                       "--catalog-topic", catalog_topic, "--log-level", "warning"]),
            ("sink", [py, "-m", "recsys.cli", "sink", "--bootstrap", bootstrap, "--topic", topic, "--group",
                      f"bench-sink-{run}", "--max-file-seconds", "5", "--closed-topic", ""]),
        ):
            proc = subprocess.Popen(cmd, env=env, stdout=logs[name], stderr=subprocess.STDOUT)
            procs.append(proc)
        collector, service = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{sport}"
        wait_until("the collector", lambda: httpx.get(collector + "/healthz", timeout=5).status_code == 200, 120,
                   alive=running(procs[0], "recsys collect"))
        wait_until("the service's live state", lambda: httpx.get(service + "/readyz", timeout=5).json()
                   .get("live", {}).get("replayed") is True, 300, alive=running(procs[1], "recsys serve"))

        load = Load(collector, service, users, items)
        threads = [threading.Thread(target=load.behaviour_probes, args=(args.probe_every,)),
                   threading.Thread(target=load.stock_probes, args=(args.stock_every,))]
        for t in threads:
            t.start()
        # the background load in a process of its own: the probes' GIL and the load's do not delay each other
        ids_file = work / "background-ids.json"
        sender = multiprocessing.get_context("spawn").Process(
            target=_background_process, args=(collector, service, users, items, args.rate, args.seconds, ids_file))
        sender.start()
        sender.join()
        load.stop.set()
        background = json.loads(ids_file.read_text())
        load.accepted += background["accepted"]
        load.refused += background["refused"]
        load.sent_rate = background["rate"]
        for t in threads:
            t.join()
        live = httpx.get(service + "/readyz", timeout=10).json().get("live")
        result["load"] = {"background_rate_sent": round(load.sent_rate, 1), "seconds": args.seconds,
                          "accepted": len(load.accepted), "refused": load.refused,
                          "behaviour_accepted_to_reflected_s": _percentiles(load.behaviour),
                          "behaviour_sent_to_reflected_s": _percentiles(load.behaviour_from_send),
                          "out_of_stock_accepted_to_gone_s": _percentiles(load.stock),
                          "probe_timeouts": load.timeouts, "service_live_status": live}

        watched = {"collector": procs[0].pid, "broker": broker_pid, "client": os.getpid()}
        cpu_before = {name: _cpu_seconds(pid) for name, pid in watched.items()}
        tp = _throughput(collector, users, items, args.throughput_clients, args.throughput_batch,
                         args.throughput_seconds)
        # CPU seconds per accepted event: what the rate would be with whole cores, whatever else runs
        for name, pid in watched.items():
            used = _cpu_seconds(pid) - cpu_before[name]
            tp[f"{name}_cpu_seconds"] = round(used, 2)
            tp[f"events_per_{name}_cpu_second"] = round(tp["accepted"] / used, 1) if used > 0 else None
        expected = load.accepted + tp.pop("ids")
        result["collector_throughput"] = tp

        deadline = time.monotonic() + args.drain_timeout
        want = set(expected)
        while True:
            stored = _stored_ids(root)
            if want <= set(stored) or time.monotonic() > deadline:
                break
            time.sleep(2)
        unique = set(stored)
        result["exactly_once"] = {"accepted": len(want), "stored_rows": len(stored), "stored_unique": len(unique),
                                  "lost": len(want - unique), "duplicated": len(stored) - len(unique),
                                  "not_ours": len(unique - want)}
    finally:
        for proc in reversed(procs):
            stop(proc)
        for f in logs.values():
            f.close()
        _release_broker(started_broker)
    result["finished"] = _time(datetime.now(UTC))
    out = args.out or HERE / "results" / f"results-{(result.get('commit') or 'nogit')[:7]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
