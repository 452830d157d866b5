"""The sink's limits come from ``RECSYS_SINK_*`` (command-line flags override them) and bound its files; a day's
small files are compacted before it closes (crash safe), and a closed day no run reached is announced again.

No broker: the sink's consumer is replaced by a stub that assigns partition 0 from its beginning and records
commits, and messages are handed to the sink as the consumer loop would. The sink against a real broker (kill -9,
exactly once, closing days) is in tests/integration/test_streaming.py.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pytest
from confluent_kafka import TopicPartition

from recsys import registry
from recsys.config import Settings
from recsys.storage import layout, raw
from recsys.storage.local import LocalStore
from recsys.streaming import StreamingError, events
from recsys.streaming.sink import SINK_MARKER, Sink, SinkConfig, config_from_args, covered, file_name, parser

DAY = date(2026, 12, 1)


class StubConsumer:
    """What the sink asks of its consumer while assigning, cutting files and committing."""

    def __init__(self, committed: dict[int, int] | None = None) -> None:
        self.commits: list[tuple[int, int]] = []
        self._committed = committed or {}  # partition -> offset; missing: nothing committed

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        return [TopicPartition(tp.topic, tp.partition, self._committed.get(tp.partition, -1001)) for tp in partitions]

    def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
        return 0, 0

    def assign(self, partitions: list[Any]) -> None:
        self.assigned = partitions

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        self.commits += [(tp.partition, tp.offset) for tp in offsets]


class Message:
    def __init__(self, offset: int, produced: float | None = None, partition: int = 0, **event: Any) -> None:
        self._offset = offset
        self._partition = partition
        self._produced = produced  # time.time() of its production; None: no timestamp
        self._value = json.dumps({"event_id": f"e{offset}", "event_time": f"{DAY.isoformat()}T10:00:{offset % 60:02d}Z",
                                  "user_id": "u1", "item_id": "i1", "event_type": "view", "quantity": 1,
                                  "price": 1.0, **event}).encode()

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (0, -1) if self._produced is None else (1, round(self._produced * 1000))  # (type, milliseconds)


def test_the_defaults_and_the_command_line_flags() -> None:
    defaults = config_from_args(parser().parse_args([]), Settings.from_env({}), "127.0.0.1:9")
    assert (defaults.max_file_events, defaults.max_file_seconds, defaults.allowed_lateness, defaults.dedup_days,
            defaults.commit_timeout_s) == (100_000, 2.0, timedelta(hours=1), 10, 120.0)
    settings = Settings.from_env({"RECSYS_SINK_MAX_FILE_SECONDS": "4", "RECSYS_SINK_MAX_FILE_EVENTS": "50"})
    flagged = config_from_args(parser().parse_args(["--max-file-seconds", "1.5", "--lateness-seconds", "30"]),
                               settings, "127.0.0.1:9")
    assert (flagged.max_file_seconds, flagged.allowed_lateness, flagged.max_file_events) == (
        1.5, timedelta(seconds=30), 50)


def test_the_recsys_sink_settings_reach_the_sink_and_bound_its_files(store: Any) -> None:
    settings = Settings.from_env({
        "RECSYS_SINK_MAX_FILE_EVENTS": "2", "RECSYS_SINK_MAX_FILE_SECONDS": "0.3",
        "RECSYS_SINK_ALLOWED_LATENESS_SECONDS": "60", "RECSYS_SINK_DEDUP_DAYS": "3",
        "RECSYS_SINK_COMMIT_TIMEOUT_SECONDS": "5", "RECSYS_VALIDATION_MAX_QUANTITY": "9"})
    config = config_from_args(parser().parse_args(["--topic", "t", "--closed-topic", ""]), settings, "127.0.0.1:9")
    assert (config.allowed_lateness, config.dedup_days, config.commit_timeout_s, config.rules.max_quantity,
            config.closed_topic) == (timedelta(seconds=60), 3, 5.0, 9, None)
    sink = Sink(store, config)
    sink.consumer.close()  # never connected: the stub stands in for it
    consumer = StubConsumer()
    sink.consumer = cast(Any, consumer)
    sink._on_assign(consumer, [TopicPartition("t", 0)])
    folder = layout.raw_events(DAY)

    for offset in range(3):
        sink._add(Message(offset))
    assert store.list_dir(folder) == [file_name(0, 0, 1)]  # cut at 2 events
    sink._flush_due()
    assert store.list_dir(folder) == [file_name(0, 0, 1)]  # the third event is younger than 0.3 s
    time.sleep(0.35)
    sink._flush_due()
    assert sorted(store.list_dir(folder)) == [file_name(0, 0, 1), file_name(0, 2, 2)]
    assert consumer.commits == [(0, 2), (0, 3)]  # each file published, then its offsets committed


def test_a_file_is_cut_after_max_file_seconds_from_its_first_event_s_production_at_most_half_of_it_ago(
        store: Any) -> None:
    settings = Settings.from_env({"RECSYS_SINK_MAX_FILE_SECONDS": "2"})
    sink = Sink(store, config_from_args(parser().parse_args(["--topic", "t", "--closed-topic", ""]), settings,
                                        "127.0.0.1:9"))
    sink.consumer.close()
    consumer = StubConsumer()
    sink.consumer = cast(Any, consumer)
    sink._on_assign(consumer, [TopicPartition("t", 0)])
    sink._add(Message(0, produced=time.time() - 0.9))  # read 0.9 s after it was produced
    sink._flush_due()
    assert store.list_dir(layout.raw_events(DAY)) == []
    time.sleep(1.2)  # 2.1 s after its production, 1.2 s after it was read
    sink._flush_due()
    assert store.list_dir(layout.raw_events(DAY)) == [file_name(0, 0, 0)]
    sink._add(Message(1, produced=time.time() - 3600))  # a backlog: counted as produced 1 s (half the bound) ago
    sink._flush_due()
    assert store.list_dir(layout.raw_events(DAY)) == [file_name(0, 0, 0)]  # not one file per poll
    time.sleep(1.1)
    sink._flush_due()
    assert sorted(store.list_dir(layout.raw_events(DAY))) == [file_name(0, 0, 0), file_name(0, 1, 1)]


class Clock:
    """The sink's wall clock, moved by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class StubProducer:
    """The announcer: records (key, value) of each announcement, acknowledged at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery: Any) -> None:
        self.sent.append((key.decode(), json.loads(value)))
        on_delivery(None, None)

    def flush(self, timeout: float) -> int:
        return 0


def stub_sink(store: Any, clock: Clock, partitions: int = 2, committed: int | None = None, **config: Any) -> Sink:
    """A sink on topic t whose consumer is a stub assigned ``partitions`` partitions from ``committed`` (None: their
    beginning)."""
    sink = Sink(store, SinkConfig(bootstrap="127.0.0.1:9", topic="t", **config), clock=clock)
    sink.consumer.close()
    sink.consumer = cast(Any, StubConsumer(None if committed is None else dict.fromkeys(range(partitions), committed)))
    sink._on_assign(sink.consumer, [TopicPartition("t", p) for p in range(partitions)])
    return sink


AFTER_DAY = datetime.combine(DAY + timedelta(days=2), datetime.min.time(), UTC)  # past DAY + 1 day + lateness


def small_files_of_a_day(store: Any) -> pd.DataFrame:
    """Day DAY written in files of 2 events by partitions 0 and 1 (a duplicate, an event of the day after, a missing
    session id among them); returns what a reader of the closed day would read without compaction."""
    sink = stub_sink(store, Clock(datetime(2026, 12, 1, 12, tzinfo=UTC)), max_file_events=2)
    for offset in range(9):
        extra: dict[str, Any] = {"session_id": f"s{offset}"} if offset % 3 else {}
        if offset == 4:
            extra["event_id"] = "e1"  # resent: dropped
        if offset == 7:
            extra["event_time"] = f"{(DAY + timedelta(days=1)).isoformat()}T00:00:01Z"
        sink._add(Message(offset, partition=0, user_id=f"u{offset}", **extra))
        sink._add(Message(offset, partition=1, event_id=f"q{offset}", price=offset + 0.5))
    for part in sink.parts.values():
        if part.buffer:
            sink._flush(part)
    folder = layout.raw_events(DAY)
    files = [n for n in store.list_dir(folder) if n.startswith("part-")]
    assert len(files) == 10  # 5 per partition
    return pd.concat([store.read_parquet(f"{folder}/{n}") for n in files], ignore_index=True)


def test_a_day_s_small_files_are_compacted_before_it_closes_and_readers_see_the_same_rows(store: Any) -> None:
    expected = small_files_of_a_day(store)
    sink = stub_sink(store, Clock(AFTER_DAY), committed=9, compact_max_rows=5, compact_step_seconds=60.0)
    sink._close_due()
    folder = layout.raw_events(DAY)
    assert sink.closed == [DAY] and store.is_complete(folder)
    # per partition, runs of files in name order up to 5 rows: p0 has 2+2+1(one dropped)+1(7 is the next day's)+1
    # rows at offsets 0-1, 2-3, 4-5, 6-7, 8; p1 2+2+2+2+1
    assert [n for n in store.list_dir(folder) if n.startswith("part-")] == [
        file_name(0, 0, 5), file_name(0, 6, 8), file_name(1, 0, 3), file_name(1, 4, 8)]
    read = raw.read_partition(store, folder)
    pd.testing.assert_frame_equal(read, raw.read_partition(store, folder))  # stable
    pd.testing.assert_frame_equal(read, expected)  # the same rows, in the same order, with the same dtypes
    assert store.read_json(f"{folder}/{SINK_MARKER}")["files"] == 4
    assert [n for n in store.list_dir(layout.raw_events(DAY + timedelta(days=1))) if n.startswith("part-")] == [
        file_name(0, 6, 7)]  # another day's files are not touched


def test_a_sink_killed_at_any_step_of_compaction_then_restarted_leaves_every_event_once(
        store: Any, tmp_path: Path) -> None:
    expected = small_files_of_a_day(store)
    root = Path(store.uri("").removeprefix("file://"))
    steps = 0
    while True:  # kill after 0, 1, 2, ... steps (a read, a merged file written, a small file deleted): all of them
        copy = LocalStore(shutil.copytree(root, tmp_path / f"kill-{steps}"))
        killed = stub_sink(copy, Clock(AFTER_DAY), committed=9, compact_max_rows=5)
        killed._closing = [DAY]
        compaction = killed._compact(DAY)
        done = sum(1 for _ in zip(range(steps), compaction, strict=False))
        restarted = stub_sink(copy, Clock(AFTER_DAY), committed=9, compact_max_rows=4, compact_step_seconds=60.0)
        restarted._close_due()  # a new bound: other groups than the killed sink's
        assert restarted.closed == [DAY]
        read = raw.read_partition(copy, layout.raw_events(DAY))
        pd.testing.assert_frame_equal(read, expected)
        if done < steps:  # the killed compaction had finished
            break
        steps += 1
    assert steps > 20


def test_covered_files_are_those_inside_another_file_s_offsets_of_the_same_partition() -> None:
    ranges = {"a": (0, 0, 9), "b": (0, 0, 3), "c": (0, 4, 9), "d": (0, 10, 12), "e": (1, 0, 3), "f": (1, 4, 5)}
    assert covered(ranges) == ["b", "c"]


def test_compaction_off_with_zero_rows_and_the_settings_reach_the_sink(store: Any) -> None:
    settings = Settings.from_env({"RECSYS_SINK_COMPACT_MAX_ROWS": "0", "RECSYS_SINK_COMPACT_MAX_BYTES": "1000",
                                  "RECSYS_SINK_REANNOUNCE_SECONDS": "60", "RECSYS_SCHEDULE_START": "2026-01-01"})
    config = SinkConfig.from_settings(settings, "127.0.0.1:9")
    assert (config.compact_max_rows, config.compact_max_bytes, config.reannounce_seconds, config.schedule_start) == (
        0, 1000, 60.0, "2026-01-01")
    defaults = SinkConfig.from_settings(Settings.from_env({}), "127.0.0.1:9")
    assert (defaults.compact_max_rows, defaults.compact_max_bytes, defaults.reannounce_seconds) == (
        1_000_000, 128 * 1024 * 1024, 300.0)
    small_files_of_a_day(store)
    sink = stub_sink(store, Clock(AFTER_DAY), committed=9, compact_max_rows=0)
    sink._close_due()
    assert sink.closed == [DAY]
    assert len([n for n in store.list_dir(layout.raw_events(DAY)) if n.startswith("part-")]) == 10


def test_the_oldest_closed_day_no_run_reached_is_announced_again_backing_off_until_processed(store: Any) -> None:
    small_files_of_a_day(store)
    clock = Clock(AFTER_DAY)
    sink = stub_sink(store, clock, committed=9, closed_topic="closed", reannounce_seconds=300.0)
    sink._announcer = producer = StubProducer()

    def look(after_seconds: float) -> list[str]:
        clock.now += timedelta(seconds=after_seconds)
        sink._next_reannounce_check = 0.0  # the look every min(30 s, interval) of real time is due
        sink._reannounce_due()
        return [key for key, _value in producer.sent]

    sink._close_due()
    assert look(0) == [DAY.isoformat()]  # the close's announcement; not again at once
    assert look(299) == [DAY.isoformat()]
    assert look(2) == [DAY.isoformat()] * 2  # 301 s without an announcement
    assert producer.sent[-1][1]["reannounced"] == 1
    assert look(599) == [DAY.isoformat()] * 2  # then after 600 s, 1200 s, ...
    assert look(2) == [DAY.isoformat()] * 3
    marker = store.read_json(f"{layout.raw_events(DAY)}/{SINK_MARKER}")
    assert (marker["reannounced"], marker["announced_at"]) == (2, events.format_time(clock.now))
    store.write_json(layout.validation_summary(DAY), {"success": False})  # a run reached it: on-call's now
    assert look(86_400) == [DAY.isoformat()] * 3
    store.delete(layout.validation_summary(DAY))
    registry.update(store, lambda reg: reg["decisions"].__setitem__(
        DAY.isoformat(), {"blessed": False, "candidate_version": None, "reason": "a thin day"}))  # processed
    assert look(86_400) == [DAY.isoformat()] * 3


class Text(str):
    """A str subclass: the fast path of check_event leaves it to the full checks."""


def event_variants() -> list[Any]:
    """A good event and, per field, values on both sides of every rule (plus a few random combinations)."""
    import random

    base = {"event_id": "e-1", "event_time": "2026-12-01T10:00:00.5+02:00", "user_id": "u1", "item_id": "i1",
            "event_type": "purchase", "quantity": 3, "price": 2.5, "session_id": "s1", "country": "United Kingdom"}
    ids = [None, "", "a", "a" * 64, "a" * 65, " a", "a ", "a/b", "...", ".a", "a\n", "a\u200bb", 7, True, ["a"],
           Text("a"), "é"]
    values: dict[str, list[Any]] = {
        "event_id": ids, "user_id": ids, "item_id": ids, "session_id": ids, "country": ids,
        "event_time": [None, "2026-12-01T10:00:00", "2026-12-01T10:00:00Z", "2026-12-01 10:00:00+00:00", "nope", 5,
                       "2026-12-09T10:00:00Z", "2026-11-20T10:00:00Z", "2026-12-01T10:04:59Z", "2026-12-01T10:05:01Z",
                       Text("2026-12-01T10:00:00Z")],
        "event_type": [None, "view", "add_to_cart", "purchase", "buy", "", 1, Text("view"), ["view"]],
        "quantity": [None, 0, 1, 100_000, 100_001, -1, True, False, 1.0, "1", 2**70],
        "price": [None, 0, 0.0, -0.0, -0.01, 100_000, 100_000.01, float("nan"), float("inf"), True, "1", 3, 2**70],
    }
    found: list[Any] = [base, [base], "x", None, {**base, "extra": 1}, {**base, 1: 2}]
    for name, options in values.items():
        for value in options:
            found.append({**base, name: value})
        found.append({k: v for k, v in base.items() if k != name})
    rng = random.Random(3)
    for _ in range(300):
        event = dict(base)
        for name in rng.sample(sorted(values), 3):
            event[name] = rng.choice(values[name])
        found.append(event)
    return found


def test_check_event_s_fast_path_gives_the_full_checks_verdicts(monkeypatch: Any) -> None:
    from recsys.streaming import events as ev

    rules = ev.EventRules()
    cases = [(obj, now) for obj in event_variants()
             for now in (None, datetime(2026, 12, 1, 10, 0, tzinfo=UTC))]
    fast = [ev.check_event(obj, n, rules, now) for n, (obj, now) in enumerate(cases)]
    monkeypatch.setattr(ev, "_accepted", lambda *_: None)
    full = [ev.check_event(obj, n, rules, now) for n, (obj, now) in enumerate(cases)]
    for (obj, now), (event, problems), (want, want_problems) in zip(cases, fast, full, strict=True):
        assert (event if event is None else list(event.items())) == (
            want if want is None else list(want.items())), (obj, now)
        assert problems == want_problems, (obj, now)
    accepted = sum(event is not None for event, _ in full)
    assert 50 < accepted < len(cases) - 100  # both verdicts are well represented


def test_a_small_file_the_store_did_not_delete_keeps_the_day_open_until_a_restart_deletes_it(
        store: Any, monkeypatch: Any) -> None:
    expected = small_files_of_a_day(store)
    monkeypatch.setattr(store, "delete", lambda path: None)  # the store ignores a failed delete
    sink = stub_sink(store, Clock(AFTER_DAY), committed=9, compact_max_rows=5, compact_step_seconds=60.0)
    with pytest.raises(StreamingError, match=r"part files .* that merged files hold"):
        sink._close_due()
    assert not store.is_complete(layout.raw_events(DAY))
    monkeypatch.undo()
    restarted = stub_sink(store, Clock(AFTER_DAY), committed=9, compact_step_seconds=60.0)
    restarted._close_due()
    assert restarted.closed == [DAY]
    pd.testing.assert_frame_equal(raw.read_partition(store, layout.raw_events(DAY)), expected)
