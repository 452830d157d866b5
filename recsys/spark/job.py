"""The Spark application of the validate and features steps: what ``spark-submit`` runs.

    spark-submit recsys/spark/job.py validate --date 2011-01-04 [--run-id R] [--accept-invalid
        --accept-reason TEXT] [--force]
    spark-submit recsys/spark/job.py features --date 2011-01-04 [--run-id R]

(or ``python -m recsys.spark.job ...``, which starts its own session from ``RECSYS_SPARK_MASTER``). The
settings come from the ``RECSYS_*`` environment (:meth:`recsys.config.Settings.from_env`), the store is the
one they name; the step is :mod:`recsys.spark.steps` on Spark whatever ``RECSYS_COMPUTE`` says. The result
is printed as one JSON line on stdout; a domain error (an invalid partition, a step run out of order) is
printed on stderr and exits with status 1, anything else with a traceback and status 2 or more.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

STEPS = ("validate", "features")
# what each step imports on the driver besides pyspark (Great Expectations alone takes seconds of CPU): imported
# in a thread while the main thread starts the SparkSession, whose start-up is mostly the JVM's work
WARM_IMPORTS = {
    "validate": ("great_expectations", "recsys.spark.validate", "recsys.validation.partition"),
    "features": ("recsys.spark.features", "recsys.features.build", "pyarrow.compute"),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="recsys.spark.job", description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("--date", required=True, type=date.fromisoformat, help="the partition date, YYYY-MM-DD")
    parser.add_argument("--run-id", default=None, help="the Airflow run id (recorded with registry entries)")
    parser.add_argument("--accept-invalid", action="store_true", help="validate: on-call accepts a failed partition")
    parser.add_argument("--accept-reason", default=None, help="validate: why (required with --accept-invalid)")
    parser.add_argument("--force", action="store_true", help="validate: run the suites again on a passed delivery")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the step on Spark; its JSON-able result (the validation summary, or the feature stats)."""
    from recsys.config import Settings
    from recsys.spark import steps
    from recsys.storage import open_store

    settings = Settings.from_env().replace(compute="spark")
    store = open_store(settings)
    start_session(settings, args.step)
    if args.step == "validate":
        report = steps.validate_partition(store, settings, args.date, run_id=args.run_id,
                                          accept_invalid=args.accept_invalid, accept_reason=args.accept_reason,
                                          force=args.force)
        return report.as_dict()
    return steps.build_features(store, settings, args.date, run_id=args.run_id).as_dict()


def start_session(settings: Any, step: str) -> None:
    """Start the step's SparkSession (what :mod:`recsys.spark.steps` then uses) while a thread imports the
    step's modules (:data:`WARM_IMPORTS`): on two cores the import and the JVM's start-up overlap. An import
    that fails in the thread is left to the step, which imports the module again and reports the error."""
    import importlib
    import threading

    from recsys.spark.session import spark_session

    try:  # pyspark first, in this thread: the two threads then never import the same modules at once
        importlib.import_module("pyspark.sql")
    except ImportError:
        pass  # spark_session says what is missing

    def warm() -> None:
        for module in WARM_IMPORTS[step]:
            try:
                importlib.import_module(module)
            except Exception:  # noqa: BLE001 - the step's own import raises it again, where it is reported
                return

    thread = threading.Thread(target=warm, name=f"warm-{step}", daemon=True)
    thread.start()
    try:
        spark_session(settings, f"recsys-{step}")
    finally:
        thread.join()


def main(argv: Sequence[str] | None = None) -> int:
    from recsys.errors import RecsysError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # hundreds of lines of its own set-up
    args = parse_args(argv)
    try:
        result = run(args)
    except RecsysError as err:
        print(f"recsys.spark.job {args.step} {args.date}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result, default=str))
    return 0


def script_sys_path(path: Sequence[str], script: Path) -> list[str]:
    """``sys.path`` for a module of this package run as a file by spark-submit: without the file's directory
    (``recsys/spark`` would shadow top-level modules), and with spark-submit's ``pyspark.zip`` and py4j zip
    after the site directory of the installed pyspark they come with (the same code: a zip's modules are
    compiled from source at every start, a second of CPU per step; a zip of another Spark stays first)."""
    here = script.resolve().parent
    kept = [p for p in path if Path(p or ".").resolve() != here]
    sites = {str(Path(p).resolve()) for p in kept if p and not p.endswith(".zip")}

    def installed(entry: str) -> bool:  # <site>/pyspark/python/lib/<zip>, <site> on the path
        parts = Path(entry).resolve().parents
        return entry.endswith(".zip") and len(parts) > 3 and parts[2].name == "pyspark" and str(parts[3]) in sites

    return [p for p in kept if not installed(p)] + [p for p in kept if installed(p)]


if __name__ == "__main__":
    if not __package__:  # run as a file by spark-submit
        sys.path[:] = script_sys_path(sys.path, Path(__file__))
    sys.exit(main())
