"""The sink's limits come from ``RECSYS_SINK_*`` (command-line flags override them) and bound its files.

No broker: the sink's consumer is replaced by a stub that assigns partition 0 from its beginning and records
commits, and messages are handed to the sink as the consumer loop would. The sink against a real broker (kill -9,
exactly once, closing days) is in tests/integration/test_streaming.py.
"""

from __future__ import annotations

import json
import time
from datetime import date, timedelta
from typing import Any

from confluent_kafka import TopicPartition

from recsys.config import Settings
from recsys.storage import layout
from recsys.streaming.sink import Sink, config_from_args, file_name, parser

DAY = date(2026, 12, 1)


class StubConsumer:
    """What the sink asks of its consumer while assigning, cutting files and committing."""

    def __init__(self) -> None:
        self.commits: list[tuple[int, int]] = []

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in partitions]  # nothing committed

    def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
        return 0, 0

    def assign(self, partitions: list[Any]) -> None:
        self.assigned = partitions

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        self.commits += [(tp.partition, tp.offset) for tp in offsets]


class Message:
    def __init__(self, offset: int, produced: float | None = None) -> None:
        self._offset = offset
        self._produced = produced  # time.time() of its production; None: no timestamp
        self._value = json.dumps({"event_id": f"e{offset}", "event_time": f"{DAY.isoformat()}T10:00:{offset:02d}Z",
                                  "user_id": "u1", "item_id": "i1", "event_type": "view", "quantity": 1,
                                  "price": 1.0}).encode()

    def partition(self) -> int:
        return 0

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
    sink.consumer = consumer = StubConsumer()
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
    sink.consumer = consumer = StubConsumer()
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
