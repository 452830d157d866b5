"""The validate and features steps on the engine ``RECSYS_COMPUTE`` names (pandas, the default, or spark).

What the CLI and the Airflow tasks call: the step signature ``(store, settings, day, *, run_id=None, ...)``,
the same results and errors on both engines. On Spark the active SparkSession is used, or one is started
from the ``RECSYS_SPARK_*`` settings (:func:`recsys.spark.session.spark_session`).
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from recsys.config import Settings
from recsys.storage import PartitionStore

if TYPE_CHECKING:
    from recsys.features.build import FeatureStats
    from recsys.validation.results import ValidationReport


def validate_partition(
    store: PartitionStore, settings: Settings, day: date, *, run_id: str | None = None,
    accept_invalid: bool = False, accept_reason: str | None = None, force: bool = False,
) -> ValidationReport:
    """Validate ``raw/events/dt=<day>`` on the configured engine (see
    :func:`recsys.validation.partition.validate_partition` for what it does and raises)."""
    if settings.compute == "spark":
        from recsys.spark import validate
        from recsys.spark.session import spark_session

        return validate.validate_partition(
            spark_session(settings, "recsys-validate"), store, settings, day, run_id=run_id,
            accept_invalid=accept_invalid, accept_reason=accept_reason, force=force,
        )
    from recsys.validation.partition import validate_partition as on_pandas

    return on_pandas(store, settings, day, run_id=run_id, accept_invalid=accept_invalid,
                     accept_reason=accept_reason, force=force)


def build_features(store: PartitionStore, settings: Settings, day: date, *, run_id: str | None = None) -> FeatureStats:
    """Build ``features/dt=<day>`` on the configured engine (see :func:`recsys.features.build.build_features`)."""
    if settings.compute == "spark":
        from recsys.spark import features
        from recsys.spark.session import spark_session

        return features.build_features(spark_session(settings, "recsys-features"), store, settings, day,
                                       run_id=run_id)
    from recsys.features.build import build_features as on_pandas

    return on_pandas(store, settings, day, run_id=run_id)
