"""The landing simulator: publishes raw partitions the way the upstream job does.

For each day: the catalog snapshot (data file, then its ``_SUCCESS``), then the events data file,
and the events ``_SUCCESS`` marker last, so a sensor never sees a partition that is half written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.datasets import online_retail
from recsys.progress import progress
from recsys.storage import PartitionStore, layout

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

DATA_FILE = "part-00000.parquet"
SOURCE_STATS = "_source_stats.json"


@dataclass(frozen=True)
class Landed:
    """One landed (or already present) partition."""

    day: date
    events: int
    catalog_items: int
    already_present: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "date": self.day.isoformat(),
            "events": self.events,
            "catalog_items": self.catalog_items,
            "already_present": self.already_present,
        }


def select_days(available: list[date], start: date, days: int) -> list[date]:
    """The first ``days`` days with data on or after ``start`` (the source has no Saturdays)."""
    if days <= 0:
        raise online_retail.SourceError(f"--days must be positive, got {days}")
    chosen = [d for d in available if d >= start][:days]
    if not chosen:
        raise online_retail.SourceError(
            f"no Online Retail data on or after {start}; the data covers {available[0]} to {available[-1]}"
        )
    return chosen


def land_days(
    store: PartitionStore, start: date, days: int = 1, source: Path | None = None, exact: bool = False
) -> list[Landed]:
    """Publish ``days`` partitions starting at ``start``. With ``exact``, ``start`` itself must have data.

    Idempotent: a partition whose ``_SUCCESS`` already exists is left as it is.
    """
    raw = online_retail.load_source(source)
    available = online_retail.source_days(raw)
    if exact and start not in available:
        raise online_retail.SourceError(
            f"Online Retail has no invoice lines on {start} ({start:%A}); "
            f"it covers {available[0]} to {available[-1]} without Saturdays"
        )
    return [_land_one(store, raw, day) for day in progress(select_days(available, start, days), "landing", "day")]


def _land_one(store: PartitionStore, raw: pd.DataFrame, day: date) -> Landed:
    events_dir = layout.raw_events(day)
    catalog_dir = layout.raw_catalog(day)
    if store.is_complete(events_dir):
        stats = store.read_json(f"{events_dir}/{SOURCE_STATS}") if store.exists(
            f"{events_dir}/{SOURCE_STATS}"
        ) else {}
        log.info("%s already landed; left unchanged", day)
        return Landed(day, int(stats.get("events", -1)), -1, already_present=True)
    events, stats = online_retail.to_events(raw[raw["day"] == day])
    catalog = online_retail.catalog_snapshot(raw[raw["day"] <= day])
    store.write_parquet(f"{catalog_dir}/{DATA_FILE}", catalog)
    store.mark_success(catalog_dir)
    store.write_parquet(f"{events_dir}/{DATA_FILE}", events)
    store.write_json(f"{events_dir}/{SOURCE_STATS}", stats.as_dict())
    store.mark_success(events_dir)
    log.info("landed %s: %d events, %d catalog items", day, len(events), len(catalog))
    return Landed(day, len(events), len(catalog), already_present=False)
