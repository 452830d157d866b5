"""The embedded default: a partition store on a local directory."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from recsys.storage.base import PartitionStore, StorageError


class LocalStore(PartitionStore):
    """Partition store rooted at a local directory (created on first write)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, path: str) -> Path:
        full = (self.root / path).resolve()
        if full != self.root and self.root not in full.parents:
            raise StorageError(f"path {path!r} escapes the store root {self.root}")
        return full

    def exists(self, path: str) -> bool:
        return self._path(path).exists()

    def list_dir(self, path: str) -> list[str]:
        full = self._path(path)
        return sorted(os.listdir(full)) if full.is_dir() else []

    def read_bytes(self, path: str) -> bytes:
        full = self._path(path)
        try:
            return full.read_bytes()
        except FileNotFoundError as err:
            raise StorageError(f"{self.uri(path)} does not exist") from err
        except IsADirectoryError as err:
            raise StorageError(f"{self.uri(path)} is a directory, expected a file") from err

    def write_bytes(self, path: str, data: bytes) -> None:
        full = self._path(path)
        full.parent.mkdir(parents=True, exist_ok=True)
        tmp = full.with_name(f".tmp-{uuid.uuid4().hex}-{full.name}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, full)
        finally:
            tmp.unlink(missing_ok=True)

    def publish_dir(self, local_dir: Path, path: str) -> None:
        full = self._path(path)
        if not Path(local_dir).is_dir():
            raise StorageError(f"cannot publish {local_dir}: not a directory")
        full.parent.mkdir(parents=True, exist_ok=True)
        tmp = full.with_name(f".tmp-{uuid.uuid4().hex}-{full.name}")
        trash = full.with_name(f".old-{uuid.uuid4().hex}-{full.name}")
        shutil.copytree(local_dir, tmp)
        try:
            if full.exists():
                os.rename(full, trash)
            try:
                os.rename(tmp, full)
            except OSError:
                if trash.exists() and not full.exists():
                    os.rename(trash, full)  # put the previous tree back: a failed publish loses nothing
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(trash, ignore_errors=True)

    def download_dir(self, path: str, local_dir: Path) -> None:
        full = self._path(path)
        if not full.is_dir():
            raise StorageError(f"{self.uri(path)} is not a directory")
        shutil.copytree(full, local_dir, dirs_exist_ok=True)

    def uri(self, path: str) -> str:
        return f"file://{self._path(path)}"
