"""The partition store interface: what every storage backend (local directory, WebHDFS) provides.

Paths are relative POSIX strings under the store's root (``raw/events/dt=2011-01-04/part-0.parquet``).
Writes are atomic: a file or directory is written under a temporary name next to its destination
and renamed into place, so a reader never sees half of it.
"""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.errors import RecsysError
from recsys.storage import layout

if TYPE_CHECKING:
    import pandas as pd


class StorageError(RecsysError, RuntimeError):
    """A storage operation failed: missing path, unreadable data, or a backend error."""


class PartitionStore(ABC):
    """Abstract partition store. Subclasses implement the primitive operations only."""

    # --- primitives -------------------------------------------------------------------------
    @abstractmethod
    def exists(self, path: str) -> bool:
        """True if a file or directory exists at ``path``."""

    @abstractmethod
    def list_dir(self, path: str) -> list[str]:
        """Names (not paths) of the entries directly under directory ``path``, sorted; [] if absent."""

    @abstractmethod
    def read_bytes(self, path: str) -> bytes:
        """The content of file ``path``; :class:`StorageError` if it does not exist."""

    @abstractmethod
    def write_bytes(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically (temporary file + rename), replacing any old file."""

    @abstractmethod
    def publish_dir(self, local_dir: Path, path: str) -> None:
        """Copy a local directory tree to ``path`` atomically, replacing anything already there."""

    @abstractmethod
    def download_dir(self, path: str, local_dir: Path) -> None:
        """Copy directory ``path`` into ``local_dir`` (created); :class:`StorageError` if absent."""

    @abstractmethod
    def uri(self, path: str) -> str:
        """A human-readable location for messages and links (``file:///...``, ``hdfs://...``)."""

    # --- derived helpers --------------------------------------------------------------------
    def read_json(self, path: str) -> Any:
        """Parse the JSON file at ``path``."""
        try:
            return json.loads(self.read_bytes(path).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StorageError(f"{self.uri(path)} is not valid JSON: {err}") from err

    def write_json(self, path: str, obj: Any) -> None:
        """Write ``obj`` as indented, key-sorted JSON (stable bytes for identical content)."""
        self.write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())

    def read_parquet(self, path: str) -> pd.DataFrame:
        """Read one parquet file into a DataFrame."""
        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.read_bytes(path)))

    def write_parquet(self, path: str, frame: pd.DataFrame) -> None:
        """Write a DataFrame as one parquet file, atomically."""
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        self.write_bytes(path, buf.getvalue())

    def is_complete(self, partition_dir: str) -> bool:
        """A partition is complete only when its ``_SUCCESS`` marker exists."""
        return self.exists(f"{partition_dir}/{layout.SUCCESS}")

    def mark_success(self, partition_dir: str) -> None:
        """Write the ``_SUCCESS`` marker: the last write of a partition."""
        self.write_bytes(f"{partition_dir}/{layout.SUCCESS}", b"")

    def data_files(self, partition_dir: str) -> list[str]:
        """Paths of a partition's data files (names starting with ``_`` or ``.`` are metadata)."""
        return [
            f"{partition_dir}/{name}"
            for name in self.list_dir(partition_dir)
            if not name.startswith(("_", "."))
        ]

    def partitions(self, dataset_dir: str, complete_only: bool = True) -> list[date]:
        """Dates of the ``dt=YYYY-MM-DD`` partitions under ``dataset_dir``, ascending."""
        dates = []
        for name in self.list_dir(dataset_dir):
            day = layout.parse_partition_name(name)
            if day is None:
                continue
            if complete_only and not self.is_complete(f"{dataset_dir}/{name}"):
                continue
            dates.append(day)
        return sorted(dates)
