"""Live user state for ``recsys serve``: the events and catalog topics applied in memory, seconds after they happen.

The served version holds each customer's recent items as of its history snapshot
(``features/dt=S/history.parquet``, as of the end of day S) and the catalog as of its serving index. With
``RECSYS_SERVE_LIVE=1`` the service also follows both topics (:class:`LiveFollower`, one background thread):

- **behaviour events** (``recsys.events``): each event of a customer moves its item to the front of the
  customer's recent items (``days``, the number of distinct days the item was used, grows by one on a new day:
  the snapshot's own rule, :func:`recsys.features.history.update`), so the query vector (mean of the recent
  items, the query tower's history path) and the repeat term use it at the next request. A customer the
  model has no row for (a new customer) is embedded from these items alone (OOV user row + their mean), so
  their first event already makes the answer personal. The customer's **session items** (the day's views and
  carts not bought since, :func:`recsys.model.session.next_session`; a new day starts a new session) get the
  version's session term in answers of the same UTC day.
- **item events** (``recsys.catalog-events``): ``out_of_stock`` and ``delisted`` remove an item from every
  answer; ``back_in_stock`` and ``listed`` bring it back (only an item the serving index holds: a new item
  needs the next catalog partition and index refresh); ``price_change`` is recorded (the ranking's price band
  is the version's until the next training). The latest event by event time wins per item. The daily catalog
  partition, the record of truth, is rebuilt from the same events (:mod:`recsys.streaming.catalog`).

**Start and restart.** The state is rebuilt, not saved: the follower waits for the first served version,
then reads each topic from the broker offset of (snapshot end - ``replay_margin``) (``offsets_for_times``
on the message timestamps) and applies every behaviour event whose event time is at or after the end of
snapshot day S (earlier ones are in the snapshot) and every item event at or after the end of the index's
catalog day. Event ids seen recently are ignored a second time (a client resending a batch).

**Freshness.** ``state_as_of`` is the last moment at which the follower asked the broker for the end offsets
of every partition and has since consumed up to them (asked every ``freshness_seconds``): every event the
broker acknowledged (the collector's 202) before it is in the state. Each answer carries it and the
customer's ``last_event_at``.

**Bounded memory.** Only customers with live events are held (their recent items, cut at the snapshot's
length ``max(history_length, repeat_length)``); beyond ``live_max_users`` the least recently active are
dropped (they fall back to the snapshot; counted in ``evicted_users``). Item state is one entry per item
with an event; event-id deduplication remembers the last ``dedup_window`` ids.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from recsys import schema
from recsys.model import session
from recsys.serving.model_holder import LiveInputs
from recsys.streaming import StreamingError, events
from recsys.streaming.topics import CATALOG_TOPIC, EVENTS_TOPIC

if TYPE_CHECKING:
    from recsys.config import Settings
    from recsys.serving.model_holder import ModelHolder

log = logging.getLogger(__name__)

UNAVAILABLE = frozenset({events.OUT_OF_STOCK, events.DELISTED})


@dataclass(frozen=True)
class LiveConfig:
    """Where the follower reads and how much it keeps."""

    bootstrap: str
    events_topic: str = EVENTS_TOPIC
    catalog_topic: str = CATALOG_TOPIC
    group: str = "recsys-serve"  # no offsets are committed: every start replays from the snapshot's time
    max_users: int = 200_000
    length: int = 200  # recent items kept per customer (the snapshot's max(history_length, repeat_length))
    replay_margin: timedelta = timedelta(hours=2)  # read from this long before the snapshot's end (late events)
    dedup_window: int = 200_000
    poll_batch: int = 1000
    freshness_seconds: float = 0.1  # how often the topics' end offsets are asked (``state_as_of``'s step)
    session_length: int = 50  # session items kept per customer (the query's history_length)


def live_config(settings: Settings, events_topic: str = EVENTS_TOPIC,
                catalog_topic: str = CATALOG_TOPIC) -> LiveConfig | None:
    """The follower's configuration when ``settings.serve_live`` is on (None when off).

    The broker is ``settings.kafka_bootstrap``, else the embedded one of ``scripts/kafka.sh``;
    :class:`~recsys.streaming.StreamingError` says how to name one when neither is there.
    """
    if not settings.serve_live:
        return None
    from recsys.streaming.topics import default_bootstrap

    bootstrap = settings.kafka_bootstrap or default_bootstrap()
    return LiveConfig(bootstrap=bootstrap, events_topic=events_topic, catalog_topic=catalog_topic,
                      max_users=settings.live_max_users,
                      length=max(settings.history_length, settings.repeat_length),
                      session_length=settings.history_length)


@dataclass(frozen=True)
class UserState:
    """One customer's recent items since the snapshot, merged with it; replaced whole on every event."""

    items: tuple[str, ...]  # most recent first
    days: tuple[int, ...]  # distinct days each item was used
    last: tuple[str, ...]  # ISO day each item was last used live ("" = only in the snapshot)
    last_event_at: datetime
    events: int  # live events applied
    # the session items (:mod:`recsys.model.session`): items of the customer's events on ``session_day`` that were
    # not purchases, most recent first, an item leaving when bought
    session: tuple[str, ...] = ()
    session_day: str = ""  # ISO day of the session's events ("": none)


@dataclass(frozen=True)
class ItemState:
    available: bool
    price: float | None
    event_time: datetime
    event_type: str


def _end_of(day: date | None) -> datetime | None:
    """The first moment after ``day`` (UTC); None for no day (everything is after it)."""
    if day is None:
        return None
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)


class LiveState:
    """The in-memory state the follower writes and request handlers read (one lock, short sections)."""

    def __init__(self, config: LiveConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._users: OrderedDict[str, UserState] = OrderedDict()
        self._items: dict[str, ItemState] = {}
        self.unavailable: frozenset[str] = frozenset()  # replaced whole (readers take one reference)
        self._seen_ids: set[str] = set()
        self._seen_order: deque[str] = deque()
        self.events_from: datetime | None = None  # behaviour events before this are in the snapshot
        self.catalog_from: datetime | None = None  # item events before this are in the index's catalog
        self.as_of: datetime | None = None
        self.counts = {"applied": 0, "items_applied": 0, "before_snapshot": 0, "duplicates": 0, "invalid": 0,
                       "evicted_users": 0}

    # --- writing (the follower's thread) -----------------------------------------------------------
    def _first_time(self, event_id: str) -> bool:
        if event_id in self._seen_ids:
            self.counts["duplicates"] += 1
            return False
        self._seen_ids.add(event_id)
        self._seen_order.append(event_id)
        if len(self._seen_order) > self.config.dedup_window:
            self._seen_ids.discard(self._seen_order.popleft())
        return True

    def apply_event(self, event: dict[str, Any], base: tuple[list[str], list[int]] | None) -> bool:
        """Apply one checked behaviour event; ``base`` is the customer's snapshot history (items, days),
        used when the customer has no live state yet. True if applied."""
        when: datetime = event[schema.EVENT_TIME]
        if self.events_from is not None and when < self.events_from:
            self.counts["before_snapshot"] += 1
            return False
        user, item, day = event[schema.USER_ID], event[schema.ITEM_ID], when.date().isoformat()
        with self._lock:
            if not self._first_time(event[schema.EVENT_ID]):
                return False
            old = self._users.get(user)
            if old is None:
                items, days = base if base is not None else ([], [])
                old = UserState(tuple(items), tuple(days), ("",) * len(items), when, 0)
            self._users[user] = _moved_to_front(old, item, day, when, self.config.length,
                                                event.get(schema.EVENT_TYPE) == session.PURCHASE,
                                                self.config.session_length)
            self._users.move_to_end(user)
            if len(self._users) > self.config.max_users:
                self._users.popitem(last=False)
                self.counts["evicted_users"] += 1
            self.counts["applied"] += 1
        return True

    def apply_item_event(self, event: dict[str, Any]) -> bool:
        """Apply one checked item event (the latest by event time wins per item). True if applied."""
        when: datetime = event[schema.EVENT_TIME]
        if self.catalog_from is not None and when < self.catalog_from:
            self.counts["before_snapshot"] += 1
            return False
        item, kind = event[schema.ITEM_ID], event[schema.EVENT_TYPE]
        with self._lock:
            if not self._first_time(event[schema.EVENT_ID]):
                return False
            old = self._items.get(item)
            if old is not None and when < old.event_time:
                return False
            available = old.available if old is not None else True
            if kind in UNAVAILABLE:
                available = False
            elif kind in (events.BACK_IN_STOCK, events.LISTED):
                available = True
            price = event.get(schema.PRICE) if event.get(schema.PRICE) is not None else (old.price if old else None)
            self._items[item] = ItemState(available, price, when, kind)
            if (item in self.unavailable) != (not available):
                self.unavailable = self.unavailable - {item} if available else self.unavailable | {item}
            self.counts["items_applied"] += 1
        return True

    # --- reading (request handlers) ----------------------------------------------------------------
    def user(self, user_id: str) -> UserState | None:
        with self._lock:
            return self._users.get(user_id)

    def inputs(self, user_id: str, now: datetime | None = None) -> tuple[LiveInputs, UserState | None]:
        """What a request for ``user_id`` ranks with: the customer's live history (None: use the
        snapshot's), the items unavailable since the index, and the customer's session items if their session
        is of today (``now``'s UTC day; default the clock's)."""
        state = self.user(user_id)
        if state is None:
            return LiveInputs(None, self.unavailable), None
        today = (now or datetime.now(UTC)).astimezone(UTC).date().isoformat()
        current = state.session if state.session_day == today else ()
        return LiveInputs((state.items, state.days), self.unavailable, current), state

    def status(self) -> dict[str, Any]:
        with self._lock:
            users, items = len(self._users), len(self._items)
        return {"state_as_of": _iso(self.as_of), "users": users, "items": items,
                "unavailable_items": len(self.unavailable), "events_from": _iso(self.events_from),
                "catalog_from": _iso(self.catalog_from), **self.counts}


def _moved_to_front(old: UserState, item: str, day: str, when: datetime, length: int, purchased: bool = False,
                    session_length: int = 50) -> UserState:
    """``old`` after one event on ``item`` on ``day``: the item first, its days + 1 on a new day
    (:func:`recsys.model.session.moved_to_front`); the session items of ``day`` after it
    (:func:`recsys.model.session.next_session`: a new day starts a new session)."""
    items, days, last = session.moved_to_front(old.items, old.days, old.last, item, day, length)
    current = old.session if old.session_day == day else ()
    if day >= old.session_day:  # an event of an earlier day than the session's (late) leaves the session alone
        current, session_day = session.next_session(current, item, purchased, session_length), day
    else:
        current, session_day = old.session, old.session_day
    return UserState(items, days, last, max(when, old.last_event_at) if old.events else when, old.events + 1,
                     current, session_day)


def _iso(when: datetime | None) -> str | None:
    return events.format_time(when) if when is not None else None


class LiveFollower:
    """The background thread that replays and then follows both topics into a :class:`LiveState`."""

    def __init__(self, config: LiveConfig, holder: ModelHolder) -> None:
        self.config = config
        self.holder = holder
        self.state = LiveState(config)
        self.error: str | None = None
        self.replayed = threading.Event()  # set once every partition was read to its end after the start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rules = events.EventRules()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="recsys-live-follower", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def status(self) -> dict[str, Any]:
        return {"replayed": self.replayed.is_set(), "error": self.error, "topics":
                [self.config.events_topic, self.config.catalog_topic], **self.state.status()}

    def _run(self) -> None:
        while not self._stop.is_set() and self.holder.current is None:
            self._stop.wait(0.1)  # the snapshot's day comes with the first served version
        while not self._stop.is_set():
            try:
                self._follow()
                return
            except StreamingError as err:
                self.error = str(err)
                log.error("live state: %s; retrying in 5 s", err)
            except Exception as err:  # the service keeps answering from the snapshot
                self.error = f"{type(err).__name__}: {err}"
                log.exception("live state follower failed; retrying in 5 s")
            self._stop.wait(5)

    def _consumer(self) -> Any:
        from confluent_kafka import Consumer

        return Consumer({
            "bootstrap.servers": self.config.bootstrap,
            "group.id": self.config.group,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 20,
            "socket.nagle.disable": True,
        })

    def _follow(self) -> None:
        current = self.holder.current
        assert current is not None
        catalog_day = current.index_meta.get("catalog_date")
        self.state.events_from = _end_of(current.snapshot_day)
        self.state.catalog_from = _end_of(date.fromisoformat(catalog_day) if catalog_day else None)
        consumer = self._consumer()
        try:
            assigned = self._assign(consumer)
            self.error = None
            self._loop(consumer, assigned)
        finally:
            consumer.close()

    def _assign(self, consumer: Any) -> set[tuple[str, int]]:
        """Assign every partition of both topics at the offset of its replay start."""
        from confluent_kafka import OFFSET_END, KafkaException, TopicPartition

        wanted = []
        for topic, since in ((self.config.events_topic, self.state.events_from),
                             (self.config.catalog_topic, self.state.catalog_from)):
            try:
                meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            except KafkaException as err:
                raise StreamingError(f"the broker {self.config.bootstrap} does not answer: "
                                     f"{err.args[0].str()}") from err
            if meta is None or meta.error is not None or not meta.partitions:
                raise StreamingError(f"topic {topic!r} is missing on {self.config.bootstrap} (create it: "
                                     f"recsys collect --create-topic N)")
            ms = int((since - self.config.replay_margin).timestamp() * 1000) if since is not None else 0
            wanted += [TopicPartition(topic, p, ms) for p in sorted(meta.partitions)]
        try:
            found = consumer.offsets_for_times(wanted, timeout=30)
        except KafkaException as err:
            raise StreamingError(f"cannot find the replay offsets: {err.args[0].str()}") from err
        # -1: no message at or after that time, so the replay starts at the end
        starts = [TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                  for tp in found]
        consumer.assign(starts)
        log.info("live state: replaying %s from events after %s, items after %s",
                 {f"{tp.topic}[{tp.partition}]": tp.offset for tp in starts}, self.state.events_from,
                 self.state.catalog_from)
        return {(tp.topic, tp.partition) for tp in starts}

    def _loop(self, consumer: Any, assigned: set[tuple[str, int]]) -> None:
        """Consume and apply; ``as_of`` moves to the moment the partitions' end offsets were last asked of the
        broker once the consumer has passed them (so every message acknowledged before it is applied)."""
        from confluent_kafka import KafkaError

        at_end: set[tuple[str, int]] = set()
        target: tuple[datetime, dict[tuple[str, int], int]] | None = None
        asked = 0.0
        while not self._stop.is_set():
            if target is None and time.monotonic() - asked >= self.config.freshness_seconds:
                asked = time.monotonic()
                target = (datetime.now(UTC), self._ends(consumer, assigned))
            for msg in consumer.consume(num_messages=self.config.poll_batch, timeout=0.05):
                err = msg.error()
                key = (msg.topic(), msg.partition())
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(key)
                    elif err.fatal():
                        raise StreamingError(f"the live consumer failed: {err.str()}")
                    else:
                        log.warning("live consumer: %s", err.str())
                    continue
                at_end.discard(key)
                self._apply(msg.topic(), msg.value())
            if target is not None and self._passed(consumer, target[1], at_end):
                self.state.as_of = target[0]
                target = None
                if not self.replayed.is_set():
                    self.replayed.set()
                    log.info("live state replayed: %s", self.state.status())

    def _ends(self, consumer: Any, assigned: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Each assigned partition's end offset (high watermark) as the broker has it now."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            return {key: int(consumer.get_watermark_offsets(TopicPartition(*key), timeout=10)[1])
                    for key in sorted(assigned)}
        except KafkaException as err:
            raise StreamingError(f"cannot read the end offsets: {err.args[0].str()}") from err

    @staticmethod
    def _passed(consumer: Any, ends: dict[tuple[str, int], int], at_end: set[tuple[str, int]]) -> bool:
        """True once the consumer's position is at or past ``ends`` on every partition (a partition without
        a position yet, assigned at its end, counts once it reported its end)."""
        from confluent_kafka import TopicPartition

        positions = consumer.position([TopicPartition(*key) for key in ends])
        for tp in positions:
            key = (tp.topic, tp.partition)
            if tp.offset < 0:
                if key not in at_end:
                    return False
            elif tp.offset < ends[key]:
                return False
        return True

    def _apply(self, topic: str, value: bytes | None) -> None:
        event = events.decode_any(value, self._rules)
        if event is None:
            self.state.counts["invalid"] += 1
            return
        if topic == self.config.catalog_topic:
            if event[schema.EVENT_TYPE] in events.ITEM_EVENT_TYPES:
                self.state.apply_item_event(event)
            return
        if event[schema.EVENT_TYPE] in events.ITEM_EVENT_TYPES:
            return
        user = event[schema.USER_ID]
        base = None
        if self.state.user(user) is None:
            current = self.holder.current
            base = current.snapshot_history(user) if current is not None else None
        self.state.apply_event(event, base)


def wait_replayed(follower: LiveFollower, timeout: float) -> bool:
    """True once ``follower`` has replayed its topics (for callers that must not answer from a partial state)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if follower.replayed.wait(0.1):
            return True
    return False
