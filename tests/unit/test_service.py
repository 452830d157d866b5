"""recsys.serving.service and model_holder: the HTTP API over a tiny store with hand-computed answers."""

from __future__ import annotations

import io
import json
import os
import time
from datetime import date

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from recsys import registry, schema
from recsys.features import history
from recsys.serving.deploy import INDEX_FILE, INDEX_META_FILE, build_index, index_metadata, refresh_index, rollback
from recsys.serving.model_holder import ModelHolder
from recsys.serving.service import create_app
from tests.faults import refresh_index_killed_before_index_json

D1, D2 = date(2011, 1, 4), date(2011, 1, 5)
IDS = ["A", "B", "C", "D"]
TITLES = ["Lantern", "Heart", "Warmer", "Ornament"]
USERS = [[0, 0], [1, 0], [0, 1]]  # OOV, u1, u2 (u3 is in the vocabulary but newer than both versions)
V1_ITEMS = [[0, 0], [3, 0], [0, 2], [1, 0.5], [2, 1.5]]  # OOV, A, B, C, D
# v1  u1: A 3, B 0, C 1, D 2      -> A, D, C, B
#     u2: A 0, B 2, C 0.5, D 1.5  -> B, D, C, A
# v1 cosine: A [1, 0], B [0, 1], C [.894, .447], D [.8, .6]
#     similar(A): C .894, D .8, B 0 ; similar(B): D .6, C .447, A 0
V2_ITEMS = [[0, 0], [0, 3], [2, 0], [0.5, 1], [1.5, 2]]
# v2  u1: A 0, B 2, C 0.5, D 1.5  -> B, D, C, A
#     u2: A 3, B 0, C 1, D 2      -> A, D, C, B
PURCHASES = [("u1", "A"), ("u2", "B"), ("u2", "D"), ("x1", "D"), ("x1", "B"), ("x2", "D")]
# buyers: D 3, B 2, A 1, C 0 -> popular order D, B, A, C


def _catalog(store, day: date, available: list[bool]) -> None:
    frame = pd.DataFrame(
        {schema.ITEM_ID: IDS, schema.TITLE: TITLES, schema.CATEGORY: [None] * 4,
         schema.PRICE: [3.39, 2.55, 1.85, 1.69], schema.AVAILABLE: available}
    ).astype(schema.CATALOG_DTYPES)
    store.write_parquet(f"raw/catalog/dt={day.isoformat()}/part-00000.parquet", frame)
    store.mark_success(f"raw/catalog/dt={day.isoformat()}")


def _deploy_index(store, version: int, day: date) -> None:
    """What deploy writes next to a version, without the TensorFlow export."""
    index = build_index(store, version, day)
    buf = io.BytesIO()
    index.to_parquet(buf, index=False)
    data = buf.getvalue()
    store.write_bytes(f"models/two_tower/versions/{version}/{INDEX_FILE}", data)
    store.write_json(f"models/two_tower/versions/{version}/{INDEX_META_FILE}", index_metadata(data, index, day, None))


@pytest.fixture
def sstore(store, put_vocab, put_version):
    """Versions 1 and 2 deployed (1 then 2, then rolled back to 1: champion 1), purchases of D1."""
    put_vocab(store, "users", ["u1", "u2", "u3"])
    put_vocab(store, "items", IDS)
    put_version(store, 1, D1, USERS, V1_ITEMS)
    put_version(store, 2, D2, USERS, V2_ITEMS)
    _catalog(store, D1, [True] * 4)
    examples = pd.DataFrame({schema.USER_ID: [u for u, _ in PURCHASES], schema.ITEM_ID: [i for _, i in PURCHASES],
                             schema.USER_ROW: 0, schema.ITEM_ROW: 0, schema.SPLIT: "train"})
    store.write_parquet("features/dt=2011-01-04/examples.parquet", examples)
    # what build_features writes with them: the customers' recent items, which serving reads
    store.write_parquet("features/dt=2011-01-04/history.parquet", history.update(history.empty(), examples, D1, 200))
    store.mark_success("features/dt=2011-01-04")
    for version in (1, 2):
        _deploy_index(store, version, D1)
        registry.set_champion(store, version, "deployed", "test", None)
    registry.set_champion(store, 1, "rollback", "test", None)
    return store


@pytest.fixture
def client(sstore):
    app = create_app(sstore, watch=False, retry_seconds=0.0)
    assert app.state.holder.poll() is True
    return TestClient(app)


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [x["item_id"] for x in response.json()["items"]]


def _switch(store, version: int) -> None:
    registry.set_champion(store, version, "deployed", "test switch", None)


def test_recommendations_for_known_users(client):
    body = client.get("/recommendations/u1", params={"k": 3}).json()
    assert body == {
        "user_id": "u1", "version": 1, "known_user": True, "fallback": None, "exclude_purchased": False,
        "items": [{"item_id": "A", "title": "Lantern", "score": 3.0},
                  {"item_id": "D", "title": "Ornament", "score": 2.0},
                  {"item_id": "C", "title": "Warmer", "score": 1.0}],
    }
    assert _ids(client.get("/recommendations/u2", params={"k": 10})) == ["B", "D", "C", "A"]


def test_default_k_is_ten_and_is_capped_by_the_catalog(client):
    assert _ids(client.get("/recommendations/u1")) == ["A", "D", "C", "B"]


def test_exclude_purchased_drops_what_the_user_bought(client):
    assert _ids(client.get("/recommendations/u1", params={"exclude_purchased": "true"})) == ["D", "C", "B"]
    assert _ids(client.get("/recommendations/u2", params={"exclude_purchased": True, "k": 1})) == ["C"]


def test_unknown_user_gets_popular_items_with_a_fallback_field(client):
    body = client.get("/recommendations/stranger", params={"k": 3}).json()
    assert (body["known_user"], body["fallback"], body["version"]) == (False, "popular", 1)
    assert [(x["item_id"], x["score"]) for x in body["items"]] == [("D", 3.0), ("B", 2.0), ("A", 1.0)]


def test_a_user_newer_than_the_version_gets_the_fallback(client):
    body = client.get("/recommendations/u3").json()  # in the vocabulary, beyond the version's user table
    assert (body["known_user"], body["fallback"]) == (False, "popular")
    assert _ids(client.get("/recommendations/u3")) == ["D", "B", "A", "C"]


def test_fallback_excludes_purchases_of_users_the_model_does_not_know(client):
    assert _ids(client.get("/recommendations/x1", params={"exclude_purchased": True})) == ["A", "C"]


def test_similar_items_by_cosine_without_the_item_itself(client):
    body = client.get("/items/A/similar", params={"k": 2}).json()
    assert (body["item_id"], body["title"], body["version"]) == ("A", "Lantern", 1)
    assert [x["item_id"] for x in body["items"]] == ["C", "D"]
    assert body["items"][0]["score"] == pytest.approx(1 / 1.25**0.5)
    assert _ids(client.get("/items/B/similar")) == ["D", "C", "A"]


def test_similar_to_an_unknown_item_is_404(client):
    response = client.get("/items/NOPE/similar")
    assert response.status_code == 404
    assert response.json()["detail"] == "item 'NOPE' is not known to model version 1"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/recommendations/u1?k=0", "k: Input should be greater than or equal to 1"),
        ("/recommendations/u1?k=1001", "k: Input should be less than or equal to 1000"),
        ("/recommendations/u1?k=" + "9" * 40, "k: Input should be less than or equal to 1000"),
        ("/recommendations/u1?k=ten", "k: Input should be a valid integer"),
        ("/recommendations/u1?exclude_purchased=maybe", "exclude_purchased: Input should be a valid boolean"),
        ("/items/A/similar?k=-5", "k: Input should be greater than or equal to 1"),
        ("/recommendations/" + "u" * 65, "user_id: String should have at most 64 characters"),
        ("/items/" + "i" * 65 + "/similar", "item_id: String should have at most 64 characters"),
        ("/recommendations/u%001", "user_id: not a valid id (1..64 characters of the Basic Multilingual Plane "
                                   "without control, format or separator characters (but inner spaces), "
                                   "without '/', and not only dots), "
                                   "got 'u\\x001'"),
        ("/recommendations/u%0A1", "user_id: not a valid id"),
        ("/recommendations/%20u1", "user_id: not a valid id"),
        ("/recommendations/u%E2%80%AE1", "user_id: not a valid id"),
        ("/items/A%1B/similar", "item_id: not a valid id"),
    ],
)
def test_bad_input_is_a_422_with_a_clear_message(client, url, message):
    response = client.get(url)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_a_64_character_id_is_accepted(client):
    body = client.get("/recommendations/" + "u" * 64).json()
    assert body["fallback"] == "popular"


def test_no_champion_means_not_ready_and_503(store):
    app = create_app(store, watch=False)
    app.state.holder.poll()
    client = TestClient(app)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["ready"] is False
    response = client.get("/recommendations/u1")
    assert response.status_code == 503
    assert "no champion is deployed yet" in response.json()["detail"]
    assert client.get("/healthz").json() == {"status": "ok"}
    assert "recsys_model_version -1" in client.get("/metrics").text


def test_health_readiness_and_version(client):
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz").json()
    assert (ready["ready"], ready["champion"], ready["load_error"], ready["serving"]["version"]) == (True, 1, None, 1)
    version = client.get("/version").json()
    assert (version["version"], version["items"], version["catalog_date"]) == (1, 4, "2011-01-04")


def test_a_new_champion_is_served_after_a_poll_and_rollback_restores_the_old_answers(client, sstore):
    holder = client.app.state.holder
    before = client.get("/recommendations/u1").json()
    _switch(sstore, 2)
    assert holder.poll() is True
    after = client.get("/recommendations/u1").json()
    assert (after["version"], _ids(client.get("/recommendations/u1"))) == (2, ["B", "D", "C", "A"])
    rollback(sstore, "v2 recommends badly", run_id="oncall")
    assert holder.poll() is True
    assert client.get("/recommendations/u1").json() == before
    last = registry.load(sstore)["history"][-1]
    assert (last["action"], last["from"], last["to"], last["run_id"]) == ("rollback", 2, 1, "oncall")


def test_a_poll_without_change_keeps_the_loaded_object(client):
    holder = client.app.state.holder
    loaded = holder.current
    assert holder.poll() is False
    assert holder.current is loaded


def test_an_in_flight_request_finishes_on_the_version_it_started_with(client, sstore):
    holder = client.app.state.holder
    old = holder.current  # what a request took at its start
    _switch(sstore, 2)
    holder.poll()
    assert holder.current.version == 2
    assert old.recommend("u1", 2, False).item_ids == ["A", "D"]  # unchanged by the swap
    assert old.version == 1


def test_a_version_that_fails_to_load_keeps_the_old_one_serving(client, sstore):
    holder = client.app.state.holder
    good = sstore.read_bytes("models/two_tower/versions/2/tables.npz")
    sstore.write_bytes("models/two_tower/versions/2/tables.npz", b"not an npz file")
    _switch(sstore, 2)
    assert holder.poll() is False
    assert client.get("/recommendations/u1").json()["version"] == 1
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert (body["champion"], body["serving"]["version"], body["load_error"]["version"]) == (2, 1, 2)
    assert body["load_error"]["error"].startswith("cannot load version 2 from file://")
    metrics = client.get("/metrics").text
    assert "recsys_model_load_failing 1" in metrics
    assert 'recsys_model_load_failure_info{version="2"} 1' in metrics
    assert 'recsys_model_loads_total{result="failure"} 1' in metrics
    assert "recsys_model_version 1" in metrics
    sstore.write_bytes("models/two_tower/versions/2/tables.npz", good)  # repaired: the retry loads it
    assert holder.poll() is True
    assert client.get("/version").json()["version"] == 2
    assert "recsys_model_load_failing 0" in client.get("/metrics").text


def test_a_failed_version_is_retried_only_after_the_retry_interval(sstore):
    holder = ModelHolder(sstore, retry_seconds=3600)
    holder.poll()
    sstore.write_bytes("models/two_tower/versions/2/index.parquet", b"garbage")
    _switch(sstore, 2)
    assert holder.poll() is False
    assert holder.poll() is False
    assert (holder.loads["failure"], holder.failure.attempts) == (1, 1)


def test_a_delisted_item_is_never_recommended_and_relisting_brings_it_back(client, sstore):
    holder = client.app.state.holder
    _catalog(sstore, D2, [False, True, True, True])  # A delisted
    assert refresh_index(sstore)["delisted"] == ["A"]
    assert holder.poll() is True  # same version, new index
    assert _ids(client.get("/recommendations/u1")) == ["D", "C", "B"]
    assert "A" not in _ids(client.get("/recommendations/stranger"))
    assert "A" not in _ids(client.get("/items/B/similar"))
    assert _ids(client.get("/items/A/similar"))[:1] == ["C"]  # a delisted item may still be asked about
    assert client.get("/version").json()["catalog_date"] == "2011-01-05"
    _catalog(sstore, date(2011, 1, 6), [True] * 4)
    assert refresh_index(sstore)["relisted"] == ["A"]
    assert holder.poll() is True
    assert _ids(client.get("/recommendations/u1")) == ["A", "D", "C", "B"]


def test_metrics_count_requests_by_route_and_status(client):
    client.get("/recommendations/u1")
    client.get("/recommendations/u1?k=0")
    client.get("/items/NOPE/similar")
    text = client.get("/metrics").text
    assert 'recsys_requests_total{method="GET",route="/recommendations/{user_id}",status="200"} 1' in text
    assert 'recsys_requests_total{method="GET",route="/recommendations/{user_id}",status="422"} 1' in text
    assert 'recsys_requests_total{method="GET",route="/items/{item_id}/similar",status="404"} 1' in text
    assert 'recsys_request_duration_seconds_count{route="/recommendations/{user_id}"} 2' in text
    assert "recsys_model_version 1" in text
    assert "recsys_index_items 4" in text


def test_the_openapi_schema_documents_the_endpoints(client):
    schema_doc = client.get("/openapi.json").json()
    assert {"/recommendations/{user_id}", "/items/{item_id}/similar", "/healthz", "/readyz", "/version",
            "/metrics"} <= set(schema_doc["paths"])
    params = {p["name"]: p for p in schema_doc["paths"]["/recommendations/{user_id}"]["get"]["parameters"]}
    assert (params["k"]["schema"]["minimum"], params["k"]["schema"]["maximum"]) == (1, 1000)
    assert params["user_id"]["schema"]["maxLength"] == 64


def test_the_watcher_thread_picks_up_a_switch(sstore):
    app = create_app(sstore, poll_seconds=0.05)
    with TestClient(app) as client:  # the lifespan starts the watcher
        deadline = time.monotonic() + 10
        while client.app.state.holder.current is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.get("/version").json()["version"] == 1
        _switch(sstore, 2)
        while client.get("/version").json()["version"] != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.get("/version").json()["version"] == 2
    assert client.app.state.holder._thread is None  # stopped with the app


# --- the command line: recsys refresh-index, recsys serve -------------------------------------------
def test_cli_refresh_index_prints_what_changed(sstore, monkeypatch, capsys):
    from recsys.cli import main

    monkeypatch.setenv("RECSYS_STORAGE_ROOT", str(sstore.root))
    _catalog(sstore, D2, [True, False, True, True])  # B delisted
    assert main(["refresh-index"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["version"], out["catalog_date"], out["delisted"], out["items"]) == (1, "2011-01-05", ["B"], 3)
    assert main(["refresh-index", "--version", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 2


def test_cli_refresh_index_without_champion_exits_2(store, monkeypatch, capsys):
    from recsys.cli import main

    monkeypatch.setenv("RECSYS_STORAGE_ROOT", str(store.root))
    assert main(["refresh-index"]) == 2
    assert "recsys refresh-index: no champion is deployed yet" in capsys.readouterr().err


def test_cli_serve_runs_uvicorn_with_the_app(sstore, monkeypatch):
    import uvicorn
    from fastapi import FastAPI

    from recsys.cli import main

    calls = []
    monkeypatch.setenv("RECSYS_STORAGE_ROOT", str(sstore.root))
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"})
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    assert main(["serve", "--port", "8123", "--poll-seconds", "0.5"]) == 0
    (app, kw), = calls
    assert isinstance(app, FastAPI)
    assert (kw["host"], kw["port"], app.state.holder.poll_seconds) == ("127.0.0.1", 8123, 0.5)
    from recsys.serving.bounded_http import server_options

    assert kw["http"].__name__ == server_options()["http"].__name__ == "BoundedHttpToolsProtocol"  # bounded heads
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"


def test_cli_serve_accepts_the_ids_validation_accepts(sstore, monkeypatch):
    """RECSYS_VALIDATION_MAX_ID_LENGTH lets longer ids into training: the service must serve them too."""
    import uvicorn

    from recsys.cli import main

    calls = []
    monkeypatch.setenv("RECSYS_STORAGE_ROOT", str(sstore.root))
    monkeypatch.setenv("RECSYS_VALIDATION_MAX_ID_LENGTH", "80")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(app))
    assert main(["serve"]) == 0
    (app,) = calls
    app.state.holder.poll()
    client = TestClient(app)
    assert client.get("/recommendations/" + "u" * 80).status_code == 200
    assert client.get("/recommendations/" + "u" * 81).status_code == 422
    params = {p["name"]: p for p in client.get("/openapi.json").json()["paths"]["/recommendations/{user_id}"]["get"][
        "parameters"]}
    assert params["user_id"]["schema"]["maxLength"] == 80


@pytest.mark.parametrize("bad", ["0", "-1", "soon"])
def test_cli_serve_rejects_a_bad_poll_interval(bad, capsys):
    from recsys.cli import main

    with pytest.raises(SystemExit) as info:
        main(["serve", "--poll-seconds", bad])
    assert info.value.code == 2
    assert "--poll-seconds" in capsys.readouterr().err


# --- approximate search (HNSW) for large catalogs ----------------------------------------------------
def test_hnsw_search_gives_the_exact_answers_on_a_tiny_catalog(sstore):
    import faiss  # noqa: F401 - pinned (requirements.txt): a missing faiss fails this test, never skips it
    app = create_app(sstore, watch=False, ann_min_items=1)  # every catalog counts as large
    app.state.holder.poll()
    client = TestClient(app)
    assert client.get("/version").json()["search"] == "hnsw(ef_search=1024)"
    assert _ids(client.get("/recommendations/u1")) == ["A", "D", "C", "B"]
    assert _ids(client.get("/recommendations/u2", params={"k": 2})) == ["B", "D"]
    assert _ids(client.get("/recommendations/u1", params={"exclude_purchased": True, "k": 2})) == ["D", "C"]
    assert client.get("/recommendations/u1").json()["items"][0]["score"] == pytest.approx(3.0)


def test_small_catalogs_and_missing_faiss_stay_exact(sstore, monkeypatch):
    import sys

    holder = ModelHolder(sstore, ann_min_items=5)  # 4 items < 5
    holder.poll()
    assert holder.current.ann is None and holder.current.describe()["search"] == "exact"
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError
    holder = ModelHolder(sstore, ann_min_items=1)
    holder.poll()
    assert holder.current.ann is None
    assert holder.current.recommend("u1", 2).item_ids == ["A", "D"]


def test_an_interrupted_index_publish_is_served_once_and_never_thrashes(client, sstore, monkeypatch, caplog):
    """A crash between index.parquet and index.json (issue 18 #5): a running service keeps its version, a
    started one serves the published parquet, each swaps once and warns once, and a rerun of refresh-index
    makes the two files agree again."""
    import hashlib
    import logging

    holder = client.app.state.holder
    _catalog(sstore, D2, [False, True, True, True])  # A delisted
    refresh_index_killed_before_index_json(sstore, monkeypatch)
    assert [holder.poll() for _ in range(3)] == [False] * 3  # the running service keeps its consistent version
    fresh = ModelHolder(sstore, retry_seconds=0.0)  # a service (re)started after the crash
    with caplog.at_level(logging.WARNING, logger="recsys.serving.model_holder"):
        polls = [fresh.poll() for _ in range(6)]
    assert polls == [True] + [False] * 5 and fresh.swaps == 1  # loaded once, no reload on every poll
    assert len([r for r in caplog.records if "does not describe" in r.getMessage()]) == 1
    assert "A" not in fresh.current.recommend("u1", 10).item_ids  # the parquet that was published
    assert fresh.current.describe()["catalog_date"] == "2011-01-05"  # described by the parquet itself
    refresh_index(sstore)  # the rerun repairs index.json
    vdir = "models/two_tower/versions/1"
    assert sstore.read_json(f"{vdir}/{INDEX_META_FILE}")["sha256"] == hashlib.sha256(
        sstore.read_bytes(f"{vdir}/{INDEX_FILE}")).hexdigest()
    assert [holder.poll() for _ in range(3)] == [True, False, False]
    assert [fresh.poll() for _ in range(3)] == [False] * 3  # it already serves those bytes
    assert _ids(client.get("/recommendations/u1")) == ["D", "C", "B"]


# --- the service against its own OpenAPI schema (issue 18 #15) ----------------------------------------
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_the_service_conforms_to_its_openapi_schema(sstore, mode):
    """schemathesis, in-process (ASGI), every endpoint: answers (their status, content type and body) match
    the published schema, input the schema allows is served, input it forbids is refused with the
    documented 422 body. Bounded (derandomized, 25 examples per mode) to run in CI in seconds."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.generation.modes import GenerationMode

    app = create_app(sstore, watch=False)
    assert app.state.holder.poll() is True
    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    calls = []

    @given(case=api.as_strategy(generation_mode=GenerationMode(mode)))
    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def check(case):
        calls.append(case.call_and_validate())

    check()
    assert len(calls) >= 15


# --- the popularity fallback (recsys.serving.popularity) -------------------------------------------------------

# purchases of the week before the serving day (D1 + 1), with item rows: C 3, A 2, B 1, D none -> C, A, B, D
WEEK = [("x1", "C", 3), ("x2", "C", 3), ("x3", "C", 3), ("x1", "A", 1), ("x2", "A", 1), ("x3", "B", 2)]


def _popularity_verdict(store, version: int, fallback: bool) -> None:
    """A week of purchases before the serving day, and the gate decision of ``version`` (trained on D1) with a
    popularity verdict: ahead by 1.0 (standard error 0) on 10 users, or behind."""
    from recsys.serving.popularity import PairedRecall, fallback_verdict

    week = pd.DataFrame({schema.USER_ID: [u for u, _, _ in WEEK], schema.ITEM_ID: [i for _, i, _ in WEEK],
                         schema.USER_ROW: 0, schema.ITEM_ROW: [r for _, _, r in WEEK], schema.SPLIT: "train"})
    store.write_parquet("features/dt=2011-01-02/examples.parquet", week)
    store.mark_success("features/dt=2011-01-02")
    ahead, behind = PairedRecall.of(np.ones(10), np.zeros(10)), PairedRecall.of(np.zeros(10), np.ones(10))
    registry.record_decision(store, D1, {
        "date": D1.isoformat(), "candidate_version": version, "champion_version": None, "blessed": True,
        "reason": "test",
        "popularity_fallback": fallback_verdict(ahead if fallback else behind, 10, True, "recall@100"),
    }, None)


def test_a_version_the_gate_measured_behind_popularity_serves_popularity_s_ranking(sstore):
    from recsys.evaluation import popularity_ranking

    _popularity_verdict(sstore, 1, fallback=True)
    client = TestClient(create_app(sstore, watch=False))
    client.app.state.holder.poll()
    response = client.get("/recommendations/u1?k=4")
    body = response.json()
    # the gate's own ranking (the same function) over the version's items, as of the serving day
    items = np.array(["", *IDS])
    assert _ids(response) == popularity_ranking(sstore, date(2011, 1, 5), items, 7, 4) == ["C", "A", "B", "D"]
    assert (body["fallback"], body["known_user"]) == ("popularity", True)
    assert [i["score"] for i in body["items"]] == [3.0, 2.0, 1.0, 0.0]  # purchases in the week
    stranger = client.get("/recommendations/nobody?k=2")  # unknown customers too
    assert (_ids(stranger), stranger.json()["fallback"], stranger.json()["known_user"]) == (
        ["C", "A"], "popularity", False)
    # u1 bought A (snapshot of D1): excluded on request, the rest in popularity's order
    assert _ids(client.get("/recommendations/u1?k=4&exclude_purchased=true")) == ["C", "B", "D"]
    assert client.get("/version").json()["fallback"] == "popularity"


def test_no_popularity_fallback_when_the_gate_measured_the_model_ahead_or_it_is_switched_off(sstore):
    _popularity_verdict(sstore, 1, fallback=False)
    client = TestClient(create_app(sstore, watch=False))
    client.app.state.holder.poll()
    response = client.get("/recommendations/u1")
    assert (_ids(response), response.json()["fallback"]) == (["A", "D", "C", "B"], None)  # the model's (v1) answer
    assert client.get("/version").json()["fallback"] is None

    _popularity_verdict(sstore, 1, fallback=True)
    off = TestClient(create_app(sstore, watch=False, popularity_fallback=False))  # RECSYS_POPULARITY_FALLBACK=false
    off.app.state.holder.poll()
    response = off.get("/recommendations/u1")
    assert (_ids(response), response.json()["fallback"]) == (["A", "D", "C", "B"], None)


def test_a_rollback_returns_to_the_verdict_of_the_version_it_returns_to(sstore):
    _popularity_verdict(sstore, 1, fallback=True)  # version 1 falls back, version 2 was never evaluated
    holder = ModelHolder(sstore)
    holder.poll()
    assert holder.current.recommend("u1", 2).fallback == "popularity"
    registry.set_champion(sstore, 2, "deployed", "test", None)
    holder.poll()
    assert holder.current.recommend("u1", 4).item_ids == ["B", "D", "C", "A"]  # v2's model ranking
    rollback(sstore, "test", to=1)
    holder.poll()
    assert holder.current.recommend("u1", 2).item_ids == ["C", "A"]
