"""The ``recsys`` command line: every pipeline step, landing, summaries and recommendations.

Each step prints a JSON document on stdout (logs go to stderr), so it composes with ``jq``.
Exit status: 0 on success, 2 on a domain error with a message saying what to do.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.config import Settings
from recsys.errors import DOMAIN_ERRORS

if TYPE_CHECKING:
    from recsys.storage import PartitionStore


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date of the form YYYY-MM-DD") from err


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from err
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def _parser() -> argparse.ArgumentParser:
    from recsys.streaming.topics import CATALOG_TOPIC, EVENTS_TOPIC

    p = argparse.ArgumentParser(prog="recsys", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    land = sub.add_parser("land", help="publish raw partitions of Online Retail (the upstream simulator)")
    when = land.add_mutually_exclusive_group(required=True)
    when.add_argument("--date", type=_date, help="land exactly this day (it must have data)")
    when.add_argument("--from", dest="start", type=_date, help="first day of a range")
    land.add_argument("--days", type=int, default=1, help="with --from: how many days that have data")
    land.add_argument("--source", type=Path, help="directory of per-day CSVs (default: the shipped bundle)")

    for name, text in [
        ("validate", "validate a raw partition with Great Expectations"),
        ("features", "clean a partition, grow the vocabularies, write examples"),
        ("train", "fine-tune the candidate of a date from the last checkpoint (as one task of a cluster when "
                  "TF_CONFIG is set: recsys/training_distributed.py)"),
        ("evaluate", "score candidate and champion on the date's held-out users; decide"),
        ("deploy", "deploy the blessed candidate of a date"),
        ("run", "all steps for a date, without Airflow (validate .. deploy if blessed)"),
    ]:
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--date", type=_date, required=True)
        if name == "validate":
            sp.add_argument(
                "--accept-reason",
                help="on-call: accept the partition although it fails its expectations, for this reason "
                "(recorded in the registry history)",
            )

    rt = sub.add_parser("retrain", help="train from scratch on a window of days; evaluate and deploy it through "
                        "the same gate as a daily candidate (what the recsys_full_retrain DAG runs)")
    rt.add_argument("--end", type=_date, help="last processed date to train on (default: the newest)")
    rt.add_argument("--window-days", type=int, help="days of partitions ending at --end (default: "
                    "RECSYS_RETRAIN_WINDOW_DAYS)")

    rb = sub.add_parser("rollback", help="point the champion back to an earlier deployed version")
    rb.add_argument("--to", type=int, help="version (default: the previous champion)")
    rb.add_argument("--reason", required=True, help="why (recorded in the registry history)")

    ri = sub.add_parser("refresh-index", help="apply the newest complete catalog to a version's serving index "
                        "(delisted items out, relisted back; no retraining)")
    ri.add_argument("--version", type=int, help="version (default: the champion)")

    sub.add_parser("prune", help="delete the directories of old versions beyond RECSYS_KEEP_VERSIONS that are "
                   "not protected (champion, deployed, next fine-tune's parent, awaiting gate or deploy); "
                   "recorded in the registry (also runs after each deploy)")

    serve = sub.add_parser("serve", help="run the recommendation service (HTTP; hot-reloads the champion)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--poll-seconds", type=_positive, default=2.0,
                       help="how often the registry is checked for a new champion or serving index")
    serve.add_argument("--ann-min-items", type=int, default=200_000,
                       help="catalogs with at least this many items are searched with an HNSW index (faiss); "
                            "smaller ones exactly")
    serve.add_argument("--exact", action="store_true", help="always exact search (no HNSW index)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--events-topic", default=EVENTS_TOPIC,
                       help="with RECSYS_SERVE_LIVE=1: the behaviour events topic the live state follows")
    serve.add_argument("--catalog-topic", default=CATALOG_TOPIC,
                       help="with RECSYS_SERVE_LIVE=1: the item events topic the live state follows")

    rec = sub.add_parser("recommend", help="top items for a user from the champion")
    rec.add_argument("--user", required=True)
    rec.add_argument("-k", type=int, default=10)

    summ = sub.add_parser("summary", help="what happened to each partition date, then the champion")
    summ.add_argument("--date", type=_date, help="only this date")
    summ.add_argument("--format", dest="output", choices=["text", "csv", "json"], default="text",
                      help="text: what happened to each date, then the champion; csv or json: the data-health "
                      "trend of every date (events, volume band, shares, duplicates, failed checks, margins to "
                      "the thresholds), as on the Validation view")
    sub.add_parser("showcase", help="the champion and sample recommendations for a real customer")
    sub.add_parser("registry", help="print the registry document")

    gen = sub.add_parser(
        "generate-synthetic",
        help="publish synthetic raw partitions (Zipf items, skewed users, sessions, titles; "
        "recsys/datasets/synthetic.py) for scale tests and the replay benchmark",
    )
    gen.add_argument(
        "--regime", choices=["default", "sparse", "no_repeat", "sessions", "seasonal"], default="default",
        help="kind of shop: default (the clickstream: --events a day, users and items from it); sparse (about 90 "
        "events and 20 buying customers a day, 600 users, 500 items, the volume varying by day, thin days); "
        "no_repeat (no customer buys an item twice over the days published together); sessions (anonymous users: "
        "a new user id per session, never returning); seasonal (volume 0.5x-1.8x by weekday, each weekday "
        "favouring its own categories, and promotion days on which 3 items take 30%% of the events)",
    )
    gen.add_argument("--from", dest="start", type=_date, required=True, help="first day")
    gen.add_argument("--days", type=int, default=1, help="consecutive days (one user and item universe)")
    gen.add_argument("--events", type=int, help="events per day (on average for sparse and seasonal; default: "
                     "90 for sparse, else 100000)")
    gen.add_argument("--users", type=int, help="users in the universe (default: 600 for sparse, else events / 8)")
    gen.add_argument("--items", type=int, help="items in the universe (default: 500 for sparse, else events / 50)")
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--chunk-events", type=int, default=1_000_000, help="events per part file")
    gen.add_argument("--overwrite", action="store_true", help="replace days that were already published")

    # the streaming services parse their own options (`recsys collect --help`, `recsys sink --help`)
    sub.add_parser("collect", add_help=False,
                   help="the event collector: POST /events (JSON array or NDJSON) checked at the edge, to Kafka")
    sub.add_parser("sink", add_help=False,
                   help="the Kafka -> raw/events/dt=D sink: atomic part files, deduplicated, days closed by watermark")
    sub.add_parser("catalog-from-events", add_help=False,
                   help="rebuild raw/catalog/dt=D from the day before and D's item events (the catalog topic)")

    bundle = sub.add_parser("bundle-online-retail", help="rebuild the shipped data bundle from per-day CSVs")
    bundle.add_argument("--source", type=Path, required=True)
    return p


def run_all(store: PartitionStore, settings: Settings, day: date) -> dict[str, Any]:
    """Every step for ``day`` in order, as the DAG runs them (used by the CLI and benchmarks)."""
    from recsys.evaluation import evaluate_candidate
    from recsys.features import build_features
    from recsys.serving.deploy import deploy
    from recsys.training import fine_tune
    from recsys.validation import validate_partition

    out: dict[str, Any] = {"validation": validate_partition(store, settings, day).as_dict()}
    out["features"] = build_features(store, settings, day).as_dict()
    out["training"] = fine_tune(store, settings, day)
    out["evaluation"] = evaluate_candidate(store, settings, day)
    out["deploy"] = deploy(store, settings, day) if out["evaluation"]["blessed"] else None
    return out


# one function per command: (store, settings, parsed arguments) -> the JSON-able result (None: printed already)
def _land(store: PartitionStore, settings: Settings, args: argparse.Namespace) -> Any:
    from recsys.datasets.landing import land_days

    start = args.date or args.start
    days = 1 if args.date else args.days
    return [x.as_dict() for x in land_days(store, start, days, args.source, exact=args.date is not None)]


def _validate(store: PartitionStore, settings: Settings, args: argparse.Namespace) -> Any:
    from recsys.validation import validate_partition

    accept = args.accept_reason is not None
    return validate_partition(
        store, settings, args.date, accept_invalid=accept, accept_reason=args.accept_reason, run_id="cli"
    ).as_dict()


def _features(store: PartitionStore, settings: Settings, args: argparse.Namespace) -> Any:
    from recsys.features import build_features

    return build_features(store, settings, args.date).as_dict()


def _train(store: PartitionStore, settings: Settings, args: argparse.Namespace) -> Any:
    from recsys import training_distributed
    from recsys.training import fine_tune

    cluster = training_distributed.cluster_from_env()  # TF_CONFIG: this process is one task of a cluster
    if cluster is not None:
        return training_distributed.fine_tune(store, settings, args.date, cluster)
    return fine_tune(store, settings, args.date)


def _evaluate(store: PartitionStore, settings: Settings, args: argparse.Namespace) -> Any:
    from recsys.evaluation import evaluate_candidate

    return evaluate_candidate(store, settings, args.date)


def _deploy(store: PartitionStore, settings: Settings, args: argparse.Namespace) -> Any:
    from recsys.serving.deploy import deploy

    return deploy(store, settings, args.date)


def _run(store: PartitionStore, settings: Settings, args: argparse.Namespace) -> Any:
    return run_all(store, settings, args.date)


def _retrain(store: PartitionStore, settings: Settings, args: argparse.Namespace) -> Any:
    from recsys import retrain
    from recsys.registry import now

    run_id = f"cli-retrain-{now()}"  # one run: a second command trains again
    trained = retrain.train(store, settings, args.end, args.window_days, run_id=run_id)
    version = int(trained["version"])
    decision = retrain.evaluate(store, settings, version, run_id=run_id)
    deployed = retrain.deploy(store, settings, version, run_id=run_id) if decision["blessed"] else None
    return {"training": trained, "evaluation": decision, "deploy": deployed}


def _rollback(store: PartitionStore, settings: Settings, args: argparse.Namespace) -> Any:
    from recsys.serving.deploy import rollback

    return rollback(store, args.reason, args.to, run_id="cli")


def _refresh_index(store: PartitionStore, settings: Settings, args: argparse.Namespace) -> Any:
    from recsys.serving.deploy import refresh_index

    return refresh_index(store, args.version, run_id="cli")


def _prune(store: PartitionStore, settings: Settings, args: argparse.Namespace) -> Any:
    from recsys.serving.retention import prune_versions

    return prune_versions(store, settings, run_id="cli")


def _serve(store: PartitionStore, settings: Settings, args: argparse.Namespace) -> Any:
    import uvicorn

    from recsys.serving.bounded_http import server_options
    from recsys.serving.live import live_config
    from recsys.serving.service import create_app

    live = live_config(settings, args.events_topic, args.catalog_topic)  # RECSYS_SERVE_LIVE: follow the topics
    app = create_app(store, poll_seconds=args.poll_seconds,
                     ann_min_items=None if args.exact else max(1, args.ann_min_items),
                     max_id_length=settings.validation_max_id_length,  # serve every id validation accepts
                     live=live, popularity_fallback=settings.popularity_fallback)
    print(f"recsys serve: http://{args.host}:{args.port} (store {store.uri('')}; docs at /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, **server_options())
    return None


def _recommend(store: PartitionStore, settings: Settings, args: argparse.Namespace) -> Any:
    from recsys.serving.recommend import recommend

    return recommend(store, args.user, args.k, popularity_fallback=settings.popularity_fallback)


def _summary(store: PartitionStore, settings: Settings, args: argparse.Namespace) -> Any:
    from recsys.report import summary_text
    from recsys.validation import health

    if args.output == "text":
        print(summary_text(store, args.date.isoformat() if args.date else None))
        return None
    rows = health.trend_rows(store, args.date, args.date)
    sys.stdout.write(health.rows_csv(rows) if args.output == "csv" else health.rows_json(rows) + "\n")
    return None


def _showcase(store: PartitionStore, settings: Settings, args: argparse.Namespace) -> Any:
    from recsys.report import showcase_text

    print(showcase_text(store))
    return None


def _registry(store: PartitionStore, settings: Settings, args: argparse.Namespace) -> Any:
    from recsys import registry

    return registry.load(store)


def _generate_synthetic(store: PartitionStore, settings: Settings, args: argparse.Namespace) -> Any:
    from recsys.datasets import synthetic

    config = synthetic.SyntheticConfig.for_regime(
        args.regime, events=args.events, users=args.users, items=args.items, seed=args.seed,
        chunk_events=args.chunk_events,
    )
    return [g.as_dict() for g in synthetic.publish_days(store, config, args.start, args.days, args.overwrite)]


def _bundle_online_retail(store: PartitionStore, settings: Settings, args: argparse.Namespace) -> Any:
    from recsys.datasets.online_retail import BUNDLE, SOURCE_COLUMNS, load_source

    raw = load_source(args.source)
    raw[list(SOURCE_COLUMNS)].to_parquet(BUNDLE, compression="zstd", compression_level=19, index=False)
    return {"rows": len(raw), "path": str(BUNDLE)}


_COMMANDS: dict[str, Callable[[PartitionStore, Settings, argparse.Namespace], Any]] = {
    "land": _land, "validate": _validate, "features": _features, "train": _train, "evaluate": _evaluate,
    "deploy": _deploy, "run": _run, "retrain": _retrain, "rollback": _rollback, "refresh-index": _refresh_index,
    "prune": _prune, "serve": _serve, "recommend": _recommend, "summary": _summary, "showcase": _showcase,
    "registry": _registry,
    "generate-synthetic": _generate_synthetic, "bundle-online-retail": _bundle_online_retail,
}


def _dispatch(args: argparse.Namespace, settings: Settings) -> Any:
    from recsys.storage import open_store

    command = _COMMANDS.get(args.command)
    store = open_store(settings)
    if command is None:
        raise AssertionError(f"unhandled command {args.command}")
    return command(store, settings, args)


def _streaming(command: str, argv: list[str]) -> int:
    """``recsys collect`` / ``recsys sink`` (long-running services) and ``recsys catalog-from-events``: options of
    their own."""
    if command == "collect":
        from recsys.streaming import collector

        return collector.main(argv)
    if command == "catalog-from-events":
        from recsys.streaming import catalog

        return catalog.main(argv)
    from recsys.streaming import sink

    return sink.main(argv)


STREAMING_COMMANDS = ("collect", "sink", "catalog-from-events")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in STREAMING_COMMANDS:
        return _streaming(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "serve":
        # One BLAS thread per scoring call: concurrency comes from requests, and a BLAS thread pool
        # fighting the request threads for the cores multiplies tail latency (p99 15 ms -> 1.3 ms at
        # 100k items on 2 cores, bench/serving_latency). Must be set before numpy is first imported.
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, "1")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = Settings.from_env()
        result = _dispatch(args, settings)
    except DOMAIN_ERRORS as err:
        print(f"recsys {args.command}: {err}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
