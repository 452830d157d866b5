"""A lock in the store for writers on any machine (DAG tasks, the CLI, benchmarks): a lease with owner and expiry.

A lock is a directory of numbered lease files (``<dir>/000000000042``), each made with
:meth:`~recsys.storage.base.PartitionStore.create_exclusive` (atomic on the local store and on HDFS) and
holding its owner (host, pid, run id), a random token and when it expires. The holder is the creator of
the highest number. It is free when that lease is released, expired, or owned by a dead process of this
host; a contender then creates the next number: of several, exactly one succeeds, and it holds the lock
only if no higher number appeared meanwhile (a contender that waited through a garbage collection backs
off). Leases are never deleted while they can matter: the holder deletes numbers well below its own.

Expiry: a holder refreshes its lease every third of the expiry (a background thread) until it releases
it, so only a dead or frozen process loses it; a crashed holder's lease is taken over once it expired
(at once if its process is known dead on this host). Clocks of the machines are assumed in step
(NTP) to well within the expiry. :meth:`StoreLock.check` before a write refuses to write when the lease
was lost (a holder frozen past its expiry).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from recsys.storage.base import HOST_ID, PartitionStore, StorageError, pid_alive

log = logging.getLogger(__name__)

DEFAULT_EXPIRY = 60.0  # seconds a lease lives without a refresh
KEEP = 8  # leases kept below the holder's (who held the lock last, for a person looking)
_WIDTH = 12


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


PID_NAMESPACE = _pid_namespace()


class LockTimeout(StorageError):
    """The lock was not free within the time asked for."""


class LockLost(StorageError):
    """The lease expired and another writer took the lock over: nothing may be written."""


def _alive(pid: int) -> bool:
    if not pid_alive(pid):
        return False
    try:  # a killed child its parent has not reaped yet
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def owner_is_dead(lease: dict[str, Any]) -> bool:
    """True if ``lease``'s owner is a process of this host (same pid namespace) that no longer runs."""
    pid = lease.get("pid")
    return (lease.get("host_id") == HOST_ID and lease.get("pid_namespace") == PID_NAMESPACE
            and isinstance(pid, int) and not _alive(pid))


def is_free(lease: dict[str, Any] | None, now: float | None = None) -> bool:
    """True if the highest lease no longer holds the lock (released, expired, or its owner died)."""
    if lease is None:
        return True
    now = time.time() if now is None else now
    return bool(lease.get("released")) or float(lease.get("expires", 0)) < now or owner_is_dead(lease)


def describe(lease: dict[str, Any] | None) -> str:
    """``run R (host H, pid P) since T``: who holds a lease, for messages."""
    if lease is None:
        return "nobody"
    return (f"run {lease.get('run_id')} ({lease.get('purpose')}; host {lease.get('host')}, pid {lease.get('pid')}) "
            f"since {lease.get('acquired_at')}")


class StoreLock:
    """The lock at directory ``path`` of ``store``. Use :func:`store_lock` (re-entrant, refreshed)."""

    def __init__(self, store: PartitionStore, path: str, *, run_id: str | None = None, purpose: str = "",
                 expiry: float = DEFAULT_EXPIRY, timeout: float | None = None, poll: float = 0.5) -> None:
        if expiry <= 0:
            raise ValueError(f"a lock expiry must be positive, got {expiry}")
        self.store, self.path = store, posixpath.normpath(path)
        self.expiry, self.timeout, self.poll = expiry, timeout, poll
        self.number: int | None = None
        self._unreadable: dict[int, float] = {}  # top lease number -> when it was first found unreadable
        self.lease: dict[str, Any] = {
            "token": uuid.uuid4().hex, "host": socket.gethostname(), "host_id": HOST_ID,
            "pid_namespace": PID_NAMESPACE, "pid": os.getpid(), "run_id": run_id, "purpose": purpose,
        }

    # --- reading the lock's state ----------------------------------------------------------------
    def _file(self, number: int) -> str:
        return f"{self.path}/{number:0{_WIDTH}d}"

    def numbers(self) -> list[int]:
        """The lease numbers present, ascending."""
        return sorted(int(name) for name in self.store.list_dir(self.path) if name.isdigit())

    def read(self, number: int) -> dict[str, Any] | None:
        """Lease ``number``; None if it is gone."""
        try:
            lease: dict[str, Any] = self.store.read_json(self._file(number))
        except StorageError:
            return None
        return lease

    def holder(self) -> tuple[int, dict[str, Any] | None]:
        """The highest lease number (0: none yet) and its content."""
        numbers = self.numbers()
        top = numbers[-1] if numbers else 0
        return top, self.read(top) if top else None

    # --- taking and giving back ------------------------------------------------------------------
    def _content(self, **changes: Any) -> bytes:
        now = time.time()
        self.lease.update(expires=now + self.expiry, refreshed_at=now, **changes)
        return json.dumps(self.lease, sort_keys=True).encode()

    def try_acquire(self) -> bool:
        """One attempt: True if this lock is now held."""
        top, lease = self.holder()
        if top and lease is None:  # unreadable (damaged by a crash of its disk?): free once it stays so too long
            if time.monotonic() - self._unreadable.setdefault(top, time.monotonic()) < self.expiry:
                return False
        elif top and lease is not None and not is_free(lease):
            return False
        mine = top + 1
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        if not self.store.create_exclusive(self._file(mine), self._content(acquired_at=stamp, number=mine)):
            return False
        if self.numbers()[-1:] != [mine]:  # we waited through a garbage collection: someone holds a higher lease
            self.store.delete(self._file(mine))
            return False
        if top and lease is not None and not lease.get("released"):
            log.warning("took over the lock %s from %s (expired or dead)", self.store.uri(self.path), describe(lease))
        self.number = mine
        self._collect(mine)
        return True

    def acquire(self) -> None:
        """Wait until this lock is held; :class:`LockTimeout` after ``timeout`` seconds (None: no limit)."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        delay, told = 0.005, 0.0
        while not self.try_acquire():
            if deadline is not None and time.monotonic() > deadline:
                raise LockTimeout(
                    f"the lock {self.store.uri(self.path)} was not free within {self.timeout:g} s: held by "
                    f"{describe(self.holder()[1])}; it is taken over once that lease expires ({self.expiry:g} s "
                    "without a refresh) or at once if its process died on this host"
                )
            if time.monotonic() - told > 60:
                log.info("waiting for the lock %s, held by %s", self.store.uri(self.path), describe(self.holder()[1]))
                told = time.monotonic()
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, self.poll)

    def refresh(self, store: PartitionStore | None = None) -> None:
        """Push this lease's expiry forward (the holder does it every third of the expiry; from another
        thread through ``store``, a :meth:`~recsys.storage.base.PartitionStore.fork` of the lock's)."""
        if self.number is not None:
            (store or self.store).write_bytes(self._file(self.number), self._content())

    def check(self) -> None:
        """:class:`LockLost` unless this lease still holds the lock (call right before a guarded write)."""
        top, lease = self.holder()
        if self.number is None or top != self.number or lease is None or lease.get("token") != self.lease["token"]:
            raise LockLost(
                f"the lock {self.store.uri(self.path)} was taken over by {describe(lease)} while this process "
                f"held it past its expiry ({self.expiry:g} s); nothing was written"
            )

    def release(self) -> None:
        """Give the lock back (the lease is marked released; it stays for the record)."""
        if self.number is not None:
            self.store.write_bytes(self._file(self.number), self._content(released=True))
            self.number = None

    def _collect(self, mine: int) -> None:
        """Delete leases far below ``mine`` (only the holder does, so only one process at a time)."""
        old = [n for n in self.numbers() if n < mine - KEEP]
        if len(old) >= KEEP:
            for number in old:
                self.store.delete(self._file(number))


_held = threading.local()


@contextlib.contextmanager
def store_lock(store: PartitionStore, path: str, *, run_id: str | None = None, purpose: str = "",
               expiry: float = DEFAULT_EXPIRY, timeout: float | None = None,
               poll: float = 0.5) -> Iterator[StoreLock]:
    """Hold the lock at ``path`` of ``store`` for the block, refreshing it; re-entrant within a thread."""
    key = store.uri(path)
    held: dict[str, StoreLock] = _held.__dict__.setdefault("locks", {})
    if key in held:
        yield held[key]
        return
    lock = StoreLock(store, path, run_id=run_id, purpose=purpose, expiry=expiry, timeout=timeout, poll=poll)
    lock.acquire()
    stop = threading.Event()

    def refresh() -> None:
        own: PartitionStore | None = None
        while not stop.wait(expiry / 3):
            try:
                own = own or store.fork()  # a client of its own: this thread runs beside the holder's calls
                lock.refresh(own)
            except StorageError as err:  # the next refresh may get through; check() guards the writes
                log.warning("refreshing the lock %s failed: %s", key, err)

    refresher = threading.Thread(target=refresh, name=f"lock-refresh {path}", daemon=True)
    refresher.start()
    held[key] = lock
    try:
        yield lock
    finally:
        del held[key]
        stop.set()
        refresher.join()
        try:
            lock.release()
        except StorageError as err:  # the work is done; the lease expires by itself
            log.warning("releasing the lock %s failed (it expires in %g s): %s", key, expiry, err)
