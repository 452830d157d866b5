"""recsys.datasets.synthetic regimes (issue 19): each regime's defining property on generated days, and the
default regime byte for byte what the generator produced before regimes existed."""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta

import numpy as np
import pytest

from recsys import schema
from recsys.datasets import synthetic
from recsys.storage.local import LocalStore

START = date(2026, 1, 1)  # a Thursday


def _days(config: synthetic.SyntheticConfig, n: int):
    """``n`` consecutive days from START over one universe (as publish_days generates them)."""
    universe = synthetic.Universe(config)
    return [synthetic.generate_day(config, START + timedelta(days=k), universe) for k in range(n)]


def test_default_regime_is_the_output_from_before_regimes(tmp_path):
    # the digests were taken at a485647 (before regimes) with the same calls
    config = synthetic.SyntheticConfig.for_regime("default", events=3000, seed=11, chunk_events=1000)
    assert config == synthetic.SyntheticConfig(events=3000, seed=11, chunk_events=1000)
    frame = synthetic.generate_day(config, date(2026, 1, 2))
    digest = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
    assert digest == "9b43195884f9633ff8f8773c5c90955702e9d5c0cd1005a93bf5ed8239a0e50c"
    store = LocalStore(tmp_path)
    synthetic.publish_days(store, config, date(2026, 1, 1), days=2)
    stats = (tmp_path / "raw/events/dt=2026-01-02/_synthetic.json").read_bytes()
    assert "regime" not in json.loads(stats)
    assert hashlib.sha256(stats).hexdigest()[:16] == "ad127ac0da14cb42"


def test_every_regime_is_deterministic_per_seed_and_day():
    for regime in ("sparse", "no_repeat", "sessions", "seasonal"):
        config = synthetic.SyntheticConfig.for_regime(regime, events=None if regime == "sparse" else 2000)
        first, again = _days(config, 3), _days(config, 3)
        for a, b in zip(first, again, strict=True):
            assert a.equals(b), regime


def test_sparse_days_are_thin_and_vary():
    config = synthetic.SyntheticConfig.for_regime("sparse")
    assert (config.events, config.n_users, config.n_items) == (90, 600, 500)
    days = _days(config, 28)
    events = np.array([len(d) for d in days])
    buyers = np.array([d.loc[d[schema.EVENT_TYPE] == "purchase", schema.USER_ID].nunique() for d in days])
    assert 70 <= events.mean() <= 110 and 12 <= buyers.mean() <= 28, (events, buyers)
    assert events.min() < 0.5 * events.mean() < events.max() / 3, events  # thin days and busy days
    assert [synthetic.day_events(config, START + timedelta(days=k)) for k in range(28)] == events.tolist()


def test_no_repeat_customers_never_buy_an_item_twice():
    config = synthetic.SyntheticConfig.for_regime("no_repeat", events=4000, users=300, items=200)
    days = _days(config, 6)
    bought = [d.loc[d[schema.EVENT_TYPE] == "purchase", [schema.USER_ID, schema.ITEM_ID]] for d in days]
    pairs = np.concatenate([b.to_numpy() for b in bought])
    assert len(pairs) > 500
    assert len({tuple(p) for p in pairs}) == len(pairs)
    # the same universe in the default regime repeats pairs (so the rule does something here)
    plain = _days(synthetic.SyntheticConfig(events=4000, users=300, items=200), 6)
    buys = np.concatenate([d.loc[d[schema.EVENT_TYPE] == "purchase", [schema.USER_ID, schema.ITEM_ID]].to_numpy()
                           for d in plain])
    assert len({tuple(p) for p in buys}) < 0.9 * len(buys)


def test_sessions_users_have_one_session_and_never_return():
    config = synthetic.SyntheticConfig.for_regime("sessions", events=3000)
    days = _days(config, 3)
    seen: set[str] = set()
    for day in days:
        per_user = day.groupby(schema.USER_ID)[schema.SESSION_ID].nunique()
        per_session = day.groupby(schema.SESSION_ID)[schema.USER_ID].nunique()
        assert (per_user == 1).all() and (per_session == 1).all()
        users = set(day[schema.USER_ID])
        assert not users & seen
        seen |= users
    assert len(seen) == sum(d[schema.SESSION_ID].nunique() for d in days)


def test_seasonal_weekly_cycle_and_promotion_days():
    config = synthetic.SyntheticConfig.for_regime("seasonal", events=3000)
    n = 35
    days = _days(config, n)
    promoted = {k: synthetic.promotion_items(config, START + timedelta(days=k)) for k in range(n)}
    promo_days = [k for k in range(n) if len(promoted[k])]
    assert 2 <= len(promo_days) <= 15, promo_days
    for k, day in enumerate(days):
        ids = [f"i{i + 1:07d}" for i in promoted[k]]
        share = day[schema.ITEM_ID].isin(ids).mean() if ids else 0.0
        if ids:
            assert len(ids) == synthetic.PROMOTION_ITEMS and 0.25 < share < 0.4, (k, share)
    # outside promotion days, events by weekday follow the cycle: Saturdays >= 3x Tuesdays
    by_weekday = {w: [len(days[k]) for k in range(n) if not len(promoted[k])
                      and (START + timedelta(days=k)).weekday() == w] for w in range(7)}
    assert min(by_weekday[5]) >= 3 * max(by_weekday[1])
    # each weekday favours its own categories (number % 7 == weekday): their share is higher on that weekday
    catalog = synthetic.Universe(config).catalog().set_index(schema.ITEM_ID)[schema.CATEGORY]
    group = {k: days[k][schema.ITEM_ID].map(catalog).str[1:].astype(int) % 7 for k in range(n)}
    for w in range(7):
        own = np.mean([(group[k] == w).mean() for k in range(n) if (START + timedelta(days=k)).weekday() == w])
        other = np.mean([(group[k] == w).mean() for k in range(n) if (START + timedelta(days=k)).weekday() != w])
        assert own > 1.5 * other, (w, own, other)


def test_unknown_regime_is_refused():
    with pytest.raises(synthetic.SyntheticError, match="regime must be one of"):
        synthetic.SyntheticConfig.for_regime("weekly")
