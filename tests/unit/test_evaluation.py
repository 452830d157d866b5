"""recsys.evaluation: recall@k, the deploy gate, and champion/challenger on a hand-made store."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys import registry, schema
from recsys.config import Settings
from recsys.evaluation import (
    Decision,
    EvaluationError,
    Evidence,
    Thresholds,
    decide,
    evaluate_candidate,
    pooled_evidence,
    popularity_ranking,
    recall_at_k,
)
from recsys.serving import popularity
from recsys.serving.popularity import PairedRecall, fallback_verdict

# --- recall_at_k --------------------------------------------------------------------------------

RANKED = [["a", "b", "c"], ["d", "a", "b"], ["x"]]
RELEVANT = [{"a", "c"}, {"b", "e"}, set()]


def test_recall_at_2_by_hand():
    # user 0: top-2 {a,b} & {a,c} = {a} -> 1/2 ; user 1: {d,a} & {b,e} = {} -> 0 ; user 2: nothing relevant, skipped
    assert recall_at_k(RANKED, RELEVANT, 2) == pytest.approx(0.25)


def test_recall_at_3_by_hand():
    # user 0: {a,b,c} & {a,c} -> 2/2 ; user 1: {d,a,b} & {b,e} = {b} -> 1/2 ; mean 0.75
    assert recall_at_k(RANKED, RELEVANT, 3) == pytest.approx(0.75)


def test_recall_at_1_and_k_beyond_the_list():
    # k=1: user 0 {a} -> 1/2, user 1 {d} -> 0 -> 0.25 ; k=50 is the same as k=3 here
    assert recall_at_k(RANKED, RELEVANT, 1) == pytest.approx(0.25)
    assert recall_at_k(RANKED, RELEVANT, 50) == pytest.approx(0.75)


def test_recall_counts_a_repeated_item_once():
    assert recall_at_k([["a", "a", "z"]], [{"a", "b"}], 2) == pytest.approx(0.5)


def test_recall_without_relevant_items_is_zero():
    assert recall_at_k([["a"], []], [set(), set()], 5) == 0.0
    assert recall_at_k([], [], 5) == 0.0


def test_recall_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 ranked lists for 1 users"):
        recall_at_k([["a"], ["b"]], [{"a"}], 1)


# --- decide ---------------------------------------------------------------------------------------

GATE = Thresholds(min_recall=0.25, max_regression=0.125, min_eval_users=5)  # binary-exact values


@pytest.mark.parametrize(
    "thresholds",
    [Thresholds(None, 0.0, 5), Thresholds(0.1, None, 5), Thresholds(None, None, 1)],
)
def test_no_thresholds_never_blesses(thresholds):
    d = decide(0.9, None, 1000, thresholds)
    assert d == Decision(False, "no thresholds configured: a candidate is never blessed without a gate")


def test_too_few_users_is_not_blessed_whatever_the_metric():
    d = decide(0.9, 0.1, 4, GATE)
    assert not d.blessed
    assert d.reason == "only 4 held-out users (< 5): too few to decide"


def test_below_the_floor_is_not_blessed():
    d = decide(0.125, None, 5, GATE, metric="recall@100")
    assert not d.blessed
    assert d.reason == "candidate recall@100 0.1250 is below the floor 0.2500"


def test_no_champion_and_at_the_floor_blesses():
    d = decide(0.25, None, 5, GATE)
    assert d.blessed
    assert d.reason == "no champion yet; candidate recall 0.2500 clears the floor 0.2500"


def test_regression_beyond_the_allowance_is_not_blessed():
    # 0.5 - 0.75 = -0.25, allowed -0.125
    d = decide(0.5, 0.75, 10, GATE)
    assert not d.blessed
    assert d.reason == (
        "candidate recall 0.5000 is 0.2500 below the champion's 0.7500 (allowed regression 0.1250)"
    )


def test_regression_within_the_allowance_blesses():
    # 0.5 - 0.625 = -0.125: exactly the allowance
    d = decide(0.5, 0.625, 10, GATE)
    assert d.blessed
    assert d.reason == "candidate recall 0.5000 vs champion 0.6250 (-0.1250, allowed regression 0.1250)"


def test_a_tie_blesses_even_with_zero_allowance():
    d = decide(0.5, 0.5, 10, Thresholds(0.25, 0.0, 5))
    assert d.blessed
    assert "+0.0000" in d.reason


def test_an_improvement_blesses():
    d = decide(0.75, 0.5, 10, GATE, metric="recall@10")
    assert d == Decision(True, "candidate recall@10 0.7500 vs champion 0.5000 (+0.2500, allowed regression 0.1250)")
    assert d.as_dict() == {"blessed": True, "reason": d.reason}


def test_a_worse_candidate_below_the_floor_reports_the_floor_first():
    d = decide(0.0, 0.75, 10, GATE)
    assert "below the floor" in d.reason


# --- evaluate_candidate on a hand-made store (no TensorFlow: tables written by hand) -------------

D1, D2 = date(2011, 1, 4), date(2011, 1, 5)
USERS = [[0, 0], [1, 0], [0, 1], [1, 1]]  # OOV, u1, u2, u3
GOOD_ITEMS = [[9, 9], [1, 0], [0, 1], [0.5, 0.5]]  # OOV, A, B, C: u1 -> A first, u2 -> B first
BAD_ITEMS = [[9, 9], [0, 1], [1, 0], [0.5, 0.5]]  # A and B swapped: u1 -> B first, u2 -> A first
# held out on D2: u1 bought A, u2 bought B ; u3 -> C is a train example (not evaluated)
# recall@1: GOOD 1/1 and 1/1 -> 1.0 ; BAD 0 and 0 -> 0.0


@pytest.fixture
def eval_store(store, put_vocab):
    put_vocab(store, "users", ["u1", "u2", "u3"])
    put_vocab(store, "items", ["A", "B", "C"])
    examples = pd.DataFrame(
        {
            schema.USER_ID: ["u1", "u2", "u3"],
            schema.ITEM_ID: ["A", "B", "C"],
            schema.USER_ROW: [1, 2, 3],
            schema.ITEM_ROW: [1, 2, 3],
            schema.SPLIT: ["holdout", "holdout", "train"],
        }
    )
    store.write_parquet("features/dt=2011-01-05/examples.parquet", examples)
    store.mark_success("features/dt=2011-01-05")
    return store


def _settings(store, **kw) -> Settings:
    base = {"storage_root": str(store.root), "k": 1, "min_eval_users": 2, "min_recall": 0.5, "max_regression": 0.0}
    return Settings(**(base | kw))


def test_a_better_candidate_is_blessed_and_recorded(eval_store, put_version):
    put_version(eval_store, 1, D1, USERS, BAD_ITEMS)
    registry.set_champion(eval_store, 1, "deployed", "first", None)
    put_version(eval_store, 2, D2, USERS, GOOD_ITEMS)

    result = evaluate_candidate(eval_store, _settings(eval_store), D2, run_id="run-7")
    assert result["candidate_version"] == 2
    assert result["champion_version"] == 1
    assert result["candidate_metrics"]["recall@1"] == 1.0
    assert result["champion_metrics"]["recall@1"] == 0.0
    assert (result["eval_users"], result["eval_examples"]) == (2, 2)
    assert result["blessed"] is True
    assert result["reason"] == "candidate recall@1 1.0000 vs champion 0.0000 (+1.0000, allowed regression 0.0000)"
    assert result["reused"] is False

    reg = registry.load(eval_store)
    assert reg["decisions"]["2011-01-05"] == {k: v for k, v in result.items() if k != "reused"}
    assert reg["history"][-1]["action"] == "blessed"
    assert reg["history"][-1]["run_id"] == "run-7"
    assert reg["champion"] == 1  # evaluation never moves the champion


def test_every_decision_records_trailing_popularity_on_the_same_users(eval_store, put_version):
    # the day before D2: B bought twice, A once -> popularity ranks B, A, C (the OOV row never)
    before = pd.DataFrame({schema.USER_ID: ["u1", "u2", "u3"], schema.ITEM_ID: ["B", "B", "A"],
                           schema.USER_ROW: [1, 2, 3], schema.ITEM_ROW: [2, 2, 1], schema.SPLIT: ["train"] * 3})
    eval_store.write_parquet("features/dt=2011-01-04/examples.parquet", before)
    eval_store.mark_success("features/dt=2011-01-04")
    put_version(eval_store, 1, D1, USERS, GOOD_ITEMS)
    registry.set_champion(eval_store, 1, "deployed", "first", None)
    put_version(eval_store, 2, D2, USERS, BAD_ITEMS)
    result = evaluate_candidate(eval_store, _settings(eval_store, min_recall=0.0), D2)
    # held out: u1 bought A, u2 bought B; popularity's top 1 is B for both: recall@1 (0 + 1) / 2; top 20 has all
    assert result["popularity_metrics"] == {"recall@1": 0.5, "recall@20": 1.0}
    assert result["popularity_ahead"] is True  # the candidate (BAD) has recall@1 0
    assert result["reason"].endswith("; trailing-7-day popularity is ahead of the candidate on the same users "
                                     "(recall@1 0.5000)")
    assert result["blessed"] is False  # recorded, not deciding: the champion (1.0) decides as before


def test_a_rerun_returns_the_recorded_decision(eval_store, put_version):
    put_version(eval_store, 1, D2, USERS, GOOD_ITEMS)
    first = evaluate_candidate(eval_store, _settings(eval_store), D2)
    history = registry.load(eval_store)["history"]
    again = evaluate_candidate(eval_store, _settings(eval_store), D2)
    assert again["reused"] is True
    assert {k: v for k, v in again.items() if k != "reused"} == {k: v for k, v in first.items() if k != "reused"}
    assert registry.load(eval_store)["history"] == history


def test_a_worse_candidate_is_rejected(eval_store, put_version):
    put_version(eval_store, 1, D1, USERS, GOOD_ITEMS)
    registry.set_champion(eval_store, 1, "deployed", "first", None)
    put_version(eval_store, 2, D2, USERS, BAD_ITEMS)
    result = evaluate_candidate(eval_store, _settings(eval_store, min_recall=0.0), D2)
    assert result["blessed"] is False
    assert result["reason"] == (
        "candidate recall@1 0.0000 is 1.0000 below the champion's 1.0000 (allowed regression 0.0000)"
    )
    assert registry.load(eval_store)["history"][-1]["action"] == "rejected"


def test_without_champion_the_floor_decides(eval_store, put_version):
    put_version(eval_store, 1, D2, USERS, GOOD_ITEMS)
    result = evaluate_candidate(eval_store, _settings(eval_store), D2)
    assert result["champion_version"] is None
    assert result["champion_metrics"] is None
    assert result["blessed"] is True
    assert result["reason"].startswith("no champion yet")


def test_too_few_held_out_users_is_rejected(eval_store, put_version):
    put_version(eval_store, 1, D2, USERS, GOOD_ITEMS)
    result = evaluate_candidate(eval_store, _settings(eval_store, min_eval_users=3), D2)
    assert result["blessed"] is False
    assert result["reason"] == "only 2 held-out users (< 3): too few to decide"


def test_no_held_out_users_gives_no_metrics_and_no_blessing(store, put_vocab, put_version):
    put_vocab(store, "users", ["u1"])
    put_vocab(store, "items", ["A"])
    examples = pd.DataFrame({schema.USER_ID: ["u1"], schema.ITEM_ID: ["A"], schema.USER_ROW: [1],
                             schema.ITEM_ROW: [1], schema.SPLIT: ["train"]})
    store.write_parquet("features/dt=2011-01-05/examples.parquet", examples)
    store.mark_success("features/dt=2011-01-05")
    put_version(store, 1, D2, [[0, 0], [1, 0]], [[0, 0], [1, 0]])
    result = evaluate_candidate(store, _settings(store), D2)
    assert (result["eval_users"], result["candidate_metrics"], result["blessed"]) == (0, {}, False)


def test_evaluate_without_a_candidate_raises(eval_store, put_version):
    put_version(eval_store, 1, D1, USERS, GOOD_ITEMS)
    with pytest.raises(EvaluationError, match="no candidate was trained on 2011-01-05"):
        evaluate_candidate(eval_store, _settings(eval_store), D2)
    assert registry.load(eval_store)["decisions"] == {}


def test_recall_at_20_is_a_true_recall_at_20_when_k_is_smaller(eval_store, put_version):
    put_version(eval_store, 1, D1, USERS, BAD_ITEMS)
    registry.set_champion(eval_store, 1, "deployed", "first", None)
    put_version(eval_store, 2, D2, USERS, GOOD_ITEMS)
    result = evaluate_candidate(eval_store, _settings(eval_store), D2)
    # only 3 items exist, so every relevant item is in anyone's top 20: recall@20 is 1.0 for both models
    assert result["champion_metrics"]["recall@20"] == 1.0


def test_ndcg_at_k_by_hand():
    from recsys.evaluation import ndcg_at_k

    # user 1: hit at rank 1 and rank 3 of 2 relevant -> (1 + 1/log2(4)) / (1 + 1/log2(3)) = 1.5 / 1.6309 = 0.91972
    # user 2: its only relevant item at rank 2 -> (1/log2(3)) / 1 = 0.63093
    ranked = [["a", "x", "b"], ["y", "c", "z"]]
    relevant = [{"a", "b"}, {"c"}]
    assert ndcg_at_k(ranked, relevant, 3) == pytest.approx((0.919721 + 0.630930) / 2, abs=1e-5)
    # k=1 keeps only the first item: user 1 -> 1/1, user 2 -> 0
    assert ndcg_at_k(ranked, relevant, 1) == pytest.approx(0.5)
    assert ndcg_at_k([["a"]], [set()], 5) == 0.0
    with pytest.raises(ValueError):
        ndcg_at_k([["a"]], [], 5)


def test_evaluate_refuses_features_of_another_delivery_than_the_validated_one(eval_store, put_version):
    """issue 18 #2: fine-tune and evaluate use the day's features only if built from the validated delivery."""
    from recsys.features import FeatureError
    from recsys.storage import layout
    from recsys.training import fine_tune

    eval_store.write_json(f"{layout.features(D2)}/stats.json", {"date": "2011-01-05", "fingerprint": "a" * 64})
    eval_store.write_json(layout.validation_summary(D2), {"date": "2011-01-05", "success": True,
                                                          "passed_fingerprint": "b" * 64})
    with pytest.raises(FeatureError, match="build the features of 2011-01-05 again"):
        fine_tune(eval_store, _settings(eval_store), D2)
    put_version(eval_store, 1, D2, USERS, GOOD_ITEMS)
    with pytest.raises(FeatureError, match=r"built from the delivery aaaaaaaaaaaa.*passed validation is bbbbbbbbbbbb"):
        evaluate_candidate(eval_store, _settings(eval_store), D2)
    assert registry.load(eval_store)["decisions"] == {}


# --- a small shop: thin days pool their paired evidence (RECSYS_EVAL_POOL_DAYS) ----------------------

def test_evidence_sums_and_the_standard_error_of_the_paired_difference_by_hand():
    ev = Evidence.of(np.array([1.0, 0.5, 1.0, 0.0]), np.array([0.0, 0.5, 0.0, 0.0]))
    assert (ev.users, ev.candidate, ev.champion, ev.squares) == (4, 2.5, 0.5, 2.0)
    # differences 1, 0, 1, 0: mean 0.5, sample variance 1/3, standard error sqrt(1/3 / 4)
    assert ev.difference_se() == pytest.approx((1 / 12) ** 0.5)
    assert (ev + ev).users == 8 and (ev + ev).candidate == 5.0
    assert Evidence.of(np.array([0.25]), None).champion == 0.0


def _thin(day: str, champion: int | None, users: int, **kw) -> dict:
    return {"date": day, "candidate_version": 9, "champion_version": champion, "eval_users": users,
            "blessed": False, "reason": "thin",
            "eval_evidence": {"users": users, "candidate": users * 0.5, "champion": users * 0.25,
                              "squares": users * 0.0625}} | kw


def test_pooling_walks_back_until_enough_users_and_stops_at_a_deployment_or_another_champion():
    decisions = {
        "2011-01-01": _thin("2011-01-01", 1, 2),
        "2011-01-02": _thin("2011-01-02", 1, 20),  # decided on its own users (rejected): pooled again
        "2011-01-03": _thin("2011-01-03", 1, 2),
        "2011-01-04": {"date": "2011-01-04", "candidate_version": None, "blessed": False, "reason": "no candidate"},
        "2011-01-05": _thin("2011-01-05", 1, 3),
        "2011-01-06": _thin("2011-01-06", 1, 0) | {"eval_evidence": None},  # no held-out users: passed over
        "2011-01-07": _thin("2011-01-07", 1, 4),  # the day itself (a rerun) is not its own evidence
    }
    # the day's 4 users + 3 (01-05) + 2 (01-03) = 9 < 10: on to 01-02's 20 (29 >= 10), and no further
    pool, dates = pooled_evidence(decisions, date(2011, 1, 7), 1, pool_days=14, min_users=10, have=4)
    assert dates == ["2011-01-05", "2011-01-03", "2011-01-02"]  # the no-candidate and no-user days passed over
    assert (pool.users, pool.candidate, pool.champion) == (25, 12.5, 6.25)
    # with 5 users of its own, 01-05 and 01-03 make 10: 01-02 is not needed
    assert pooled_evidence(decisions, date(2011, 1, 7), 1, 14, 10, have=5)[1] == ["2011-01-05", "2011-01-03"]
    # a blessing or another champion stops it: only users newer than the champion's deployment are pooled
    for stop in ({"blessed": True}, {"champion_version": 2}):
        changed = decisions | {"2011-01-03": _thin("2011-01-03", 1, 2, **stop)}
        assert pooled_evidence(changed, date(2011, 1, 7), 1, 14, 10, have=4)[1] == ["2011-01-05"]
    # only days within pool_days before the day
    assert pooled_evidence(decisions, date(2011, 1, 7), 1, pool_days=3, min_users=10, have=4)[1] == ["2011-01-05"]


def test_a_small_shop_decides_every_day_once_enough_users_have_accumulated():
    """3 held-out users a day, min_users 10: the old rule (pool only since the last decision) decided on days
    4, 8, 12, ...; the sliding pool decides from day 4 on, every day, on the newest 10 or more users."""
    decisions: dict = {}
    decided = []
    for n in range(1, 9):
        day = date(2011, 1, n)
        pool, dates = pooled_evidence(decisions, day, 1, pool_days=14, min_users=10, have=3)
        users = 3 + pool.users
        decided.append(users >= 10)
        pooled = {"eval_pooled": {"users": users}} if dates else {}
        decisions[day.isoformat()] = _thin(day.isoformat(), 1, 3, **pooled)
    assert decided == [False, False, False, True, True, True, True, True]


D3 = date(2011, 1, 6)


def _two_thin_days(store, put_version, champion_items, candidate_items, **settings) -> Settings:
    """Champion 1 (deployed on D1), candidates 2 (D2) and 3 (D3), 2 held-out users on each of D2 and D3;
    D2 evaluated (too few alone): the settings to evaluate D3 with."""
    put_version(store, 1, D1, USERS, champion_items)
    registry.set_champion(store, 1, "deployed", "first", None)
    put_version(store, 2, D2, USERS, candidate_items)
    put_version(store, 3, D3, USERS, candidate_items)
    examples = pd.DataFrame({schema.USER_ID: ["u1", "u2"], schema.ITEM_ID: ["A", "B"], schema.USER_ROW: [1, 2],
                             schema.ITEM_ROW: [1, 2], schema.SPLIT: ["holdout", "holdout"]})
    store.write_parquet("features/dt=2011-01-06/examples.parquet", examples)
    store.mark_success("features/dt=2011-01-06")
    chosen = _settings(store, min_eval_users=3, **settings)
    first = evaluate_candidate(store, chosen, D2)
    assert (first["blessed"], first["reason"]) == (False, "only 2 held-out users (< 3): too few to decide")
    return chosen


def test_a_thin_day_decides_on_the_held_out_users_pooled_since_the_last_decision(eval_store, put_version):
    settings = _two_thin_days(eval_store, put_version, BAD_ITEMS, GOOD_ITEMS)
    first = registry.load(eval_store)["decisions"]["2011-01-05"]
    assert first["eval_evidence"] == {"users": 2, "candidate": 2.0, "champion": 0.0, "squares": 2.0}

    second = evaluate_candidate(eval_store, settings, D3)  # 2 more: 4 pooled, the candidate line is better
    assert second["blessed"] is True
    assert second["eval_users"] == 2
    assert second["eval_pooled"] == {"dates": ["2011-01-06", "2011-01-05"], "users": 4, "candidate_recall@1": 1.0,
                                     "champion_recall@1": 0.0, "difference_se": 0.0}
    assert second["reason"] == (
        "candidate recall@1 1.0000 vs champion 0.0000 (+1.0000, allowed regression 0.0000); pooled with the latest "
        "held-out users against the champion (2011-01-05: 4 held-out users in all, RECSYS_EVAL_POOL_DAYS), standard "
        "error of the difference 0.0000")


def test_a_thin_day_of_a_worse_candidate_is_rejected_on_the_pool(eval_store, put_version):
    settings = _two_thin_days(eval_store, put_version, GOOD_ITEMS, BAD_ITEMS, min_recall=0.0)
    result = evaluate_candidate(eval_store, settings, D3)
    assert result["blessed"] is False
    assert result["reason"].startswith("candidate recall@1 0.0000 is 1.0000 below the champion's 1.0000")
    assert result["eval_pooled"]["users"] == 4


def test_without_pooling_a_thin_day_stays_undecided(eval_store, put_version):
    settings = _two_thin_days(eval_store, put_version, BAD_ITEMS, GOOD_ITEMS, eval_pool_days=0)
    result = evaluate_candidate(eval_store, settings, D3)
    assert (result["blessed"], "eval_pooled" in result) == (False, False)
    assert result["reason"] == "only 2 held-out users (< 3): too few to decide"


# --- the popularity fallback (RECSYS_POPULARITY_FALLBACK; recsys.serving.popularity) -----------------------------

def _popular_before_d2(store) -> None:
    """The day before D2: B bought twice, A once -> popularity ranks B, A, C: with k=2 it finds the held-out
    items of both u1 (A) and u2 (B), which BAD_ITEMS ranks third (u1: B, C, A; u2: A, C, B)."""
    before = pd.DataFrame({schema.USER_ID: ["u1", "u2", "u3"], schema.ITEM_ID: ["B", "B", "A"],
                           schema.USER_ROW: [1, 2, 3], schema.ITEM_ROW: [2, 2, 1], schema.SPLIT: ["train"] * 3})
    store.write_parquet("features/dt=2011-01-04/examples.parquet", before)
    store.mark_success("features/dt=2011-01-04")


def test_paired_recall_and_the_verdict_by_hand():
    ev = PairedRecall.of(np.array([1.0, 1.0, 0.0]), np.array([0.0, 0.0, 0.0]))
    assert (ev.users, ev.popularity, ev.model, ev.squares) == (3, 2.0, 0.0, 2.0)
    # differences 1, 1, 0: mean 2/3, sample variance 1/3, standard error sqrt(1/3 / 3) = 1/3
    assert (ev.difference(), ev.difference_se()) == (pytest.approx(2 / 3), pytest.approx(1 / 3))
    assert fallback_verdict(ev, 3, True, "recall@1")["fallback"] == "popularity"  # 2/3 > 1/3
    assert fallback_verdict(ev, 4, True, "recall@1")["fallback"] is None  # too few users
    assert fallback_verdict(ev, 3, False, "recall@1")["fallback"] is None  # switched off
    # differences 1, 0: mean 1/2, standard error 1/2: a lead within its standard error keeps the model
    assert fallback_verdict(PairedRecall.of(np.array([1.0, 0.0]), np.zeros(2)), 2, True, "r")["fallback"] is None
    assert fallback_verdict(PairedRecall.of(np.zeros(3), np.ones(3)), 1, True, "r")["fallback"] is None  # behind
    assert PairedRecall.from_dict({"users": 3, "popularity": 2.0, "model": 0.0, "squares": 2.0}) == ev


def test_the_fallback_is_recorded_when_popularity_is_clearly_ahead(eval_store, put_version):
    _popular_before_d2(eval_store)
    put_version(eval_store, 1, D1, USERS, BAD_ITEMS)
    registry.set_champion(eval_store, 1, "deployed", "first", None)
    put_version(eval_store, 2, D2, USERS, BAD_ITEMS)
    result = evaluate_candidate(eval_store, _settings(eval_store, k=2, min_recall=0.0), D2)
    assert result["blessed"] is True  # a tie with the champion: the fallback does not decide the blessing
    assert result["popularity_evidence"] == {"users": 2, "popularity": 2.0, "model": 0.0, "squares": 2.0}
    verdict = result["popularity_fallback"]
    assert (verdict["fallback"], verdict["enabled"], verdict["users"], verdict["dates"]) == (
        "popularity", True, 2, ["2011-01-05"])
    assert (verdict["popularity_recall@2"], verdict["model_recall@2"]) == (1.0, 0.0)
    assert (verdict["difference"], verdict["difference_se"]) == (1.0, 0.0)
    assert result["reason"].endswith(
        "; popularity is ahead of the candidate by 1.0000 (standard error 0.0000, 2 held-out users): a deployment "
        "of it serves trailing-7-day popularity's ranking instead (RECSYS_POPULARITY_FALLBACK)")
    assert registry.load(eval_store)["decisions"]["2011-01-05"]["popularity_fallback"] == verdict


def test_no_fallback_when_the_model_is_as_good(eval_store, put_version):
    _popular_before_d2(eval_store)
    put_version(eval_store, 1, D2, USERS, GOOD_ITEMS)
    result = evaluate_candidate(eval_store, _settings(eval_store, k=2), D2)
    assert result["popularity_fallback"]["fallback"] is None
    assert result["popularity_fallback"]["difference"] == 0.0
    assert "popularity" not in result["reason"]


def test_no_fallback_when_popularity_leads_within_its_standard_error(eval_store, put_version):
    _popular_before_d2(eval_store)
    put_version(eval_store, 1, D2, USERS, BAD_ITEMS)
    result = evaluate_candidate(eval_store, _settings(eval_store, min_recall=0.0), D2)  # k=1: B for both users
    verdict = result["popularity_fallback"]  # differences 0 (u1) and 1 (u2): mean 0.5, standard error 0.5
    assert (verdict["fallback"], verdict["difference"], verdict["difference_se"]) == (None, 0.5, 0.5)


def test_no_fallback_when_switched_off(eval_store, put_version):
    _popular_before_d2(eval_store)
    put_version(eval_store, 1, D2, USERS, BAD_ITEMS)
    result = evaluate_candidate(eval_store, _settings(eval_store, k=2, min_recall=0.0, popularity_fallback=False), D2)
    assert (result["popularity_fallback"]["fallback"], result["popularity_fallback"]["enabled"]) == (None, False)
    assert result["reason"].endswith("; popularity is ahead of the candidate by more than its standard error, but "
                                     "RECSYS_POPULARITY_FALLBACK is off: the model serves")


def test_a_thin_day_decides_the_fallback_on_the_same_pooled_users(eval_store, put_version):
    _popular_before_d2(eval_store)
    put_version(eval_store, 1, D1, USERS, BAD_ITEMS)
    registry.set_champion(eval_store, 1, "deployed", "first", None)
    put_version(eval_store, 2, D2, USERS, BAD_ITEMS)
    put_version(eval_store, 3, D3, USERS, BAD_ITEMS)
    examples = pd.DataFrame({schema.USER_ID: ["u1", "u2"], schema.ITEM_ID: ["A", "B"], schema.USER_ROW: [1, 2],
                             schema.ITEM_ROW: [1, 2], schema.SPLIT: ["holdout", "holdout"]})
    eval_store.write_parquet("features/dt=2011-01-06/examples.parquet", examples)
    eval_store.mark_success("features/dt=2011-01-06")
    settings = _settings(eval_store, k=2, min_recall=0.0, min_eval_users=3)
    first = evaluate_candidate(eval_store, settings, D2)
    assert first["popularity_fallback"]["fallback"] is None  # 2 users < 3
    # D3: popularity before it B 3, A 2, C 1 -> B, A: both held-out users again; pooled with D2: 4 users
    second = evaluate_candidate(eval_store, settings, D3)
    assert second["eval_pooled"]["dates"] == ["2011-01-06", "2011-01-05"]
    verdict = second["popularity_fallback"]
    assert (verdict["fallback"], verdict["users"], verdict["dates"]) == ("popularity", 4, ["2011-01-06", "2011-01-05"])


def test_the_gate_ranks_popularity_with_the_function_serving_falls_back_to(eval_store, put_version):
    _popular_before_d2(eval_store)
    items = np.array(["", "A", "B", "C"])
    assert popularity_ranking(eval_store, D2, items, 7, 3) == ["B", "A", "C"]
    rows = popularity.ranking_rows(popularity.purchases(eval_store, D2, 4))
    assert rows.tolist() == [2, 1, 3]  # B 2, A 1, C 0 (ties in row order), never the OOV row
    assert popularity.ranking_rows(np.zeros(4)).tolist() == []  # nothing bought: nothing to rank by
