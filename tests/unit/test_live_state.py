"""The live state's rules without a broker: the snapshot's history rule per event, the snapshot boundary,
duplicates, the user cap, item events where the latest by event time wins, and when the state may claim to be
as of a moment (every partition consumed past the end offsets asked then)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from recsys.serving.live import LiveConfig, LiveFollower, LiveState

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def ev(n: int, user: str, item: str, when: datetime = T0) -> dict[str, object]:
    return {"event_id": f"e{n}", "event_time": when, "user_id": user, "item_id": item, "event_type": "view"}


def item(n: int, item_id: str, kind: str, when: datetime = T0, price: float | None = None) -> dict[str, object]:
    return {"event_id": f"c{n}", "event_time": when, "item_id": item_id, "event_type": kind, "price": price}


def test_an_event_moves_its_item_first_and_counts_a_new_day_once() -> None:
    state = LiveState(LiveConfig(bootstrap="x", length=3))
    assert state.apply_event(ev(1, "u", "b"), (["a", "b", "c"], [5, 2, 1]))
    assert state.apply_event(ev(2, "u", "b", T0 + timedelta(hours=1)), None)  # same day: no new day
    user = state.user("u")
    assert user is not None
    assert (user.items, user.days) == (("b", "a", "c"), (3, 5, 1))
    assert state.apply_event(ev(3, "u", "d", T0 + timedelta(days=1)), None)
    assert state.apply_event(ev(4, "u", "b", T0 + timedelta(days=1)), None)
    user = state.user("u")
    assert user is not None
    assert (user.items, user.days) == (("b", "d", "a"), (4, 1, 5))  # cut at length 3: c dropped
    assert user.events == 4 and user.last_event_at == T0 + timedelta(days=1)


def test_events_before_the_snapshot_end_and_repeated_ids_are_not_applied() -> None:
    state = LiveState(LiveConfig(bootstrap="x"))
    state.events_from = T0
    assert not state.apply_event(ev(1, "u", "a", T0 - timedelta(seconds=1)), None)
    assert state.apply_event(ev(2, "u", "a"), None)
    assert not state.apply_event(ev(2, "u", "a"), None)
    assert state.counts["before_snapshot"] == 1 and state.counts["duplicates"] == 1 and state.counts["applied"] == 1


def test_the_least_recently_active_users_are_dropped_beyond_the_cap() -> None:
    state = LiveState(LiveConfig(bootstrap="x", max_users=2))
    for n, user in enumerate(("u1", "u2", "u1", "u3")):
        state.apply_event(ev(n, user, "a"), None)
    assert state.user("u2") is None and state.user("u1") is not None and state.user("u3") is not None
    assert state.counts["evicted_users"] == 1


def test_item_events_latest_by_event_time_wins() -> None:
    state = LiveState(LiveConfig(bootstrap="x"))
    assert state.apply_item_event(item(1, "a", "out_of_stock"))
    assert state.unavailable == {"a"}
    assert not state.apply_item_event(item(2, "a", "back_in_stock", T0 - timedelta(minutes=1)))  # older: ignored
    assert state.unavailable == {"a"}
    assert state.apply_item_event(item(3, "a", "price_change", T0 + timedelta(minutes=1), price=2.5))
    assert state.unavailable == {"a"}  # a price change keeps the availability
    assert state.apply_item_event(item(4, "a", "back_in_stock", T0 + timedelta(minutes=2)))
    assert state.unavailable == frozenset()
    assert state.apply_item_event(item(5, "b", "delisted"))
    inputs, user = state.inputs("nobody")
    assert inputs.history is None and user is None and set(inputs.unavailable) == {"b"}


class _Positions:
    """A consumer that only knows its positions (the narrow part :meth:`LiveFollower._passed` reads)."""

    def __init__(self, offsets: dict[tuple[str, int], int]) -> None:
        self.offsets = offsets

    def position(self, partitions: list[Any]) -> list[Any]:
        from confluent_kafka import TopicPartition

        return [TopicPartition(tp.topic, tp.partition, self.offsets[(tp.topic, tp.partition)]) for tp in partitions]


def test_the_state_is_as_of_the_end_offsets_only_once_every_partition_passed_them() -> None:
    ends = {("e", 0): 10, ("e", 1): 0, ("c", 0): 3}
    # partition e/1 was assigned at its (empty) end: no position yet, it counts once it reported its end
    assert not LiveFollower._passed(_Positions({("e", 0): 10, ("e", 1): -1001, ("c", 0): 3}), ends, set())
    assert LiveFollower._passed(_Positions({("e", 0): 10, ("e", 1): -1001, ("c", 0): 3}), ends, {("e", 1)})
    assert not LiveFollower._passed(_Positions({("e", 0): 9, ("e", 1): 0, ("c", 0): 3}), ends, {("e", 1)})
    assert LiveFollower._passed(_Positions({("e", 0): 12, ("e", 1): 0, ("c", 0): 4}), ends, set())


def test_session_items_are_the_days_views_and_carts_not_bought_since() -> None:
    state = LiveState(LiveConfig(bootstrap="x", session_length=2))
    kinds = [("a", "view"), ("b", "add_to_cart"), ("c", "view"), ("b", "purchase"), ("a", "view")]
    for n, (item_id, kind) in enumerate(kinds):
        state.apply_event(ev(n, "u", item_id, T0 + timedelta(minutes=n)) | {"event_type": kind}, None)
    user = state.user("u")
    assert user is not None
    # b left when bought; a viewed again comes first; c kept; the list cut at 2
    assert (user.session, user.session_day) == (("a", "c"), "2026-12-01")
    assert user.items == ("a", "b", "c")  # every event, purchases included, still moves the history
    inputs, _ = state.inputs("u", now=T0 + timedelta(hours=1))
    assert tuple(inputs.session) == ("a", "c")
    # the next day the session is over: not served, and a new day's event starts a new one
    assert tuple(state.inputs("u", now=T0 + timedelta(days=1))[0].session) == ()
    state.apply_event(ev(9, "u", "d", T0 + timedelta(days=1)), None)
    user = state.user("u")
    assert user is not None and (user.session, user.session_day) == (("d",), "2026-12-02")
    # a late event of the day before leaves today's session alone
    state.apply_event(ev(10, "u", "e", T0 + timedelta(hours=2)), None)
    user = state.user("u")
    assert user is not None and user.session == ("d",)
    assert state.inputs("nobody")[0].session == ()
