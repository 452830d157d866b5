"""A class-data-sharing archive for the Spark steps' driver JVM (``RECSYS_SPARK_CLASS_ARCHIVE``).

A validate or features step is a short application: its driver JVM loads and verifies some 15,000 classes
from Spark's jars at every start, seconds of a step that lasts half a minute at 1M events (bench/scale). Java's
application class-data sharing (a dynamic archive: ``-XX:ArchiveClassesAtExit`` to write one,
``-XX:SharedArchiveFile`` to map it) keeps those classes in one file that later JVMs map instead.

    python -m recsys.spark.archive var/spark/classes.jsa

builds the archive by running both steps once on a small generated day (in a temporary store) under
``spark-submit``, so it holds the classes the steps load, then checks the JVM can map it and moves it into
place with one rename: a JVM that maps a truncated archive crashes, so no step ever sees a half-written one.
With ``RECSYS_SPARK_CLASS_ARCHIVE`` naming an existing file, :func:`recsys.spark.session.submit_conf` adds
``-XX:SharedArchiveFile`` to the driver's options. An archive that does not match the JVM or the classpath
(Spark or Java upgraded, extra jars) is refused by the JVM with a warning and the step runs without it;
build it again after an upgrade. A cluster's executors are unaffected: the option is the driver's.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

from recsys.errors import RecsysError

log = logging.getLogger(__name__)
DAY = date(2026, 1, 5)  # the generated day (any date: the store is temporary)
EVENTS = 2_000
TIMEOUT_S = 600


class ArchiveError(RecsysError, RuntimeError):
    """The archive could not be built (no Java, the warm-up run failed, the JVM refuses the result)."""


def build(path: Path, timeout: float = TIMEOUT_S) -> Path:
    """Build the archive at ``path`` (replacing one there only once the new one is checked); the path."""
    from recsys.config import Settings
    from recsys.datasets.synthetic import SyntheticConfig, publish_days
    from recsys.spark.session import JAVA_HOME_DEFAULT, submit_conf
    from recsys.storage import open_store

    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="recsys-spark-archive-") as tmp:
        root = Path(tmp) / "store"
        publish_days(open_store(Settings(storage_root=str(root))), SyntheticConfig(events=EVENTS), DAY)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        # the warm-up runs both steps in one driver; C1 alone (features' options) compiles less: a quicker build
        jit = submit_conf("features")["spark.driver.extraJavaOptions"]
        options = f"{jit} -XX:ArchiveClassesAtExit={partial}".strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
        env.update({"RECSYS_STORAGE_ROOT": str(root), "RECSYS_SPARK_UI": "false", "SPARK_LOCAL_IP": "127.0.0.1",
                    "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable})
        env.setdefault("JAVA_HOME", JAVA_HOME_DEFAULT)
        argv = [str(Path(sys.executable).with_name("spark-submit")), "--master", "local[2]",
                "--conf", "spark.ui.enabled=false", "--conf", f"spark.driver.extraJavaOptions={options}",
                str(Path(__file__).resolve()), "--warm-up", DAY.isoformat()]
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
            if done.returncode != 0 or not partial.is_file():
                raise ArchiveError(f"the warm-up run failed (exit {done.returncode}): {done.stderr[-2000:]}")
            # -Xshare:on: the JVM exits with an error if it cannot map the archive with spark-submit's classpath
            check = subprocess.run(
                [argv[0], "--conf", f"spark.driver.extraJavaOptions=-Xshare:on -XX:SharedArchiveFile={partial}",
                 "--version"], env=env, capture_output=True, text=True, timeout=120, check=False)
            if check.returncode != 0:
                raise ArchiveError(f"the JVM cannot map the new archive: {check.stdout}{check.stderr}")
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    log.info("class archive written to %s (%.0f MB)", path, path.stat().st_size / 2**20)
    return path


def _warm_up(day: date) -> None:
    """Both steps on ``day`` of the store ``RECSYS_STORAGE_ROOT`` names, in this (spark-submit's) session."""
    from recsys.config import Settings
    from recsys.spark import steps
    from recsys.storage import open_store

    settings = Settings.from_env().replace(compute="spark")
    store = open_store(settings)
    steps.validate_partition(store, settings, day)
    steps.build_features(store, settings, day)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recsys.spark.archive", description=__doc__.split("\n")[0])
    parser.add_argument("path", nargs="?", type=Path, help="where to write the archive (.jsa)")
    parser.add_argument("--warm-up", type=date.fromisoformat, help=argparse.SUPPRESS)  # the run under spark-submit
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.warm_up:
        _warm_up(args.warm_up)
        return 0
    if args.path is None:
        parser.error("the archive's path is required")
    try:
        print(build(args.path))
    except (ArchiveError, subprocess.TimeoutExpired) as err:
        print(f"recsys.spark.archive: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if not __package__:  # run as a file by spark-submit: the job's own sys.path (recsys/spark shadows nothing)
        from recsys.spark.job import script_sys_path

        sys.path[:] = script_sys_path(sys.path, Path(__file__))
    sys.exit(main())
