"""recsys.serving.retention: old version directories are pruned; nothing the registry may still use is."""

from __future__ import annotations

import json
import multiprocessing
import time
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from recsys import cli, registry
from recsys.config import ConfigError, Settings
from recsys.serving.deploy import DeployError, deploy, deploy_version, rollback
from recsys.serving.retention import prune_versions
from recsys.storage import layout
from recsys.storage.local import LocalStore
from tests import registry_workers, retention_workers

SPAWN = multiprocessing.get_context("spawn")
REPO_ROOT = Path(__file__).resolve().parents[2]
D0 = date(2011, 1, 1)


def day(n: int) -> str:
    return (D0 + timedelta(days=n)).isoformat()


def _dir(store: LocalStore, version: int, index: bool = False) -> None:
    vdir = layout.model_version(version)
    store.write_bytes(f"{vdir}/{layout.TABLES_FILE}", b"tables")
    store.write_json(f"{vdir}/{layout.METADATA_FILE}", {"version": version})
    if index:
        store.write_parquet(f"{vdir}/{layout.INDEX_FILE}", pd.DataFrame({"row": [1]}))


def _present(store: LocalStore) -> set[int]:
    return {int(n) for n in store.list_dir(layout.MODELS) if n.isdigit()}


def _decision(version: int, blessed: bool) -> registry.Decision:
    return {"candidate_version": version, "blessed": blessed, "reason": "better" if blessed else "worse"}


def _switch(reg: registry.Registry, action: str, to: int) -> None:
    reg["history"].append({"at": "t", "action": action, "from": reg["champion"], "to": to, "reason": "r"})
    reg["champion"] = to


@pytest.fixture
def busy(store) -> LocalStore:
    """21 versions with deploys, a rollback, rejected and skipped candidates, full retrains and a reservation.

    Fine-tune n is trained on day n, except full retrains 7 (day 7, rejected) and 21 (day 20, awaiting its
    gate). Deployed: 1, 6, 9; then a rollback 9 -> 6 (champion 6). Rejected: 2, 8, 10..20. 3 is blessed but
    on-call skipped its deploy; 4 is blessed and awaits its deploy; 5 has a serving index from a deploy that
    crashed before the switch; the newest fine-tune (20) was warm-started from 12. Version 22 is reserved.
    """
    reg = registry.empty()
    for v in range(1, 22):
        kind = registry.FULL_RETRAIN if v in (7, 21) else registry.FINE_TUNE
        reg["versions"][str(v)] = {"version": v, "kind": kind, "trained_on": day(20 if v == 21 else v),
                                   "parent": 12 if v == 20 else None}
        _dir(store, v, index=v in (1, 5, 6, 9))
        if kind == registry.FINE_TUNE:
            reg["decisions"][day(v)] = _decision(v, v in (1, 3, 4, 6, 9))
    reg["retrains"] = {"7": {**_decision(7, False), "kind": registry.FULL_RETRAIN}}
    reg["reservations"] = {"22": {"kind": registry.FINE_TUNE, "date": day(21), "run_id": "r", "owner": "h:1",
                                  "at": "t"}}
    _switch(reg, registry.DEPLOYED, 1)
    _switch(reg, registry.DEPLOYED, 6)
    reg["history"].append({"at": "t", "action": registry.DEPLOY_SKIPPED, "version": 3, "reason": "freeze"})
    _switch(reg, registry.DEPLOYED, 9)
    _switch(reg, registry.ROLLBACK, 6)
    registry.save(store, reg)
    return store


def test_retention_prunes_exactly_the_unprotected_versions_beyond_n_and_records_them(busy):
    settings = Settings(storage_root=str(busy.root), keep_versions=5)  # newest five: 17..21
    result = prune_versions(busy, settings, run_id="p1")
    doomed = [2, 3, 7, 8, 10, 11, 13, 14, 15, 16]
    assert result["pruned"] == doomed
    assert result["removed"] == doomed
    assert _present(busy) == set(range(1, 22)) - set(doomed)
    assert {int(v): why for v, why in result["protected"].items()} == {
        1: "deployed: rollback may return to it", 4: "blessed, awaiting its deploy",
        5: "has a serving index: rollback may return to it", 6: "champion",
        9: "deployed: rollback may return to it", 12: "parent of the newest fine-tune",
        20: "the next fine-tune may start from it", 21: "the next fine-tune may start from it",
    }
    reg = registry.load(busy)
    assert sorted(int(k) for k, m in reg["versions"].items() if "pruned" in m) == doomed
    assert len(reg["versions"]) == 21 and reg["champion"] == 6 and "22" in reg["reservations"]
    entry = reg["history"][-1]
    assert (entry["action"], entry["versions"], entry["keep"], entry["run_id"]) == (registry.PRUNED, doomed, 5, "p1")
    assert "RECSYS_KEEP_VERSIONS=5" in entry["reason"]
    # whatever the next fine-tune picks, now or after the pending retrain 21 is rejected, is still there
    assert registry.parent_for_date(reg, D0 + timedelta(days=30)) == 21
    reg["retrains"]["21"] = {**_decision(21, False), "kind": registry.FULL_RETRAIN}
    assert registry.parent_for_date(reg, D0 + timedelta(days=30)) == 20


def test_a_rerun_is_idempotent_and_finishes_an_interrupted_prune(busy):
    settings = Settings(storage_root=str(busy.root), keep_versions=5)
    prune_versions(busy, settings)
    before = busy.read_bytes(layout.REGISTRY)
    _dir(busy, 2)  # a crash after the record, before the delete: the directory is still there
    again = prune_versions(busy, settings)
    assert (again["pruned"], again["removed"]) == ([], [2])
    assert busy.read_bytes(layout.REGISTRY) == before  # nothing recorded twice
    assert prune_versions(busy, settings)["removed"] == []
    assert busy.read_bytes(layout.REGISTRY) == before


def test_keep_none_keeps_everything_and_the_setting_is_checked(busy):
    assert prune_versions(busy, Settings(storage_root=str(busy.root), keep_versions=None))["pruned"] == []
    assert _present(busy) == set(range(1, 22))
    assert Settings.from_env({"RECSYS_KEEP_VERSIONS": "none"}).keep_versions is None
    assert Settings.from_env({}).keep_versions == 10
    with pytest.raises(ConfigError, match="RECSYS_KEEP_VERSIONS must be positive"):
        Settings.from_env({"RECSYS_KEEP_VERSIONS": "0"})


def test_with_n_one_only_protected_versions_stay(busy):
    prune_versions(busy, Settings(storage_root=str(busy.root), keep_versions=1))
    assert _present(busy) == {1, 4, 5, 6, 9, 12, 20, 21}


def test_rollback_after_pruning_walks_back_and_a_pruned_version_is_refused(busy):
    prune_versions(busy, Settings(storage_root=str(busy.root), keep_versions=1))
    assert rollback(busy, "bad model", to=9)["version"] == 9
    assert rollback(busy, "still bad")["version"] == 6  # walks back in deploy order
    assert rollback(busy, "older")["version"] == 1
    with pytest.raises(DeployError, match="version 8 was pruned by retention"):
        rollback(busy, "try", to=8)
    with pytest.raises(DeployError, match="version 3 was pruned by retention"):
        deploy_version(busy, Settings(storage_root=str(busy.root)), 3, D0, "forced")
    with pytest.raises(registry.RegistryError, match="pruned"):
        registry.set_champion(busy, 8, registry.ROLLBACK, "by hand", None)
    assert registry.load(busy)["champion"] == 1


def test_every_deploy_prunes_through_the_real_deploy_and_the_cli(store, tmp_path, monkeypatch, capsys):
    settings = Settings(storage_root=str(store.root), keep_versions=2)
    for v in range(1, 7):  # fine-tunes 1..6; 1, 3 and 6 blessed and deployed, the others rejected
        store.write_bytes(f"{layout.model_version(v)}/{layout.TABLES_FILE}", b"t")
        registry.add_version(store, v, {"version": v, "trained_on": day(v)}, "t")
        registry.record_decision(store, D0 + timedelta(days=v), _decision(v, v in (1, 3, 6)), "t")
        if v in (1, 3, 6):
            store.write_parquet(f"{layout.model_version(v)}/{layout.INDEX_FILE}", pd.DataFrame({"row": [1]}))
            result = deploy(store, settings, D0 + timedelta(days=v), run_id=f"d{v}")
            assert result["changed"] is True
    # deploy of 3 pruned nothing (1, 2 protected or newest); deploy of 6 pruned 2 and 4
    assert result["pruned"] == [2, 4]
    assert _present(store) == {1, 3, 5, 6}
    reg = registry.load(store)
    assert [(h["versions"], h["run_id"]) for h in reg["history"] if h["action"] == registry.PRUNED] == [([2, 4], "d6")]
    monkeypatch.setenv("RECSYS_STORAGE_ROOT", str(store.root))
    monkeypatch.setenv("RECSYS_KEEP_VERSIONS", "1")
    assert cli.main(["prune"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pruned"] == [5] and out["keep"] == 1
    assert _present(store) == {1, 3, 6}


@pytest.fixture
def _children_import_tests(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT))


def test_a_concurrent_prune_rollbacks_and_a_training_lose_nothing(store, _children_import_tests):
    reg = registry.empty()
    for v in range(1, 31):  # 1, 10, 20 and 30 deployed (30 the champion), the others rejected
        reg["versions"][str(v)] = {"version": v, "kind": registry.FINE_TUNE, "trained_on": day(v)}
        reg["decisions"][day(v)] = _decision(v, v in (1, 10, 20, 30))
        _dir(store, v, index=v in (1, 10, 20, 30))
    for v in (1, 10, 20, 30):
        _switch(reg, registry.DEPLOYED, v)
    registry.save(store, reg)
    root, start = str(store.root), time.time() + 2.0
    targets = [20, 10, 1, 30, 20, 10, 1, 20]
    with SPAWN.Pool(3) as pool:
        jobs = [pool.apply_async(retention_workers.prune, (root, 3, "p", start)),
                pool.apply_async(retention_workers.rollbacks, (root, targets, start)),
                pool.apply_async(registry_workers.fake_training, (root, registry.FINE_TUNE, day(31), "ft", start))]
        pruned, switched, trained = (job.get(timeout=120) for job in jobs)
    assert switched == targets
    reg = registry.load(store)
    assert reg["champion"] == 20
    assert [h["to"] for h in reg["history"] if h["action"] == registry.ROLLBACK] == targets
    new = trained["version"]
    assert new == 31 and reg["versions"]["31"]["trained_on"] == day(31)
    records = [h for h in reg["history"] if h["action"] == registry.PRUNED]
    assert len(records) == 1 and records[0]["versions"] == next(p["pruned"] for p in pruned if p["pruned"])
    gone = set(records[0]["versions"])
    # kept: deployed 1, 10, 20, 30, the new version 31 and 29 (newest three either way); 28 is newest only if the
    # prune ran before 31 was registered
    assert {1, 10, 20, 29, 30, 31} <= _present(store)
    assert gone == set(range(1, 32)) - _present(store)
    assert set(range(2, 10)) | set(range(11, 20)) | set(range(21, 28)) <= gone <= set(range(2, 29)) - {10, 20}
