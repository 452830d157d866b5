"""The FastAPI app behind the recsys pages; the Airflow API server mounts it under ``/recsys``.

Routes (relative to the mount point):

- ``/registry`` (``?date=YYYY-MM-DD`` and/or ``?version=N`` highlight one partition or version): the model
  registry page (champion, plot, daily decisions, full retrains, versions, history); ``/api/registry`` is the
  same data as JSON.
- ``/validation``: the data-health trend and every partition's validation status; ``/validation/{date}``: one
  partition's checks; ``/api/validation/trend`` (``?format=csv``): the trend's numbers per date.
- ``/reports/{path}``: files under ``reports/validation/`` in the store (the Great Expectations Data Docs
  site, ``site/partitions.html``, ``dt=D/summary.json``), so the report links work from the browser.

Every response carries the headers of ``security.py`` (strict CSP; the reports sandboxed, ``nosniff``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from recsys import registry, report
from recsys.storage import PartitionStore, StorageError, layout
from recsys.validation import health
from recsys_ui import render, security

REPORTS_ROOT = layout.VALIDATION_REPORTS
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=@+-]*")


def report_path(relative: str) -> str:
    """The store path of ``reports/validation/<relative>``; :class:`ValueError` unless it stays inside.

    Every segment must be a plain name (letters, digits, ``_.=@+-``, not starting with a dot), so ``..``,
    absolute paths, backslashes, empty segments and hidden or temporary entries are refused.
    """
    segments = relative.split("/")
    if not relative or not all(_SEGMENT.fullmatch(s) for s in segments) or any(s in (".", "..") for s in segments):
        raise ValueError(f"not a report path: {relative!r}")
    return f"{REPORTS_ROOT}/{relative}"


def parse_day(text: str) -> str:
    """``YYYY-MM-DD`` normalised; :class:`ValueError` otherwise."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError(f"not a date (YYYY-MM-DD): {text!r}")
    return date.fromisoformat(text).isoformat()


def create_app(
    open_store: Callable[[], PartitionStore],
    metric: Callable[[], str],
    dependencies: Sequence[Any] = (),
) -> FastAPI:
    """The app. ``open_store`` gives the pipeline's partition store, ``metric`` the deciding metric's name
    (``recall@K``); ``dependencies`` guard every route (the plugin passes Airflow's authentication).
    """
    app = FastAPI(
        title="recsys: model registry and validation reports",
        dependencies=list(dependencies),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def store_or_503() -> PartitionStore:
        try:
            return open_store()
        except (StorageError, ValueError) as err:  # ValueError: recsys.config's errors on bad settings
            raise HTTPException(503, f"the partition store cannot be opened: {err}") from err

    app.exception_handler(HTTPException)(_html_errors)
    security.install(app)
    _registry_routes(app, store_or_503, metric)
    _validation_routes(app, store_or_503)
    _report_routes(app, store_or_503)
    return app


def _base(request: Request) -> str:
    """Where the app is mounted (``/recsys`` under Airflow's base path)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


async def _html_errors(request: Request, exc: HTTPException) -> Response:
    """Errors as a page for a browser, as JSON for the API and for clients that do not ask for HTML."""
    if "/api/" in request.url.path or "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
    hint = " Log in to Airflow first." if exc.status_code in (401, 403) else ""
    return HTMLResponse(
        render.message_page(f"Error {exc.status_code}", _base(request), f"{exc.detail}.{hint}"),
        status_code=exc.status_code,
    )


def _registry_routes(app: FastAPI, store_or_503: Callable[[], PartitionStore], metric: Callable[[], str]) -> None:
    """``/`` (to the registry), ``/api/registry`` and ``/registry``."""

    @app.get("/", include_in_schema=False)
    def index(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{_base(request)}/registry")

    def registry_data() -> dict[str, Any]:
        store = store_or_503()
        try:
            reg = registry.load(store)
        except StorageError as err:
            raise HTTPException(503, f"the registry cannot be read: {err}") from err
        name = metric()
        return {
            "metric": name,
            "champion": report.champion_info(reg),
            "versions": report.version_rows(reg, name),
            "decisions": report.decision_rows(reg, name),
            "retrains": report.retrain_rows(reg, name),
            "history": list(reg.get("history", [])),
        }

    @app.get("/api/registry")
    def registry_json() -> dict[str, Any]:
        return registry_data()

    @app.get("/registry", response_class=HTMLResponse)
    def registry_page(
        request: Request,
        day: str | None = Query(None, alias="date", description="highlight this partition date (YYYY-MM-DD)"),
        version: int | None = Query(None, ge=1, description="highlight this version"),
    ) -> HTMLResponse:
        try:
            focus_date = parse_day(day) if day else None
        except ValueError as err:
            raise HTTPException(422, str(err)) from err
        data = registry_data()
        return HTMLResponse(render.registry_page(
            _base(request), data["metric"], data["champion"], data["versions"], data["decisions"], data["history"],
            focus_date=focus_date, focus_version=version, retrains=data["retrains"],
        ))


def _validation_routes(app: FastAPI, store_or_503: Callable[[], PartitionStore]) -> None:
    """``/validation``, ``/api/validation/trend`` and ``/validation/{date}``."""

    @app.get("/validation", response_class=HTMLResponse)
    def validation_list(request: Request) -> HTMLResponse:
        store = store_or_503()
        return HTMLResponse(render.validation_list_page(_base(request), report.validation_rows(store),
                                                        health.trend_rows(store)))

    @app.get("/api/validation/trend")
    def validation_trend(
        output: str = Query("json", alias="format", pattern="^(json|csv)$",
                            description="json (one object per date) or csv (a header and one line per date)"),
    ) -> Response:
        rows = health.trend_rows(store_or_503())
        if output == "csv":
            return Response(health.rows_csv(rows), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": 'attachment; filename="validation-trend.csv"'})
        return Response(health.rows_json(rows), media_type="application/json")

    @app.get("/validation/{day}", response_class=HTMLResponse)
    def validation_partition(request: Request, day: str) -> HTMLResponse:
        try:
            day = parse_day(day)
        except ValueError as err:
            raise HTTPException(404, str(err)) from err
        store = store_or_503()
        row = next((r for r in report.validation_rows(store) if r["date"] == day), None)
        if row is None:
            raise HTTPException(404, f"no partition {day} has landed or been validated")
        return HTMLResponse(render.validation_partition_page(_base(request), day, row["status"], row["summary"]))


def _report_routes(app: FastAPI, store_or_503: Callable[[], PartitionStore]) -> None:
    """``/reports/{path}``: the files under ``reports/validation/`` (confined there, sandboxed: ``security.py``)."""

    @app.get("/reports/{relative:path}")
    def report_file(relative: str) -> Response:
        try:
            path = report_path(relative)
        except ValueError as err:
            raise HTTPException(404, str(err)) from err
        store = store_or_503()
        try:
            data = store.read_bytes(path)
        except StorageError as err:  # missing, or a directory
            raise HTTPException(404, f"{relative} is not in the validation reports") from err
        media_type, headers = security.report_headers(relative)
        return Response(data, media_type=media_type, headers=headers)
