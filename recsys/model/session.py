"""The session term: what a customer viewed or carted earlier the same day and has not bought since.

A customer's *session items* are the items of their events of the current day that are not purchases,
most recent first, an item leaving the list when the customer buys it (:func:`next_session`). The live
state (:mod:`recsys.serving.live`) keeps them per customer; the daily snapshot has none. They change a
score in two ways, on top of the query tower, the item bias, the trend and the repeat term
(:mod:`recsys.serving.index`)::

    score(u, i) += session_weight * [i in session(u)]
    query(u)    += session_query_weight * mean of item(j) (id embeddings) over session(u)[:query_length]

The repeat term cannot do this: it counts days an item was used, and on shops whose customers rarely use
an item twice it is learned negative, so an item viewed an hour ago is pushed down, not up; and the query's
mean over 50 recent items barely moves with two or three views.

The two weights are not trained with the towers (the training examples are days, not moments): they are
**fitted per version** (:func:`fit_session`) on the trained day's *purchase moments* (one customer's
purchases at one event time, with that customer's earlier events of the day known from the raw events), of
the customers held out from that day's training (so the towers have not seen those purchases, as at
serving time): the weights maximise the softmax log-likelihood of the bought items over the catalog with
everything else scored as the live service scores it (:func:`moment_inputs`), a concave problem in the two
weights solved by Newton's method with a weak Gaussian prior. A day with fewer than :data:`MIN_MOMENTS`
such moments (a purchase-only log such as Online Retail has none: every event is a purchase) gives 0 and 0,
which leaves every score as it was. The weights are stored in the version's tables
(:data:`SESSION_WEIGHT`, :data:`SESSION_QUERY_WEIGHT`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd

from recsys import schema

log = logging.getLogger(__name__)

PURCHASE = "purchase"
SESSION_WEIGHT = "session_weight"  # table: the bonus of a session item
SESSION_QUERY_WEIGHT = "session_query_weight"  # table: the weight of the session items' mean in the query
MIN_MOMENTS = 20  # fewer moments with session items than this: no signal, both weights 0
MAX_MOMENTS = 2_000  # moments a fit uses at most (a deterministic sample beyond)
MAX_ITEMS = 20_000  # candidates a fit's softmax sums over at most (a uniform sample of the rest, reweighted)
MAX_EVENTS = 400_000  # raw events a fit reads at most (customers sampled by a hash of their id beyond)
FIT_BLOCK = 64  # moments a fit evaluates at a time (memory: about 12 [FIT_BLOCK, MAX_ITEMS] float64 arrays, 120 MB)
PRIOR = 1.0  # precision of the Gaussian prior on both weights (a weak pull to 0 for a few moments)


def next_session(session: tuple[str, ...], item: str, purchased: bool, length: int) -> tuple[str, ...]:
    """``session`` (item ids, most recent first) after one event of the same day on ``item``: a purchase
    removes it, any other event puts it first; at most ``length`` items."""
    rest = tuple(i for i in session if i != item)
    return rest if purchased else (item, *rest)[:length]


def moved_to_front(items: tuple[str, ...], days: tuple[int, ...], last: tuple[str, ...], item: str, day: str,
                   length: int) -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    """Recent items after one event on ``item`` on ISO ``day``: the item first, its days + 1 on a day later than
    its ``last`` (ISO day it was last used live, "" = only in the snapshot); at most ``length`` items.

    The live state's rule (:mod:`recsys.serving.live`), the snapshot's (:func:`recsys.features.history.update`)
    applied one event at a time."""
    items_, days_, last_ = list(items), list(days), list(last)
    if item in items_:
        i = items_.index(item)
        grown = days_[i] + (1 if day > last_[i] else 0)
        newest = max(day, last_[i])
        del items_[i], days_[i], last_[i]
    else:
        grown, newest = 1, day
    items_.insert(0, item)
    days_.insert(0, grown)
    last_.insert(0, newest)
    return tuple(items_[:length]), tuple(days_[:length]), tuple(last_[:length])


def _as_utc(when: pd.Timestamp) -> datetime:
    stamp = when.tz_localize(UTC) if when.tzinfo is None else when.tz_convert(UTC)
    return stamp.to_pydatetime(warn=False)  # only the day is used: nanoseconds do not matter


def live_history(base: tuple[list[str], list[int]], before: Sequence[tuple[str, pd.Timestamp]],
                 length: int) -> tuple[list[str], list[int]]:
    """``base`` (snapshot item ids and days, most recent first) after the events ``before`` ((item, time) in time
    order), applied one at a time by :func:`moved_to_front`."""
    if not before:
        return base
    items, days = tuple(base[0]), tuple(base[1])
    last = ("",) * len(items)
    for item, when in before:
        items, days, last = moved_to_front(items, days, last, item, _as_utc(when).date().isoformat(), length)
    return list(items), list(days)


@dataclass(frozen=True)
class Moment:
    """One customer's purchases at one event time, with what happened earlier that day."""

    user: str
    time: pd.Timestamp
    bought: frozenset[str]
    before: tuple[tuple[str, pd.Timestamp], ...]  # the customer's earlier events of the day: (item, time), in order
    session: tuple[str, ...] = ()  # session items at the moment (:func:`next_session`), most recent first


def purchase_moments(events: pd.DataFrame, length: int = 50) -> list[Moment]:
    """The purchase moments of one day's raw events (``event_type`` absent: every event is a purchase), by user
    then time; ``length`` caps each moment's session items."""
    frame = events[[schema.USER_ID, schema.ITEM_ID, schema.EVENT_TIME]].copy()
    frame[schema.USER_ID] = frame[schema.USER_ID].astype(str)
    frame[schema.ITEM_ID] = frame[schema.ITEM_ID].astype(str)
    frame["purchase"] = ((events[schema.EVENT_TYPE] == PURCHASE).to_numpy(bool) if schema.EVENT_TYPE in events
                         else True)
    frame = frame.sort_values([schema.USER_ID, schema.EVENT_TIME, schema.ITEM_ID], kind="stable")
    moments = []
    for user, mine in frame.groupby(schema.USER_ID, sort=True):
        times = mine[schema.EVENT_TIME].to_numpy()
        items = mine[schema.ITEM_ID].to_numpy(object)
        bought = mine["purchase"].to_numpy(bool)
        if not bought.any():
            continue
        for when in pd.unique(times[bought]):
            at = bought & (times == when)
            earlier = np.flatnonzero(times < when)
            session: tuple[str, ...] = ()
            for n in earlier:
                session = next_session(session, str(items[n]), bool(bought[n]), length)
            moments.append(Moment(str(user), pd.Timestamp(when), frozenset(items[at]),
                                  tuple(zip(items[earlier], map(pd.Timestamp, times[earlier]), strict=True)),
                                  session))
    return moments


# --- the fit --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MomentInputs:
    """What a fit needs of each moment, over a set of candidate item rows (columns).

    ``base`` [M, n]: the score of each candidate with the live history, without the session term;
    ``mean`` [M, d]: the mean id embedding of the moment's session items (0 without any); ``session`` and
    ``bought``: per moment, the columns of its session items and of its bought items; ``weight`` [n]: how
    many catalog items each column stands for (1, or more for a sampled column)."""

    base: np.ndarray
    mean: np.ndarray
    candidates: np.ndarray  # [n, d] candidate vectors of the columns
    session: list[np.ndarray]
    bought: list[np.ndarray]
    weight: np.ndarray


def fit_weights(inputs: MomentInputs, prior: float = PRIOR, steps: int = 30,
                block: int = FIT_BLOCK) -> tuple[float, float, float]:
    """(session_weight, session_query_weight, log-likelihood gain per bought item over both weights at 0).

    Maximises sum over moments and bought items b of [logit_b - log sum_i weight_i exp(logit_i)] - prior/2 |w|^2,
    logit = base + s * [session item] + q * (mean . candidate): concave in (s, q), so Newton's method (with
    step halving) finds its one maximum. Each evaluation goes over ``block`` moments at a time, so the fit's
    memory beyond ``base`` is a few [block, n] arrays, not [M, n] ones (bench/scale: at 2,000 moments x 20,000
    candidates the one-shot arrays took 2.2 GB in the fine-tune's process)."""
    n_moments = len(inputs.base)
    log_weight = np.log(inputs.weight)[None, :]
    targets = [(m, c) for m, cols in enumerate(inputs.bought) for c in cols]
    rows = np.array([m for m, _ in targets], np.int64)
    cols = np.array([c for _, c in targets], np.int64)
    counts = np.bincount(rows, minlength=n_moments).astype(np.float64)
    blocks = [(lo, min(lo + block, n_moments)) for lo in range(0, n_moments, max(block, 1))]

    def block_inputs(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        base = np.asarray(inputs.base[lo:hi], np.float64)
        z = inputs.mean[lo:hi] @ inputs.candidates.T  # [b, n] the session query's dot with each candidate
        x = np.zeros_like(base)
        for m, session_cols in enumerate(inputs.session[lo:hi]):
            x[m, session_cols] = 1.0
        return base, x, z

    def evaluate(w: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        value, grad, hess = 0.0, np.zeros(2), np.zeros((2, 2))
        for lo, hi in blocks:
            base, x, z = block_inputs(lo, hi)
            here = (rows >= lo) & (rows < hi)
            r, c, n = rows[here] - lo, cols[here], counts[lo:hi]
            logits = base + w[0] * x + w[1] * z
            del base
            shifted = logits + log_weight
            top = shifted.max(1, keepdims=True)
            p = np.exp(shifted - top)
            del shifted
            total = p.sum(1, keepdims=True)
            p /= total
            lse = (top + np.log(total))[:, 0]
            value += float(logits[r, c].sum() - (n * lse).sum())
            del logits
            px, pz = p * x, p * z
            ex, ez = px.sum(1), pz.sum(1)
            grad += np.array([x[r, c].sum() - (n * ex).sum(), z[r, c].sum() - (n * ez).sum()])
            cxx = (px * x).sum(1) - ex * ex
            cxz = (px * z).sum(1) - ex * ez
            czz = (pz * z).sum(1) - ez * ez
            hess -= np.array([[(n * cxx).sum(), (n * cxz).sum()], [(n * cxz).sum(), (n * czz).sum()]])
        return value - prior / 2 * float(w @ w), grad - prior * w, hess - prior * np.eye(2)

    w = np.zeros(2)
    start, grad, hess = evaluate(w)
    value = start
    for _ in range(steps):
        step = -np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-4:
            trial = w + scale * step
            new_value, new_grad, new_hess = evaluate(trial)
            if new_value >= value - 1e-9:
                break
            scale /= 2
        else:
            break
        done = abs(new_value - value) < 1e-7 * max(1.0, abs(value))
        w, value, grad, hess = trial, new_value, new_grad, new_hess
        if done:
            break
    return float(w[0]), float(w[1]), (value - start) / max(len(targets), 1)


def candidate_vectors(tables: Mapping[str, np.ndarray], rows: np.ndarray | None = None) -> np.ndarray:
    """[n, d] candidate vectors of item ``rows`` (None: every row): id + mean of title words + price band, as the
    candidate tower computes them (only the item id table when the version has no title words)."""
    item = tables["item"] if rows is None else tables["item"][rows]
    item = np.asarray(item, np.float32)
    if "word" not in tables:
        return item
    words = tables["item_words"] if rows is None else tables["item_words"][rows]
    price = tables["item_price"] if rows is None else tables["item_price"][rows]
    mask = (words > 0)[..., None]
    title = (tables["word"][words] * mask).sum(1) / np.maximum(mask.sum(1), 1)
    return (item + title + tables["price"][price]).astype(np.float32)


def moment_inputs(tables: Mapping[str, np.ndarray], moments: Sequence[Moment], user_rows: Mapping[str, int],
                  item_rows: Mapping[str, int], snapshot: Mapping[str, tuple[list[str], list[int]]],
                  item_bias: np.ndarray, repeat_weight: float, query_length: int, length: int,
                  seed: int = 0) -> MomentInputs:
    """The scores of ``moments`` as the live service computes them (:meth:`recsys.serving.index.Scorer.scores`
    with the live history: the snapshot history ``snapshot[user]`` after the moment's earlier events), split
    into what the session weights do not change (``base``) and what they scale.

    ``item_bias`` [I] is the served bias (the trend folded in), ``repeat_weight`` the served one (scale
    applied). Columns: every item row but the OOV row, or up to :data:`MAX_ITEMS` of them (the moments' session
    and bought items, then a uniform sample of the rest, each standing for its share of the unsampled)."""
    n_items = len(tables["item"])
    users = tables["user"]
    ids = [(m, [item_rows.get(i, 0) for i in m.session], [item_rows.get(i, 0) for i in m.bought]) for m in moments]
    needed = np.unique(np.concatenate([np.zeros(0, np.int64)] + [np.asarray(s + b, np.int64) for _, s, b in ids]))
    needed = needed[(needed > 0) & (needed < n_items)]
    others = np.setdiff1d(np.arange(1, n_items), needed)
    room = max(MAX_ITEMS - len(needed), 0)
    weight_other = 1.0
    if len(others) > room:
        picked = np.sort(np.random.default_rng(seed).choice(others, size=room, replace=False))
        weight_other = len(others) / max(room, 1)
        others = picked
    columns = np.concatenate([needed, others]).astype(np.int64)
    weight = np.concatenate([np.ones(len(needed)), np.full(len(others), weight_other)])
    col_of = np.zeros(n_items, np.int64) - 1
    col_of[columns] = np.arange(len(columns))
    candidates = candidate_vectors(tables, columns)
    ids_table = np.asarray(tables["item"], np.float32)
    dim = users.shape[1]
    queries = np.zeros((len(moments), dim), np.float32)
    means = np.zeros((len(moments), dim), np.float32)
    repeat: list[tuple[np.ndarray, np.ndarray]] = []
    session_cols, bought_cols = [], []
    for n, (moment, session_rows, bought_rows) in enumerate(ids):
        base = snapshot.get(moment.user, ([], []))
        hist_ids, hist_days = live_history(base, moment.before, length)
        pairs = [(item_rows.get(i, 0), d) for i, d in zip(hist_ids, hist_days, strict=True)]
        rows = np.array([r for r, _ in pairs if 0 < r < n_items], np.int64)[:length]
        days = np.array([d for r, d in pairs if 0 < r < n_items], np.float32)[:length]
        row = user_rows.get(moment.user, 0)
        queries[n] = users[row if row < len(users) else 0]
        if len(rows):
            queries[n] += ids_table[rows[:query_length]].mean(0)
        repeat.append((rows, days))
        srows = np.array([r for r in session_rows if 0 < r < n_items], np.int64)
        if len(srows):
            means[n] = ids_table[srows[:query_length]].mean(0)
        session_cols.append(np.unique(col_of[srows]))
        brows = np.array([r for r in bought_rows if 0 < r < n_items], np.int64)
        bought_cols.append(np.unique(col_of[brows]))
    base_scores = queries @ candidates.T + item_bias[columns][None, :].astype(np.float32)
    for n, (rows, days) in enumerate(repeat):
        if len(rows) and repeat_weight:
            here = col_of[rows]
            keep = here >= 0
            np.add.at(base_scores[n], here[keep], (repeat_weight * np.log1p(days[keep])).astype(np.float32))
    # base stays float32 (as computed): fit_weights widens one block at a time
    return MomentInputs(base_scores, means.astype(np.float64), candidates.astype(np.float64),
                        session_cols, bought_cols, weight)


def sampled_events(store: Any, day: date, max_events: int = MAX_EVENTS) -> pd.DataFrame:
    """``day``'s raw events (user, item, time, type), of all customers, or of the customers whose id hashes
    lowest when there are more than ``max_events`` events (read in chunks: memory stays about ``max_events``)."""
    from recsys.features.chunks import ChunkReader, hash_values
    from recsys.storage import layout

    columns = [schema.USER_ID, schema.ITEM_ID, schema.EVENT_TIME, schema.EVENT_TYPE]
    kept: list[pd.DataFrame] = []
    limit = np.uint64(np.iinfo(np.uint64).max)
    total = 0
    for chunk in ChunkReader(store, layout.raw_events(day), columns):
        chunk = chunk.assign(_hash=hash_values(chunk[schema.USER_ID]))
        chunk = chunk[chunk["_hash"].to_numpy(np.uint64) <= limit]
        kept.append(chunk)
        total += len(chunk)
        while total > max_events:  # keep the customers of the lower half of the hashes kept so far
            every = np.concatenate([k["_hash"].to_numpy(np.uint64) for k in kept])
            limit = np.uint64(np.quantile(every, 0.5, method="lower"))
            kept = [k[k["_hash"].to_numpy(np.uint64) <= limit] for k in kept]
            total = sum(len(k) for k in kept)
            if len(np.unique(every)) == 1:
                break
    if not kept:
        return pd.DataFrame(columns=columns)
    return pd.concat(kept, ignore_index=True).drop(columns="_hash")


def _rows_of(store: Any, path: str, columns: list[str], key: str, wanted: list[str]) -> pd.DataFrame:
    """The rows of parquet file ``path`` whose ``key`` is in ``wanted`` (``columns`` only; no rows for a missing
    file), filtered while reading."""
    import pyarrow.parquet as pq

    if not wanted or not store.exists(path):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    table = pq.read_table(io.BytesIO(store.read_bytes(path)), columns=columns, filters=[(key, "in", wanted)])
    return table.to_pandas()


def fit_session(store: Any, settings: Any, day: date, tables: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Fit the session weights of a version trained on ``day`` (its ``tables``: plain arrays) on ``day``'s
    purchase moments of held-out customers with session items. Returns the two weights (as the tables store them)
    and a summary of the fit for the version's metadata."""
    from recsys.features import history, trend, vocab
    from recsys.features.build import is_holdout
    from recsys.storage import StorageError, layout

    zero = {SESSION_WEIGHT: 0.0, SESSION_QUERY_WEIGHT: 0.0}
    try:
        events = sampled_events(store, day)
    except StorageError as err:  # the version is still good: it scores without a session term
        log.warning("session weights of %s not fitted: %s", day, err)
        return {**zero, "moments": 0, "reason": f"the day's raw events cannot be read: {err}"}
    if not len(events):
        return {**zero, "moments": 0, "reason": "no events"}
    length = max(settings.history_length, settings.repeat_length)
    users = pd.Series(pd.unique(events[schema.USER_ID].astype(str)))
    held = set(users[is_holdout(users, day, settings.holdout_fraction).to_numpy(bool)])
    events = events[events[schema.USER_ID].astype(str).isin(held)]
    moments = [m for m in purchase_moments(events, settings.history_length) if m.session]
    summary: dict[str, Any] = {"moments": len(moments)}
    if len(moments) < MIN_MOMENTS:
        return {**zero, **summary, "reason": f"fewer than {MIN_MOMENTS} held-out purchase moments with session items"}
    if len(moments) > MAX_MOMENTS:
        picked = np.random.default_rng(settings.seed).choice(len(moments), MAX_MOMENTS, replace=False)
        moments = [moments[i] for i in np.sort(picked)]
    wanted = sorted({m.user for m in moments})
    # only the moments' customers are read (a 10M-event day's vocabulary and snapshot hold millions)
    users_read = _rows_of(store, layout.vocab_table(vocab.USERS), [vocab.ID, vocab.ROW], vocab.ID, wanted)
    user_rows = {str(u): int(r) for u, r in zip(users_read[vocab.ID], users_read[vocab.ROW], strict=True)
                 if int(r) != vocab.OOV_ROW}
    item_vocab = vocab.with_rows(vocab.load(store, vocab.ITEMS))
    item_rows = dict(zip(item_vocab[vocab.ID].astype(str), item_vocab[vocab.ROW].astype(int), strict=True))
    earlier = [d for d in store.partitions(layout.FEATURES) if d < day]
    snapshot = (_rows_of(store, f"{layout.features(earlier[-1])}/{layout.HISTORY_FILE}",
                         [schema.USER_ID, schema.ITEM_ID, history.DAYS, history.LAST_DAY], schema.USER_ID, wanted)
                if earlier else history.empty())
    bias = np.asarray(tables.get("item_bias", np.zeros(len(tables["item"]))), np.float32)
    trend_weight = float(tables.get("trend_weight", 0.0))
    if trend_weight and settings.trend_days:
        bias = (bias + trend_weight * trend.vector(store, day, len(bias), settings.trend_days)).astype(np.float32)
    repeat_weight = float(tables.get("repeat_weight", 0.0)) * settings.repeat_scale
    inputs = moment_inputs(tables, moments, user_rows, item_rows, history.by_user(snapshot), bias, repeat_weight,
                           settings.history_length, length, settings.seed)
    weight, query_weight, gain = fit_weights(inputs)
    summary |= {"bought": int(sum(len(b) for b in inputs.bought)), "columns": len(inputs.weight),
                "loglik_gain_per_item": round(gain, 5)}
    log.info("session weights of %s: %.4f (items), %.4f (query) from %s", day, weight, query_weight, summary)
    return {SESSION_WEIGHT: weight, SESSION_QUERY_WEIGHT: query_weight, **summary}
