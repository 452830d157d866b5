"""A real ``recsys serve`` (uvicorn, loopback) under concurrent requests while deploys and rollbacks
switch the champion: no failed request, every answer from exactly one version, the new version served
within a bound after each switch, and a version that fails to load never interrupts serving."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from recsys import registry, schema
from recsys.features import vocab
from recsys.serving.deploy import INDEX_FILE, INDEX_META_FILE, build_index, index_metadata, rollback
from recsys.storage import layout
from recsys.storage.local import LocalStore

# bench/_harness.py starts `recsys serve` and waits until it is ready, as the serving benchmarks do
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import _harness

pytestmark = pytest.mark.integration

N_USERS, N_ITEMS, DIM = 40, 300, 8
VERSIONS = (1, 2, 3)
BROKEN = 4
SWITCH_BOUND_SECONDS = 3.0  # poll interval 0.1 s + load time (~0.1 s here) with room for a busy machine
CLIENT_THREADS = 4
USERS = [f"c{i}" for i in range(1, N_USERS + 1)]
ITEMS = [f"i{i:04d}" for i in range(1, N_ITEMS + 1)]
DAY0 = date(2011, 1, 4)


def _build_store(root: Path) -> tuple[LocalStore, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Versions 1-3 with random tables (different per version) and a broken version 4; returns the store
    and each version's (user, item) tables without the OOV rows, to check answers independently."""
    store = LocalStore(root)
    for name, ids in ((vocab.USERS, USERS), (vocab.ITEMS, ITEMS)):
        table = pd.DataFrame({vocab.ID: ids, vocab.ROW: range(1, len(ids) + 1), vocab.FIRST_SEEN: DAY0.isoformat()})
        vocab.save(store, name, table.astype({vocab.ID: "string", vocab.ROW: "int64", vocab.FIRST_SEEN: "string"}))
    catalog = pd.DataFrame({schema.ITEM_ID: ITEMS, schema.TITLE: [f"title {i}" for i in ITEMS],
                            schema.CATEGORY: None, schema.PRICE: 1.0, schema.AVAILABLE: True})
    store.write_parquet(f"{layout.raw_catalog(DAY0)}/part-00000.parquet", catalog.astype(schema.CATALOG_DTYPES))
    store.mark_success(layout.raw_catalog(DAY0))
    expected: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for version in (*VERSIONS, BROKEN):
        rng = np.random.default_rng(version)
        user = rng.normal(size=(N_USERS + 1, DIM)).astype(np.float32)
        item = rng.normal(size=(N_ITEMS + 1, DIM)).astype(np.float32)
        vdir = layout.model_version(version)
        buf = io.BytesIO()
        np.savez(buf, user=user, item=item)
        store.write_bytes(f"{vdir}/tables.npz", buf.getvalue() if version != BROKEN else b"corrupt")
        meta = {"version": version, "trained_on": (DAY0 + timedelta(days=version)).isoformat(),
                "user_rows": N_USERS + 1, "item_rows": N_ITEMS + 1}
        store.write_json(f"{vdir}/metadata.json", meta)
        registry.add_version(store, version, meta, run_id="test")
        index = build_index(store, version, DAY0)
        data = io.BytesIO()
        index.to_parquet(data, index=False)
        store.write_bytes(f"{vdir}/{INDEX_FILE}", data.getvalue())
        store.write_json(f"{vdir}/{INDEX_META_FILE}", index_metadata(data.getvalue(), index, DAY0, None))
        expected[version] = (user[1:].astype(np.float64), item[1:].astype(np.float64))
    for version in VERSIONS:
        registry.set_champion(store, version, registry.DEPLOYED, "initial deploy", "test")
    registry.set_champion(store, 1, registry.ROLLBACK, "start from version 1", "test")
    return store, expected


def _is_top10(tables: tuple[np.ndarray, np.ndarray], user: str, body: dict) -> bool:
    """True if ``body`` is exactly the named version's top 10 for ``user``: the scores of the returned
    ids, recomputed from that version's tables, are its 10 best scores in order (ties may swap ids;
    an answer mixing versions cannot pass, their tables are unrelated)."""
    users, items = tables
    scores = items @ users[USERS.index(user)]
    best = -np.sort(-scores)[:10]
    got = [ITEMS.index(x["item_id"]) for x in body["items"]]
    returned = [x["score"] for x in body["items"]]
    return (len(got) == 10 and np.allclose(scores[got], best, atol=1e-4)
            and np.allclose(returned, best, atol=1e-4))


@pytest.fixture
def server(tmp_path):
    store, expected = _build_store(tmp_path / "store")
    options = ("--host", "127.0.0.1", "--poll-seconds", "0.1", "--log-level", "warning")
    with _harness.recsys_serve(store.root, *options, log=tmp_path / "serve.log", timeout=90) as (base, _):
        yield base, store, expected


def _served_version(client: httpx.Client, base: str) -> int:
    return int(client.get(f"{base}/version").json()["version"])


def _client_loop(base: str, seed: int, expected: dict, stop: threading.Event, lock: threading.Lock,
                 errors: list[str], answers: list[int]) -> None:
    """Ask for random users' top 10 until ``stop``; every failed or wrong answer goes to ``errors``, the version of
    every answer with status 200 to ``answers``."""
    rng = np.random.default_rng(seed)
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            user = USERS[int(rng.integers(N_USERS))]
            try:
                response = client.get(f"{base}/recommendations/{user}", params={"k": 10})
            except httpx.HTTPError as err:
                with lock:
                    errors.append(f"{user}: {err!r}")
                continue
            with lock:
                if response.status_code != 200:
                    errors.append(f"{user}: {response.status_code} {response.text[:200]}")
                    continue
                body = response.json()
                got = [x["item_id"] for x in body["items"]]
                if body["version"] not in expected or not _is_top10(expected[body["version"]], user, body):
                    errors.append(f"{user}: version {body['version']} answered {got}")
                answers.append(body["version"])


def test_deploys_and_rollbacks_under_load_fail_no_request_and_never_mix_versions(server):
    base, store, expected = server
    stop = threading.Event()
    errors: list[str] = []
    answers: list[int] = []  # version of each good answer
    lock = threading.Lock()
    threads = [threading.Thread(target=_client_loop, args=(base, s, expected, stop, lock, errors, answers))
               for s in range(CLIENT_THREADS)]
    for t in threads:
        t.start()
    switch_seconds: list[float] = []
    plan = [2, 3, "rollback", "rollback", 3, 1, 2, "rollback", 3, 2, 1, 3]  # 12 switches
    try:
        with httpx.Client(timeout=10) as probe:
            assert _served_version(probe, base) == 1
            for step in plan:
                if step == "rollback":
                    target = rollback(store, "load test rollback", run_id="load-test")["version"]
                else:
                    target = int(step)
                    registry.set_champion(store, target, registry.DEPLOYED, "load test deploy", "load-test")
                switched = time.monotonic()
                while _served_version(probe, base) != target:
                    assert time.monotonic() - switched < SWITCH_BOUND_SECONDS, f"version {target} not served in time"
                    time.sleep(0.01)
                switch_seconds.append(time.monotonic() - switched)
                time.sleep(0.3)  # let requests run on the new version

            # a champion that cannot be loaded: the old version keeps answering, readiness says why
            served = _served_version(probe, base)
            registry.set_champion(store, BROKEN, registry.DEPLOYED, "a broken export", "load-test")
            deadline = time.monotonic() + SWITCH_BOUND_SECONDS
            while probe.get(f"{base}/readyz").json()["load_error"] is None:
                assert time.monotonic() < deadline, "the failed load never showed in /readyz"
                time.sleep(0.05)
            ready = probe.get(f"{base}/readyz")
            assert ready.status_code == 200
            assert (ready.json()["champion"], ready.json()["load_error"]["version"]) == (BROKEN, BROKEN)
            assert _served_version(probe, base) == served
            assert "recsys_model_load_failing 1" in probe.get(f"{base}/metrics").text
            time.sleep(0.3)
            registry.set_champion(store, 2, registry.DEPLOYED, "fixed", "load-test")
            switched = time.monotonic()
            while _served_version(probe, base) != 2:
                assert time.monotonic() - switched < SWITCH_BOUND_SECONDS
                time.sleep(0.01)
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)

    assert errors == [], f"{len(errors)} bad answers, first: {errors[:5]}"
    assert len(answers) > 100
    assert set(answers) == set(VERSIONS)  # every version answered at some point
    assert len(switch_seconds) == len(plan)
    assert max(switch_seconds) < SWITCH_BOUND_SECONDS
    history = [h for h in registry.load(store)["history"] if h.get("run_id") == "load-test"]
    assert len(history) == len(plan) + 2
    assert all({"at", "from", "to", "reason", "run_id", "action"} <= set(h) for h in history)
    json.dumps(history)  # the history stays JSON
