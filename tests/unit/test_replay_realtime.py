"""bench/replay_quality/realtime.py: purchase moments, the live history rule, and daily vs real-time ranking."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "replay_quality"))
import realtime

from recsys.serving.index import Scorer


def _events(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_time", "event_type"]).assign(
        event_time=lambda f: pd.to_datetime(f["event_time"], utc=True))


def test_moments_split_purchases_by_time_and_carry_the_earlier_events() -> None:
    events = _events([
        ("u1", "A", "2011-12-01 10:00", "view"),
        ("u1", "B", "2011-12-01 10:05", "add_to_cart"),
        ("u1", "B", "2011-12-01 10:10", "purchase"),
        ("u1", "C", "2011-12-01 10:10", "purchase"),
        ("u1", "D", "2011-12-01 12:00", "purchase"),
        ("u2", "A", "2011-12-01 09:00", "view"),  # views only: no moment
    ])
    moments = realtime.purchase_moments(events)
    assert [(m.user, sorted(m.bought), [i for i, _ in m.before]) for m in moments] == [
        ("u1", ["B", "C"], ["A", "B"]),  # events at the purchase's own time are not "before" it
        ("u1", ["D"], ["A", "B", "B", "C"]),
    ]


def test_moments_without_event_types_treat_every_event_as_a_purchase() -> None:
    events = _events([("u1", "A", "2011-12-01 10:00", "x"), ("u1", "B", "2011-12-01 11:00", "x")]).drop(
        columns="event_type")
    assert [sorted(m.bought) for m in realtime.purchase_moments(events)] == [["A"], ["B"]]


def test_live_history_moves_items_to_the_front_and_counts_a_new_day_once() -> None:
    base = (["X", "Y"], [3, 1])  # snapshot: X bought on 3 days, Y on 1
    when = pd.Timestamp("2011-12-01 10:00", tz="UTC")
    before = (("Y", when), ("Z", when + pd.Timedelta(minutes=1)), ("Y", when + pd.Timedelta(minutes=2)))
    # Y: +1 (a new day), again the same day: no more; Z new with 1 day; the history is cut at 2
    assert realtime.live_history(base, before, length=2) == (["Y", "Z"], [2, 1])
    assert realtime.live_history(base, (), length=2) == base


def test_realtime_ranking_uses_same_day_items_and_equals_daily_without_them() -> None:
    # 3 items (row 0 = OOV); item vectors on two axes; the user row points nowhere
    items = np.array([[0, 0], [1, 0], [0, 1], [0.9, 0.1]], np.float32)
    scorer = Scorer(np.zeros((2, 2), np.float32), items, {"u1": 1}, np.array(["", "A", "B", "C"], object),
                    repeat_weight=0.0, history_weight=1.0, histories={"u1": (np.array([1]), np.array([1.0]))},
                    history_table=items, query_length=1)
    when = pd.Timestamp("2011-12-01 10:00", tz="UTC")
    moments = [realtime.Moment("u1", when, frozenset({"B"}), ()),
               realtime.Moment("u1", when + pd.Timedelta(hours=1), frozenset({"B"}),
                               (("B", when), ("B", when + pd.Timedelta(minutes=1))))]
    daily, live = realtime.rank_moments(scorer, moments, k=1, allowed=None, length=5)
    assert daily == [["A"], ["A"]]  # the snapshot (item A) points at A
    assert live[0] == daily[0]  # no same-day events: the same answer
    assert live[1] == ["B"]  # B viewed and carted today: the newest item is the query (query_length 1)


def test_realtime_ranking_adds_the_session_term_of_the_version() -> None:
    # the repeat term pushes a viewed item down (negative, as learned on shops without repeat buying); the session
    # weight lifts it back above the rest
    items = np.array([[0, 0], [1, 0], [0, 1], [0.9, 0.1]], np.float32)
    scorer = Scorer(np.zeros((2, 2), np.float32), items, {"u1": 1}, np.array(["", "A", "B", "C"], object),
                    item_bias=np.array([0, 1.0, 0, 0.5], np.float32), repeat_weight=-1.0, history_weight=0.0,
                    session_weight=0.0)
    when = pd.Timestamp("2011-12-01 10:00", tz="UTC")
    moment = realtime.purchase_moments(_events([("u1", "C", "2011-12-01 09:00", "view"),
                                                ("u1", "C", "2011-12-01 10:00", "purchase")]))[0]
    assert moment.session == ("C",) and moment.time == when
    daily, live = realtime.rank_moments(scorer, [moment], k=1, allowed=None, length=5)
    assert daily == live == [["A"]]  # no session weight: C (viewed, so -ln 2) stays below A
    scorer.session_weight = 2.0
    daily, live = realtime.rank_moments(scorer, [moment], k=1, allowed=None, length=5)
    assert daily == [["A"]] and live == [["C"]]  # 0.5 - ln 2 + 2 > 1
