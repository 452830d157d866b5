"""Where the broker is and the topics the collection path uses (creating them where it may)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from recsys.streaming import StreamingError

EVENTS_TOPIC = "recsys.events"
# item events (listed, delisted, out_of_stock, back_in_stock, price_change), keyed by item: a topic of their
# own so the sink's behaviour partitions and every consumer of them stay as they are
CATALOG_TOPIC = "recsys.catalog-events"
CLOSED_TOPIC = "recsys.days-closed"  # the sink announces each closed day here (key: YYYY-MM-DD)
DEFAULT_PARTITIONS = 3
# the ready file scripts/kafka.sh writes for the embedded broker
READY_FILE = Path(__file__).resolve().parents[2] / "var" / "kafka" / "ready.json"


def default_bootstrap(env: dict[str, str] | None = None) -> str:
    """``RECSYS_KAFKA_BOOTSTRAP``, else the embedded broker's address from ``$KAFKA_HOME/ready.json``
    (default ``var/kafka/ready.json``, written by ``scripts/kafka.sh start``)."""
    env = dict(os.environ) if env is None else env
    if env.get("RECSYS_KAFKA_BOOTSTRAP"):
        return env["RECSYS_KAFKA_BOOTSTRAP"]
    ready = Path(env["KAFKA_HOME"]) / "ready.json" if env.get("KAFKA_HOME") else READY_FILE
    try:
        return str(json.loads(ready.read_text())["bootstrap"])
    except (OSError, ValueError, KeyError) as err:
        raise StreamingError(
            f"no Kafka broker named: set RECSYS_KAFKA_BOOTSTRAP=host:port, or start the embedded broker with "
            f"scripts/kafka.sh start (it writes {ready}; reading it failed: {err})"
        ) from err


def ensure_topic(bootstrap: str, topic: str, partitions: int = DEFAULT_PARTITIONS, timeout: float = 30.0) -> int:
    """Create ``topic`` with ``partitions`` partitions (replication 1) unless it exists; its partition count."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.create_topics([NewTopic(topic, partitions, 1)], request_timeout=timeout)[topic]
    try:
        future.result(timeout=timeout)
    except KafkaException as err:
        if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise StreamingError(f"cannot create topic {topic!r} on {bootstrap}: {err.args[0].str()}") from err
    # a new topic's metadata reaches the broker's cache shortly after the controller created it
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(topic, timeout=timeout).topics[topic]
        if metadata.error is None and metadata.partitions:
            return len(metadata.partitions)
        if time.monotonic() >= deadline:
            why = metadata.error.str() if metadata.error is not None else "no partitions"
            raise StreamingError(f"topic {topic!r} on {bootstrap} is not usable after {timeout:.0f} s: {why}")
        time.sleep(0.1)
