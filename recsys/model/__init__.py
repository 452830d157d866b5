"""The TFRS two-tower model: towers, the model class, warm start and export.

tensorflow-recommenders needs Keras 2, so ``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is
first imported. This is the one place that sets it: every module that imports TensorFlow lives in
this package (importing a submodule runs this file first).
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
