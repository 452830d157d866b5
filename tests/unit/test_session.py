"""recsys.model.session: session items, the moments a fit reads, the fit itself, and its scores = the scorer's."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys.model import session
from recsys.serving.index import Scorer, candidate_table


def _events(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_time", "event_type"]).assign(
        event_time=lambda f: pd.to_datetime(f["event_time"], utc=True))


def test_next_session_puts_a_view_first_and_drops_a_bought_item() -> None:
    s: tuple[str, ...] = ()
    for item, bought in (("A", False), ("B", False), ("A", False), ("C", False)):
        s = session.next_session(s, item, bought, length=3)
    assert s == ("C", "A", "B")
    assert session.next_session(s, "A", True, length=3) == ("C", "B")
    assert session.next_session(s, "D", False, length=2) == ("D", "C")


def test_moments_carry_the_session_items_at_their_time() -> None:
    moments = session.purchase_moments(_events([
        ("u1", "A", "2011-12-01 10:00", "view"),
        ("u1", "B", "2011-12-01 10:05", "add_to_cart"),
        ("u1", "B", "2011-12-01 10:10", "purchase"),
        ("u1", "C", "2011-12-01 12:00", "purchase"),
        ("u2", "A", "2011-12-01 09:00", "purchase"),  # a purchase-only customer: no session
    ]))
    assert [(m.user, sorted(m.bought), m.session) for m in moments] == [
        ("u1", ["B"], ("B", "A")),
        ("u1", ["C"], ("A",)),  # B was bought since
        ("u2", ["A"], ()),
    ]


def test_the_fit_finds_the_log_odds_of_a_session_item_being_bought() -> None:
    # two candidates of equal base score; the session item (column 0) is bought in 3 of 4 moments:
    # p = e^s / (e^s + 1) = 3/4, so s = ln 3; the session query has nothing to say (mean 0)
    moments = 400
    inputs = session.MomentInputs(
        base=np.zeros((moments, 2)), mean=np.zeros((moments, 2)), candidates=np.eye(2),
        session=[np.array([0])] * moments, bought=[np.array([0 if m % 4 else 1]) for m in range(moments)],
        weight=np.ones(2))
    weight, query_weight, gain = session.fit_weights(inputs, prior=1e-9)
    assert weight == pytest.approx(math.log(3), abs=1e-4)
    assert query_weight == pytest.approx(0.0, abs=1e-6)
    # gain per bought item: (3/4 ln 3/4 + 1/4 ln 1/4) - ln 1/2
    assert gain == pytest.approx(0.75 * math.log(0.75) + 0.25 * math.log(0.25) + math.log(2), abs=1e-5)


def test_no_signal_fits_nothing() -> None:
    # the session item is bought exactly as often as the base scores say (1 in 2): the weights stay 0
    inputs = session.MomentInputs(
        base=np.zeros((4, 2)), mean=np.zeros((4, 2)), candidates=np.eye(2),
        session=[np.array([0])] * 4, bought=[np.array([m % 2]) for m in range(4)], weight=np.ones(2))
    weight, query_weight, gain = session.fit_weights(inputs)
    assert (weight, query_weight, gain) == (pytest.approx(0.0, abs=1e-9), pytest.approx(0.0, abs=1e-9), 0.0)


def _random_inputs(moments: int, columns: int, seed: int = 0) -> session.MomentInputs:
    rng = np.random.default_rng(seed)
    dim = 4
    return session.MomentInputs(
        base=rng.normal(size=(moments, columns)).astype(np.float32), mean=rng.normal(size=(moments, dim)),
        candidates=rng.normal(size=(columns, dim)) / 2,
        session=[rng.choice(columns, size=rng.integers(1, 4), replace=False) for _ in range(moments)],
        bought=[rng.choice(columns, size=rng.integers(1, 3), replace=False) for _ in range(moments)],
        weight=rng.uniform(1, 3, size=columns))


def test_the_fit_in_blocks_equals_the_fit_in_one_block() -> None:
    inputs = _random_inputs(300, 50)
    whole = session.fit_weights(inputs, block=10_000)
    assert whole[0] != 0.0 and whole[1] != 0.0  # the random data has something to fit
    for block in (1, 7, 64, 299):
        assert session.fit_weights(inputs, block=block) == pytest.approx(whole, rel=1e-9, abs=1e-12)


def test_the_fits_memory_is_a_few_blocks_not_the_whole_moment_matrix() -> None:
    import tracemalloc

    moments, columns, block = 1024, 4096, 32
    inputs = _random_inputs(moments, columns, seed=1)
    tracemalloc.start()
    try:
        session.fit_weights(inputs, steps=2, block=block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one_block = block * columns * 8  # one [block, n] float64 array: 1 MiB here; one [M, n] array is 32 MiB
    assert peak < 12 * one_block, f"the fit allocated {peak / 2**20:.1f} MiB at its peak"


def _tables(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    items, dim = 12, 4
    return {"user": rng.normal(size=(4, dim)).astype(np.float32),
            "item": rng.normal(size=(items, dim)).astype(np.float32),
            "word": rng.normal(size=(6, dim)).astype(np.float32), "price": rng.normal(size=(3, dim)).astype(np.float32),
            "item_words": rng.integers(0, 6, size=(items, 3)).astype(np.int32),
            "item_price": rng.integers(0, 3, size=items).astype(np.int32),
            "item_bias": rng.normal(size=items).astype(np.float32)}


def test_the_fits_scores_are_the_scorers_with_the_live_history_and_session() -> None:
    tables = _tables()
    item_rows = {f"i{r}": r for r in range(1, 12)}
    snapshot = {"u1": (["i1", "i2", "i3"], [3, 1, 2]), "new": (["i4"], [1])}
    events = _events([
        ("u1", "i5", "2011-12-01 10:00", "view"), ("u1", "i2", "2011-12-01 10:01", "add_to_cart"),
        ("u1", "i6", "2011-12-01 10:02", "purchase"), ("u1", "i7", "2011-12-01 10:03", "view"),
        ("u1", "i7", "2011-12-01 10:04", "purchase"),
        ("new", "i9", "2011-12-01 11:00", "view"), ("new", "i8", "2011-12-01 11:01", "purchase"),
    ])
    moments = session.purchase_moments(events, length=2)
    assert [m.session for m in moments] == [("i9",), ("i2", "i5"), ("i7", "i2")]  # users in id order
    query_length, length, repeat = 2, 3, -0.4
    inputs = session.moment_inputs(tables, moments, {"u1": 2}, item_rows, snapshot, tables["item_bias"], repeat,
                                   query_length, length)
    assert sorted(inputs.weight) == [1.0] * 11  # a small catalog: every item, unsampled
    weight, query_weight = 0.9, -0.3
    x = np.zeros_like(inputs.base)
    for m, cols in enumerate(inputs.session):
        x[m, cols] = 1
    fit_scores = inputs.base + weight * x + query_weight * (inputs.mean @ inputs.candidates.T)
    # the same moments through the serving scorer: one pseudo-customer per moment with its live history
    item_ids = np.array([""] + [f"i{r}" for r in range(1, 12)], dtype=object)
    keys, histories, sessions, user_rows = [], {}, {}, {}
    for n, m in enumerate(moments):
        ids, days = session.live_history(snapshot.get(m.user, ([], [])), m.before, length)
        key = f"{m.user}/{n}"
        keys.append(key)
        histories[key] = (np.array([item_rows[i] for i in ids]), np.array(days, np.float32))
        sessions[key] = np.array([item_rows[i] for i in m.session])
        if m.user == "u1":
            user_rows[key] = 2
    scorer = Scorer(tables["user"], candidate_table(tables), user_rows, item_ids, item_bias=tables["item_bias"],
                    repeat_weight=repeat, history_weight=1.0, histories=histories, history_table=tables["item"],
                    query_length=query_length, session_weight=weight, session_query_weight=query_weight,
                    sessions=sessions)
    expected = scorer.scores(keys)
    # columns hold item rows in the fit's order: the needed rows first, then the others
    needed = sorted({item_rows[i] for m in moments for i in (*m.session, *m.bought)})
    columns = np.array(needed + [r for r in range(1, 12) if r not in needed])
    np.testing.assert_allclose(fit_scores, expected[:, columns], rtol=1e-5, atol=1e-5)
    assert [sorted(columns[c]) for c in inputs.bought] == [[8], [6], [7]]


def test_a_purchase_only_day_fits_zero_weights(tmp_path) -> None:
    from recsys.config import Settings
    from recsys.storage import layout
    from recsys.storage.local import LocalStore

    store = LocalStore(tmp_path)
    day = date(2011, 12, 1)
    store.write_parquet(f"{layout.raw_events(day)}/part-0.parquet", _events([
        (f"u{n}", f"i{n % 5}", f"2011-12-01 1{n % 10}:00", "purchase") for n in range(200)]))
    store.mark_success(layout.raw_events(day))
    fit = session.fit_session(store, Settings(), day, _tables())
    assert (fit[session.SESSION_WEIGHT], fit[session.SESSION_QUERY_WEIGHT], fit["moments"]) == (0.0, 0.0, 0)


def test_a_live_answer_adds_the_session_term_for_the_session_items_only() -> None:
    from recsys.serving.ids import IdIndex
    from recsys.serving.model_holder import LiveInputs, LoadedVersion

    ids = np.array(["", "A", "B", "C"], dtype=object)
    items = np.array([[0, 0], [1, 0], [0, 1], [0.9, 0.1]], np.float32)
    bias = np.array([0, 1.0, 0, 0.5], np.float32)

    def loaded(weight: float, query_weight: float) -> LoadedVersion:
        full = Scorer(np.zeros((2, 2), np.float32), items, {"u": 1}, ids, item_bias=bias, repeat_weight=-1.0,
                      history_weight=1.0, history_table=items, query_length=5,
                      session_weight=weight, session_query_weight=query_weight)
        rows = IdIndex.of({"A": 1, "B": 2, "C": 3})
        return LoadedVersion(1, "sha", {}, Scorer(full.user_table, items, {"u": 1}, ids, bias), full,
                             np.arange(4), np.array(["", "a", "b", "c"], dtype=object), rows, rows, items, items, {},
                             np.array([1, 3, 2]), np.zeros(4))

    # C viewed today: the query (its id embedding) points at A and C; the repeat term (-ln 2) keeps C below A
    live = LiveInputs((["C"], [1]), (), ("C",))
    c_score = 0.82 + 0.5 - math.log(2)
    assert loaded(0.0, 0.0).recommend("u", 3, live=live).item_ids == ["A", "C", "B"]
    answer = loaded(2.0, 0.0).recommend("u", 3, live=live)  # a session weight of 2 lifts C above A (1.9)
    assert answer.item_ids == ["C", "A", "B"]
    assert answer.scores == pytest.approx([c_score + 2.0, 1.9, 0.1], abs=1e-6)
    # the same history without session items (or a daily answer): no session term
    assert loaded(2.0, 0.0).recommend("u", 3, live=LiveInputs((["C"], [1]))).item_ids == ["A", "C", "B"]
    # the query part: -1 x the session items' mean id embedding cancels the history's: bias and repeat term only
    answer = loaded(0.0, -1.0).recommend("u", 3, live=live)
    assert answer.item_ids == ["A", "B", "C"]
    assert answer.scores == pytest.approx([1.0, 0.0, 0.5 - math.log(2)], abs=1e-6)


def test_a_fit_on_a_built_day_where_shoppers_buy_what_they_viewed_finds_a_large_session_weight(
        store, publish_events) -> None:
    from recsys.config import Settings
    from recsys.features import build_features
    from recsys.storage import layout
    from recsys.storage.raw import fingerprint
    from recsys.validation.results import ValidationReport

    def publish(day: date, rows: list) -> None:  # published and passed validation (features need that)
        current = fingerprint(store, publish_events(store, day, rows))
        store.write_json(layout.validation_summary(day), ValidationReport(
            day, True, len(rows), report_path=layout.validation_summary(day), fingerprint=current,
            passed_fingerprint=current).as_dict())

    d1, d2 = date(2011, 1, 4), date(2011, 1, 5)
    items = [f"i{n}" for n in range(10)]
    day1 = [(f"a-{n}", "2011-01-04 10:00:00", f"c{n}", items[n % 10], "purchase", 1, 1.0) for n in range(120)]
    # day 2: every customer views two items, then buys the first one viewed
    day2 = []
    for n in range(120):
        seen, other = items[(n * 3) % 10], items[(n * 3 + 1) % 10]
        day2 += [(f"b-{n}-1", "2011-01-05 09:00:00", f"c{n}", seen, "view", 1, 1.0),
                 (f"b-{n}-2", "2011-01-05 09:01:00", f"c{n}", other, "view", 1, 1.0),
                 (f"b-{n}-3", "2011-01-05 09:05:00", f"c{n}", seen, "purchase", 1, 1.0)]
    publish(d1, day1)
    publish(d2, day2)
    settings = Settings(storage_root=str(store.root), holdout_fraction=0.25, min_user_count=1)
    stats = [build_features(store, settings, d) for d in (d1, d2)]
    rng = np.random.default_rng(0)
    tables = {"user": rng.normal(0, 0.1, size=(stats[1].user_vocab_size, 4)).astype(np.float32),
              "item": rng.normal(0, 0.1, size=(stats[1].item_vocab_size, 4)).astype(np.float32)}
    fit = session.fit_session(store, settings, d2, tables)
    # the held-out quarter of 120 customers, each one moment with two session items, one of them bought
    assert 20 <= fit["moments"] <= 50 and fit["bought"] == fit["moments"]
    # 1 of 2 session items bought, against about 1 in 10 items by the (nearly flat) base scores: far above 0
    assert fit[session.SESSION_WEIGHT] > 1.5
    assert fit["loglik_gain_per_item"] > 0.5
