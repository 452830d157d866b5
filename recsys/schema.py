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
# An id is 1..MAX_ID_LENGTH characters (code points) of the Basic Multilingual Plane (U+0000..U+FFFF)
# with no control, format, private-use, surrogate or separator character other than the ordinary space
# (Unicode categories Cc incl. C1, Cf incl. U+202E and U+200B, Co, Cs, Zl U+2028, Zp U+2029, Zs but
# U+0020), no '/' (a path segment of the service's URLs), no space at either end, and not only dots
# ('.' and '..' are dot segments that clients remove from URLs). Such ids cannot be typed, shown or sent
# in a URL unambiguously, and ' 17135' would be another customer than '17135'. Code points unassigned
# today (category Cn) are not excluded.
# Characters beyond the BMP (emoji, U+E0041 tags, plane 15-16 private use) are refused as a whole: the
# service's OpenAPI ``pattern`` is run by pydantic's Rust regex (code points; no surrogate escapes), by
# Python's re, and by JavaScript (Swagger UI: ``new RegExp(p)`` reads UTF-16 code units; JSON Schema
# validators: with the 'u' flag, code points), and no astral class can be written alike for all of them.
# So the pattern is an allowed-character class of BMP ranges spelt with \uXXXX escapes only (not \p{..},
# not \U), which every one of those engines reads the same (tests/unit/test_id_rule.py runs it in node).
MAX_ID_LENGTH = 64
# the forbidden characters of the BMP, as inclusive (first, last) code point ranges
ID_FORBIDDEN_RANGES = (
    (0x0000, 0x001F), (0x002F, 0x002F), (0x007F, 0x00A0), (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C),
    (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x1680, 0x1680), (0x180E, 0x180E),
    (0x2000, 0x200F), (0x2028, 0x202F), (0x205F, 0x2064), (0x2066, 0x206F), (0x3000, 0x3000),
    (0xD800, 0xDFFF), (0xE000, 0xF8FF), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB),
)


def _allowed_class(*also_forbidden: str) -> str:
    """The BMP minus the forbidden ranges (and ``also_forbidden``), as a ``[...]`` of \\uXXXX ranges."""
    forbidden = sorted([*ID_FORBIDDEN_RANGES, *((ord(c), ord(c)) for c in also_forbidden)])
    parts, start = [], 0
    for first, last in forbidden:
        if first > start:
            parts.append(rf"\u{start:04x}" if first - 1 == start else rf"\u{start:04x}-\u{first - 1:04x}")
        start = max(start, last + 1)
    if start <= 0xFFFF:
        parts.append(rf"\u{start:04x}-\uffff")
    return "[" + "".join(parts) + "]"


_ANY = _allowed_class()  # an allowed character
_EDGE = _allowed_class(" ")  # allowed at either end
_FIRST = _allowed_class(" ", ".")  # the first character that is not a dot, if it is not a space
# the whole id (anchored; the OpenAPI schema's and the service's ``pattern``); no lookaround, so every
# engine above can run it: leading dots, then a non-dot that is not a space, then anything ending in an
# edge character; or leading dots, a space, then anything ending in an edge character
ID_PATTERN = rf"^(?:\.*{_FIRST}(?:{_ANY}*{_EDGE})?|\.+ {_ANY}*{_EDGE})$"
# what makes an id invalid, for search semantics (Great Expectations' ``..._not_match_regex``, Python's
# re): a character outside the allowed class, a space at either end, or only dots. Python's ``$`` also
# matches before a final new line, which is itself forbidden, so the search form is exact.
INVALID_ID_REGEX = rf"[^{_ANY[1:-1]}]|^ | $|^\.+$"
_ID = re.compile(ID_PATTERN)


def valid_id(text: str, max_length: int = MAX_ID_LENGTH) -> bool:
    """True if ``text`` is an id by the rule above (``max_length``: the longest accepted, in characters)."""
    return 1 <= len(text) <= max_length and _ID.fullmatch(text) is not None
