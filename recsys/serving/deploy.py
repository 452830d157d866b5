"""Deploy a blessed candidate (export + serving index + champion switch) and roll back.

A deployed version directory holds, besides its checkpoint (``tables.npz``) and ``metadata.json``,
a SavedModel (``saved_model.pb``, ``variables/``; so ``models/two_tower/versions`` is a TensorFlow
Serving base path) and ``index.parquet``: the items it may recommend, with titles, from the
catalog snapshot of its day (delisted items excluded). The parquet file is the unit of publication:
it carries its own description (catalog date, item count, build time, run id) in its schema metadata,
and is replaced by one atomic write. ``index.json`` repeats that description with the SHA-256 of the
parquet bytes; it is written after the parquet and the serving process watches it. A crash between
the two writes leaves a consistent parquet and a stale ``index.json``; readers trust the parquet and
a rerun of :func:`refresh_index` rewrites the stale file.

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
from typing import Any, cast

import pandas as pd

from recsys import registry, schema
from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.storage import PartitionStore, StorageError, layout
from recsys.storage.layout import INDEX_FILE, INDEX_META_FILE

log = logging.getLogger(__name__)


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
    catalog = catalog[_listed(catalog, day, version)]
    index = items.rename(columns={vocab.ID: schema.ITEM_ID, vocab.ROW: "row"})[[schema.ITEM_ID, "row"]].merge(
        catalog[[schema.ITEM_ID, schema.TITLE, schema.PRICE]], on=schema.ITEM_ID, how="inner"
    )
    if index.empty:
        raise DeployError(
            f"version {version} knows no item that the catalog of {day} lists as available: nothing to serve"
        )
    return index.sort_values("row").reset_index(drop=True)


def _listed(catalog: pd.DataFrame, day: date, version: int) -> pd.Series:
    """The catalog's ``available`` flags as a plain boolean mask; a catalog the index cannot be built from
    (a required column missing, availability blank or not true/false) raises :class:`DeployError`."""
    what = f"cannot build the serving index of version {version} from the catalog of {day}"
    missing = [c for c in (schema.ITEM_ID, schema.TITLE, schema.PRICE, schema.AVAILABLE) if c not in catalog.columns]
    if missing:
        raise DeployError(f"{what}: it has no column {', '.join(missing)}; redeliver the catalog snapshot")
    available = catalog[schema.AVAILABLE]
    blank = available.isna()
    if blank.any() or not pd.api.types.is_bool_dtype(available.dtype):
        bad = catalog.loc[blank, schema.ITEM_ID] if blank.any() else catalog[schema.ITEM_ID]
        raise DeployError(
            f"{what}: {schema.AVAILABLE} must be true or false for every item, but it is "
            f"{'blank' if blank.any() else f'of type {available.dtype}'} for {int(blank.sum()) or len(catalog)} "
            f"items (e.g. {', '.join(map(repr, bad.astype(str).head(3)))}); redeliver the catalog snapshot"
        )
    return available.astype(bool)


def deploy(store: PartitionStore, settings: Settings, day: date, *, run_id: str | None = None) -> dict[str, Any]:
    """Export the blessed candidate of ``day``, build its index, make it champion. Idempotent.

    The history entry's reason is the decision's, so a candidate the gate measured behind trailing popularity
    says there that it serves popularity's ranking; the result says so too (``fallback``,
    :mod:`recsys.serving.popularity`)."""
    reg = registry.load(store)
    decision = reg["decisions"].get(day.isoformat())
    if decision is None:
        raise DeployError(f"no evaluation decision for {day}: run the evaluate step first")
    if not decision["blessed"] or decision["candidate_version"] is None:
        raise DeployError(f"the candidate of {day} was not blessed ({decision['reason']}); refusing to deploy")
    out = deploy_version(store, settings, decision["candidate_version"], day, decision["reason"], run_id)
    verdict = cast(dict[str, Any], decision).get("popularity_fallback") or {}
    if settings.popularity_fallback and verdict.get("fallback"):
        out["fallback"] = verdict["fallback"]
    return out


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
    if registry.is_pruned(reg, version):
        raise DeployError(f"version {version} was pruned by retention (RECSYS_KEEP_VERSIONS) on "
                          f"{reg['versions'][str(version)]['pruned']}: its directory is gone, it cannot be deployed")
    if reg["champion"] == version or any(
        h["action"] == registry.DEPLOYED and h.get("to") == version for h in reg["history"]
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
            data = index_bytes(index, catalog_day, run_id)
            (local / INDEX_FILE).write_bytes(data)
            meta = index_metadata(data, index, catalog_day, run_id)
            (local / INDEX_META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            store.publish_dir(local, version_dir)
    entry = registry.deploy_once(store, version, reason, run_id)  # checks again under the registry lock
    if entry is None:
        champion = registry.load(store)["champion"]
        log.info("version %d was deployed meanwhile by another run; champion stays %s", version, champion)
        return {"version": version, "changed": False, "champion": champion}
    log.info("version %d is the champion (was %s)", version, entry["from"])
    out: dict[str, Any] = {"version": version, "changed": True, "previous": entry["from"]}
    try:  # retention after a deploy; a failure leaves old versions for the next deploy or `recsys prune`
        from recsys.serving.retention import prune_versions

        pruned = prune_versions(store, settings, run_id=run_id)["pruned"]
        if pruned:
            out["pruned"] = pruned
    except RecsysError as err:
        log.warning("version %d is deployed, but pruning old versions failed: %s", version, err)
        out["prune_error"] = str(err)
    return out


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
        deployed = list(dict.fromkeys(h["to"] for h in reg["history"] if h["action"] == registry.DEPLOYED))
        earlier = deployed[: deployed.index(current)] if current in deployed else []
        if not earlier:
            raise DeployError(f"champion {current} has no earlier deployed version to roll back to; pass --to VERSION")
        to = int(earlier[-1])
    if registry.is_pruned(reg, to):
        raise DeployError(f"version {to} was pruned by retention on {reg['versions'][str(to)]['pruned']}; "
                          "pick a version that is kept")
    if not store.exists(f"{layout.model_version(to)}/{INDEX_FILE}"):
        raise DeployError(f"version {to} was never deployed (no serving index); pick a deployed version")
    out: dict[str, Any] = {"version": to}
    try:
        refreshed = refresh_index(store, to, run_id=run_id, only_if_newer=True)
        out["index_catalog_date"] = refreshed["catalog_date"]
    except Exception as err:  # noqa: BLE001 - the on-call escape hatch: no index rebuild failure may block it
        message = f"the serving index of version {to} was not rebuilt, it keeps its old one ({err})"
        log.warning("rolling back to version %d: %s", to, message)
        out["index_error"] = message
    entry = registry.set_champion(store, to, registry.ROLLBACK, reason, run_id)
    return {**out, "previous": entry["from"], "changed": entry["from"] != to}


def index_bytes(index: pd.DataFrame, catalog_day: date | None, run_id: str | None) -> bytes:
    """``index.parquet``: the index rows plus their description (:func:`embedded_metadata`) in one file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    described = {"items": len(index), "catalog_date": catalog_day.isoformat() if catalog_day else None,
                 "built_at": registry.now(), "run_id": run_id}
    table = pa.Table.from_pandas(index, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           EMBEDDED_KEY: json.dumps(described, sort_keys=True).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


EMBEDDED_KEY = b"recsys.index"


def embedded_metadata(data: bytes) -> dict[str, Any]:
    """The description an ``index.parquet`` carries (:func:`index_bytes`) plus the sha256 of ``data``;
    for files written before it was embedded, only the sha256 and the item count."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(io.BytesIO(data))
    raw = (parquet.schema_arrow.metadata or {}).get(EMBEDDED_KEY)
    described = json.loads(raw) if raw else {"items": parquet.metadata.num_rows}
    return {**described, "sha256": hashlib.sha256(data).hexdigest()}


def index_metadata(data: bytes, index: pd.DataFrame, catalog_day: date | None, run_id: str | None) -> dict[str, Any]:
    """The ``index.json`` document of an index whose parquet bytes are ``data``."""
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "items": len(index),
        "catalog_date": catalog_day.isoformat() if catalog_day else None,
        "built_at": registry.now(),
        "run_id": run_id,
    }


def publish_index(store: PartitionStore, version: int, index: pd.DataFrame, catalog_day: date | None,
                  run_id: str | None) -> bytes:
    """Replace ``version``'s serving index: the parquet (the unit, one atomic write), then ``index.json``."""
    version_dir = layout.model_version(version)
    data = index_bytes(index, catalog_day, run_id)
    store.write_bytes(f"{version_dir}/{INDEX_FILE}", data)
    store.write_json(f"{version_dir}/{INDEX_META_FILE}", embedded_metadata(data))
    return data


def read_index_metadata(store: PartitionStore, version: int) -> dict[str, Any] | None:
    """The description of a version's serving index, or None if it has none (never deployed).

    ``index.json`` when it describes the current ``index.parquet`` (same sha256), else what the parquet
    itself carries (an interrupted publish left ``index.json`` stale)."""
    version_dir = layout.model_version(version)
    if not store.exists(f"{version_dir}/{INDEX_FILE}"):
        return None
    data = store.read_bytes(f"{version_dir}/{INDEX_FILE}")
    path = f"{version_dir}/{INDEX_META_FILE}"
    meta = store.read_json(path) if store.exists(path) else None
    if meta is not None and meta.get("sha256") == hashlib.sha256(data).hexdigest():
        return meta
    return embedded_metadata(data)


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
    is newer than the one the index was built from. An ``index.json`` left stale by an interrupted
    refresh (it does not describe ``index.parquet``) is rewritten. Returns version, catalog date, item
    count, ``changed``, and the ids ``delisted`` / ``relisted`` relative to the previous index.
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
    data = store.read_bytes(f"{version_dir}/{INDEX_FILE}")
    meta = read_index_metadata(store, version) or {}
    old = pd.read_parquet(io.BytesIO(data))
    json_path = f"{version_dir}/{INDEX_META_FILE}"
    stale = not store.exists(json_path) or store.read_json(json_path).get("sha256") != meta.get("sha256")
    if only_if_newer and not stale and meta.get("catalog_date") and meta["catalog_date"] >= day.isoformat():
        return {"version": version, "catalog_date": meta["catalog_date"], "items": len(old), "changed": False,
                "delisted": [], "relisted": []}
    index = build_index(store, version, day)
    old_ids = set(old[schema.ITEM_ID].astype(str)) if schema.ITEM_ID in old else set()
    new_ids = set(index[schema.ITEM_ID].astype(str))
    same = list(old.columns) == list(index.columns) and old.reset_index(drop=True).equals(index)
    if not same or meta.get("catalog_date") != day.isoformat():
        # new items, or the same items from a newer catalog: record that it was applied
        publish_index(store, version, index, day, run_id)
    elif stale:
        store.write_json(json_path, meta)  # an interrupted publish: the parquet is right, describe it
    result = {"version": version, "catalog_date": day.isoformat(), "items": len(index), "changed": not same,
              "delisted": sorted(old_ids - new_ids), "relisted": sorted(new_ids - old_ids)}
    log.info("serving index of version %d from the catalog of %s: %d items (%s)", version, day, len(index),
             "rewritten" if not same else "unchanged")
    return result
