"""Reading the raw partitions upstream publishes (``raw/events``, ``raw/catalog``): data files in the canonical
types, and a fingerprint of a delivery."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from typing import Any

import pandas as pd

from recsys import schema
from recsys.storage.base import PartitionStore, StorageError


def read_partition(
    store: PartitionStore, partition_dir: str, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Read every data file of a complete partition; partition-level problems raise StorageError.

    ``columns``: read only these (parquet files then decode nothing else: a step that needs four of the
    nine event columns holds less than half the memory at 10M events, bench/scale). A file without one
    of them raises StorageError naming it. None: every column. A file that cannot be read as a table
    of uniquely named columns (see :func:`read_data_file`, :func:`column_name_problems`) raises
    StorageError saying what is wrong with it.
    """
    return read_delivery(store, partition_dir, columns)[0]


def read_delivery(
    store: PartitionStore, partition_dir: str, columns: Sequence[str] | None = None
) -> tuple[pd.DataFrame, str]:
    """:func:`read_partition` and the :func:`fingerprint` of exactly the bytes that were read.

    What a step that must use the validated delivery compares with the validation summary: a delivery
    replaced between a separate fingerprint and read would otherwise go unnoticed.
    """
    if not store.is_complete(partition_dir):
        raise StorageError(f"{store.uri(partition_dir)} has no _SUCCESS marker: the partition is not published yet")
    files = store.data_files(partition_dir)
    if not files:
        raise StorageError(f"{store.uri(partition_dir)} has a _SUCCESS marker but no data files")
    frames = []
    digest = hashlib.sha256()
    for path in files:
        reader = _READERS.get(path.rpartition("/")[2].rpartition(".")[2])
        if reader is None:
            raise StorageError(
                f"{_where(store, path)}: unknown data file type (expected .parquet or .csv); upstream must publish "
                "only data files in a partition (metadata names start with '_' or '.')"
            )
        data = read_data_file(store, path)
        if not data:
            raise StorageError(f"{_where(store, path)} cannot be read: it is an empty file (0 bytes)")
        _digest_file(digest, path, data)
        frames.append(reader(store, path, data, columns))
    return pd.concat(frames, ignore_index=True), digest.hexdigest()


def read_data_file(store: PartitionStore, path: str) -> bytes:
    """The bytes of one data file of a partition; StorageError naming the file if it cannot be read.

    Covers every entry that is not a readable regular file inside the store: a subdirectory, a symbolic
    link leading out of the store (never followed) or nowhere, a file without read permission.
    """
    try:
        return store.read_bytes(path)
    except StorageError as err:
        raise StorageError(f"{_where(store, path)} cannot be read: {err}") from err
    except OSError as err:  # e.g. no read permission on a local file
        raise StorageError(f"{_where(store, path)} cannot be read: {err.strerror or err}") from err


def _where(store: PartitionStore, path: str) -> str:
    """``path`` for a message: its directory's URI and its name (the path itself may escape the store)."""
    directory, _, name = path.rpartition("/")
    return f"{store.uri(directory)}/{name}" if directory else name


def column_name_problems(names: Sequence[object]) -> list[str]:
    """What is wrong with a data file's column names (empty: nothing): the class of header faults that
    would otherwise be read silently wrong (pandas renames a second ``user_id`` to ``user_id.1``).

    Reported: a duplicate name, names that differ only by case or surrounding spaces, an empty name,
    spaces around a name, a control character in a name.
    """
    problems: list[str] = []
    seen: dict[str, str] = {}
    for n, raw in enumerate(names, start=1):
        name = str(raw)
        if not name.strip():
            problems.append(f"column {n} has an empty name")
            continue
        if name != name.strip():
            problems.append(f"column {name!r} has spaces around its name")
        if not name.isprintable():
            problems.append(f"column name {name!r} holds a control character")
        key = name.strip().casefold()
        if key in seen:
            first = seen[key]
            problems.append(
                f"duplicate column {name}" if first == name
                else f"columns {first!r} and {name!r} differ only by case or spaces"
            )
        else:
            seen[key] = name
    return problems


def _check_names(store: PartitionStore, path: str, names: Sequence[object]) -> None:
    problems = column_name_problems(names)
    if problems:
        raise StorageError(
            f"{_where(store, path)} has an invalid header: {'; '.join(dict.fromkeys(problems))}. Each column "
            "must appear once, with a non-empty name"
        )


def _parquet_file(
    store: PartitionStore, path: str, data: bytes, columns: Sequence[str] | None
) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        names = pq.ParquetFile(io.BytesIO(data)).schema_arrow.names
    except (OSError, ValueError) as err:  # pyarrow raises ArrowInvalid (a ValueError) for bad bytes
        raise StorageError(
            f"{store.uri(path)} cannot be read: a truncated or corrupt parquet file ({err})"
        ) from err
    _check_names(store, path, names)
    if columns is not None:
        _require_columns(store, path, names, columns)
    try:
        frame = pd.read_parquet(io.BytesIO(data), columns=None if columns is None else list(columns))
    except (OSError, ValueError) as err:
        raise StorageError(
            f"{store.uri(path)} cannot be read: a truncated or corrupt parquet file ({err})"
        ) from err
    return _canonical_text(frame)


def _csv_file(store: PartitionStore, path: str, data: bytes, columns: Sequence[str] | None) -> pd.DataFrame:
    try:
        text = data.decode("utf-8")  # first, so the error names the offending byte and its offset
        _check_names(store, path, next(csv.reader(io.StringIO(text)), []))
        frame = _read_csv(data)
    except UnicodeDecodeError as err:
        raise StorageError(
            f"{store.uri(path)} cannot be read: it is not UTF-8 text (byte {data[err.start]:#04x} at "
            f"offset {err.start}); the upstream export must write UTF-8"
        ) from err
    except (OSError, ValueError, csv.Error) as err:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise StorageError(f"{store.uri(path)} cannot be read: not a valid CSV file ({err})") from err
    if not isinstance(frame.index, pd.RangeIndex):  # pandas made the leading fields the index: rows too long
        raise StorageError(
            f"{store.uri(path)} cannot be read: its rows have more fields than its header has names "
            f"({len(frame.columns)}); every row must have one field per column"
        )
    if columns is not None:
        _require_columns(store, path, list(frame.columns), columns)
        frame = frame[list(columns)]
    return frame


_READERS = {"parquet": _parquet_file, "csv": _csv_file}


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
    """sha256 over the names and contents of a partition's data files: equal iff the delivery is equal.

    An entry that cannot be read (a subdirectory, a link out of the store) counts by its name and as
    unreadable, so such a partition still has a fingerprint and is reported like any other bad one; a
    store that cannot be reached at all raises StorageError.
    """
    digest = hashlib.sha256()
    for path in store.data_files(partition_dir):
        try:
            data = store.read_bytes(path)
        except (StorageError, OSError):
            store.list_dir(partition_dir)  # raises if the store itself is unreachable (not the entry's fault)
            data = None
        _digest_file(digest, path, data)
    return digest.hexdigest()


def _digest_file(digest: Any, path: str, data: bytes | None) -> None:
    """Add one data file (its name; its content, or None: unreadable) to a delivery's fingerprint."""
    digest.update(path.rsplit("/", 1)[-1].encode() + b"\0")
    digest.update(b"\0unreadable" if data is None else hashlib.sha256(data).digest())
