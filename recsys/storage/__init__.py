"""Partition stores: the local directory (embedded default) and WebHDFS (production)."""

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
    if settings.storage_backend == "webhdfs":
        if not settings.webhdfs_url:
            raise StorageError(
                "RECSYS_STORAGE_BACKEND=webhdfs needs the NameNode's WebHDFS address: set RECSYS_WEBHDFS_URL "
                "(e.g. http://namenode:9870; Airflow tasks take it from the connection RECSYS_WEBHDFS_CONN_ID), "
                "or set RECSYS_STORAGE_BACKEND=local to use a local directory"
            )
        from recsys.storage.webhdfs import WebHDFSStore

        return WebHDFSStore(
            settings.webhdfs_url, settings.storage_root, user=settings.webhdfs_user, auth=settings.webhdfs_auth
        )
    raise StorageError(
        f"unknown storage backend {settings.storage_backend!r}: set RECSYS_STORAGE_BACKEND=local or webhdfs"
    )
