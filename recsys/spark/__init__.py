"""The Spark backend of the validate and features steps (``RECSYS_COMPUTE=spark``).

Same inputs, outputs, store semantics and errors as the pandas path (:mod:`recsys.validation`,
:mod:`recsys.features`): a later step cannot tell which engine produced a partition.

- :mod:`.session`: the SparkSession from the ``RECSYS_SPARK_*`` settings; store paths as Spark reads them.
- :mod:`.read`: a raw partition as a Spark DataFrame, after the pandas path's checks of the delivery.
- :mod:`.validate`: Great Expectations on the Spark DataFrame, the same suites, reports and quarantine.
- :mod:`.features`: cleaning, vocabularies, examples and histories on Spark.
- :mod:`.ranges`: the features step's outputs, a range of users at a time (the driver never holds the day's pairs).
- :mod:`.steps`: ``validate_partition`` / ``build_features`` choosing the engine by ``RECSYS_COMPUTE``.
- :mod:`.job`: the application spark-submit runs (``python -m recsys.spark.job validate|features ...``).

Nothing here imports pyspark at module import time except inside functions, so the package loads without it.
"""
