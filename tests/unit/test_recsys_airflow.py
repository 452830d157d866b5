"""plugins/recsys_airflow: the partition-date rule, the domain-error wrapper and default_args of the DAGs."""

from __future__ import annotations

from datetime import date, timedelta

import pendulum
import pytest
from airflow.sdk.exceptions import AirflowFailException
from recsys_airflow.dag_support import default_args, fails_on_domain_error
from recsys_airflow.notifiers import RecsysFailureNotifier
from recsys_airflow.runtime import partition_day, require_partition_day

from recsys.config import ConfigError

LOGICAL = pendulum.datetime(2011, 1, 4, tz="UTC")


def test_the_partition_date_param_wins_over_the_logical_date():
    assert partition_day({"partition_date": "2010-12-02"}, LOGICAL) == date(2010, 12, 2)
    assert partition_day({"partition_date": None}, LOGICAL) == date(2011, 1, 4)
    assert partition_day({}, LOGICAL) == date(2011, 1, 4)
    assert partition_day(None, None) is None
    with pytest.raises(AirflowFailException, match="Partition date"):
        require_partition_day({"partition_date": ""}, None)
    with pytest.raises(ValueError):
        partition_day({"partition_date": "2010-13-01"}, LOGICAL)


def test_a_domain_error_fails_the_task_without_retry_and_anything_else_keeps_its_traceback():
    @fails_on_domain_error
    def evaluate(fail_with: Exception | None = None) -> dict[str, int]:
        """A task body."""
        if fail_with is not None:
            raise fail_with
        return {"version": 3}

    assert evaluate() == {"version": 3}
    assert evaluate.__name__ == "evaluate" and evaluate.__doc__ == "A task body."  # the task id and docs
    with pytest.raises(AirflowFailException, match="evaluate failed: RECSYS_K must be positive") as info:
        evaluate(ConfigError("RECSYS_K must be positive"))
    assert isinstance(info.value.__cause__, ConfigError)
    with pytest.raises(KeyError):
        evaluate(KeyError("version"))


def test_default_args_retry_once_and_alert_on_a_final_failure():
    args = default_args(retry_delay=timedelta(seconds=30), partitioned=True, depends_on_past=True)
    notifier = args.pop("on_failure_callback")
    assert args == {"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(seconds=30),
                    "depends_on_past": True}
    assert isinstance(notifier, RecsysFailureNotifier) and notifier.partitioned
    assert "depends_on_past" not in default_args()
    assert default_args()["on_failure_callback"].partitioned is False
