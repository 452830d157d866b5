"""The collector's edge checks, without a broker: every refusal names the event and field, and is counted.

A batch with a bad event is refused whole before anything reaches the producer, so these tests run the
app without its lifespan (no producer exists: a request that got past the checks would fail loudly).
The accepted path (202 after the broker's acknowledgement) is in tests/integration/test_streaming.py.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from recsys.config import Settings
from recsys.streaming import events
from recsys.streaming.collector import CollectorConfig, config_from_args, create_app, parser

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def event(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": "e-1", "event_time": "2026-12-01T11:59:00Z", "user_id": "u1", "item_id": "85123A",
        "event_type": "purchase", "quantity": 2, "price": 2.55,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def problems(obj: object, now: datetime | None = NOW) -> list[tuple[str, str]]:
    found, probs = events.check_event(obj, 0, events.EventRules(), now)
    assert (found is None) == bool(probs)
    return [(p.field, p.problem) for p in probs]


@pytest.fixture
def client() -> TestClient:
    config = CollectorConfig(bootstrap="127.0.0.1:9", max_events=5, max_body_bytes=4096)
    return TestClient(create_app(config, clock=lambda: NOW))


def test_a_valid_event_is_normalised_to_utc() -> None:
    found, probs = events.check_event(event(event_time="2026-12-01T13:30:00+02:00", price=3), 0, events.EventRules(),
                                      NOW)
    assert probs == []
    assert found is not None
    assert found["event_time"] == datetime(2026, 12, 1, 11, 30, tzinfo=UTC)
    assert found["price"] == 3.0 and isinstance(found["price"], float)
    assert found["session_id"] is None and found["country"] is None
    assert events.encode(found).startswith(b'{"event_id":"e-1","event_time":"2026-12-01T11:30:00.000000Z"')


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"user_id": ...}, "user_id", "is required"),
    ({"user_id": 17135}, "user_id", "must be a string"),
    ({"user_id": " 17135"}, "user_id", "start or end with a space"),
    ({"item_id": "a\u2028b"}, "item_id", "separator characters"),
    ({"item_id": "a/b"}, "item_id", "or '/'"),
    ({"item_id": ".."}, "item_id", "only dots"),
    ({"event_id": "x" * 65}, "event_id", "1 to 64 characters"),
    ({"event_id": ""}, "event_id", "1 to 64 characters"),
    ({"event_type": "click"}, "event_type", "must be one of view, add_to_cart, purchase"),
    ({"quantity": True}, "quantity", "whole number"),
    ({"quantity": 1.5}, "quantity", "whole number"),
    ({"quantity": 0}, "quantity", "must be 1 to 100000"),
    ({"price": -1}, "price", "must be 0 to"),
    ({"price": "2.55"}, "price", "must be a number"),
    ({"price": "abc"}, "price", "must be a number"),  # not a float's text either: a problem, not a ValueError
    ({"price": [2.55]}, "price", "must be a number"),
    ({"event_time": "2026-12-01T11:00:00"}, "event_time", "has no time zone"),
    ({"event_time": "yesterday"}, "event_time", "is not an ISO 8601 time"),
    ({"event_time": 1764590400}, "event_time", "must be an ISO 8601 string"),
    ({"event_time": "2026-12-01T12:06:00Z"}, "event_time", "is in the future"),
    ({"event_time": "2026-11-24T11:59:00Z"}, "event_time", "is too old"),
    ({"country": "\x00"}, "country", "control"),
    ({"colour": "red"}, "colour", "unknown field"),
])
def test_each_bad_field_is_named(changes: dict[str, object], field: str, words: str) -> None:
    found = problems(event(**changes))
    assert [f for f, _ in found] == [field]
    assert words in found[0][1]


def test_the_time_window_edges_are_accepted_and_skipped_without_a_clock() -> None:
    assert problems(event(event_time="2026-12-01T12:05:00Z")) == []  # exactly max_future ahead
    assert problems(event(event_time="2026-11-24T12:00:00Z")) == []  # exactly max_age old
    assert problems(event(event_time="2020-01-01T00:00:00Z"), now=None) == []


def test_not_an_object_and_several_problems() -> None:
    assert problems([1, 2]) == [("(event)", "must be a JSON object, got list")]
    assert [f for f, _ in problems(event(user_id=..., quantity=-3, extra=1))] == ["extra", "user_id", "quantity"]


def test_a_batch_with_bad_events_is_refused_whole_naming_index_and_field(client: TestClient) -> None:
    batch = [event(event_id="a"), event(event_id="b", user_id=...),
             event(event_id="c", event_time="2027-01-01T00:00:00Z")]
    answer = client.post("/events", json=batch)
    assert answer.status_code == 422
    body = answer.json()
    assert body["invalid_events"] == 2
    assert "nothing of this batch was accepted" in body["detail"]
    assert [(e["index"], e["field"], e["event_id"]) for e in body["errors"]] == [(1, "user_id", "b"),
                                                                               (2, "event_time", "c")]
    metrics = client.get("/metrics").text
    assert 'recsys_collector_events_total{result="invalid"} 2' in metrics
    assert 'recsys_collector_events_total{result="batch_refused"} 1' in metrics
    assert 'recsys_collector_events_total{result="accepted"} 0' in metrics
    assert 'recsys_collector_refused_fields_total{field="event_time"} 1' in metrics
    assert 'recsys_collector_requests_total{status="422"} 1' in metrics


def test_a_price_that_is_not_a_number_is_a_422_not_a_500(client: TestClient) -> None:
    answer = client.post("/events", json=[event(price="n/a")])
    assert answer.status_code == 422
    assert [(e["field"], e["problem"]) for e in answer.json()["errors"]] == [("price", "must be a number, got 'n/a'")]


def test_ndjson_is_read_line_by_line(client: TestClient) -> None:
    body = json.dumps(event(event_id="a")) + "\n\n" + json.dumps(event(event_id="b", price=-1)) + "\n"
    answer = client.post("/events", content=body, headers={"content-type": "application/x-ndjson"})
    assert answer.status_code == 422
    assert [(e["index"], e["field"]) for e in answer.json()["errors"]] == [(1, "price")]


@pytest.mark.parametrize(("body", "content_type", "words"), [
    (b'[{"event_id": "a",', "application/json", "not valid JSON"),
    (b'{"event_id": "a"}\n{oops}\n', "application/x-ndjson", "line 2 of the NDJSON body"),
    (b'{"event_id": "a"}\n{oops}\n', "", "line 2 of the NDJSON body"),
    (b"\xff\xfe[]", "application/json", "not UTF-8"),
    (b"   ", "application/json", "the body is empty"),
    (b"[]", "application/json", "empty array"),
    (b'"hello"', "application/json", "must be a JSON array"),
])
def test_malformed_bodies_are_refused_with_400(client: TestClient, body: bytes, content_type: str,
                                               words: str) -> None:
    answer = client.post("/events", content=body, headers={"content-type": content_type})
    assert answer.status_code == 400, answer.text
    assert words in answer.json()["detail"]


def test_oversized_batches_and_bodies_are_refused_with_413(client: TestClient) -> None:
    too_many = client.post("/events", json=[event(event_id=str(i)) for i in range(6)])
    assert too_many.status_code == 413
    assert "6 events in one request; at most 5" in too_many.json()["detail"]
    lines = "\n".join(json.dumps(event(event_id=str(i))) for i in range(6))
    assert client.post("/events", content=lines, headers={"content-type": "application/x-ndjson"}).status_code == 413
    big = b"[" + b" " * 5000 + b"]"
    declared = client.post("/events", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and "at most 4096" in declared.json()["detail"]
    streamed = client.post("/events", content=iter([big[:3000], big[3000:]]),
                           headers={"content-type": "application/json"})  # chunked: no content-length
    assert streamed.status_code == 413 and "exceeds 4096 bytes" in streamed.json()["detail"]
    assert 'recsys_collector_requests_total{status="413"} 4' in client.get("/metrics").text


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_the_limits_come_from_the_recsys_collector_settings_and_flags_override_them() -> None:
    defaults = config_from_args(parser().parse_args([]), Settings.from_env({}), "127.0.0.1:9")
    assert (defaults.max_events, defaults.max_body_bytes, defaults.queue_max_messages,
            defaults.delivery_timeout_s) == (10_000, 8 * 1024 * 1024, 200_000, 10.0)
    settings = Settings.from_env({
        "RECSYS_COLLECTOR_MAX_EVENTS": "3", "RECSYS_COLLECTOR_MAX_BODY_BYTES": "2048",
        "RECSYS_COLLECTOR_QUEUE_MAX_MESSAGES": "7", "RECSYS_COLLECTOR_DELIVERY_TIMEOUT_SECONDS": "2.5",
        "RECSYS_VALIDATION_MAX_QUANTITY": "9"})
    config = config_from_args(parser().parse_args(["--topic", "t"]), settings, "127.0.0.1:9")
    assert (config.max_events, config.max_body_bytes, config.queue_max_messages,
            config.delivery_timeout_s, config.rules.max_quantity, config.topic) == (3, 2048, 7, 2.5, 9, "t")
    client = TestClient(create_app(config, clock=lambda: NOW))  # no lifespan: nothing past the checks is sent
    four = client.post("/events", json=[event(event_id=str(i)) for i in range(4)])
    assert four.status_code == 413 and "4 events in one request; at most 3" in four.json()["detail"]
    big = client.post("/events", content=b"[" + b" " * 3000 + b"]", headers={"content-type": "application/json"})
    assert big.status_code == 413 and "at most 2048" in big.json()["detail"]
    flagged = config_from_args(parser().parse_args(["--max-events", "5", "--delivery-timeout-s", "1.5"]), settings,
                               "127.0.0.1:9")
    assert (flagged.max_events, flagged.delivery_timeout_s, flagged.max_body_bytes) == (5, 1.5, 2048)


def _dead_port() -> str:
    import socket

    with socket.socket() as sock:  # bound and closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_a_batch_over_the_producer_queue_is_refused_with_503_and_nothing_is_sent() -> None:
    config = CollectorConfig(bootstrap=_dead_port(), queue_max_messages=10)
    with TestClient(create_app(config, clock=lambda: NOW)) as client:
        answer = client.post("/events", json=[event(event_id=str(i)) for i in range(11)])
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "1"
        assert "nothing of this batch was accepted" in answer.json()["detail"]
        metrics = client.get("/metrics").text
    assert 'recsys_collector_events_total{result="backpressure"} 11' in metrics
    assert "recsys_collector_producer_queue 0" in metrics  # nothing was handed to the producer


def test_an_unreachable_broker_is_a_503_after_the_delivery_timeout_never_a_202() -> None:
    config = CollectorConfig(bootstrap=_dead_port(), delivery_timeout_s=1.0)
    with TestClient(create_app(config, clock=lambda: NOW)) as client:
        started = time.monotonic()
        answer = client.post("/events", json=[event(event_id="a"), event(event_id="b")])
        assert answer.status_code == 503, answer.text
        assert time.monotonic() - started < 10
        assert "the broker did not acknowledge 2 events" in answer.json()["detail"]
        assert answer.json()["stored"] == 0
        assert not client.get("/readyz").json()["ready"]
        metrics = client.get("/metrics").text
    assert 'recsys_collector_events_total{result="delivery_failed"} 2' in metrics
    assert 'recsys_collector_events_total{result="accepted"} 0' in metrics


# --- item (catalog) events on the same path -----------------------------------------------------------
def item_event(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {"event_id": "c-1", "event_time": "2026-12-01T11:59:00Z", "item_id": "85123A",
                               "event_type": "out_of_stock"}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


@pytest.mark.parametrize("kind", events.ITEM_EVENT_TYPES)
def test_each_item_event_type_is_accepted_by_its_own_schema(kind: str) -> None:
    extra = {"price": 3} if kind == events.PRICE_CHANGE else {}
    found, probs = events.check_any(item_event(event_type=kind, **extra), 0, events.EventRules(), NOW)
    assert probs == [] and found is not None
    assert found["event_type"] == kind and found["event_time"] == datetime(2026, 12, 1, 11, 59, tzinfo=UTC)
    wire = json.loads(events.encode_item(found))
    assert set(wire) == set(events.ITEM_EVENT_COLUMNS) and "user_id" not in wire
    assert events.decode_any(events.encode_item(found), events.EventRules()) == found


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"event_type": "price_change"}, "price", "is required for a price_change"),
    ({"item_id": ...}, "item_id", "is required"),
    ({"item_id": "a/b"}, "item_id", "or '/'"),
    ({"user_id": "u1"}, "user_id", "unknown field (the item event fields are"),
    ({"price": -1}, "price", "must be 0 to"),
    ({"title": 5}, "title", "must be a string"),
    ({"title": "x" * 501}, "title", "at most 500 characters"),
    ({"event_time": "2027-01-01T00:00:00Z"}, "event_time", "is in the future"),
])
def test_each_bad_item_event_field_is_named(changes: dict[str, object], field: str, words: str) -> None:
    found, probs = events.check_any(item_event(**changes), 0, events.EventRules(), NOW)
    assert found is None
    assert any(p.field == field and words in p.problem for p in probs), probs


def test_a_behaviour_event_with_an_item_event_type_field_is_not_mistaken() -> None:
    # a purchase stays a behaviour event (user_id required), an unknown type is named against behaviour types
    assert events.check_any(event(), 0, events.EventRules(), NOW)[0] is not None
    probs = events.check_any(event(event_type="sold_out"), 0, events.EventRules(), NOW)[1]
    assert [(p.field, p.problem[:12]) for p in probs] == [("event_type", "must be one ")]


def test_a_batch_mixing_a_bad_item_event_is_refused_whole(client: TestClient) -> None:
    answer = client.post("/events", json=[event(), item_event(event_type="price_change")])
    assert answer.status_code == 422
    assert answer.json()["errors"] == [{"index": 1, "field": "price", "problem": "is required for a price_change",
                                        "event_id": "c-1"}]
