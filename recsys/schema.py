"""The canonical event and catalog schemas: column names, types and allowed values, in one place."""

from __future__ import annotations

import re

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

# --- ids: one rule for validation (expectations/*.json), the vocabularies and the service ---
# An id is 1..MAX_ID_LENGTH characters (code points) with no control, format, private-use or separator
# character other than the ordinary space (Unicode categories Cc incl. C1, Cf incl. U+202E and U+200B,
# Co, Zl U+2028, Zp U+2029, Zs but U+0020), no '/' (a path segment of the service's URLs), no space at
# either end, and not only dots ('.' and '..' are dot segments that clients remove from URLs). Such ids
# cannot be typed, shown or sent in a URL unambiguously, and ' 17135' would be another customer than
# '17135'. The class is spelt out (not \p{..}) so Python's re, pydantic's Rust regex and the OpenAPI
# schema read it alike; code points unassigned today (category Cn) are not excluded.
MAX_ID_LENGTH = 64
ID_FORBIDDEN_CHARS = (
    r"\u0000-\u001f\u007f-\u00a0\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u1680\u180e"
    r"\u2000-\u200f\u2028-\u202f\u205f-\u2064\u2066-\u206f\u3000\ue000-\uf8ff\ufeff\ufff9-\ufffb"
    r"\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    r"\U000e0001\U000e0020-\U000e007f\U000f0000-\U000ffffd\U00100000-\U0010fffd/"
)
_ANY = f"[^{ID_FORBIDDEN_CHARS}]"  # an allowed character
_EDGE = f"[^{ID_FORBIDDEN_CHARS} ]"  # allowed at either end
_FIRST = f"[^{ID_FORBIDDEN_CHARS} .]"  # the first character that is not a dot, if it is not a space
# the whole id (anchored; the OpenAPI schema's and the service's ``pattern``); no lookaround, so every
# engine above can run it: leading dots, then a non-dot that is not a space, then anything ending in an
# edge character; or leading dots, a space, then anything ending in an edge character
ID_PATTERN = rf"^(?:\.*{_FIRST}(?:{_ANY}*{_EDGE})?|\.+ {_ANY}*{_EDGE})$"
# what makes an id invalid, for search semantics (Great Expectations' ``..._not_match_regex``): a
# forbidden character, a space at either end, or only dots. Python's ``$`` also matches before a final
# new line, which is itself forbidden, so the search form is exact.
INVALID_ID_REGEX = rf"[{ID_FORBIDDEN_CHARS}]|^ | $|^\.+$"
_ID = re.compile(ID_PATTERN)


def valid_id(text: str, max_length: int = MAX_ID_LENGTH) -> bool:
    """True if ``text`` is an id by the rule above (``max_length``: the longest accepted, in characters)."""
    return 1 <= len(text) <= max_length and _ID.fullmatch(text) is not None
