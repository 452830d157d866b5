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
from datetime import date
from typing import Any

import numpy as np

from recsys.model import session

# the moments and the live rule are the model's own (the session weights are fitted on the same moments)
Moment = session.Moment
purchase_moments = session.purchase_moments
live_history = session.live_history


def rank_moments(scorer: Any, moments: list[Moment], k: int, allowed: np.ndarray | None,
                 length: int) -> tuple[list[list[str]], list[list[str]]]:
    """(daily rankings, realtime rankings) of ``moments`` by ``scorer`` (a :class:`recsys.serving.index.Scorer`
    loaded with the snapshot before the day)."""
    from recsys.serving.index import Scorer

    row_of = {str(i): r for r, i in enumerate(scorer.item_ids) if r > 0 and i != ""}
    keys, user_rows, histories, sessions = [], dict(scorer.user_rows), {}, {}
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
        sessions[key] = np.array([row_of[i] for i in moment.session if i in row_of], np.int64)
    live = Scorer(scorer.user_table, scorer.item_table, user_rows, scorer.item_ids, item_bias=scorer.item_bias,
                  repeat_weight=scorer.repeat_weight, history_weight=scorer.history_weight, histories=histories,
                  history_table=scorer.history_table, query_length=scorer.query_length,
                  session_weight=scorer.session_weight, session_query_weight=scorer.session_query_weight,
                  sessions=sessions)
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

    meta = registry.load(store)["versions"].get(str(version)) or {}
    query_length = int(meta.get("history_length", 50))
    moments = purchase_moments(read_partition(store, layout.raw_events(day)), query_length)
    if not moments:
        return None
    scorer = load_scorer(store, version, before=day)
    length = max(query_length, int(meta.get("repeat_length", query_length)))
    daily, realtime = rank_moments(scorer, moments, k, allowed(len(scorer.item_ids)), length)
    relevant = [set(m.bought) for m in moments]
    return {"moments": len(moments), "with_same_day_events": sum(1 for m in moments if m.before),
            "with_session_items": sum(1 for m in moments if m.session),
            "session_weight": scorer.session_weight, "session_query_weight": scorer.session_query_weight,
            "daily": metrics(daily, relevant), "realtime": metrics(realtime, relevant)}
