"""Cleaning decisions on validated events. Every dropped row is counted, never silently lost."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from recsys import schema


@dataclass(frozen=True)
class CleaningStats:
    """Row counts of one partition's cleaning (``rows_in = rows_out + sum of the drops``)."""

    rows_in: int
    rows_out: int
    duplicate_event_ids: int
    non_positive_quantity: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def clean_events(events: pd.DataFrame) -> tuple[pd.DataFrame, CleaningStats]:
    """Drop repeated ``event_id`` (first kept) and rows with ``quantity <= 0``; count each drop."""
    rows_in = len(events)
    duplicated = events[schema.EVENT_ID].duplicated(keep="first")
    deduped = events[~duplicated]
    positive = deduped[schema.QUANTITY] > 0
    cleaned = deduped[positive].reset_index(drop=True)
    stats = CleaningStats(
        rows_in=rows_in,
        rows_out=len(cleaned),
        duplicate_event_ids=int(duplicated.sum()),
        non_positive_quantity=int((~positive).sum()),
    )
    return cleaned, stats
