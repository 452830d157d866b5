"""The event-driven DAG's order tasks run by Airflow's task runner (``dag.test()``, SQLite metadata DB, the real
Kafka broker of scripts/kafka.sh): a day whose earlier closed day is not processed fails at
``check_earlier_days`` before anything reads it, and that day is announced again; a run by hand is not held.

No training runs: the held run stops before validate; the run by hand marks the steps after
``rebuild_catalog`` successful instead of running them. The rules themselves are tested in
tests/unit/test_event_order.py, the trigger and the catalog step in test_event_driven_runs.py.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import airflow.sdk  # noqa: F401 - puts plugins/ on sys.path (recsys_airflow)
import pendulum
import pytest

from recsys.storage import layout
from recsys.storage.local import LocalStore
from tests.kafka_broker import KafkaBroker, broker_session

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "recsys_incremental_update"
EARLIER, DAY = date(2026, 3, 2), date(2026, 3, 3)
AFTER_CATALOG = ("validate", "build_features", "fine_tune", "evaluate", "deploy_if_blessed", "deploy",
                 "refresh_serving_index", "announce_later_days")


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    yield from broker_session()


def _delete_runs() -> None:
    """Runs of the DAG left by other modules must not hold these (depends_on_past) or be held by them."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(DagRun).where(DagRun.dag_id == DAG_ID))


@pytest.fixture
def event_driven(airflow_db: str, kafka_broker: KafkaBroker, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalStore, str]]:
    """An event-driven deployment (its closed-days topic and Kafka connection) on a store where EARLIER and DAY
    are closed and nothing is processed; yields the store and the topic."""
    topic = kafka_broker.new_topic("days-closed", 1)
    conn_id = f"kafka_dag_{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "kafka", "extra": {
        "bootstrap.servers": kafka_broker.bootstrap, "group.id": f"airflow-{conn_id}",
        "auto.offset.reset": "earliest"}}))
    for name, value in {"RECSYS_DAYS_CLOSED_TOPIC": topic, "RECSYS_KAFKA_CONN_ID": conn_id,
                        "RECSYS_STORAGE_ROOT": str(tmp_path / "store"), "RECSYS_SCHEDULE_START": "2026-03-01",
                        "RECSYS_NOTIFY_BACKEND": "log", "RECSYS_SENSOR_POKE_SECONDS": "1"}.items():
        monkeypatch.setenv(name, value)
    store = LocalStore(tmp_path / "store")
    for day in (EARLIER, DAY):
        store.write_bytes(f"{layout.raw_events(day)}/part-0.parquet", b"not read by these runs")
        store.mark_success(layout.raw_events(day))
    _delete_runs()
    yield store, topic
    _delete_runs()


def _run(logical_date: date, **kwargs: Any) -> tuple[Any, dict[str, str]]:
    """Parse the DAG folder (event-driven, from the environment) and run one DAG run, failing after 180 s."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert bag.import_errors == {}

    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError("the DAG run did not finish within 180 s (blocked?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(180)
    try:
        dag_run = bag.get_dag(DAG_ID).test(logical_date=pendulum.datetime(
            logical_date.year, logical_date.month, logical_date.day, tz="UTC"), **kwargs)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return dag_run, {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def _announced(bootstrap: str, topic: str) -> list[str]:
    """The keys on the closed-days topic, from the beginning."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        consumer.assign([TopicPartition(topic, 0, 0)])
        keys: list[str] = []
        while len(keys) < high:
            for msg in consumer.consume(num_messages=100, timeout=5.0):
                assert msg.error() is None, msg.error()
                keys.append((msg.key() or b"").decode())
        return keys
    finally:
        consumer.close()


def test_a_day_with_an_earlier_unprocessed_closed_day_stops_before_anything_reads_it(
        event_driven: tuple[LocalStore, str], kafka_broker: KafkaBroker) -> None:
    store, topic = event_driven
    dag_run, states = _run(DAY)
    assert dag_run.state == "failed", states
    assert states["check_earlier_days"] == "failed", states
    assert states["rebuild_catalog"] == states["validate"] == states["fine_tune"] == "upstream_failed", states
    assert _announced(kafka_broker.bootstrap, topic) == [EARLIER.isoformat()]  # so the next run retries it
    assert not store.exists(layout.raw_catalog(DAY)) and not store.exists(layout.validation_summary(DAY))


def test_a_run_by_hand_is_not_held(event_driven: tuple[LocalStore, str], kafka_broker: KafkaBroker) -> None:
    store, topic = event_driven
    dag_run, states = _run(DAY, run_conf={"partition_date": DAY.isoformat()},
                           mark_success_pattern="^(" + "|".join(AFTER_CATALOG) + ")$")
    assert dag_run.state == "success", states
    assert states["check_earlier_days"] == states["wait_for_partition"] == states["rebuild_catalog"] == "success"
    # no catalog topic or no earlier catalog: nothing to build the day's catalog from, so nothing written
    assert not store.exists(layout.raw_catalog(DAY))
    assert _announced(kafka_broker.bootstrap, topic) == []  # announce_later_days was marked, not run
