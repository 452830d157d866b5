"""Champion/challenger evaluation: ranking metrics and the deploy decision.

:func:`recall_at_k` and :func:`decide` are pure functions; :func:`evaluate_candidate` scores the
candidate and the champion on the same held-out interactions of a day (neither trained on them).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, cast

import numpy as np

from recsys import registry, schema
from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.serving.popularity import POPULARITY_DAYS, PairedRecall, fallback_verdict, purchases, ranking_rows
from recsys.storage import PartitionStore

log = logging.getLogger(__name__)


class EvaluationError(RecsysError, RuntimeError):
    """Evaluation cannot run (no candidate for the day, no held-out examples)."""


def recall_at_k(ranked: list[list[str]], relevant: list[set[str]], k: int) -> float:
    """Mean over users of |top-k ∩ relevant| / |relevant|; users with nothing relevant are skipped.

    ``ranked[u]`` is user u's ranked item list (best first), ``relevant[u]`` the items u interacted with.
    """
    recalls = user_recalls(ranked, relevant, k)
    return float(np.mean(recalls)) if recalls else 0.0


def user_recalls(ranked: list[list[str]], relevant: list[set[str]], k: int) -> list[float]:
    """Each user's |top-k ∩ relevant| / |relevant|, in order, users with nothing relevant left out."""
    if len(ranked) != len(relevant):
        raise ValueError(f"{len(ranked)} ranked lists for {len(relevant)} users")
    return [len(set(r[:k]) & rel) / len(rel) for r, rel in zip(ranked, relevant, strict=True) if rel]


def ndcg_at_k(ranked: list[list[str]], relevant: list[set[str]], k: int) -> float:
    """Mean over users of binary-relevance NDCG@k (DCG of the top k over the ideal DCG).

    Users with nothing relevant are skipped. Gains are 1/log2(rank + 1), ranks starting at 1.
    """
    if len(ranked) != len(relevant):
        raise ValueError(f"{len(ranked)} ranked lists for {len(relevant)} users")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    scores = []
    for r, rel in zip(ranked, relevant, strict=True):
        if not rel:
            continue
        dcg = sum(discounts[i] for i, item in enumerate(r[:k]) if item in rel)
        scores.append(dcg / discounts[: min(len(rel), k)].sum())
    return float(np.mean(scores)) if scores else 0.0


@dataclass(frozen=True)
class Thresholds:
    """The deploy gate. ``None`` for a threshold means it is not configured: nothing is blessed."""

    min_recall: float | None
    max_regression: float | None
    min_eval_users: int


@dataclass(frozen=True)
class Decision:
    blessed: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    candidate: float, champion: float | None, users: int, thresholds: Thresholds, metric: str = "recall"
) -> Decision:
    """Bless the candidate iff it clears the floor and is at most ``max_regression`` below the champion.

    ``champion`` is None when there is no champion yet (the floor alone decides). Ties bless: the
    fresher model wins when it is no worse.
    """
    if thresholds.min_recall is None or thresholds.max_regression is None:
        return Decision(False, "no thresholds configured: a candidate is never blessed without a gate")
    if users < thresholds.min_eval_users:
        return Decision(False, f"only {users} held-out users (< {thresholds.min_eval_users}): too few to decide")
    if candidate < thresholds.min_recall:
        return Decision(False, f"candidate {metric} {candidate:.4f} is below the floor {thresholds.min_recall:.4f}")
    if champion is None:
        return Decision(True, f"no champion yet; candidate {metric} {candidate:.4f} clears the floor "
                              f"{thresholds.min_recall:.4f}")
    delta = candidate - champion
    if delta < -thresholds.max_regression:
        return Decision(False, f"candidate {metric} {candidate:.4f} is {-delta:.4f} below the champion's "
                               f"{champion:.4f} (allowed regression {thresholds.max_regression:.4f})")
    return Decision(True, f"candidate {metric} {candidate:.4f} vs champion {champion:.4f} "
                          f"({delta:+.4f}, allowed regression {thresholds.max_regression:.4f})")


@dataclass(frozen=True)
class Evidence:
    """Paired per-user sums of the key metric on held-out users: what a thin day's decision can pool.

    ``candidate``/``champion`` are sums of per-user recall (``champion`` 0 without a champion) and
    ``squares`` the sum of squared per-user differences (candidate - champion), so pooled days give
    the means and the standard error of the paired difference without keeping per-user values.
    """

    users: int
    candidate: float
    champion: float
    squares: float

    @classmethod
    def of(cls, candidate: np.ndarray, champion: np.ndarray | None) -> Evidence:
        other = champion if champion is not None else np.zeros_like(candidate)
        return cls(len(candidate), float(candidate.sum()), float(other.sum()), float(((candidate - other) ** 2).sum()))

    def __add__(self, other: Evidence) -> Evidence:
        return Evidence(self.users + other.users, self.candidate + other.candidate, self.champion + other.champion,
                        self.squares + other.squares)

    def difference_se(self) -> float:
        """Standard error of the mean paired difference (0 for fewer than 2 users)."""
        n = self.users
        if n < 2:
            return 0.0
        mean = (self.candidate - self.champion) / n
        variance = max(self.squares - n * mean * mean, 0.0) / (n - 1)
        return float(np.sqrt(variance / n))


def pooled_evidence(
    decisions: Mapping[str, registry.Decision], day: date, champion_version: int | None, pool_days: int,
    min_users: int, have: int = 0,
) -> tuple[Evidence, list[str]]:
    """The evidence of the days before ``day`` that a thin ``day`` pools with its own ``have`` users, and their dates.

    Walking back from the day before ``day`` within ``pool_days`` days, newest first, until the pool and the
    day's own users reach ``min_users``: decisions with no candidate or no held-out users are passed over; the
    walk stops at the first decision that blessed or that compared against another champion, so every pooled
    user is newer than the champion's deployment. Days already decided (rejected, on their own users or on a
    pool) are pooled again: the pool is the most recent ``min_users`` held-out users against the champion, a
    window that slides by a day, so a shop with fewer held-out users a day than ``min_users`` decides every day
    rather than every few days. Each pooled day's users were held out from that day's candidate and are newer
    than the champion, so neither side of a pair trained on them (the pool measures the fine-tuned line, whose
    newest member is the day's candidate, against the champion).
    """
    total, dates = Evidence(0, 0.0, 0.0, 0.0), []
    first = date.fromordinal(day.toordinal() - pool_days)
    for key in sorted(decisions, reverse=True):
        if have + total.users >= min_users:
            break
        when = date.fromisoformat(key)
        if when >= day:
            continue
        if when < first:
            break
        earlier = decisions[key]
        if earlier.get("candidate_version") is None:  # a day that trained nothing
            continue
        if earlier.get("blessed") or earlier.get("champion_version") != champion_version:
            break
        recorded = earlier.get("eval_evidence")
        if recorded is None or not int(recorded["users"]):  # no held-out users that day
            continue
        total = total + Evidence(int(recorded["users"]), float(recorded["candidate"]), float(recorded["champion"]),
                                 float(recorded["squares"]))
        dates.append(key)
    return total, dates


def rank_items(store: PartitionStore, version: int, user_ids: list[str], k: int, day: date) -> list[list[str]]:
    """Top-``k`` item ids per user from a stored version, with the histories known before ``day``
    (items the version knows; unknown users -> OOV row plus their history)."""
    from recsys.serving.index import load_scorer

    return load_scorer(store, version, before=day).top_k(user_ids, k)


def evaluate_candidate(
    store: PartitionStore, settings: Settings, day: date, *, run_id: str | None = None
) -> dict[str, Any]:
    """Score the candidate of ``day`` and the champion on the day's held-out users; record the decision.

    Idempotent: a decision already recorded for this date and candidate is returned unchanged.
    """
    from recsys.features.build import check_delivery
    from recsys.training import no_candidate_reason

    reg = registry.load(store)
    candidate_version = registry.version_for_date(reg, day)
    recorded = reg["decisions"].get(day.isoformat())
    if recorded and recorded["candidate_version"] == candidate_version:
        log.info("decision for %s already recorded: %s", day, recorded["reason"])
        return recorded | {"reused": True}
    if candidate_version is None:
        thin = no_candidate_reason(store, settings, day)
        if thin is None:
            raise EvaluationError(f"no candidate was trained on {day}: run the fine-tune step first")
        result = no_candidate(day, reg["champion"], thin)  # a thin day: recorded, never an error
    else:
        check_delivery(store, day)
        result = compare_with_champion(store, settings, day, candidate_version, reg["champion"],
                                       earlier=reg["decisions"])
        if not reg["versions"][str(candidate_version)].get("train_examples", 1):
            result["reason"] += f"; the candidate had no training examples of {day}: it was trained on the " \
                                "replay sample of earlier days only"
    registry.record_decision(store, day, result, run_id)
    log.info("decision for %s: %s", day, result["reason"])
    return result | {"reused": False}


def no_candidate(day: date, champion_version: int | None, why: str) -> registry.Decision:
    """The decision of a date that trained no candidate: nothing to evaluate or deploy, the champion stays."""
    return {
        "date": day.isoformat(), "candidate_version": None, "champion_version": champion_version,
        "candidate_metrics": {}, "champion_metrics": None, "eval_users": 0, "eval_examples": 0,
        "blessed": False, "reason": f"no candidate: {why}", "decided_at": registry.now(),
    }


def compare_with_champion(
    store: PartitionStore, settings: Settings, day: date, candidate_version: int, champion_version: int | None,
    block_users: int | None = None, earlier: Mapping[str, registry.Decision] | None = None,
) -> registry.Decision:
    """Score both versions on ``day``'s held-out users and apply the deploy gate (:func:`decide`).

    The same evaluation for a day's fine-tuned candidate and for a full retrain; records nothing.
    Users are ranked ``block_users`` at a time (default :data:`~recsys.serving.index.SCORE_BLOCK_USERS`),
    so memory is one [block, items] score matrix however many users are held out; the metrics do not
    depend on the block size (each user's ranking uses only that user's scores). With
    ``settings.max_eval_users`` below the number of held-out users, a deterministic sample of that many
    is evaluated (:func:`sample_users`) and the decision records ``eval_sample``: its size, the held-out
    count and the standard errors of the key metric (candidate, champion, and their paired difference).

    A small shop's day can have fewer held-out users than ``settings.min_eval_users``. With ``earlier``
    (the registry's decisions) and ``settings.eval_pool_days`` > 0, such a day pools its paired evidence
    with that of the thin days before it (:func:`pooled_evidence`) and the gate decides on the pool: the
    decision records ``eval_pooled`` (dates, users, means, standard error of the difference).
    A day with no held-out users at all pools too (its own evidence is empty) and so can still decide.
    """
    from recsys.features.build import load_examples
    from recsys.serving.index import SCORE_BLOCK_USERS, load_scorer

    # the split column first, then only the held-out rows' ids: a large day's examples are never all
    # converted to Python strings (7.45M examples of a 10M-event day: about 1 GB as object columns)
    split = load_examples(store, day, columns=[schema.SPLIT])[schema.SPLIT].to_numpy()
    holdout = load_examples(store, day, columns=[schema.USER_ID, schema.ITEM_ID],
                            rows=np.flatnonzero(split == "holdout"))
    del split
    relevant_by_user = holdout.groupby(schema.USER_ID)[schema.ITEM_ID].agg(set)
    users = [str(u) for u in relevant_by_user.index]
    relevant = [set(items) for items in relevant_by_user]
    held_out = len(users)
    cap = settings.max_eval_users
    if cap is not None and held_out > cap:
        chosen = sample_users(users, day, cap)
        users, relevant = [users[i] for i in chosen], [relevant[i] for i in chosen]
    k = settings.k

    block = block_users or SCORE_BLOCK_USERS
    per_user: dict[int, np.ndarray] = {}
    item_ids: dict[int, np.ndarray] = {}

    def metrics(version: int) -> dict[str, float]:
        # per-user recalls kept block by block (floats, not ranked lists); the mean is recall_at_k's
        at_k: list[float] = []
        at_20: list[float] = []
        scorer = load_scorer(store, version, before=day)
        item_ids[version] = scorer.item_ids
        blocks = scorer.top_k_blocks(users, max(k, 20), block=block)
        for start, ranked in zip(range(0, len(users), block), blocks, strict=True):
            mine = relevant[start: start + len(ranked)]
            at_k += user_recalls(ranked, mine, k)
            at_20 += user_recalls(ranked, mine, 20)
        per_user[version] = np.asarray(at_k)
        return {f"recall@{k}": float(np.mean(at_k)) if at_k else 0.0,
                "recall@20": float(np.mean(at_20)) if at_20 else 0.0}

    candidate_metrics = metrics(candidate_version) if users else {}
    champion_metrics = metrics(champion_version) if users and champion_version is not None else None
    key = f"recall@{k}"
    # the baseline the candidate should beat, on the same users: recorded, and what a deployment of the candidate
    # serves instead when it is clearly ahead (popularity_fallback); it does not decide the blessing
    popularity, popularity_users = (_popularity(store, day, item_ids[candidate_version], relevant, k) if users
                                    else (None, None))
    sample: dict[str, float | int] | None = None
    if len(users) < held_out:
        sample = {"users": len(users), "held_out_users": held_out,
                  "candidate_se": standard_error(per_user[candidate_version])}
        if champion_version is not None:
            sample["champion_se"] = standard_error(per_user[champion_version])
            sample["difference_se"] = standard_error(per_user[candidate_version] - per_user[champion_version])
    evidence = (Evidence.of(per_user[candidate_version], per_user.get(champion_version))  # type: ignore[arg-type]
                if users else Evidence(0, 0.0, 0.0, 0.0))
    decided_on: tuple[float, float | None, int] = (
        candidate_metrics.get(key, 0.0), champion_metrics[key] if champion_metrics else None, len(users))
    pooled = _pooled(settings, day, champion_version, evidence, earlier, key)
    if pooled is not None:
        decided_on = (pooled[f"candidate_{key}"], pooled[f"champion_{key}"], pooled["users"])
    decision = decide(*decided_on, Thresholds(settings.min_recall, settings.max_regression, settings.min_eval_users),
                      metric=key)
    result: registry.Decision = {
        "date": day.isoformat(),
        "candidate_version": candidate_version,
        "champion_version": champion_version,
        "candidate_metrics": candidate_metrics,
        "champion_metrics": champion_metrics,
        "eval_users": len(users),
        "eval_examples": len(holdout) if sample is None else sum(map(len, relevant)),
        "blessed": decision.blessed,
        "reason": decision.reason,
        "decided_at": registry.now(),
    }
    if users:
        result["eval_evidence"] = asdict(evidence)
    _note_popularity(cast(dict[str, Any], result), popularity, key)
    _popularity_fallback(cast(dict[str, Any], result), settings, popularity_users, per_user.get(candidate_version),
                         pooled["dates"][1:] if pooled is not None else [], earlier, key)
    if pooled is not None:
        result["eval_pooled"] = pooled
        result["reason"] += ("; pooled with the latest held-out users against the champion "
                             f"({', '.join(pooled['dates'][1:])}: "
                             f"{pooled['users']} held-out users in all, RECSYS_EVAL_POOL_DAYS), standard error of "
                             f"the difference {pooled['difference_se']:.4f}")
    if sample is not None:
        spread = ", ".join(f"{name[:-3]} {value:.4f}" for name, value in sample.items() if name.endswith("_se"))
        result["eval_sample"] = sample
        result["reason"] += (f"; a sample of {len(users)} of {held_out} held-out users "
                             f"(RECSYS_MAX_EVAL_USERS), standard error of {key}: {spread}")
    return result


def _pooled(
    settings: Settings, day: date, champion_version: int | None, evidence: Evidence | None,
    earlier: Mapping[str, registry.Decision] | None, key: str,
) -> dict[str, Any] | None:
    """The pooled evidence a thin day decides on (:func:`pooled_evidence`), or None (not thin, no pooling,
    nothing earlier to pool)."""
    if evidence is None or earlier is None or settings.eval_pool_days <= 0 or evidence.users >= settings.min_eval_users:
        return None
    before, dates = pooled_evidence(earlier, day, champion_version, settings.eval_pool_days, settings.min_eval_users,
                                    evidence.users)
    if not dates:
        return None
    pool = evidence + before
    return {"dates": [day.isoformat(), *dates], "users": pool.users, f"candidate_{key}": pool.candidate / pool.users,
            f"champion_{key}": pool.champion / pool.users if champion_version is not None else None,
            "difference_se": pool.difference_se()}


def _popularity(store: PartitionStore, day: date, item_ids: np.ndarray, relevant: list[set[str]], k: int
                ) -> tuple[dict[str, float] | None, np.ndarray | None]:
    """recall@k and recall@20 of :func:`popularity_ranking` (:data:`POPULARITY_DAYS`) for users ``relevant``, and
    each user's recall@k (in order; users with nothing relevant left out, as in the model's); (None, None):
    nothing was bought in the window."""
    ranked = popularity_ranking(store, day, item_ids, POPULARITY_DAYS, max(k, 20))
    if not ranked:
        return None, None
    lists = [ranked] * len(relevant)
    at_k = np.asarray(user_recalls(lists, relevant, k))
    return ({f"recall@{k}": float(np.mean(at_k)), "recall@20": float(np.mean(user_recalls(lists, relevant, 20)))},
            at_k)


def _popularity_fallback(
    result: dict[str, Any], settings: Settings, popularity: np.ndarray | None, model: np.ndarray | None,
    pooled_dates: list[str], earlier: Mapping[str, registry.Decision] | None, key: str,
) -> None:
    """Record the day's paired per-user recall of ``popularity`` and the candidate (``model``) as
    ``popularity_evidence`` and the fallback verdict (``popularity_fallback``,
    :func:`~recsys.serving.popularity.fallback_verdict`) in ``result`` (nothing without both): on the users the
    gate decided on, so a thin day that pooled adds the popularity evidence of the same pooled days."""
    if popularity is None or model is None:
        return
    own = PairedRecall.of(popularity, model)
    result["popularity_evidence"] = asdict(own)
    total, dates = own, [result["date"]]
    for when in pooled_dates:
        recorded = cast(Mapping[str, Any], (earlier or {}).get(when) or {}).get("popularity_evidence")
        if recorded:
            total, dates = total + PairedRecall.from_dict(recorded), [*dates, when]
    verdict = fallback_verdict(total, settings.min_eval_users, settings.popularity_fallback, key, dates)
    result["popularity_fallback"] = verdict
    if verdict["fallback"] is not None:
        result["reason"] += (f"; popularity is ahead of the candidate by {verdict['difference']:.4f} (standard error "
                             f"{verdict['difference_se']:.4f}, {verdict['users']} held-out users): a deployment of "
                             f"it serves trailing-{POPULARITY_DAYS}-day popularity's ranking instead "
                             "(RECSYS_POPULARITY_FALLBACK)")
    elif not verdict["enabled"] and verdict["users"] >= settings.min_eval_users \
            and verdict["difference"] > verdict["difference_se"]:
        result["reason"] += ("; popularity is ahead of the candidate by more than its standard error, but "
                             "RECSYS_POPULARITY_FALLBACK is off: the model serves")


def _note_popularity(result: dict[str, Any], popularity: dict[str, float] | None, key: str) -> None:
    """Record the popularity baseline's metrics in ``result``, and in its reason when it is ahead of the candidate."""
    if popularity is None:
        return
    result["popularity_metrics"] = popularity
    result["popularity_ahead"] = popularity[key] > result["candidate_metrics"][key]
    if result["popularity_ahead"]:
        result["reason"] += (f"; trailing-{POPULARITY_DAYS}-day popularity is ahead of the candidate on the same "
                             f"users ({key} {popularity[key]:.4f})")


def popularity_ranking(store: PartitionStore, day: date, item_ids: np.ndarray, window_days: int, k: int) -> list[str]:
    """The ``k`` items of ``item_ids`` (a version's item rows) purchased most in the ``window_days`` days before
    ``day`` (none if nothing was), ties in row order: trailing popularity, the baseline of bench/replay_quality
    (strategy d) that a model should beat, from the same feature partitions as the trend term. The ranking is
    :func:`recsys.serving.popularity.ranking_rows`, the one the popularity fallback serves."""
    rows = ranking_rows(purchases(store, day, len(item_ids), window_days))
    return [str(item_ids[row]) for row in rows[:k]]


def sample_users(users: list[str], day: date, size: int) -> list[int]:
    """Indexes (ascending) of a deterministic sample of ``size`` of ``users``: the smallest hashes of
    (day, user id), so a rerun of the day evaluates the same customers and each day a different share."""
    if size < 1:
        raise ValueError(f"a sample needs at least one user, got {size}")
    keys = np.array([int.from_bytes(hashlib.blake2b(f"{day.isoformat()}/{u}".encode(), digest_size=8).digest(),
                                    "big") for u in users], dtype=np.uint64)
    return sorted(np.argsort(keys, kind="stable")[:size].tolist())


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of ``values`` (sample standard deviation / sqrt(n); 0 for n < 2)."""
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
