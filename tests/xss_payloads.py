"""Markup payloads planted in partitions by the Data Docs XSS tests (issue 18 #1), a check of a page, and
the parsed Content-Security-Policy of a response.

Each payload, if it ever ran, sets ``window.__xss`` (or the title): the browser test reads it; the unit test
checks that every payload occurs in a built page only as text. Import as ``from tests.xss_payloads import ...``.
"""

from __future__ import annotations

from datetime import date
from html.parser import HTMLParser

import pandas as pd

MARK = "__xss"
# several vectors: elements, event handlers, attribute breakouts with either quote, javascript: URLs
PAYLOADS = (
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=2">',
    "<svg onload=window.__xss=3>",
    '"><script>window.__xss=4</script>',
    "javascript:window.__xss=5",
    "' onmouseover='window.__xss=6' x='",
    '" autofocus onfocus="window.__xss=7" x="',
    '<a href="javascript:window.__xss=8">click</a>',
    "<iframe srcdoc=\"<script>parent.__xss=9</script>\"></iframe>",
    "</textarea></title></style><script>document.title='__xss10'</script>",
    '<meta http-equiv="refresh" content="0;url=javascript:window.__xss=12">',
)
# a data file's name (no '/' possible): its problem ("cannot be read") goes into the integrity check's page
BAD_FILE = "part-<img src=x onerror=window.__xss=11>.parquet"


def plant(store, day: date, file_day: date) -> None:
    """Events of ``day`` whose ids, event types and catalog values are :data:`PAYLOADS`; an unreadable file with
    a markup name on ``file_day``. Both partitions and ``day``'s catalog are marked complete.
    """
    from recsys import schema
    from recsys.storage import layout

    n = len(PAYLOADS)
    frame = pd.DataFrame({
        schema.EVENT_ID: [f"{day}-{i}" for i in range(n)],
        schema.EVENT_TIME: pd.Timestamp(f"{day} 10:00:00", tz="UTC"),
        schema.USER_ID: list(PAYLOADS),
        schema.ITEM_ID: list(PAYLOADS),
        schema.EVENT_TYPE: list(PAYLOADS),
        schema.QUANTITY: 1,
        schema.PRICE: 2.5,
    }).astype({c: t for c, t in schema.EVENT_DTYPES.items() if c in schema.REQUIRED_EVENT_COLUMNS})
    store.write_parquet(f"{layout.raw_events(day)}/part-00000.parquet", frame)
    store.mark_success(layout.raw_events(day))
    catalog = pd.DataFrame({"item_id": [*PAYLOADS, PAYLOADS[0]], "title": [*PAYLOADS, None],
                            "category": None, "price": 1.0, "available": [*PAYLOADS, "listed"]})
    store.write_parquet(f"{layout.raw_catalog(day)}/part-00000.parquet", catalog)
    store.mark_success(layout.raw_catalog(day))
    store.write_bytes(f"{layout.raw_events(file_day)}/{BAD_FILE}", b"not parquet")
    store.mark_success(layout.raw_events(file_day))


class _Markup(HTMLParser):
    """Where :data:`MARK` occurs: as text, or as markup (a tag or attribute name, attribute value, script)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.executable: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if MARK in name or MARK in (value or "") or (value or "").strip().lower().startswith("javascript:"):
                self.executable.append(f"<{tag} {name}={value!r}>")
        if tag in ("script", "style", "iframe", "textarea", "title", "noscript", "template"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if MARK not in data:
            return
        if self.stack and self.stack[-1] in ("script", "iframe", "template", "style"):
            self.executable.append(f"<{self.stack[-1]}> {data[:120]!r}")
        else:
            self.text.append(data)


def markup_from_data(page: str) -> tuple[list[str], str]:
    """(the payload marks found as markup: tags, attributes, script bodies; every text that holds a mark)."""
    parser = _Markup()
    parser.feed(page)
    parser.close()
    return parser.executable, "\n".join(parser.text)


def csp_directives(csp: str) -> dict[str, list[str]]:
    """A Content-Security-Policy header as directive name -> its values."""
    out = {}
    for part in csp.split(";"):
        name, *values = part.split()
        out[name] = values
    return out
