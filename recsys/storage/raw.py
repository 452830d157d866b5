"""Reading the raw partitions upstream publishes (``raw/events``, ``raw/catalog``): data files in the canonical
types, and a fingerprint of a delivery."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence

import pandas as pd

from recsys import schema
from recsys.storage.base import PartitionStore, StorageError


def read_partition(
    store: PartitionStore, partition_dir: str, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Read every data file of a complete partition; partition-level problems raise StorageError.

    ``columns``: read only these (parquet files then decode nothing else: a step that needs four of the
    nine event columns holds less than half the memory at 10M events, bench/scale). A file without one
    of them raises StorageError naming it. None: every column.
    """
    if not store.is_complete(partition_dir):
        raise StorageError(f"{store.uri(partition_dir)} has no _SUCCESS marker: the partition is not published yet")
    files = store.data_files(partition_dir)
    if not files:
        raise StorageError(f"{store.uri(partition_dir)} has a _SUCCESS marker but no data files")
    frames = []
    for path in files:
        if path.endswith(".parquet"):
            frames.append(_parquet_file(store, path, columns))
        elif path.endswith(".csv"):
            frames.append(_csv_file(store, path, columns))
        else:
            raise StorageError(f"{store.uri(path)}: unknown data file type (expected .parquet or .csv)")
    return pd.concat(frames, ignore_index=True)


def _parquet_file(store: PartitionStore, path: str, columns: Sequence[str] | None) -> pd.DataFrame:
    try:
        if columns is None:
            frame = store.read_parquet(path)
        else:
            frame = _read_parquet_columns(store, path, columns)
        return _canonical_text(frame)
    except (OSError, ValueError) as err:  # pyarrow raises ArrowInvalid (a ValueError) for bad bytes
        raise StorageError(
            f"{store.uri(path)} cannot be read: a truncated or corrupt parquet file ({err})"
        ) from err


def _csv_file(store: PartitionStore, path: str, columns: Sequence[str] | None) -> pd.DataFrame:
    data = store.read_bytes(path)
    try:
        data.decode("utf-8")  # first, so the error names the offending byte and its offset
        frame = _read_csv(data)
    except UnicodeDecodeError as err:
        raise StorageError(
            f"{store.uri(path)} cannot be read: it is not UTF-8 text (byte {data[err.start]:#04x} at "
            f"offset {err.start}); the upstream export must write UTF-8"
        ) from err
    except (OSError, ValueError) as err:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise StorageError(f"{store.uri(path)} cannot be read: not a valid CSV file ({err})") from err
    if columns is not None:
        _require_columns(store, path, list(frame.columns), columns)
        frame = frame[list(columns)]
    return frame


def _read_parquet_columns(store: PartitionStore, path: str, columns: Sequence[str]) -> pd.DataFrame:
    import pyarrow.parquet as pq

    data = io.BytesIO(store.read_bytes(path))
    _require_columns(store, path, pq.ParquetFile(data).schema_arrow.names, columns)
    data.seek(0)
    return pd.read_parquet(data, columns=list(columns))


def _require_columns(store: PartitionStore, path: str, present: list[str], columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in present]
    if missing:
        raise StorageError(f"{store.uri(path)} has no column {', '.join(missing)} (it has {', '.join(present)})")


def _canonical_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns of the canonical schemas as pandas' ``string`` dtype.

    Parquet written without pandas metadata (Spark, plain Arrow writers) reads back as ``str``/object;
    the suites check the canonical dtype. Only columns that already hold text are converted, so a
    wrongly typed column (numbers where ids belong) is still reported.
    """
    for column in frame.columns:
        wanted = schema.EVENT_DTYPES.get(column) or schema.CATALOG_DTYPES.get(column)
        if wanted == "string" and str(frame[column].dtype) != "string" and pd.api.types.is_string_dtype(frame[column]):
            frame[column] = frame[column].astype("string")
    return frame


def _read_csv(data: bytes) -> pd.DataFrame:
    """A CSV data file with the canonical types: ids as text, ``event_time`` parsed as UTC.

    Unparseable times and numbers become nulls, which the suite's not-null expectations then report.
    """
    frame = pd.read_csv(io.BytesIO(data), encoding="utf-8", dtype=str, keep_default_na=False, na_values=[""])
    for column, dtype in schema.EVENT_DTYPES.items():
        if column not in frame.columns:
            continue
        if column == schema.EVENT_TIME:
            frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce", format="ISO8601")
        elif dtype in ("int64", "float64"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
        else:
            frame[column] = frame[column].astype("string")
    return frame


def fingerprint(store: PartitionStore, partition_dir: str) -> str:
    """sha256 over the names and contents of a partition's data files: equal iff the delivery is equal."""
    digest = hashlib.sha256()
    for path in store.data_files(partition_dir):
        digest.update(path.rsplit("/", 1)[-1].encode() + b"\0")
        digest.update(hashlib.sha256(store.read_bytes(path)).digest())
    return digest.hexdigest()
