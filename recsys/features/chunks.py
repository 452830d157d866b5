"""A raw partition in bounded chunks, and exact partition-wide aggregates built one chunk at a time.

:class:`ChunkReader` yields the rows :func:`recsys.storage.raw.read_delivery` would return, in the same order
and the same pandas dtypes, as frames of at most ``chunk_rows`` rows (``RECSYS_CHUNK_ROWS``): parquet files
are decoded batch by batch, so memory is bounded by the chunk, not by the partition. Each chunk's index
continues the previous one's (0, 1, ... over the whole partition, as the one frame has). CSV files are read
whole (their column types are inferred from the whole file) and then cut into chunks. The reader raises the
same :class:`StorageError` messages as ``read_delivery`` and, once every chunk was read, knows the
fingerprint of exactly the bytes it read.

:class:`FirstOccurrence` marks repeated values (``Series.duplicated(keep="first")`` over the whole partition)
with 8 bytes per row: a first pass hashes every value (:meth:`FirstOccurrence.add`), a second pass
(:meth:`FirstOccurrence.duplicated`) compares the actual values only for the rows whose hash repeats, so
the result is exact (a hash collision costs a comparison, never a wrong answer).
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recsys.arrays import distinct_counts
from recsys.storage import PartitionStore, StorageError
from recsys.storage import raw as raw_files

DEFAULT_CHUNK_ROWS = 1_000_000


class ChunkReader:
    """Iterate over a complete raw partition's rows in chunks (see the module docstring).

    ``fingerprint`` is set once the iteration finished (None before). Iterating again reads the files again.
    """

    def __init__(self, store: PartitionStore, partition_dir: str, columns: Sequence[str] | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
        self.store, self.partition_dir, self.chunk_rows = store, partition_dir, chunk_rows
        self.columns = None if columns is None else list(columns)
        self.fingerprint: str | None = None

    def __iter__(self) -> Iterator[pd.DataFrame]:
        store, partition_dir = self.store, self.partition_dir
        if not store.is_complete(partition_dir):
            raise StorageError(
                f"{store.uri(partition_dir)} has no _SUCCESS marker: the partition is not published yet")
        files = store.data_files(partition_dir)
        if not files:
            raise StorageError(f"{store.uri(partition_dir)} has a _SUCCESS marker but no data files")
        self.fingerprint = None
        digest = hashlib.sha256()
        offset = 0
        for path in files:
            kind = path.rpartition("/")[2].rpartition(".")[2]
            if kind not in ("parquet", "csv"):
                raise StorageError(
                    f"{store.uri(path.rpartition('/')[0])}/{path.rpartition('/')[2]}: unknown data file type "
                    "(expected .parquet or .csv); upstream must publish only data files in a partition (metadata "
                    "names start with '_' or '.')"
                )
            data = raw_files.read_data_file(store, path)
            if not data:
                raise StorageError(
                    f"{store.uri(path.rpartition('/')[0])}/{path.rpartition('/')[2]} cannot be read: it is an "
                    "empty file (0 bytes)"
                )
            raw_files._digest_file(digest, path, data)
            frames = self._parquet(path, data) if kind == "parquet" else self._csv(path, data)
            for frame in frames:
                frame.index = pd.RangeIndex(offset, offset + len(frame))
                offset += len(frame)
                yield frame
        self.fingerprint = digest.hexdigest()

    def _csv(self, path: str, data: bytes) -> Iterator[pd.DataFrame]:
        whole = raw_files._csv_file(self.store, path, data, self.columns)
        if whole.empty:
            yield whole
        for start in range(0, len(whole), self.chunk_rows):
            yield whole.iloc[start:start + self.chunk_rows].copy()

    def _parquet(self, path: str, data: bytes) -> Iterator[pd.DataFrame]:
        import pyarrow as pa
        import pyarrow.parquet as pq
        from pandas.io._util import arrow_table_to_pandas

        try:
            file = pq.ParquetFile(io.BytesIO(data))
            names = file.schema_arrow.names
        except (OSError, ValueError):
            raw_files._parquet_file(self.store, path, data, self.columns)  # raises today's message
            raise
        raw_files._check_names(self.store, path, names)
        if self.columns is not None:
            raw_files._require_columns(self.store, path, names, self.columns)
        wanted = names if self.columns is None else self.columns
        empty = True
        try:
            for batch in file.iter_batches(batch_size=self.chunk_rows, columns=wanted, use_pandas_metadata=True):
                empty = False
                table = pa.Table.from_batches([batch]).replace_schema_metadata(file.schema_arrow.metadata)
                frame = arrow_table_to_pandas(table).reset_index(drop=True)
                yield raw_files._canonical_text(frame[[c for c in frame.columns if c in wanted]])
            if empty:
                table = file.schema_arrow.empty_table().select(wanted)
                yield raw_files._canonical_text(arrow_table_to_pandas(table).reset_index(drop=True))
        except (OSError, ValueError) as err:
            raw_files._parquet_file(self.store, path, data, self.columns)  # raises today's message
            raise StorageError(
                f"{self.store.uri(path)} cannot be read: a truncated or corrupt parquet file ({err})"
            ) from err

    def read_all(self) -> pd.DataFrame:
        """Every chunk as one frame (what ``read_delivery`` returns; for tests and small partitions)."""
        return pd.concat(list(self), ignore_index=True)


TRIM_ROWS = 100_000  # smaller chunks free too little to be worth a collection and a trim


def release_memory(rows: int) -> None:
    """Hand the heap pages freed by a finished chunk of ``rows`` rows back to the system (glibc ``malloc_trim``;
    elsewhere, or for a chunk of fewer than :data:`TRIM_ROWS` rows, nothing).

    Without it the resident size of a chunked step grew by about 175 MB per million rows although the live
    Python and Arrow memory stayed flat (tracemalloc): freed chunks fragment glibc's heap and are never
    returned, so RSS would still follow the partition's size.
    """
    if rows < TRIM_ROWS:
        return
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to trim
        return
    libc.malloc_trim(0)


def hash_values(values: pd.Series) -> np.ndarray:
    """uint64 hashes of ``values`` as text (equal texts hash equal; nulls hash as one value)."""
    return pd.util.hash_pandas_object(values.astype(object).where(values.notna(), None).astype(str),
                                      index=False).to_numpy(np.uint64)


class FirstOccurrence:
    """``duplicated(keep="first")`` of one column over every chunk of a partition, exactly, with bounded memory.

    Usage: :meth:`add` each chunk's column in order (first pass), then :meth:`duplicated` each chunk's
    column in the same order (second pass). Nulls are values like any other (as in pandas). Memory: 8 bytes
    per row, plus the values of the rows whose hash repeats (the duplicates, and the rare hash collisions).
    """

    def __init__(self) -> None:
        self._hashes: list[np.ndarray] = []
        self._repeated: np.ndarray | None = None
        self._seen: set[Any] = set()

    def add(self, values: pd.Series) -> None:
        self._hashes.append(hash_values(values))

    def _finish(self) -> np.ndarray:
        if self._repeated is None:
            hashes = np.concatenate(self._hashes) if self._hashes else np.zeros(0, np.uint64)
            self._hashes = []
            unique, counts = distinct_counts(hashes)
            self._repeated = unique[counts > 1]
        return self._repeated

    def duplicated(self, values: pd.Series) -> pd.Series:
        """True where a value repeats one of an earlier row (this chunk's or an earlier chunk's)."""
        repeated = self._finish()
        out = np.zeros(len(values), bool)
        if len(repeated):
            candidates = np.flatnonzero(np.isin(hash_values(values), repeated))
            texts = values.astype(object).where(values.notna(), None).to_numpy(object)
            for n in candidates:  # Python equality, as pandas' hash table compares (nulls made one None)
                out[n] = texts[n] in self._seen
                self._seen.add(texts[n])
        return pd.Series(out, index=values.index)

    @property
    def repeated_hashes(self) -> int:
        """How many distinct hashes occur more than once (after the first pass)."""
        return len(self._finish())



ROW_GROUP_ROWS = 1024 * 1024  # pyarrow's default row group (``pyarrow.parquet.write_table``): what pandas writes


@dataclass(frozen=True)
class Gathered:
    """A column given as ``values.take(codes)``: each distinct value once (a numpy or pandas array, whose dtype
    is the column's) and an integer code per row."""

    values: Any
    codes: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)

    def rows(self, start: int, stop: int) -> Any:
        return self.values.take(self.codes[start:stop])


class GatheredFrame:
    """A frame to write whose columns are arrays or :class:`Gathered` columns, built ``ROW_GROUP_ROWS`` rows
    at a time (:func:`write_parquet`): the text columns of a day's examples or history exist only a row
    group at a time, not as a whole frame of object columns plus its Arrow copy."""

    def __init__(self, columns: dict[str, np.ndarray | Gathered]) -> None:
        lengths = {len(c) for c in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: { {k: len(c) for k, c in columns.items()} }")
        self.columns = columns
        self.length = lengths.pop() if lengths else 0

    def __len__(self) -> int:
        return self.length

    def frame(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Rows ``start:stop`` as a pandas frame (indexed 0, 1, ...)."""
        stop = self.length if stop is None else min(stop, self.length)
        return pd.DataFrame({name: (c.rows(start, stop) if isinstance(c, Gathered) else c[start:stop])
                             for name, c in self.columns.items()}, columns=list(self.columns))


def write_parquet(store: PartitionStore, path: str, frame: GatheredFrame, group_rows: int | None = None) -> None:
    """What ``store.write_parquet(path, frame.frame())`` writes, byte for byte, built a row group at a time.

    ``DataFrame.to_parquet(index=False)`` converts the whole frame to Arrow and writes row groups of
    :data:`ROW_GROUP_ROWS` rows (or ``group_rows``: what ``to_parquet(row_group_size=group_rows)`` writes); here
    each row group's rows become a pandas frame, then Arrow, then the group, with the schema (and pandas
    metadata) of the first group. Memory: the columns' codes, one row group and the file's bytes.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    group_rows = group_rows or ROW_GROUP_ROWS
    if len(frame) <= group_rows:  # one row group (also an empty frame, whose object columns have no type)
        store.write_parquet(path, frame.frame())
        return
    buf = io.BytesIO()
    writer: Any = None
    for start in range(0, len(frame), group_rows):
        table = pa.Table.from_pandas(frame.frame(start, start + group_rows), preserve_index=False,
                                     schema=writer.schema if writer is not None else None)
        if writer is None:
            writer = pq.ParquetWriter(buf, table.schema, compression="snappy")
        writer.write_table(table, row_group_size=group_rows)
        del table
    writer.close()
    store.write_bytes(path, buf.getvalue())
