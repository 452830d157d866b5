"""recsys.registry: versions, decisions, the champion pointer and its history."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from recsys import registry
from recsys.registry import RegistryError

D1, D2, D3, D4 = date(2011, 1, 4), date(2011, 1, 5), date(2011, 1, 6), date(2011, 1, 7)


def _reg(**versions: str) -> dict:
    return {"champion": None, "versions": {k.lstrip("v"): {"trained_on": d} for k, d in versions.items()},
            "decisions": {}, "history": []}


def test_load_of_an_empty_store_is_an_empty_registry(store):
    assert registry.load(store) == {"champion": None, "versions": {}, "decisions": {}, "history": []}
    assert not store.exists("registry/two_tower.json")


def test_save_and_load_roundtrip(store):
    doc = _reg(v1="2011-01-04")
    registry.save(store, doc)
    assert registry.load(store) == doc


def test_version_for_date():
    reg = _reg(v1="2011-01-04", v2="2011-01-06", v5="2011-01-05")
    assert registry.version_for_date(reg, D3) == 2
    assert registry.version_for_date(reg, D2) == 5
    assert registry.version_for_date(reg, D4) is None


def test_parent_is_the_version_of_the_latest_earlier_date():
    # version numbers and dates disagree on purpose: the date decides
    reg = _reg(v1="2011-01-04", v2="2011-01-06", v5="2011-01-05")
    assert registry.parent_for_date(reg, D1) is None
    assert registry.parent_for_date(reg, D2) == 1
    assert registry.parent_for_date(reg, D3) == 5
    assert registry.parent_for_date(reg, D4) == 2


def test_next_version():
    assert registry.next_version(_reg()) == 1
    assert registry.next_version(_reg(v1="2011-01-04", v10="2011-01-05", v9="2011-01-06")) == 11


def test_add_version_records_history(store):
    registry.add_version(store, 1, {"trained_on": "2011-01-04", "user_rows": 3}, run_id="run-a")
    reg = registry.load(store)
    assert reg["versions"] == {"1": {"trained_on": "2011-01-04", "user_rows": 3}}
    assert len(reg["history"]) == 1
    entry = reg["history"][0]
    assert {k: entry[k] for k in ("action", "version", "date", "run_id")} == {
        "action": "trained", "version": 1, "date": "2011-01-04", "run_id": "run-a",
    }


def test_record_decision_replaces_the_decision_of_a_date(store):
    registry.add_version(store, 1, {"trained_on": "2011-01-04"}, None)
    registry.record_decision(store, D1, {"blessed": False, "candidate_version": 1, "reason": "too few"}, "r1")
    registry.record_decision(store, D1, {"blessed": True, "candidate_version": 1, "reason": "better"}, "r2")
    reg = registry.load(store)
    assert reg["decisions"] == {"2011-01-04": {"blessed": True, "candidate_version": 1, "reason": "better"}}
    assert [(h["action"], h.get("reason"), h["run_id"]) for h in reg["history"]] == [
        ("trained", None, None), ("rejected", "too few", "r1"), ("blessed", "better", "r2"),
    ]
    assert reg["champion"] is None  # a decision never moves the champion


def test_set_champion_of_an_unknown_version_raises(store):
    registry.add_version(store, 1, {"trained_on": "2011-01-04"}, None)
    with pytest.raises(RegistryError, match="version 7 is not in the registry") as info:
        registry.set_champion(store, 7, "deployed", "why", None)
    assert "['1']" in str(info.value)
    assert registry.load(store)["champion"] is None


def test_set_champion_switches_the_pointer_and_records_from_and_to(store):
    registry.add_version(store, 1, {"trained_on": "2011-01-04"}, None)
    registry.add_version(store, 2, {"trained_on": "2011-01-05"}, None)
    first = registry.set_champion(store, 1, "deployed", "first", "r1")
    second = registry.set_champion(store, 2, "deployed", "better", "r2")
    assert (first["from"], first["to"]) == (None, 1)
    assert (second["from"], second["to"], second["reason"], second["action"]) == (1, 2, "better", "deployed")
    reg = registry.load(store)
    assert reg["champion"] == 2
    assert reg["history"][-2:] == [first, second]


def test_now_is_utc_iso_seconds():
    stamp = registry.now()
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset().total_seconds() == 0
    assert parsed.microsecond == 0
    assert stamp.endswith("+00:00")


def _keys(typed_dict: type) -> set[str]:
    return set(typed_dict.__required_keys__) | set(typed_dict.__optional_keys__)  # type: ignore[attr-defined]


def test_every_write_stays_inside_the_declared_document_shape(store):
    """What every writer puts on disk uses only the keys of registry.Registry and its parts, and the history
    only the action constants (a new key or action must be declared there first)."""
    for version, day in ((1, D1), (2, D2)):
        assert registry.allocate_version(store, day, registry.FINE_TUNE, "r1") == version
        registry.add_version(store, version, {"version": version, "kind": registry.FINE_TUNE,
                                              "trained_on": day.isoformat()}, "r1")
    registry.allocate_version(store, D4, registry.FINE_TUNE, "r9")  # a training under way
    decision = {"date": D1.isoformat(), "candidate_version": 1, "champion_version": None,
                "candidate_metrics": {"recall@100": 0.5}, "champion_metrics": None, "eval_users": 3,
                "eval_examples": 4, "blessed": True, "reason": "no champion yet", "decided_at": registry.now()}
    registry.record_decision(store, D1, decision, "r1")
    registry.set_champion(store, 1, registry.DEPLOYED, "no champion yet", "r1")
    registry.record_decision(store, D2, decision | {"date": D2.isoformat(), "candidate_version": 2,
                                                    "blessed": False, "reason": "worse"}, "r2")
    registry.deploy_override(store, D2, registry.SKIP, "hold", "m1")
    registry.deploy_override(store, D2, registry.FORCE, "approved", "m2")
    registry.set_champion(store, 2, registry.DEPLOYED, "forced", "m2")
    registry.set_champion(store, 1, registry.ROLLBACK, "bad", "m3")
    assert registry.allocate_version(store, D2, registry.FULL_RETRAIN, "fr") == 4  # 3 is reserved (D4)
    registry.add_version(store, 4, {"version": 4, "kind": registry.FULL_RETRAIN, "trained_on": D2.isoformat(),
                                    "window_days": 2}, "fr")
    registry.record_retrain_decision(store, 4, decision | {"date": D2.isoformat(), "candidate_version": 4,
                                                           "kind": registry.FULL_RETRAIN, "window_days": 2}, "fr")
    registry.record_accepted_invalid(store, D3, "known promotion", ["expect_a"], "m4")
    registry.record_manual(store, registry.REVALIDATION_FORCED, None, "m5", date=D3.isoformat())

    doc = store.read_json("registry/two_tower.json")
    assert set(doc) == _keys(registry.Registry)
    assert all(set(v) <= _keys(registry.VersionEntry) for v in doc["versions"].values())
    assert all(set(d) <= _keys(registry.Decision) for d in doc["decisions"].values())
    assert set(doc["decisions"][D2.isoformat()]["forced"]) == _keys(registry.Forced)
    assert all(set(d) <= _keys(registry.RetrainDecision) for d in doc["retrains"].values())
    assert all(set(h) <= _keys(registry.HistoryEntry) for h in doc["history"])
    assert all(set(r) == _keys(registry.Reservation) for r in doc["reservations"].values())
    assert [h["action"] for h in doc["history"]] == [
        registry.TRAINED, registry.TRAINED, registry.BLESSED, registry.DEPLOYED, registry.REJECTED,
        registry.DEPLOY_SKIPPED, registry.DEPLOY_FORCED, registry.DEPLOYED, registry.ROLLBACK, registry.TRAINED,
        registry.BLESSED, registry.ACCEPTED_INVALID, registry.REVALIDATION_FORCED]
    assert registry.ON_CALL_ACTIONS == {registry.ROLLBACK, registry.DEPLOY_SKIPPED, registry.DEPLOY_FORCED,
                                        registry.REVALIDATION_FORCED, registry.ACCEPTED_INVALID}


def test_deploy_once_switches_only_a_version_never_deployed(store):
    registry.add_version(store, 1, {"trained_on": "2011-01-04"}, None)
    registry.add_version(store, 2, {"trained_on": "2011-01-05"}, None)
    first = registry.deploy_once(store, 1, "first", "r1")
    assert first is not None and (first["from"], first["to"]) == (None, 1)
    assert registry.deploy_once(store, 1, "a rerun", "r1") is None
    registry.deploy_once(store, 2, "better", "r2")
    registry.set_champion(store, 1, registry.ROLLBACK, "bad", "m")
    assert registry.deploy_once(store, 2, "a rerun of the date of 2", "r2") is None  # would undo the rollback
    reg = registry.load(store)
    assert reg["champion"] == 1
    assert [h["action"] for h in reg["history"]][-3:] == [registry.DEPLOYED, registry.DEPLOYED, registry.ROLLBACK]


def test_a_writer_waits_for_the_lock_and_says_who_holds_it(store, monkeypatch):
    from recsys.storage.lock import LockTimeout, StoreLock

    registry.add_version(store, 1, {"trained_on": "2011-01-04"}, None)
    before = registry.load(store)
    holder = StoreLock(store, registry.LOCK, run_id="someone-else", purpose="registry write")
    assert holder.try_acquire()
    monkeypatch.setattr(registry, "LOCK_TIMEOUT", 0.3)
    for write in (lambda: registry.set_champion(store, 1, registry.DEPLOYED, "x", "r"),
                  lambda: registry.save(store, registry.empty())):
        with pytest.raises(LockTimeout, match=r"held by run someone-else \(registry write; host"):
            write()
    assert registry.load(store) == before
    holder.release()
    registry.set_champion(store, 1, registry.DEPLOYED, "x", "r")
    assert registry.load(store)["champion"] == 1
