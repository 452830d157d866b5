"""The partition sensors' looks for the ``_SUCCESS`` marker, each reporting a late partition once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.providers.apache.hdfs.sensors.web_hdfs import WebHdfsSensor
from airflow.sdk.exceptions import AirflowFailException

from recsys.errors import DOMAIN_ERRORS
from recsys_airflow.runtime import context_day, require_context_day, settings

log = logging.getLogger(__name__)


def alert_if_late(context: Any) -> dict[str, Any] | None:
    """Warn once if the run's partition is missing past ``RECSYS_PARTITION_LATE_HOUR`` (see recsys.notify).

    Never fails the sensor: a broken alert channel or store is logged and the sensor keeps looking.
    """
    from recsys.notify import check_late, notifier_from_settings
    from recsys.storage import open_store

    day = context_day(context)
    if day is None:
        return None
    try:
        current = settings()
        return check_late(open_store(current), current, day, datetime.now(UTC), notifier_from_settings(current),
                          run_id=context.get("run_id"))
    except DOMAIN_ERRORS as err:
        log.warning("could not check or report whether partition %s is late: %s", day, err)
        return None


def partition_landed(context: Any) -> bool:
    """One look of the local store's sensor: True once the run's partition has its ``_SUCCESS`` marker."""
    from recsys.config import ConfigError
    from recsys.storage import StorageError, layout, open_store

    day = require_context_day(context)
    try:
        store = open_store(settings())
    except (ConfigError, StorageError) as err:
        raise AirflowFailException(f"cannot open the partition store: {err}") from err
    partition = layout.raw_events(day)
    complete = store.is_complete(partition)
    log.info("partition %s %s", store.uri(partition), "is complete" if complete else "has no _SUCCESS marker yet")
    if not complete:
        alert_if_late(context)
    return complete


class LateAwareWebHdfsSensor(WebHdfsSensor):
    """The HDFS provider's ``WebHdfsSensor`` that also reports a late partition (:func:`alert_if_late`)."""

    template_fields: Sequence[str] = tuple(WebHdfsSensor.template_fields)  # the marker's filepath

    def poke(self, context: Any) -> bool:
        found = bool(super().poke(context))
        if not found:
            alert_if_late(context)
        return found
