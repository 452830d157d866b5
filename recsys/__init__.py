"""Incremental two-tower recommendations: the library behind the Airflow DAGs.

Importing this package is cheap on purpose (no pandas, TensorFlow or Great Expectations), so DAG files
may import small helpers from it at parse time. Never imports airflow.

tensorflow-recommenders needs Keras 2: ``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is
first imported. This is the one place that sets it; every module of this package is imported after
this file ran, so any TensorFlow import made by recsys sees it.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info logs drown the task logs

__version__ = "0.1.0"
