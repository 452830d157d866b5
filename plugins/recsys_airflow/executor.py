"""The LocalExecutor with the tasks' heavy libraries imported once, before its workers fork (issue 17).

Where a task's time went (``bench/freshness``): most of validate, fine_tune and deploy was importing Great
Expectations (which also imports pyspark's compatibility layer when pyspark is installed) and TensorFlow,
again in every task process: ~25 s each on the loaded 2-core machine, several seconds on a quiet one.

On Linux, Airflow 3.3's LocalExecutor forks its worker processes from the scheduler (all ``parallelism`` of
them at once, when the executor starts: ``LocalExecutor.start``), and each task process is a bare
``os.fork()`` of a worker (``airflow/sdk/execution_time/supervisor.py``, ``ActivitySubprocess.start``; only
macOS forks and then execs a fresh interpreter). So a module the scheduler has imported before its workers
fork is already loaded in every task process, and shared copy-on-write: :class:`PreloadingLocalExecutor`
imports :data:`DEFAULT_PRELOAD` (or the comma-separated ``RECSYS_EXECUTOR_PRELOAD``; empty: nothing) in
:meth:`~PreloadingLocalExecutor.start`, then starts the workers as the LocalExecutor does.

Only importing happens before the fork, never initialising a runtime: importing TensorFlow creates no eager
context, thread pool or session (each task process makes its own when it first runs an op), and Great
Expectations' import makes no data context. The recsys modules are not preloaded: a task uses the code on
disk when it starts, as before (only a library upgrade needs a scheduler restart, as it already does for
Airflow's own). What it costs: the scheduler's start takes as long as the imports (once), and the scheduler
holds the libraries (~1 GB RSS, shared with its workers and tasks, not copied per process).

Used by the embedded setup (``scripts/env.sh`` sets ``AIRFLOW__CORE__EXECUTOR`` to this class; ``airflow
standalone`` keeps it, being a local executor). Production's CeleryExecutor (``docker/compose.yaml``) is
unchanged. With the ``spawn`` start method (macOS) it is the plain LocalExecutor: nothing would be inherited.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import time
from collections.abc import Mapping

from airflow.executors.local_executor import LocalExecutor

PRELOAD_ENV = "RECSYS_EXECUTOR_PRELOAD"
# pandas and pyarrow: every recsys task step; great_expectations: validate; tensorflow: fine_tune, deploy
DEFAULT_PRELOAD = ("pandas", "pyarrow", "great_expectations", "tensorflow")


def preload_modules(env: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The modules to import before the workers fork: ``RECSYS_EXECUTOR_PRELOAD`` (comma-separated; empty for
    none) or :data:`DEFAULT_PRELOAD`."""
    value = env.get(PRELOAD_ENV)
    if value is None:
        return DEFAULT_PRELOAD
    return tuple(name.strip() for name in value.split(",") if name.strip())


class PreloadingLocalExecutor(LocalExecutor):
    """:class:`LocalExecutor` whose worker processes (and so every task process they fork) inherit
    :func:`preload_modules` already imported."""

    def start(self) -> None:
        if multiprocessing.get_start_method() == "fork":
            for name in preload_modules():
                began = time.monotonic()
                try:
                    importlib.import_module(name)
                except ImportError as error:  # not installed here: the tasks import it themselves, if at all
                    self.log.warning("Not preloading %s: %s", name, error)
                    continue
                self.log.info("Preloaded %s for the task processes in %.1f s", name, time.monotonic() - began)
        super().start()
