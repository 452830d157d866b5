"""The stored embedding tables of a model version."""

from __future__ import annotations

import io

import numpy as np

from recsys.storage import PartitionStore, layout


def load_tables(store: PartitionStore, version: int) -> dict[str, np.ndarray]:
    """The embedding tables of a stored version."""
    with np.load(io.BytesIO(store.read_bytes(f"{layout.model_version(version)}/{layout.TABLES_FILE}"))) as npz:
        return {name: npz[name] for name in npz.files}
