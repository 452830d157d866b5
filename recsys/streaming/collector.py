"""The event collector: ``POST /events`` checks each event at the edge and produces it to Kafka.

- ``POST /events``: a JSON array of events (``Content-Type: application/json``) or one event per line
  (``application/x-ndjson``). All or nothing: a batch is accepted whole (202, after the broker acknowledged
  every event) or refused whole, with nothing produced:
  400 a body that is not JSON / NDJSON or holds no event; 413 a body over ``max_body_bytes`` or more than
  ``max_events`` events; 422 one or more events break the schema (``errors`` lists each: index, field,
  problem); 503 the producer's queue is full or the broker did not acknowledge in time (``Retry-After``).
  Resending a refused or unanswered batch is safe: the sink keeps one copy per ``event_id``.
- ``GET /healthz`` (the process is up), ``GET /readyz`` (the broker answers and the events topic exists),
  ``GET /metrics`` (Prometheus: events by result, refused fields, requests, delivery latency, queue).

Events are keyed by ``user_id`` (one user's events stay in order on one partition) and produced by an
idempotent producer (``enable.idempotence``: the broker drops the producer's own retries).

Item events (``event_type`` listed, delisted, out_of_stock, back_in_stock or price_change; see
:mod:`recsys.streaming.events`) come on the same path, in the same batches, checked by their own schema; they
go to the catalog topic (``catalog_topic``), keyed by ``item_id``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from recsys import schema
from recsys.config import ConfigError, Settings
from recsys.errors import RecsysError
from recsys.streaming import StreamingError, events
from recsys.streaming.topics import CATALOG_TOPIC, EVENTS_TOPIC

log = logging.getLogger(__name__)

DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_LISTED_ERRORS = 1000  # a 422 lists at most this many problems (and says how many there were)
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")


@dataclass(frozen=True)
class CollectorConfig:
    """What the collector accepts and where it sends it (the limits' defaults are those of
    :class:`~recsys.config.Settings`; :meth:`from_settings` reads them from the environment)."""

    bootstrap: str
    topic: str = EVENTS_TOPIC
    catalog_topic: str = CATALOG_TOPIC  # item events
    max_events: int = Settings.collector_max_events  # events in one request
    max_body_bytes: int = Settings.collector_max_body_bytes
    queue_max_messages: int = Settings.collector_queue_max_messages  # a batch that does not fit is refused with 503
    delivery_timeout_s: float = Settings.collector_delivery_timeout_seconds  # broker ack of a whole batch, else 503
    rules: events.EventRules = field(default_factory=events.EventRules)

    @classmethod
    def from_settings(cls, settings: Settings, bootstrap: str, **overrides: Any) -> CollectorConfig:
        """The limits and event rules of ``settings`` (``RECSYS_COLLECTOR_*``, ``RECSYS_VALIDATION_*``);
        ``overrides`` (e.g. command-line flags) win."""
        values: dict[str, Any] = {
            "max_events": settings.collector_max_events,
            "max_body_bytes": settings.collector_max_body_bytes,
            "queue_max_messages": settings.collector_queue_max_messages,
            "delivery_timeout_s": settings.collector_delivery_timeout_seconds,
            "rules": events.EventRules.from_settings(settings),
        }
        return cls(bootstrap=bootstrap, **{**values, **overrides})


class Refused(RecsysError, ValueError):
    """A request the collector refuses: its HTTP status and a message saying what to fix."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra


# --- metrics (Prometheus text format 0.0.4, like the recommendation service) -------------------------
class CollectorMetrics:
    """Counters of events by result and of refused fields, requests by status, delivery latency."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: dict[str, int] = {}
        self.fields: dict[str, int] = {}
        self.requests: dict[int, int] = {}
        self.delivery = [0] * (len(DELIVERY_BUCKETS) + 1)
        self.delivery_sum = 0.0

    def count(self, result: str, n: int = 1) -> None:
        with self._lock:
            self.events[result] = self.events.get(result, 0) + n

    def refused_fields(self, problems: list[events.Problem]) -> None:
        with self._lock:
            for p in problems:
                self.fields[p.field] = self.fields.get(p.field, 0) + 1

    def request(self, status: int) -> None:
        with self._lock:
            self.requests[status] = self.requests.get(status, 0) + 1

    def delivered(self, seconds: float) -> None:
        with self._lock:
            self.delivery[bisect.bisect_left(DELIVERY_BUCKETS, seconds)] += 1
            self.delivery_sum += seconds

    def render(self, queued: int) -> str:
        out = ["# HELP recsys_collector_events_total Events received, by result: accepted (acknowledged by "
               "the broker), invalid (broke the schema), batch_refused (valid, in a batch refused whole), "
               "backpressure (refused: producer queue full), delivery_failed (broker did not acknowledge).",
               "# TYPE recsys_collector_events_total counter"]
        with self._lock:
            for result in ("accepted", "invalid", "batch_refused", "backpressure", "delivery_failed"):
                out.append(f'recsys_collector_events_total{{result="{result}"}} {self.events.get(result, 0)}')
            out += ["# HELP recsys_collector_refused_fields_total Schema problems of refused events, by field.",
                    "# TYPE recsys_collector_refused_fields_total counter"]
            out += [f'recsys_collector_refused_fields_total{{field="{_esc(f)}"}} {n}'
                    for f, n in sorted(self.fields.items())]
            out += ["# HELP recsys_collector_requests_total POST /events answers, by status.",
                    "# TYPE recsys_collector_requests_total counter"]
            out += [f'recsys_collector_requests_total{{status="{s}"}} {n}' for s, n in sorted(self.requests.items())]
            out += ["# HELP recsys_collector_delivery_seconds From producing a batch to the broker's last "
                    "acknowledgement.", "# TYPE recsys_collector_delivery_seconds histogram"]
            total = 0
            for bound, n in zip((*DELIVERY_BUCKETS, float("inf")), self.delivery, strict=True):
                total += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(f'recsys_collector_delivery_seconds_bucket{{le="{le}"}} {total}')
            out += [f"recsys_collector_delivery_seconds_sum {self.delivery_sum}",
                    f"recsys_collector_delivery_seconds_count {total}"]
        out += ["# HELP recsys_collector_producer_queue Messages in the producer's queue, not yet acknowledged.",
                "# TYPE recsys_collector_producer_queue gauge", f"recsys_collector_producer_queue {queued}"]
        return "\n".join(out) + "\n"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# --- body parsing --------------------------------------------------------------------------------------
def parse_body(body: bytes, content_type: str, max_events: int) -> list[Any]:
    """The decoded events of a request body: a JSON array (or one object), or NDJSON; Refused if not."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Refused(400, f"the body is not UTF-8 text (byte {body[err.start]:#04x} at offset {err.start})") from None
    stripped = text.lstrip()
    if not stripped:
        raise Refused(400, "the body is empty: send a JSON array of events or one event per line (NDJSON)")
    media = content_type.split(";")[0].strip().lower()
    if media in NDJSON_TYPES or (media != "application/json" and not stripped.startswith("[")):
        return _parse_ndjson(text, max_events)
    return _parse_json(text, max_events)


def _parse_ndjson(text: str, max_events: int) -> list[Any]:
    """One JSON value per non-blank line."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if len(lines) > max_events:
        raise Refused(413, f"{len(lines)} events in one request; at most {max_events}: split the batch")
    decoded = []
    for n, line in lines:
        try:
            decoded.append(json.loads(line))
        except ValueError as err:
            raise Refused(400, f"line {n} of the NDJSON body is not JSON: {err}") from None
    return decoded


def _parse_json(text: str, max_events: int) -> list[Any]:
    """A JSON array of events, or one event (an object)."""
    try:
        value = json.loads(text)
    except ValueError as err:
        raise Refused(400, f"the body is not valid JSON: {err}") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise Refused(400, f"the body must be a JSON array of events, got {type(value).__name__}")
    if not value:
        raise Refused(400, "the body is an empty array: send at least one event")
    if len(value) > max_events:
        raise Refused(413, f"{len(value)} events in one request; at most {max_events}: split the batch")
    return value


# --- the producer --------------------------------------------------------------------------------------
class _Delivery:
    """Collects the broker's acknowledgements of one batch (callbacks run on the poll thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.lock = threading.Lock()
        self.acked = 0
        self.errors: list[str] = []
        self.expected: int | None = None  # set once every event of the batch was handed to the producer

    def __call__(self, err: Any, _msg: Any) -> None:
        with self.lock:
            if err is not None:
                self.errors.append(err.str())
            self.acked += 1
            done = self.expected is not None and self.acked >= self.expected
        if done:
            self.loop.call_soon_threadsafe(self._finish)

    def produced(self, n: int) -> None:
        with self.lock:
            self.expected = n
            done = self.acked >= n
        if done:
            self.loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class EventProducer:
    """An idempotent producer with a thread that serves its delivery callbacks."""

    def __init__(self, config: CollectorConfig) -> None:
        from confluent_kafka import Producer

        self.config = config
        self.producer = Producer({
            "bootstrap.servers": config.bootstrap,
            "enable.idempotence": True,  # acks=all, retries without duplicates or reordering
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.messages": config.queue_max_messages,
            "message.timeout.ms": int(config.delivery_timeout_s * 1000),
        })
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="collector-producer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    def stop(self, timeout: float = 10.0) -> int:
        """Wait up to ``timeout`` s for what is queued; the number of messages still unacknowledged."""
        left = self.producer.flush(timeout)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        return left

    def queued(self) -> int:
        return len(self.producer)

    def produce(self, batch: list[dict[str, Any]], delivery: _Delivery) -> int:
        """Hand the batch to the producer; how many events it took (fewer when its queue filled up)."""
        topic, catalog = self.config.topic, self.config.catalog_topic
        n = 0
        try:
            for event in batch:
                if event[schema.EVENT_TYPE] in events.ITEM_EVENT_TYPES:
                    self.producer.produce(catalog, value=events.encode_item(event),
                                          key=event[schema.ITEM_ID].encode(), on_delivery=delivery)
                else:
                    self.producer.produce(topic, value=events.encode(event), key=event[schema.USER_ID].encode(),
                                          on_delivery=delivery)
                n += 1
        except BufferError:
            pass
        delivery.produced(n)
        return n

    def topic_ready(self, topic: str | None = None, timeout: float = 2.0) -> str | None:
        """None if the broker answers and ``topic`` (default: the events topic) exists, else why not."""
        from confluent_kafka import KafkaException

        topic = topic or self.config.topic
        try:
            meta = self.producer.list_topics(topic, timeout=timeout).topics.get(topic)
        except KafkaException as err:
            return f"the broker {self.config.bootstrap} does not answer: {err.args[0].str()}"
        if meta is None or meta.error is not None:
            return f"topic {topic!r}: {meta.error.str() if meta is not None else 'missing'}"
        return None


# --- the app -------------------------------------------------------------------------------------------
def create_app(
    config: CollectorConfig,
    producer: EventProducer | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FastAPI:
    """The collector over ``config``; the producer starts and stops with the app (ASGI lifespan).

    A test may pass ``producer`` (a real one on another broker) and ``clock`` (the receiving time).
    """
    metrics = CollectorMetrics()
    holder: dict[str, EventProducer] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder["producer"] = producer or EventProducer(config)
        holder["producer"].start()
        try:
            yield
        finally:
            left = holder.pop("producer").stop()
            if left:
                log.error("collector stopped with %d events not acknowledged by the broker", left)

    app = FastAPI(title="recsys event collector", version="1", description=__doc__, lifespan=lifespan)
    app.state.metrics = metrics
    app.state.config = config

    @app.post("/events", status_code=202, tags=["events"], responses={
        400: {"description": "not JSON / NDJSON, or no event"}, 413: {"description": "body or batch too large"},
        422: {"description": "events that break the schema; nothing of the batch was accepted"},
        503: {"description": "producer queue full or broker unavailable; resend later (Retry-After)"}})
    async def post_events(request: Request) -> JSONResponse:
        """Accept a batch of events (JSON array or NDJSON): 202 once the broker has every one of them."""
        try:
            decoded = await _read_batch(request, config)
        except Refused as err:
            return _refuse(metrics, err.status, err.detail)
        accepted, problems, bad_events = _check_batch(decoded, config.rules, clock())
        if problems:
            metrics.count("invalid", bad_events)
            metrics.count("batch_refused", len(accepted))
            metrics.refused_fields(problems)
            return _refuse(
                metrics, 422, f"{bad_events} of {len(decoded)} events break the event schema; nothing of this batch "
                              "was accepted: fix or drop those events and resend the batch",
                invalid_events=bad_events, errors=[p.as_dict() for p in problems[:MAX_LISTED_ERRORS]],
                errors_listed=min(len(problems), MAX_LISTED_ERRORS), errors_total=len(problems),
            )
        prod = holder["producer"]
        if prod.queued() + len(accepted) > config.queue_max_messages:
            metrics.count("backpressure", len(accepted))
            return _refuse(metrics, 503, f"the producer queue is full ({prod.queued()} events waiting for the "
                                         "broker); nothing of this batch was accepted: resend it later",
                           headers={"Retry-After": "1"})
        return await _deliver(prod, accepted, config, metrics)

    _add_operation_routes(app, config, holder, metrics)
    return app


def _refuse(metrics: CollectorMetrics, status: int, detail: str, headers: dict[str, str] | None = None,
            **extra: Any) -> JSONResponse:
    """A refusal of POST /events, counted by status."""
    metrics.request(status)
    return JSONResponse(status_code=status, content={"detail": detail, **extra}, headers=headers)


async def _read_batch(request: Request, config: CollectorConfig) -> list[Any]:
    """The decoded events of the request's body; Refused when the body is too large or not a batch."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
        raise Refused(413, f"the body has {length} bytes; at most {config.max_body_bytes}: split the batch")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > config.max_body_bytes:
            raise Refused(413, f"the body exceeds {config.max_body_bytes} bytes: split the batch")
        chunks.append(chunk)
    return parse_body(b"".join(chunks), request.headers.get("content-type", ""), config.max_events)


def _check_batch(decoded: list[Any], rules: events.EventRules,
                 now: datetime) -> tuple[list[dict[str, Any]], list[events.Problem], int]:
    """The valid events, the problems of the others, and how many events have problems."""
    accepted: list[dict[str, Any]] = []
    problems: list[events.Problem] = []
    bad_events = 0
    for i, obj in enumerate(decoded):
        event, found = events.check_any(obj, i, rules, now)
        if event is None:
            bad_events += 1
            problems += found
        else:
            accepted.append(event)
    return accepted, problems, bad_events


async def _deliver(prod: EventProducer, accepted: list[dict[str, Any]], config: CollectorConfig,
                   metrics: CollectorMetrics) -> JSONResponse:
    """Produce the batch and wait for the broker: 202 when it acknowledged every event, else 503."""
    delivery = _Delivery(asyncio.get_running_loop())
    started = time.perf_counter()
    taken = prod.produce(accepted, delivery)
    try:
        await asyncio.wait_for(asyncio.shield(delivery.future), timeout=config.delivery_timeout_s + 5)
    except TimeoutError:
        delivery.errors.append("no acknowledgement in time")
    failed = len(delivery.errors)
    stored = taken - failed
    metrics.count("accepted", stored)
    if taken < len(accepted) or failed:
        metrics.count("backpressure", len(accepted) - taken)
        metrics.count("delivery_failed", failed)
        why = (f"the producer queue filled up after {taken} events" if taken < len(accepted)
               else f"the broker did not acknowledge {failed} events ({delivery.errors[0]})")
        return _refuse(metrics, 503, f"{why}; {stored} of {len(accepted)} events were stored. Resend the whole "
                                     "batch: the sink keeps one copy per event_id", headers={"Retry-After": "1"},
                       stored=stored)
    metrics.delivered(time.perf_counter() - started)
    metrics.request(202)
    return JSONResponse(status_code=202, content={"accepted": stored, "topic": config.topic})


def _add_operation_routes(app: FastAPI, config: CollectorConfig, holder: dict[str, EventProducer],
                          metrics: CollectorMetrics) -> None:
    """GET /healthz, /readyz and /metrics."""

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "broker or topic unavailable"}})
    def readyz() -> JSONResponse:
        """Readiness: the broker answers and the events topic exists. A missing catalog topic is shown
        (``catalog_problem``) but does not make the collector unready: behaviour events still flow, and an
        item event is refused with 503 when it cannot be delivered."""
        prod = holder.get("producer")
        why = "starting" if prod is None else prod.topic_ready()
        catalog_why = None if prod is None or why else prod.topic_ready(config.catalog_topic)
        return JSONResponse(status_code=503 if why else 200,
                            content={"ready": why is None, "topic": config.topic, "problem": why,
                                     "catalog_topic": config.catalog_topic, "catalog_problem": catalog_why})

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    def prometheus() -> PlainTextResponse:
        """Prometheus metrics of the collector."""
        prod = holder.get("producer")
        return PlainTextResponse(metrics.render(prod.queued() if prod else 0),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

def parser() -> argparse.ArgumentParser:
    """The options of ``recsys collect``; a limit left unset comes from its ``RECSYS_COLLECTOR_*`` setting."""
    cli = argparse.ArgumentParser(prog="recsys collect",
                                  description="the recsys event collector (POST /events -> Kafka)")
    cli.add_argument("--bootstrap", help="host:port of a broker (default: RECSYS_KAFKA_BOOTSTRAP or var/kafka)")
    cli.add_argument("--topic", default=EVENTS_TOPIC)
    cli.add_argument("--catalog-topic", default=CATALOG_TOPIC, help="the topic of item (catalog) events")
    cli.add_argument("--host", default="127.0.0.1")
    cli.add_argument("--port", type=int, default=8090)
    cli.add_argument("--create-topic", type=int, metavar="PARTITIONS", default=0,
                     help="create the topic with this many partitions if it is missing")
    limits = cli.add_argument_group("limits (unset: the setting named)")
    limits.add_argument("--max-events", type=int, help="events in one request (RECSYS_COLLECTOR_MAX_EVENTS)")
    limits.add_argument("--max-body-bytes", type=int, help="bytes of one body (RECSYS_COLLECTOR_MAX_BODY_BYTES)")
    limits.add_argument("--queue-max-messages", type=int,
                        help="producer queue, beyond it 503 (RECSYS_COLLECTOR_QUEUE_MAX_MESSAGES)")
    limits.add_argument("--delivery-timeout-s", type=float,
                        help="broker acknowledgement of a batch (RECSYS_COLLECTOR_DELIVERY_TIMEOUT_SECONDS)")
    return cli


def config_from_args(args: argparse.Namespace, settings: Settings, bootstrap: str) -> CollectorConfig:
    """The collector's configuration: ``settings``, then the limits given on the command line."""
    flags = {name: getattr(args, name) for name in ("max_events", "max_body_bytes", "queue_max_messages",
                                                    "delivery_timeout_s")}
    return CollectorConfig.from_settings(settings, bootstrap, topic=args.topic, catalog_topic=args.catalog_topic,
                                         **{k: v for k, v in flags.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    """``python -m recsys.streaming.collector``: serve the collector with uvicorn (also ``recsys collect``)."""
    import uvicorn

    from recsys.streaming.topics import default_bootstrap, ensure_topic

    cli = parser()
    args = cli.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        bootstrap = args.bootstrap or default_bootstrap()
        config = config_from_args(args, Settings.from_env(), bootstrap)
        if args.create_topic:
            ensure_topic(bootstrap, args.topic, args.create_topic)
            ensure_topic(bootstrap, args.catalog_topic, args.create_topic)
    except (StreamingError, ConfigError) as err:
        cli.exit(1, f"recsys collect: {err}\n")
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
