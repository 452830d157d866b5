"""Turn a validated raw partition into training examples under ``features/dt=<day>/``.

An example is a distinct (user, item) interaction of the day, with the user's recent purchases
before the day (``hist_items``, ``hist_days``: the query tower's input, :mod:`recsys.features.history`).
Users are split deterministically (a hash of user id and day) into ``train`` and ``holdout``: the
holdout users' interactions are what candidate and champion are evaluated on, and the day's
fine-tune never sees them. Ids get embedding rows once seen ``RECSYS_MIN_USER_COUNT`` /
``RECSYS_MIN_ITEM_COUNT`` times (:mod:`recsys.features.vocab`); the stats say how many wait.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import pandas as pd

from recsys import schema
from recsys.config import Settings
from recsys.features import history, vocab
from recsys.features.cleaning import clean_events
from recsys.storage import PartitionStore, layout
from recsys.validation.partition import read_partition

log = logging.getLogger(__name__)

EXAMPLES_FILE = "examples.parquet"
STATS_FILE = "stats.json"
EXAMPLE_FILE_COLUMNS = (*schema.EXAMPLE_COLUMNS, history.HIST_ITEMS, history.HIST_DAYS)


class FeatureError(RuntimeError):
    """Examples cannot be built or read (missing partition, nothing left after cleaning)."""


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_holdout(user_ids: pd.Series, day: date, fraction: float) -> pd.Series:
    """Deterministic per-(user, day) split: True for about ``fraction`` of the users."""

    def bucket(user: str) -> float:
        digest = hashlib.sha256(f"{user}|{day.isoformat()}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    return user_ids.astype(str).map(bucket) < fraction


def build_features(store: PartitionStore, day: date, settings: Settings) -> FeatureStats:
    """Clean ``raw/events/dt=<day>``, grow the vocabularies, write examples, history and stats. Idempotent."""
    events = read_partition(store, layout.raw_events(day))
    cleaned, cleaning = clean_events(events)
    if cleaned.empty:
        raise FeatureError(f"partition {day} has no usable events after cleaning: {cleaning.as_dict()}")
    pairs = (
        cleaned[[schema.USER_ID, schema.ITEM_ID]].astype(str).drop_duplicates()
        .sort_values([schema.USER_ID, schema.ITEM_ID]).reset_index(drop=True)
    )
    users_before = vocab.load(store, vocab.USERS)
    items_before = vocab.load(store, vocab.ITEMS)
    users, _ = vocab.grow(users_before, pairs[schema.USER_ID], day, settings.min_user_count)
    items, _ = vocab.grow(items_before, pairs[schema.ITEM_ID], day, settings.min_item_count)
    pairs[schema.USER_ROW] = vocab.rows_for(users, pairs[schema.USER_ID])
    pairs[schema.ITEM_ROW] = vocab.rows_for(items, pairs[schema.ITEM_ID])
    holdout = is_holdout(pairs[schema.USER_ID], day, settings.holdout_fraction)
    pairs[schema.SPLIT] = holdout.map({True: "holdout", False: "train"})
    before = history.load_before(store, day)
    pairs = history.attach(pairs, before)
    after = history.update(before, pairs, day, settings.history_length)

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
    )
    out = layout.features(day)
    store.write_parquet(f"{out}/{EXAMPLES_FILE}", pairs[list(EXAMPLE_FILE_COLUMNS)])
    store.write_parquet(f"{out}/{history.HISTORY_FILE}", after)
    store.write_json(f"{out}/{STATS_FILE}", stats.as_dict())
    store.mark_success(out)
    log.info("features %s: %s", day, stats.as_dict())
    return stats


def load_examples(store: PartitionStore, day: date) -> pd.DataFrame:
    """The examples of ``features/dt=<day>``; :class:`FeatureError` if that step has not run."""
    out = layout.features(day)
    if not store.is_complete(out):
        raise FeatureError(f"no features for {day} at {store.uri(out)}: run the features step first")
    examples = store.read_parquet(f"{out}/{EXAMPLES_FILE}")
    for column in (history.HIST_ITEMS, history.HIST_DAYS):  # written before histories existed: none known
        if column not in examples:
            examples[column] = [[] for _ in range(len(examples))]
    return examples


def load_stats(store: PartitionStore, day: date) -> dict[str, Any]:
    return store.read_json(f"{layout.features(day)}/{STATS_FILE}")
