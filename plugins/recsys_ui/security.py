"""The response headers of the recsys pages: what a page may load and run under the Airflow UI's origin.

The app's own pages (``render.py``) run no script at all: :data:`PAGE_CSP`. The files under ``/reports``
carry values from upstream data (unexpected values, file names), so besides escaping them when the pages
are built (``recsys.validation.docs``) every report is served sandboxed (CSP ``sandbox`` without
``allow-same-origin``): it runs in an opaque origin and cannot read Airflow's cookies or call its API as
the user. Great Expectations' pages (:data:`DATA_DOCS_CSP`) keep their scripts (jQuery, Bootstrap, Vega
from public CDNs, inline handlers such as "Failed Only") inside that sandbox; our overview and everything
else run none. Content types come from a fixed table (:data:`MEDIA_TYPES`), never from guessing, and HTML
only from the Data Docs site; anything else is a download. ``nosniff`` everywhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

# every response of the app
COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}
_NO_EMBEDS = "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"  # Airflow frames the nav views
# the app's pages and API: inline CSS and SVG, nothing else (no script, no request elsewhere)
PAGE_CSP = f"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; {_NO_EMBEDS}"
# our overview (site/partitions.html), JSON, images, fonts, styles: no script at all, sandboxed
REPORT_CSP = f"sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; {_NO_EMBEDS}"
# what Great Expectations 1.x's pages load (render/view/templates: js_script_imports.j2, page.j2,
# index_page.j2, the default styles); tests/unit/ui/test_ui_security.py checks it against a built page
GX_SCRIPTS = (
    "https://cdn.jsdelivr.net/npm/vega@5",
    "https://cdn.jsdelivr.net/npm/vega-lite@5",
    "https://cdn.jsdelivr.net/npm/vega-embed@6",
    "https://code.jquery.com/jquery-3.7.1.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js",
)
GX_STYLES = ("https://cdn.jsdelivr.net", "https://cdnjs.cloudflare.com", "https://maxcdn.bootstrapcdn.com",
             "https://unpkg.com")
GX_IMAGES = ("https://great-expectations-web-assets.s3.us-east-2.amazonaws.com",)
GX_FONTS = ("https://cdnjs.cloudflare.com",)  # Font Awesome's webfonts
DATA_DOCS_CSP = (
    "sandbox allow-scripts; default-src 'none'; "
    f"script-src 'unsafe-inline' {' '.join(GX_SCRIPTS)}; "
    f"style-src 'self' 'unsafe-inline' {' '.join(GX_STYLES)}; "
    f"img-src 'self' data: {' '.join(GX_IMAGES)}; font-src 'self' data: {' '.join(GX_FONTS)}; {_NO_EMBEDS}"
)

# the only content types a report is served with (by file name ending); HTML only inside the site
MEDIA_TYPES = {
    ".json": "application/json", ".css": "text/css; charset=utf-8", ".csv": "text/csv; charset=utf-8",
    ".txt": "text/plain; charset=utf-8", ".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg", ".ico": "image/x-icon", ".svg": "image/svg+xml", ".otf": "font/otf",
    ".ttf": "font/ttf", ".woff": "font/woff", ".woff2": "font/woff2",
}
HTML = "text/html; charset=utf-8"
DOWNLOAD = "application/octet-stream"
SITE_PREFIX = "site/"  # the Data Docs site under reports/validation/
# our overview page in it (recsys.validation.docs.OVERVIEW_FILE; not imported: that pulls in pandas)
OVERVIEW_FILE = "partitions.html"


def report_headers(relative: str) -> tuple[str, dict[str, str]]:
    """The media type and headers of the report file ``reports/validation/<relative>`` (a checked path)."""
    name = relative.rsplit("/", 1)[-1].lower()
    headers = dict(COMMON_HEADERS, **{"Referrer-Policy": "no-referrer"})  # nothing of Airflow's URLs to CDNs
    if relative.startswith(SITE_PREFIX) and name.endswith(".html"):
        ours = relative == f"{SITE_PREFIX}{OVERVIEW_FILE}"
        return HTML, headers | {"Content-Security-Policy": REPORT_CSP if ours else DATA_DOCS_CSP}
    headers["Content-Security-Policy"] = REPORT_CSP
    suffix = name[name.rfind("."):] if "." in name else ""
    if suffix in MEDIA_TYPES:
        return MEDIA_TYPES[suffix], headers
    return DOWNLOAD, headers | {"Content-Disposition": "attachment"}


def install(app: FastAPI) -> None:
    """Give every response of ``app`` :data:`COMMON_HEADERS` and, unless its route set one, :data:`PAGE_CSP`."""

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        for name, value in COMMON_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        return response
