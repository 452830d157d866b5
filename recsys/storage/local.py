"""The embedded default: a partition store on a local directory."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from pathlib import Path
from typing import IO

from recsys.storage.base import PartitionStore, StorageError, temporary_name

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, failing if ``dst`` exists (``os.rename`` replaces an empty directory)."""
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):  # EINVAL: a file system without the flag
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


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
        return self._present(path) or (self._repair(path) and self._present(path))

    def list_dir(self, path: str) -> list[str]:
        entries = self._entries(path)
        if entries is None and self._repair(path):
            entries = self._entries(path)
        return self._visible(path, entries) if entries is not None else []

    def read_bytes(self, path: str) -> bytes:
        full = self._path(path)
        if not full.exists():
            self._repair(path)
        try:
            return full.read_bytes()
        except FileNotFoundError as err:
            raise StorageError(f"{self.uri(path)} does not exist") from err
        except IsADirectoryError as err:
            raise StorageError(f"{self.uri(path)} is a directory, expected a file") from err

    def size(self, path: str) -> int:
        full = self._path(path)
        if not full.exists():
            self._repair(path)
        try:
            if full.is_dir():
                raise StorageError(f"{self.uri(path)} is a directory, expected a file")
            return full.stat().st_size
        except FileNotFoundError as err:
            raise StorageError(f"{self.uri(path)} does not exist") from err

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise StorageError(f"a byte range starts and has a length >= 0: got {offset}, {length}")
        full = self._path(path)
        if not full.exists():
            self._repair(path)
        try:
            with open(full, "rb") as fh:
                fh.seek(offset)
                return fh.read(length)
        except FileNotFoundError as err:
            raise StorageError(f"{self.uri(path)} does not exist") from err
        except IsADirectoryError as err:
            raise StorageError(f"{self.uri(path)} is a directory, expected a file") from err

    def write_bytes(self, path: str, data: bytes | IO[bytes]) -> None:
        full = self._path(path)
        full.parent.mkdir(parents=True, exist_ok=True)
        tmp = full.with_name(temporary_name("tmp", full.name))
        try:
            with open(tmp, "wb") as fh:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    fh.write(data)
                else:
                    shutil.copyfileobj(data, fh)
                fh.flush()
                os.fsync(fh.fileno())
            self._move(str(tmp.relative_to(self.root)), path, replace=True)
        finally:
            tmp.unlink(missing_ok=True)

    def download_dir(self, path: str, local_dir: Path) -> None:
        full = self._path(path)
        if not full.is_dir() and not (self._repair(path) and full.is_dir()):
            raise StorageError(f"{self.uri(path)} is not a directory")
        shutil.copytree(full, local_dir, dirs_exist_ok=True)

    def uri(self, path: str) -> str:
        return f"file://{self._path(path)}"

    def create_exclusive(self, path: str, data: bytes) -> bool:
        full = self._path(path)
        full.parent.mkdir(parents=True, exist_ok=True)
        tmp = full.with_name(temporary_name("tmp", full.name))
        try:
            with open(tmp, "xb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, full)  # atomic, and fails if anything exists at ``full``
            except FileExistsError:
                return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    # --- steps of a directory publish ------------------------------------------------------------
    def _entries(self, path: str) -> dict[str, float] | None:
        full = self._path(path)
        entries = {}
        try:
            with os.scandir(full) as it:
                for e in it:
                    try:
                        entries[e.name] = e.stat(follow_symlinks=False).st_mtime
                    except FileNotFoundError:
                        continue  # deleted since the directory was read (another writer's temporary)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return entries

    def _present(self, path: str) -> bool:
        return self._path(path).exists()

    def _copy_tree(self, local_dir: Path, path: str) -> None:
        full = self._path(path)
        full.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(local_dir, full)

    def _move(self, src: str, dst: str, replace: bool) -> None:
        source, target = self._path(src), self._path(dst)
        try:
            if replace:
                os.replace(source, target)
            else:
                _rename_noreplace(source, target)
        except OSError as err:
            raise StorageError(f"renaming {self.uri(src)} to {self.uri(dst)} failed: {err}") from err

    def _remove(self, path: str) -> None:
        full = self._path(path)
        if full.is_dir() and not full.is_symlink():
            shutil.rmtree(full, ignore_errors=True)
        else:
            full.unlink(missing_ok=True)
