"""Partition stores: the local directory (embedded default) and, later, WebHDFS (production)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from recsys.storage.base import PartitionStore, StorageError

if TYPE_CHECKING:
    from recsys.config import Settings

__all__ = ["PartitionStore", "StorageError", "open_store"]


def open_store(settings: Settings) -> PartitionStore:
    """The store the settings name (``RECSYS_STORAGE_BACKEND``) at ``RECSYS_STORAGE_ROOT``."""
    if settings.storage_backend == "local":
        from recsys.storage.local import LocalStore

        return LocalStore(settings.storage_root)
    raise StorageError(
        f"storage backend {settings.storage_backend!r} is not available in this build; "
        "set RECSYS_STORAGE_BACKEND=local"
    )
