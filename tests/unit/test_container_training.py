"""plugins/recsys_airflow/operators.py: the fine-tune in a container, chosen by RECSYS_TRAIN_IN_CONTAINER.

The operators are built by the real incremental DAG file and rendered as a worker renders them before
``execute`` (templates, then the trainer's environment); the pod spec is the one the provider would send.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pendulum
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SMTP_PASSWORD = "smtp-pw-7f3e9a1c"
WEBHOOK_TOKEN = "hooktoken-4b8d2e6f"
SECRET_ENV = {
    "RECSYS_NOTIFY_BACKEND": "webhook",
    "RECSYS_NOTIFY_WEBHOOK_URL": f"https://hooks.example.com/services/T0/B0/{WEBHOOK_TOKEN}",
    "RECSYS_NOTIFY_SMTP_HOST": "smtp.example.com",
    "RECSYS_NOTIFY_SMTP_TO": "oncall@example.com",
    "RECSYS_NOTIFY_SMTP_USER": "alerts",
    "RECSYS_NOTIFY_SMTP_PASSWORD": SMTP_PASSWORD,
}


def fine_tune_task(monkeypatch, env: dict[str, str]):
    """The incremental DAG's ``fine_tune`` task, parsed from the DAG file with ``env`` set."""
    from airflow.dag_processing.dagbag import DagBag

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "recsys_incremental_update.py"))
    assert bag.import_errors == {}
    return bag.dags["recsys_incremental_update"].get_task("fine_tune")


def render(task, partition_date: str | None = None):
    """Render ``task`` for the run of 2011-01-04, as the worker does right before ``execute``."""
    run = SimpleNamespace(logical_date=pendulum.datetime(2011, 1, 4, tz="UTC"), run_id="scheduled__2011-01-04")
    task.render_template_fields({"params": {"partition_date": partition_date}, "dag_run": run,
                                 "run_id": run.run_id})
    return task


def test_the_default_trains_in_the_worker(monkeypatch):
    monkeypatch.delenv("RECSYS_TRAIN_IN_CONTAINER", raising=False)
    task = fine_tune_task(monkeypatch, {})
    assert type(task).__name__ == "_PythonDecoratedOperator"


def test_docker_runs_recsys_train_with_the_workers_settings(monkeypatch, tmp_path):
    from recsys_airflow.operators import TrainerDockerOperator

    task = fine_tune_task(monkeypatch, {
        "RECSYS_TRAIN_IN_CONTAINER": "DOCKER", "RECSYS_TRAINER_IMAGE": "registry.example/recsys-trainer:1",
        "RECSYS_DOCKER_NETWORK": "shop_net", "RECSYS_TRAINING_QUEUE": "training",
        "RECSYS_STORAGE_ROOT": str(tmp_path), "RECSYS_EPOCHS": "7",
    })
    assert isinstance(task, TrainerDockerOperator)
    assert (task.image, task.network_mode, task.docker_url) == (
        "registry.example/recsys-trainer:1", "shop_net", "unix://var/run/docker.sock")
    assert (task.mem_limit, task.auto_remove, task.do_xcom_push, task.queue) == ("6g", "success", False, "training")
    assert task.retries >= 1 and task.depends_on_past
    render(task)
    assert task.command == ["train", "--date", "2011-01-04"]
    env = task.environment
    assert (env["RECSYS_STORAGE_ROOT"], env["RECSYS_EPOCHS"], env["RECSYS_STORAGE_BACKEND"]) == (
        str(tmp_path), "7", "local")
    assert all(key.startswith(("RECSYS_", "TF_")) for key in env)


def test_kubernetes_runs_recsys_train_in_a_pod_with_its_resources(monkeypatch, tmp_path):
    from kubernetes.client import ApiClient
    from recsys_airflow.operators import TrainerPodOperator

    task = fine_tune_task(monkeypatch, {
        "RECSYS_TRAIN_IN_CONTAINER": "kubernetes", "RECSYS_TRAINER_IMAGE": "registry.example/recsys-trainer:1",
        "RECSYS_K8S_NAMESPACE": "ml", "RECSYS_TRAIN_CPU": "3", "RECSYS_STORAGE_ROOT": str(tmp_path),
    })
    assert isinstance(task, TrainerPodOperator)
    assert task.queue == "default"  # RECSYS_TRAINING_QUEUE unset: Airflow's default queue
    render(task, partition_date="2010-12-02")
    pod = ApiClient().sanitize_for_serialization(task.build_pod_request_obj(dry_run=True))
    assert pod["metadata"]["namespace"] == "ml"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "registry.example/recsys-trainer:1"
    assert container["args"] == ["train", "--date", "2010-12-02"]  # the partition_date param wins
    assert not container.get("command")  # the image's ENTRYPOINT (tini -- recsys) stays
    assert container["resources"] == {"requests": {"cpu": "3", "memory": "6Gi"}, "limits": {"memory": "6Gi"}}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["RECSYS_STORAGE_ROOT"] == str(tmp_path) and env["RECSYS_TRAIN_CPU"] == "3"


@pytest.mark.parametrize("mode", ["docker", "kubernetes"])
def test_secrets_never_reach_the_container(monkeypatch, tmp_path, mode):
    task = fine_tune_task(monkeypatch, {**SECRET_ENV, "RECSYS_TRAIN_IN_CONTAINER": mode,
                                        "RECSYS_STORAGE_ROOT": str(tmp_path)})
    render(task)
    if mode == "docker":
        rendered = {"command": task.command, "environment": task.environment}
    else:
        from kubernetes.client import ApiClient

        rendered = ApiClient().sanitize_for_serialization(task.build_pod_request_obj(dry_run=True))
    text = json.dumps(rendered)
    assert str(tmp_path) in text  # the settings are there ...
    assert SMTP_PASSWORD not in text and WEBHOOK_TOKEN not in text  # ... the secrets are not
    assert "RECSYS_NOTIFY_" not in text  # the task alerts, not the container


def test_the_container_reads_back_the_workers_settings():
    from recsys_airflow.operators import trainer_environment

    from recsys.config import Settings

    worker = Settings.from_env({**SECRET_ENV, "RECSYS_EPOCHS": "7", "RECSYS_MIN_RECALL": "none",
                                "RECSYS_LOGQ_CORRECTION": "false", "RECSYS_TRAIN_IN_CONTAINER": "docker"})
    container = Settings.from_env(trainer_environment(worker))
    alerts = {name for name in worker.public() if name.startswith("notify_")}
    assert {k: v for k, v in container.public().items() if k not in alerts} == {
        k: v for k, v in worker.public().items() if k not in alerts}
    assert (container.epochs, container.min_recall, container.logq_correction) == (7, None, False)
