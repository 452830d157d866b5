"""Live user state with the real broker: an event POSTed to the collector changes that customer's next
answer within a bound, an out-of-stock item leaves every answer, a new customer gets personal
recommendations from their first event, and a restarted service rebuilds the same state from the history
snapshot plus a replay of the topics (events the snapshot already holds are not applied twice), and the
day's catalog partition is rebuilt from the same item events.

The store holds one small history-aware version with hand-made tables: item vectors are small, so a
customer's own recent items (the repeat term, weight 5) rank first, which makes "the event is reflected"
an exact, observable statement. Fails (never skips) without Kafka: the broker fixture starts
scripts/kafka.sh.
"""

from __future__ import annotations

import dataclasses
import io
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from recsys import registry, schema
from recsys.features import history, vocab
from recsys.serving.deploy import INDEX_FILE, INDEX_META_FILE, build_index, index_metadata
from recsys.serving.live import LiveConfig
from recsys.serving.service import create_app as create_service
from recsys.storage import layout
from recsys.storage.local import LocalStore
from recsys.streaming.catalog import read_item_events, rebuild
from recsys.streaming.collector import CollectorConfig
from recsys.streaming.collector import create_app as create_collector
from tests.kafka_broker import KafkaBroker, broker_session

pytestmark = pytest.mark.integration

USERS = [f"u{i:02d}" for i in range(1, 21)]
ITEMS = [f"i{i:03d}" for i in range(1, 61)]
DIM = 8
DAY0 = date(2011, 1, 4)
BOUND_SECONDS = 5.0  # POST accepted -> answer changed; the target (p99 <= 1 s) is measured in bench/realtime


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    yield from broker_session()


def _write_snapshot(store: LocalStore, day: date, rows: list[tuple[str, str, int]]) -> None:
    frame = pd.DataFrame(rows, columns=[schema.USER_ID, schema.ITEM_ID, history.DAYS])
    frame[history.LAST_DAY] = day.isoformat()
    frame = frame.astype({schema.USER_ID: "string", schema.ITEM_ID: "string", history.DAYS: "int64",
                          history.LAST_DAY: "string"})
    store.write_parquet(f"{layout.features(day)}/{layout.HISTORY_FILE}", frame)
    store.mark_success(layout.features(day))


def _build_store(root: Path) -> LocalStore:
    """Version 1: history-aware tables (user, item, title words, price band, repeat weight 5), a catalog of
    every item, a snapshot of DAY0 where u01 used i001 (u02..u20 used nothing)."""
    store = LocalStore(root)
    for name, ids in ((vocab.USERS, USERS), (vocab.ITEMS, ITEMS)):
        table = pd.DataFrame({vocab.ID: ids, vocab.ROW: range(1, len(ids) + 1), vocab.FIRST_SEEN: DAY0.isoformat()})
        vocab.save(store, name, table.astype({vocab.ID: "string", vocab.ROW: "int64", vocab.FIRST_SEEN: "string"}))
    catalog = pd.DataFrame({schema.ITEM_ID: ITEMS, schema.TITLE: [f"title {i}" for i in ITEMS],
                            schema.CATEGORY: None, schema.PRICE: 1.0, schema.AVAILABLE: True})
    store.write_parquet(f"{layout.raw_catalog(DAY0)}/part-00000.parquet", catalog.astype(schema.CATALOG_DTYPES))
    store.mark_success(layout.raw_catalog(DAY0))
    rng = np.random.default_rng(7)
    n_items = len(ITEMS) + 1
    tables: dict[str, Any] = {
        "user": rng.normal(scale=0.1, size=(len(USERS) + 1, DIM)).astype(np.float32),
        "item": rng.normal(scale=0.1, size=(n_items, DIM)).astype(np.float32),
        "word": np.zeros((2, DIM), np.float32), "item_words": np.zeros((n_items, 1), np.int64),
        "price": np.zeros((1, DIM), np.float32), "item_price": np.zeros(n_items, np.int64),
        "item_bias": np.linspace(0.5, 0.0, n_items).astype(np.float32),  # popular order when nothing else counts
        "repeat_weight": np.float32(5.0),
    }
    vdir = layout.model_version(1)
    buf = io.BytesIO()
    np.savez(buf, **tables)
    store.write_bytes(f"{vdir}/{layout.TABLES_FILE}", buf.getvalue())
    meta: Any = {"version": 1, "trained_on": DAY0.isoformat(), "user_rows": len(USERS) + 1, "item_rows": n_items,
            "history_length": 50, "repeat_length": 200, "repeat_scale": 1.0}
    store.write_json(f"{vdir}/metadata.json", meta)
    registry.add_version(store, 1, meta, run_id="test")
    index = build_index(store, 1, DAY0)
    data = io.BytesIO()
    index.to_parquet(data, index=False)
    store.write_bytes(f"{vdir}/{INDEX_FILE}", data.getvalue())
    store.write_json(f"{vdir}/{INDEX_META_FILE}", index_metadata(data.getvalue(), index, DAY0, None))
    registry.set_champion(store, 1, registry.DEPLOYED, "initial deploy", "test")
    _write_snapshot(store, DAY0, [("u01", "i001", 2)])
    return store


def _event(user: str, item: str, when: datetime, kind: str = "purchase") -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "event_time": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "user_id": user,
            "item_id": item, "event_type": kind, "quantity": 1, "price": 1.0}


def _item_event(item: str, kind: str, when: datetime) -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "event_time": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "item_id": item,
            "event_type": kind}


def _until(what: str, check: Callable[[], bool], timeout: float = BOUND_SECONDS) -> float:
    """Seconds until ``check()`` is true; fails the test after ``timeout``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"not within {timeout} s: {what}"
        time.sleep(0.02)
    return time.monotonic() - started


def _items(service: TestClient, user: str, k: int = 10) -> list[str]:
    answer = service.get(f"/recommendations/{user}", params={"k": k})
    assert answer.status_code == 200, answer.text
    return [x["item_id"] for x in answer.json()["items"]]


def _service(store: LocalStore, live: LiveConfig) -> TestClient:
    return TestClient(create_service(store, poll_seconds=0.2, live=live))


def _replayed(service: TestClient) -> bool:
    return bool(service.get("/readyz").json().get("live", {}).get("replayed"))


def test_events_reach_answers_within_a_bound_and_a_restart_rebuilds_them(kafka_broker: KafkaBroker,
                                                                         tmp_path: Path) -> None:
    store = _build_store(tmp_path / "store")
    topic, catalog_topic = kafka_broker.new_topic("live"), kafka_broker.new_topic("catalog", 1)
    live = LiveConfig(bootstrap=kafka_broker.bootstrap, events_topic=topic, catalog_topic=catalog_topic)
    collector = TestClient(create_collector(CollectorConfig(bootstrap=kafka_broker.bootstrap, topic=topic,
                                                            catalog_topic=catalog_topic)))
    now = datetime.now(UTC)
    with collector, _service(store, live) as service:
        _until("the service replayed its (empty) topics", lambda: _replayed(service), 60)
        before = service.get("/recommendations/u02").json()
        assert before["known_user"] and before["last_event_at"] is None and before["state_as_of"] is not None
        assert "i050" not in _items(service, "u02")

        # a purchase by a known customer: the repeat term and the query now hold the item
        sent = _event("u02", "i050", now)
        assert collector.post("/events", json=[sent]).status_code == 202
        _until("u02's purchase of i050 in u02's answer", lambda: "i050" in _items(service, "u02"))
        after = service.get("/recommendations/u02").json()
        assert after["last_event_at"] == sent["event_time"]
        assert after["state_as_of"] >= sent["event_time"]
        assert _items(service, "u02")[0] == "i050"  # own recent item, repeat weight 5: first

        # state_as_of is a promise: once an answer's state_as_of is past the 202, that answer holds the event
        assert "i041" not in _items(service, "u05")
        assert collector.post("/events", json=[_event("u05", "i041", now)]).status_code == 202
        acknowledged = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        answers: list[dict[str, Any]] = []
        _until("an answer for u05 as of after the 202", lambda: answers.append(
            service.get("/recommendations/u05").json()) or answers[-1]["state_as_of"] >= acknowledged)
        assert answers[-1]["items"][0]["item_id"] == "i041", answers[-1]

        # a new customer: popular before, personal from the first event on
        new = service.get("/recommendations/shopper-new").json()
        assert new["fallback"] == "popular" and not new["known_user"]
        assert collector.post("/events", json=[_event("shopper-new", "i033", now, "view")]).status_code == 202
        _until("shopper-new's view in their answer", lambda: "i033" in _items(service, "shopper-new"))
        personal = service.get("/recommendations/shopper-new").json()
        assert personal["fallback"] is None and personal["known_user"]
        assert [x["item_id"] for x in personal["items"]] != [x["item_id"] for x in new["items"]]

        # an item sells out: gone from every answer (and similar items); a mixed batch on the same path
        gone = _items(service, "u03")[0]
        batch = [_item_event(gone, "out_of_stock", now), _event("u04", gone, now)]
        assert collector.post("/events", json=batch).status_code == 202
        _until(f"{gone} out of every answer", lambda: all(gone not in _items(service, u, 60) for u in USERS))
        assert gone not in _items(service, "shopper-new", 60)
        assert gone not in [x["item_id"] for x in service.get("/items/i001/similar", params={"k": 60}).json()["items"]]
        metrics = service.get("/metrics").text
        assert 'recsys_live_events_total{result="items_applied"} 1' in metrics
        state_before_restart = {u: _items(service, u) for u in ("u02", "u04", "u05", "shopper-new")}

    # the record of truth: today's catalog partition rebuilt from the same item events (the day before's + them)
    found = read_item_events(kafka_broker.bootstrap, catalog_topic, now.date())
    assert [(e["item_id"], e["event_type"]) for e in found] == [(gone, "out_of_stock")]
    rebuilt = rebuild(store, now.date(), found).set_index(schema.ITEM_ID)[schema.AVAILABLE]
    assert not rebuilt[gone] and int(rebuilt.sum()) == len(ITEMS) - 1
    assert store.is_complete(layout.raw_catalog(now.date()))

    # restart: state rebuilt from the snapshot (DAY0) plus a replay of both topics
    with _service(store, live) as service:
        _until("the restarted service replayed both topics", lambda: _replayed(service), 60)
        assert {u: _items(service, u) for u in state_before_restart} == state_before_restart
        assert service.get("/recommendations/u02").json()["last_event_at"] == sent["event_time"]
        status = service.get("/readyz").json()["live"]
        assert status["applied"] == 4 and status["items_applied"] == 1 and status["before_snapshot"] == 0

    # a newer snapshot that already holds today's events: a restart does not apply them twice
    today = now.date()
    _write_snapshot(store, today, [("u02", "i050", 1), ("u04", gone, 1), ("u05", "i041", 1),
                                   ("shopper-new", "i033", 1)])
    # (a replay margin of 2 days reads today's events again, so the event-time rule is what keeps them out)
    with _service(store, dataclasses.replace(live, replay_margin=timedelta(days=2))) as service:
        _until("the service on the newer snapshot replayed", lambda: _replayed(service), 60)
        status = service.get("/readyz").json()["live"]
        assert status["applied"] == 0 and status["before_snapshot"] == 4, status
        assert status["events_from"] == f"{(today + timedelta(days=1)).isoformat()}T00:00:00.000000Z"
        assert _items(service, "u02")[0] == "i050"  # from the snapshot now
        answer = service.get("/recommendations/u02").json()
        assert answer["last_event_at"] is None and answer["snapshot_day"] == today.isoformat()
        # the catalog's day is still DAY0: the out-of-stock event is after it and applies again
        assert all(gone not in _items(service, u, 60) for u in USERS)
