"""Sink end-to-end lag: event accepted by ``POST /events`` (202) -> its row visible in ``raw/events`` (issue 17).

Runs the real pieces as separate processes on one machine, as ``run.py`` does: the Kafka broker
(``scripts/kafka.sh``; started if it is not running, on a fresh topic of ``--partitions`` partitions),
``recsys collect`` and ``recsys sink`` over an empty local store. ``--clients`` client processes POST JSON
batches of fresh events at ``--rate`` events/s in all for ``--seconds`` (``--posts-per-second`` batches per
client; a late batch's successors are sent at once to catch up, so ``rate x seconds`` events are sent), and
note the wall-clock time of each batch's 202.

Meanwhile a thread of this process lists ``raw/events/dt=*/`` every ``--poll-every`` seconds (a directory
listing: it reads nothing, so it does not slow the sink) and notes when each published part file first
appears. After the load it reads every part file's event ids: an event's lag is the first listing that showed
its file minus its batch's 202 (an upper bound, by at most the polling interval and this thread's scheduling;
``lag_by_mtime_s`` uses the file's modification time instead, the end of its write just before the rename
that publishes it: a lower bound). Also counted: events sent / accepted / landed, lost (accepted, never
landed) and duplicated (rows beyond one per event id), the rate achieved, the CPU seconds of each process,
the load average before / during / after.

The sink runs with its settings (``RECSYS_SINK_*``; ``--max-file-seconds`` passes the flag instead).
Results go to ``bench/realtime/results/sink-lag-<commit>.json``. Run it niced:
``nice -n 15 .venv/bin/python bench/realtime/sink_lag.py``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE.parent), str(HERE)]

from _harness import cpu_name, free_port, git_state, running, stop, wait_until  # noqa: E402
from run import _broker, _broker_pid, _cpu_seconds, _event, _percentiles, _release_broker, _time  # noqa: E402

PART = re.compile(r"part-p\d{4}-\d{12}-\d{12}\.parquet")  # a published sink file (temporaries start with '.')


def _client(collector: str, n: int, rate: float, seconds: float, posts_per_second: float, users: int,
            items: int, out: Path) -> None:
    """POST ``rate`` events/s for ``seconds`` in batches; each accepted batch's 202 time and ids to ``out``."""
    rng = random.Random(100 + n)
    per_post = max(1, round(rate / posts_per_second))
    n_posts = round(seconds * posts_per_second)
    accepted: list[tuple[float, list[str]]] = []
    posts: list[float] = []  # seconds from sending a batch to its answer
    refused = errors = 0
    with httpx.Client(timeout=60) as http:
        started = time.monotonic()
        for tick in range(n_posts):
            batch = [_event(f"u{rng.randrange(users)}", f"i{rng.randrange(items)}",
                            rng.choice(("view", "view", "add_to_cart", "purchase"))) for _ in range(per_post)]
            sending = time.monotonic()
            try:
                answer = http.post(collector + "/events", json=batch)
            except httpx.HTTPError:
                errors += len(batch)
            else:
                posts.append(time.monotonic() - sending)
                if answer.status_code == 202:
                    accepted.append((time.time(), [e["event_id"] for e in batch]))
                else:
                    refused += len(batch)
            delay = started + (tick + 1) / posts_per_second - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        took = time.monotonic() - started
    out.write_text(json.dumps({"sent": n_posts * per_post, "seconds": took, "accepted": accepted, "refused": refused,
                               "errors": errors, "batch": per_post, "posts": posts,
                               "cpu_seconds": time.process_time()}))


class Watcher(threading.Thread):
    """Lists the store's ``raw/events`` partitions every ``every`` s: when each part file first appeared, and
    the load average every 5 s."""

    def __init__(self, events_dir: Path, every: float) -> None:
        super().__init__(name="watcher", daemon=True)
        self.events_dir, self.every = events_dir, every
        self.seen: dict[Path, float] = {}
        self.load: list[tuple[float, float]] = []
        self.done = threading.Event()
        self.slowest_listing = 0.0

    def run(self) -> None:
        next_load = 0.0
        while not self.done.is_set():
            started = time.monotonic()
            self.look()
            self.slowest_listing = max(self.slowest_listing, time.monotonic() - started)
            if started >= next_load:
                self.load.append((time.time(), os.getloadavg()[0]))
                next_load = started + 5
            self.done.wait(max(0.0, self.every - (time.monotonic() - started)))

    def look(self) -> None:
        now = time.time()
        try:
            days = [d for d in os.scandir(self.events_dir) if d.name.startswith("dt=")]
        except FileNotFoundError:
            return
        for day in days:
            for entry in os.scandir(day.path):
                if PART.fullmatch(entry.name):
                    self.seen.setdefault(Path(entry.path), now)


def _landed(files: list[Path], cache: dict[Path, list[str]]) -> None:
    """Read the event ids of the files not read yet into ``cache``."""
    import pyarrow.parquet as pq

    for path in files:
        if path not in cache:
            cache[path] = pq.read_table(path, columns=["event_id"]).column("event_id").to_pylist()


def _send(collector: str, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Run the ``args.clients`` client processes to the end; what each sent and when each batch was accepted."""
    ctx = multiprocessing.get_context("spawn")
    outs = [work / f"client-{n}.json" for n in range(args.clients)]
    clients = [ctx.Process(target=_client, args=(collector, n, args.rate / args.clients, args.seconds,
                                                 args.posts_per_second, args.users, args.items, outs[n]))
               for n in range(args.clients)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    return [json.loads(o.read_text()) for o in outs]


def _drain(watcher: Watcher, accepted: set[str], timeout: float) -> dict[Path, list[str]]:
    """The event ids of every published file, once every accepted event is in one (or after ``timeout`` s)."""
    files: dict[Path, list[str]] = {}
    deadline = time.monotonic() + timeout
    while True:
        _landed(list(watcher.seen), files)
        if accepted <= {i for ids in files.values() for i in ids} or time.monotonic() > deadline:
            return files
        time.sleep(1)


def _summary(sent: list[dict[str, Any]], accepted_at: dict[str, float], files: dict[Path, list[str]],
             seen: dict[Path, float]) -> dict[str, Any]:
    """Events sent, accepted, landed, lost and duplicated; the rate; each event's lag; the files' sizes."""
    mtime = {p: p.stat().st_mtime for p in files}
    lags, lags_mtime = [], []
    rows: dict[str, int] = {}
    for path, ids in files.items():
        for i in ids:
            rows[i] = rows.get(i, 0) + 1
            if i in accepted_at and rows[i] == 1:
                lags.append(seen[path] - accepted_at[i])
                lags_mtime.append(mtime[path] - accepted_at[i])
    n_sent = sum(s["sent"] for s in sent)
    took = max(s["seconds"] for s in sent)
    per_file = sorted(len(ids) for ids in files.values()) or [0]
    return {
        "events": {"sent": n_sent, "accepted": len(accepted_at), "refused": sum(s["refused"] for s in sent),
                   "errors": sum(s["errors"] for s in sent), "landed_rows": sum(rows.values()),
                   "landed_unique": len(rows.keys() & accepted_at.keys()),
                   "lost": len(accepted_at.keys() - rows.keys()), "duplicated": sum(n - 1 for n in rows.values()),
                   "not_ours": len(rows.keys() - accepted_at.keys())},
        "rate": {"sent_per_second": round(n_sent / took, 1), "accepted_per_second": round(len(accepted_at) / took, 1),
                 "send_seconds": round(took, 2), "batch": sent[0]["batch"],
                 "post_to_202_s": _percentiles([x for s in sent for x in s["posts"]]),
                 "clients_cpu_seconds": round(sum(s["cpu_seconds"] for s in sent), 2)},
        "lag_s": _percentiles(lags) | ({"min": round(min(lags), 4)} if lags else {}),
        "lag_by_mtime_s": _percentiles(lags_mtime) | ({"min": round(min(lags_mtime), 4)} if lags_mtime else {}),
        "files": {"n": len(files), "events_min": per_file[0], "events_median": per_file[len(per_file) // 2],
                  "events_max": per_file[-1]},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5000.0, help="events per second, all clients together")
    parser.add_argument("--seconds", type=float, default=60.0)
    # 4 x 5 batches of 250 events a second: a client waits for each 202 (~0.1 s on a busy machine) before its next
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--posts-per-second", type=float, default=5.0, help="batches per second per client")
    parser.add_argument("--partitions", type=int, default=3, help="partitions of the fresh events topic")
    parser.add_argument("--max-file-seconds", type=float,
                        help="passed to recsys sink (default: its setting, RECSYS_SINK_MAX_FILE_SECONDS)")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--poll-every", type=float, default=0.05, help="seconds between listings of the store")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from recsys.config import Settings
    from recsys.streaming.topics import ensure_topic

    load_before = os.getloadavg()
    bootstrap, started_broker = _broker()
    broker_pid = _broker_pid()
    run = uuid.uuid4().hex[:8]
    topic = f"bench-lag-{run}"
    ensure_topic(bootstrap, topic, args.partitions)
    work = Path(tempfile.mkdtemp(prefix="bench-sink-lag-"))
    root = work / "store"
    root.mkdir()
    env = {**os.environ, "RECSYS_STORAGE_BACKEND": "local", "RECSYS_STORAGE_ROOT": str(root),
           "RECSYS_KAFKA_BOOTSTRAP": bootstrap}
    settings = Settings.from_env(env)
    max_file_seconds = args.max_file_seconds if args.max_file_seconds is not None else settings.sink_max_file_seconds
    cport = free_port()
    py = sys.executable
    sink_cmd = [py, "-m", "recsys.cli", "sink", "--topic", topic, "--group", f"bench-lag-{run}", "--closed-topic", ""]
    if args.max_file_seconds is not None:
        sink_cmd += ["--max-file-seconds", str(args.max_file_seconds)]
    commands = {"collect": [py, "-m", "recsys.cli", "collect", "--topic", topic, "--port", str(cport)],
                "sink": sink_cmd}
    procs: dict[str, subprocess.Popen] = {}
    logs = {name: (work / f"{name}.log").open("w") for name in commands}
    result: dict[str, Any] = {
        "benchmark": "realtime/sink_lag", **git_state(ROOT), "cpu": cpu_name(), "cores": os.cpu_count(),
        "started": _time(datetime.now(UTC)), "args": {k: str(v) for k, v in vars(args).items()},
        "sink_max_file_seconds": max_file_seconds, "sink_max_file_events": settings.sink_max_file_events,
        "nice": os.nice(0), "load_average_before": [round(x, 2) for x in load_before], "work": str(work),
    }
    watcher = Watcher(root / "raw" / "events", args.poll_every)
    try:
        for name, cmd in commands.items():
            procs[name] = subprocess.Popen(cmd, env=env, stdout=logs[name], stderr=subprocess.STDOUT)
        collector = f"http://127.0.0.1:{cport}"
        wait_until("the collector", lambda: httpx.get(collector + "/readyz", timeout=5).status_code == 200, 120,
                   alive=running(procs["collect"], "recsys collect"))
        # the sink is up once it has its partitions (it logs "assigned partitions")
        wait_until("the sink's assignment", lambda: "assigned partitions" in (work / "sink.log").read_text(), 120,
                   alive=running(procs["sink"], "recsys sink"))

        watched = {"collector": procs["collect"].pid, "sink": procs["sink"].pid, "broker": broker_pid}
        cpu_before = {name: _cpu_seconds(pid) for name, pid in watched.items()}
        watcher.start()
        sent = _send(collector, args, work)
        load_end_of_sending = os.getloadavg()
        accepted_at = {i: at for s in sent for at, ids in s["accepted"] for i in ids}
        files = _drain(watcher, set(accepted_at), args.drain_timeout)
        watcher.done.set()
        watcher.join()
        cpu = {name: round(_cpu_seconds(pid) - cpu_before[name], 2) for name, pid in watched.items()}
    finally:
        for proc in reversed(procs.values()):
            stop(proc)
        for f in logs.values():
            f.close()
        _release_broker(started_broker)

    result |= {
        "topic_partitions": args.partitions, "target": {"rate": args.rate, "lag_p99_s": 5.0},
        **_summary(sent, accepted_at, files, watcher.seen),
        "cpu_seconds": cpu,
        "watcher": {"poll_every_s": args.poll_every, "slowest_listing_s": round(watcher.slowest_listing, 4)},
        "load_average_end_of_sending": [round(x, 2) for x in load_end_of_sending],
        "load_average_during": {"min": min(x for _, x in watcher.load), "max": max(x for _, x in watcher.load)}
        if watcher.load else None,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "finished": _time(datetime.now(UTC)),
    }
    out = args.out or HERE / "results" / f"sink-lag-{(result.get('commit') or 'nogit')[:7]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["events"]["lost"] == 0 and result["events"]["duplicated"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
