"""Concurrent registry writers in separate processes: no lost update, no shared version number, a date trained once.

Issue 18 #6, #7 and issue 16 ("one writer at a time for the registry"). The racing processes are started with
``multiprocessing``'s spawn method and run the writers of ``tests/registry_workers.py``.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from recsys import registry
from recsys.config import Settings
from recsys.features import build_features
from recsys.storage import layout
from recsys.storage import lock as store_lock_module
from recsys.storage.local import LocalStore
from recsys.storage.lock import LockLost, LockTimeout, StoreLock, store_lock
from recsys.validation.partition import validate_partition
from tests import registry_workers as workers

D1, D2 = date(2011, 1, 4), date(2011, 1, 5)
SPAWN = multiprocessing.get_context("spawn")
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _children_import_tests(monkeypatch):
    """Spawned children import their target from ``tests.registry_workers``: they get the parent's sys.path."""
    monkeypatch.syspath_prepend(str(REPO_ROOT))


def _seed(store: LocalStore, versions: int = 2) -> None:
    """Versions 1..``versions`` trained on D1 with directories and serving indexes, version 1 the champion."""
    for version in range(1, versions + 1):
        store.write_json(f"{layout.model_version(version)}/{layout.METADATA_FILE}", {"version": version})
        store.write_bytes(f"{layout.model_version(version)}/{layout.INDEX_FILE}", b"deployed once (a stand-in)")
        registry.add_version(store, version, {"version": version, "trained_on": D1.isoformat()}, "seed")
    registry.set_champion(store, 1, registry.DEPLOYED, "seed", "seed")


# --- (a) a fine-tune (twice, same date), a full retrain and rollbacks racing, 20 times ----------------------------


def _check_round(store: LocalStore, results: list[dict], rollbacks: int, history_before: int) -> None:
    tunes = [r for r in results[:2]]
    assert sorted(r["reused"] for r in tunes) == [False, True], tunes  # the date was trained once
    assert tunes[0]["version"] == tunes[1]["version"]
    tuned, retrained = tunes[0]["version"], results[2]["version"]
    reg = registry.load(store)
    assert sorted(reg["versions"], key=int) == ["1", "2", *map(str, sorted({tuned, retrained}))]
    assert tuned != retrained
    assert reg.get("reservations") == {}
    for version in (tuned, retrained):  # each directory is the one its registered training wrote
        meta = store.read_json(f"{layout.model_version(version)}/{layout.METADATA_FILE}")
        assert meta == reg["versions"][str(version)]
        tables = np.load(io.BytesIO(store.read_bytes(f"{layout.model_version(version)}/{layout.TABLES_FILE}")))
        assert tables["user"][0, 0] == meta["train_seconds"]  # the pid of the process that trained it
    actions = Counter((h["action"], h.get("run_id")) for h in reg["history"][history_before:])
    trainer = next(r["run_id"] for r in tunes if not r["reused"])
    assert actions == Counter({(registry.TRAINED, trainer): 1, (registry.TRAINED, "fr"): 1,
                               (registry.REJECTED, "fr"): 1, (registry.ROLLBACK, "rb"): rollbacks})
    assert len(reg["history"]) == history_before + 3 + rollbacks
    assert reg["champion"] == 2


@pytest.mark.slow  # about a minute: every write is fsynced, 3 per registry update
def test_fine_tunes_a_full_retrain_and_rollbacks_racing_lose_nothing_and_share_no_version(tmp_path):
    targets = [2, 1, 2, 1, 2, 1, 2]
    with SPAWN.Pool(5) as pool:
        pool.map(time.sleep, [0.0] * 5)  # every worker started (imports done) before the first round
        for round_ in range(20):
            store = LocalStore(tmp_path / f"round-{round_}")
            _seed(store)
            before = len(registry.load(store)["history"])
            root, start = str(store.root), time.time() + 0.3
            jobs = [
                pool.apply_async(workers.fake_training, (root, registry.FINE_TUNE, D2.isoformat(), "ft-a", start)),
                pool.apply_async(workers.fake_training, (root, registry.FINE_TUNE, D2.isoformat(), "ft-b", start)),
                pool.apply_async(workers.fake_training, (root, registry.FULL_RETRAIN, D2.isoformat(), "fr", start)),
                pool.apply_async(workers.rollbacks, (root, targets, "rb", start)),
            ]
            results = [job.get(timeout=120) for job in jobs]
            _check_round(store, results, len(targets), before)


# --- (b) 1,000 concurrent on-call writers -------------------------------------------------------------------------


@pytest.mark.slow  # about a minute: every write is fsynced, 3 per registry update
def test_a_thousand_concurrent_on_call_writes_lose_no_entry(tmp_path):
    store = LocalStore(tmp_path / "store")
    _seed(store, versions=3)
    before = len(registry.load(store)["history"])
    processes, each = 8, 125
    start = time.time() + 1.0
    with SPAWN.Pool(processes) as pool:
        done = pool.starmap(workers.manual_writers, [(str(store.root), each, f"w{p}", start) for p in range(processes)])
    assert sum(done) == processes * each == 1000
    history = registry.load(store)["history"]
    assert len(history) == before + 1000
    assert {h["run_id"] for h in history[before:]} == {f"w{p}-{i}" for p in range(processes) for i in range(each)}


def test_threads_of_one_process_are_serialised_too(store):
    _seed(store)
    before = len(registry.load(store)["history"])

    def write(n: int) -> None:
        for i in range(25):
            registry.record_manual(store, registry.DEPLOY_SKIPPED, "t", f"t{n}-{i}", version=1)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(registry.load(store)["history"]) == before + 100


# --- (c) a crashed holder ------------------------------------------------------------------------------------------


def _start_and_wait(target, args: tuple, ready: Path) -> multiprocessing.Process:
    child = SPAWN.Process(target=target, args=(*args, str(ready)))
    child.start()
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert child.is_alive() and time.monotonic() < deadline, "the lock holder did not start"
        time.sleep(0.05)
    return child


def _kill_9(child: multiprocessing.Process) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL


def test_a_registry_writer_killed_with_9_inside_its_update_does_not_block_the_next(store, tmp_path):
    _seed(store)
    child = _start_and_wait(workers.hold_registry_lock, (str(store.root),), tmp_path / "ready")
    with pytest.raises(LockTimeout, match=r"run doomed \(registry write; host .*, pid \d+\)"):
        StoreLock(store, registry.LOCK, timeout=0.3).acquire()  # held while it lives
    _kill_9(child)
    started = time.monotonic()
    entry = registry.record_manual(store, registry.DEPLOY_SKIPPED, "after the crash", "next", version=1)
    assert time.monotonic() - started < registry.LOCK_EXPIRY / 4  # its process is dead on this host: at once
    assert registry.load(store)["history"][-1] == entry


def test_the_lease_of_a_killed_holder_on_another_host_is_taken_over_after_its_expiry(store, tmp_path, monkeypatch):
    path, expiry = "registry/locks/test", 2.0
    child = _start_and_wait(workers.hold_lock, (str(store.root), path, expiry, 3600.0), tmp_path / "ready")
    _kill_9(child)
    monkeypatch.setattr(store_lock_module, "HOST_ID", "elsewhere")  # its pid cannot be checked from here
    contender = StoreLock(store, path, run_id="next", expiry=expiry, poll=0.05)
    _, lease = contender.holder()
    assert lease is not None and lease["run_id"] == "holder" and not lease.get("released")
    assert not contender.try_acquire()  # not expired yet
    contender.acquire()
    assert time.time() >= lease["expires"]
    assert contender.holder()[1]["token"] == contender.lease["token"]
    contender.release()


def test_a_live_holder_keeps_its_lock_past_the_expiry_by_refreshing_it(store, tmp_path):
    path, expiry, hold = "registry/locks/test", 0.6, 2.5
    child = _start_and_wait(workers.hold_lock, (str(store.root), path, expiry, hold), tmp_path / "ready")
    started = time.monotonic()
    with store_lock(store, path, run_id="next", expiry=expiry, poll=0.05):
        waited = time.monotonic() - started
    child.join()
    assert child.exitcode == 0
    assert waited > hold - 0.5  # waited for the holder to finish, although each lease lives 0.6 s


# --- the lock itself --------------------------------------------------------------------------------------------


def test_one_holder_at_a_time_and_the_next_gets_it_after_release(store):
    first, second = StoreLock(store, "locks/x"), StoreLock(store, "locks/x", timeout=0.2)
    assert first.try_acquire()
    assert not second.try_acquire()
    with pytest.raises(LockTimeout, match=r"locks/x was not free within 0\.2 s"):
        second.acquire()
    first.release()
    assert second.try_acquire()
    assert second.holder()[0] == 2


def test_a_holder_whose_lease_was_taken_over_may_not_write(store, monkeypatch):
    frozen = StoreLock(store, "locks/x", expiry=0.1)
    assert frozen.try_acquire()
    time.sleep(0.2)  # frozen past its expiry, no refresh
    assert StoreLock(store, "locks/x").try_acquire()
    with pytest.raises(LockLost, match="was taken over by run None"):
        frozen.check()


def test_store_lock_is_reentrant_in_a_thread_and_a_nested_registry_update_is_refused(store):
    with store_lock(store, "locks/x") as outer, store_lock(store, "locks/x") as inner:
        assert inner is outer
    with pytest.raises(RuntimeError, match=r"registry\.update inside registry\.update"):
        registry.update(store, lambda reg: registry.record_manual(store, "x", None, None))


def test_an_unreadable_lease_is_taken_over_once_it_stayed_unreadable_for_the_expiry(store):
    store.write_bytes("locks/x/000000000001", b"")  # damaged
    contender = StoreLock(store, "locks/x", expiry=0.3)
    assert not contender.try_acquire()
    time.sleep(0.35)
    assert contender.try_acquire() and contender.number == 2


def test_old_leases_are_collected(store):
    for _ in range(40):
        with store_lock(store, "locks/x"):
            pass
    numbers = StoreLock(store, "locks/x").numbers()
    assert numbers[-1] == 40 and len(numbers) <= 2 * store_lock_module.KEEP + 1


def test_an_update_that_raises_or_changes_nothing_writes_nothing(store):
    _seed(store)
    stamp = os.stat(store.root / layout.REGISTRY).st_mtime_ns
    with pytest.raises(ZeroDivisionError):
        registry.update(store, lambda reg: reg["history"].append({"at": "x", "action": "y"}) or 1 / 0)
    registry.update(store, lambda reg: None)
    assert os.stat(store.root / layout.REGISTRY).st_mtime_ns == stamp
    assert json.loads((store.root / layout.REGISTRY).read_text())["history"][-1]["action"] == registry.DEPLOYED


def test_version_numbers_skip_reserved_and_stored_ones_and_a_dead_attempt_is_reused(store):
    store.write_bytes(f"{layout.model_version(7)}/tables.npz", b"left by an older release")
    assert registry.allocate_version(store, D1, registry.FINE_TUNE, "a") == 8
    assert registry.allocate_version(store, D1, registry.FULL_RETRAIN, "b") == 9
    # the fine-tune of D1 died before registering: its retry (under the date's lock) gets its number back
    assert registry.allocate_version(store, D1, registry.FINE_TUNE, "a-retry") == 8
    assert registry.load(store)["reservations"]["8"]["run_id"] == "a-retry"
    registry.add_version(store, 8, {"version": 8, "trained_on": D1.isoformat()}, "a-retry")
    assert "8" not in registry.load(store)["reservations"]
    with pytest.raises(registry.RegistryError, match="version 8 is already registered"):
        registry.add_version(store, 8, {"version": 8, "trained_on": D2.isoformat()}, "other")
    assert registry.allocate_version(store, D2, registry.FINE_TUNE, "c") == 10


def test_a_listing_never_misses_the_directory_while_other_writers_churn_temporaries_in_it(store):
    """The lock lists its directory while contenders create and delete temporaries there (LocalStore._entries
    once took an entry deleted between readdir and stat for a missing directory: an empty lock, two holders)."""
    store.write_bytes("locks/x/000000000001", b"{}")
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            name = f"locks/x/{time.monotonic_ns()}"
            store.create_exclusive(name, b"x")
            store.delete(name)

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        assert all("000000000001" in store.list_dir("locks/x") for _ in range(3000))
    finally:
        stop.set()
        for t in threads:
            t.join()


# --- the real fine-tune of one date, twice at once ----------------------------------------------------------------

DAY1 = [(f"d1-{n}", "2011-01-04 10:00:00", u, i, "purchase", 1, 1.0) for n, (u, i) in enumerate(
    [("u1", "i1"), ("u1", "i2"), ("u2", "i2"), ("u3", "i3"), ("u4", "i1"), ("u5", "i4"), ("u6", "i2")]
)]


@pytest.mark.slow
def test_two_runs_of_the_same_date_at_once_train_one_version(store, publish_events):
    publish_events(store, D1, DAY1)
    validate_partition(store, Settings(), D1, accept_invalid=True, accept_reason="a tiny test day")
    build_features(store, Settings(holdout_fraction=0.25, min_user_count=1), D1)
    settings = {"storage_root": str(store.root), "epochs": 1, "embedding_dim": 8, "batch_size": 4}
    start = time.time() + 1.0
    with SPAWN.Pool(2) as pool:
        runs = [pool.apply_async(workers.fine_tune, (str(store.root), settings, D1.isoformat(), run_id, start))
                for run_id in ("scheduled", "backfill")]
        results = [run.get(timeout=600) for run in runs]
    assert sorted(r["reused"] for r in results) == [False, True]  # the second waited and took the first's
    assert [r["version"] for r in results] == [1, 1]
    reg = registry.load(store)
    assert list(reg["versions"]) == ["1"] and reg["reservations"] == {}
    trained = [h for h in reg["history"] if h["action"] == registry.TRAINED]
    assert [h["run_id"] for h in trained] == [next(r["run_id"] for r in results if not r["reused"])]
    assert store.list_dir(layout.MODELS) == ["1"]
