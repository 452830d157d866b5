"""The stored embedding tables of a model version: ``tables.npz``, one ``.npy`` entry per table.

A version's tables are read whole (:func:`load_tables`) or, where a table may be larger than one process's share
(the parameter-server fine-tune, :mod:`recsys.training_distributed`), by rows (:func:`open_tables`): the entries are
stored uncompressed, so rows ``a..b`` of a table are one byte range of the file, read with
:meth:`recsys.storage.base.PartitionStore.read_range` (a seek on a local store, an offset read on HDFS). Writing
(:func:`write_tables`) streams each table into its entry, a whole array or chunk by chunk (:class:`StreamedArray`),
so a table never has to be in one piece to be saved; ``np.load`` reads the file as it reads ``np.savez``'s.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.errors import RecsysError
from recsys.storage import PartitionStore, layout

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip entry's local file header (zipfile.structFileHeader)
_READ_AHEAD = 1 << 16  # bytes buffered per ranged read while parsing the zip directory and .npy headers


class TablesError(RecsysError, ValueError):
    """A stored tables file cannot be read by rows (a compressed or Fortran-ordered entry, a torn file)."""


def load_tables(store: PartitionStore, version: int) -> dict[str, np.ndarray]:
    """The embedding tables of a stored version."""
    with np.load(io.BytesIO(store.read_bytes(tables_path(version)))) as npz:
        return {name: npz[name] for name in npz.files}


def tables_path(version: int) -> str:
    return f"{layout.model_version(version)}/{layout.TABLES_FILE}"


class _StoreFile(io.RawIOBase):
    """A read-only, seekable file over one stored file, each read a ranged read of the store."""

    def __init__(self, store: PartitionStore, path: str) -> None:
        self._store, self._path, self._size, self._pos = store, path, store.size(path), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._store.read_range(self._path, self._pos, min(len(view), max(0, self._size - self._pos)))
        view[:len(data)] = data
        self._pos += len(data)
        return len(data)


class StoredArray:
    """One table of a stored ``tables.npz``, read by rows: ``shape``, ``dtype``, ``len``, and ``array[a:b]`` (a
    C-ordered ndarray of rows ``a..b``, one ranged read). Rows are never cached: each slice is read afresh."""

    def __init__(self, store: PartitionStore, path: str, name: str, offset: int, shape: tuple[int, ...],
                 dtype: np.dtype) -> None:
        self.store, self.path, self.name, self.offset = store, path, name, offset
        self.shape, self.dtype = shape, dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def __getitem__(self, rows: slice) -> np.ndarray:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError(f"a stored table is read by contiguous row ranges (table[a:b]), not {rows!r}")
        start, stop, _ = rows.indices(self.shape[0])
        stop = max(start, stop)
        data = self.store.read_range(self.path, self.offset + start * self.row_bytes, (stop - start) * self.row_bytes)
        if len(data) != (stop - start) * self.row_bytes:
            raise TablesError(f"{self.store.uri(self.path)}: table {self.name!r} ends before row {stop}: the file is "
                              f"truncated; restore the version from a backup or retrain it")
        return np.frombuffer(data, self.dtype).reshape((stop - start, *self.shape[1:])).copy()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def __repr__(self) -> str:
        return f"StoredArray({self.name!r}, shape={self.shape}, dtype={self.dtype})"


def open_tables(store: PartitionStore, version: int, by_rows: Iterable[str]) -> dict[str, np.ndarray | StoredArray]:
    """The tables of a stored version: those named in ``by_rows`` (where present) as :class:`StoredArray` (nothing
    of them read but their headers), every other one read whole (its entry only)."""
    path = tables_path(version)
    lazy = set(by_rows)
    tables: dict[str, np.ndarray | StoredArray] = {}
    with io.BufferedReader(_StoreFile(store, path), _READ_AHEAD) as raw, zipfile.ZipFile(raw) as archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if name not in lazy:
                with archive.open(info) as entry:
                    tables[name] = np.lib.format.read_array(entry, allow_pickle=False)
                continue
            if info.compress_type != zipfile.ZIP_STORED:
                raise TablesError(f"{store.uri(path)}: table {name!r} is compressed, so it cannot be read by rows")
            raw.seek(info.header_offset)
            header = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
            start = info.header_offset + _LOCAL_HEADER.size + header[10] + header[11]  # + name + extra field
            raw.seek(start)
            version_ = np.lib.format.read_magic(raw)
            reader = (np.lib.format.read_array_header_1_0 if version_ == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = reader(raw)
            if (fortran and len(shape) > 1) or dtype.hasobject:
                raise TablesError(f"{store.uri(path)}: table {name!r} is not a C-ordered array of numbers")
            tables[name] = StoredArray(store, path, name, raw.tell(), tuple(shape), dtype)
    return tables


@dataclass(frozen=True)
class StreamedArray:
    """A table to write that is never whole: its ``shape`` and ``dtype``, and ``chunks()``, its rows in order as
    consecutive C-ordered arrays (of ``shape[1:]`` rows, ``dtype``) that together make ``shape[0]`` rows."""

    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: Callable[[], Iterator[np.ndarray]]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def write_tables(path: Path, tables: Mapping[str, np.ndarray | StreamedArray]) -> None:
    """Write ``tables`` to the ``.npz`` file ``path`` as ``np.savez`` does (uncompressed ``<name>.npy`` entries,
    zip64), each :class:`StreamedArray` chunk by chunk after a ``.npy`` header of its whole shape."""
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in tables.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
                if not isinstance(value, StreamedArray):
                    np.lib.format.write_array(entry, np.asanyarray(value), allow_pickle=False)
                    continue
                header = {"descr": np.lib.format.dtype_to_descr(value.dtype), "fortran_order": False,
                          "shape": tuple(value.shape)}
                try:
                    np.lib.format.write_array_header_1_0(entry, header)
                except ValueError:  # a header too long for format 1.0 (as np.save falls back)
                    np.lib.format.write_array_header_2_0(entry, header)
                rows = 0
                for chunk in value.chunks():
                    if chunk.dtype != value.dtype or chunk.shape[1:] != tuple(value.shape[1:]):
                        raise TablesError(f"table {name!r}: a chunk of {chunk.dtype} {chunk.shape} in a table of "
                                          f"{value.dtype} {value.shape}")
                    entry.write(np.ascontiguousarray(chunk).data)
                    rows += chunk.shape[0]
                if rows != value.shape[0]:
                    raise TablesError(f"table {name!r}: {rows} rows streamed for a table of {value.shape[0]}")
