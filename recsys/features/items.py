"""Item content for the candidate tower: title words and a price band, per item row.

Title words are hashed (CRC-32) into a fixed number of buckets, so the word table never grows and a
word means the same bucket in every version: an item seen for the first time shares its title
words' vectors with the items it resembles, and is not cold. Prices fall into log-spaced bands.
Row 0 (OOV) and items without a catalog entry have no words (all padding) and band 0.
"""

from __future__ import annotations

import re
import zlib
from datetime import date

import numpy as np
import pandas as pd

from recsys import schema
from recsys.features import vocab
from recsys.storage import PartitionStore, StorageError, layout
from recsys.storage.raw import read_partition

TITLE_WORDS = 8  # words of a title that count (the rest are cut)
WORD_BUCKETS = 1 << 14  # hash buckets for title words; bucket 0 is padding
PRICE_BANDS = 32  # band 0: no price; bands 1..31 are log-spaced
_WORD = re.compile(r"[a-z0-9]+")


def title_words(title: str | None) -> list[int]:
    """Hashed buckets (1..WORD_BUCKETS-1) of the first ``TITLE_WORDS`` words of ``title``."""
    words = _WORD.findall(str(title).lower()) if title is not None and not pd.isna(title) else []
    return [1 + zlib.crc32(w.encode()) % (WORD_BUCKETS - 1) for w in words[:TITLE_WORDS]]


def price_band(price: float | None) -> int:
    """0 for a missing or negative price, else 1 + floor(4 * ln(1 + price)) capped at PRICE_BANDS - 1."""
    if price is None or pd.isna(price) or price < 0:
        return 0
    return int(min(PRICE_BANDS - 1, 1 + np.floor(4 * np.log1p(price))))


def price_bands(prices: np.ndarray) -> np.ndarray:
    """:func:`price_band` of every price (int32)."""
    prices = np.asarray(prices, dtype=np.float64)
    valid = ~np.isnan(prices) & (prices >= 0)
    with np.errstate(invalid="ignore"):
        bands = np.minimum(PRICE_BANDS - 1, 1 + np.floor(4 * np.log1p(np.where(valid, prices, 0.0))))
    return np.where(valid, bands, 0).astype(np.int32)


def feature_arrays(catalog: pd.DataFrame, items: pd.DataFrame, rows: int) -> dict[str, np.ndarray]:
    """``item_words`` [rows, TITLE_WORDS] int32 and ``item_price`` [rows] int32 for item rows < ``rows``."""
    words = np.zeros((rows, TITLE_WORDS), dtype=np.int32)
    bands = np.zeros(rows, dtype=np.int32)
    known = vocab.with_rows(items)
    known = known[known[vocab.ROW] < rows]
    entries = catalog.drop_duplicates(schema.ITEM_ID, keep="last")
    found = pd.Index(entries[schema.ITEM_ID]).get_indexer(known[vocab.ID].astype(str).to_numpy(object))
    listed = found >= 0
    item_rows = known[vocab.ROW].to_numpy(np.int64)[listed]
    entries = entries.iloc[found[listed]]
    for row, title in zip(item_rows, entries[schema.TITLE].to_numpy(object), strict=True):
        hashed = title_words(title)
        words[row, : len(hashed)] = hashed
    bands[item_rows] = price_bands(pd.to_numeric(entries[schema.PRICE], errors="coerce").to_numpy(np.float64))
    return {"item_words": words, "item_price": bands}


def latest_catalog(store: PartitionStore, day: date) -> pd.DataFrame:
    """The newest complete catalog snapshot on or before ``day`` (empty if there is none)."""
    days = [d for d in store.partitions(layout.RAW_CATALOG) if d <= day]
    for candidate in reversed(days):
        try:
            return read_partition(store, layout.raw_catalog(candidate))
        except StorageError:
            continue
    return pd.DataFrame({schema.ITEM_ID: pd.Series(dtype="string"), schema.TITLE: pd.Series(dtype="string"),
                         schema.PRICE: pd.Series(dtype="float64")})
