"""Examples per second of the product's fine-tune step against bare TFRS training of the same model and data.

Setup: ``--days`` synthetic days (``recsys.datasets.synthetic``) are published and turned into features
(``recsys.features.build_features``) in a temporary store. Then, for each day after the first (the first
is the cold start that every later fine-tune warm-starts from), interleaved in one process:

* **pipeline**: ``recsys.training.fine_tune(store, settings, day)``, the whole step as the DAG runs it
  (read the day's examples and the replay sample, warm start from the previous version, build the
  tf.data pipeline, ``fit``, save the tables, update the registry). Wall time of the call.
* **bare fit**: the same model object and the same ``tf.data.Dataset`` that ``fine_tune`` handed to
  ``model.fit`` (captured by wrapping ``tf.keras.Model.fit`` for the duration of the call, so this bench
  follows whatever model and features ``recsys.training`` builds), trained again with ``model.fit`` for the
  same epochs, its compiled train function dropped first so tracing is paid again as in the pipeline.
* **bare loop**: the same model and dataset, a hand-written ``tf.function`` step
  (``model.compute_loss`` + ``GradientTape`` + a fresh optimizer of the same configuration): TFRS with
  no Keras ``fit`` machinery at all.

Examples per second = examples in the dataset x epochs / seconds. The ratio pipeline / bare fit is the
overhead of everything the product does around training (target >= 0.9). Pairs alternate which of
pipeline and bare runs first, and the median over the repeats is reported, so a burst of load from other
work on the machine does not land on one side only.

TensorFlow threads: ``--intra`` / ``--inter`` call ``tf.config.threading.set_intra_op_parallelism_threads``
/ ``set_inter_op_parallelism_threads`` before anything runs (0 = TensorFlow's default: one thread per
core); the values in effect are recorded. Both sides run in the same process with the same settings.

    . scripts/env.sh
    nice -n 10 python bench/training_throughput/run.py --out bench/training_throughput/results.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import recsys  # noqa: F401  (before TensorFlow loads: sets TF_USE_LEGACY_KERAS)

ROOT = Path(__file__).resolve().parents[2]
START = date(2026, 1, 5)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


class FitCapture:
    """Wraps ``tf.keras.Model.fit`` while active: records the model, dataset and epochs of each call."""

    def __init__(self, tf: Any) -> None:
        self.tf = tf
        self.calls: list[dict[str, Any]] = []

    def __enter__(self) -> FitCapture:
        original = self.tf.keras.Model.fit
        self._original = original
        calls = self.calls

        def fit(model: Any, x: Any = None, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            history = original(model, x, *args, **kwargs)
            calls.append(
                {
                    "model": model,
                    "dataset": x,
                    "epochs": kwargs.get("epochs", 1),
                    "fit_seconds": time.perf_counter() - started,
                }
            )
            return history

        self.tf.keras.Model.fit = fit
        return self

    def __exit__(self, *exc: object) -> None:
        self.tf.keras.Model.fit = self._original


def count_examples(tf: Any, dataset: Any) -> int:
    """Examples in one pass of a batched dataset (the first tensor's leading dimension, summed)."""
    total = 0
    for batch in dataset:
        first = next(iter(batch.values())) if isinstance(batch, dict) else tf.nest.flatten(batch)[0]
        total += int(first.shape[0])
    return total


def bare_fit(tf: Any, model: Any, dataset: Any, epochs: int) -> float:
    model.train_function = None  # trace again, as the pipeline's fresh model does
    started = time.perf_counter()
    model.fit(dataset, epochs=epochs, verbose=0)
    return time.perf_counter() - started


def bare_loop(tf: Any, model: Any, dataset: Any, epochs: int) -> float:
    optimizer = type(model.optimizer).from_config(model.optimizer.get_config())

    @tf.function
    def step(batch: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = model.compute_loss(batch, training=True)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    started = time.perf_counter()
    for _ in range(epochs):
        for batch in dataset:
            step(batch)
    return time.perf_counter() - started


def build_features(store: Any, day: date, settings: Any) -> Any:
    """``recsys.features.build_features`` across its signature changes (holdout fraction; settings; step order)."""
    from recsys.features import build_features as build

    parameters = list(inspect.signature(build).parameters)
    if "holdout_fraction" in parameters:
        return build(store, day, settings.holdout_fraction)
    if parameters[1] == "day":  # before the common step signature (store, settings, day)
        return build(store, day, settings)
    return build(store, settings, day)


def prepare(store: Any, days: int, events: int, settings: Any) -> list[date]:
    from recsys.datasets import synthetic

    config = synthetic.SyntheticConfig(events=events, seed=17)
    published = synthetic.publish_days(store, config, START, days)
    from recsys.validation import validate_partition

    for p in published:  # features are built only from a validated (here: accepted if it fails) delivery
        validate_partition(store, settings, p.day, run_id="bench-validate", accept_invalid=True,
                           accept_reason="training throughput benchmark: every generated day is used")
        build_features(store, p.day, settings)
    return [p.day for p in published]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200_000, help="synthetic events per day")
    p.add_argument("--repeats", type=int, default=6, help="fine-tuned days (pipeline/bare pairs)")
    p.add_argument("--intra", type=int, default=0, help="intra-op threads (0: TensorFlow's default)")
    p.add_argument("--inter", type=int, default=0, help="inter-op threads (0: TensorFlow's default)")
    p.add_argument("--no-loop", action="store_true", help="skip the hand-written tf.function loop")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "training_throughput" / "results.json")
    args = p.parse_args()

    import tensorflow as tf  # after `import recsys` above: it sets TF_USE_LEGACY_KERAS, which TensorFlow reads

    from recsys.config import Settings
    from recsys.storage.local import LocalStore
    from recsys.training import fine_tune

    tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    threads = {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "note": "0 means TensorFlow's default (one thread per core); the product sets none",
        "env": {
            k: os.environ.get(k)
            for k in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "TF_ENABLE_ONEDNN_OPTS")
        },
    }
    uptime_before = uptime()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    pairs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="recsys-bench-tt-") as tmp:
        settings = Settings.from_env({"RECSYS_STORAGE_ROOT": tmp})
        store = LocalStore(Path(tmp))
        t = time.perf_counter()
        days = prepare(store, args.repeats + 1, args.events, settings)
        print(
            f"prepared {len(days)} days of {args.events:,} events in {time.perf_counter() - t:.0f} s | {uptime()}",
            flush=True,
        )
        fine_tune(store, settings, days[0], run_id="bench-cold-start")  # every later day warm-starts
        pending: dict[str, Any] | None = None  # the capture a bare-first pair trains on (previous day's)
        for n, day in enumerate(days[1:]):
            pipeline_first = n % 2 == 0 or pending is None
            row: dict[str, Any] = {
                "day": day.isoformat(),
                "order": "pipeline first" if pipeline_first else "bare first",
            }
            if not pipeline_first and pending is not None:
                row.update(run_bare(tf, pending, not args.no_loop))
            with FitCapture(tf) as capture:
                t = time.perf_counter()
                meta = fine_tune(store, settings, day, run_id="bench")
                pipeline_s = time.perf_counter() - t
            if len(capture.calls) != 1:
                raise SystemExit(
                    f"expected recsys.training.fine_tune to call model.fit once, saw {len(capture.calls)} "
                    "calls: the bench needs updating to the new training code"
                )
            call = capture.calls[0]
            examples = count_examples(tf, call["dataset"])
            call["examples"] = examples
            row.update(
                {
                    "examples": examples,
                    "epochs": call["epochs"],
                    "pipeline_s": round(pipeline_s, 3),
                    "pipeline_fit_s": round(call["fit_seconds"], 3),
                    "pipeline_examples_per_s": round(examples * call["epochs"] / pipeline_s, 1),
                    "train_examples": meta.get("train_examples"),
                    "replay_examples": meta.get("replay_examples"),
                }
            )
            if pipeline_first:
                row.update(run_bare(tf, call, not args.no_loop))
            # else: this pair's bare side ran first, on the previous day's data (about as many examples)
            pending = call
            # same call, no load drift in between: the share of the step that is model.fit itself
            row["fit_share_of_step"] = round(row["pipeline_fit_s"] / row["pipeline_s"], 3)
            row["ratio_pipeline_to_bare_fit"] = round(
                row["pipeline_examples_per_s"] / row["bare_fit_examples_per_s"], 3
            )
            if "bare_loop_examples_per_s" in row:
                row["ratio_pipeline_to_bare_loop"] = round(
                    row["pipeline_examples_per_s"] / row["bare_loop_examples_per_s"], 3
                )
            row["uptime"] = uptime()
            pairs.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "uptime"}), f"| {row['uptime']}", flush=True)

    def med(key: str) -> float | None:
        values = [r[key] for r in pairs if key in r]
        return round(statistics.median(values), 3) if values else None

    doc = {
        "started": started_at,
        "command": "nice -n 10 python bench/training_throughput/run.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "gpu": "none",
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "commit": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip(),
        },
        "threads": threads,
        "settings": {
            k: getattr(settings, k)
            for k in ("embedding_dim", "epochs", "batch_size", "learning_rate", "replay_examples", "logq_correction")
        },
        "events_per_day": args.events,
        "uptime_before": uptime_before,
        "uptime_after": uptime(),
        "pairs": pairs,
        "median": {
            k: med(k)
            for k in (
                "pipeline_examples_per_s",
                "bare_fit_examples_per_s",
                "bare_loop_examples_per_s",
                "ratio_pipeline_to_bare_fit",
                "ratio_pipeline_to_bare_loop",
                "fit_share_of_step",
                "pipeline_s",
                "pipeline_fit_s",
                "bare_fit_s",
            )
        },
        "target_ratio": 0.9,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc["median"], indent=1))
    print(f"wrote {args.out}")


def run_bare(tf: Any, call: dict[str, Any], loop: bool) -> dict[str, Any]:
    examples = call.get("examples") or count_examples(tf, call["dataset"])
    out: dict[str, Any] = {}
    fit_s = bare_fit(tf, call["model"], call["dataset"], call["epochs"])
    out["bare_fit_s"] = round(fit_s, 3)
    out["bare_fit_examples_per_s"] = round(examples * call["epochs"] / fit_s, 1)
    if loop:
        loop_s = bare_loop(tf, call["model"], call["dataset"], call["epochs"])
        out["bare_loop_s"] = round(loop_s, 3)
        out["bare_loop_examples_per_s"] = round(examples * call["epochs"] / loop_s, 1)
    return out


if __name__ == "__main__":
    main()
