"""Serving latency and throughput of top-100 recommendations, in process and over HTTP.

For each catalog size: build a synthetic store (bench/synthetic_store.py), load the champion as the
service does (recsys.serving.model_holder.load_version), then
  1. in process: LoadedVersion.recommend(user, 100) for random known users, one thread (exact numpy search);
  2. over HTTP: `recsys serve` in a subprocess on loopback; one keep-alive client, sequential requests
     (end-to-end latency), then 4 client threads for throughput;
  3. with --ann and faiss installed: an HNSW inner-product index over the same items, its latency
     and its recall@100 against the exact search.
With --store, the champion of a real store (e.g. the demo's var/store) is measured in process too.

    python bench/serving_latency/run.py --out bench/serving_latency/results.json --ann
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # as `recsys serve` does (see recsys/cli.py), before numpy loads

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _harness  # noqa: E402
import synthetic_store  # noqa: E402

from recsys.serving.model_holder import LoadedVersion, load_version  # noqa: E402
from recsys.storage.local import LocalStore  # noqa: E402

K = 100


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p90_ms": round(float(np.percentile(ms, 90)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "max_ms": round(float(ms.max()), 3),
            "mean_ms": round(float(ms.mean()), 3), "n": len(ms)}


def in_process(lv: LoadedVersion, users: list[str], queries: int, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    picks = [users[i] for i in rng.integers(len(users), size=queries)]
    for u in picks[:20]:  # warm-up
        lv.recommend(u, K)
    times = []
    started = time.perf_counter()
    for u in picks:
        t = time.perf_counter()
        rec = lv.recommend(u, K)
        times.append(time.perf_counter() - t)
        assert len(rec.item_ids) == K
    total = time.perf_counter() - started
    return {**percentiles(times), "throughput_per_s": round(queries / total, 1)}


def over_http(root: Path, users: list[str], queries: int, seconds: float, threads: int = 4,
              exact: bool = True) -> dict:
    import httpx

    options = ["--log-level", "warning", "--poll-seconds", "2", *(["--exact"] if exact else [])]
    with _harness.recsys_serve(root, *options, timeout=600) as (base, ready_seconds):
        rng = np.random.default_rng(1)
        times = []
        with httpx.Client(timeout=30) as client:
            for u in [users[i] for i in rng.integers(len(users), size=50)]:
                client.get(f"{base}/recommendations/{u}", params={"k": K})
            for u in [users[i] for i in rng.integers(len(users), size=queries)]:
                t = time.perf_counter()
                r = client.get(f"{base}/recommendations/{u}", params={"k": K})
                times.append(time.perf_counter() - t)
                assert r.status_code == 200 and len(r.json()["items"]) == K
        done = [0] * threads
        failed = [0] * threads
        stop = time.perf_counter() + seconds

        def loop(n: int) -> None:
            local = np.random.default_rng(100 + n)
            with httpx.Client(timeout=30) as client:
                while time.perf_counter() < stop:
                    r = client.get(f"{base}/recommendations/{users[int(local.integers(len(users)))]}", params={"k": K})
                    done[n] += 1
                    failed[n] += r.status_code != 200

        workers = [threading.Thread(target=loop, args=(n,)) for n in range(threads)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - t0
        return {"sequential": percentiles(times), "startup_to_ready_s": round(ready_seconds, 2),
                "concurrent": {"client_threads": threads, "seconds": round(elapsed, 1), "requests": sum(done),
                               "failed": sum(failed), "throughput_per_s": round(sum(done) / elapsed, 1)}}


def ann(lv: LoadedVersion, users: list[str], queries: int, ef_values: list[int]) -> tuple[LoadedVersion, dict]:
    """The service's HNSW index (recsys.serving.ann) over the served items: build time, then per efSearch
    the latency of LoadedVersion.recommend(user, 100) and its recall@100 against the exact search."""
    import dataclasses

    import faiss

    from recsys.serving.ann import EF_CONSTRUCTION, HNSW_M, HnswIndex

    index = HnswIndex(lv.scorer.item_table[1:])
    approx = dataclasses.replace(lv, ann=index)
    rng = np.random.default_rng(2)
    picks = [users[i] for i in rng.integers(len(users), size=queries)]
    exact = [set(lv.recommend(u, K).item_ids) for u in picks[:500]]
    out: dict = {"library": f"faiss-cpu {faiss.__version__}",
                 "index": f"IndexHNSWFlat(M={HNSW_M}, efConstruction={EF_CONSTRUCTION}), inner product, "
                          "one thread per query",
                 "build_s": round(index.build_seconds, 1), "by_ef_search": {}}
    for ef in ef_values:
        index.index.hnsw.efSearch = ef
        times = []
        found = []
        for u in picks:
            t = time.perf_counter()
            rec = approx.recommend(u, K)
            times.append(time.perf_counter() - t)
            found.append(rec.item_ids)
        recall = np.mean([len(exact[i] & set(found[i])) / K for i in range(len(exact))])
        out["by_ef_search"][str(ef)] = {**percentiles(times), "recall_at_100": round(float(recall), 4),
                                        "throughput_per_s": round(len(times) / sum(times), 1)}
    index.index.hnsw.efSearch = index.ef_search
    return approx, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    p.add_argument("--sizes", default=f"{synthetic_store.ONLINE_RETAIL_ITEMS},1000000")
    p.add_argument("--users", type=int, default=synthetic_store.ONLINE_RETAIL_USERS)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--http-seconds", type=float, default=15)
    p.add_argument("--ann", action="store_true", help="also measure an HNSW index (faiss-cpu) at sizes >= 100k")
    p.add_argument("--ef", default="64,128,256")
    p.add_argument("--store", type=Path, help="a real store whose champion is also measured (e.g. var/store)")
    args = p.parse_args()

    result: dict = {
        "machine": {"cpus": os.cpu_count(), "cpu": _harness.cpu_name(), "python": platform.python_version(),
                    "numpy": np.__version__, "loadavg_before": os.getloadavg()},
        "k": K, "dim": args.dim, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "catalogs": {},
    }
    if args.store:
        from recsys.serving.model_holder import ModelHolder

        holder = ModelHolder(LocalStore(args.store))
        holder.poll()
        lv = holder.current
        if lv is not None:
            users = [u for u in lv.scorer.user_rows if lv.is_known_user(u)]
            result["real_store"] = {"store": str(args.store), "version": lv.version, "items": lv.items,
                                    "users": len(users), "in_process": in_process(lv, users, args.queries)}
            print(json.dumps(result["real_store"]), flush=True)
    for size in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="recsys-bench-") as tmp:
            t = time.perf_counter()
            store = synthetic_store.build(Path(tmp) / "store", args.users, size, args.dim)
            built = time.perf_counter() - t
            t = time.perf_counter()
            lv = load_version(store, 1)
            loaded = time.perf_counter() - t
            users = synthetic_store.user_ids(args.users)
            entry: dict = {"items": size, "users": args.users, "build_store_s": round(built, 1),
                           "load_version_s": round(loaded, 2),
                           "in_process_exact": in_process(lv, users, args.queries)}
            print(size, json.dumps(entry["in_process_exact"]), flush=True)
            entry["http_exact"] = over_http(store.root, users, args.queries, args.http_seconds)
            print(size, json.dumps(entry["http_exact"]), flush=True)
            if args.ann and size >= 200_000:  # recsys serve's default --ann-min-items
                approx, entry["ann"] = ann(lv, users, args.queries, [int(x) for x in args.ef.split(",")])
                print(size, json.dumps(entry["ann"]), flush=True)
                del approx
                entry["http_ann"] = over_http(store.root, users, args.queries, args.http_seconds, exact=False)
                print(size, json.dumps(entry["http_ann"]), flush=True)
            result["catalogs"][str(size)] = entry
            del lv
    result["machine"]["loadavg_after"] = os.getloadavg()
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
