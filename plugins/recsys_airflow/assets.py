"""The Airflow Assets of the recsys DAGs and the event-driven schedule of the daily DAG.

Two assets, so the UI shows the lineage of the three DAGs (raw partitions -> incremental update ->
champion <- full retrain, rollback):

- **raw events** (``recsys_raw_events``): the daily partitions ``raw/events/dt=D/`` of the store. The
  incremental DAG reads them (an inlet of ``wait_for_partition``) and, with event-driven runs, is scheduled
  by them.
- **champion** (``recsys_champion``): the serving pointer ``registry/two_tower.json``. Every task that
  switches it (the daily and the retrain ``deploy``, ``rollback``) has it as an outlet; its asset event
  carries the version and the reason in ``extra``.

Each asset is known by its name alone (its URI is the name): an asset's identity must not change when the
store does, or Airflow holds the new one inactive beside the old (a run whose task names an inactive asset
fails) until the old one is orphaned. Where the data lives is in the asset's ``extra["location"]``:
``file://<root>/...`` on the local store, ``webhdfs://<connection id><root>/...`` on HDFS.

**Event-driven runs** (``RECSYS_DAYS_CLOSED_TOPIC`` set, e.g. ``recsys.days-closed``): the raw events asset
gets an ``AssetWatcher`` whose trigger is the Kafka provider's ``KafkaMessageQueueTrigger`` (the common
messaging ``MessageQueueTrigger`` with ``scheme="kafka"``; the triggerer runs it). It consumes the topic on
which ``recsys sink`` announces each day it closed (key ``YYYY-MM-DD``, value the day's ``_sink.json``)
through the Airflow connection ``RECSYS_KAFKA_CONN_ID`` (default ``kafka_default``, type kafka, extra =
the consumer's configuration: ``bootstrap.servers``, ``group.id``, ``auto.offset.reset``;
``scripts/airflow-init.sh`` creates it for the embedded broker). Each announcement that :func:`closed_day`
accepts becomes an asset event whose ``extra["payload"]`` names the day; the scheduler then creates a run of
the incremental DAG (no logical date; ``runtime.partition_day`` takes the day from the event). The sink
announces at least once, and a day announced twice runs twice but trains, evaluates and deploys once
(every step is idempotent per date).

**Order, and no day lost.** The trigger commits the message's offset before the triggerer has Airflow store the
asset event, so a crash in between loses an announcement; and a run without a logical date is not held by
``depends_on_past``. So the store decides (:mod:`recsys.streaming.days`): a run's ``check_earlier_days``
(:func:`hold_for_earlier_days`, before anything reads the day) fails, naming the day, while a closed day before
its own is not processed, and announces that day again; its last task (:func:`announce_next_day`) announces the
oldest closed day not processed yet. Each closed day so gets a run, in date order: a lost announcement's day
runs after the run of the day before it (if that run ends after the day closed), or at the latest when the
next day is announced.
"""

from __future__ import annotations

import json
import logging
from datetime import date
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset

if TYPE_CHECKING:
    from recsys.config import Settings

log = logging.getLogger(__name__)

RAW_EVENTS = "recsys_raw_events"
CHAMPION = "recsys_champion"
WATCHER = "recsys_days_closed"
# the trigger polls the broker for up to 1 s at a time; after a message it did not accept it waits this long
POLL_TIMEOUT_S = 1.0
POLL_INTERVAL_S = 1.0


def _uri(settings: Settings, path: str) -> str:
    root = settings.storage_root.rstrip("/")
    if settings.storage_backend == "webhdfs":
        return f"webhdfs://{settings.webhdfs_conn_id}{root}/{path}"
    from pathlib import Path

    return f"file://{Path(root).resolve()}/{path}"


def event_driven(settings: Settings) -> bool:
    """True when the daily DAG is scheduled by the sink's announcements (``RECSYS_DAYS_CLOSED_TOPIC`` set)."""
    return bool(settings.days_closed_topic)


def days_closed_trigger(settings: Settings) -> Any:
    """The watcher's trigger: the Kafka provider's message-queue trigger on ``settings.days_closed_topic``."""
    from airflow.providers.apache.kafka.triggers.msg_queue import KafkaMessageQueueTrigger

    return KafkaMessageQueueTrigger(
        topics=[str(settings.days_closed_topic)],
        kafka_config_id=settings.kafka_conn_id,
        apply_function=f"{__name__}.closed_day",
        poll_timeout=POLL_TIMEOUT_S,
        poll_interval=POLL_INTERVAL_S,
    )


def consumer_config(settings: Settings) -> dict[str, Any]:
    """The consumer configuration of the Airflow connection ``settings.kafka_conn_id`` (its extra: the broker,
    and a production cluster's security settings), for the tasks that read a topic themselves."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

    try:
        config = dict(BaseHook.get_connection(settings.kafka_conn_id).extra_dejson)
    except AirflowNotFoundException as err:
        raise AirflowFailException(
            f"the Airflow connection {settings.kafka_conn_id!r} is not defined: create it (type kafka, extra = the "
            "consumer configuration with bootstrap.servers; scripts/airflow-init.sh does for the embedded broker)"
        ) from err
    if not config.get("bootstrap.servers"):
        raise AirflowFailException(f"the Airflow connection {settings.kafka_conn_id!r} has no bootstrap.servers "
                                   "in its extra")
    return config


def raw_events(settings: Settings) -> Asset:
    """The raw events partitions; with event-driven runs, watched on the closed-days topic."""
    watchers = []
    if event_driven(settings):
        from airflow.sdk import AssetWatcher

        watchers = [AssetWatcher(name=WATCHER, trigger=days_closed_trigger(settings))]
    return Asset(name=RAW_EVENTS, group="recsys", extra={"location": _uri(settings, "raw/events")},
                 watchers=watchers)


def champion(settings: Settings) -> Asset:
    """The serving champion (the registry's pointer)."""
    return Asset(name=CHAMPION, group="recsys", extra={"location": _uri(settings, "registry/two_tower.json")})


def closed_day(message: Any) -> dict[str, Any] | None:
    """The trigger's apply function (runs in the triggerer): an announcement of a closed day -> the asset
    event's payload ``{"date", "partition", "closed_at", "files", "topic", "offset"}``; anything else -> None
    (logged and skipped: the trigger goes on polling).

    ``message``: a ``confluent_kafka.Message`` as the sink produces it: key ``YYYY-MM-DD``, value the day's
    ``_sink.json`` (whose ``date`` must be the key's).
    """
    key, value = message.key(), message.value()
    try:
        day = date.fromisoformat(key.decode())
        marker = json.loads(value) if value else {}
    except (AttributeError, UnicodeDecodeError, ValueError) as err:
        log.warning("offset %s of %s is not a closed day (key %r): %s; skipped", message.offset(), message.topic(),
                    key, err)
        return None
    if not isinstance(marker, dict) or marker.get("date") != day.isoformat():
        log.warning("offset %s of %s: key %s but the value names %r; skipped", message.offset(), message.topic(),
                    day, marker.get("date") if isinstance(marker, dict) else marker)
        return None
    log.info("day %s closed (%s), announced at offset %s of %s", day, marker.get("partition"), message.offset(),
             message.topic())
    return {"date": day.isoformat(), "partition": marker.get("partition"), "closed_at": marker.get("closed_at"),
            "files": marker.get("files"), "topic": message.topic(), "offset": message.offset()}


def _announce(settings: Settings, store: Any, days: list[date]) -> list[str]:
    """Announce ``days`` on the closed-days topic as the sink does (key: the date; value: the day's
    ``_sink.json``, or just its date and partition if the day was not written by a sink); the days announced."""
    from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook

    from recsys.storage import layout
    from recsys.streaming.sink import SINK_MARKER

    if not days:
        return []
    producer = KafkaProducerHook(kafka_config_id=settings.kafka_conn_id).get_producer()
    errors: list[str] = []
    for day in days:
        path = f"{layout.raw_events(day)}/{SINK_MARKER}"
        marker = store.read_json(path) if store.exists(path) else {"date": day.isoformat(),
                                                                   "partition": layout.raw_events(day)}
        producer.produce(str(settings.days_closed_topic), key=day.isoformat().encode(),
                         value=json.dumps(marker, sort_keys=True).encode(),
                         on_delivery=lambda err, _msg: errors.append(err.str()) if err else None)
    if producer.flush(30) or errors:
        raise RuntimeError(f"could not announce {[d.isoformat() for d in days]} again on "
                           f"{settings.days_closed_topic!r}: {errors[0] if errors else 'no acknowledgement in 30 s'}")
    return [d.isoformat() for d in days]


def hold_for_earlier_days(settings: Settings, store: Any, day: date) -> dict[str, Any]:
    """``check_earlier_days`` of an event-driven run: fail it, naming the day it waits for, if a closed day before
    ``day`` is not processed yet (:func:`recsys.streaming.days.earlier_unprocessed`), after announcing that day
    again so that the next run retries it. Returns ``{"date", "earlier": []}`` when ``day`` may run."""
    from airflow.sdk.exceptions import AirflowFailException

    from recsys.streaming import days

    earlier = days.earlier_unprocessed(store, settings, day)
    if earlier:
        _announce(settings, store, earlier[:1])
        raise AirflowFailException(days.waiting_message(store, day, earlier))
    return {"date": day.isoformat(), "earlier": []}


def announce_next_day(settings: Settings, store: Any, day: date) -> list[str]:
    """The last task of an event-driven run of ``day``: announce the oldest closed day after the newest processed
    one (:func:`recsys.streaming.days.next_unprocessed`), if any, so it gets the next run.

    This hands over the days whose announcements queued up while the run ran (the scheduler gives them all to
    one run, which processes the oldest), and heals a lost announcement; a day announced twice runs twice, the
    second run changing nothing. A day not after ``day`` is never announced here (this run would then be
    announcing its own day, or one before it, for ever); it holds the later days' runs, which name it.
    Returns the days announced (none or one).
    """
    from recsys.streaming import days

    following = days.next_unprocessed(store, settings)
    if following is not None and following <= day:
        log.warning("%s is closed but not processed, and %s's run did not process it: not announced", following, day)
        return []
    return _announce(settings, store, [following] if following else [])
