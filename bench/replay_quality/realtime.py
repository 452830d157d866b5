"""Real-time inputs against daily inputs: each purchase ranked with the customer's history up to that event.

The daily benchmark ranks a day's customers once, with what was known at the end of the day before. A
service with live user state (``RECSYS_SERVE_LIVE``, :mod:`recsys.serving.live`) ranks a request with the
customer's events seconds old. This module measures what that is worth on the same model and the same
purchases. A *purchase moment* is one customer's purchases at one event time (an Online Retail invoice,
a synthetic session's checkout); for each moment:

* **daily**: the customer's history snapshot as of the end of the day before (what ``recsys serve``
  without live state answers with);
* **realtime**: the same snapshot with every event of the customer earlier on the same day applied, by
  the live state's own rule (``recsys.serving.live._moved_to_front``: the item moves to the front,
  its days + 1 on a new day), so views, carts and earlier purchases of the day count.

Both are ranked by the version's exact scorer (query vector, repeat term, trend-folded bias), and the
relevant items are the moment's purchased items. Metrics are averaged over the day's moments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Moment:
    user: str
    time: pd.Timestamp
    bought: frozenset[str]
    before: tuple[tuple[str, pd.Timestamp], ...]  # the customer's earlier events of the day: (item, time), in order


def purchase_moments(events: pd.DataFrame) -> list[Moment]:
    """The day's purchase moments from its raw events (``event_type`` absent: every event is a purchase)."""
    from recsys import schema

    frame = events[[schema.USER_ID, schema.ITEM_ID, schema.EVENT_TIME]].copy()
    frame[schema.USER_ID] = frame[schema.USER_ID].astype(str)
    frame[schema.ITEM_ID] = frame[schema.ITEM_ID].astype(str)
    frame["purchase"] = (events[schema.EVENT_TYPE] == "purchase").to_numpy() if schema.EVENT_TYPE in events else True
    frame = frame.sort_values([schema.USER_ID, schema.EVENT_TIME, schema.ITEM_ID], kind="stable")
    moments = []
    for user, mine in frame.groupby(schema.USER_ID, sort=True):
        times = mine[schema.EVENT_TIME].to_numpy()
        items = mine[schema.ITEM_ID].to_numpy(object)
        bought = mine["purchase"].to_numpy(bool)
        for when in pd.unique(times[bought]):
            at = bought & (times == when)
            earlier = times < when
            moments.append(Moment(str(user), pd.Timestamp(when), frozenset(items[at]),
                                  tuple(zip(items[earlier], map(pd.Timestamp, times[earlier]), strict=True))))
    return moments


def _as_utc(when: pd.Timestamp) -> datetime:
    stamp = when.tz_localize(UTC) if when.tzinfo is None else when.tz_convert(UTC)
    return stamp.to_pydatetime()


def live_history(base: tuple[list[str], list[int]], before: tuple[tuple[str, pd.Timestamp], ...],
                 length: int) -> tuple[list[str], list[int]]:
    """``base`` (the snapshot's item ids and days, most recent first) after the events ``before``, applied
    as the service's live state applies them."""
    from recsys.serving.live import UserState
    from recsys.serving.live import _moved_to_front as moved_to_front  # the live state's own rule

    if not before:
        return base
    items, days = base
    state = UserState(tuple(items), tuple(days), ("",) * len(items), _as_utc(before[0][1]), 0)
    for item, when in before:
        moment = _as_utc(when)
        state = moved_to_front(state, item, moment.date().isoformat(), moment, length)
    return list(state.items), list(state.days)


def rank_moments(scorer: Any, moments: list[Moment], k: int, allowed: np.ndarray | None,
                 length: int) -> tuple[list[list[str]], list[list[str]]]:
    """(daily rankings, realtime rankings) of ``moments`` by ``scorer`` (a :class:`recsys.serving.index.Scorer`
    loaded with the snapshot before the day)."""
    from recsys.serving.index import Scorer

    row_of = {str(i): r for r, i in enumerate(scorer.item_ids) if r > 0 and i != ""}
    keys, user_rows, histories = [], dict(scorer.user_rows), {}
    for n, moment in enumerate(moments):
        rows, days = scorer.history(moment.user)
        base = ([str(scorer.item_ids[r]) for r in rows], [int(d) for d in days])
        ids, counts = live_history(base, moment.before, length)
        pairs = [(row_of[i], d) for i, d in zip(ids, counts, strict=True) if i in row_of]
        key = f"{moment.user}\x00{n}"  # one pseudo-customer per moment: the user's row, the moment's history
        keys.append(key)
        if moment.user in scorer.user_rows:
            user_rows[key] = scorer.user_rows[moment.user]
        histories[key] = (np.array([r for r, _ in pairs], np.int64), np.array([d for _, d in pairs], np.float32))
    live = Scorer(scorer.user_table, scorer.item_table, user_rows, scorer.item_ids, item_bias=scorer.item_bias,
                  repeat_weight=scorer.repeat_weight, history_weight=scorer.history_weight, histories=histories,
                  history_table=scorer.history_table, query_length=scorer.query_length)
    daily = scorer.top_k([m.user for m in moments], k, allowed)
    return daily, live.top_k(keys, k, allowed)


def day_metrics(store: Any, version: int, day: date, k: int, metrics: Callable[..., dict[str, float]],
                allowed: Callable[[int], np.ndarray | None]) -> dict[str, Any] | None:
    """Daily and realtime metrics of ``version`` on ``day``'s purchase moments (None: no purchases);
    ``allowed(rows)`` is the mask of item rows the version serves (None: all)."""
    from recsys import registry
    from recsys.serving.index import load_scorer
    from recsys.storage import layout
    from recsys.storage.raw import read_partition

    moments = purchase_moments(read_partition(store, layout.raw_events(day)))
    if not moments:
        return None
    scorer = load_scorer(store, version, before=day)
    meta = registry.load(store)["versions"].get(str(version)) or {}
    query_length = int(meta.get("history_length", 50))
    length = max(query_length, int(meta.get("repeat_length", query_length)))
    daily, realtime = rank_moments(scorer, moments, k, allowed(len(scorer.item_ids)), length)
    relevant = [set(m.bought) for m in moments]
    return {"moments": len(moments), "with_same_day_events": sum(1 for m in moments if m.before),
            "daily": metrics(daily, relevant), "realtime": metrics(realtime, relevant)}
