"""The version a serving process answers from, and the watcher that swaps it when the champion changes.

:class:`LoadedVersion` is everything one answer needs, loaded once and never mutated: the embedding
tables, the serving index (available items, titles), purchase histories and item popularity.
:class:`ModelHolder` keeps the current one behind a single attribute; a request takes that reference
once and answers from it to the end, so a swap (one attribute assignment, atomic in CPython) never
mixes two versions in one answer and in-flight requests finish on the version they started with.

The watcher thread polls the registry (champion pointer) and the champion's ``index.json`` every few
seconds (``index.parquet`` is the truth: a stale ``index.json`` is reported once, not reloaded on
every poll). A change is loaded in the background and swapped in when complete; a version that fails to
load leaves the old one serving, and the failure is kept for readiness and metrics (and retried
after ``retry_seconds``). Everything is read through the :class:`~recsys.storage.PartitionStore`
interface, so the same code serves from a local store or from HDFS.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.dtypes import StringDType

from recsys import registry, schema
from recsys.errors import RecsysError
from recsys.features import vocab
from recsys.serving.ann import AnnUnavailable, HnswIndex
from recsys.serving.deploy import embedded_metadata
from recsys.serving.ids import IdIndex, IdLists, sorted_codes, strings, utf8
from recsys.serving.index import Scorer, snapshot_arrow, top_k_rows
from recsys.serving.popularity import FALLBACK as FALLBACK_POPULARITY
from recsys.storage import PartitionStore, StorageError, layout
from recsys.storage.layout import INDEX_FILE, INDEX_META_FILE

log = logging.getLogger(__name__)

FALLBACK_POPULAR = "popular"


class ServingError(RecsysError, RuntimeError):
    """Nothing can be served (no champion yet, or its files cannot be loaded)."""


@dataclass(frozen=True)
class Recommendation:
    """One answer: item ids best first, their scores, and how they were chosen."""

    version: int
    known_user: bool
    # None: the model's ranking; "popular": unknown user, most bought items; "popularity": the gate measured
    # trailing popularity ahead of this version, every customer gets its ranking (recsys.serving.popularity)
    fallback: str | None
    item_ids: list[str]
    scores: list[float]  # dot products (model), number of buyers (popular), purchases in the window (popularity)


@dataclass(frozen=True)
class LiveInputs:
    """What the live state (:mod:`recsys.serving.live`) changes in one answer."""

    # the customer's recent item ids (most recent first) and days each was used, replacing the snapshot's;
    # None: the snapshot's
    history: tuple[Sequence[str], Sequence[int]] | None = None
    unavailable: Collection[str] = ()  # item ids out of stock or delisted since the serving index was built
    # the customer's session items (viewed or carted today, not bought since; most recent first): the version's
    # session term (:mod:`recsys.model.session`)
    session: Sequence[str] = ()


NO_LIVE = LiveInputs()


@dataclass(frozen=True, eq=False)
class LoadedVersion:
    """An immutable, fully loaded serving version (see the module docstring for the swap contract).

    ``scorer`` holds the version's embedding tables restricted to the serving index: its item row 0 is
    the OOV row and rows 1..N are the served items in index order (so a delisted item cannot be
    returned without any masking); user rows are the vocabulary's. Cost of a query: the mean of at
    most ``history_length`` candidate vectors, one [d] x [d, N] product, a sparse add over the
    customer's own recent items (repeat term) and a partial sort, O(N * d + H * d).

    Per-customer and per-item state is flat arrays (:mod:`recsys.serving.ids`): ``position`` and
    ``item_rows`` are sorted id arrays with their integers, ``purchases`` one CSR table, ids and titles
    numpy ``StringDType`` arrays; no Python object per customer or item is held.
    """

    version: int
    index_sha256: str
    index_meta: dict[str, Any]
    scorer: Scorer  # served positions: row p is the candidate vector of served position p
    full: Scorer  # the whole version (every item row): computes queries from recent items
    position_of_row: np.ndarray  # [I] served position of each item row, 0 if not served
    titles: np.ndarray  # [N + 1] str (StringDType), title of served position p (position 0 = OOV, "")
    position: IdIndex  # served item id -> position 1..N
    item_rows: IdIndex  # every item the version knows (served or not) -> its row in ``all_items``
    all_items: np.ndarray  # [I, d] the version's whole item table (similar items may start from a delisted one)
    unit_items: np.ndarray  # [N + 1, d] served item embeddings scaled to unit length (row 0 zero)
    purchases: Mapping[str, np.ndarray]  # user id -> served positions the user bought (an IdLists)
    popular: np.ndarray  # served positions by number of buyers, most bought first
    buyers: np.ndarray  # [N + 1] number of distinct buyers per served position
    ann: HnswIndex | None = None  # approximate search over positions 1..N (large catalogs), else exact
    snapshot_day: date | None = None  # the history snapshot's day (histories as of its end)
    # the popularity fallback (recsys.serving.popularity), when the version's gate decision calls for it: the
    # decision's verdict, served positions by trailing-window purchases (most first) and those purchases
    popularity_fallback: dict[str, Any] | None = None
    trending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    trending_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    loaded_at: float = field(default_factory=time.time)

    @property
    def items(self) -> int:
        return len(self.position)

    def is_known_user(self, user_id: str) -> bool:
        return self.full.knows(user_id)

    def query_vector(self, user_id: str) -> np.ndarray | None:
        """The query tower's output for ``user_id``: a [d] vector, or None if this version cannot embed it.

        This is the one place a query is computed: the user's row plus the mean of their recent items'
        candidate vectors (:class:`~recsys.serving.index.Scorer`). A customer without a row but with
        recent purchases is embedded by those; one with neither gets the popular fallback.
        """
        if not self.is_known_user(user_id):
            return None
        return self.full.user_vectors([user_id])[0]

    def _repeat(self, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Served positions of the user's recent items (snapshot) and their repeat bonus."""
        rows, bonus = self.full.repeat_bonus(user_id)
        positions = self.position_of_row[rows] if len(rows) else rows
        keep = positions > 0
        return positions[keep], bonus[keep]

    def snapshot_history(self, user_id: str) -> tuple[list[str], list[int]]:
        """The customer's recent item ids (most recent first) and days, as the snapshot has them."""
        rows, days = self.full.history(user_id)
        return [str(i) for i in self.full.item_ids[rows]], [int(d) for d in days]

    def _live_query(self, user_id: str, rows: np.ndarray) -> np.ndarray | None:
        """The query vector from live recent item ``rows`` (most recent first): the user's row (the OOV row
        for a customer the version has none for) plus the mean of the first ``query_length`` items' id
        embeddings, as :meth:`Scorer.user_vectors` computes it. None if the version cannot embed the user."""
        full = self.full
        row = full.user_rows.get(user_id, vocab.OOV_ROW)
        row = row if row < len(full.user_table) else vocab.OOV_ROW
        if not full.history_weight or not len(rows):
            return full.user_table[row].astype(np.float32, copy=True) if row != vocab.OOV_ROW else None
        query = full.user_table[row].astype(np.float32, copy=True)
        query += full.history_weight * full.history_table[rows[: full.query_length]].mean(0)
        return query

    def _inputs(self, user_id: str, live: LiveInputs) -> tuple[np.ndarray | None, np.ndarray, np.ndarray,
                                                              np.ndarray | None]:
        """(query vector or None, own served positions, their repeat bonus, served positions bought or None)."""
        if live.history is None:
            own, bonus = self._repeat(user_id)
            return self.query_vector(user_id), own, bonus, self.purchases.get(user_id)
        ids, days = live.history
        found = self.item_rows.lookup(list(ids), vocab.OOV_ROW)
        known = found > vocab.OOV_ROW
        rows = found[known]
        counts = np.asarray(days, dtype=np.float32).reshape(-1)[known] if len(found) else np.zeros(0, np.float32)
        positions = self.position_of_row[rows] if len(rows) else rows
        keep = positions > 0
        bonus = (self.full.repeat_weight * np.log1p(counts[keep])).astype(np.float32)
        query = self._live_query(user_id, rows)
        own, bought = positions[keep], np.unique(positions[keep])
        if live.session and (self.full.session_weight or self.full.session_query_weight):
            query, own, bonus = self._with_session(query, own, bonus, live.session)
        return query, own, bonus, bought

    def _with_session(self, query: np.ndarray | None, own: np.ndarray, bonus: np.ndarray,
                      session: Sequence[str]) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """The session term (:meth:`Scorer.session_query` and ``session_weight`` on each session item) added to a
        query and the own items' bonus (one entry per served position)."""
        found = self.item_rows.lookup(list(session), vocab.OOV_ROW)
        rows = found[found > vocab.OOV_ROW]
        if not len(rows):
            return query, own, bonus
        if query is not None:
            query = query + self.full.session_query(rows)
        positions = np.unique(self.position_of_row[rows])
        positions = positions[positions > 0]
        own = np.concatenate([own, positions])
        bonus = np.concatenate([bonus, np.full(len(positions), self.full.session_weight, np.float32)])
        own, at = np.unique(own, return_inverse=True)
        return query, own, np.bincount(at, weights=bonus, minlength=len(own)).astype(np.float32)

    def _blocked(self, bought: np.ndarray | None, unavailable: Collection[str]) -> np.ndarray:
        """Served positions an answer must not hold: bought (when excluded) and unavailable ones."""
        gone = self.position.lookup(list(unavailable), 0) if unavailable else np.zeros(0, np.int64)
        parts = [gone[gone > 0]]
        if bought is not None:
            parts.append(np.asarray(bought, dtype=np.int64))
        return np.unique(np.concatenate(parts))

    def recommend(self, user_id: str, k: int, exclude_purchased: bool = False,
                  live: LiveInputs = NO_LIVE) -> Recommendation:
        """Top-``k`` served items for ``user_id``; unknown users get the most bought items (fallback).

        ``live``: the customer's live recent items (replacing the snapshot's) and the items unavailable
        since the index (never returned), from :mod:`recsys.serving.live`.
        """
        query, own, bonus, bought = self._inputs(user_id, live)
        blocked = self._blocked(bought if exclude_purchased else None, live.unavailable)
        if self.popularity_fallback is not None:  # the gate measured popularity ahead of this version
            ranked = self.trending
            if len(blocked):
                ranked = ranked[~np.isin(ranked, blocked)]
            top = ranked[:k]
            return Recommendation(self.version, query is not None, FALLBACK_POPULARITY,
                                  [str(x) for x in self.scorer.item_ids[top]],
                                  self.trending_counts[top].astype(float).tolist())
        if query is None:
            ranked = self.popular
            if len(blocked):
                ranked = ranked[~np.isin(ranked, blocked)]
            top = ranked[:k]
            return Recommendation(self.version, False, FALLBACK_POPULAR,
                                  [str(x) for x in self.scorer.item_ids[top]], self.buyers[top].astype(float).tolist())
        if self.ann is not None:
            return self._recommend_ann(query, k, own, bonus, blocked)
        scores = (self.scorer.item_table @ query + self.scorer.item_bias)[None, :]
        np.add.at(scores[0], own, bonus)
        scores[0, vocab.OOV_ROW] = -np.inf
        if len(blocked):
            scores[0, blocked] = -np.inf
        rows, values = top_k_rows(scores, k)
        keep = np.isfinite(values[0])
        return Recommendation(self.version, True, None, [str(x) for x in self.scorer.item_ids[rows[0][keep]]],
                              values[0][keep].astype(float).tolist())

    def _recommend_ann(self, query: np.ndarray, k: int, own: np.ndarray, bonus: np.ndarray,
                       blocked: np.ndarray) -> Recommendation:
        assert self.ann is not None
        found, _ = self.ann.search(np.append(query, np.float32(1.0)), min(k + len(blocked), self.items))
        # the ANN holds [candidate, bias] for positions 1..N; the customer's own items (repeat term)
        # join the candidates, and all are scored exactly
        positions = np.unique(np.concatenate([found + 1, own]))
        if len(blocked):
            positions = positions[~np.isin(positions, blocked)]
        exact = self.scorer.item_table[positions] @ query + self.scorer.item_bias[positions]
        bonus_at = dict(zip(own.tolist(), bonus.tolist(), strict=True))
        exact += np.array([bonus_at.get(int(p), 0.0) for p in positions], dtype=np.float32)
        order = np.argsort(-exact, kind="stable")[:k]
        return Recommendation(self.version, True, None, [str(x) for x in self.scorer.item_ids[positions[order]]],
                              exact[order].astype(float).tolist())

    def similar(self, item_id: str, k: int, unavailable: Collection[str] = ()) -> tuple[list[str], list[float]] | None:
        """The ``k`` served items most similar (cosine) to ``item_id``, itself and ``unavailable`` excluded;
        None if unknown."""
        row = self.item_rows.get(item_id)
        if row is None:
            return None
        vector = self.all_items[row]
        norm = float(np.linalg.norm(vector))
        scores = (self.unit_items @ (vector / norm if norm > 0 else vector))[None, :]
        scores[0, vocab.OOV_ROW] = -np.inf
        own = self.position.get(item_id)
        if own is not None:
            scores[0, own] = -np.inf
        blocked = self._blocked(None, unavailable)
        if len(blocked):
            scores[0, blocked] = -np.inf
        rows, values = top_k_rows(scores, k)
        keep = np.isfinite(values[0])
        return [str(x) for x in self.scorer.item_ids[rows[0][keep]]], values[0][keep].astype(float).tolist()

    def title(self, item_id: str) -> str:
        pos = self.position.get(item_id)
        return str(self.titles[pos]) if pos is not None else ""

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "items": self.items, "index_sha256": self.index_sha256,
                "catalog_date": self.index_meta.get("catalog_date"),
                "search": f"hnsw(ef_search={self.ann.ef_search})" if self.ann is not None else "exact",
                "fallback": FALLBACK_POPULARITY if self.popularity_fallback is not None else None,
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at))}


def load_version(store: PartitionStore, version: int, ann_min_items: int | None = None,
                 popularity_fallback: bool = True) -> LoadedVersion:
    """Load ``version`` for serving: tables, vocabularies, the serving index, histories, popularity.

    Purchases, recent items and popularity come from the newest history snapshot
    (``features/dt=*/history.parquet``, :mod:`recsys.features.history`) alone, so memory is linear in
    customers x history length and the load time does not grow with the number of days processed. A
    customer's purchases are their ``max(history_length, repeat_length)`` most recent distinct items
    (the snapshot's length when it was built); a customer with more distinct items than that is not
    counted as a buyer of the older ones, and ``exclude_purchased`` does not drop those.

    With ``ann_min_items``, a serving index of at least that many items also gets an HNSW index
    (:mod:`recsys.serving.ann`) and recommendations use it; if faiss is missing, search stays exact.

    When the version's gate decision recorded the popularity fallback (:mod:`recsys.serving.popularity`) and
    ``popularity_fallback`` (``RECSYS_POPULARITY_FALLBACK``) is on, every answer is the served items by
    trailing-week purchases up to the newest feature partition, the ranking the gate measured.
    """
    from recsys.features import trend
    from recsys.serving import popularity
    from recsys.serving.index import load_scorer, read_snapshot

    vdir = layout.model_version(version)
    try:
        meta_path = f"{vdir}/{INDEX_META_FILE}"
        described = store.read_json(meta_path) if store.exists(meta_path) else {}
        index_bytes = store.read_bytes(f"{vdir}/{INDEX_FILE}")
        index = pd.read_parquet(io.BytesIO(index_bytes))
        meta = embedded_metadata(index_bytes)  # the parquet describes itself: never a stale description
        feature_days = store.partitions(layout.FEATURES)
        snapshot_day = feature_days[-1] if feature_days else None
        snapshot = read_snapshot(store, snapshot_day)
        full = load_scorer(store, version, snapshot=snapshot)
        verdict = popularity.recorded_fallback(store, version, popularity_fallback)
        serving_day = trend.serving_day(store)
        counts = (popularity.purchases(store, serving_day, len(full.item_table))
                  if verdict is not None and serving_day is not None else None)
    except (StorageError, OSError, ValueError, KeyError) as err:
        raise ServingError(f"cannot load version {version} from {store.uri(vdir)}: {err}") from err
    if described and described.get("sha256") != meta["sha256"]:
        log.warning("version %d: %s does not describe %s (an interrupted refresh-index?); serving %s as it is; "
                    "rerun `recsys refresh-index --version %d` to repair it", version, INDEX_META_FILE, INDEX_FILE,
                    INDEX_FILE, version)
    else:
        meta = {**described, **meta}
    missing = {schema.ITEM_ID, "row", schema.TITLE} - set(index.columns)
    if missing:
        raise ServingError(f"the serving index of version {version} lacks columns {sorted(missing)}")
    rows = index["row"].to_numpy(dtype=np.int64)
    if len(rows) == 0 or rows.min() <= vocab.OOV_ROW or rows.max() >= len(full.item_table):
        raise ServingError(f"the serving index of version {version} names item rows outside its table")
    served_ids = pa.array(index[schema.ITEM_ID])
    ids = np.concatenate([np.array([""], StringDType()), strings(served_ids)])
    table = np.ascontiguousarray(np.vstack([full.item_table[:1], full.item_table[rows]]), dtype=np.float32)
    bias = np.concatenate([full.item_bias[:1], full.item_bias[rows]]).astype(np.float32)
    scorer = Scorer(np.ascontiguousarray(full.user_table, dtype=np.float32), table, full.user_rows, ids, bias)
    position_of_row = np.zeros(len(full.item_table), dtype=np.int64)
    position_of_row[rows] = np.arange(1, len(rows) + 1)
    norms = np.linalg.norm(table, axis=1, keepdims=True)
    unit = np.divide(table, norms, out=np.zeros_like(table), where=norms > 0)
    position = IdIndex.build(served_ids, np.arange(1, len(rows) + 1, dtype=np.int64))
    named = np.flatnonzero(np.strings.str_len(full.item_ids) > 0)
    named = named[named > vocab.OOV_ROW]
    item_rows = IdIndex.build(full.item_ids[named], named.astype(np.int64))

    purchases, served_pos = _purchases(snapshot, position)
    del snapshot
    buyers = np.bincount(served_pos, minlength=len(ids)).astype(np.int64)
    buyers[vocab.OOV_ROW] = -1
    # most buyers first, ties by index order; the OOV position (count -1) sorts last and is cut
    popular = np.lexsort((np.arange(len(ids)), -buyers))[:-1]
    trending = trending_counts = np.zeros(0, np.int64)
    if verdict is not None:
        served = position_of_row[popularity.ranking_rows(counts)] if counts is not None else position_of_row[:0]
        trending = served[served > 0]
        if not len(trending):  # nothing bought in the window (or nothing served): no popularity to serve
            log.warning("version %d: its gate decision calls for the popularity fallback, but nothing served was "
                        "bought in the window; the model serves", version)
            verdict = None
        else:
            assert counts is not None
            trending_counts = np.zeros(len(ids), np.int64)
            trending_counts[position_of_row[rows]] = counts[rows]
            log.warning("version %d: its gate decision measured trailing popularity ahead of it by %.4f (standard "
                        "error %.4f, %d held-out users): serving popularity's ranking (RECSYS_POPULARITY_FALLBACK)",
                        version, verdict["difference"], verdict["difference_se"], verdict["users"])
    ann = None
    if ann_min_items is not None and len(position) >= ann_min_items:
        try:
            ann = HnswIndex(np.hstack([table[1:], bias[1:, None]]))
        except AnnUnavailable as err:
            log.warning("version %d: exact search over %d items (%s)", version, len(position), err)
    return LoadedVersion(
        version=version,
        index_sha256=hashlib.sha256(index_bytes).hexdigest(),
        index_meta=meta,
        scorer=scorer,
        full=full,
        position_of_row=position_of_row,
        titles=np.concatenate([np.array([""], StringDType()), strings(pa.array(index[schema.TITLE]))]),
        position=position,
        item_rows=item_rows,
        all_items=full.item_table,
        unit_items=unit,
        purchases=purchases,
        popular=popular,
        buyers=buyers,
        ann=ann,
        snapshot_day=snapshot_day,
        popularity_fallback=verdict,
        trending=trending,
        trending_counts=trending_counts,
    )


def _purchases(snapshot: pd.DataFrame | pa.Table, position: Mapping[str, int]) -> tuple[IdLists, np.ndarray]:
    """(user id -> sorted served positions bought, the served position of every such purchase).

    ``snapshot`` holds distinct (user, item) pairs; ``position`` maps a served item id to its position
    (1..N). Items not served are left out. One vectorised pass over dictionary codes of the ids (no Python
    object per row or customer); the result is one CSR table (int32 positions).
    """
    table = snapshot_arrow(snapshot)
    if not len(table):
        return IdLists.empty(np.int32), np.zeros(0, np.int32)
    item_code, item_ids = sorted_codes(table[schema.ITEM_ID])
    positions = IdIndex.of(position).lookup(item_ids, 0).astype(np.int32)[item_code]
    del item_code
    served = np.flatnonzero(positions > 0)
    positions = positions[served]
    codes, users = sorted_codes(table[schema.USER_ID])
    codes = codes[served]
    del served
    if not len(codes):
        return IdLists.empty(np.int32), positions
    order = np.lexsort((positions, codes))
    codes, sorted_positions = codes[order], positions[order]
    del order
    present, starts = np.unique(codes, return_index=True)
    offsets = np.append(starts, len(codes)).astype(np.int64)
    return IdLists(utf8(users.take(pa.array(present))), offsets, sorted_positions), positions


@dataclass
class LoadFailure:
    version: int
    error: str
    at: float
    attempts: int


class ModelHolder:
    """Holds the current :class:`LoadedVersion` and swaps it when the champion (or its index) changes.

    ``current`` is read without a lock by request handlers (take it once per request). Loads run on
    the caller's thread (:meth:`poll`) or on the background watcher (:meth:`start`); only one load
    runs at a time.
    """

    def __init__(self, store: PartitionStore, poll_seconds: float = 2.0, retry_seconds: float = 30.0,
                 ann_min_items: int | None = None, popularity_fallback: bool = True) -> None:
        self.store = store
        self.ann_min_items = ann_min_items
        self.popularity_fallback = popularity_fallback  # RECSYS_POPULARITY_FALLBACK
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        self.current: LoadedVersion | None = None
        self.champion: int | None = None  # what the registry said at the last poll
        self.failure: LoadFailure | None = None
        self.last_poll_error: str | None = None
        self.loads = {"success": 0, "failure": 0}
        self.swaps = 0
        self._loaded_for: str | None = None  # the index.json sha256 seen when ``current`` was loaded
        self._load_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _wanted(self) -> tuple[int | None, str | None]:
        """(champion version, its index sha256 per index.json or None) as the store says now."""
        champion = registry.load(self.store)["champion"]
        if champion is None:
            return None, None
        path = f"{layout.model_version(champion)}/{INDEX_META_FILE}"
        sha = self.store.read_json(path).get("sha256") if self.store.exists(path) else None
        return int(champion), sha

    def poll(self) -> bool:
        """Look at the registry once; load and swap in the champion if it differs. True if swapped."""
        with self._load_lock:
            try:
                champion, sha = self._wanted()
                self.last_poll_error = None
            except StorageError as err:  # the store is unreachable: keep serving, say so in readiness
                self.last_poll_error = str(err)
                log.warning("cannot read the registry: %s", err)
                return False
            self.champion = champion
            cur = self.current
            # index.json naming what is served, or what it named when that was loaded (a stale index.json
            # left by an interrupted publish must not reload the same parquet on every poll)
            if champion is None or (cur is not None and cur.version == champion
                                    and (sha is None or sha in (cur.index_sha256, self._loaded_for))):
                if cur is not None and cur.version == champion:
                    self.failure = None
                return False
            failed = self.failure
            if failed is not None and failed.version == champion and time.time() - failed.at < self.retry_seconds:
                return False
            started = time.perf_counter()
            try:
                loaded = load_version(self.store, champion, self.ann_min_items, self.popularity_fallback)
            except Exception as err:  # noqa: BLE001 - whatever breaks a load, the old version keeps serving
                attempts = failed.attempts + 1 if failed is not None and failed.version == champion else 1
                self.failure = LoadFailure(champion, str(err), time.time(), attempts)
                self.loads["failure"] += 1
                log.error("version %d failed to load; still serving %s: %s", champion,
                          cur.version if cur else "nothing", err)
                return False
            self.current = loaded  # the swap: requests that already hold the old object finish on it
            self._loaded_for = sha
            self.failure = None
            self.loads["success"] += 1
            self.swaps += 1
            log.info("serving version %d (%d items, index %s) after %.2f s; was %s", loaded.version, loaded.items,
                     loaded.index_sha256[:12], time.perf_counter() - started, cur.version if cur else "nothing")
            return True

    def start(self) -> None:
        """Start the background watcher (first poll immediately)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="recsys-model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # the watcher must outlive any one bad poll (log.exception keeps the trace)
                log.exception("model watcher poll failed; retrying")
            self._stop.wait(self.poll_seconds)

    def status(self) -> dict[str, Any]:
        """Readiness details: what is served, what the registry wants, the last load failure."""
        cur = self.current
        failure = self.failure
        return {
            "ready": cur is not None,
            "serving": cur.describe() if cur else None,
            "champion": self.champion,
            "load_error": None if failure is None else {
                "version": failure.version, "error": failure.error, "attempts": failure.attempts,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(failure.at)),
            },
            "registry_error": self.last_poll_error,
        }
