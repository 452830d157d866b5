"""The sink: a Kafka consumer group that writes the events topic to the partition store exactly once.

Each topic partition is cut into chunks of consecutive offsets (at most ``max_file_events`` events, or what
was produced within ``max_file_seconds`` of the chunk's first event: the bound on how late a written event
becomes visible, bench/realtime/sink_lag.py). A chunk becomes one parquet file per event day::

    raw/events/dt=D/part-p0002-000000001200-000000001299.parquet     (partition 2, offsets 1200..1299)

Per chunk, in this order: (1) its offset range is recorded in ``streaming/sink/<topic>/p0002.json``;
(2) its files are published (each written to a temporary name and renamed); (3) the offsets are committed
(manual commit). A sink killed anywhere in between restarts from the committed offset, finds the recorded
range, cuts the same chunk again and rewrites the same files under the same names: nothing is lost and
nothing is written twice. Events whose ``event_id`` the partition already holds for that day (a client
resending a batch) are dropped and counted as duplicates. Both copies of an event share its ``user_id``,
the message key, so they are on the same topic partition: deduplication needs no other partition.

Day D is closed (its files compacted, ``_sink.json``, then ``_SUCCESS``) once the event-time watermark passes
D + 1 day + ``allowed_lateness``. The watermark is the earliest "latest event time" among the assigned
partitions that still have unread messages; when every partition is read to its end, it is the later of the
newest event time and the wall clock (a quiet topic still closes its days). Events of a closed day that
arrive later go to ``raw/late_events/dt=D/`` and are counted; a closed partition is never modified.
With ``closed_topic`` set, each closed day is then announced there (key ``YYYY-MM-DD``, value the
partition's ``_sink.json``; at least once), for runs scheduled by events instead of a sensor.
Messages that are not valid events go to ``raw/invalid_events/`` (JSON lines, with offset and problems).

Compaction (:meth:`Sink._compact`): the short file bound that keeps the lag low makes many small files (up to
partitions x 43,200 a day at 2 s); before day D is closed, each run of consecutive files of one topic partition
(in name order) is merged into one file of at most ``compact_max_rows`` rows / ``compact_max_bytes`` bytes, named
by the offsets it spans, then the small ones are deleted::

    part-p0002-000000001200-000000001299.parquet + ...-001300-...-001399 -> part-p0002-000000001200-000000001399.parquet

Its rows are the small files' rows in the order a reader reads them (files in name order, then rows), and it
sorts where they sorted, so every reader of the closed partition sees the same rows in the same order. Nothing
reads a day before its ``_SUCCESS`` (and the delivery fingerprint is taken of the closed partition), so readers
only ever see the compacted day. A sink killed anywhere in between finds, on the next close of D, small files
inside a compacted file's range and deletes them (the compacted file was written atomically, whole); every event
is in the closed day exactly once. Compaction is done a slice of ``compact_step_seconds`` at a time between polls,
so the sink keeps consuming (and stays in its group) while a large day is compacted; an event of D read
meanwhile is written to D as before (D is not closed yet), in a small file that the closed day keeps (a restart
before ``_SUCCESS`` compacts it with the rest).

Re-announcing (:meth:`Sink._reannounce_due`): the Kafka trigger of Airflow commits its offset before Airflow stores
the asset event, so an announcement can be lost; a lost one of the *last* closed day would otherwise wait for the
next day's. Every ``reannounce_seconds`` the sink looks up the oldest closed day not processed
(:func:`recsys.streaming.days.next_unprocessed`); if no run has reached it (no validation summary, no decision)
and it was not announced for ``reannounce_seconds`` x 2^(times re-announced) (at most a day), it is announced
again. A duplicate announcement is harmless: the DAG has one active run at a time, announcements that arrive
during a run are queued into one next run, and a run of a processed day passes ``check_earlier_days`` and
changes nothing (every step is idempotent). A day whose run failed after validating is on-call's (its later
days' runs name it and announce it again), so it is not re-announced here: no run failing every few minutes.

Closing assumes one sink instance holds every partition of the topic (run one per topic; a second one in
the same group takes partitions over when the first dies).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from recsys import registry, schema
from recsys.config import ConfigError, Settings
from recsys.storage import PartitionStore, layout
from recsys.streaming import StreamingError, days, events
from recsys.streaming.topics import CLOSED_TOPIC, EVENTS_TOPIC

log = logging.getLogger(__name__)

SINK_MARKER = "_sink.json"  # written into a partition just before its _SUCCESS
_FILE = re.compile(r"part-p(\d{4})-(\d{12})-(\d{12})\.parquet")
# tests: "publish:N" kills the sink (SIGKILL) after its N-th file; "compact:N" after its N-th step of compaction (a
# merged file written or a small file deleted); "announce" just before its first announcement
FAILPOINT_ENV = "RECSYS_SINK_FAILPOINT"
TOTALS = ("consumed", "written", "duplicates", "late", "invalid")
_File = tuple[str, pd.DataFrame | bytes]  # a path and its content: a frame of events, or bytes


def file_name(partition: int, start: int, end: int) -> str:
    """``part-p0002-000000001200-000000001299.parquet``: the chunk of partition 2 from offset 1200 to 1299."""
    return f"part-p{partition:04d}-{start:012d}-{end:012d}.parquet"


@dataclass(frozen=True)
class SinkConfig:
    """Where the sink reads, how it cuts files and when it closes a day (the limits' defaults are those of
    :class:`~recsys.config.Settings`; :meth:`from_settings` reads them from the environment)."""

    bootstrap: str
    topic: str = EVENTS_TOPIC
    group: str = "recsys-sink"
    # static group membership (group.instance.id): a restarted sink takes its partitions back at once instead of
    # waiting for the session of the killed one to time out
    instance_id: str | None = None
    max_file_events: int = Settings.sink_max_file_events
    # a file is cut this long after its first event: the bound on how late an event becomes visible in the store
    max_file_seconds: float = Settings.sink_max_file_seconds
    allowed_lateness: timedelta = timedelta(seconds=Settings.sink_allowed_lateness_seconds)
    # days of event ids kept in memory per partition (the collector refuses older events)
    dedup_days: int = Settings.sink_dedup_days
    poll_batch: int = 2000
    close_check_seconds: float = 1.0  # how often a due day's watermark is asked of the broker
    # a commit is retried this long while the broker is unavailable
    commit_timeout_s: float = Settings.sink_commit_timeout_seconds
    # what a message must be to be written (the collector's rules; the age limits do not apply here)
    rules: events.EventRules = field(default_factory=events.EventRules)
    # a closed day is announced on this topic (key: the date, value: its _sink.json), for event-driven runs
    closed_topic: str | None = None
    # before a day closes its part files are merged into files of at most these many rows / bytes (0 rows: not)
    compact_max_rows: int = Settings.sink_compact_max_rows
    compact_max_bytes: int = Settings.sink_compact_max_bytes
    compact_step_seconds: float = 0.2  # compaction work between two polls (the lag it may add)
    # the oldest closed day not processed and not reached by a run is announced again after this long (0: never)
    reannounce_seconds: float = Settings.sink_reannounce_seconds
    schedule_start: str = Settings.schedule_start  # no day before it counts (RECSYS_SCHEDULE_START)

    @classmethod
    def from_settings(cls, settings: Settings, bootstrap: str, **overrides: Any) -> SinkConfig:
        """The limits and event rules of ``settings`` (``RECSYS_SINK_*``, ``RECSYS_VALIDATION_*``); ``overrides``
        (e.g. command-line flags) win."""
        values: dict[str, Any] = {
            "max_file_events": settings.sink_max_file_events,
            "max_file_seconds": settings.sink_max_file_seconds,
            "allowed_lateness": timedelta(seconds=settings.sink_allowed_lateness_seconds),
            "dedup_days": settings.sink_dedup_days,
            "commit_timeout_s": settings.sink_commit_timeout_seconds,
            "rules": events.EventRules.from_settings(settings),
            "compact_max_rows": settings.sink_compact_max_rows,
            "compact_max_bytes": settings.sink_compact_max_bytes,
            "reannounce_seconds": settings.sink_reannounce_seconds,
            "schedule_start": settings.schedule_start,
        }
        return cls(bootstrap=bootstrap, **{**values, **overrides})


@dataclass
class _Message:
    offset: int
    event: dict[str, Any] | None
    raw: bytes | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Partition:
    """What the sink knows about one assigned topic partition."""

    number: int
    recovery: int  # the committed offset at assignment: files from here on are (re)written by this sink
    cut_at: int | None = None  # end of the chunk a killed sink left half published: cut exactly there
    buffer: list[_Message] = field(default_factory=list)
    first_buffered: float = 0.0  # monotonic time the buffer's first message was produced (see _produced_at)
    next_offset: int | None = None
    max_time: datetime | None = None
    seen: dict[date, set[str]] = field(default_factory=dict)  # event ids in the store per day
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOTALS, 0))


class Sink:
    """The consumer loop; ``run`` until ``stop`` is set (or ``until`` returns True)."""

    def __init__(self, store: PartitionStore, config: SinkConfig,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        from confluent_kafka import Consumer

        self.store = store
        self.config = config
        self.clock = clock
        self.consumer = Consumer({
            "bootstrap.servers": config.bootstrap,
            "group.id": config.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            **({"group.instance.id": config.instance_id} if config.instance_id else {}),
        })
        self.parts: dict[int, _Partition] = {}
        self.closed: list[date] = []  # days this sink closed
        self.session = dict.fromkeys(TOTALS, 0)  # this process's counts (``totals()``: across restarts)
        self._totals: dict[int, dict[str, int]] = {}  # per partition, as of its last commit (kept after revoke)
        self.files = 0
        self._open_days: set[date] = set()
        self._day_closed: dict[date, bool] = {}  # days seen in messages: closed already?
        self._next_close_check = 0.0
        self._failpoint = _parse_failpoint(os.environ.get(FAILPOINT_ENV, ""))
        self._announcer: Any = None  # a producer of closed_topic, made on the first announcement
        self.announced: list[date] = []  # days this sink announced on closed_topic
        self._closing: list[date] = []  # days being compacted, then closed, oldest first
        self._closing_mark: datetime | None = None  # the watermark they were found due at
        self._compaction: Iterator[None] | None = None  # the first closing day's compaction, under way
        self.compaction_steps = 0  # merged files written and small files deleted by this process
        self._next_reannounce_check = 0.0
        self._settings = Settings(schedule_start=config.schedule_start)  # what recsys.streaming.days reads

    # --- assignment ---------------------------------------------------------------------------------
    def _state_path(self, partition: int) -> str:
        return f"{layout.SINK_STATE}/{self.config.topic}/p{partition:04d}.json"

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import TopicPartition

        starts = []
        for tp in consumer.committed(partitions, timeout=30):
            offset = tp.offset
            if offset < 0:  # nothing committed yet: the sink starts at the log's beginning
                low, _high = consumer.get_watermark_offsets(tp, timeout=30)
                offset = low
            part = _Partition(tp.partition, recovery=offset)
            path = self._state_path(tp.partition)
            if self.store.exists(path):
                state = self.store.read_json(path)
                if state["start"] >= offset:  # the last chunk may be half published: cut it again, same place
                    if state["start"] > offset:  # offsets expired or a new group: the store knows better
                        log.warning("partition %d: committed offset %d is behind the store's chunks; continuing "
                                    "from offset %d", tp.partition, offset, state["start"])
                    part.recovery = int(state["start"])
                    part.cut_at = int(state["end"])
                    part.totals = dict(state["totals_before"])
                    log.warning("partition %d: rewriting the interrupted chunk %d..%d", tp.partition,
                                part.recovery, part.cut_at)
                else:
                    part.totals = dict(state["totals_after"])
            self.parts[tp.partition] = part
            self._totals[tp.partition] = part.totals
            starts.append(TopicPartition(tp.topic, tp.partition, part.recovery))
        consumer.assign(starts)
        self._open_days |= self._unclosed_days()
        self._announce_missed()
        log.info("assigned partitions %s", {tp.partition: tp.offset for tp in starts})

    def _on_revoke(self, _consumer: Any, partitions: list[Any]) -> None:
        # unpublished messages are dropped: the next owner reads them again from the committed offset
        for tp in partitions:
            self.parts.pop(tp.partition, None)
        log.info("revoked partitions %s", [tp.partition for tp in partitions])

    def _unclosed_days(self) -> set[date]:
        days = set()
        for day in self.store.partitions(layout.RAW_EVENTS, complete_only=False):
            folder = layout.raw_events(day)
            if not self.store.is_complete(folder) and any(_FILE.fullmatch(n) for n in self.store.list_dir(folder)):
                days.add(day)
        return days

    # --- consuming -----------------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None, until: Callable[[Sink], bool] | None = None) -> None:
        """Consume until ``stop`` is set or ``until(self)`` is true; then publish what is buffered."""
        from confluent_kafka import KafkaException

        stop = stop or threading.Event()
        self.consumer.subscribe([self.config.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not stop.is_set() and not (until and until(self)):
                for msg in self.consumer.consume(num_messages=self.config.poll_batch, timeout=0.2):
                    err = msg.error()
                    if err is not None:
                        if err.fatal():
                            raise StreamingError(f"the consumer failed: {err.str()}")
                        log.warning("consumer: %s", err.str())
                        continue
                    self._add(msg)
                self._flush_due()
                self._close_due()
                self._reannounce_due()
            for part in list(self.parts.values()):
                if part.buffer and part.cut_at is None:
                    self._flush(part)
        except KafkaException as err:
            raise StreamingError(f"Kafka: {err.args[0].str()}") from err
        finally:
            self.consumer.close()

    def _add(self, msg: Any) -> None:
        part = self.parts.get(msg.partition())
        if part is None or msg.offset() < part.recovery:
            return  # not ours (any more), or already published before the sink restarted
        if part.cut_at is not None and msg.offset() > part.cut_at and part.buffer:
            self._flush(part)
        message = _decode(msg.offset(), msg.value(), self.config.rules)
        if not part.buffer:
            part.first_buffered = _produced_at(msg, self.config.max_file_seconds / 2)
        part.buffer.append(message)
        part.next_offset = msg.offset() + 1
        if message.event is not None:
            when = message.event[schema.EVENT_TIME]
            part.max_time = when if part.max_time is None or when > part.max_time else part.max_time
            day = when.date()
            if day not in self._day_closed:
                self._day_closed[day] = self.store.is_complete(layout.raw_events(day))
                if not self._day_closed[day]:
                    self._open_days.add(day)
        if part.cut_at is not None:
            if msg.offset() >= part.cut_at:
                self._flush(part)
        elif len(part.buffer) >= self.config.max_file_events:
            self._flush(part)

    def _flush_due(self) -> None:
        now = time.monotonic()
        for part in list(self.parts.values()):
            if part.buffer and part.cut_at is None and now - part.first_buffered >= self.config.max_file_seconds:
                self._flush(part)

    # --- publishing a chunk --------------------------------------------------------------------------
    def _seen(self, part: _Partition, day: date) -> set[str]:
        """Event ids of ``day`` this partition already has in the store, from files before its recovery
        offset (a chunk after it is being rewritten and must not count against itself)."""
        if day not in part.seen:
            ids: set[str] = set()
            for folder in (layout.raw_events(day), layout.late_events(day)):
                for name in self.store.list_dir(folder):
                    found = _FILE.fullmatch(name)
                    if found and int(found[1]) == part.number and int(found[2]) < part.recovery:
                        data = io.BytesIO(self.store.read_bytes(f"{folder}/{name}"))
                        ids.update(pd.read_parquet(data, columns=[schema.EVENT_ID])[schema.EVENT_ID].astype(str))
            part.seen[day] = ids
            for old in [d for d in part.seen if d < day - timedelta(days=self.config.dedup_days)]:
                del part.seen[old]
        return part.seen[day]

    def _flush(self, part: _Partition) -> None:
        from confluent_kafka import TopicPartition

        chunk, part.buffer = part.buffer, []
        start, end = chunk[0].offset, chunk[-1].offset
        name = file_name(part.number, start, end)
        invalid = [message for message in chunk if message.event is None]
        counts = dict.fromkeys(TOTALS, 0)
        counts["consumed"], counts["invalid"] = len(chunk), len(invalid)
        files, new_ids = self._event_files(part, chunk, name, counts)
        if invalid:
            files.append(_invalid_file(invalid, name))
        after = {k: part.totals[k] + counts[k] for k in TOTALS}
        # (1) the chunk's range, so that a sink killed during (2) cuts the same chunk again
        self.store.write_json(self._state_path(part.number),
                              {"start": start, "end": end, "totals_before": part.totals, "totals_after": after})
        # (2) its files, each atomically
        self._publish(files)
        # (3) the offsets
        self._commit(TopicPartition(self.config.topic, part.number, end + 1))
        for day, ids in new_ids.items():
            part.seen[day].update(ids)
        part.totals = self._totals[part.number] = after
        part.recovery = end + 1
        if part.cut_at is not None and end >= part.cut_at:
            part.cut_at = None
        for k in TOTALS:
            self.session[k] += counts[k]
        if counts["late"] or counts["invalid"] or counts["duplicates"]:
            log.warning("partition %d offsets %d..%d: %s", part.number, start, end, counts)

    def _event_files(self, part: _Partition, chunk: list[_Message], name: str,
                     counts: dict[str, int]) -> tuple[list[_File], dict[date, list[str]]]:
        """The chunk's valid events as one file per day (duplicates dropped; a closed day's to its late
        events), and the event ids each day gains; counts duplicates, written and late events."""
        by_day: dict[date, list[dict[str, Any]]] = {}
        for message in chunk:
            if message.event is not None:
                by_day.setdefault(message.event[schema.EVENT_TIME].date(), []).append(message.event)
        files: list[_File] = []
        new_ids: dict[date, list[str]] = {}
        for day, rows in sorted(by_day.items()):
            kept = _drop_duplicates(rows, self._seen(part, day), counts)
            if not kept:
                continue
            late = self.store.is_complete(layout.raw_events(day))
            folder = layout.late_events(day) if late else layout.raw_events(day)
            counts["late" if late else "written"] += len(kept)
            files.append((f"{folder}/{name}", events_frame(kept)))
            new_ids[day] = [r[schema.EVENT_ID] for r in kept]
        return files, new_ids

    def _publish(self, files: list[_File]) -> None:
        """Write each file atomically (parquet for events, bytes for invalid messages)."""
        for path, content in files:
            if isinstance(content, bytes):
                self.store.write_bytes(path, content)
            else:
                self.store.write_parquet(path, content)
            self.files += 1
            self._maybe_fail("publish", self.files)

    def _commit(self, offset: Any) -> None:
        """Commit one partition's offset, retrying while the broker is away (the files are out already: a sink
        that gave up here would only redo this chunk after its restart)."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + self.config.commit_timeout_s
        while True:
            try:
                self.consumer.commit(offsets=[offset], asynchronous=False)
                return
            except KafkaException as err:
                if time.monotonic() >= deadline:
                    raise StreamingError(f"cannot commit offset {offset.offset} of partition {offset.partition} "
                                         f"within {self.config.commit_timeout_s:.0f} s: {err.args[0].str()}") from err
                log.warning("commit of partition %d failed (%s); retrying", offset.partition, err.args[0].str())
                time.sleep(0.5)

    def _maybe_fail(self, where: str, done: int = 0) -> None:
        if self._failpoint is not None and self._failpoint[0] == where and done >= self._failpoint[1]:
            log.error("failpoint %s=%s reached after %d steps: killing this process", FAILPOINT_ENV, where, done)
            os.kill(os.getpid(), signal.SIGKILL)

    # --- closing days --------------------------------------------------------------------------------
    def watermark(self) -> datetime | None:
        """The event time up to which every assigned partition has been read (see the module doc)."""
        from confluent_kafka import KafkaException, TopicPartition

        if not self.parts:
            return None
        behind: list[datetime | None] = []
        newest = [p.max_time for p in self.parts.values() if p.max_time is not None]
        for part in self.parts.values():
            tp = TopicPartition(self.config.topic, part.number)
            try:
                marks = self.consumer.get_watermark_offsets(tp, timeout=10)
            except KafkaException as err:  # the broker is away: no day closes until it is back
                log.warning("no watermark: %s", err.args[0].str())
                return None
            if marks is None:
                return None
            position = part.next_offset if part.next_offset is not None else part.recovery
            if position < marks[1]:
                behind.append(part.max_time)
        if behind:
            if any(t is None for t in behind):
                return None
            return min(t for t in behind if t is not None)
        return max([*newest, self.clock()])

    def _close_due(self) -> None:
        if self._closing:  # compacting: a slice of it, then back to consuming
            self._advance_closing()
            return
        lateness = self.config.allowed_lateness
        due = sorted(d for d in self._open_days
                     if datetime.combine(d + timedelta(days=1), datetime.min.time(), UTC) + lateness <= self.clock())
        if not due:
            return
        if any(p.cut_at is not None for p in self.parts.values()):
            return  # an interrupted chunk is being rewritten; close after it
        if time.monotonic() < self._next_close_check:
            return
        self._next_close_check = time.monotonic() + self.config.close_check_seconds
        mark = self.watermark()
        if mark is None:
            return
        closing = [d for d in due if datetime.combine(d + timedelta(days=1), datetime.min.time(), UTC) + lateness
                   <= mark]
        if not closing:
            return
        for part in list(self.parts.values()):
            if part.buffer:
                self._flush(part)
        for day in closing:
            self._open_days.discard(day)
        self._closing = [d for d in closing if not self.store.is_complete(layout.raw_events(d))]
        self._closing_mark = mark
        self._advance_closing()

    def _advance_closing(self) -> None:
        """Compact the closing days, oldest first, for ``compact_step_seconds`` at most (or one merged file), and
        close each once compacted."""
        deadline = time.monotonic() + self.config.compact_step_seconds
        while self._closing:
            day = self._closing[0]
            if self._compaction is None:
                self._compaction = self._compact(day)
            for _ in self._compaction:
                if time.monotonic() >= deadline:
                    return
            self._compaction = None
            self._closing.pop(0)
            assert self._closing_mark is not None
            self._close(day, self._closing_mark)

    def _close(self, day: date, mark: datetime) -> None:
        """Write ``day``'s ``_sink.json`` and ``_SUCCESS``, then announce it."""
        lateness = self.config.allowed_lateness
        folder = layout.raw_events(day)
        files = [n for n in self.store.list_dir(folder) if _FILE.fullmatch(n)]
        marker = {
            "date": day.isoformat(), "partition": folder, "closed_at": events.format_time(self.clock()),
            "watermark": events.format_time(mark), "allowed_lateness_seconds": lateness.total_seconds(),
            "files": len(files), "topic": self.config.topic,
        }
        self.store.write_json(f"{folder}/{SINK_MARKER}", marker)
        self.store.mark_success(folder)
        self._day_closed[day] = True
        self.closed.append(day)
        log.info("closed %s: %d files, watermark %s", day, len(files), mark.isoformat())
        self._announce(marker)

    def _compact(self, day: date) -> Iterator[None]:
        """Merge ``day``'s part files, per topic partition, into files of at most ``compact_max_rows`` rows and
        ``compact_max_bytes`` bytes (module doc); yields after each file read, written or deleted.

        Each run of consecutive files (name order) becomes ``file_name(p, first start, last end)``: the rows
        in reading order, sorting where they sorted. First, small files inside a compacted file's range (left by
        a sink killed before it deleted them) are deleted: the compacted file holds their rows.
        """
        if self.config.compact_max_rows <= 0:
            return
        import pyarrow.parquet as pq

        folder = layout.raw_events(day)
        ranges = self._part_files(folder)
        for name in covered(ranges):
            yield from self._delete_compacted(f"{folder}/{name}")
            del ranges[name]
        group: list[str] = []
        tables: list[Any] = []
        rows = size = 0
        before = len(ranges)
        for name in sorted(ranges):
            data = self.store.read_bytes(f"{folder}/{name}")
            table = pq.read_table(io.BytesIO(data))
            if group and (ranges[group[0]][0] != ranges[name][0] or rows + table.num_rows > self.config.compact_max_rows
                          or size + len(data) > self.config.compact_max_bytes):
                yield from self._merge(folder, group, tables, ranges)
                group, tables, rows, size = [], [], 0, 0
            group.append(name)
            tables.append(table)
            rows += table.num_rows
            size += len(data)
            yield
        yield from self._merge(folder, group, tables, ranges)
        # a delete's errors are ignored by the store: a small file left next to its merged file would be read twice
        left = covered(self._part_files(folder))
        for name in left:
            yield from self._delete_compacted(f"{folder}/{name}")
        left = covered(after := self._part_files(folder))
        if left:
            raise StreamingError(f"cannot delete {len(left)} part files of {self.store.uri(folder)} that merged files "
                                 f"hold (e.g. {left[0]}): {day} is not closed; a restart of the sink retries")
        log.info("compacted %s: %d part files -> %d", day, before, len(after))

    def _part_files(self, folder: str) -> dict[str, tuple[int, int, int]]:
        """The sink's part files of ``folder``: name -> (topic partition, first offset, last offset)."""
        found = {}
        for name in self.store.list_dir(folder):
            match = _FILE.fullmatch(name)
            if match:
                found[name] = (int(match[1]), int(match[2]), int(match[3]))
        return found

    def _merge(self, folder: str, group: list[str], tables: list[Any],
               ranges: dict[str, tuple[int, int, int]]) -> Iterator[None]:
        """Write ``group``'s rows (``tables``, in its order) as one file named by the offsets it spans, then delete
        the group's files. A group of one file stays as it is."""
        if len(group) < 2:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        partition, start, _ = ranges[group[0]]
        buf = io.BytesIO()
        # the first file's schema (and its pandas metadata: dtypes as the sink wrote them) for all of them
        pq.write_table(pa.concat_tables(tables, promote_options="default"), buf)
        self.store.write_bytes(f"{folder}/{file_name(partition, start, ranges[group[-1]][2])}", buf.getvalue())
        self.compaction_steps += 1
        self._maybe_fail("compact", self.compaction_steps)
        yield
        for name in group:
            yield from self._delete_compacted(f"{folder}/{name}")

    def _delete_compacted(self, path: str) -> Iterator[None]:
        self.store.delete(path)
        self.compaction_steps += 1
        self._maybe_fail("compact", self.compaction_steps)
        yield

    # --- announcing closed days ----------------------------------------------------------------------
    def _announce(self, marker: dict[str, Any]) -> None:
        """Publish a closed day on ``closed_topic`` (key: the date; value: the partition's ``_sink.json``), then
        record ``announced_at`` in it. At least once: a sink killed in between announces it again on start."""
        if not self.config.closed_topic:
            return
        from confluent_kafka import Producer

        self._maybe_fail("announce")
        if self._announcer is None:
            self._announcer = Producer({"bootstrap.servers": self.config.bootstrap, "enable.idempotence": True})
        errors: list[str] = []
        self._announcer.produce(self.config.closed_topic, key=marker["date"].encode(),
                                value=json.dumps(marker, sort_keys=True).encode(),
                                on_delivery=lambda err, _msg: errors.append(err.str()) if err else None)
        if self._announcer.flush(30) or errors:
            raise StreamingError(f"cannot announce the closed day {marker['date']} on {self.config.closed_topic!r}: "
                                 f"{errors[0] if errors else 'no acknowledgement within 30 s'}")
        self.store.write_json(f"{marker['partition']}/{SINK_MARKER}",
                              {**marker, "announced_at": events.format_time(self.clock())})
        self.announced.append(date.fromisoformat(marker["date"]))

    def _announce_missed(self) -> None:
        """Announce the recently closed days whose announcement a killed sink did not finish."""
        if not self.config.closed_topic:
            return
        oldest = self.clock().date() - timedelta(days=self.config.dedup_days)
        for day in self.store.partitions(layout.RAW_EVENTS):
            path = f"{layout.raw_events(day)}/{SINK_MARKER}"
            if day >= oldest and self.store.exists(path):
                marker = self.store.read_json(path)
                if "announced_at" not in marker:
                    self._announce(marker)

    def _reannounce_due(self) -> None:
        """Announce the oldest closed day not processed again if no run reached it and it was not announced for a
        while (module doc); looked at every ``reannounce_seconds`` (30 s at most)."""
        if not self.config.closed_topic or self.config.reannounce_seconds <= 0:
            return
        if time.monotonic() < self._next_reannounce_check:
            return
        self._next_reannounce_check = time.monotonic() + min(30.0, self.config.reannounce_seconds)
        day = days.next_unprocessed(self.store, self._settings)
        if day is None or day in self._closing:
            return
        path = f"{layout.raw_events(day)}/{SINK_MARKER}"
        if not self.store.exists(path) or self.store.exists(layout.validation_summary(day)):
            return  # not closed by a sink, or a run got to validating it (its outcome is on-call's)
        if day.isoformat() in registry.load(self.store)["decisions"]:
            return
        marker = self.store.read_json(path)
        times = int(marker.get("reannounced", 0))
        wait = min(self.config.reannounce_seconds * 2 ** times, 86_400.0)
        announced = marker.get("announced_at")
        if announced is not None and (self.clock() - datetime.fromisoformat(announced)).total_seconds() < wait:
            return
        log.warning("%s is closed but no run has reached it (announced at %s): announcing it again", day, announced)
        self._announce({**marker, "reannounced": times + 1})

    def totals(self) -> dict[str, int]:
        """Counts over every run of this sink group (consumed, written, duplicates, late, invalid), summed over
        the partitions this sink was assigned."""
        return {k: sum(t[k] for t in self._totals.values()) for k in TOTALS}


def covered(ranges: dict[str, tuple[int, int, int]]) -> list[str]:
    """The files (name -> (partition, first offset, last offset)) whose offsets lie inside another file's of the same
    partition: the small files a compacted file holds. Files' ranges are disjoint or nested."""
    found, partition, cover_end = [], -1, -1
    for name, (p, _start, end) in sorted(ranges.items(), key=lambda kv: (kv[1][0], kv[1][1], -kv[1][2])):
        if p != partition:
            partition, cover_end = p, -1
        if end <= cover_end:
            found.append(name)
        else:
            cover_end = end
    return found


def _produced_at(msg: Any, max_age: float) -> float:
    """When ``msg`` was produced (its Kafka timestamp), as a :func:`time.monotonic` time, at most ``max_age``
    seconds ago.

    A file's age counts from its first event's production rather than from its reading, so an event waits at
    most ``max_file_seconds`` plus the cut itself, also when it arrived while other files were being cut. The
    bound keeps a sink that reads a backlog (all of it old) cutting files of ``max_age`` seconds of reading
    instead of one per poll; a clock ahead of ours counts as now.
    """
    kind, millis = msg.timestamp()
    now = time.monotonic()
    if kind == 0 or millis < 0:  # TIMESTAMP_NOT_AVAILABLE
        return now
    return now - min(max(0.0, time.time() - millis / 1000), max_age)


def _decode(offset: int, value: bytes | None, rules: events.EventRules) -> _Message:
    try:
        obj = json.loads(value or b"")
    except ValueError as err:
        return _Message(offset, None, value, [{"field": "(message)", "problem": f"not JSON: {err}"}])
    event, problems = events.check_event(obj, offset, rules, now=None)
    if event is None:
        return _Message(offset, None, value, [p.as_dict() for p in problems])
    return _Message(offset, event)


def _drop_duplicates(rows: list[dict[str, Any]], seen: set[str], counts: dict[str, int]) -> list[dict[str, Any]]:
    """``rows`` without those whose event id is in ``seen`` or repeats an earlier row (counted as duplicates)."""
    kept, ids = [], set()
    for row in rows:
        if row[schema.EVENT_ID] in seen or row[schema.EVENT_ID] in ids:
            counts["duplicates"] += 1
            continue
        ids.add(row[schema.EVENT_ID])
        kept.append(row)
    return kept


def _invalid_file(invalid: list[_Message], name: str) -> _File:
    """The chunk's invalid messages as JSON lines (offset, problems, value) under ``raw/invalid_events/``."""
    lines = [json.dumps({"offset": m.offset, "problems": m.problems,
                         "value": (m.raw or b"").decode("utf-8", "replace")}) for m in invalid]
    return f"{layout.RAW_INVALID_EVENTS}/{name.replace('.parquet', '.jsonl')}", ("\n".join(lines) + "\n").encode()


def events_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Checked events as a DataFrame in the canonical column order and dtypes (what validation reads)."""
    frame = pd.DataFrame(rows, columns=list(schema.EVENT_COLUMNS))
    frame[schema.EVENT_TIME] = pd.to_datetime(frame[schema.EVENT_TIME], utc=True)
    return frame.astype(schema.EVENT_DTYPES)


def _parse_failpoint(value: str) -> tuple[str, int] | None:
    if not value:
        return None
    kind, _, n = value.partition(":")
    if kind == "announce" and not n:
        return kind, 0
    if kind not in ("publish", "compact") or not n.isdigit():
        raise StreamingError(f"{FAILPOINT_ENV}={value!r}: expected publish:N, compact:N or announce")
    return kind, int(n)


def read_events(store: PartitionStore, folder: str) -> pd.DataFrame:
    """Every sink file of a folder (published or not yet closed) as one DataFrame; empty if none."""
    frames = [store.read_parquet(f"{folder}/{n}") for n in store.list_dir(folder) if _FILE.fullmatch(n)]
    if not frames:
        return events_frame([])
    return pd.concat(frames, ignore_index=True)


def parser() -> argparse.ArgumentParser:
    """The options of ``recsys sink``; a limit left unset comes from its ``RECSYS_SINK_*`` setting."""
    cli = argparse.ArgumentParser(prog="recsys sink",
                                  description="the recsys sink (Kafka topic -> raw/events partitions)")
    cli.add_argument("--bootstrap", help="host:port of a broker (default: RECSYS_KAFKA_BOOTSTRAP or var/kafka)")
    cli.add_argument("--topic", default=EVENTS_TOPIC)
    cli.add_argument("--group", default="recsys-sink")
    cli.add_argument("--instance-id", help="static group membership: a restart takes the partitions back at once")
    cli.add_argument("--closed-topic", default=CLOSED_TOPIC,
                     help="announce each closed day on this topic ('' to not announce)")
    limits = cli.add_argument_group("limits (unset: the setting named)")
    limits.add_argument("--max-file-events", type=int,
                        help="events of a topic partition per part file (RECSYS_SINK_MAX_FILE_EVENTS)")
    limits.add_argument("--max-file-seconds", type=float,
                        help="a part file is cut this long after its first event (RECSYS_SINK_MAX_FILE_SECONDS)")
    limits.add_argument("--lateness-seconds", type=float,
                        help="allowed lateness after a day (RECSYS_SINK_ALLOWED_LATENESS_SECONDS)")
    return cli


def config_from_args(args: argparse.Namespace, settings: Settings, bootstrap: str) -> SinkConfig:
    """The sink's configuration: ``settings``, then the options given on the command line."""
    flags: dict[str, Any] = {"max_file_events": args.max_file_events, "max_file_seconds": args.max_file_seconds}
    if args.lateness_seconds is not None:
        flags["allowed_lateness"] = timedelta(seconds=args.lateness_seconds)
    return SinkConfig.from_settings(settings, bootstrap, topic=args.topic, group=args.group,
                                    instance_id=args.instance_id, closed_topic=args.closed_topic or None,
                                    **{k: v for k, v in flags.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    """``python -m recsys.streaming.sink``: run the sink until SIGTERM/SIGINT (also ``recsys sink``)."""
    from recsys.storage import open_store
    from recsys.streaming.topics import default_bootstrap, ensure_topic

    cli = parser()
    args = cli.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
        config = config_from_args(args, settings, args.bootstrap or default_bootstrap())
        if config.closed_topic:
            ensure_topic(config.bootstrap, config.closed_topic, 1)
    except (StreamingError, ConfigError) as err:
        cli.exit(1, f"recsys sink: {err}\n")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sink = Sink(open_store(settings), config)
    sink.run(stop)
    log.info("sink stopped: this run %s; closed %s", sink.session, [d.isoformat() for d in sink.closed])
    print(json.dumps({"session": sink.session, "closed": [d.isoformat() for d in sink.closed],
                      "files": sink.files}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
