"""Shared fixtures of the unit tests: a local store in tmp_path and factories for tiny literal data.

Factories are fixtures returning functions (the tests directory is not a package, so nothing is
imported from here).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys import registry, schema
from recsys.features import vocab
from recsys.storage import layout
from recsys.storage.local import LocalStore

EventRow = tuple[str, str, str, str, str, int, float]


@pytest.fixture(autouse=True)
def _no_recsys_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's RECSYS_* variables (Settings.from_env() reads os.environ)."""
    for name in list(os.environ):
        if name.startswith("RECSYS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def make_events() -> Callable[[Sequence[EventRow]], pd.DataFrame]:
    """Canonical events from rows ``(event_id, "YYYY-MM-DD HH:MM:SS" UTC, user, item, type, qty, price)``."""

    def make(rows: Sequence[EventRow]) -> pd.DataFrame:
        frame = pd.DataFrame(
            [
                {
                    schema.EVENT_ID: eid,
                    schema.EVENT_TIME: pd.Timestamp(when, tz="UTC"),
                    schema.USER_ID: user,
                    schema.ITEM_ID: item,
                    schema.EVENT_TYPE: etype,
                    schema.QUANTITY: qty,
                    schema.PRICE: price,
                    schema.SESSION_ID: eid.split("-")[0],
                    schema.COUNTRY: "United Kingdom",
                }
                for eid, when, user, item, etype, qty, price in rows
            ],
            columns=list(schema.EVENT_COLUMNS),
        )
        return frame.astype(schema.EVENT_DTYPES)

    return make


@pytest.fixture
def publish_events(make_events) -> Callable[..., str]:
    """Write rows as ``raw/events/dt=<day>/part-00000.parquet`` plus ``_SUCCESS``; returns the dir."""

    def publish(store: LocalStore, day: date, rows: Sequence[EventRow]) -> str:
        partition = layout.raw_events(day)
        store.write_parquet(f"{partition}/part-00000.parquet", make_events(rows))
        store.mark_success(partition)
        return partition

    return publish


@pytest.fixture
def put_vocab() -> Callable[..., pd.DataFrame]:
    """Write vocabulary ``name`` with ``ids`` at rows 1, 2, ... (row 0 is OOV); returns the table."""

    def put(store: LocalStore, name: str, ids: Sequence[str], first_seen: str = "2011-01-04") -> pd.DataFrame:
        table = pd.DataFrame(
            {vocab.ID: list(ids), vocab.ROW: range(1, len(ids) + 1), vocab.FIRST_SEEN: first_seen}
        ).astype({vocab.ID: "string", vocab.ROW: "int64", vocab.FIRST_SEEN: "string"})
        vocab.save(store, name, table)
        return table

    return put


@pytest.fixture
def put_version() -> Callable[..., None]:
    """Store a hand-made version (tables.npz + metadata.json) and register it, as fine_tune would."""

    def put(store: LocalStore, version: int, trained_on: date, user_table, item_table, **meta) -> None:
        user = np.asarray(user_table, dtype=np.float32)
        item = np.asarray(item_table, dtype=np.float32)
        buf = io.BytesIO()
        np.savez(buf, user=user, item=item)
        vdir = layout.model_version(version)
        store.write_bytes(f"{vdir}/tables.npz", buf.getvalue())
        metadata = {
            "version": version,
            "trained_on": trained_on.isoformat(),
            "user_rows": user.shape[0],
            "item_rows": item.shape[0],
            **meta,
        }
        store.write_bytes(f"{vdir}/metadata.json", json.dumps(metadata).encode())
        registry.add_version(store, version, metadata, run_id="test")

    return put
