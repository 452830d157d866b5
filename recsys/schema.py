"""The canonical event and catalog schemas: column names, types and allowed values, in one place."""

from __future__ import annotations

# --- events: raw/events/dt=YYYY-MM-DD/ ---
EVENT_ID = "event_id"
EVENT_TIME = "event_time"  # UTC, timezone-aware
USER_ID = "user_id"
ITEM_ID = "item_id"
EVENT_TYPE = "event_type"
QUANTITY = "quantity"
PRICE = "price"
SESSION_ID = "session_id"  # optional
COUNTRY = "country"  # optional

EVENT_TYPES = ("view", "add_to_cart", "purchase")

EVENT_COLUMNS = (EVENT_ID, EVENT_TIME, USER_ID, ITEM_ID, EVENT_TYPE, QUANTITY, PRICE, SESSION_ID, COUNTRY)
REQUIRED_EVENT_COLUMNS = EVENT_COLUMNS[:7]
# pandas dtypes of the canonical events as written to parquet
EVENT_DTYPES = {
    EVENT_ID: "string",
    EVENT_TIME: "datetime64[ns, UTC]",
    USER_ID: "string",
    ITEM_ID: "string",
    EVENT_TYPE: "string",
    QUANTITY: "int64",
    PRICE: "float64",
    SESSION_ID: "string",
    COUNTRY: "string",
}

# --- catalog: raw/catalog/dt=YYYY-MM-DD/ (a full snapshot per day) ---
TITLE = "title"
CATEGORY = "category"  # optional
AVAILABLE = "available"
CATALOG_COLUMNS = (ITEM_ID, TITLE, CATEGORY, PRICE, AVAILABLE)
CATALOG_DTYPES = {
    ITEM_ID: "string",
    TITLE: "string",
    CATEGORY: "string",
    PRICE: "float64",
    AVAILABLE: "bool",
}

# --- training examples: features/dt=YYYY-MM-DD/ ---
USER_ROW = "user_row"
ITEM_ROW = "item_row"
SPLIT = "split"  # train | holdout
EXAMPLE_COLUMNS = (USER_ID, ITEM_ID, USER_ROW, ITEM_ROW, SPLIT)
