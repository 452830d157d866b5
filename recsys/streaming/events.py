"""One behaviour event checked against the canonical schema at the edge, and its wire format on Kafka.

An event on the wire (HTTP body and Kafka message value) is a JSON object with the canonical columns:
``event_id, event_time, user_id, item_id, event_type, quantity, price`` and optionally ``session_id`` and
``country``. ``event_time`` is an ISO 8601 string with a time zone (``2026-12-01T06:00:00.123Z``); it is
stored in UTC. The rules are the ones the ``raw_events`` suite checks on a partition, so an event that
passes here passes validation there.

Item (catalog) events share the path: an object whose ``event_type`` is one of :data:`ITEM_EVENT_TYPES`
(``listed, delisted, out_of_stock, back_in_stock, price_change``) is an item event with the fields
``event_id, event_time, item_id, event_type`` and optionally ``price`` (required for ``price_change``),
``title`` and ``category`` (a ``listed`` item's catalog entry). The collector sends them to the catalog
topic keyed by item (:func:`check_any`); the service applies them at once and the daily catalog partition is
rebuilt from them (:mod:`recsys.streaming.catalog`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from recsys import schema

if TYPE_CHECKING:
    from recsys.config import Settings

OPTIONAL_FIELDS = (schema.SESSION_ID, schema.COUNTRY)
# item events: availability and price changes of one item (catalog), not behaviour
LISTED, DELISTED, OUT_OF_STOCK, BACK_IN_STOCK, PRICE_CHANGE = (
    "listed", "delisted", "out_of_stock", "back_in_stock", "price_change")
ITEM_EVENT_TYPES = (LISTED, DELISTED, OUT_OF_STOCK, BACK_IN_STOCK, PRICE_CHANGE)
ITEM_EVENT_COLUMNS = (schema.EVENT_ID, schema.EVENT_TIME, schema.ITEM_ID, schema.EVENT_TYPE, schema.PRICE,
                      schema.TITLE, schema.CATEGORY)
MAX_TEXT_LENGTH = 500  # title and category of an item event
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
    event = _accepted(obj, rules, now)
    if event is not None:
        return event, []
    raw_id = obj.get(schema.EVENT_ID)
    event_id = raw_id if isinstance(raw_id, str) else None
    found = [(str(name), "unknown field (the event fields are " + ", ".join(schema.EVENT_COLUMNS) + ")")
             for name in sorted(set(obj) - set(schema.EVENT_COLUMNS))]
    found += [(name, "is required") for name in schema.REQUIRED_EVENT_COLUMNS if obj.get(name) is None]
    out: dict[str, Any] = {}
    for name, check in _FIELD_CHECKS:
        value = obj.get(name)
        if value is not None:
            out[name], why = check(value, rules, now)
            found += [(name, problem) for problem in why]
        elif name in OPTIONAL_FIELDS:
            out[name] = None
    if found:
        return None, [Problem(index, name, problem, event_id) for name, problem in found]
    return out, []


_COLUMNS = frozenset(schema.EVENT_COLUMNS)
_ID_MATCH = re.compile(schema.ID_PATTERN).fullmatch  # schema.valid_id's pattern


def _accepted(obj: dict[Any, Any], rules: EventRules, now: datetime | None) -> dict[str, Any] | None:
    """The canonical event of ``obj`` if it is a plainly good one (what :func:`check_event` returns for it), else
    None: then check_event's field by field checks decide (and say why).

    The sink's CPU goes mostly to checking events; this is the same rules without building a problem list, field
    by field calls or messages. Anything unusual (a str subclass, a bool, a missing field) takes the full path.
    """
    if not obj.keys() <= _COLUMNS:
        return None
    get = obj.get
    limit = rules.max_id_length
    out: dict[str, Any] = {}
    for name in ID_FIELDS:
        value = get(name)
        if not _plain_id(value, limit):
            return None
        out[name] = value
    try:
        when = parse_time(get(schema.EVENT_TIME))
    except ValueError:
        return None
    if now is not None and not now - rules.max_age <= when <= now + rules.max_future:
        return None
    out[schema.EVENT_TIME] = when
    kind = get(schema.EVENT_TYPE)
    if kind is None or kind not in schema.EVENT_TYPES:
        return None
    out[schema.EVENT_TYPE] = kind
    quantity: Any = get(schema.QUANTITY)
    price: Any = get(schema.PRICE)
    if not _plain_amounts(quantity, price, rules):
        return None
    out[schema.QUANTITY] = quantity
    out[schema.PRICE] = float(price)
    for name in OPTIONAL_FIELDS:
        value = get(name)
        if value is not None and not _plain_id(value, limit):
            return None
        out[name] = value
    return out


def _plain_amounts(quantity: Any, price: Any, rules: EventRules) -> bool:
    """A whole quantity in 1..max_quantity and a finite price in 0..max_price (an int or a float, not a bool)."""
    return (type(quantity) is int and 1 <= quantity <= rules.max_quantity
            and (type(price) is float or type(price) is int) and math.isfinite(price)
            and 0 <= price <= rules.max_price)


def _plain_id(value: object, limit: int) -> bool:
    """``value`` is a str (not a subclass) and an id by :func:`id_problem`'s rule."""
    return type(value) is str and 1 <= len(value) <= limit and _ID_MATCH(value) is not None


# A field's check: its canonical value (meaningful only without problems) and its problems.
_Check = Callable[[Any, EventRules, datetime | None], tuple[Any, list[str]]]


def _check_id(value: Any, rules: EventRules, now: datetime | None) -> tuple[Any, list[str]]:
    why = id_problem(value, rules.max_id_length)
    return value, [why] if why else []


def _check_time(value: Any, rules: EventRules, now: datetime | None) -> tuple[Any, list[str]]:
    try:
        when = parse_time(value)
    except ValueError as err:
        return value, [str(err)]
    if now is None:
        return when, []
    problems = []
    if when > now + rules.max_future:
        problems.append(f"is in the future: {when.isoformat()} is more than {rules.max_future} after the "
                        f"collector's clock ({now.isoformat()})")
    if when < now - rules.max_age:
        problems.append(f"is too old: {when.isoformat()} is more than {rules.max_age} before the collector's "
                        f"clock ({now.isoformat()})")
    return when, problems


def _check_type(value: Any, rules: EventRules, now: datetime | None) -> tuple[Any, list[str]]:
    if value not in schema.EVENT_TYPES:
        return value, [f"must be one of {', '.join(schema.EVENT_TYPES)}, got {str(value)[:40]!r}"]
    return value, []


def _check_quantity(value: Any, rules: EventRules, now: datetime | None) -> tuple[Any, list[str]]:
    if isinstance(value, bool) or not isinstance(value, int):
        return value, [f"must be a whole number, got {value!r:.40}"]
    if not 1 <= value <= rules.max_quantity:
        return value, [f"must be 1 to {rules.max_quantity}, got {value}"]
    return value, []


def _check_price(value: Any, rules: EventRules, now: datetime | None) -> tuple[Any, list[str]]:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return value, [f"must be a number, got {value!r:.40}"]
    if not 0 <= value <= rules.max_price:
        return value, [f"must be 0 to {rules.max_price:g}, got {value}"]
    return float(value), []


# the known fields, in the order their problems are reported
_FIELD_CHECKS: tuple[tuple[str, _Check], ...] = (
    *((name, _check_id) for name in ID_FIELDS),
    (schema.EVENT_TIME, _check_time),
    (schema.EVENT_TYPE, _check_type),
    (schema.QUANTITY, _check_quantity),
    (schema.PRICE, _check_price),
    *((name, _check_id) for name in OPTIONAL_FIELDS),
)


def format_time(when: datetime) -> str:
    """UTC with microseconds and a ``Z``: ``2026-12-01T06:00:00.123456Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# one encoder for every message: json.dumps with options builds a new encoder per call (the collector's hot path)
_WIRE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode(event: dict[str, Any]) -> bytes:
    """The Kafka message value of a checked event (compact JSON, UTF-8)."""
    wire = {name: event.get(name) for name in schema.EVENT_COLUMNS}
    wire[schema.EVENT_TIME] = format_time(event[schema.EVENT_TIME])
    return _WIRE.encode(wire).encode()


def is_item_event(obj: object) -> bool:
    """True if ``obj`` claims to be an item (catalog) event: its ``event_type`` is one of ITEM_EVENT_TYPES."""
    return isinstance(obj, dict) and obj.get(schema.EVENT_TYPE) in ITEM_EVENT_TYPES


def check_any(
    obj: object, index: int, rules: EventRules, now: datetime | None
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """:func:`check_item_event` for an item event, else :func:`check_event` (a behaviour event)."""
    if is_item_event(obj):
        return check_item_event(obj, index, rules, now)
    return check_event(obj, index, rules, now)


def check_item_event(
    obj: object, index: int, rules: EventRules, now: datetime | None
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The canonical item event of a decoded JSON value, or every problem with it (each naming a field)."""
    if not isinstance(obj, dict):
        return None, [Problem(index, "(event)", f"must be a JSON object, got {type(obj).__name__}")]
    event = _accepted(obj, rules, now)
    if event is not None:
        return event, []
    raw_id = obj.get(schema.EVENT_ID)
    event_id = raw_id if isinstance(raw_id, str) else None
    found = [(str(name), "unknown field (the item event fields are " + ", ".join(ITEM_EVENT_COLUMNS) + ")")
             for name in sorted(set(obj) - set(ITEM_EVENT_COLUMNS))]
    required = (schema.EVENT_ID, schema.EVENT_TIME, schema.ITEM_ID, schema.EVENT_TYPE)
    found += [(name, "is required") for name in required if obj.get(name) is None]
    if obj.get(schema.EVENT_TYPE) == PRICE_CHANGE and obj.get(schema.PRICE) is None:
        found.append((schema.PRICE, "is required for a price_change"))
    out: dict[str, Any] = {schema.PRICE: None, schema.TITLE: None, schema.CATEGORY: None}
    for name, check in _ITEM_CHECKS:
        value = obj.get(name)
        if value is not None:
            out[name], why = check(value, rules, now)
            found += [(name, problem) for problem in why]
    if found:
        return None, [Problem(index, name, problem, event_id) for name, problem in found]
    return out, []


def _check_item_type(value: Any, rules: EventRules, now: datetime | None) -> tuple[Any, list[str]]:
    if value not in ITEM_EVENT_TYPES:
        return value, [f"must be one of {', '.join(ITEM_EVENT_TYPES)}, got {str(value)[:40]!r}"]
    return value, []


def _check_text(value: Any, rules: EventRules, now: datetime | None) -> tuple[Any, list[str]]:
    if not isinstance(value, str):
        return value, [f"must be a string, got {type(value).__name__}"]
    if len(value) > MAX_TEXT_LENGTH:
        return value, [f"must be at most {MAX_TEXT_LENGTH} characters, got {len(value)}"]
    return value, []


_ITEM_CHECKS: tuple[tuple[str, _Check], ...] = (
    (schema.EVENT_ID, _check_id),
    (schema.ITEM_ID, _check_id),
    (schema.EVENT_TIME, _check_time),
    (schema.EVENT_TYPE, _check_item_type),
    (schema.PRICE, _check_price),
    (schema.TITLE, _check_text),
    (schema.CATEGORY, _check_text),
)


def encode_item(event: dict[str, Any]) -> bytes:
    """The Kafka message value of a checked item event (compact JSON, UTF-8)."""
    wire = {name: event.get(name) for name in ITEM_EVENT_COLUMNS}
    wire[schema.EVENT_TIME] = format_time(event[schema.EVENT_TIME])
    return _WIRE.encode(wire).encode()


def decode_any(value: bytes | None, rules: EventRules) -> dict[str, Any] | None:
    """A Kafka message value as a checked event (behaviour or item), or None if it is not one."""
    try:
        obj = json.loads(value or b"")
    except ValueError:
        return None
    event, _ = check_any(obj, 0, rules, now=None)
    return event
