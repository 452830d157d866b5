"""A store with one deployed history-aware version for the real-time benchmark (the service's live state).

Tables are random but history-aware (``word`` table present, repeat weight 5): a customer's own recent items
(the repeat term) rank first, so an event on an item is visible in that customer's answer. The history
snapshot is of ``DAY`` (long ago), so the live state applies every event on the benchmark's topics.
"""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys import registry, schema
from recsys.features import history, vocab
from recsys.serving.deploy import INDEX_FILE, INDEX_META_FILE, build_index, index_metadata
from recsys.storage import layout
from recsys.storage.local import LocalStore

DAY = date(2011, 1, 4)


def user_ids(n: int) -> list[str]:
    return [f"u{i:06d}" for i in range(1, n + 1)]


def item_ids(n: int) -> list[str]:
    return [f"i{i:06d}" for i in range(1, n + 1)]


def build(root: Path, n_users: int, n_items: int, dim: int = 32, seed: int = 7) -> LocalStore:
    """Version 1 (champion) over ``n_users`` x ``n_items``; a catalog of every item and an empty snapshot."""
    store = LocalStore(root)
    users, items = user_ids(n_users), item_ids(n_items)
    for name, ids in ((vocab.USERS, users), (vocab.ITEMS, items)):
        table = pd.DataFrame({vocab.ID: ids, vocab.ROW: range(1, len(ids) + 1), vocab.FIRST_SEEN: DAY.isoformat()})
        vocab.save(store, name, table.astype({vocab.ID: "string", vocab.ROW: "int64", vocab.FIRST_SEEN: "string"}))
    catalog = pd.DataFrame({schema.ITEM_ID: items, schema.TITLE: [f"title {i}" for i in items],
                            schema.CATEGORY: None, schema.PRICE: 1.0, schema.AVAILABLE: True})
    store.write_parquet(f"{layout.raw_catalog(DAY)}/part-00000.parquet", catalog.astype(schema.CATALOG_DTYPES))
    store.mark_success(layout.raw_catalog(DAY))
    rng = np.random.default_rng(seed)
    rows = n_items + 1
    tables: dict[str, Any] = {
        "user": rng.normal(scale=0.1, size=(n_users + 1, dim)).astype(np.float32),
        "item": rng.normal(scale=0.1, size=(rows, dim)).astype(np.float32),
        "word": np.zeros((2, dim), np.float32), "item_words": np.zeros((rows, 1), np.int64),
        "price": np.zeros((1, dim), np.float32), "item_price": np.zeros(rows, np.int64),
        "item_bias": rng.normal(scale=0.1, size=rows).astype(np.float32),
        "repeat_weight": np.float32(5.0),
    }
    vdir = layout.model_version(1)
    buf = io.BytesIO()
    np.savez(buf, **tables)
    store.write_bytes(f"{vdir}/{layout.TABLES_FILE}", buf.getvalue())
    meta: Any = {"version": 1, "trained_on": DAY.isoformat(), "user_rows": n_users + 1, "item_rows": rows,
                 "history_length": 50, "repeat_length": 200, "repeat_scale": 1.0}
    store.write_json(f"{vdir}/metadata.json", meta)
    registry.add_version(store, 1, meta, run_id="bench-realtime")
    index = build_index(store, 1, DAY)
    data = io.BytesIO()
    index.to_parquet(data, index=False)
    store.write_bytes(f"{vdir}/{INDEX_FILE}", data.getvalue())
    store.write_json(f"{vdir}/{INDEX_META_FILE}", index_metadata(data.getvalue(), index, DAY, None))
    registry.set_champion(store, 1, registry.DEPLOYED, "initial deploy", "bench-realtime")
    snapshot = history.empty()
    store.write_parquet(f"{layout.features(DAY)}/{layout.HISTORY_FILE}", snapshot)
    store.mark_success(layout.features(DAY))
    return store
