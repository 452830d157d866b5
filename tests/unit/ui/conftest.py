"""Shared data of the UI plugin's tests (plugins/recsys_ui): a small literal registry, validation summaries and a
store holding both; the routes run through FastAPI's TestClient on the app factory.

``plugins/`` goes on ``sys.path`` as Airflow puts its plugins folder there.
"""

from __future__ import annotations

import copy
import sys
from datetime import date
from pathlib import Path

import pytest

from recsys.storage import layout

PLUGINS = Path(__file__).resolve().parents[3] / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

METRIC = "recall@100"

# two fine-tunes and a full retrain; v1 deployed on 12-01, v2 rejected on 12-02, v3 deployed on 12-03
REGISTRY = {
    "champion": 3,
    "versions": {
        "1": {"trained_on": "2010-12-01", "kind": "fine_tune", "parent": None, "created_at": "t1",
              "train_examples": 100, "final_loss": 90.5, "user_rows": 11, "item_rows": 21},
        "2": {"trained_on": "2010-12-02", "parent": 1, "created_at": "t2", "train_examples": 120, "final_loss": 80.0},
        "3": {"trained_on": "2010-12-03", "kind": "full_retrain", "parent": None, "created_at": "t3",
              "train_examples": 300, "final_loss": 70.25, "user_rows": 31, "item_rows": 41},
    },
    "decisions": {
        "2010-12-01": {"blessed": True, "candidate_version": 1, "candidate_metrics": {METRIC: 0.1, "recall@20": 0.05},
                       "champion_version": None, "champion_metrics": None, "reason": "no champion yet",
                       "eval_users": 12},
        "2010-12-02": {"blessed": False, "candidate_version": 2, "candidate_metrics": {METRIC: 0.05},
                       "champion_version": 1, "champion_metrics": {METRIC: 0.1},
                       "reason": "candidate <b>worse</b> than the champion", "eval_users": 15},
        "2010-12-03": {"blessed": True, "candidate_version": 3, "candidate_metrics": {METRIC: 0.2},
                       "champion_version": 1, "champion_metrics": {METRIC: 0.15}, "reason": "better", "eval_users": 20},
    },
    "history": [
        {"at": "h1", "action": "trained", "version": 1, "date": "2010-12-01", "run_id": "r1"},
        {"at": "h2", "action": "deployed", "from": None, "to": 1, "reason": "no champion yet", "run_id": "r1"},
        {"at": "h3", "action": "rejected", "version": 2, "date": "2010-12-02", "reason": "worse", "run_id": "r2"},
        {"at": "h4", "action": "deployed", "from": 1, "to": 3, "reason": "better", "run_id": "r3"},
    ],
}


# REGISTRY plus two full retrains ending 12-03 (v4 blessed and deployed, v5 rejected), then on-call's actions;
# v4 and v5 carry the newer metadata (table size, rows added, window)
REGISTRY_OPS = copy.deepcopy(REGISTRY) | {"champion": 3}
REGISTRY_OPS["versions"] |= {
    "4": {"trained_on": "2010-12-03", "kind": "full_retrain", "parent": None, "created_at": "t4",
          "train_examples": 400, "final_loss": 60.0, "user_rows": 31, "item_rows": 41, "new_user_rows": 31,
          "new_item_rows": 41, "table_megabytes": 2.5, "window_days": 3, "history_length": 10, "batch_size": 256},
    "5": {"trained_on": "2010-12-03", "kind": "full_retrain", "parent": None, "created_at": "t5",
          "train_examples": 250, "final_loss": 65.5, "user_rows": 31, "item_rows": 41, "new_user_rows": 31,
          "new_item_rows": 41, "table_megabytes": 1.25, "window_days": 2},
}
REGISTRY_OPS["retrains"] = {
    "4": {"kind": "full_retrain", "date": "2010-12-03", "window_days": 3, "candidate_version": 4,
          "candidate_metrics": {METRIC: 0.25, "recall@20": 0.1}, "champion_version": 3,
          "champion_metrics": {METRIC: 0.2}, "blessed": True, "reason": "better by 25%", "eval_users": 20,
          "decided_at": "d4"},
    "5": {"kind": "full_retrain", "date": "2010-12-03", "window_days": 2, "candidate_version": 5,
          "candidate_metrics": {METRIC: 0.12}, "champion_version": 4, "champion_metrics": {METRIC: 0.25},
          "blessed": False, "reason": "worse than the champion", "eval_users": 20, "decided_at": "d5"},
}
REGISTRY_OPS["history"] = REGISTRY["history"] + [
    {"at": "h5", "action": "trained", "version": 4, "date": "2010-12-03", "run_id": "fr1"},
    {"at": "h6", "action": "blessed", "kind": "full_retrain", "version": 4, "date": "2010-12-03",
     "reason": "better by 25%", "run_id": "fr1"},
    {"at": "h7", "action": "deployed", "from": 3, "to": 4, "reason": "full retrain: better by 25%", "run_id": "fr1"},
    {"at": "h8", "action": "rejected", "kind": "full_retrain", "version": 5, "date": "2010-12-03",
     "reason": "worse than the champion", "run_id": "fr2"},
    {"at": "h9", "action": "rollback", "from": 4, "to": 3, "reason": "v4 recommends delisted items", "run_id": "rb1"},
    {"at": "h10", "action": "deploy_skipped", "date": "2010-12-02", "version": 2, "gate_blessed": False,
     "reason": "hold deploys", "run_id": "m1"},
    {"at": "h11", "action": "deploy_forced", "date": "2010-12-02", "version": 2, "gate_reason": "worse",
     "reason": "business approved", "run_id": "m2"},
    {"at": "h12", "action": "revalidation_forced", "date": "2010-12-01", "reason": None, "run_id": "m3"},
    {"at": "h13", "action": "accepted_invalid", "date": "2010-12-03", "reason": "known promotion",
     "failed_expectations": ["expect_a", "expect_b"], "run_id": "m4"},
    {"at": "h14", "action": "index_refreshed", "version": 3, "items": 40, "reason": None, "run_id": "m5"},
]


def _summary(day: str, success: bool, **extra) -> dict:
    checks = [{"suite": "raw_events", "check": "event types", "expectation": "expect_column_values_to_be_in_set",
               "column": "event_type", "success": success, "observed_value": None,
               "unexpected_count": 0 if success else 2, "unexpected_examples": [] if success else ["click"],
               "error": None}]
    return {
        "date": day, "success": success, "rows": 5, "checks": checks, "problem": None,
        "failed": [] if success else ["expect_column_values_to_be_in_set"],
        "report_path": f"reports/validation/dt={day}/summary.json",
        "data_docs": {"pages": {"raw_events": f"reports/validation/site/validations/raw_events/{day}.html"}},
        "accepted": None, "validated_at": f"{day}T01:00:00+00:00", **extra,
    }


@pytest.fixture(scope="session")
def plugins_dir() -> Path:
    """The repository's ``plugins/`` (Airflow's plugins folder)."""
    return PLUGINS


@pytest.fixture
def registry_doc() -> dict:
    """Two fine-tunes and a full retrain; v1 deployed on 12-01, v2 rejected on 12-02, v3 deployed on 12-03."""
    return copy.deepcopy(REGISTRY)


@pytest.fixture
def registry_ops() -> dict:
    """``registry_doc`` plus two judged full retrains and on-call's actions (a copy of REGISTRY_OPS)."""
    return copy.deepcopy(REGISTRY_OPS)


@pytest.fixture
def summary():
    """A validation ``summary.json`` of a day: ``summary(day, success, **extra)``."""
    return _summary


@pytest.fixture
def ui_store(store):
    """Registry above; 12-01 passed, 12-02 failed, 12-03 accepted, 12-04 landed but not validated."""
    store.write_json(layout.REGISTRY, REGISTRY)
    for day in ("2010-12-01", "2010-12-02", "2010-12-03", "2010-12-04"):
        store.mark_success(layout.raw_events(date.fromisoformat(day)))
    reports = {
        "2010-12-01": _summary("2010-12-01", True),
        "2010-12-02": _summary("2010-12-02", False),
        "2010-12-03": _summary("2010-12-03", False, accepted={"reason": "known promotion", "run_id": "r3"}),
    }
    for day, summary in reports.items():
        store.write_json(f"{layout.validation_report(date.fromisoformat(day))}/summary.json", summary)
        store.write_bytes(summary["data_docs"]["pages"]["raw_events"], f"<html>GX page of {day}</html>".encode())
    store.write_bytes("reports/validation/site/partitions.html", b"<html><body>every partition</body></html>")
    store.write_bytes("reports/validation/site/static/styles/data_docs.css", b"body { color: red }")
    return store


@pytest.fixture
def client(ui_store):
    from fastapi.testclient import TestClient
    from recsys_ui.app import create_app

    return TestClient(create_app(lambda: ui_store, lambda: METRIC), root_path="/recsys")


@pytest.fixture
def ops_client(store):
    from fastapi.testclient import TestClient
    from recsys_ui.app import create_app

    store.write_json(layout.REGISTRY, REGISTRY_OPS)
    return TestClient(create_app(lambda: store, lambda: METRIC), root_path="/recsys")
