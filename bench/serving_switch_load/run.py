"""Load test on loopback while the champion switches: deploys and rollbacks under traffic.

`recsys serve` (subprocess, --poll-seconds 0.5) serves a synthetic Online Retail-sized store with
three deployed versions (bench/synthetic_store.py). Client threads (a Python load generator on httpx,
keep-alive) request top-100 recommendations for random users for the whole run and check every answer
against the exact top-10 of the version it names (computed here with numpy). Meanwhile the champion
is switched --switches times, alternating a deploy (recsys.registry.set_champion) and a rollback
(recsys.serving.deploy.rollback), every --interval seconds; after each switch a probe measures how long
until /version names the new version.

    python bench/serving_switch_load/run.py --out bench/serving_switch_load/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _harness
import synthetic_store

from recsys import registry
from recsys.serving.deploy import rollback

K = 100


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    p.add_argument("--items", type=int, default=synthetic_store.ONLINE_RETAIL_ITEMS)
    p.add_argument("--users", type=int, default=synthetic_store.ONLINE_RETAIL_USERS)
    p.add_argument("--switches", type=int, default=20)
    p.add_argument("--interval", type=float, default=3.0, help="seconds between switches")
    p.add_argument("--threads", type=int, default=4, help="client threads")
    p.add_argument("--poll-seconds", type=float, default=0.5)
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="recsys-switch-") as tmp:
        store = synthetic_store.build(Path(tmp) / "store", args.users, args.items, versions=3)
        registry.set_champion(store, 1, registry.ROLLBACK, "start of the load test", "bench")
        users = synthetic_store.user_ids(args.users)
        items = synthetic_store.item_ids(args.items)
        # per version: the tables (float64) and each user's exact top-10 scores. An answer is right when
        # the scores of the ids it returns, recomputed in the version it names, are those top-10 scores
        # (robust to float ties, and a mixed answer cannot match: versions have unrelated tables)
        expected: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for version in (1, 2, 3):
            user, item = synthetic_store.tables(args.users, args.items, 32, 7 + version)
            user64, item64 = user[1:].astype(np.float64), item[1:].astype(np.float64)
            top = -np.sort(-(user64 @ item64.T), axis=1)[:, :10]
            expected[version] = (user64, item64, top)

        options = ("--log-level", "warning", "--poll-seconds", str(args.poll_seconds))
        with _harness.recsys_serve(store.root, *options, log=Path(tmp) / "serve.log") as (base, _):
            result = run_load(base, store, args, users, items, expected)
    result["loadavg_after"] = os.getloadavg()
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "switches"}, indent=2))
    print(f"wrote {args.out}")


@dataclass
class Tally:
    """What the client threads saw; :meth:`add` under the lock."""

    stats: dict = field(
        default_factory=lambda: {"requests": 0, "failed": 0, "mixed_or_wrong": 0, "by_version": {1: 0, 2: 0, 3: 0}}
    )
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, u: int, took: float, r: httpx.Response | None, ok: bool,
            expected: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """One answer to user row ``u``: right when its ids score the named version's top 10 for ``u``."""
        with self.lock:
            self.stats["requests"] += 1
            self.latencies.append(took)
            if not ok or r is None:
                self.stats["failed"] += 1
                if r is not None:
                    self.failures.append(f"{r.status_code} {r.text[:200]}")
                return
            body = r.json()
            user64, item64, top = expected[body["version"]]
            got = [int(x["item_id"][1:]) - 1 for x in body["items"][:10]]
            self.stats["by_version"][body["version"]] += 1
            if len(body["items"]) != K or not np.allclose(item64[got] @ user64[u], top[u], atol=1e-4):
                self.stats["mixed_or_wrong"] += 1


def client(n: int, base: str, users: list[str], expected: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]],
           stop: threading.Event, tally: Tally) -> None:
    """Client thread ``n``: random users' top-K until ``stop`` is set."""
    rng = np.random.default_rng(n)
    with httpx.Client(timeout=30) as http:
        while not stop.is_set():
            u = int(rng.integers(len(users)))
            t = time.perf_counter()
            r: httpx.Response | None
            try:
                r = http.get(f"{base}/recommendations/{users[u]}", params={"k": K})
                ok = r.status_code == 200
            except httpx.HTTPError as err:
                ok, r = False, None
                tally.failures.append(repr(err))
            tally.add(u, time.perf_counter() - t, r, ok, expected)


def switch(store, base: str, probe: httpx.Client, i: int, previous: int, interval: float) -> dict:
    """Switch ``i``: odd ones roll back to ``previous``, even ones deploy another version in turn; then wait
    until the service answers with it (and the rest of ``interval``)."""
    current = registry.load(store)["champion"]
    if i % 2 == 1:  # on-call undoes the deploy just made
        action = "rollback"
        target = rollback(store, f"load test switch {i}", to=previous, run_id="bench")["version"]
    else:  # another version, in turn
        action = "deploy"
        target = [v for v in (1, 2, 3) if v != current][(i // 2) % 2]
        registry.set_champion(store, target, registry.DEPLOYED, f"load test switch {i}", "bench")
    t = time.perf_counter()
    while probe.get(f"{base}/version").json()["version"] != target:
        if time.perf_counter() - t > 60:
            raise RuntimeError(f"version {target} not served 60 s after the switch")
        time.sleep(0.005)
    done = {"action": action, "from": current, "to": target, "seconds_until_served": round(time.perf_counter() - t, 3)}
    time.sleep(max(0.0, interval - (time.perf_counter() - t)))
    return done


def run_load(base: str, store, args, users: list[str], items: list[str],
             expected: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    stop = threading.Event()
    tally = Tally()
    threads = [threading.Thread(target=client, args=(n, base, users, expected, stop, tally))
               for n in range(args.threads)]
    started = time.perf_counter()
    loadavg_before = os.getloadavg()
    for t in threads:
        t.start()
    switches = []
    try:
        with httpx.Client(timeout=30) as probe:
            time.sleep(args.interval)
            previous = 1
            for i in range(args.switches):
                switches.append(switch(store, base, probe, i, previous, args.interval))
                previous = switches[-1]["from"]
    finally:
        stop.set()
        for t in threads:
            t.join()
    elapsed = time.perf_counter() - started
    ms = np.asarray(tally.latencies) * 1000
    served = [s["seconds_until_served"] for s in switches]
    stats = tally.stats
    return {
        "items": len(items), "users": len(users), "k": K, "client_threads": args.threads,
        "poll_seconds": args.poll_seconds, "seconds": round(elapsed, 1), **{k: v for k, v in stats.items()},
        "throughput_per_s": round(stats["requests"] / elapsed, 1),
        "latency_ms": {"p50": round(float(np.percentile(ms, 50)), 2), "p99": round(float(np.percentile(ms, 99)), 2),
                       "max": round(float(ms.max()), 2)},
        "switch_count": len(switches),
        "seconds_until_served": {"max": max(served), "mean": round(float(np.mean(served)), 3)},
        "first_failures": tally.failures[:5], "loadavg_before": loadavg_before, "switches": switches,
    }


if __name__ == "__main__":
    main()
