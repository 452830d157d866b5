"""The real-time collection path: HTTP collector -> Kafka topic -> sink -> ``raw/events`` partitions.

- :mod:`recsys.streaming.events`: one event checked against the canonical schema, and its wire format.
- :mod:`recsys.streaming.collector`: ``POST /events`` (FastAPI), an idempotent Kafka producer.
- :mod:`recsys.streaming.sink`: a consumer group writing the topic to the partition store exactly once.

The broker for tests and development is ``scripts/kafka.sh`` (a single KRaft node).
"""

from __future__ import annotations

from recsys.errors import RecsysError


class StreamingError(RecsysError, RuntimeError):
    """The collection path cannot go on: broker unreachable, a topic missing, bad configuration."""
