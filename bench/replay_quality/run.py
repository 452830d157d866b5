"""Replay the last N days of a shop one day at a time and compare recommendation strategies.

For each day of the window, every strategy ranks items for that day's purchasing customers using
only what it knew before the day; recall@20, recall@100 and NDCG@100 are averaged over customers,
then over days. Strategies (each runs in its own process, so its peak memory is its own):

  a  stale        a model trained once on all history before the window, never updated
  b  fine_tune    bootstrap as (a), then the production path every day: recsys.cli.run_all
                  (validate, features, fine-tune from the last checkpoint, evaluate, deploy if blessed);
                  day t is ranked as serving would after day t-1: by the champion, or by trailing-7-day
                  popularity when the champion's gate decision calls for the popularity fallback
                  (recsys.serving.popularity, RECSYS_POPULARITY_FALLBACK; the days it did are recorded)
  c  retrain      bootstrap as (a), then a full retrain from scratch on all history every day
                  (with --every N: only on the days before the evaluated ones, see below)
  d  popular      the trailing-7-day most purchased items
  e  own_popular  the customer's own past items by purchase count, then (d)
  f  ease         EASE^R (Steck 2019) refit on all history every day; lambda chosen on the 5 days before
                  the window (anchors.py); popular fill
  g  own_ease     the customer's own items by purchase days, then (f)
  h  item_knn     own items, then item-kNN on co-purchases (cosine, 100 neighbours), then popular
  i  fully_stale  the bootstrap model of (a) with its inputs frozen too: the histories, trend counts and
                  catalog of the bootstrap day (a keeps its inputs fresh; (i) vs (a) is what fresh inputs
                  are worth, (a) vs (b) what fresh weights are worth)
  r  ranked       (b) plus the ranking stage (recsys.ranking): the champion's top candidates, the customer's
                  own items and the trending items, re-ordered by a ranker fine-tuned after every day on that
                  day's candidates (label: bought that day). Its bootstrap is RANKER_WARMUP_DAYS earlier than
                  (b)'s, and those days run the daily pipeline too, so the ranker has days to learn from before
                  the window; every window day also records the champion's own ranking ("retrieval"), the
                  paired comparison

Data (``--source``/``--synthetic``; default: the Online Retail bundle shipped with the package):

  --source DIR     per-day CSV files in the Online Retail format (what `recsys land --source` reads)
  --synthetic      generated days (recsys.datasets.synthetic; --synthetic-days, --synthetic-events, --regime
                   default | sparse | no_repeat | sessions | seasonal)

Every source day is landed and validated once; a day that fails validation is accepted (every strategy
trains on the same days), and a day a strategy's step refuses (untrainable, rejected) is recorded in its
``failed_days`` while the run goes on. Metrics are reported as the per-day mean and the customer-weighted
(micro) mean, with the number of customers of every day.

Usage (from the repository root, after `make setup`):

    .venv/bin/python bench/replay_quality/run.py --days 60 --strategies a,b,c,d,e

Results: a JSON file per run in bench/replay_quality/results/ and a markdown table on stdout.

``--every N`` evaluates every N-th day of the window only (the 1st, the N+1-th, ...); the other days
still run (the fine-tune trains on every day, features are built for every day), but the daily full
retrain only trains on the days before an evaluated day, so (c) costs 1/N of its full run. Compare
strategies on the same --every. A daily full retrain over 60 days takes about 3 hours on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
STRATEGIES = {"a": "stale", "b": "fine_tune", "c": "retrain", "d": "popular", "e": "own_popular",
              "f": "ease", "g": "own_ease", "h": "item_knn", "i": "fully_stale", "r": "ranked"}
MODEL_STRATEGIES = ("stale", "fine_tune", "retrain", "fully_stale", "ranked")
PIPELINE_STRATEGIES = ("fine_tune", "ranked")  # the daily production pipeline (recsys.cli.run_all)
# (r): days before the window on which the pipeline already runs and the ranker learns; the ranker fine-tunes on
# the candidate lists of its last RANKER_REPLAY_DAYS days (the train split: the holdout is the gate's) each day
RANKER_WARMUP_DAYS, RANKER_REPLAY_DAYS, RANKER_EPOCHS = 10, 20, 2
RANKER_CHECKPOINTS = "models/ranker"  # in the strategy's store: dt=<day>/weights.npz after each day
K_SMALL, K = 20, 100
# EASE^R's lambda is chosen on the last TUNE_DAYS days before the window from this grid (Steck used 100 to 1000s)
LAMBDA_GRID = (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0)
DEFAULT_LAMBDA, TUNE_DAYS = 250.0, 5


def _metrics(ranked: list[list[str]], relevant: list[set[str]]) -> dict[str, float]:
    from recsys.evaluation import ndcg_at_k, recall_at_k

    return {
        "recall@20": recall_at_k(ranked, relevant, K_SMALL),
        "recall@100": recall_at_k(ranked, relevant, K),
        "ndcg@100": ndcg_at_k(ranked, relevant, K),
    }


def _day_truth(store: Any, day: date) -> tuple[list[str], list[set[str]]]:
    """The day's purchasing customers and the distinct items each bought."""
    from recsys import schema
    from recsys.storage import layout
    from recsys.storage.raw import read_partition

    events = read_partition(store, layout.raw_events(day))
    if schema.EVENT_TYPE in events:  # what is predicted: purchases (views and carts of generated days are inputs)
        events = events[events[schema.EVENT_TYPE] == "purchase"]
    by_user = {str(u): set(map(str, items)) for u, items in events.groupby(schema.USER_ID)[schema.ITEM_ID]}
    return list(by_user), list(by_user.values())


def _allowed(store: Any, version: int, rows: int) -> Any:
    """The item rows a version's serving index allows (None: no index, every row)."""
    index_path = f"models/two_tower/versions/{version}/index.parquet"
    if not store.exists(index_path):
        return None
    import numpy as np

    allowed = np.zeros(rows, dtype=bool)
    allowed[store.read_parquet(index_path)["row"].to_numpy()] = True
    return allowed


def _model_ranking(store: Any, version: int, users: list[str], day: date) -> list[list[str]]:
    """Top-K of a stored version over the items it knows that its index (or catalog) allows, with the
    customers' purchases known before ``day`` as the query tower's input (as serving would have them)."""
    from recsys.serving.index import load_scorer

    scorer = load_scorer(store, version, before=day)
    return scorer.top_k(users, K, _allowed(store, version, len(scorer.item_ids)))


def _served_ranking(store: Any, settings: Any, version: int, users: list[str], day: date
                    ) -> tuple[list[list[str]], bool]:
    """What the deployed ``version`` serves ``day``'s customers, and whether it is the popularity fallback: the items
    its index allows by trailing-7-day purchases (recsys.serving.popularity, the ranking its gate measured) when
    its gate decision calls for the fallback and RECSYS_POPULARITY_FALLBACK is on, else :func:`_model_ranking`."""
    from recsys.serving import popularity
    from recsys.serving.index import load_scorer

    if popularity.recorded_fallback(store, version, settings.popularity_fallback) is not None:
        item_ids = load_scorer(store, version, before=day).item_ids
        rows = popularity.ranking_rows(popularity.purchases(store, day, len(item_ids)))
        allowed = _allowed(store, version, len(item_ids))
        rows = rows[allowed[rows]] if allowed is not None else rows
        if len(rows):  # else nothing served was bought in the window: the model serves (as in serving)
            return [[str(i) for i in item_ids[rows[:K]]]] * len(users), True
    return _model_ranking(store, version, users, day), False


def _baseline_rankings(history: Any, day: date, users: list[str], own_first: bool) -> list[list[str]]:
    """(d) trailing-7-day popularity, or (e) own past items by count then (d)."""
    from recsys import schema

    recent = history[history["day"] >= day - timedelta(days=7)]
    popular = recent[schema.ITEM_ID].value_counts().index.astype(str).tolist()[: K * 3]
    if not own_first:
        return [popular[:K]] * len(users)
    mine = history[history[schema.USER_ID].isin(users)]
    counts = mine.groupby([schema.USER_ID, schema.ITEM_ID]).size().rename("n").reset_index()
    counts = counts.sort_values([schema.USER_ID, "n", schema.ITEM_ID], ascending=[True, False, True])
    own = counts.groupby(schema.USER_ID)[schema.ITEM_ID].agg(lambda s: [str(x) for x in s]).to_dict()
    ranked = []
    for user in users:
        items = own.get(user, [])[:K]
        seen = set(items)
        ranked.append((items + [i for i in popular if i not in seen])[:K])
    return ranked


def _cpu() -> float:
    """CPU seconds of this process so far (all threads): less exposed to other jobs on the machine than
    wall time, which they stretch."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _anchor_ranking(strategy: str, history: Any, day: date, users: list[str], regularisation: float) -> list[list[str]]:
    """The ranking of a non-neural strategy (d-h) from the purchase history before ``day``."""
    import anchors

    if strategy in ("popular", "own_popular"):
        return _baseline_rankings(history, day, users, own_first=strategy == "own_popular")
    if strategy in ("ease", "own_ease"):
        return anchors.ease(history, day, users, K, regularisation, own_first=strategy == "own_ease")
    return anchors.item_knn(history, day, users, K)


def _choose_regularisation(
    strategy: str, store: Any, history: Any, before: list[date]
) -> tuple[float, dict[str, float]]:
    """EASE^R's lambda by mean recall@100 on the last ``TUNE_DAYS`` days before the window (each ranked from the
    history before it); the grid's score of every lambda is returned too."""
    if strategy not in ("ease", "own_ease") or len(before) <= TUNE_DAYS:
        return DEFAULT_LAMBDA, {}
    scores: dict[str, float] = {}
    for lam in LAMBDA_GRID:
        recalls = []
        for day in before[-TUNE_DAYS:]:
            users, relevant = _day_truth(store, day)
            past = history[history["day"] < day]
            recalls.append(_metrics(_anchor_ranking(strategy, past, day, users, lam), relevant)["recall@100"])
        scores[str(lam)] = sum(recalls) / len(recalls)
    best = max(LAMBDA_GRID, key=lambda lam: (scores[str(lam)], -lam))
    return best, scores


def _history_of(store: Any, day: date) -> Any:
    from recsys import schema
    from recsys.features import load_examples

    return load_examples(store, day, columns=[schema.USER_ID, schema.ITEM_ID]).assign(day=day)


class _Run:
    """One strategy's replay: its store, the days, and what it did each day."""

    def __init__(self, strategy: str, days: int, workdir: Path, every: int) -> None:
        from recsys.config import Settings
        from recsys.storage import layout
        from recsys.storage.local import LocalStore

        self.strategy, self.every = strategy, every
        root = workdir / strategy
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(workdir / "landed" / "raw", root / "raw")  # every day, landed once by main()
        # ... and validated once by main(): features are built only from a delivery that passed (or was accepted)
        shutil.copytree(workdir / "landed" / "reports", root / "reports")
        self.store = LocalStore(root)
        self.settings = Settings.from_env().replace(storage_root=str(root))
        all_days = self.store.partitions(layout.RAW_EVENTS)
        if days >= len(all_days):
            raise SystemExit(f"--days {days}: the source has {len(all_days)} days; the window needs days before it")
        self.window, self.before = all_days[-days:], all_days[:-days]
        self.version: int | None = None
        self.ranker: Any = None  # (r) the ranking stage's weights (recsys.ranking.model.RankerWeights)
        self.ranker_lists: list[Any] = []  # (r) the candidate lists of the last RANKER_REPLAY_DAYS days
        self.pending: Any = None  # (r) the last ranked day's (day, ranking.stage.Ranked, item ids)
        self.extra: dict[str, Any] = {}  # (r) what the last rank() measured besides the ranking
        self.failed: list[dict[str, str]] = []  # days a step refused (recorded, the run goes on)
        self.fallback = False  # (b) the last rank() served the popularity fallback
        self.costs = {"prep": 0.0, "bootstrap": 0.0, "bootstrap_cpu": 0.0, "daily": 0.0, "daily_cpu": 0.0,
                      "ranker_rank_cpu": 0.0, "ranker_fit_cpu": 0.0}

    def step(self, day: date, what: str, fn: Any, *args: Any) -> Any:
        """``fn(*args)``; a domain error (a rejected or untrainable day) is recorded and None returned."""
        from recsys.errors import RecsysError

        try:
            return fn(*args)
        except RecsysError as exc:
            self.failed.append({"date": day.isoformat(), "step": what, "error": f"{type(exc).__name__}: {exc}"})
            print(f"[{self.strategy}] {day}: {what} refused: {exc}", file=sys.stderr)
            return None

    def prepare(self) -> Any:
        """Features of every day before the window; the bootstrap model for the model strategies."""
        import pandas as pd

        from recsys import registry
        from recsys.features import build_features
        from recsys.progress import progress
        from recsys.serving.deploy import deploy
        from recsys.training import train_from_scratch

        started = time.perf_counter()
        frames = []
        warm_up = self.before[-RANKER_WARMUP_DAYS:] if self.strategy == "ranked" else []
        for day in progress(self.before[: len(self.before) - len(warm_up)],
                            f"[{self.strategy}] features before the window", "day"):
            if self.step(day, "features", build_features, self.store, self.settings, day) is not None:
                frames.append(_history_of(self.store, day))
        self.costs["prep"] = time.perf_counter() - started
        if self.strategy in MODEL_STRATEGIES:
            t0, c0 = time.perf_counter(), _cpu()
            last = self.before[-1 - len(warm_up)]
            self.version = train_from_scratch(self.store, self.settings, last, run_id="bench-bootstrap")["version"]
            if self.strategy in PIPELINE_STRATEGIES:  # the bootstrap is the first champion
                registry.record_decision(self.store, last, {
                    "date": last.isoformat(), "candidate_version": self.version, "champion_version": None,
                    "candidate_metrics": {}, "champion_metrics": None, "eval_users": 0, "eval_examples": 0,
                    "blessed": True, "reason": "bootstrap: trained on all history before the window",
                    "decided_at": registry.now(),
                }, run_id="bench-bootstrap")
                deploy(self.store, self.settings, last, run_id="bench-bootstrap")
            warm_up_days = progress(warm_up, f"[{self.strategy}] pipeline and ranker before the window", "day")
            for n, day in enumerate(warm_up_days):
                users, _ = _day_truth(self.store, day)
                if users:
                    self.rank(day, users, None, 0.0)
                    self.extra = {}  # not a window day: nothing is measured
                self.update(-1 - n, day)
                frames.append(_history_of(self.store, day))
            self.costs["bootstrap"] = time.perf_counter() - t0
            self.costs["bootstrap_cpu"] = _cpu() - c0
            self.costs["daily"] = self.costs["daily_cpu"] = 0.0  # the warm-up days count as bootstrap
        return pd.concat(frames, ignore_index=True)

    def rank(self, day: date, users: list[str], history: Any, regularisation: float) -> list[list[str]]:
        from recsys import registry

        if self.strategy not in MODEL_STRATEGIES:
            return _anchor_ranking(self.strategy, history, day, users, regularisation)
        if self.strategy == "fully_stale":  # weights, histories, trend and catalog as at the bootstrap
            assert self.version is not None
            return _model_ranking(self.store, self.version, users, self.window[0])
        serving = registry.load(self.store)["champion"] if self.strategy in PIPELINE_STRATEGIES else self.version
        assert serving is not None
        if self.strategy == "ranked":
            return self.rank_two_stages(serving, day, users)
        if self.strategy == "fine_tune":  # what the deployed state serves, the popularity fallback included
            ranked, self.fallback = _served_ranking(self.store, self.settings, serving, users, day)
            return ranked
        return _model_ranking(self.store, serving, users, day)

    def rank_two_stages(self, version: int, day: date, users: list[str]) -> list[list[str]]:
        """(r): the champion's candidates re-ordered by the ranker (the champion's own top-K when there is no
        ranker yet); keeps the day's candidates and features to learn from once the day is over."""
        from recsys.ranking import day_inputs
        from recsys.ranking.stage import rank
        from recsys.serving.index import load_scorer

        c0 = _cpu()
        scorer = load_scorer(self.store, version, before=day)
        allowed = _allowed(self.store, version, len(scorer.item_ids))
        inputs = day_inputs(self.store, scorer.item_ids, allowed, day, trend_days=self.settings.trend_days)
        ranked = rank(scorer, users, inputs, self.ranker, K)
        self.pending = (day, ranked, scorer.item_ids)
        self.costs["ranker_rank_cpu"] += _cpu() - c0
        self.extra = {"retrieval": scorer.top_k(users, K, allowed), "ranker": self.ranker is not None}
        return ranked.ranked

    def learn(self, day: date) -> None:
        """(r): fine-tune the ranker from its last weights on the lists of ``day`` (the customers of its train
        split, labelled by what they bought) and of the days before it (up to RANKER_REPLAY_DAYS)."""
        from recsys import schema
        from recsys.features import load_examples
        from recsys.ranking import Lists, labels, to_lists
        from recsys.ranking.model import fit

        if self.pending is None or self.pending[0] != day:
            return
        c0 = _cpu()
        _, ranked, item_ids = self.pending
        examples = load_examples(self.store, day, columns=[schema.USER_ID, schema.ITEM_ID, schema.SPLIT])
        train = examples[examples[schema.SPLIT] == "train"]
        bought = zip(train[schema.USER_ID].astype(str), train[schema.ITEM_ID].astype(str), strict=True)
        # holdout customers get no label, so their lists (no bought candidate) are left out
        lists = to_lists(ranked.candidates, ranked.features, labels(ranked.candidates, ranked.users, item_ids, bought))
        self.ranker_lists = [*self.ranker_lists, lists][-RANKER_REPLAY_DAYS:]
        everything = Lists.concat(self.ranker_lists)
        if len(everything):
            self.ranker = fit(everything, self.ranker, epochs=RANKER_EPOCHS, seed=self.settings.seed + day.toordinal())
            # the checkpoint (bench/ranking/latency.py reads the newest)
            self.store.write_bytes(f"{RANKER_CHECKPOINTS}/dt={day.isoformat()}/weights.npz", self.ranker.to_bytes())
        self.costs["ranker_fit_cpu"] += _cpu() - c0

    def paired(self, day: date, previous: date, users: list[str], relevant: list[set[str]],
               served: dict[str, float]) -> dict[str, Any] | None:
        """(b, r): would the candidate trained on ``previous`` have beaten the champion it was compared with?

        Both rank ``day``'s customers (data neither trained on); the one the gate deployed is the one that served
        ``day`` (its metrics ``served`` are reused), so this costs one extra ranking a day. None when ``previous``
        trained no candidate or had no champion to compare with (the bootstrap)."""
        from recsys import registry

        if self.strategy not in PIPELINE_STRATEGIES:
            return None
        reg = registry.load(self.store)
        decision = reg["decisions"].get(previous.isoformat())
        if not decision:
            return None
        candidate, champion = decision.get("candidate_version"), decision.get("champion_version")
        if candidate is None or champion is None or candidate == champion:
            return None
        serving = reg["champion"]
        scored = {}
        for version in (candidate, champion):
            if version == serving and self.strategy == "fine_tune":
                scored[version] = served
            elif self.strategy == "fine_tune":  # as each would serve: the popularity fallback included
                scored[version] = _metrics(_served_ranking(self.store, self.settings, version, users, day)[0], relevant)
            else:
                scored[version] = _metrics(_model_ranking(self.store, version, users, day), relevant)
        return paired_record(candidate, champion, scored[candidate], scored[champion], serving == candidate,
                             bool(decision.get("blessed")))

    def serving_version(self) -> int | None:
        """The version that ranks the next day (model strategies; ``fully_stale`` excluded: frozen inputs)."""
        from recsys import registry

        if self.strategy in ("stale", "retrain"):
            return self.version
        return registry.load(self.store)["champion"] if self.strategy in PIPELINE_STRATEGIES else None

    def realtime(self, day: date) -> dict[str, Any] | None:
        """Daily vs real-time inputs on ``day``'s purchase moments (realtime.py), for the serving version."""
        import realtime

        version = self.serving_version()
        if version is None:
            return None
        return realtime.day_metrics(self.store, version, day, K, _metrics,
                                    lambda rows: _allowed(self.store, version, rows))

    def update(self, n: int, day: date) -> None:
        """What the strategy does with day ``day`` once it has been ranked."""
        from recsys.cli import run_all
        from recsys.features import build_features
        from recsys.training import train_from_scratch

        t0, c0 = time.perf_counter(), _cpu()
        if self.strategy in PIPELINE_STRATEGIES:
            self.step(day, "pipeline", run_all, self.store, self.settings, day)
            if self.strategy == "ranked":
                self.step(day, "ranker", self.learn, day)
        else:
            self.step(day, "features", build_features, self.store, self.settings, day)
            if self.strategy == "retrain" and (n + 1) % self.every == 0:
                out = self.step(day, "retrain", lambda: train_from_scratch(self.store, self.settings, day,
                                                                           run_id="bench-retrain"))
                self.version = out["version"] if out else self.version
        self.costs["daily"] += time.perf_counter() - t0
        self.costs["daily_cpu"] += _cpu() - c0


def paired_record(candidate: int, champion: int, candidate_metrics: dict[str, float],
                  champion_metrics: dict[str, float], deployed: bool, blessed: bool) -> dict[str, Any]:
    """One window day's answer to "was the update better, and was it deployed?": the candidate of the day before
    and the champion it was compared with, both ranking the day's customers (per-day means of the metrics).
    ``better`` is a strictly higher recall@100; ``deployed`` whether the candidate served the day."""
    key = f"recall@{K}"
    return {"candidate_version": candidate, "champion_version": champion,
            "candidate": candidate_metrics, "champion": champion_metrics,
            "better": candidate_metrics[key] > champion_metrics[key],
            "worse": candidate_metrics[key] < champion_metrics[key],
            "blessed": blessed, "deployed": deployed}


def update_summary(per_day: list[dict[str, Any]]) -> dict[str, Any] | None:
    """How often the daily update was better than the champion (on the next day's customers) and deployed:
    days compared, better / worse / tied days, deployed days among each, and the share of the better days
    deployed (the issue's target: at least half). Customer-weighted recall@100 gains of both sides too."""
    pairs = [(d["customers"], d["update"]) for d in per_day if d.get("update")]
    if not pairs:
        return None
    key = f"recall@{K}"
    better = [p for _, p in pairs if p["better"]]
    worse = [p for _, p in pairs if p["worse"]]
    customers = sum(c for c, _ in pairs)
    return {
        "days_compared": len(pairs),
        "better_days": len(better), "worse_days": len(worse), "tied_days": len(pairs) - len(better) - len(worse),
        "deployed_days": sum(p["deployed"] for _, p in pairs),
        "deployed_on_better_days": sum(p["deployed"] for p in better),
        "deployed_on_worse_days": sum(p["deployed"] for p in worse),
        "share_of_better_days_deployed": sum(p["deployed"] for p in better) / len(better) if better else None,
        "candidate_recall@100": sum(p["candidate"][key] for _, p in pairs) / len(pairs),
        "champion_recall@100": sum(p["champion"][key] for _, p in pairs) / len(pairs),
        "candidate_micro_recall@100": sum(c * p["candidate"][key] for c, p in pairs) / customers,
        "champion_micro_recall@100": sum(c * p["champion"][key] for c, p in pairs) / customers,
    }


def _means(per_day: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per-day mean and customer-weighted (micro) mean of every metric."""
    metrics = ("recall@20", "recall@100", "ndcg@100")
    if not per_day:
        return {}, {}
    customers = sum(d["customers"] for d in per_day)
    mean = {m: sum(d[m] for d in per_day) / len(per_day) for m in metrics}
    micro = {m: sum(d[m] * d["customers"] for d in per_day) / customers for m in metrics}
    return mean, micro


def _realtime_means(per_day: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per-day and moment-weighted means of the daily and real-time metrics (``--realtime``)."""
    days = [d["per_purchase"] for d in per_day if d.get("per_purchase")]
    if not days:
        return None
    moments = sum(d["moments"] for d in days)
    out: dict[str, Any] = {"days": len(days), "moments": moments,
                           "with_same_day_events": sum(d["with_same_day_events"] for d in days)}
    for mode in ("daily", "realtime"):
        keys = days[0][mode].keys()
        out[mode] = {k: sum(d[mode][k] for d in days) / len(days) for k in keys}
        out[f"{mode}_micro"] = {k: sum(d[mode][k] * d["moments"] for d in days) / moments for k in keys}
    return out


def worker(strategy: str, days: int, workdir: Path, every: int = 1, with_realtime: bool = False,
           until: datetime | None = None, through: date | None = None) -> dict[str, Any]:
    """Run one strategy over the window in this process; returns per-day metrics and costs.

    ``until`` (UTC): no window day is started after it, so a run on a busy machine ends in time with the days it
    measured (``truncated``); ``through``: the last window day to run (the other strategies of a truncated run
    stop at the same day, so every strategy is measured on the same days)."""
    import pandas as pd

    from recsys import registry
    from recsys.features import FeatureError
    from recsys.progress import note, progress

    run = _Run(strategy, days, workdir, every)
    history = run.prepare()
    regularisation, grid = _choose_regularisation(strategy, run.store, history, run.before)
    per_day = []
    truncated = None
    for n, day in enumerate(progress(run.window, f"[{strategy}] window", "day")):
        if (through is not None and day > through) or (until is not None and datetime.now(UTC) >= until):
            truncated = day.isoformat()  # the first window day not run
            break
        users, relevant = _day_truth(run.store, day)
        if n % every == 0 and users:
            metrics = _metrics(run.rank(day, users, history, regularisation), relevant)
            per_day.append({"date": day.isoformat(), "customers": len(users), **metrics})
            if run.fallback:  # (b): served by the popularity fallback its champion's gate decision called for
                per_day[-1]["fallback"] = "popularity"
                run.fallback = False
            if run.extra:  # (r): the champion's own ranking of the same customers, and whether a ranker ranked
                per_day[-1]["retrieval"] = _metrics(run.extra.pop("retrieval"), relevant)
                per_day[-1]["ranker"] = run.extra.pop("ranker")
            previous = run.window[n - 1] if n else run.before[-1]
            if (pair := run.paired(day, previous, users, relevant, metrics)) is not None:
                per_day[-1]["update"] = pair
            if with_realtime and (moments := run.realtime(day)) is not None:
                per_day[-1]["per_purchase"] = moments
            note(f"[{strategy}] {day} customers={len(users)} " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()),
                 stream=sys.stderr)
        run.update(n, day)
        try:
            history = pd.concat([history, _history_of(run.store, day)], ignore_index=True)
        except FeatureError:  # the day's features were refused (recorded by run.step)
            pass
    mean, micro = _means(per_day)
    first_stage = [{"customers": d["customers"], **d["retrieval"]} for d in per_day if "retrieval" in d]
    retrieval_mean, retrieval_micro = _means(first_stage)
    reg = registry.load(run.store)
    realtime = _realtime_means(per_day) if with_realtime else None
    window = run.window
    return {
        "strategy": strategy,
        "window": [window[0].isoformat(), window[-1].isoformat()],
        "truncated_before": truncated,  # --until / --through: the window's days from this one on were not run
        "last_day_run": per_day[-1]["date"] if per_day else None,
        "every": every,
        "days": per_day,
        "mean": mean,
        "micro_mean": micro,
        "retrieval_mean": retrieval_mean or None,  # (r) the champion alone on the same days and customers
        "retrieval_micro_mean": retrieval_micro or None,
        "ranker_rank_cpu_seconds": round(run.costs["ranker_rank_cpu"], 1),
        "ranker_fit_cpu_seconds": round(run.costs["ranker_fit_cpu"], 1),
        "customers": sum(d["customers"] for d in per_day),
        "popularity_fallback_days": sum(1 for d in per_day if d.get("fallback")),  # (b) served by popularity
        "failed_days": run.failed,
        "updates": update_summary(per_day),  # (b, r): better than the champion on the next day, and deployed?
        "per_purchase": realtime,
        "ease_regularisation": regularisation if strategy in ("ease", "own_ease") else None,
        "ease_grid_recall@100": grid,
        "prep_seconds": round(run.costs["prep"], 1),
        "bootstrap_seconds": round(run.costs["bootstrap"], 1),
        "daily_seconds": round(run.costs["daily"], 1),
        "bootstrap_cpu_seconds": round(run.costs["bootstrap_cpu"], 1),
        "daily_cpu_seconds": round(run.costs["daily_cpu"], 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "deploys": sum(1 for h in reg["history"] if h["action"] == registry.DEPLOYED),
        # the training step alone (model.fit), summed over the window's versions
        "window_train_seconds": round(sum(
            v.get("train_seconds", 0.0) for v in reg["versions"].values() if v["trained_on"] >= window[0].isoformat()
        ), 1),
        "settings": {k: v for k, v in run.settings.public().items() if k != "storage_root"},  # no secrets
    }


def _write(args: argparse.Namespace, results: list[dict[str, Any]], dataset: dict[str, Any]) -> Path:
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    import _harness

    record = {
        "command": " ".join(["python", *sys.argv]),
        "git": _harness.git_state(REPO_ROOT),
        "dataset": dataset,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": args.load_at_start, "load_average_at_end": os.getloadavg()},
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    tag = "" if dataset["kind"] == "online_retail_bundle" else f"-{dataset['kind']}-{dataset['fingerprint'][:8]}"
    path = RESULTS / f"{args.started}-{args.days}d{'' if args.every == 1 else f'-every{args.every}'}{tag}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def _fingerprint(landed: Any) -> str:
    """sha256 over every landed raw file (path and bytes), so a results file names exactly the data it ran on."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((Path(landed.root) / "raw").rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            digest.update(str(path.relative_to(landed.root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _land(args: argparse.Namespace) -> dict[str, Any]:
    """Land the chosen source into ``<workdir>/landed`` (idempotent) and describe it."""
    from recsys.storage.local import LocalStore

    landed = LocalStore(args.workdir / "landed")
    if args.synthetic:
        from recsys.datasets.synthetic import SyntheticConfig, publish_days

        config = SyntheticConfig.for_regime(args.regime, events=args.synthetic_events, seed=args.synthetic_seed)
        publish_days(landed, config, date(2026, 1, 1), days=args.synthetic_days)
        described: dict[str, Any] = {"kind": "synthetic", "config": config.as_dict(), "days": args.synthetic_days}
    else:
        from recsys.datasets import online_retail
        from recsys.datasets.landing import land_days

        raw = online_retail.load_source(args.source)
        days = online_retail.source_days(raw)
        land_days(landed, days[0], days=len(days), source=args.source)  # every source day; no fixed limit
        described = {"kind": "online_retail_bundle" if args.source is None else "source_dir",
                     "source": None if args.source is None else str(args.source), "days": len(days)}
    return {**described, "fingerprint": _fingerprint(landed)}


def _validate_all(landed: Any) -> None:
    """Validate every landed day once, in date order (idempotent: a delivery validated before is skipped).

    Features are built only from a validated delivery. A day that fails its expectations is accepted, as on-call
    would for a benchmark, so every strategy trains on exactly the days it trained on before validation was
    required; the strategies copy these reports with the raw data.
    """
    from recsys.config import Settings
    from recsys.progress import progress
    from recsys.storage import layout
    from recsys.validation import validate_partition

    settings = Settings.from_env().replace(storage_root=str(landed.root))
    for day in progress(landed.partitions(layout.RAW_EVENTS), "validate", "day"):
        validate_partition(landed, settings, day, run_id="bench-validate", accept_invalid=True,
                           accept_reason="replay benchmark: every source day is used as landed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=60, help="window length in days with data")
    parser.add_argument("--strategies", default="a,b,c,d,e", help="comma-separated letters of the strategies")
    parser.add_argument("--workdir", type=Path, help="work files (default var/bench/replay_quality[-<data>])")
    parser.add_argument("--every", type=int, default=1, help="evaluate every N-th window day only (see above)")
    parser.add_argument("--source", type=Path, help="directory of per-day CSVs in the Online Retail format")
    parser.add_argument("--synthetic", action="store_true", help="run on generated days instead")
    parser.add_argument("--synthetic-days", type=int, default=90)
    parser.add_argument("--synthetic-events", type=int,
                        help="events per generated day (default: the regime's; 20000 for the default regime)")
    parser.add_argument("--regime", default="default",
                        choices=["default", "sparse", "no_repeat", "sessions", "seasonal"],
                        help="with --synthetic: the kind of shop (`recsys generate-synthetic --help`)")
    parser.add_argument("--synthetic-seed", type=int, default=7)
    parser.add_argument("--realtime", action="store_true",
                        help="model strategies also rank each purchase with same-day events (realtime.py)")
    parser.add_argument("--summarise", nargs="+", type=Path, metavar="RESULTS_JSON",
                        help="print the regime table (README) of these results files and exit")
    parser.add_argument("--until", type=datetime.fromisoformat,
                        help="UTC time (e.g. 2026-12-02T19:40): start no window day after it; the strategies after a "
                             "truncated one stop at the same day (results record truncated_before)")
    parser.add_argument("--through", type=date.fromisoformat, help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.summarise:
        summarise(args.summarise)
        return 0
    if args.source is not None and args.synthetic:
        parser.error("--source and --synthetic exclude each other")
    if args.regime != "default" and not args.synthetic:
        parser.error("--regime needs --synthetic")
    if args.synthetic_events is None and args.regime in ("default", "no_repeat", "sessions", "seasonal"):
        args.synthetic_events = 20_000
    if args.workdir is None:
        suffix = "" if args.source is None and not args.synthetic else (
            f"-synthetic{'' if args.regime == 'default' else '-' + args.regime}-{args.synthetic_events or 'd'}"
            f"x{args.synthetic_days}-s{args.synthetic_seed}" if args.synthetic
            else f"-{args.source.resolve().name}")
        args.workdir = REPO_ROOT / "var" / "bench" / f"replay_quality{suffix}"
    args.started = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%S")
    args.load_at_start = os.getloadavg()
    if args.worker:
        until = args.until.replace(tzinfo=UTC) if args.until and args.until.tzinfo is None else args.until
        print(json.dumps(worker(args.worker, args.days, args.workdir, args.every, args.realtime, until, args.through)))
        return 0
    letters = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in letters if s not in STRATEGIES]
    if unknown:
        parser.error(f"unknown strategies {unknown}; choose from {STRATEGIES}")
    from recsys.storage.local import LocalStore

    t0 = time.perf_counter()
    dataset = _land(args)
    print(f"landed every day in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    t0 = time.perf_counter()
    _validate_all(LocalStore(args.workdir / "landed"))
    print(f"validated every day in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    results = []
    through = None  # set by a truncated strategy: the others run the same days
    for letter in letters:
        name = STRATEGIES[letter]
        t0 = time.perf_counter()
        limits = [*(["--until", args.until.isoformat()] if args.until and through is None else []),
                  *(["--through", through] if through else [])]
        out = subprocess.run(
            [sys.executable, __file__, "--worker", name, "--days", str(args.days), "--workdir", str(args.workdir),
             "--every", str(args.every), *(["--realtime"] if args.realtime else []), *limits],
            stdout=subprocess.PIPE, text=True, env=os.environ.copy(), check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["wall_seconds"] = round(time.perf_counter() - t0, 1)
        if result.get("truncated_before") and through is None:
            through = result["last_day_run"]
        results.append(result)
        path = _write(args, results, dataset)  # after every strategy, so a long run keeps what it measured
    _print_table(results)
    print(f"\nwritten to {path.relative_to(REPO_ROOT)}")
    return 0


def summarise(paths: list[Path]) -> None:
    """The README's regime table: per results file, each strategy's per-day and micro means, customers per day,
    and for the pipeline the deploys on the days its update was better (``updates``)."""
    print("| data (window) | strategy | customers (per day) | recall@20 | recall@100 | NDCG@100 | micro recall@100 "
          "| micro NDCG@100 | deployed / days compared | deployed on better days | deployed on worse days "
          "| failed days | commit (load) | results file |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        record = json.loads(path.read_text())
        config = record["dataset"].get("config", {})
        data = f"{config.get('regime', record['dataset']['kind'])} ({max(len(r['days']) for r in record['results'])} d)"
        loads = [*record["machine"]["load_average_at_start"][:1], *record["machine"]["load_average_at_end"][:1]]
        commit = f"{record['git'].get('commit', '?')[:7]}{' dirty' if record['git'].get('dirty') else ''} " \
                 f"({'-'.join(f'{x:.0f}' for x in loads)})"
        for r in record["results"]:
            m, u, days = r["mean"], r["micro_mean"], r["days"]
            per_day = [d["customers"] for d in days]
            if not per_day:  # a strategy that measured no day (truncated before its first, or no customers)
                why = f"truncated before {r['truncated_before']}" if r.get("truncated_before") else "no day measured"
                print(f"| {data} | {r['strategy']} | 0 ({why}) | | | | | | | | | {len(r['failed_days'])} | {commit} "
                      f"| `{path.name}` |")
                continue
            up = r.get("updates")
            deployed = better = worse = ""
            if up:
                share = up["share_of_better_days_deployed"]
                deployed = f"{up['deployed_days']} / {up['days_compared']}"
                better = f"{up['deployed_on_better_days']} of {up['better_days']}" + (
                    "" if share is None else f" ({share:.0%})")
                worse = f"{up['deployed_on_worse_days']} of {up['worse_days']}"
            fallback = r.get("popularity_fallback_days")
            name = f"{r['strategy']} (popularity fallback {fallback} d)" if fallback else r["strategy"]
            print(f"| {data} | {name} | {r['customers']} ({min(per_day)}-{max(per_day)}) "
                  f"| {m['recall@20']:.3f} | {m['recall@100']:.3f} | {m['ndcg@100']:.3f} | {u['recall@100']:.3f} "
                  f"| {u['ndcg@100']:.3f} | {deployed} | {better} | {worse} | {len(r['failed_days'])} | {commit} "
                  f"| `{path.name}` |")


def _print_table(results: list[dict[str, Any]]) -> None:
    print("| strategy | recall@20 | recall@100 | NDCG@100 | micro recall@100 | micro NDCG@100 | failed days "
          "| bootstrap s | daily s | daily CPU s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        m, u = r["mean"], r["micro_mean"]
        if not m:  # truncated before its first day
            continue
        print(f"| {r['strategy']} | {m['recall@20']:.3f} | {m['recall@100']:.3f} | {m['ndcg@100']:.3f} "
              f"| {u['recall@100']:.3f} | {u['ndcg@100']:.3f} | {len(r['failed_days'])} "
              f"| {r['bootstrap_seconds']} | {r['daily_seconds']} | {r['daily_cpu_seconds']} | {r['peak_rss_mb']} |")
        if r.get("popularity_fallback_days"):
            print(f"| {r['strategy']}: served by the popularity fallback on {r['popularity_fallback_days']} of "
                  f"{len(r['days'])} days | | | | | | | | | | |")
        if r.get("updates"):
            u = r["updates"]
            share = u["share_of_better_days_deployed"]
            print(f"| {r['strategy']}: updates | deployed {u['deployed_days']} of {u['days_compared']} days compared; "
                  f"on {u['deployed_on_better_days']} of {u['better_days']} better days "
                  f"({'-' if share is None else f'{share:.0%}'}), {u['deployed_on_worse_days']} of {u['worse_days']} "
                  f"worse | candidate {u['candidate_recall@100']:.3f} | champion {u['champion_recall@100']:.3f} "
                  "| | | | | | | |")
        if r.get("retrieval_mean"):
            m, u = r["retrieval_mean"], r["retrieval_micro_mean"]
            print(f"| {r['strategy']}: its champion alone | {m['recall@20']:.3f} | {m['recall@100']:.3f} "
                  f"| {m['ndcg@100']:.3f} | {u['recall@100']:.3f} | {u['ndcg@100']:.3f} | | | | | |")
    timed = [r for r in results if r.get("per_purchase")]
    if timed:
        print("\n| strategy | purchase moments | with same-day events | inputs | recall@20 | recall@100 | NDCG@100 "
              "| micro recall@20 | micro recall@100 |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in timed:
            p = r["per_purchase"]
            for mode in ("daily", "realtime"):
                m, u = p[mode], p[f"{mode}_micro"]
                print(f"| {r['strategy']} | {p['moments']} | {p['with_same_day_events']} | {mode} "
                      f"| {m['recall@20']:.3f} | {m['recall@100']:.3f} | {m['ndcg@100']:.3f} "
                      f"| {u['recall@20']:.3f} | {u['recall@100']:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
