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
from recsys.arrays import distinct
from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.features import history, vocab
from recsys.features.chunks import (
    DEFAULT_CHUNK_ROWS,
    ChunkReader,
    FirstOccurrence,
    Gathered,
    GatheredFrame,
    release_memory,
    write_parquet,
)
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


def save_vocabularies(store: PartitionStore, day: date, users: pd.DataFrame, users_before: pd.DataFrame,
                      items: pd.DataFrame, items_before: pd.DataFrame) -> dict[str, int]:
    """Save the vocabularies grown on ``day`` (a rerun of the day counts nothing and writes nothing) and return
    their growth for :class:`FeatureStats`: new ids, vocabulary sizes and ids pending their minimum count, counted
    from ``first_seen``, not from this call, so a rerun of the day writes identical stats. Both engines'
    feature writers (this module's and :mod:`recsys.spark.ranges`) call it."""
    if not users.equals(users_before):
        vocab.save(store, vocab.USERS, users)
    if not items.equals(items_before):
        vocab.save(store, vocab.ITEMS, items)
    new_users, user_vocab_size = vocab.growth_on(users, day)
    new_items, item_vocab_size = vocab.growth_on(items, day)
    return {"new_users": new_users, "new_items": new_items, "user_vocab_size": user_vocab_size,
            "item_vocab_size": item_vocab_size, "pending_users": vocab.pending_on(users, day),
            "pending_items": vocab.pending_on(items, day)}


def write_features(
    store: PartitionStore, settings: Settings, day: date, pairs: DayPairs | pd.DataFrame, cleaning: CleaningStats,
    fingerprint: str, engine: str = "",
) -> FeatureStats:
    """Vocabularies, split, histories, stats and the files of ``features/dt=<day>`` from the day's distinct
    (user_id, item_id) ``pairs`` (:class:`DayPairs`, or a frame of them as text, sorted) and its ``cleaning``
    stats; ``fingerprint`` is the validated delivery's. The steps after cleaning, shared by both engines
    (pandas here, :mod:`recsys.spark.features`), so their outputs cannot differ; ``engine`` only labels the log
    line.

    Everything per id (counts, rows, the holdout hash, histories) is computed once per distinct id and
    gathered to the pairs by integer code; text columns exist only in the frames written (bench/scale: the
    pairs as text columns through every step made this step 7.6 GB at 30M events).
    """
    if isinstance(pairs, pd.DataFrame):
        pairs = DayPairs.from_frame(pairs)
    user_ids, item_ids = pairs.user_ids, pairs.item_ids
    users_before = vocab.load(store, vocab.USERS)
    items_before = vocab.load(store, vocab.ITEMS)
    users, _ = vocab.grow_counts(users_before, pairs.user_counts(), day, settings.min_user_count)
    items, _ = vocab.grow_counts(items_before, pairs.item_counts(), day, settings.min_item_count)
    user_rows = vocab.rows_for(users, pd.Series(user_ids)).to_numpy(np.int64)
    item_rows = vocab.rows_for(items, pd.Series(item_ids)).to_numpy(np.int64)
    held_users = is_holdout(pd.Series(user_ids), day, settings.holdout_fraction).to_numpy(bool)
    before = history.load_coded_before(store, day)  # the snapshot as codes: no frame of its text
    user_index, queries = history.query_coded(before, user_ids, settings.history_length)
    after = history.update_coded(before, user_ids, item_ids, pairs.user_code, pairs.item_code, day,
                                 max(settings.history_length, settings.repeat_length))
    del before

    growth = save_vocabularies(store, day, users, users_before, items, items_before)
    del users_before, items_before
    holdout_examples = int(np.bincount(pairs.user_code, minlength=len(user_ids))[held_users].sum())
    stats = FeatureStats(
        date=day.isoformat(),
        cleaning=cleaning.as_dict(),
        examples=len(pairs),
        train_examples=len(pairs) - holdout_examples,
        holdout_examples=holdout_examples,
        users=len(user_ids),  # every distinct id has a pair
        holdout_users=int(held_users.sum()),
        items=len(item_ids),
        **growth,
        min_user_count=settings.min_user_count,
        min_item_count=settings.min_item_count,
        history_users=after.users(),
        history_rows=len(after),
        fingerprint=fingerprint,
    )
    del users, items
    out = layout.features(day)
    # each file built and written a row group at a time from codes (chunks.write_parquet): at 30M events the
    # whole frames of text and their Arrow copies were the step's peak (bench/scale)
    examples = GatheredFrame({
        schema.USER_ID: Gathered(pd.array(user_ids, dtype=_TEXT), pairs.user_code),
        schema.ITEM_ID: Gathered(pd.array(item_ids, dtype=_TEXT), pairs.item_code),
        schema.USER_ROW: Gathered(user_rows, pairs.user_code),
        schema.ITEM_ROW: Gathered(item_rows, pairs.item_code),
        schema.SPLIT: Gathered(_SPLIT_NAMES.take(held_users.astype(np.intp)), pairs.user_code),
        history.HIST_INDEX: Gathered(user_index, pairs.user_code),
    })
    del user_rows, item_rows, held_users, user_index
    write_parquet(store, f"{out}/{EXAMPLES_FILE}", examples)
    del examples
    write_parquet(store, f"{out}/{layout.QUERY_FILE}", queries)
    del queries
    write_parquet(store, f"{out}/{layout.HISTORY_FILE}", after.gathered())
    del after
    store.write_json(f"{out}/{STATS_FILE}", stats.as_dict())
    store.mark_success(out)
    log.info("features %s%s: %s", day, engine, stats.as_dict())
    return stats


# the split column's two values (written as the text dtype ``Series.map`` of the two names gives)
_SPLIT_NAMES = pd.array(["train", "holdout"], dtype=pd.Series([True]).map({True: "holdout"}).dtype)


@dataclass(frozen=True)
class DayPairs:
    """A day's distinct (user_id, item_id) pairs as integer codes: pair n is
    (``user_ids[user_code[n]]``, ``item_ids[item_code[n]]``). The ids are text, distinct and sorted, each
    in at least one pair; the pairs are distinct and (from :func:`day_pairs`) sorted by user, then item.
    About 8 bytes a pair plus each distinct id once, instead of two text values per pair."""

    user_ids: np.ndarray  # object array of str
    item_ids: np.ndarray
    user_code: np.ndarray  # int32, one per pair
    item_code: np.ndarray

    def __len__(self) -> int:
        return len(self.user_code)

    @classmethod
    def from_frame(cls, pairs: pd.DataFrame) -> DayPairs:
        """The codes of a frame of distinct (user_id, item_id) pairs, in the frame's row order."""
        user_code, user_ids = _sorted_codes(pairs[schema.USER_ID])
        item_code, item_ids = _sorted_codes(pairs[schema.ITEM_ID])
        return cls(user_ids, item_ids, user_code, item_code)

    def user_counts(self) -> pd.Series:
        """Pairs per distinct user id (what :func:`vocab.grow` counts), indexed by the ids."""
        return pd.Series(np.bincount(self.user_code, minlength=len(self.user_ids)),
                         index=pd.Index(self.user_ids, dtype=_TEXT))

    def item_counts(self) -> pd.Series:
        return pd.Series(np.bincount(self.item_code, minlength=len(self.item_ids)),
                         index=pd.Index(self.item_ids, dtype=_TEXT))

    def user_column(self) -> pd.api.extensions.ExtensionArray:
        """The pairs' user ids as a text column (``astype(str)``'s dtype), gathered from the distinct ids."""
        return pd.array(self.user_ids, dtype=_TEXT).take(self.user_code)

    def item_column(self) -> pd.api.extensions.ExtensionArray:
        return pd.array(self.item_ids, dtype=_TEXT).take(self.item_code)

    def frame(self) -> pd.DataFrame:
        """The pairs as a frame of text columns, indexed 0, 1, ... (what ``day_pairs`` returned before codes)."""
        return pd.DataFrame({schema.USER_ID: self.user_column(), schema.ITEM_ID: self.item_column()})


_TEXT = pd.Series([""], dtype=object).astype(str).dtype  # the dtype the pairs' text had (``astype(str)``)


def _sorted_codes(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    code, uniques = pd.factorize(ids.astype(str), sort=True)
    return code.astype(np.int32), np.asarray(uniques, dtype=object)


def day_pairs(
    store: PartitionStore, day: date, passed: str, max_id_length: int = schema.MAX_ID_LENGTH,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> tuple[DayPairs, CleaningStats]:
    """The distinct (user_id, item_id) pairs of ``day``'s cleaned events (as text codes, sorted) and the stats.

    Reads ``raw/events/dt=<day>`` in chunks of at most ``chunk_rows`` rows (``RECSYS_CHUNK_ROWS``), twice: the
    event ids first (8 bytes a row, :class:`FirstOccurrence`: a repeated id is dropped in whichever chunk it
    repeats), then the columns the step needs; so the step holds a chunk, each distinct id once and 8 bytes
    per distinct pair, never the partition. The result equals cleaning the whole partition as one frame
    (:func:`clean_events`, then the distinct text pairs sorted: ``DayPairs.frame``). :class:`FeatureError`
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
        pairs.add(cleaned[schema.USER_ID].astype(str), cleaned[schema.ITEM_ID].astype(str))
        del cleaned
        release_memory(part.rows_in)
    _check_delivery(store, day, reader.fingerprint, passed)
    if stats is None:  # the reader yields at least one (maybe empty) frame per data file
        raise FeatureError(f"{store.uri(partition)} yielded no rows to clean")
    return pairs.result(), stats


class _Codes:
    """Each distinct text id of many chunks numbered in order of first appearance (a dict of the ids: each
    chunk looks up its distinct ids once)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def of(self, ids: pd.Series) -> np.ndarray:
        local, uniques = pd.factorize(ids)
        codes = self.codes
        known = np.fromiter((codes.setdefault(i, len(codes)) for i in uniques.to_numpy(object)), np.int64,
                            len(uniques))
        return known[local]

    def sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """(the ids in text order, each code's position in that order)."""
        ids = np.fromiter(self.codes, object, len(self.codes))
        order = pd.Index(ids, dtype=_TEXT).argsort()  # the order sort_values gives the text
        rank = np.empty(len(ids), np.int64)
        rank[order] = np.arange(len(ids))
        return ids[order], rank


class _DistinctPairs:
    """Distinct (user_id, item_id) of many chunks as int64 keys (user code << 32 | item code); merged whenever
    the unmerged ones outgrow the merged (each key is deduplicated O(log chunks) times, and at most about
    twice the distinct pairs are held)."""

    def __init__(self) -> None:
        self.users, self.items = _Codes(), _Codes()
        self.merged: np.ndarray | None = None
        self.pending: list[np.ndarray] = []
        self.pending_rows = 0

    def add(self, users: pd.Series, items: pd.Series) -> None:
        keys = distinct((self.users.of(users) << 32) | self.items.of(items))
        self.pending.append(keys)
        self.pending_rows += len(keys)
        if self.merged is None or self.pending_rows >= len(self.merged):
            self._merge()

    def _merge(self) -> np.ndarray:
        parts = [self.merged, *self.pending] if self.merged is not None else self.pending
        merged = distinct(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        self.merged, self.pending, self.pending_rows = merged, [], 0
        return merged

    def result(self) -> DayPairs:
        """Every distinct pair, sorted by user then item (the ids' text order)."""
        keys = self._merge()
        self.merged = None
        user_ids, user_rank = self.users.sorted()
        item_ids, item_rank = self.items.sorted()
        keys = np.sort((user_rank[keys >> 32] << 32) | item_rank[keys & 0xFFFFFFFF])
        return DayPairs(user_ids, item_ids, (keys >> 32).astype(np.int32), (keys & 0xFFFFFFFF).astype(np.int32))


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
