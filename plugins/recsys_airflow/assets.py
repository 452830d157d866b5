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
the incremental DAG (no logical date; ``runtime.partition_day`` takes the day from the event). The trigger
commits the message's offset before it fires, so a day is announced to Airflow once per message; the sink
announces at least once, and a day announced twice runs twice but trains, evaluates and deploys once
(every step is idempotent per date).
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


def announce_later_days(settings: Settings, store: Any, day: date, announced: list[date]) -> list[str]:
    """Announce again, on the closed-days topic, the days after ``day`` among ``announced``.

    Announcements that arrive while a run is active queue up, and the scheduler gives the next run all of
    them; that run processes the oldest (``runtime.partition_day``) and its last task calls this, so each
    later day gets a run of its own, in date order. The value is the day's ``_sink.json``, as the sink sends it.
    Returns the days announced again.
    """
    from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook

    from recsys.storage import layout
    from recsys.streaming.sink import SINK_MARKER

    later = [d for d in announced if d > day]
    if not later:
        return []
    producer = KafkaProducerHook(kafka_config_id=settings.kafka_conn_id).get_producer()
    errors: list[str] = []
    for later_day in later:
        marker = store.read_json(f"{layout.raw_events(later_day)}/{SINK_MARKER}")
        producer.produce(str(settings.days_closed_topic), key=later_day.isoformat().encode(),
                         value=json.dumps(marker, sort_keys=True).encode(),
                         on_delivery=lambda err, _msg: errors.append(err.str()) if err else None)
    if producer.flush(30) or errors:
        raise RuntimeError(f"could not announce {[d.isoformat() for d in later]} again on "
                           f"{settings.days_closed_topic!r}: {errors[0] if errors else 'no acknowledgement in 30 s'}")
    return [d.isoformat() for d in later]
