"""Turn a validated raw partition into training examples under ``features/dt=<day>/``.

An example is a distinct (user, item) interaction of the day, with the index (``hist_index``) of
the user's recent purchases before the day in the day's ``query_history.parquet`` (the query
tower's input, :mod:`recsys.features.history`).
Users are split deterministically (a hash of user id and day) into ``train`` and ``holdout``: the
holdout users' interactions are what candidate and champion are evaluated on, and the day's
fine-tune never sees them. Ids get embedding rows once seen ``RECSYS_MIN_USER_COUNT`` /
``RECSYS_MIN_ITEM_COUNT`` times (:mod:`recsys.features.vocab`); the stats say how many wait.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from recsys import schema
from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.features import history, vocab
from recsys.features.chunks import DEFAULT_CHUNK_ROWS, ChunkReader, FirstOccurrence, release_memory
from recsys.features.cleaning import CleaningStats, clean_events
from recsys.storage import PartitionStore, layout
from recsys.storage.layout import EXAMPLES_FILE, STATS_FILE

log = logging.getLogger(__name__)

EXAMPLE_FILE_COLUMNS = (*schema.EXAMPLE_COLUMNS, history.HIST_INDEX)
# the columns of the raw events the step reads (the others are never decoded: bench/scale)
READ_COLUMNS = (schema.EVENT_ID, schema.USER_ID, schema.ITEM_ID, schema.QUANTITY)


class FeatureError(RecsysError, RuntimeError):
    """Examples cannot be built or read (missing or unvalidated partition, a changed delivery, out of order)."""


@dataclass(frozen=True)
class FeatureStats:
    """What the feature step did for one day (JSON-able through :meth:`as_dict`)."""

    date: str
    cleaning: dict[str, int]
    examples: int
    train_examples: int
    holdout_examples: int
    users: int
    holdout_users: int
    items: int
    new_users: int
    new_items: int
    user_vocab_size: int
    item_vocab_size: int
    pending_users: int  # ids seen fewer than the minimum count: they share the OOV row
    pending_items: int
    min_user_count: int
    min_item_count: int
    history_users: int  # users in the history snapshot after the day
    history_rows: int
    # the delivery the examples were built from (storage.raw.fingerprint): the one that passed validation
    fingerprint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_holdout(user_ids: pd.Series, day: date, fraction: float) -> pd.Series:
    """Deterministic per-(user, day) split: True for about ``fraction`` of the users.

    A user's bucket is the first 8 bytes of sha256("<user>|<day>") / 2**64, hashed once per distinct user.
    """
    stamp = day.isoformat()
    code, users = pd.factorize(user_ids.astype(str))
    buckets = np.array([int.from_bytes(hashlib.sha256(f"{u}|{stamp}".encode()).digest()[:8], "big") / 2**64
                        for u in users], dtype=np.float64)
    return pd.Series(buckets[code] < fraction if len(users) else np.zeros(len(code), bool), index=user_ids.index)


def build_features(
    store: PartitionStore, settings: Settings, day: date, *, run_id: str | None = None
) -> FeatureStats:
    """Clean ``raw/events/dt=<day>``, grow the vocabularies, write examples, history and stats. Idempotent.

    A day with no usable events after cleaning gets empty examples (a thin day: the fine-tune then keeps
    the model or trains on the replay sample). Only the delivery that passed validation (or that on-call
    accepted) is used: :class:`FeatureError` if the date was not validated, failed, or was redelivered
    since (re-validate it first). Dates are processed in order: a date before one whose features exist is
    refused. ``run_id`` is accepted for the common step signature; nothing here records it.
    """
    _check_order(store, day)
    passed = validated_delivery(store, day)
    pairs, cleaning = day_pairs(store, day, passed, settings.validation_max_id_length, settings.chunk_rows)
    if cleaning.invalid_ids:  # only an accepted partition gets here with them: validation refuses them
        log.warning("partition %s: %d rows dropped whose user_id or item_id is missing or not a valid id",
                    day, cleaning.invalid_ids)
    if not cleaning.rows_out:  # a thin day: no examples, nothing grows; training keeps the model (recsys.training)
        log.warning("partition %s has no usable events after cleaning: %s", day, cleaning.as_dict())
    return write_features(store, settings, day, pairs, cleaning, passed)


def write_features(
    store: PartitionStore, settings: Settings, day: date, pairs: pd.DataFrame, cleaning: CleaningStats,
    fingerprint: str, engine: str = "",
) -> FeatureStats:
    """Vocabularies, split, histories, stats and the files of ``features/dt=<day>`` from the day's distinct
    (user_id, item_id) ``pairs`` (text, sorted) and its ``cleaning`` stats; ``fingerprint`` is the validated
    delivery's. The steps after cleaning, shared by both engines (pandas here, :mod:`recsys.spark.features`),
    so their outputs cannot differ; ``engine`` only labels the log line."""
    users_before = vocab.load(store, vocab.USERS)
    items_before = vocab.load(store, vocab.ITEMS)
    users, _ = vocab.grow(users_before, pairs[schema.USER_ID], day, settings.min_user_count)
    items, _ = vocab.grow(items_before, pairs[schema.ITEM_ID], day, settings.min_item_count)
    pairs[schema.USER_ROW] = vocab.rows_for(users, pairs[schema.USER_ID])
    pairs[schema.ITEM_ROW] = vocab.rows_for(items, pairs[schema.ITEM_ID])
    holdout = is_holdout(pairs[schema.USER_ID], day, settings.holdout_fraction)
    pairs[schema.SPLIT] = holdout.map({True: "holdout", False: "train"})
    before = history.load_before(store, day)
    pairs[history.HIST_INDEX], queries = history.query_table(before, pairs[schema.USER_ID], settings.history_length)
    after = history.update(before, pairs, day, max(settings.history_length, settings.repeat_length))
    del before

    if not users.equals(users_before):  # a rerun of the day counts nothing and writes nothing
        vocab.save(store, vocab.USERS, users)
    if not items.equals(items_before):
        vocab.save(store, vocab.ITEMS, items)
    # counted from first_seen, not from this call, so a rerun of the day writes identical stats
    new_users, user_rows = vocab.growth_on(users, day)
    new_items, item_rows = vocab.growth_on(items, day)
    stats = FeatureStats(
        date=day.isoformat(),
        cleaning=cleaning.as_dict(),
        examples=len(pairs),
        train_examples=int((~holdout).sum()),
        holdout_examples=int(holdout.sum()),
        users=int(pairs[schema.USER_ID].nunique()),
        holdout_users=int(pairs.loc[holdout, schema.USER_ID].nunique()),
        items=int(pairs[schema.ITEM_ID].nunique()),
        new_users=new_users,
        new_items=new_items,
        user_vocab_size=user_rows,
        item_vocab_size=item_rows,
        pending_users=vocab.pending_on(users, day),
        pending_items=vocab.pending_on(items, day),
        min_user_count=settings.min_user_count,
        min_item_count=settings.min_item_count,
        history_users=int(after[schema.USER_ID].nunique()),
        history_rows=len(after),
        fingerprint=fingerprint,
    )
    out = layout.features(day)
    store.write_parquet(f"{out}/{EXAMPLES_FILE}", pairs[list(EXAMPLE_FILE_COLUMNS)])
    store.write_parquet(f"{out}/{layout.QUERY_FILE}", queries)
    store.write_parquet(f"{out}/{layout.HISTORY_FILE}", after)
    store.write_json(f"{out}/{STATS_FILE}", stats.as_dict())
    store.mark_success(out)
    log.info("features %s%s: %s", day, engine, stats.as_dict())
    return stats


def day_pairs(
    store: PartitionStore, day: date, passed: str, max_id_length: int = schema.MAX_ID_LENGTH,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> tuple[pd.DataFrame, CleaningStats]:
    """The distinct (user_id, item_id) pairs of ``day``'s cleaned events (as text, sorted) and the cleaning stats.

    Reads ``raw/events/dt=<day>`` in chunks of at most ``chunk_rows`` rows (``RECSYS_CHUNK_ROWS``), twice: the
    event ids first (8 bytes a row, :class:`FirstOccurrence`: a repeated id is dropped in whichever chunk it
    repeats), then the columns the step needs; so the step holds a chunk and the pairs, never the partition.
    The result equals cleaning the whole partition as one frame (:func:`clean_events`). :class:`FeatureError`
    if the delivery read is not ``passed`` (the fingerprint of the one that passed validation).
    """
    partition = layout.raw_events(day)
    first = FirstOccurrence()
    ids = ChunkReader(store, partition, columns=[schema.EVENT_ID], chunk_rows=chunk_rows)
    for chunk in ids:
        first.add(chunk[schema.EVENT_ID])
    _check_delivery(store, day, ids.fingerprint, passed)
    reader = ChunkReader(store, partition, columns=READ_COLUMNS, chunk_rows=chunk_rows)
    stats: CleaningStats | None = None
    pairs = _DistinctPairs()
    for chunk in reader:
        cleaned, part = clean_events(chunk, max_id_length, first.duplicated(chunk[schema.EVENT_ID]))
        del chunk
        stats = part if stats is None else stats + part
        pairs.add(cleaned[[schema.USER_ID, schema.ITEM_ID]].astype(str))
        del cleaned
        release_memory(part.rows_in)
    _check_delivery(store, day, reader.fingerprint, passed)
    if stats is None:  # the reader yields at least one (maybe empty) frame per data file
        raise FeatureError(f"{store.uri(partition)} yielded no rows to clean")
    return pairs.result(), stats


class _DistinctPairs:
    """Distinct (user_id, item_id) rows of many chunks; merged whenever the unmerged ones outgrow the merged
    (each row is deduplicated O(log chunks) times, and at most about twice the distinct pairs are held)."""

    def __init__(self) -> None:
        self.merged: pd.DataFrame | None = None
        self.pending: list[pd.DataFrame] = []
        self.pending_rows = 0

    def add(self, pairs: pd.DataFrame) -> None:
        pairs = pairs.drop_duplicates()
        self.pending.append(pairs)
        self.pending_rows += len(pairs)
        if self.merged is None or self.pending_rows >= len(self.merged):
            self._merge()

    def _merge(self) -> pd.DataFrame:
        frames = [self.merged, *self.pending] if self.merged is not None else self.pending
        if not frames:
            frames = [pd.DataFrame({schema.USER_ID: pd.Series(dtype=object), schema.ITEM_ID: pd.Series(dtype=object)})]
        merged = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True).drop_duplicates()
        self.merged, self.pending, self.pending_rows = merged, [], 0
        return merged

    def result(self) -> pd.DataFrame:
        """Every distinct pair, sorted by user then item, indexed 0, 1, ..."""
        return self._merge().sort_values([schema.USER_ID, schema.ITEM_ID]).reset_index(drop=True)


def _check_delivery(store: PartitionStore, day: date, delivered: str | None, passed: str) -> None:
    if delivered != passed:
        raise FeatureError(
            f"partition {day} changed since it was validated: the delivery now in "
            f"{store.uri(layout.raw_events(day))} ({str(delivered)[:12]}) is not the one that passed validation "
            f"({passed[:12]}). Run the validate step for {day} again, then build its features"
        )


def validated_delivery(store: PartitionStore, day: date) -> str:
    """The fingerprint of ``day``'s delivery that passed validation or was accepted by on-call.

    :class:`FeatureError` saying what to do if the date was never validated or its delivery failed.
    """
    path = layout.validation_summary(day)
    summary = store.read_json(path) if store.exists(path) else None
    if summary is None:
        raise FeatureError(
            f"partition {day} was not validated ({store.uri(path)} does not exist): run the validate step first; "
            "features are built only from a delivery that passed validation"
        )
    passed = summary.get("passed_fingerprint")
    if not passed:
        what = summary.get("problem") or "failed expectations: " + ", ".join(map(str, summary.get("failed") or []))
        raise FeatureError(
            f"partition {day} did not pass validation ({what}); features are built only from a delivery that "
            "passed. Republish a fixed partition and validate it again, or have on-call accept it"
        )
    return str(passed)


def check_delivery(store: PartitionStore, day: date) -> None:
    """:class:`FeatureError` unless ``day``'s features were built from the delivery that passed validation.

    For the steps after features (fine-tune, evaluate). Features written before deliveries were recorded
    (no ``fingerprint`` in their stats, or no stats) are taken as they are.
    """
    path = f"{layout.features(day)}/{STATS_FILE}"
    built = store.read_json(path).get("fingerprint") if store.exists(path) else None
    if built is None:
        return
    passed = validated_delivery(store, day)
    if built != passed:
        raise FeatureError(
            f"the features of {day} were built from the delivery {built[:12]}, but the delivery of {day} that "
            f"passed validation is {passed[:12]}: build the features of {day} again (after validating it)"
        )


def _check_order(store: PartitionStore, day: date) -> None:
    """Dates are processed in order (each fine-tune starts from the day before, ids are first seen in order)."""
    later = [d for d in store.partitions(layout.FEATURES) if d > day]
    if later and not store.is_complete(layout.features(day)):
        raise FeatureError(
            f"features of a later date ({later[-1]}) exist already: partitions are processed in date order, "
            f"so {day} cannot be added before them. Process dates oldest first (a full retrain covers history)"
        )


def load_examples(
    store: PartitionStore, day: date, columns: Sequence[str] | None = None, histories: bool = False,
    rows: np.ndarray | None = None,
) -> pd.DataFrame:
    """The examples of ``features/dt=<day>``; :class:`FeatureError` if that step has not run.

    Columns: ``EXAMPLE_FILE_COLUMNS`` (or only ``columns`` of them: nothing else is decoded).
    ``histories``: also ``hist_items`` / ``hist_days``, each example user's history as lists (costly
    for a large day: training gathers rows of :func:`load_query_history` instead). ``rows``: only
    the examples at these positions, in this order (the rest are never converted). Examples written
    before ``hist_index`` existed read the same: with their history lists, or empty histories.
    """
    out = layout.features(day)
    if not store.is_complete(out):
        raise FeatureError(f"no features for {day} at {store.uri(out)}: run the features step first")
    wanted = list(columns) if columns is not None else list(EXAMPLE_FILE_COLUMNS)
    unknown = [c for c in wanted if c not in EXAMPLE_FILE_COLUMNS]
    if unknown:
        raise ValueError(f"examples have no columns {unknown}; they have {list(EXAMPLE_FILE_COLUMNS)}")
    file = _examples_file(store, day)
    names = file.schema_arrow.names
    read = [c for c in wanted if c in names]
    table = file.read(columns=read)
    examples = (table if rows is None else table.take(rows)).to_pandas()
    del table
    if history.HIST_INDEX in wanted and history.HIST_INDEX not in names:
        legacy = _legacy_index(file)
        examples[history.HIST_INDEX] = legacy if rows is None else legacy[rows]
    examples = examples[wanted]
    if histories:
        if history.HIST_INDEX in examples:
            index = examples[history.HIST_INDEX].to_numpy()
        else:
            index = _index_of(file) if rows is None else _index_of(file)[rows]
        items, days = history.lists_from_table(index, load_query_history(store, day))
        examples = examples.assign(**{history.HIST_ITEMS: items, history.HIST_DAYS: days})
    return examples


def load_query_history(store: PartitionStore, day: date) -> pd.DataFrame:
    """The day's histories that examples' ``hist_index`` point into (:func:`history.query_table`)."""
    path = f"{layout.features(day)}/{layout.QUERY_FILE}"
    if store.exists(path):
        return store.read_parquet(path)
    file = _examples_file(store, day)
    if history.HIST_ITEMS not in file.schema_arrow.names:  # written before histories existed: none known
        return history.empty_query_table()
    lists = file.read(columns=[history.HIST_ITEMS, history.HIST_DAYS]).to_pandas()
    lists = lists[lists[history.HIST_ITEMS].map(len) > 0]
    table = history.table_from_lists(lists[history.HIST_ITEMS], lists[history.HIST_DAYS])
    table[history.HIST_INDEX] += 1
    return table


def _examples_file(store: PartitionStore, day: date) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.ParquetFile(pa.BufferReader(store.read_bytes(f"{layout.features(day)}/{EXAMPLES_FILE}")))


def _index_of(file: Any) -> np.ndarray:
    if history.HIST_INDEX in file.schema_arrow.names:
        return file.read(columns=[history.HIST_INDEX]).column(0).to_numpy()
    return _legacy_index(file)


def _legacy_index(file: Any) -> np.ndarray:
    """Examples with history lists: each example with a non-empty one is its own index (1, 2, ...)."""
    import pyarrow.compute as pc

    if history.HIST_ITEMS not in file.schema_arrow.names:
        return np.zeros(file.metadata.num_rows, np.int32)
    lengths = pc.list_value_length(file.read(columns=[history.HIST_ITEMS]).column(0)).to_numpy(zero_copy_only=False)
    some = np.nan_to_num(lengths.astype(np.float64)) > 0
    return np.where(some, np.cumsum(some), 0).astype(np.int32)


def load_stats(store: PartitionStore, day: date) -> dict[str, Any]:
    return store.read_json(f"{layout.features(day)}/{STATS_FILE}")
