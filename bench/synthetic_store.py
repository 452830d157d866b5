"""A synthetic partition store for the serving benchmarks: deployed versions of any catalog size.

For synthetic *events* (Zipf popularity, sessions, titles) that run through the whole pipeline, see
``recsys.datasets.synthetic`` (bench/scale, bench/training_throughput); this module only fakes what the
service reads: vocabularies, a catalog, embedding tables and serving indexes.

Embeddings are d-dimensional (default 32, the product's default) and clustered like trained ones: each
item and user is one of ``clusters`` random centroids plus noise, with log-normal lengths (popular
items have longer vectors). Purely isotropic Gaussian vectors would be the worst case for an
approximate index and unlike any trained two-tower model.
"""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from recsys import registry, schema
from recsys.datasets import synthetic
from recsys.features import history, vocab
from recsys.serving.deploy import INDEX_FILE, INDEX_META_FILE, build_index, index_metadata
from recsys.storage import layout
from recsys.storage.local import LocalStore

DAY = date(2011, 1, 4)
ONLINE_RETAIL_ITEMS = 4070  # distinct StockCodes in the shipped Online Retail bundle
ONLINE_RETAIL_USERS = 4373  # distinct CustomerIDs


# the ids of the event generator (recsys.datasets.synthetic), so a store built here and events generated
# there name the same users and items
user_ids = synthetic.user_ids
item_ids = synthetic.item_ids


def clustered(rng: np.random.Generator, centroids: np.ndarray, n: int, noise: float = 0.6) -> np.ndarray:
    """``n`` + 1 rows (row 0 = OOV, zeros): centroid + noise, scaled by a log-normal length."""
    pick = rng.integers(len(centroids), size=n)
    vectors = centroids[pick] + noise * rng.standard_normal((n, centroids.shape[1]), dtype=np.float32)
    vectors *= rng.lognormal(0.0, 0.25, size=(n, 1)).astype(np.float32)
    return np.vstack([np.zeros((1, centroids.shape[1]), np.float32), vectors.astype(np.float32)])


def tables(n_users: int, n_items: int, dim: int, seed: int, clusters: int = 256) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((clusters, dim), dtype=np.float32) / np.sqrt(dim, dtype=np.float32) * 3
    return clustered(rng, centroids, n_users), clustered(rng, centroids, n_items)


def build(root: Path, n_users: int, n_items: int, dim: int = 32, versions: int = 1, purchases: int = 20_000,
          seed: int = 7) -> LocalStore:
    """A store with ``versions`` deployed versions (champion: the last) over the same vocabularies."""
    store = LocalStore(root)
    rng = np.random.default_rng(seed)
    for name, ids in ((vocab.USERS, user_ids(n_users)), (vocab.ITEMS, item_ids(n_items))):
        table = pd.DataFrame({vocab.ID: ids, vocab.ROW: np.arange(1, len(ids) + 1), vocab.FIRST_SEEN: DAY.isoformat()})
        vocab.save(store, name, table.astype({vocab.ID: "string", vocab.ROW: "int64", vocab.FIRST_SEEN: "string"}))
    items = item_ids(n_items)
    catalog = pd.DataFrame({schema.ITEM_ID: items, schema.TITLE: [f"item {i}" for i in items],
                            schema.CATEGORY: None, schema.PRICE: 1.0, schema.AVAILABLE: True})
    store.write_parquet(f"{layout.raw_catalog(DAY)}/part-00000.parquet", catalog.astype(schema.CATALOG_DTYPES))
    store.mark_success(layout.raw_catalog(DAY))
    bought = pd.DataFrame({
        schema.USER_ID: [f"u{i}" for i in rng.integers(1, n_users + 1, size=purchases)],
        schema.ITEM_ID: [items[i] for i in rng.zipf(1.3, size=purchases) % n_items],
        schema.USER_ROW: 0, schema.ITEM_ROW: 0, schema.SPLIT: "train",
    })
    store.write_parquet(f"{layout.features(DAY)}/examples.parquet", bought)
    # the serving process reads purchases and popularity from the history snapshot built with the examples
    snapshot = history.update(history.empty(), bought.drop_duplicates([schema.USER_ID, schema.ITEM_ID]), DAY, 200)
    store.write_parquet(f"{layout.features(DAY)}/{layout.HISTORY_FILE}", snapshot)
    store.mark_success(layout.features(DAY))
    for version in range(1, versions + 1):
        user, item = tables(n_users, n_items, dim, seed + version)
        vdir = layout.model_version(version)
        buf = io.BytesIO()
        np.savez(buf, user=user, item=item)
        store.write_bytes(f"{vdir}/tables.npz", buf.getvalue())
        meta = {"version": version, "trained_on": DAY.isoformat(), "user_rows": len(user), "item_rows": len(item)}
        store.write_json(f"{vdir}/metadata.json", meta)
        registry.add_version(store, version, meta, run_id="bench")
        index = build_index(store, version, DAY)
        data = io.BytesIO()
        index.to_parquet(data, index=False)
        store.write_bytes(f"{vdir}/{INDEX_FILE}", data.getvalue())
        store.write_json(f"{vdir}/{INDEX_META_FILE}", index_metadata(data.getvalue(), index, DAY, "bench"))
        registry.set_champion(store, version, registry.DEPLOYED, "benchmark", "bench")
    return store
