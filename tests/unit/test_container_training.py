"""dags/recsys_container_training.py: the fine-tune in a container, chosen by RECSYS_TRAIN_IN_CONTAINER."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture
def ct(monkeypatch):
    monkeypatch.syspath_prepend(str(DAGS))
    sys.modules.pop("recsys_container_training", None)
    return importlib.import_module("recsys_container_training")


def test_the_default_trains_in_the_worker(ct, monkeypatch):
    monkeypatch.delenv("RECSYS_TRAIN_IN_CONTAINER", raising=False)
    assert ct.train_in_container_mode() == ""
    assert ct.training_task() is None


def test_an_unknown_mode_is_refused_with_the_choices(ct, monkeypatch):
    monkeypatch.setenv("RECSYS_TRAIN_IN_CONTAINER", "podman")
    with pytest.raises(ValueError, match=r"RECSYS_TRAIN_IN_CONTAINER='podman': expected .*'docker' or 'kubernetes'"):
        ct.training_task()


@pytest.mark.parametrize(("mode", "module", "package"), [
    ("docker", "airflow.providers.docker", "apache-airflow-providers-docker"),
    ("kubernetes", "airflow.providers.cncf.kubernetes", "apache-airflow-providers-cncf-kubernetes"),
])
def test_a_container_mode_builds_its_operator_or_names_the_missing_provider(ct, monkeypatch, mode, module, package):
    monkeypatch.setenv("RECSYS_TRAIN_IN_CONTAINER", mode.upper())
    monkeypatch.setenv("RECSYS_TRAINER_IMAGE", "registry.example/recsys-trainer:1")
    try:
        importlib.import_module(module)
    except ImportError:
        with pytest.raises(ImportError, match=package):
            ct.training_task()
        return
    operator = ct.training_task()
    assert operator.task_id == "fine_tune"
    assert operator.image == "registry.example/recsys-trainer:1"


def test_the_container_gets_the_workers_settings(ct, monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_STORAGE_ROOT", str(tmp_path))
    monkeypatch.setenv("RECSYS_EPOCHS", "7")
    env = ct.trainer_environment()
    assert env["RECSYS_STORAGE_ROOT"] == str(tmp_path)
    assert env["RECSYS_EPOCHS"] == "7"
    assert env["RECSYS_STORAGE_BACKEND"] == "local"
    assert all(key.startswith(("RECSYS_", "TF_")) for key in env)
