"""The production partition store: a directory tree on HDFS, reached over WebHDFS (the REST API).

Uses the ``hdfs`` client (the library behind Airflow's ``WebHDFSHook``) with simple authentication (the
user name sent as ``user.name``) or Kerberos (SPNEGO, with the ticket of the process's credentials cache:
``kinit`` first, or ``KRB5CCNAME``). Semantics are those of :class:`~recsys.storage.local.LocalStore`:

- a file is written to a temporary sibling (``.tmp-<token>-<name>``) and renamed over its destination
  with WebHDFS ``RENAME`` + ``renameoptions=OVERWRITE`` (HDFS ``rename2``: one atomic NameNode
  operation, so a reader sees the old or the new file, never half of one);
- a directory is published in the steps of :mod:`recsys.storage.base`, each repaired by the next
  operation on that path if a crash interrupts it. HDFS cannot replace a non-empty directory in one
  step, so a reader may find the directory missing for the moment between the two renames (as on the
  local store); it then finishes the swap itself.

Every rename into place uses ``rename2`` with explicit options: plain HDFS ``rename`` onto an existing
directory would move the source *into* it instead of failing.
"""

from __future__ import annotations

import logging
import posixpath
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import requests
from hdfs import HdfsError, InsecureClient

from recsys.storage.base import PartitionStore, StorageError, temporary_name

AUTH_MODES = ("simple", "kerberos")

# (connect, read) seconds for one WebHDFS request: fail instead of hanging on an unreachable NameNode
TIMEOUT = (10.0, 300.0)

# The client logs every request at INFO: thousands of lines per run would drown the task logs and the
# CLI's stderr. Quieten it unless someone configured that logger on purpose.
if logging.getLogger("hdfs").level == logging.NOTSET:
    logging.getLogger("hdfs").setLevel(logging.WARNING)


def namenode_url(hosts: str, port: int | None = None, path: str | None = None, use_ssl: bool = False) -> str:
    """The WebHDFS base URL for ``RECSYS_WEBHDFS_URL`` from an Airflow connection's fields.

    ``hosts`` may list several NameNodes separated by commas (high availability), as the provider's
    ``WebHDFSHook`` accepts; the result then names each, separated by ``;`` (the ``hdfs`` client tries
    them in turn). ``path`` is the connection's schema: an optional URL prefix such as a gateway's.

    >>> namenode_url("nn1,nn2", 9870)
    'http://nn1:9870;http://nn2:9870'
    """
    names = [h.strip() for h in (hosts or "").split(",") if h.strip()]
    if not names:
        raise StorageError("the WebHDFS connection has no host: set it to the NameNode's host name")
    scheme = "https" if use_ssl else "http"
    suffix = f":{port}" if port else ""
    prefix = f"/{path.strip('/')}" if path and path.strip("/") else ""
    return ";".join(f"{scheme}://{name}{suffix}{prefix}" for name in names)


class WebHDFSStore(PartitionStore):
    """Partition store rooted at an absolute HDFS directory (created on first write).

    :param url: WebHDFS base URL of the NameNode, ``http://namenode:9870`` (several separated by ``;``).
    :param root: absolute HDFS path of the store, e.g. ``/data/recsys``.
    :param user: HDFS user to act as: with simple authentication the user name sent; with Kerberos a
        user to impersonate (``doas``, needs a proxy-user rule on the cluster); None: the user running
        this process, or the Kerberos principal of its ticket.
    :param client: an ``hdfs`` client to use instead of building one (tests).
    :param auth: ``simple`` or ``kerberos`` (SPNEGO; the ticket comes from the credentials cache).

    :meth:`uri` returns WebHDFS URIs, ``webhdfs://namenode:9870/data/recsys/<path>``: Hadoop's own
    scheme for this file system over HTTP, usable as is with ``hdfs dfs -ls`` (the NameNode RPC port of
    an ``hdfs://`` URI is not known to a WebHDFS client).
    """

    def __init__(
        self, url: str, root: str, user: str | None = None, client: Any = None, auth: str = "simple"
    ) -> None:
        if not root.startswith("/"):
            raise StorageError(f"the HDFS store root must be an absolute path, got {root!r} (RECSYS_STORAGE_ROOT)")
        self.url = url
        self.root = posixpath.normpath(root)
        self.user = user
        first = urlsplit(url.split(";")[0])
        if first.scheme not in ("http", "https") or not first.netloc:
            raise StorageError(f"the WebHDFS URL must look like http://namenode:9870, got {url!r}")
        self._netloc = first.netloc
        if auth not in AUTH_MODES:
            raise StorageError(f"unknown WebHDFS authentication {auth!r}: expected 'simple' or 'kerberos'")
        self.auth = auth
        self._own_client = client is None  # fork() builds another; a client given by a test is shared
        if client is None and auth == "kerberos":
            from hdfs.ext.kerberos import KerberosClient

            client = KerberosClient(url, proxy=user, timeout=TIMEOUT)
        self.client = client if client is not None else InsecureClient(url, user=user, timeout=TIMEOUT)

    def fork(self) -> WebHDFSStore:
        """A store with its own client: the Kerberos (SPNEGO) client must not be shared between threads
        (concurrent handshakes mix up its per-host security context)."""
        if not self._own_client:
            return self
        return WebHDFSStore(self.url, self.root, user=self.user, auth=self.auth)

    # --- paths and errors ---------------------------------------------------------------------
    def _path(self, path: str) -> str:
        """The absolute HDFS path of store path ``path``; refuses paths that leave the root."""
        if path.startswith("/") or "\\" in path:
            raise StorageError(f"path {path!r} escapes the store root {self.root}")
        full = posixpath.normpath(posixpath.join(self.root, path))
        if full != self.root and not full.startswith(self.root.rstrip("/") + "/"):
            raise StorageError(f"path {path!r} escapes the store root {self.root}")
        return full

    def _uri_of(self, full: str) -> str:
        return f"webhdfs://{self._netloc}{full}"

    def _call(self, what: str, full: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one client call; HDFS and network errors become a StorageError naming the path."""
        try:
            return fn(*args, **kwargs)
        except HdfsError as err:
            raise StorageError(f"{what} {self._uri_of(full)} failed: {err}{self._auth_hint(err)}") from err
        except requests.RequestException as err:
            raise self._unreachable(what, full, err) from err

    def _auth_hint(self, err: HdfsError) -> str:
        """What to do when the NameNode refused the credentials (HTTP 401), else nothing."""
        if not str(err).startswith("Authentication failure"):
            return ""
        if self.auth == "kerberos":
            return (" (the NameNode refused SPNEGO: this process needs a valid Kerberos ticket; run kinit with "
                    "the principal's keytab, or point KRB5CCNAME at a credentials cache that holds one)")
        return " (the NameNode asks for Kerberos: set RECSYS_WEBHDFS_AUTH=kerberos and kinit first)"

    def _unreachable(self, what: str, full: str, err: Exception) -> StorageError:
        """The error for a NameNode that cannot be reached, saying where to fix its address."""
        return StorageError(
            f"{what} {self._uri_of(full)} failed: the NameNode at {self.url} is not reachable ({err}); "
            "check RECSYS_WEBHDFS_URL or the Airflow WebHDFS connection"
        )

    def _status(self, full: str) -> dict[str, Any] | None:
        status: dict[str, Any] | None = self._call("status of", full, self.client.status, full, strict=False)
        return status

    def _rename(self, src: str, dst: str, overwrite: bool) -> None:
        """HDFS ``rename2``: never moves ``src`` into an existing directory ``dst``.

        With ``overwrite`` an existing file (or empty directory) ``dst`` is replaced atomically;
        without it an existing ``dst`` is an error.
        """
        options = "OVERWRITE" if overwrite else "NONE"
        # the client's public rename() cannot pass renameoptions; its raw RENAME endpoint can
        self._call(
            f"renaming {self._uri_of(src)} to", dst, self.client._rename, src, destination=dst,
            renameoptions=options,
        )

    def _delete_quietly(self, full: str) -> None:
        """Remove a temporary file or tree; a failure here must not hide the error being raised."""
        try:
            self.client.delete(full, recursive=True)
        except (HdfsError, requests.RequestException):
            pass

    # --- primitives ---------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return self._present(path) or (self._repair(path) and self._present(path))

    def list_dir(self, path: str) -> list[str]:
        entries = self._entries(path)
        if entries is None and self._repair(path):
            entries = self._entries(path)
        return self._visible(path, entries) if entries is not None else []

    def read_bytes(self, path: str) -> bytes:
        full = self._path(path)
        try:
            return self._read(full)
        except StorageError:
            if not self._repair(path):
                raise
        return self._read(full)

    def _read(self, full: str, offset: int = 0, length: int | None = None) -> bytes:
        if length == 0:  # WebHDFS OPEN reads to the end of the file when asked for 0 bytes
            return b""
        try:
            with self.client.read(full, offset=offset, length=length) as reader:
                data: bytes = reader.read()
                return data
        except HdfsError as err:
            status = self._status(full)
            if status is None:
                raise StorageError(f"{self._uri_of(full)} does not exist") from err
            if status["type"] == "DIRECTORY":
                raise StorageError(f"{self._uri_of(full)} is a directory, expected a file") from err
            raise StorageError(f"reading {self._uri_of(full)} failed: {err}") from err
        except requests.RequestException as err:
            raise self._unreachable("reading", full, err) from err

    def size(self, path: str) -> int:
        full = self._path(path)
        status = self._status(full)
        if status is None and self._repair(path):
            status = self._status(full)
        if status is None:
            raise StorageError(f"{self._uri_of(full)} does not exist")
        if status["type"] == "DIRECTORY":
            raise StorageError(f"{self._uri_of(full)} is a directory, expected a file")
        return int(status["length"])

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise StorageError(f"a byte range starts and has a length >= 0: got {offset}, {length}")
        full = self._path(path)
        try:
            return self._read(full, offset, length)
        except StorageError:
            if not self._repair(path):
                raise
        return self._read(full, offset, length)

    def write_bytes(self, path: str, data: bytes | IO[bytes]) -> None:
        full = self._path(path)
        tmp = posixpath.join(posixpath.dirname(path), temporary_name("tmp", posixpath.basename(full)))
        try:
            # CREATE makes the missing parent directories; the temporary file is new, never overwritten; a file
            # object is streamed (requests sends it in pieces), bytes are sent as they are
            self._call("writing", self._path(tmp), self.client.write, self._path(tmp), data=data, overwrite=False)
            self._move(tmp, path, replace=True)
        except BaseException:
            self._remove(tmp)
            raise

    def download_dir(self, path: str, local_dir: Path) -> None:
        full = self._path(path)
        status = self._status(full)
        if status is None and self._repair(path):
            status = self._status(full)
        if status is None or status["type"] != "DIRECTORY":
            raise StorageError(f"{self._uri_of(full)} is not a directory")
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        for dirpath, dirnames, filenames in self._call("walking", full, lambda: list(self.client.walk(full))):
            rel = posixpath.relpath(dirpath, full)
            here = local_dir if rel == "." else local_dir / rel
            for name in dirnames:
                (here / name).mkdir(parents=True, exist_ok=True)
            for name in filenames:
                (here / name).write_bytes(self._read(posixpath.join(dirpath, name)))

    def uri(self, path: str) -> str:
        return self._uri_of(self._path(path))

    def create_exclusive(self, path: str, data: bytes) -> bool:
        full = self._path(path)
        tmp = self._path(posixpath.join(posixpath.dirname(path), temporary_name("tmp", posixpath.basename(full))))
        try:
            self._call("writing", tmp, self.client.write, tmp, data=data, overwrite=False)
            # rename2 without OVERWRITE: one NameNode operation that fails if ``full`` exists
            self._rename(tmp, full, overwrite=False)
        except StorageError:
            self._delete_quietly(tmp)
            if self._status(full) is not None:
                return False
            raise
        except BaseException:
            self._delete_quietly(tmp)
            raise
        return True

    # --- steps of a directory publish ------------------------------------------------------------
    def _entries(self, path: str) -> dict[str, float] | None:
        full = self._path(path)
        try:
            listing = self.client.list(full, status=True)
        except HdfsError as err:
            if err.exception == "FileNotFoundException" or "is not a directory" in str(err):
                return None
            raise StorageError(f"listing {self._uri_of(full)} failed: {err}{self._auth_hint(err)}") from err
        except requests.RequestException as err:
            raise self._unreachable("listing", full, err) from err
        return {name: status["modificationTime"] / 1000.0 for name, status in listing}

    def _present(self, path: str) -> bool:
        return self._status(self._path(path)) is not None

    def _copy_tree(self, local_dir: Path, path: str) -> None:
        """Copy the local tree under ``local_dir`` to the new HDFS directory ``path``."""
        target = self._path(path)
        self._call("creating", target, self.client.makedirs, target)
        for item in sorted(local_dir.rglob("*")):
            dest = posixpath.join(target, item.relative_to(local_dir).as_posix())
            if item.is_dir():
                self._call("creating", dest, self.client.makedirs, dest)
            else:
                with open(item, "rb") as fh:
                    self._call("writing", dest, self.client.write, dest, data=fh, overwrite=False)

    def _move(self, src: str, dst: str, replace: bool) -> None:
        self._rename(self._path(src), self._path(dst), overwrite=replace)

    def _remove(self, path: str) -> None:
        self._delete_quietly(self._path(path))
