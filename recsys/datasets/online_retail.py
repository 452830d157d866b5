"""UCI Online Retail -> canonical events and catalog.

Mapping (one invoice line -> one ``purchase`` event):

=============  =======================================================================
canonical      Online Retail
=============  =======================================================================
event_id       ``<InvoiceNo>-<n>``, n = the line's position within its invoice (0-based)
event_time     ``InvoiceDate`` (local UK time, taken as UTC)
user_id        ``CustomerID`` without its ``.0`` suffix
item_id        ``StockCode``
event_type     ``purchase``
quantity       ``Quantity``
price          ``UnitPrice``
session_id     ``InvoiceNo``
country        ``Country``
=============  =======================================================================

Lines that are not a customer's purchase are not events of the canonical schema and are excluded,
each counted in :class:`MappingStats`: guest checkouts (no ``CustomerID``), cancellations
(``InvoiceNo`` starting with ``C``) and other non-positive quantities (stock adjustments).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from recsys import schema
from recsys.errors import RecsysError

SOURCE_COLUMNS = (
    "InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country",
)
BUNDLE = Path(__file__).parent / "data" / "online_retail.parquet"


class SourceError(RecsysError, ValueError):
    """The Online Retail source is missing, malformed, or has no data for a requested day."""


@dataclass(frozen=True)
class MappingStats:
    """What happened to each source line of one day (the counts add up to ``source_rows``)."""

    source_rows: int
    events: int
    guest_checkouts: int
    cancellations: int
    non_positive_quantity: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def load_source(source: Path | None = None) -> pd.DataFrame:
    """All invoice lines as text columns, plus a ``day`` column (date of ``InvoiceDate``).

    ``source`` is a directory of per-day CSV files (``YYYY-MM-DD.csv``) or a parquet bundle; None
    means the bundle shipped with the package.
    """
    path = Path(source) if source is not None else BUNDLE
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        if not files:
            raise SourceError(f"{path} holds no *.csv files of Online Retail")
        frames = [pd.read_csv(f, dtype=str, keep_default_na=False) for f in files]
        raw = pd.concat(frames, ignore_index=True)
    elif path.is_file():
        raw = pd.read_parquet(path)
    else:
        raise SourceError(f"Online Retail source {path} does not exist")
    missing = [c for c in SOURCE_COLUMNS if c not in raw.columns]
    if missing:
        raise SourceError(f"{path} lacks the Online Retail columns {missing}")
    if raw.empty:
        raise SourceError(f"{path} has the Online Retail columns but no invoice lines")
    raw = raw[list(SOURCE_COLUMNS)].astype(str)
    raw["day"] = pd.to_datetime(raw["InvoiceDate"].str[:10], format="%Y-%m-%d").dt.date
    return raw


def source_days(raw: pd.DataFrame) -> list[date]:
    """The days that have at least one invoice line, ascending."""
    return sorted(raw["day"].unique())


def to_events(lines: pd.DataFrame) -> tuple[pd.DataFrame, MappingStats]:
    """Map invoice lines (of one day, in file order) to canonical events; see the module docstring."""
    lines = lines.reset_index(drop=True)
    position = lines.groupby("InvoiceNo", sort=False).cumcount()
    quantity = pd.to_numeric(lines["Quantity"], errors="coerce")
    guest = lines["CustomerID"].str.strip() == ""
    cancelled = ~guest & lines["InvoiceNo"].str.startswith("C")
    non_positive = ~guest & ~cancelled & ~(quantity > 0)
    keep = ~(guest | cancelled | non_positive)
    kept = lines[keep]
    events = pd.DataFrame(
        {
            schema.EVENT_ID: kept["InvoiceNo"] + "-" + position[keep].astype(str),
            schema.EVENT_TIME: pd.to_datetime(kept["InvoiceDate"]).dt.tz_localize("UTC"),
            schema.USER_ID: kept["CustomerID"].str.replace(r"\.0$", "", regex=True),
            schema.ITEM_ID: kept["StockCode"],
            schema.EVENT_TYPE: "purchase",
            schema.QUANTITY: quantity[keep].astype("int64"),
            schema.PRICE: pd.to_numeric(kept["UnitPrice"]).astype("float64"),
            schema.SESSION_ID: kept["InvoiceNo"],
            schema.COUNTRY: kept["Country"],
        }
    ).astype(schema.EVENT_DTYPES)
    stats = MappingStats(
        source_rows=len(lines),
        events=len(events),
        guest_checkouts=int(guest.sum()),
        cancellations=int(cancelled.sum()),
        non_positive_quantity=int(non_positive.sum()),
    )
    return events.reset_index(drop=True), stats


def catalog_snapshot(lines: pd.DataFrame) -> pd.DataFrame:
    """The item catalog as known from ``lines`` (all lines up to a day): one row per ``StockCode``.

    The title is the item's latest non-blank ``Description`` and the price its latest ``UnitPrice``;
    every item is ``available`` (the source has no delistings). Only sale lines count (guest checkouts
    included): cancellations, stock adjustments and accounting lines with a negative price (such as
    "Adjust bad debt") say nothing about an item's price.
    """
    quantity = pd.to_numeric(lines["Quantity"], errors="coerce")
    price = pd.to_numeric(lines["UnitPrice"], errors="coerce")
    sales = lines[~lines["InvoiceNo"].str.startswith("C") & (quantity > 0) & (price >= 0)]
    ordered = sales.sort_values("InvoiceDate", kind="stable")
    titled = ordered[ordered["Description"].str.strip() != ""]
    titles = titled.groupby("StockCode")["Description"].last()
    prices = pd.to_numeric(ordered["UnitPrice"], errors="coerce")
    last_price = prices.groupby(ordered["StockCode"]).last()
    catalog = pd.DataFrame({schema.PRICE: last_price})
    catalog[schema.TITLE] = titles.reindex(catalog.index).fillna("").str.strip()
    catalog[schema.CATEGORY] = pd.NA
    catalog[schema.AVAILABLE] = True
    catalog = catalog.rename_axis(schema.ITEM_ID).reset_index()
    return catalog[list(schema.CATALOG_COLUMNS)].astype(schema.CATALOG_DTYPES)
