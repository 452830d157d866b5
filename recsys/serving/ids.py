"""Per-customer and per-item lookups as flat arrays, not dicts of Python objects (issue 14).

A dict of every customer costs a Python string, an int and a hash slot per customer (about 150 bytes: 0.6 GB
for 3.75M customers, the vocabulary of a 30M-event day), and a dict of histories two arrays more each. Here
ids are one numpy array of fixed-width UTF-8 bytes (``S<w>``, ``w`` the longest id's length), sorted, and
found by binary search (:func:`numpy.searchsorted`): ``w`` bytes per id plus the values, about 12 bytes per
customer for the synthetic ids of bench/scale. Lookups cost O(log n): about 10 us for one id, and one
vectorised search for many. UTF-8 byte order is code point order, so ids sort as Python sorts them.

:class:`IdIndex` maps ids to one integer (a vocabulary row, a served position); :class:`IdLists` maps ids to
runs of flat arrays (CSR: ``offsets`` into the columns; a customer's history or purchases). Both are read-only
:class:`~collections.abc.Mapping` s, so ``get``, ``in`` and ``[]`` work as on the dicts they replace.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.dtypes import StringDType

NOT_FOUND = -1


def utf8(values: Any) -> np.ndarray:
    """``values`` (ids: a pyarrow array, a pandas Series, a numpy string array or a sequence of ``str``) as a
    fixed-width bytes array of their UTF-8 encodings, in the same order; nulls become ``b""``.

    Arrow input is converted from its buffers (no Python object per id). A NUL byte at the end of an id
    would not survive (numpy pads with NULs); ids do not have them.
    """
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "S":
            return values
        if values.dtype.kind == "U" or isinstance(values.dtype, StringDType):
            return np.strings.encode(values, "utf-8") if len(values) else np.zeros(0, "S1")
        values = list(values)
    if isinstance(values, list | tuple):
        return np.array([v.encode() for v in values], dtype="S") if values else np.zeros(0, "S1")
    if not isinstance(values, pa.Array | pa.ChunkedArray):
        values = pa.array(values, type=pa.string()) if not hasattr(values, "__arrow_array__") else pa.array(values)
    return _arrow_utf8(values)


def _arrow_utf8(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], pa.string())
    if pa.types.is_dictionary(values.type):
        values = values.dictionary.take(values.indices)
    values = values.cast(pa.large_binary()).fill_null(b"")
    n = len(values)
    _, offsets_buf, data_buf = values.buffers()
    if n == 0:
        return np.zeros(0, "S1")
    offsets = np.frombuffer(offsets_buf, np.int64)[values.offset: values.offset + n + 1]
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    width = max(int(lengths.max()), 1)
    out = np.zeros((n, width), np.uint8)
    starts = offsets[:-1]
    for j in range(width):  # byte j of every id that long: one gather per byte position
        has = np.flatnonzero(lengths > j)
        out[has, j] = data[starts[has] + j]
    return out.view(f"S{width}").reshape(n)


def strings(values: Any) -> np.ndarray:
    """``values`` (as for :func:`utf8`) as a numpy ``StringDType`` array: elements are ``str``, stored without a
    Python object each (short ones inline, 16 bytes)."""
    encoded = utf8(values)
    return np.strings.decode(encoded, "utf-8").astype(StringDType()) if len(encoded) else (
        np.zeros(0, StringDType()))


class IdIndex(Mapping[str, int]):
    """Sorted ids -> an integer each. Build with :meth:`build`; ``id_bytes`` are the sorted ids (``S<w>``),
    ``targets[n]`` the integer of ``id_bytes[n]``."""

    def __init__(self, keys: np.ndarray, values: np.ndarray) -> None:
        self.id_bytes, self.targets = keys, values

    @classmethod
    def build(cls, ids: Any, values: Any) -> IdIndex:
        """From ids (unique; as for :func:`utf8`) and their values, in any order."""
        keys = utf8(ids)
        values = np.asarray(values)
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} ids but {len(values)} values")
        order = np.argsort(keys, kind="stable")
        return cls(keys[order], values[order])

    @classmethod
    def of(cls, mapping: Mapping[str, int]) -> IdIndex:
        """``mapping`` itself if it is one, else its items as an index."""
        if isinstance(mapping, IdIndex):
            return mapping
        return cls.build(list(mapping.keys()), np.fromiter(mapping.values(), np.int64, count=len(mapping)))

    def find(self, ids: Any) -> np.ndarray:
        """Positions in ``id_bytes`` of ``ids`` (int64, :data:`NOT_FOUND` for ids not held), one search for all."""
        wanted = utf8(ids)
        if not len(self.id_bytes) or not len(wanted):
            return np.full(len(wanted), NOT_FOUND, np.int64)
        at = np.minimum(np.searchsorted(self.id_bytes, wanted), len(self.id_bytes) - 1)
        return np.where(self.id_bytes[at] == wanted, at, NOT_FOUND)

    def lookup(self, ids: Any, default: int) -> np.ndarray:
        """The values of ``ids`` (``default`` for ids not held), as an int64 array."""
        at = self.find(ids)
        return np.where(at >= 0, self.targets[np.maximum(at, 0)] if len(self.targets) else default, default).astype(
            np.int64)

    def position(self, key: str) -> int:
        """Position of one id in ``id_bytes``, or :data:`NOT_FOUND`."""
        if not isinstance(key, str) or not len(self.id_bytes):
            return NOT_FOUND
        wanted = key.encode()
        at = int(np.searchsorted(self.id_bytes, wanted))
        return at if at < len(self.id_bytes) and self.id_bytes[at] == wanted else NOT_FOUND

    def __getitem__(self, key: str) -> int:
        at = self.position(key)
        if at < 0:
            raise KeyError(key)
        return int(self.targets[at])

    def get(self, key: str, default: Any = None) -> Any:
        at = self.position(key)
        return int(self.targets[at]) if at >= 0 else default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.position(key) >= 0

    def __iter__(self) -> Iterator[str]:
        return (k.decode() for k in self.id_bytes.tolist())

    def __len__(self) -> int:
        return len(self.id_bytes)

    @property
    def nbytes(self) -> int:
        return self.id_bytes.nbytes + self.targets.nbytes


class IdLists(Mapping[str, Any]):
    """Sorted ids -> runs of flat arrays (CSR): id ``id_bytes[n]`` owns ``column[offsets[n]:offsets[n + 1]]`` of
    each column. A value is the run of the one column, or a tuple of the runs of several (views, no copy)."""

    def __init__(self, keys: np.ndarray, offsets: np.ndarray, *columns: np.ndarray) -> None:
        if len(offsets) != len(keys) + 1 or not columns or any(len(c) != offsets[-1] for c in columns):
            raise ValueError("IdLists needs len(keys) + 1 offsets ending at the columns' length")
        self.ids = IdIndex(keys, np.arange(len(keys), dtype=np.int64))
        self.id_bytes, self.offsets, self.columns = keys, offsets, columns

    @classmethod
    def empty(cls, *dtypes: Any) -> IdLists:
        return cls(np.zeros(0, "S1"), np.zeros(1, np.int64), *(np.zeros(0, d) for d in dtypes))

    @classmethod
    def of(cls, mapping: Mapping[str, Any], *dtypes: Any) -> IdLists:
        """``mapping`` itself if it is one, else its items (runs, or tuples of runs of ``dtypes``)."""
        if isinstance(mapping, IdLists):
            return mapping
        if not mapping:
            return cls.empty(*dtypes)
        keys = utf8(list(mapping.keys()))
        values = [v if isinstance(v, tuple) else (v,) for v in mapping.values()]
        order = np.argsort(keys, kind="stable")
        lengths = np.array([len(values[i][0]) for i in order], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        columns = [np.concatenate([np.asarray(values[i][c]) for i in order]).astype(dtypes[c], copy=False)
                   if len(order) else np.zeros(0, dtypes[c]) for c in range(len(dtypes))]
        return cls(keys[order], offsets, *columns)

    def run(self, at: int) -> Any:
        """The value of the id at position ``at`` of ``id_bytes``."""
        start, stop = self.offsets[at], self.offsets[at + 1]
        runs = tuple(c[start:stop] for c in self.columns)
        return runs if len(runs) > 1 else runs[0]

    def find(self, ids: Any) -> np.ndarray:
        return self.ids.find(ids)

    def __getitem__(self, key: str) -> Any:
        at = self.ids.position(key)
        if at < 0:
            raise KeyError(key)
        return self.run(at)

    def get(self, key: str, default: Any = None) -> Any:
        at = self.ids.position(key)
        return self.run(at) if at >= 0 else default

    def __contains__(self, key: object) -> bool:
        return key in self.ids

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.id_bytes)

    @property
    def nbytes(self) -> int:
        return self.id_bytes.nbytes + self.offsets.nbytes + sum(c.nbytes for c in self.columns)


def sorted_codes(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(code per value, the distinct values in sorted order): code ``c`` is ``distinct[c]``, so codes sort as
    the values do. One dictionary encoding and one sort of the distinct values (no Python object per value)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], values.type)
    if not pa.types.is_dictionary(values.type):
        values = pc.dictionary_encode(values)
    distinct = values.dictionary
    order = pc.sort_indices(distinct).to_numpy()
    rank = np.empty(len(order), np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    indices = values.indices.to_numpy(zero_copy_only=False)
    return rank[indices] if len(indices) else np.zeros(0, np.int32), distinct.take(pa.array(order))


def as_arrow(values: Sequence[Any] | Any) -> pa.Array | pa.ChunkedArray:
    """A pandas column or any sequence as a pyarrow array (Arrow-backed pandas columns: no copy)."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    return pa.array(values)
