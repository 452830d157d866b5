"""Deploy a blessed candidate (export + serving index + champion switch) and roll back.

A deployed version directory holds, besides its checkpoint (``tables.npz``) and ``metadata.json``,
a SavedModel (``saved_model.pb``, ``variables/``; so ``models/two_tower/versions`` is a TensorFlow
Serving base path) and ``index.parquet``: the items it may recommend, with titles, from the
catalog snapshot of its day (delisted items excluded).
"""

from __future__ import annotations

import logging
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from recsys import registry, schema
from recsys.config import Settings
from recsys.storage import PartitionStore, StorageError, layout

log = logging.getLogger(__name__)

INDEX_FILE = "index.parquet"


class DeployError(RuntimeError):
    """A deploy or rollback was refused (not blessed, unknown version, nothing to roll back to)."""


def build_index(store: PartitionStore, version: int, day: date) -> pd.DataFrame:
    """Items the version knows that the day's catalog lists as available: item_id, row, title, price."""
    from recsys.features import vocab
    from recsys.validation.partition import read_partition

    items = vocab.load(store, vocab.ITEMS)
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
    from recsys.model.export import export_saved_model
    from recsys.serving.index import load_scorer

    reg = registry.load(store)
    decision = reg["decisions"].get(day.isoformat())
    if decision is None:
        raise DeployError(f"no evaluation decision for {day}: run the evaluate step first")
    if not decision["blessed"]:
        raise DeployError(f"the candidate of {day} was not blessed ({decision['reason']}); refusing to deploy")
    version = decision["candidate_version"]
    if reg["champion"] == version or any(
        h["action"] == "deployed" and h.get("to") == version for h in reg["history"]
    ):
        # a rerun of a date deployed before must not take the champion back (that is a rollback)
        log.info("version %d was already deployed; champion stays %s", version, reg["champion"])
        return {"version": version, "changed": False, "champion": reg["champion"]}
    version_dir = layout.model_version(version)
    if not store.exists(f"{version_dir}/{INDEX_FILE}"):
        scorer = load_scorer(store, version)
        index = build_index(store, version, day)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "version"
            store.download_dir(version_dir, local)
            export_saved_model(
                {"user": scorer.user_table, "item": scorer.item_table}, scorer.user_rows,
                list(scorer.item_ids), [int(r) for r in index["row"]], local, settings.k,
            )
            index.to_parquet(local / INDEX_FILE, index=False)
            store.publish_dir(local, version_dir)
    entry = registry.set_champion(store, version, "deployed", decision["reason"], run_id)
    log.info("version %d is the champion (was %s)", version, entry["from"])
    return {"version": version, "changed": True, "previous": entry["from"]}


def rollback(store: PartitionStore, reason: str, to: int | None = None, run_id: str | None = None) -> dict[str, Any]:
    """Point the champion back to ``to`` (default: the version deployed before the current champion)."""
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
    entry = registry.set_champion(store, to, "rollback", reason, run_id)
    return {"version": to, "previous": entry["from"], "changed": entry["from"] != to}
