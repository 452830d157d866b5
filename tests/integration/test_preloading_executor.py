"""The preloading LocalExecutor (plugins/recsys_airflow/executor.py): its workers inherit the imported libraries,
and a process forked after those imports still trains with TensorFlow and validates with Great Expectations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import airflow.sdk  # noqa: F401 - puts plugins/ on sys.path (recsys_airflow)
import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_preload_setting():
    from recsys_airflow.executor import DEFAULT_PRELOAD, preload_modules

    assert preload_modules({}) == DEFAULT_PRELOAD
    assert "tensorflow" in DEFAULT_PRELOAD and "great_expectations" in DEFAULT_PRELOAD
    assert preload_modules({"RECSYS_EXECUTOR_PRELOAD": ""}) == ()
    assert preload_modules({"RECSYS_EXECUTOR_PRELOAD": " pandas, tensorflow ,"}) == ("pandas", "tensorflow")


# In a fresh interpreter: start the executor with one worker, read which shared libraries the worker has mapped,
# then (as a task process is a fork of a worker) fork and, in the child, fit a Keras model and run a Great
# Expectations expectation on a pandas frame.
SCRIPT = r"""
import json, os, sys
from recsys_airflow.executor import PreloadingLocalExecutor

executor = PreloadingLocalExecutor(parallelism=1)
executor.start()
(worker,) = executor.workers
maps = open(f"/proc/{worker}/maps").read()
worker_has = {"tensorflow": "libtensorflow" in maps, "pyarrow": "libarrow" in maps}
executor.end()
from tensorflow.python.eager import context
before_fork = {"eager_context": context._context is not None,
               "loaded": [m for m in ("tensorflow", "great_expectations", "pandas", "pyarrow") if m in sys.modules]}

read, write = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        import numpy as np
        import pandas as pd
        import tensorflow as tf
        import great_expectations as gx
        model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(4), tf.keras.layers.Dense(1)])
        model.compile("adagrad", "mse")
        history = model.fit(np.ones((64, 3)), np.zeros((64, 1)), epochs=2, verbose=0)
        context = gx.get_context(mode="ephemeral")
        batch = (context.data_sources.add_pandas("p").add_dataframe_asset("a")
                 .add_batch_definition_whole_dataframe("b")
                 .get_batch(batch_parameters={"dataframe": pd.DataFrame({"x": [1, 2, None]})}))
        result = batch.validate(gx.expectations.ExpectColumnValuesToNotBeNull(column="x"))
        out = {"losses": [float(v) for v in history.history["loss"]], "gx_success": bool(result.success),
               "gx_unexpected": int(result.result["unexpected_count"])}
    except BaseException as error:
        out = {"error": repr(error)}
    os.write(write, json.dumps(out).encode())
    os._exit(0)
os.close(write)
_, status = os.waitpid(pid, 0)
child = json.loads(os.read(read, 1 << 16) or b"{}")
print(json.dumps({"worker_has": worker_has, "before_fork": before_fork, "child": child, "status": status}))
"""


@pytest.mark.slow
def test_workers_inherit_the_libraries_and_a_forked_task_trains_and_validates(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS_"))}
    env |= {
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "RECSYS_EXECUTOR_PRELOAD": "pandas,pyarrow,great_expectations,tensorflow",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "plugins"), str(REPO_ROOT)]),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["worker_has"] == {"tensorflow": True, "pyarrow": True}, report
    assert report["before_fork"] == {"eager_context": False,
                                     "loaded": ["tensorflow", "great_expectations", "pandas", "pyarrow"]}, report
    assert report["status"] == 0, report
    child = report["child"]
    assert "error" not in child, child
    assert len(child["losses"]) == 2 and child["losses"][1] < child["losses"][0], child
    assert child["gx_success"] is False and child["gx_unexpected"] == 1, child
