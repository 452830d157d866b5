"""recsys.serving.deploy: the deploy gate, the serving index, the champion switch and rollback."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest

from recsys import registry, schema
from recsys.config import Settings
from recsys.serving.deploy import (
    INDEX_FILE,
    DeployError,
    build_index,
    deploy,
    read_index_metadata,
    refresh_index,
    rollback,
)
from tests.faults import refresh_index_killed_before_index_json

D1, D2, D3 = date(2011, 1, 4), date(2011, 1, 5), date(2011, 1, 6)
USERS = [[0, 0], [1, 0], [0, 1]]  # OOV, u1, u2
ITEMS = [[0, 0], [1, 0], [0, 1], [0.5, 0.5]]  # OOV, A, B, C (vocab item D, row 4, came later)
# u1 = [1, 0]: A 1, B 0, C 0.5 ; u2 = [0, 1]: A 0, B 1, C 0.5


@pytest.fixture
def settings(store) -> Settings:
    return Settings(storage_root=str(store.root), k=2)


@pytest.fixture
def dstore(store, put_vocab, put_version):
    """Versions 1..3 trained on D1..D3, the catalog of each day (C delisted), no decisions yet."""
    put_vocab(store, "users", ["u1", "u2"])
    put_vocab(store, "items", ["A", "B", "C", "D"])
    catalog = pd.DataFrame(
        {
            schema.ITEM_ID: ["A", "B", "C", "D"],
            schema.TITLE: ["Lantern", "Heart", "Warmer", "Ornament"],
            schema.CATEGORY: [None] * 4,
            schema.PRICE: [3.39, 2.55, 1.85, 1.69],
            schema.AVAILABLE: [True, True, False, True],
        }
    ).astype(schema.CATALOG_DTYPES)
    for version, day in enumerate([D1, D2, D3], start=1):
        put_version(store, version, day, USERS, ITEMS)
        store.write_parquet(f"raw/catalog/dt={day.isoformat()}/part-00000.parquet", catalog)
        store.mark_success(f"raw/catalog/dt={day.isoformat()}")
    return store


def _decide(store, day: date, version: int, blessed: bool = True, reason: str = "better") -> None:
    registry.record_decision(store, day, {"blessed": blessed, "candidate_version": version, "reason": reason}, None)


def _prebuilt_index(store, version: int) -> None:
    """Pretend the export already ran, so deploy only switches the pointer (no TensorFlow)."""
    store.write_parquet(f"models/two_tower/versions/{version}/{INDEX_FILE}", pd.DataFrame({"row": [1]}))


def _deployed(store, settings, *days_and_versions) -> None:
    for day, version in days_and_versions:
        _decide(store, day, version)
        _prebuilt_index(store, version)
        deploy(store, settings, day)


@pytest.mark.parametrize("enabled", [True, False])
def test_a_deployment_the_gate_measured_behind_popularity_says_it_falls_back(dstore, enabled):
    from recsys.serving.popularity import PairedRecall, fallback_verdict

    verdict = fallback_verdict(PairedRecall.of(np.ones(10), np.zeros(10)), 10, True, "recall@2")
    why = "better; popularity is ahead of the candidate by 1.0000 (...): a deployment of it serves ..."
    registry.record_decision(dstore, D1, {"blessed": True, "candidate_version": 1, "reason": why,
                                          "popularity_fallback": verdict}, None)
    _prebuilt_index(dstore, 1)
    settings = Settings(storage_root=str(dstore.root), k=2, popularity_fallback=enabled)
    out = deploy(dstore, settings, D1)
    assert out.get("fallback") == ("popularity" if enabled else None)
    assert registry.load(dstore)["history"][-1]["reason"] == why  # on-call reads why in the registry history


def test_build_index_keeps_available_items_the_version_knows(dstore):
    index = build_index(dstore, 1, D1)
    # C is delisted; D has row 4, beyond version 1's 4-row item table
    assert list(index.columns) == ["item_id", "row", "title", "price"]
    assert [tuple(r) for r in index.itertuples(index=False)] == [("A", 1, "Lantern", 3.39), ("B", 2, "Heart", 2.55)]


def test_build_index_without_catalog_raises(dstore):
    with pytest.raises(DeployError, match="cannot build the serving index of version 1"):
        build_index(dstore, 1, date(2011, 2, 1))


def test_deploy_without_a_decision_raises(dstore, settings):
    with pytest.raises(DeployError, match="no evaluation decision for 2011-01-04: run the evaluate step first"):
        deploy(dstore, settings, D1)


def test_deploy_refuses_a_candidate_that_was_not_blessed(dstore, settings):
    _decide(dstore, D1, 1, blessed=False, reason="below the floor")
    with pytest.raises(DeployError, match="not blessed") as info:
        deploy(dstore, settings, D1)
    assert "below the floor" in str(info.value)
    assert "refusing to deploy" in str(info.value)
    reg = registry.load(dstore)
    assert reg["champion"] is None
    assert [h["action"] for h in reg["history"] if h["action"] == "deployed"] == []


def test_deploy_switches_the_champion_and_records_why(dstore, settings):
    _decide(dstore, D1, 1, reason="no champion yet")
    _prebuilt_index(dstore, 1)
    assert deploy(dstore, settings, D1, run_id="r1") == {"version": 1, "changed": True, "previous": None}
    reg = registry.load(dstore)
    assert reg["champion"] == 1
    last = reg["history"][-1]
    assert (last["action"], last["from"], last["to"], last["reason"], last["run_id"]) == (
        "deployed", None, 1, "no champion yet", "r1",
    )


def test_deploy_rerun_changes_nothing(dstore, settings):
    _deployed(dstore, settings, (D1, 1))
    history = registry.load(dstore)["history"]
    result = deploy(dstore, settings, D1)
    assert result["changed"] is False
    assert result["version"] == 1
    assert registry.load(dstore)["history"] == history


def test_deploy_rerun_after_a_rollback_does_not_undo_the_rollback(dstore, settings):
    _deployed(dstore, settings, (D1, 1), (D2, 2))
    rollback(dstore, "v2 is bad")
    result = deploy(dstore, settings, D2)
    assert result["changed"] is False
    assert registry.load(dstore)["champion"] == 1


@pytest.mark.parametrize("reason", ["", "   "])
def test_rollback_needs_a_reason(dstore, settings, reason):
    _deployed(dstore, settings, (D1, 1), (D2, 2))
    before = registry.load(dstore)
    with pytest.raises(DeployError, match="a rollback needs a reason"):
        rollback(dstore, reason)
    assert registry.load(dstore) == before


def test_rollback_returns_to_the_previous_champion_and_records_it(dstore, settings):
    _deployed(dstore, settings, (D1, 1), (D2, 2))
    result = rollback(dstore, "bad recommendations in prod", run_id="oncall")
    assert result == {"version": 1, "previous": 2, "changed": True, "index_catalog_date": "2011-01-06"}
    reg = registry.load(dstore)
    assert reg["champion"] == 1
    last = reg["history"][-1]
    assert (last["action"], last["from"], last["to"], last["reason"], last["run_id"]) == (
        "rollback", 2, 1, "bad recommendations in prod", "oncall",
    )
    assert datetime.fromisoformat(last["at"]).tzinfo is not None  # when, in UTC


def test_rollback_without_a_previous_champion_raises(dstore, settings):
    _deployed(dstore, settings, (D1, 1))
    with pytest.raises(DeployError, match="champion 1 has no earlier deployed version"):
        rollback(dstore, "why not")
    assert registry.load(dstore)["champion"] == 1


def test_repeated_rollbacks_walk_back_in_deploy_order(dstore, settings):
    _deployed(dstore, settings, (D1, 1), (D2, 2), (D3, 3))
    assert rollback(dstore, "3 is bad")["version"] == 2
    assert rollback(dstore, "2 is bad too")["version"] == 1  # not back to 3
    with pytest.raises(DeployError, match="champion 1 has no earlier deployed version"):
        rollback(dstore, "nothing before 1")
    assert registry.load(dstore)["champion"] == 1


def test_rollback_to_an_explicit_deployed_version(dstore, settings):
    _deployed(dstore, settings, (D1, 1), (D2, 2), (D3, 3))
    assert rollback(dstore, "go back two", to=1) == {
        "version": 1, "previous": 3, "changed": True, "index_catalog_date": "2011-01-06",
    }
    assert registry.load(dstore)["champion"] == 1


def test_rollback_to_a_version_never_deployed_raises(dstore, settings):
    _deployed(dstore, settings, (D1, 1), (D3, 3))
    with pytest.raises(DeployError, match="version 2 was never deployed"):
        rollback(dstore, "try 2", to=2)
    assert registry.load(dstore)["champion"] == 3


def _catalog(store, day: date, available: list[bool]) -> None:
    frame = pd.DataFrame(
        {
            schema.ITEM_ID: ["A", "B", "C", "D"],
            schema.TITLE: ["Lantern", "Heart", "Warmer", "Ornament"],
            schema.CATEGORY: [None] * 4,
            schema.PRICE: [3.39, 2.55, 1.85, 1.69],
            schema.AVAILABLE: available,
        }
    ).astype(schema.CATALOG_DTYPES)
    store.write_parquet(f"raw/catalog/dt={day.isoformat()}/part-00000.parquet", frame)
    store.mark_success(f"raw/catalog/dt={day.isoformat()}")


def _served(store, version: int) -> list[str]:
    return list(store.read_parquet(f"models/two_tower/versions/{version}/{INDEX_FILE}")["item_id"])


def test_refresh_index_applies_the_newest_catalog_delisting_and_relisting(dstore, settings):
    _deployed(dstore, settings, (D1, 1))
    D4, D5 = date(2011, 1, 7), date(2011, 1, 8)
    _catalog(dstore, D4, [False, True, True, True])  # A delisted, C relisted
    result = refresh_index(dstore, run_id="r4")
    assert result == {"version": 1, "catalog_date": "2011-01-07", "items": 2, "changed": True,
                      "delisted": [], "relisted": ["B", "C"]}  # the prebuilt index held only row 1 (no ids)
    assert _served(dstore, 1) == ["B", "C"]
    meta = read_index_metadata(dstore, 1)
    assert (meta["catalog_date"], meta["items"], meta["run_id"]) == ("2011-01-07", 2, "r4")
    _catalog(dstore, D5, [True, True, True, True])  # A relisted
    again = refresh_index(dstore)
    assert (again["delisted"], again["relisted"], _served(dstore, 1)) == ([], ["A"], ["A", "B", "C"])


def test_refresh_index_is_idempotent(dstore, settings):
    _deployed(dstore, settings, (D1, 1))
    first = refresh_index(dstore)
    sha = read_index_metadata(dstore, 1)["sha256"]
    second = refresh_index(dstore)
    assert (first["changed"], second["changed"]) == (True, False)
    assert read_index_metadata(dstore, 1)["sha256"] == sha


def test_an_incomplete_catalog_partition_is_not_applied(dstore, settings):
    _deployed(dstore, settings, (D1, 1))
    refresh_index(dstore)
    dstore.write_parquet("raw/catalog/dt=2011-01-09/part-00000.parquet", pd.DataFrame({"item_id": ["A"]}))
    assert refresh_index(dstore)["catalog_date"] == "2011-01-06"  # no _SUCCESS yet


def test_refresh_index_without_champion_or_deployed_version_raises(dstore, settings):
    with pytest.raises(DeployError, match="no champion is deployed yet"):
        refresh_index(dstore)
    _deployed(dstore, settings, (D1, 1))
    with pytest.raises(DeployError, match="version 2 was never deployed"):
        refresh_index(dstore, 2)


def test_rollback_applies_a_delisting_processed_after_the_target_was_deployed(dstore, settings):
    _deployed(dstore, settings, (D1, 1), (D2, 2))
    refresh_index(dstore, 1)
    assert _served(dstore, 1) == ["A", "B"]
    _catalog(dstore, date(2011, 1, 7), [True, False, False, True])  # B delisted while 2 served
    refresh_index(dstore)  # the DAG applies it to the champion
    assert _served(dstore, 2) == ["A"]
    result = rollback(dstore, "2 is bad")
    assert result["index_catalog_date"] == "2011-01-07"
    assert _served(dstore, 1) == ["A"]  # B stays out after the rollback


@pytest.mark.slow
def test_deploy_exports_a_saved_model_and_the_index(dstore, settings):
    import tensorflow as tf

    _decide(dstore, D1, 1)
    assert deploy(dstore, settings, D1) == {"version": 1, "changed": True, "previous": None}
    vdir = "models/two_tower/versions/1"
    assert {"saved_model.pb", "variables", INDEX_FILE, "tables.npz", "metadata.json"} <= set(dstore.list_dir(vdir))
    index = dstore.read_parquet(f"{vdir}/{INDEX_FILE}")
    assert list(index["item_id"]) == ["A", "B"]
    serve = tf.saved_model.load(str(dstore.root / vdir)).signatures["serving_default"]
    out = serve(user_id=tf.constant(["u1", "u2", "stranger"]))
    assert out["item_ids"].shape == (3, 2)  # k = 2
    assert out["item_ids"].numpy()[0][0].decode() == "A"
    assert out["item_ids"].numpy()[1][0].decode() == "B"
    assert out["scores"].numpy()[:2, 0].tolist() == [1.0, 1.0]
    assert out["scores"].numpy()[2].tolist() == [0.0, 0.0]  # OOV user row is [0, 0]
    assert registry.load(dstore)["champion"] == 1


@pytest.mark.slow
def test_the_saved_model_never_serves_a_delisted_item(dstore, settings):
    import tensorflow as tf

    _decide(dstore, D1, 1)
    deploy(dstore, settings, D1)
    serve = tf.saved_model.load(str(dstore.root / "models/two_tower/versions/1")).signatures["serving_default"]
    served = {x.decode() for x in serve(user_id=tf.constant(["u1", "u2"]))["item_ids"].numpy().ravel()}
    assert "C" not in served  # C is delisted in the catalog of D1; it is each user's second best


# --- a catalog the index cannot be built from (issue 18 #3) ---------------------------------------------
def _bad_catalog(store, day: date, kind: str) -> None:
    frame = pd.DataFrame({schema.ITEM_ID: ["A", "B", "C", "D"],
                          schema.TITLE: ["Lantern", "Heart", "Warmer", "Ornament"],
                          schema.PRICE: [3.39, 2.55, 1.85, 1.69]})
    if kind == "blank availability":
        frame[schema.AVAILABLE] = pd.array([True, None, True, True], dtype="boolean")
    elif kind == "availability as text":
        frame[schema.AVAILABLE] = ["yes", "no", "yes", "yes"]
    elif kind == "no availability column":
        pass
    frame = frame.astype({schema.ITEM_ID: "string", schema.TITLE: "string"})
    store.write_parquet(f"raw/catalog/dt={day.isoformat()}/part-00000.parquet", frame)
    store.mark_success(f"raw/catalog/dt={day.isoformat()}")


BAD_CATALOGS = ["blank availability", "availability as text", "no availability column"]


@pytest.mark.parametrize("kind", BAD_CATALOGS)
def test_a_catalog_the_index_cannot_use_is_a_deploy_error_naming_the_problem(dstore, settings, kind):
    _bad_catalog(dstore, date(2011, 1, 7), kind)
    with pytest.raises(DeployError, match="from the catalog of 2011-01-07") as info:
        build_index(dstore, 1, date(2011, 1, 7))
    assert "redeliver the catalog snapshot" in str(info.value)
    if kind == "blank availability":
        assert "available must be true or false for every item, but it is blank for 1 items (e.g. 'B')" in str(
            info.value)


@pytest.mark.parametrize("kind", [*BAD_CATALOGS, "unreadable file"])
def test_a_bad_catalog_never_blocks_a_rollback(dstore, settings, kind):
    _deployed(dstore, settings, (D1, 1), (D2, 2))
    day = date(2011, 1, 7)
    if kind == "unreadable file":
        dstore.write_bytes(f"raw/catalog/dt={day.isoformat()}/part-00000.parquet", b"PAR1 not really")
        dstore.mark_success(f"raw/catalog/dt={day.isoformat()}")
    else:
        _bad_catalog(dstore, day, kind)
    result = rollback(dstore, "2 is bad", run_id="oncall")
    assert (result["version"], result["previous"], result["changed"]) == (1, 2, True)
    assert result["index_error"].startswith("the serving index of version 1 was not rebuilt, it keeps its old one")
    assert registry.load(dstore)["champion"] == 1  # the pointer switch happened
    # the prebuilt index is untouched (it holds only row 1)
    assert list(dstore.read_parquet(f"models/two_tower/versions/1/{INDEX_FILE}").columns) == ["row"]


# --- publishing the index and its description as one unit (issue 18 #5) -----------------------------------
def test_a_crash_between_index_parquet_and_index_json_is_repaired_by_a_rerun(dstore, settings, monkeypatch):
    import hashlib

    from recsys.serving.deploy import INDEX_META_FILE

    _deployed(dstore, settings, (D1, 1))
    refresh_index(dstore)
    _catalog(dstore, date(2011, 1, 7), [False, True, True, True])  # A delisted
    refresh_index_killed_before_index_json(dstore, monkeypatch)
    vdir = "models/two_tower/versions/1"
    parquet_sha = hashlib.sha256(dstore.read_bytes(f"{vdir}/{INDEX_FILE}")).hexdigest()
    assert dstore.read_json(f"{vdir}/{INDEX_META_FILE}")["sha256"] != parquet_sha  # stale after the crash
    # the parquet describes itself: readers see the catalog it was built from, not the stale json
    meta = read_index_metadata(dstore, 1)
    assert (meta["catalog_date"], meta["items"], meta["sha256"]) == ("2011-01-07", 2, parquet_sha)
    again = refresh_index(dstore)  # the rerun
    assert (again["catalog_date"], again["changed"], _served(dstore, 1)) == ("2011-01-07", False, ["B", "C"])
    on_disk = dstore.read_json(f"{vdir}/{INDEX_META_FILE}")
    assert (on_disk["sha256"], on_disk["catalog_date"]) == (parquet_sha, "2011-01-07")
    assert refresh_index(dstore, only_if_newer=True)["changed"] is False


def test_a_stale_index_json_is_repaired_even_by_a_rollback_refresh(dstore, settings):
    from recsys.serving.deploy import INDEX_META_FILE

    _deployed(dstore, settings, (D1, 1), (D2, 2))
    refresh_index(dstore, 1)
    vdir = "models/two_tower/versions/1"
    stale = {**dstore.read_json(f"{vdir}/{INDEX_META_FILE}"), "sha256": "0" * 64}
    dstore.write_json(f"{vdir}/{INDEX_META_FILE}", stale)
    rollback(dstore, "2 is bad")  # only_if_newer: the catalog is not newer, but the json is stale
    assert dstore.read_json(f"{vdir}/{INDEX_META_FILE}")["sha256"] == read_index_metadata(dstore, 1)["sha256"]
