"""The partition store interface: what every storage backend (local directory, WebHDFS) provides.

Paths are relative POSIX strings under the store's root (``raw/events/dt=2011-01-04/part-0.parquet``).
Writes are atomic: a file or directory is written under a temporary name next to its destination
and renamed into place, so a reader never sees half of it.

Publishing a directory takes steps that a crash (``kill -9``, a lost connection) can interrupt; every
step leaves a state the next operation on that path repairs (:meth:`PartitionStore.publish_dir`):

1. copy the tree to ``.tmp-<token>-<name>`` (a crash here leaves an incomplete copy: stale, deleted);
2. rename it to ``.new-<token>-<name>``: a complete copy, ready to be swapped in;
3. rename the current ``<name>`` aside to ``.old-<token>-<name>``;
4. rename ``.new-<token>-<name>`` to ``<name>``, then delete ``.old-<token>-<name>``.

If ``<name>`` is missing and a ``.new-*`` sibling exists, the swap is finished; if only an ``.old-*``
sibling exists, it is put back. The token records when and by which process (host, pid) a temporary was
made: one whose process is dead, or older than :data:`STALE_SECONDS`, is deleted by the next publish of
the same name or listing of its directory. Listings never show temporaries.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import re
import socket
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from recsys.errors import RecsysError
from recsys.storage import layout

if TYPE_CHECKING:
    import pandas as pd


class StorageError(RecsysError, RuntimeError):
    """A storage operation failed: missing path, unreadable data, or a backend error."""


# A temporary whose process cannot be checked (another host) is left alone this long: longer than any
# copy of a model version takes, short enough that a crashed copy does not hold its disk space for days.
STALE_SECONDS = 6 * 3600
HOST_ID = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMPORARY = re.compile(r"^\.(tmp|new|old)-(\d+)-(\d+)-([0-9a-f]{8})-[0-9a-f]{8}-(.+)$")
_LEGACY_TEMPORARY = re.compile(r"^\.(tmp|old)-[0-9a-f]{32}-(.+)$")  # written before tokens had an owner


@dataclass(frozen=True)
class Temporary:
    """A parsed temporary sibling name: its kind, the entry it belongs to, and its owner if recorded."""

    entry: str  # the temporary's own name
    kind: str  # tmp (copy under way) | new (complete copy) | old (the replaced entry)
    target: str  # the name it is published as
    created: float | None = None  # seconds since the epoch
    pid: int | None = None
    host: str | None = None  # HOST_ID of the writer


def new_token() -> str:
    """A temporary's token: ``<seconds>-<pid>-<host id>-<random>``, this process and now."""
    return f"{int(time.time())}-{os.getpid()}-{HOST_ID}-{uuid.uuid4().hex[:8]}"


def temporary_name(kind: str, target: str, token: str | None = None) -> str:
    """``.<kind>-<token>-<target>``, with a new token unless one is given."""
    return f".{kind}-{token or new_token()}-{target}"


def parse_temporary(entry: str) -> Temporary | None:
    """The temporary named ``entry``, or None if it is an ordinary name."""
    m = _TEMPORARY.match(entry)
    if m:
        kind, created, pid, host, target = m.groups()
        return Temporary(entry, kind, target, float(created), int(pid), host)
    m = _LEGACY_TEMPORARY.match(entry)
    if m:
        return Temporary(entry, m.group(1), m.group(2))
    return None


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists on this host (one of another user counts; a zombie counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(tmp: Temporary, mtime: float, now: float | None = None) -> bool:
    """True if no live process can still be writing ``tmp`` (dead owner on this host, or too old)."""
    now = time.time() if now is None else now
    if tmp.host == HOST_ID and tmp.pid is not None and not pid_alive(tmp.pid):
        return True
    created = tmp.created if tmp.created is not None else mtime
    return now - created > STALE_SECONDS


class PartitionStore(ABC):
    """Abstract partition store. Subclasses implement the primitives and the steps of a publish only."""

    # --- primitives -------------------------------------------------------------------------
    @abstractmethod
    def exists(self, path: str) -> bool:
        """True if a file or directory exists at ``path``."""

    @abstractmethod
    def list_dir(self, path: str) -> list[str]:
        """Names (not paths) of the entries under directory ``path``, sorted, never temporaries; [] if absent."""

    @abstractmethod
    def read_bytes(self, path: str) -> bytes:
        """The content of file ``path``; :class:`StorageError` if it does not exist."""

    def size(self, path: str) -> int:
        """The length in bytes of file ``path``; :class:`StorageError` if it does not exist.

        Backends override this (and :meth:`read_range`) to answer without reading the file."""
        return len(self.read_bytes(path))

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """``length`` bytes of file ``path`` from byte ``offset`` (fewer at its end): a part of a large file
        (one shard's rows of a stored table) without holding the rest; :class:`StorageError` if it does not exist.
        """
        if offset < 0 or length < 0:
            raise StorageError(f"a byte range starts and has a length >= 0: got {offset}, {length}")
        return self.read_bytes(path)[offset:offset + length]

    @abstractmethod
    def write_bytes(self, path: str, data: bytes | IO[bytes]) -> None:
        """Write ``data`` to ``path`` atomically (temporary file + rename), replacing any old file. ``data``: the
        bytes, or an open binary file whose remaining bytes are copied in pieces (a large file written from a
        local temporary file is never held in memory whole)."""

    @abstractmethod
    def download_dir(self, path: str, local_dir: Path) -> None:
        """Copy directory ``path`` into ``local_dir`` (created); :class:`StorageError` if absent."""

    @abstractmethod
    def uri(self, path: str) -> str:
        """A human-readable location for messages and links (``file:///...``, ``hdfs://...``)."""

    @abstractmethod
    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create file ``path`` holding ``data`` unless something exists there; False if it did.

        One atomic step: of concurrent callers exactly one gets True, and a reader sees the whole
        content or no file (the building block of :mod:`recsys.storage.lock`).
        """

    def delete(self, path: str) -> None:
        """Delete the file or tree ``path`` if it exists (errors ignored)."""
        self._remove(path)

    def fork(self) -> PartitionStore:
        """The same store for use by another thread: with its own connection where the backend has one."""
        return self

    # --- steps of a directory publish, each backend's (paths relative to the root) ------------
    @abstractmethod
    def _entries(self, path: str) -> dict[str, float] | None:
        """Every name under directory ``path`` (temporaries too) with its modification time; None if absent."""

    @abstractmethod
    def _present(self, path: str) -> bool:
        """``exists`` without repairing anything."""

    @abstractmethod
    def _copy_tree(self, local_dir: Path, path: str) -> None:
        """Copy the local tree to the new directory ``path`` (its parents created)."""

    @abstractmethod
    def _move(self, src: str, dst: str, replace: bool) -> None:
        """Rename ``src`` to ``dst`` in one step; without ``replace`` an existing ``dst`` is an error."""

    @abstractmethod
    def _remove(self, path: str) -> None:
        """Delete a file or tree if it exists; errors are ignored (it is garbage either way)."""

    # --- publishing a directory and repairing an interrupted publish ---------------------------
    def publish_dir(self, local_dir: Path, path: str) -> None:
        """Copy a local directory tree to ``path``, replacing anything already there (module docstring)."""
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise StorageError(f"cannot publish {local_dir}: not a directory")
        self.uri(path)  # refuses a path outside the root before anything is written
        parent, name = posixpath.split(posixpath.normpath(path))
        if name in ("", ".", ".."):
            raise StorageError(f"cannot publish {local_dir} over the store root: name a directory under it")
        self._settle(path)  # finish or undo an earlier interrupted publish, drop stale temporaries
        token = new_token()
        tmp, new, old = (posixpath.join(parent, temporary_name(k, name, token)) for k in ("tmp", "new", "old"))
        try:
            self._copy_tree(local_dir, tmp)
            self._move(tmp, new, replace=False)
        except BaseException:
            self._remove(tmp)
            raise
        moved_aside = False
        try:
            if self._present(path):
                self._move(path, old, replace=False)
                moved_aside = True
            self._move(new, path, replace=False)
        except (StorageError, OSError):
            if not self._undo_swap(path, new, old, moved_aside):
                raise
        self._remove(old)

    def _undo_swap(self, path: str, new: str, old: str, moved_aside: bool) -> bool:
        """After a failed swap: True if another process finished it, else put the previous tree back.

        Best effort: if this fails too (the backend is unreachable), the next operation on ``path``
        finishes the swap from ``new`` (module docstring).
        """
        try:
            if not self._present(new) and self._present(path):
                return True  # a reader repaired this path in the middle of our swap: it is published
            if moved_aside and not self._present(path):
                self._move(old, path, replace=False)
            self._remove(new)
        except (StorageError, OSError):
            pass
        return False

    def _settle(self, path: str) -> bool:
        """Repair ``path`` after an interrupted publish and drop stale temporaries of it; True if repaired."""
        path = posixpath.normpath(path)
        if path in ("", "."):
            return False
        parent, name = posixpath.split(path)
        entries = self._entries(parent)
        if not entries:
            return False
        temps = [t for t in map(parse_temporary, entries) if t is not None and t.target == name]
        if not temps:
            return False
        repaired = False
        if name not in entries and not self._present(path):
            # a complete new copy wins over the old one; the latest of each kind if several
            for kind in ("new", "old"):
                candidates = sorted(
                    (t for t in temps if t.kind == kind), key=lambda t: (t.created or 0, entries[t.entry])
                )
                if candidates:
                    src = candidates[-1]
                    try:
                        self._move(posixpath.join(parent, src.entry), path, replace=False)
                    except StorageError:
                        pass  # another process got there first
                    temps.remove(src)
                    repaired = True
                    break
        present = self._present(path)
        for t in temps:
            stale = is_stale(t, entries[t.entry])
            # a half copy is garbage once its writer is gone; a whole one or the old tree only once in place
            if (t.kind == "tmp" and stale) or (present and (t.kind == "old" or stale)):
                self._remove(posixpath.join(parent, t.entry))
        return repaired

    def _repair(self, path: str) -> bool:
        """After ``path`` was found missing: repair the nearest ancestor with an interrupted publish."""
        path = posixpath.normpath(path)
        try:
            while path not in ("", "."):
                parent = posixpath.dirname(path)
                if self._entries(parent) is not None:
                    return self._settle(path)
                path = parent
        except StorageError:
            pass  # best effort: a reader may not be allowed to write; the caller reports the miss
        return False

    def _visible(self, path: str, entries: dict[str, float]) -> list[str]:
        """The sorted names in ``entries`` without temporaries.

        An entry whose publish was interrupted is repaired (and listed); stale copies are deleted.
        """
        names = {entry for entry in entries if parse_temporary(entry) is None}
        for entry, mtime in entries.items():
            tmp = parse_temporary(entry)
            if tmp is None:
                continue
            if tmp.target not in names and tmp.kind in ("new", "old"):
                child = posixpath.join(path, tmp.target)
                with contextlib.suppress(StorageError):
                    self._settle(child)
                if self._present(child):
                    names.add(tmp.target)
            elif tmp.kind == "tmp" and is_stale(tmp, mtime):
                self._remove(posixpath.join(path, entry))
        return sorted(names)

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
