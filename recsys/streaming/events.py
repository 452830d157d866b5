"""One behaviour event checked against the canonical schema at the edge, and its wire format on Kafka.

An event on the wire (HTTP body and Kafka message value) is a JSON object with the canonical columns:
``event_id, event_time, user_id, item_id, event_type, quantity, price`` and optionally ``session_id`` and
``country``. ``event_time`` is an ISO 8601 string with a time zone (``2026-12-01T06:00:00.123Z``); it is
stored in UTC. The rules are the ones the ``raw_events`` suite checks on a partition, so an event that
passes here passes validation there.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from recsys import schema

if TYPE_CHECKING:
    from recsys.config import Settings

OPTIONAL_FIELDS = (schema.SESSION_ID, schema.COUNTRY)
ID_FIELDS = (schema.EVENT_ID, schema.USER_ID, schema.ITEM_ID)


@dataclass(frozen=True)
class EventRules:
    """Limits an accepted event keeps. ``max_future``: clock skew allowed ahead of the collector's clock;
    ``max_age``: the oldest event accepted (older ones belong to a day closed long ago)."""

    max_id_length: int = 64
    max_quantity: int = 100_000
    max_price: float = 100_000.0
    max_future: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(days=7)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> EventRules:
        """The validation limits of ``settings`` (the same ones the suite uses), plus ``overrides``."""
        rules = cls(
            max_id_length=settings.validation_max_id_length,
            max_quantity=settings.validation_max_quantity,
            max_price=settings.validation_max_price,
        )
        return cls(**{**rules.__dict__, **overrides})


@dataclass(frozen=True)
class Problem:
    """Why event number ``index`` of a batch was refused, naming the field."""

    index: int
    field: str
    problem: str
    event_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "problem": self.problem, "event_id": self.event_id}


def id_problem(value: object, max_length: int) -> str | None:
    """Why ``value`` is not an id (None if it is one), by the one id rule of :func:`recsys.schema.valid_id`
    (the rule validation, the vocabularies and the recommendation service apply)."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not 1 <= len(value) <= max_length:
        return f"must be 1 to {max_length} characters, got {len(value)}"
    if not schema.valid_id(value, max_length):
        return (f"must not hold control, format or separator characters or '/', start or end with a space, "
                f"or be only dots; got {value!r}")
    return None


def parse_time(value: object) -> datetime:
    """An ISO 8601 string with a time zone as an aware UTC datetime; ValueError says what is wrong."""
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 string with a time zone, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"is not an ISO 8601 time: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"has no time zone: {value[:40]!r} (add 'Z' for UTC)")
    return parsed.astimezone(UTC)


def check_event(
    obj: object, index: int, rules: EventRules, now: datetime | None
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The canonical event of a decoded JSON value, or every problem with it (each naming a field).

    ``now``: the receiving clock (aware UTC) for the future/age rules; None skips them (the sink, which
    re-checks what it reads from the topic, has no business refusing old events).
    """
    if not isinstance(obj, dict):
        return None, [Problem(index, "(event)", f"must be a JSON object, got {type(obj).__name__}")]
    raw_id = obj.get(schema.EVENT_ID)
    event_id = raw_id if isinstance(raw_id, str) else None
    problems: list[Problem] = []

    def bad(field: str, problem: str) -> None:
        problems.append(Problem(index, field, problem, event_id))

    for name in sorted(set(obj) - set(schema.EVENT_COLUMNS)):
        bad(str(name), "unknown field (the event fields are " + ", ".join(schema.EVENT_COLUMNS) + ")")
    for name in schema.REQUIRED_EVENT_COLUMNS:
        if obj.get(name) is None:
            bad(name, "is required")
    out: dict[str, Any] = {}
    for name in ID_FIELDS:
        if obj.get(name) is not None:
            why = id_problem(obj[name], rules.max_id_length)
            if why:
                bad(name, why)
            out[name] = obj[name]
    if obj.get(schema.EVENT_TIME) is not None:
        try:
            when = parse_time(obj[schema.EVENT_TIME])
        except ValueError as err:
            bad(schema.EVENT_TIME, str(err))
        else:
            out[schema.EVENT_TIME] = when
            if now is not None and when > now + rules.max_future:
                bad(schema.EVENT_TIME, f"is in the future: {when.isoformat()} is more than "
                                       f"{rules.max_future} after the collector's clock ({now.isoformat()})")
            if now is not None and when < now - rules.max_age:
                bad(schema.EVENT_TIME, f"is too old: {when.isoformat()} is more than {rules.max_age} before "
                                       f"the collector's clock ({now.isoformat()})")
    kind = obj.get(schema.EVENT_TYPE)
    if kind is not None:
        if kind not in schema.EVENT_TYPES:
            bad(schema.EVENT_TYPE, f"must be one of {', '.join(schema.EVENT_TYPES)}, got {str(kind)[:40]!r}")
        out[schema.EVENT_TYPE] = kind
    quantity = obj.get(schema.QUANTITY)
    if quantity is not None:
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            bad(schema.QUANTITY, f"must be a whole number, got {quantity!r:.40}")
        elif not 1 <= quantity <= rules.max_quantity:
            bad(schema.QUANTITY, f"must be 1 to {rules.max_quantity}, got {quantity}")
        out[schema.QUANTITY] = quantity
    price = obj.get(schema.PRICE)
    if price is not None:
        if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price):
            bad(schema.PRICE, f"must be a number, got {price!r:.40}")
        elif not 0 <= price <= rules.max_price:
            bad(schema.PRICE, f"must be 0 to {rules.max_price:g}, got {price}")
        out[schema.PRICE] = float(price)
    for name in OPTIONAL_FIELDS:
        value = obj.get(name)
        if value is not None:
            why = id_problem(value, rules.max_id_length)
            if why:
                bad(name, why)
        out[name] = value
    return (None, problems) if problems else (out, [])


def format_time(when: datetime) -> str:
    """UTC with microseconds and a ``Z``: ``2026-12-01T06:00:00.123456Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode(event: dict[str, Any]) -> bytes:
    """The Kafka message value of a checked event (compact JSON, UTF-8)."""
    wire = {name: event.get(name) for name in schema.EVENT_COLUMNS}
    wire[schema.EVENT_TIME] = format_time(event[schema.EVENT_TIME])
    return json.dumps(wire, separators=(",", ":"), ensure_ascii=False).encode()
