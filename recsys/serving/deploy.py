"""Deploy a blessed candidate (export + serving index + champion switch) and roll back.

A deployed version directory holds, besides its checkpoint (``tables.npz``) and ``metadata.json``,
a SavedModel (``saved_model.pb``, ``variables/``; so ``models/two_tower/versions`` is a TensorFlow
Serving base path) and ``index.parquet``: the items it may recommend, with titles, from the
catalog snapshot of its day (delisted items excluded), described by ``index.json`` (catalog date,
item count, SHA-256 of the parquet bytes; the serving process watches it).

:func:`refresh_index` rebuilds a version's index from the newest complete catalog partition without
retraining: a delisted item disappears, a relisted one comes back. A rollback refreshes the index of
the version it returns to, so a delisting processed since that version was deployed still holds.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from recsys import registry, schema
from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.storage import PartitionStore, StorageError, layout

log = logging.getLogger(__name__)

INDEX_FILE = "index.parquet"
INDEX_META_FILE = "index.json"


class DeployError(RecsysError, RuntimeError):
    """A deploy or rollback was refused (not blessed, unknown version, nothing to roll back to)."""


def build_index(store: PartitionStore, version: int, day: date) -> pd.DataFrame:
    """Items the version knows that the day's catalog lists as available: item_id, row, title, price."""
    from recsys.features import vocab
    from recsys.storage.raw import read_partition

    items = vocab.with_rows(vocab.load(store, vocab.ITEMS))
    rows = registry.load(store)["versions"][str(version)]["item_rows"]
    items = items[items[vocab.ROW] < rows]
    try:
        catalog = read_partition(store, layout.raw_catalog(day))
    except StorageError as err:
        raise DeployError(f"cannot build the serving index of version {version}: {err}") from err
    catalog = catalog[catalog[schema.AVAILABLE]]
    index = items.rename(columns={vocab.ID: schema.ITEM_ID, vocab.ROW: "row"})[[schema.ITEM_ID, "row"]].merge(
        catalog[[schema.ITEM_ID, schema.TITLE, schema.PRICE]], on=schema.ITEM_ID, how="inner"
    )
    if index.empty:
        raise DeployError(
            f"version {version} knows no item that the catalog of {day} lists as available: nothing to serve"
        )
    return index.sort_values("row").reset_index(drop=True)


def deploy(store: PartitionStore, settings: Settings, day: date, run_id: str | None = None) -> dict[str, Any]:
    """Export the blessed candidate of ``day``, build its index, make it champion. Idempotent."""
    reg = registry.load(store)
    decision = reg["decisions"].get(day.isoformat())
    if decision is None:
        raise DeployError(f"no evaluation decision for {day}: run the evaluate step first")
    if not decision["blessed"]:
        raise DeployError(f"the candidate of {day} was not blessed ({decision['reason']}); refusing to deploy")
    return deploy_version(store, settings, decision["candidate_version"], day, decision["reason"], run_id)


def deploy_version(
    store: PartitionStore, settings: Settings, version: int, day: date, reason: str, run_id: str | None = None
) -> dict[str, Any]:
    """Export ``version`` (trained up to ``day``), build its index, make it champion for ``reason``. Idempotent.

    Callers check the deploy gate first (:func:`deploy` for a day's candidate, ``recsys.retrain`` for a
    full retrain).
    """
    from recsys.serving.export import export_saved_model
    from recsys.serving.index import load_scorer

    reg = registry.load(store)
    if reg["champion"] == version or any(
        h["action"] == "deployed" and h.get("to") == version for h in reg["history"]
    ):
        # a rerun of a date deployed before must not take the champion back (that is a rollback)
        log.info("version %d was already deployed; champion stays %s", version, reg["champion"])
        return {"version": version, "changed": False, "champion": reg["champion"]}
    version_dir = layout.model_version(version)
    if not store.exists(f"{version_dir}/{INDEX_FILE}"):
        scorer = load_scorer(store, version)
        catalog_day = _catalog_day(store, day)
        index = build_index(store, version, catalog_day)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "version"
            store.download_dir(version_dir, local)
            export_saved_model(scorer, [int(r) for r in index["row"]], local, settings.k)
            data = _parquet_bytes(index)
            (local / INDEX_FILE).write_bytes(data)
            meta = index_metadata(data, index, catalog_day, run_id)
            (local / INDEX_META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            store.publish_dir(local, version_dir)
    entry = registry.set_champion(store, version, "deployed", reason, run_id)
    log.info("version %d is the champion (was %s)", version, entry["from"])
    return {"version": version, "changed": True, "previous": entry["from"]}


def rollback(store: PartitionStore, reason: str, to: int | None = None, run_id: str | None = None) -> dict[str, Any]:
    """Point the champion back to ``to`` (default: the version deployed before the current champion).

    Before the switch, the target's serving index is rebuilt from the newest complete catalog when it
    was built from an older one, so items delisted since it served are not recommended again. If that
    rebuild fails the rollback still happens (it is the on-call escape hatch) and the result says why
    under ``index_error``.
    """
    if not reason.strip():
        raise DeployError("a rollback needs a reason (it is recorded in the registry history)")
    reg = registry.load(store)
    current = reg["champion"]
    if to is None:
        # the version deployed before the current champion was, so repeated rollbacks walk back in time
        deployed = list(dict.fromkeys(h["to"] for h in reg["history"] if h["action"] == "deployed"))
        earlier = deployed[: deployed.index(current)] if current in deployed else []
        if not earlier:
            raise DeployError(f"champion {current} has no earlier deployed version to roll back to; pass --to VERSION")
        to = int(earlier[-1])
    if not store.exists(f"{layout.model_version(to)}/{INDEX_FILE}"):
        raise DeployError(f"version {to} was never deployed (no serving index); pick a deployed version")
    out: dict[str, Any] = {"version": to}
    try:
        refreshed = refresh_index(store, to, run_id=run_id, only_if_newer=True)
        out["index_catalog_date"] = refreshed["catalog_date"]
    except DeployError as err:
        log.warning("rolling back to version %d with its old serving index: %s", to, err)
        out["index_error"] = str(err)
    entry = registry.set_champion(store, to, "rollback", reason, run_id)
    return {**out, "previous": entry["from"], "changed": entry["from"] != to}


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def index_metadata(data: bytes, index: pd.DataFrame, catalog_day: date | None, run_id: str | None) -> dict[str, Any]:
    """The ``index.json`` document of an index whose parquet bytes are ``data``."""
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "items": len(index),
        "catalog_date": catalog_day.isoformat() if catalog_day else None,
        "built_at": registry.now(),
        "run_id": run_id,
    }


def read_index_metadata(store: PartitionStore, version: int) -> dict[str, Any] | None:
    """The ``index.json`` of a version, or None (versions deployed before it existed have none)."""
    path = f"{layout.model_version(version)}/{INDEX_META_FILE}"
    return store.read_json(path) if store.exists(path) else None


def newest_catalog(store: PartitionStore) -> date | None:
    """The date of the newest complete catalog partition (``raw/catalog/dt=D/_SUCCESS``), if any."""
    days = store.partitions(layout.RAW_CATALOG)
    return days[-1] if days else None


def _catalog_day(store: PartitionStore, day: date) -> date:
    """The catalog a deploy of ``day`` uses: the newest complete one if it is later, else the day's own."""
    newest = newest_catalog(store)
    return newest if newest is not None and newest > day else day


def refresh_index(
    store: PartitionStore, version: int | None = None, run_id: str | None = None, only_if_newer: bool = False
) -> dict[str, Any]:
    """Rebuild ``version``'s serving index (default: the champion) from the newest complete catalog.

    No retraining: the index is the version's known items that the catalog lists as available, so a
    delisted item drops out and a relisted one comes back. ``index.parquet`` is replaced atomically,
    then ``index.json``; a running service picks the change up at its next registry poll. Unchanged
    item sets are not rewritten (idempotent). With ``only_if_newer`` nothing happens unless the catalog
    is newer than the one the index was built from. Returns version, catalog date, item count,
    ``changed``, and the ids ``delisted`` / ``relisted`` relative to the previous index.
    """
    if version is None:
        version = registry.load(store)["champion"]
        if version is None:
            raise DeployError("no champion is deployed yet: there is no serving index to refresh")
    version_dir = layout.model_version(version)
    if not store.exists(f"{version_dir}/{INDEX_FILE}"):
        raise DeployError(f"version {version} was never deployed (no serving index); deploy it first")
    day = newest_catalog(store)
    if day is None:
        raise DeployError(f"no complete catalog partition under {store.uri(layout.RAW_CATALOG)}: nothing to apply")
    meta = read_index_metadata(store, version) or {}
    old = store.read_parquet(f"{version_dir}/{INDEX_FILE}")
    if only_if_newer and meta.get("catalog_date") and meta["catalog_date"] >= day.isoformat():
        return {"version": version, "catalog_date": meta["catalog_date"], "items": len(old), "changed": False,
                "delisted": [], "relisted": []}
    index = build_index(store, version, day)
    old_ids = set(old[schema.ITEM_ID].astype(str)) if schema.ITEM_ID in old else set()
    new_ids = set(index[schema.ITEM_ID].astype(str))
    same = list(old.columns) == list(index.columns) and old.reset_index(drop=True).equals(index)
    if not same:
        data = _parquet_bytes(index)
        store.write_bytes(f"{version_dir}/{INDEX_FILE}", data)
        store.write_json(f"{version_dir}/{INDEX_META_FILE}", index_metadata(data, index, day, run_id))
    elif meta.get("catalog_date") != day.isoformat():
        # same items, newer catalog: record that it was applied (the sha still names the same bytes)
        data = store.read_bytes(f"{version_dir}/{INDEX_FILE}")
        store.write_json(f"{version_dir}/{INDEX_META_FILE}", index_metadata(data, index, day, run_id))
    result = {"version": version, "catalog_date": day.isoformat(), "items": len(index), "changed": not same,
              "delisted": sorted(old_ids - new_ids), "relisted": sorted(new_ids - old_ids)}
    log.info("serving index of version %d from the catalog of %s: %d items (%s)", version, day, len(index),
             "rewritten" if not same else "unchanged")
    return result
