"""Cleaning decisions on validated events. Every dropped row is counted, never silently lost."""

from __future__ import annotations

from dataclasses import asdict, astuple, dataclass

import pandas as pd

from recsys import schema


@dataclass(frozen=True)
class CleaningStats:
    """Row counts of one partition's cleaning (``rows_in = rows_out + sum of the drops``)."""

    rows_in: int
    rows_out: int
    duplicate_event_ids: int
    # rows whose user_id or item_id is missing or breaks the id rule (a partition on-call accepted although
    # it failed validation): the service could never serve such an id, so it never gets an embedding row
    invalid_ids: int
    non_positive_quantity: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def __add__(self, other: CleaningStats) -> CleaningStats:
        """The stats of two chunks of one partition together."""
        return CleaningStats(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


def clean_events(
    events: pd.DataFrame, max_id_length: int = schema.MAX_ID_LENGTH, duplicated: pd.Series | None = None
) -> tuple[pd.DataFrame, CleaningStats]:
    """Drop repeated ``event_id`` (first kept), rows with a user or item id that is missing or not an id
    (:func:`recsys.schema.valid_id` with ``max_id_length``) and rows with ``quantity <= 0``; count each drop.

    ``duplicated``: which rows repeat an earlier event id, when ``events`` is one chunk of a partition (the
    earlier rows may be in an earlier chunk: :class:`recsys.features.chunks.FirstOccurrence`); None: within
    ``events``. Every other decision is row by row, so the chunks' stats add up to the whole partition's.
    """
    rows_in = len(events)
    if duplicated is None:
        duplicated = events[schema.EVENT_ID].duplicated(keep="first")
    deduped = events[~duplicated]
    valid = _valid_ids(deduped[schema.USER_ID], max_id_length) & _valid_ids(deduped[schema.ITEM_ID], max_id_length)
    positive = deduped[schema.QUANTITY] > 0
    cleaned = deduped[valid & positive].reset_index(drop=True)  # one copy of the rows (bench/scale: memory)
    stats = CleaningStats(
        rows_in=rows_in,
        rows_out=len(cleaned),
        duplicate_event_ids=int(duplicated.sum()),
        invalid_ids=int((~valid).sum()),
        non_positive_quantity=int((valid & ~positive).sum()),
    )
    return cleaned, stats


def _valid_ids(ids: pd.Series, max_id_length: int) -> pd.Series:
    """True where ``ids`` holds an id by the rule (each distinct value checked once)."""
    present = ids.notna()
    invalid = [v for v in ids[present].unique() if not schema.valid_id(str(v), max_id_length)]
    return present & ~ids.isin(invalid)
