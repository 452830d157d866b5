"""The recommendation service: a FastAPI app over the champion, with hot reload and metrics.

Endpoints (OpenAPI schema at ``/openapi.json``, interactive docs at ``/docs``):

- ``GET /recommendations/{user_id}?k=10&exclude_purchased=false`` - top-k available items for a user.
  A user the serving version cannot embed (never seen, or first seen after it was trained) gets the
  most bought available items instead, with ``"fallback": "popular"`` and ``"known_user": false``.
  When the gate measured trailing-week popularity ahead of the served version (its decision's
  ``popularity_fallback``; ``RECSYS_POPULARITY_FALLBACK``), every customer gets popularity's ranking, with
  ``"fallback": "popularity"`` (:mod:`recsys.serving.popularity`).
- ``GET /items/{item_id}/similar?k=10`` - the available items closest (cosine) to an item; 404 if the
  serving version does not know the item.
- With live state (``RECSYS_SERVE_LIVE=1``, :mod:`recsys.serving.live`) answers use events seconds old: the
  customer's recent items and repeat term, items gone out of stock; ``state_as_of`` and ``last_event_at``
  say how fresh that is, and a new customer is ranked from their first events.
- ``GET /healthz`` (the process is up), ``GET /readyz`` (a version is loaded; 503 until then; shows
  a failed load of a newer champion), ``GET /version`` (what is served), ``GET /metrics`` (Prometheus).

Every answer names the version it came from; one request is answered by exactly one version (see
:mod:`recsys.serving.model_holder`). Input is checked before any work: ``k`` in 1..1000, ids by the
rule of :func:`recsys.schema.valid_id` (the one validation applies to the data; its ``pattern`` is in
the OpenAPI schema); violations are 422 answers ``{"detail": "<message naming the field>"}``. URL,
header and body sizes are bounded (414, 431, 413: :mod:`recsys.serving.limits`; run the app with
``uvicorn.run(app, **bounded_http.server_options())`` so the server bounds them while reading, as
``recsys serve`` does).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from recsys import schema
from recsys.serving.limits import RequestLimits
from recsys.serving.live import LiveConfig, LiveFollower
from recsys.serving.model_holder import NO_LIVE, LoadedVersion, ModelHolder
from recsys.storage import PartitionStore

MAX_K = 1000
MAX_ID_LENGTH = schema.MAX_ID_LENGTH
ID_RULE = ("1..{n} characters of the Basic Multilingual Plane without control, format or separator characters "
           "(but inner spaces), without '/', and not only dots")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


# --- response models (they document the API in the OpenAPI schema) ------------------------------------
class ScoredItem(BaseModel):
    item_id: str
    title: str
    score: float = Field(description="dot product of query and item (model), number of buyers ('popular'), or "
                                     "purchases in the trailing week ('popularity')")


class RecommendationsOut(BaseModel):
    user_id: str
    version: int = Field(description="the model version that produced every item of this answer")
    known_user: bool
    fallback: str | None = Field(description="null: ranked by the model; 'popular': unknown user, most bought items; "
                                             "'popularity': the gate measured trailing-week popularity ahead of this "
                                             "version, so it ranks every customer")
    exclude_purchased: bool
    items: list[ScoredItem]
    state_as_of: str | None = Field(
        default=None, description="live state (RECSYS_SERVE_LIVE): every event accepted before this time is in "
                                  "the answer; absent without live state (the history snapshot alone), null "
                                  "until the live state first caught up with the topics")
    last_event_at: str | None = Field(
        default=None, description="event time of this customer's newest event applied live (null: none since the "
                                  "snapshot)")
    snapshot_day: str | None = Field(default=None, description="the history snapshot the state starts from")


class SimilarOut(BaseModel):
    item_id: str
    title: str
    version: int
    items: list[ScoredItem]


class ErrorOut(BaseModel):
    detail: str = Field(description="what was wrong (input errors name the field) and what to do")


ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorOut, "description": "invalid input; the message names the field"},
    503: {"model": ErrorOut, "description": "no model version is loaded yet"},
}


class VersionOut(BaseModel):
    version: int
    items: int
    index_sha256: str
    catalog_date: str | None
    search: str = Field(description="'exact' (numpy) or 'hnsw(ef_search=...)' for large catalogs")
    fallback: str | None = Field(default=None, description="'popularity': every answer is trailing-week "
                                                            "popularity's ranking (the version's gate decision)")
    loaded_at: str


# --- metrics, Prometheus text format (no client library: prometheus_client is not a dependency) ------
class Metrics:
    """Request counters and latency histograms per route, exposed in the Prometheus text format 0.0.4."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, list[int]] = {}  # route -> cumulative-ready bucket counts (+Inf last)
        self.latency_sum: dict[str, float] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, route, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            buckets = self.latency.setdefault(route, [0] * (len(LATENCY_BUCKETS) + 1))
            buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self.latency_sum[route] = self.latency_sum.get(route, 0.0) + seconds

    def render(self, holder: ModelHolder) -> str:
        out = [
            "# HELP recsys_requests_total HTTP requests answered, by method, route and status.",
            "# TYPE recsys_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), n in sorted(self.requests.items()):
                out.append(f'recsys_requests_total{{method="{method}",route="{_esc(route)}",status="{status}"}} {n}')
            out += ["# HELP recsys_request_duration_seconds Time to answer a request, by route.",
                    "# TYPE recsys_request_duration_seconds histogram"]
            for route, buckets in sorted(self.latency.items()):
                total = 0
                for bound, n in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
                    total += n
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    out.append(f'recsys_request_duration_seconds_bucket{{route="{_esc(route)}",le="{le}"}} {total}')
                out.append(f'recsys_request_duration_seconds_sum{{route="{_esc(route)}"}} {self.latency_sum[route]}')
                out.append(f'recsys_request_duration_seconds_count{{route="{_esc(route)}"}} {total}')
        cur = holder.current
        failure = holder.failure
        out += [
            "# HELP recsys_model_version The model version being served (-1: none loaded).",
            "# TYPE recsys_model_version gauge",
            f"recsys_model_version {cur.version if cur else -1}",
            "# HELP recsys_model_info The served version and its serving index.",
            "# TYPE recsys_model_info gauge",
        ]
        if cur is not None:
            out.append(f'recsys_model_info{{version="{cur.version}",index_sha256="{cur.index_sha256[:16]}",'
                       f'catalog_date="{_esc(str(cur.index_meta.get("catalog_date") or ""))}"}} 1')
        out += [
            "# HELP recsys_champion_version The champion in the registry at the last poll (-1: none).",
            "# TYPE recsys_champion_version gauge",
            f"recsys_champion_version {holder.champion if holder.champion is not None else -1}",
            "# HELP recsys_index_items Items the served version may recommend.",
            "# TYPE recsys_index_items gauge",
            f"recsys_index_items {cur.items if cur else 0}",
            "# HELP recsys_model_loads_total Version loads, by result.",
            "# TYPE recsys_model_loads_total counter",
            *(f'recsys_model_loads_total{{result="{r}"}} {n}' for r, n in sorted(holder.loads.items())),
            "# HELP recsys_model_swaps_total Times a newly loaded version replaced the served one.",
            "# TYPE recsys_model_swaps_total counter",
            f"recsys_model_swaps_total {holder.swaps}",
            "# HELP recsys_model_load_failing 1 while the champion failed to load and an older version serves.",
            "# TYPE recsys_model_load_failing gauge",
            f"recsys_model_load_failing {1 if failure else 0}",
        ]
        if failure is not None:
            out += ["# HELP recsys_model_load_failure_info The champion version that failed to load.",
                    "# TYPE recsys_model_load_failure_info gauge",
                    f'recsys_model_load_failure_info{{version="{failure.version}"}} 1']
        return "\n".join(out) + "\n"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _MetricsMiddleware:
    """Plain ASGI middleware (cheaper than BaseHTTPMiddleware): time and count every HTTP request."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope.get("method", ""), name, status, time.perf_counter() - started)


# --- input checks ------------------------------------------------------------------------------------
def _problem(err: Any, max_id_length: int) -> str:
    """One readable line for a pydantic error: ``field: message`` (an id's rule rather than its regex)."""
    field = ".".join(str(p) for p in err["loc"][1:]) or str(err["loc"][0])
    if err.get("type") == "string_pattern_mismatch":
        return f"{field}: not a valid id ({ID_RULE.format(n=max_id_length)}), got {err.get('input')!r}"
    return f"{field}: {err['msg']}"


K = Annotated[int, Query(ge=1, le=MAX_K, description=f"how many items, 1..{MAX_K}")]


def create_app(store: PartitionStore, poll_seconds: float = 2.0, retry_seconds: float = 30.0,
               holder: ModelHolder | None = None, watch: bool = True, ann_min_items: int | None = None,
               max_id_length: int = MAX_ID_LENGTH, live: LiveConfig | None = None,
               popularity_fallback: bool = True) -> FastAPI:
    """The service over ``store``. With ``watch`` the registry watcher runs while the app is up
    (started by the ASGI lifespan); without it, call ``app.state.holder.poll()`` to (re)load.
    Catalogs of at least ``ann_min_items`` items are searched with an HNSW index (None: always exact).
    ``max_id_length``: the longest id served (validation's ``RECSYS_VALIDATION_MAX_ID_LENGTH``).
    ``live``: follow the events and catalog topics (:mod:`recsys.serving.live`; ``RECSYS_SERVE_LIVE``).
    ``popularity_fallback``: serve popularity where the version's gate decision calls for it
    (``RECSYS_POPULARITY_FALLBACK``; :mod:`recsys.serving.popularity`)."""
    holder = holder or ModelHolder(store, poll_seconds=poll_seconds, retry_seconds=retry_seconds,
                                   ann_min_items=ann_min_items, popularity_fallback=popularity_fallback)
    follower = LiveFollower(live, holder) if live is not None else None
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if watch:
            holder.start()
        if follower is not None:
            follower.start()
        try:
            yield
        finally:
            if follower is not None:
                follower.stop()
            holder.stop()

    app = FastAPI(
        title="recsys recommendation service",
        version="1",
        description=__doc__,
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.live = follower
    app.add_middleware(RequestLimits)  # URL, header and body sizes (see recsys.serving.limits)
    app.add_middleware(_MetricsMiddleware, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [_problem(err, max_id_length) for err in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": "; ".join(problems)})

    _add_recommendation_routes(app, holder, max_id_length, follower)
    _add_operation_routes(app, holder, metrics, follower)
    return app


def _serving(holder: ModelHolder) -> LoadedVersion:
    """The version being served, else a 503 saying why none is."""
    current = holder.current
    if current is None:
        status = holder.status()
        why = status["load_error"]["error"] if status["load_error"] else (
            "no champion is deployed yet" if holder.champion is None else "the champion is still loading")
        raise HTTPException(status_code=503, detail=f"no model version is loaded: {why}")
    return current


def _add_recommendation_routes(app: FastAPI, holder: ModelHolder, max_id_length: int,
                               follower: LiveFollower | None) -> None:
    """GET /recommendations/{user_id} and /items/{item_id}/similar."""
    rule = ID_RULE.format(n=max_id_length)
    user_id_param = Path(min_length=1, max_length=max_id_length, pattern=schema.ID_PATTERN,
                         description=f"the shop's customer id: {rule}")
    item_id_param = Path(min_length=1, max_length=max_id_length, pattern=schema.ID_PATTERN,
                         description=f"the shop's item id (StockCode): {rule}")

    @app.get("/recommendations/{user_id}", response_model=RecommendationsOut, tags=["recommendations"],
             responses=ERRORS, response_model_exclude_unset=True)
    def recommendations(user_id: str = user_id_param, k: K = 10,
                        exclude_purchased: bool = False) -> RecommendationsOut:
        """Top-``k`` available items for a user, best first; unknown users get the most bought items."""
        lv = _serving(holder)  # one reference for the whole request: a swap cannot mix versions
        inputs, state, as_of = NO_LIVE, None, None
        if follower is not None:
            as_of = follower.state.as_of  # read first: the state below is at least this fresh
            inputs, state = follower.state.inputs(user_id)
        rec = lv.recommend(user_id, k, exclude_purchased, inputs)
        # the freshness fields are set (and so shown) only with live state
        fresh = {} if follower is None else {
            "state_as_of": _iso(as_of), "last_event_at": _iso(state.last_event_at) if state is not None else None,
            "snapshot_day": lv.snapshot_day.isoformat() if lv.snapshot_day else None}
        return RecommendationsOut(
            user_id=user_id, version=rec.version, known_user=rec.known_user, fallback=rec.fallback,
            exclude_purchased=exclude_purchased,
            items=[ScoredItem(item_id=i, title=lv.title(i), score=s) for i, s in zip(rec.item_ids, rec.scores,
                                                                                    strict=True)],
            **fresh,
        )

    @app.get("/items/{item_id}/similar", response_model=SimilarOut, tags=["recommendations"],
             responses={**ERRORS, 404: {"model": ErrorOut, "description": "the version does not know the item"}})
    def similar(item_id: str = item_id_param, k: K = 10) -> SimilarOut:
        """The ``k`` available items most similar (cosine of item embeddings) to an item, itself excluded."""
        lv = _serving(holder)
        found = lv.similar(item_id, k, follower.state.unavailable if follower is not None else ())
        if found is None:
            raise HTTPException(status_code=404, detail=f"item {item_id!r} is not known to model version {lv.version}")
        ids, scores = found
        return SimilarOut(item_id=item_id, title=lv.title(item_id), version=lv.version,
                          items=[ScoredItem(item_id=i, title=lv.title(i), score=s)
                                 for i, s in zip(ids, scores, strict=True)])


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if when is not None else None


def _add_operation_routes(app: FastAPI, holder: ModelHolder, metrics: Metrics,
                          follower: LiveFollower | None) -> None:
    """GET /healthz, /readyz, /version and /metrics."""

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "no version loaded yet"}})
    def readyz() -> JSONResponse:
        """Readiness: 200 once a version is loaded. ``load_error`` shows a champion that failed to load
        (the older version keeps serving); ``champion`` is what the registry names."""
        status = holder.status()
        if follower is not None:
            status["live"] = follower.status()
        return JSONResponse(status_code=200 if status["ready"] else 503, content=status)

    @app.get("/version", response_model=VersionOut, tags=["operations"], responses={503: ERRORS[503]})
    def version() -> VersionOut:
        """The version being served and its serving index."""
        return VersionOut(**_serving(holder).describe())

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    def prometheus() -> PlainTextResponse:
        """Prometheus metrics: requests, latency histograms, served and champion versions, load results."""
        text = metrics.render(holder) + (_live_metrics(follower) if follower is not None else "")
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


def _live_metrics(follower: LiveFollower) -> str:
    """The live state's counters and its age, in the Prometheus text format."""
    status = follower.status()
    as_of = follower.state.as_of
    age = (datetime.now(UTC) - as_of).total_seconds() if as_of is not None else -1
    out = ["# HELP recsys_live_events_total Topic messages the live state saw, by result.",
           "# TYPE recsys_live_events_total counter"]
    out += [f'recsys_live_events_total{{result="{name}"}} {status[name]}'
            for name in ("applied", "items_applied", "before_snapshot", "duplicates", "invalid")]
    out += ["# HELP recsys_live_state_age_seconds Seconds since the live state was last caught up (-1: never).",
            "# TYPE recsys_live_state_age_seconds gauge", f"recsys_live_state_age_seconds {age:.3f}",
            "# HELP recsys_live_users Customers with live state in memory.", "# TYPE recsys_live_users gauge",
            f"recsys_live_users {status['users']}",
            "# HELP recsys_live_evicted_users_total Customers dropped from live state (live_max_users).",
            "# TYPE recsys_live_evicted_users_total counter",
            f"recsys_live_evicted_users_total {status['evicted_users']}",
            "# HELP recsys_live_unavailable_items Items out of stock or delisted since the serving index.",
            "# TYPE recsys_live_unavailable_items gauge",
            f"recsys_live_unavailable_items {status['unavailable_items']}"]
    return "\n".join(out) + "\n"
