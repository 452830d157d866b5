"""Test-wide setup: an isolated Airflow home, so tests never touch var/ or ~/airflow.

Airflow reads its configuration when first imported, so these variables are set at conftest import,
before any test module imports airflow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGS_FOLDER = REPO_ROOT / "dags"

_airflow_home = tempfile.mkdtemp(prefix="recsys-test-airflow-")
os.environ["AIRFLOW_HOME"] = _airflow_home
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO_ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# the product's own default storage root must never be used by tests
os.environ["RECSYS_STORAGE_ROOT"] = str(Path(_airflow_home) / "store-unset")


def _migrate_airflow_db() -> None:
    import subprocess
    import sys

    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated SQLite Airflow metadata database in the session's Airflow home."""
    _migrate_airflow_db()
    return _airflow_home
