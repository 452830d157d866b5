"""plugins/recsys_airflow/operators.py: the fine-tune in a container, chosen by RECSYS_TRAIN_IN_CONTAINER.

The operators are built by the real incremental DAG file and rendered with the context Airflow's task runner
builds for the task instance (tests/k8s_specs.py), as a worker renders them right before ``execute``
(templates, then the trainer's environment). What is checked is what would leave the worker: the Docker
container's command and environment, the pod (against the Kubernetes API schema of the official client), the
Job and its headless Service (tests/unit/test_k8s_launch.py has the Job's details), and the rendered template
fields Airflow stores and shows. No secret of the worker is in any of them.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.k8s_specs import as_json, assert_valid, dag_task, kubeconfig, task_context

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
# the same kinds of secret in Airflow connections and the worker's Airflow configuration
CONN_SMTP_PASSWORD = "conn-smtp-pw-91c2d7e0"
CONN_WEBHOOK_TOKEN = "conn-hooktoken-5a6b7c8d"
HDFS_PASSWORD = "hdfs-pw-3e4f5a6b"
BROKER_PASSWORD = "broker-pw-0d1e2f3a"
DB_PASSWORD = "db-pw-c4d5e6f7"
AIRFLOW_SECRET_ENV = {
    "AIRFLOW_CONN_RECSYS_SMTP": f"smtp://alerts:{CONN_SMTP_PASSWORD}@smtp.example.com:587",
    "AIRFLOW_CONN_RECSYS_WEBHOOK": json.dumps(
        {"conn_type": "http", "password": f"https://hooks.example.com/services/T1/B1/{CONN_WEBHOOK_TOKEN}"}),
    "AIRFLOW_CONN_WEBHDFS_DEFAULT": f"webhdfs://hdfs:{HDFS_PASSWORD}@namenode:9870",
    "AIRFLOW__CELERY__BROKER_URL": f"redis://:{BROKER_PASSWORD}@127.0.0.1:6379/0",
    "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://airflow:{DB_PASSWORD}@127.0.0.1:5432/airflow",
}
SECRETS = (SMTP_PASSWORD, WEBHOOK_TOKEN, CONN_SMTP_PASSWORD, CONN_WEBHOOK_TOKEN, HDFS_PASSWORD, BROKER_PASSWORD,
           DB_PASSWORD)
IMAGE = "registry.example/recsys-trainer:1"
JOB_UID = "5f0c6a2e-1b7d-4e3a-9c8f-0a1b2c3d4e5f"


def fine_tune_task(monkeypatch, env: dict[str, str]):
    """The incremental DAG's ``fine_tune`` task, parsed from the DAG file with ``env`` set."""
    return dag_task(monkeypatch, env)


def render(task, tmp_path, partition_date: str | None = None) -> Any:
    """Render ``task`` for the scheduled run of 2011-01-04 as the worker does before ``execute``; the context."""
    if hasattr(task, "config_file"):  # the Kubernetes operators: a kubeconfig of a cluster that is not there
        task.config_file = kubeconfig(tmp_path)
    context = task_context(task, params={"partition_date": partition_date} if partition_date else None)
    task.render_template_fields(context)
    return context


def _json(value: Any) -> Any:
    return as_json(value) if hasattr(value, "openapi_types") else str(value)


def sent(task, context) -> dict[str, Any]:
    """Everything of the rendered ``task`` that leaves the worker: the template fields Airflow stores and shows
    ("Rendered Template"), and what ``execute`` sends (the container's settings, the pod, the Job and Service)."""
    from recsys_airflow.operators import TrainerDockerOperator, TrainerJobOperator

    out: dict[str, Any] = {"template_fields": json.loads(json.dumps(
        {name: getattr(task, name) for name in task.template_fields}, default=_json))}
    if isinstance(task, TrainerDockerOperator):
        # DockerOperator.execute sends env_file's variables, environment and the private environment
        out["container"] = {"image": task.image, "command": task.command, "environment": task.environment,
                            "private_environment": task._private_environment, "env_file": task.env_file}
    elif isinstance(task, TrainerJobOperator):
        job = task.build_job_request_obj(context)
        created = copy.deepcopy(job)
        created.metadata.uid = JOB_UID
        out |= {"job": as_json(job), "pod": as_json(task.pod_request_obj),
                "service": as_json(task.build_service_request_obj(created))}
    else:
        out["pod"] = as_json(task.build_pod_request_obj(context))
    return out


def test_the_default_trains_in_the_worker(monkeypatch):
    monkeypatch.delenv("RECSYS_TRAIN_IN_CONTAINER", raising=False)
    task = fine_tune_task(monkeypatch, {})
    assert type(task).__name__ == "_PythonDecoratedOperator"


def test_docker_runs_recsys_train_with_the_workers_settings(monkeypatch, tmp_path):
    from recsys_airflow.operators import TrainerDockerOperator

    task = fine_tune_task(monkeypatch, {
        "RECSYS_TRAIN_IN_CONTAINER": "DOCKER", "RECSYS_TRAINER_IMAGE": IMAGE,
        "RECSYS_DOCKER_NETWORK": "shop_net", "RECSYS_TRAINING_QUEUE": "training",
        "RECSYS_STORAGE_ROOT": str(tmp_path), "RECSYS_EPOCHS": "7",
    })
    assert isinstance(task, TrainerDockerOperator)
    assert (task.image, task.network_mode, task.docker_url) == (IMAGE, "shop_net", "unix://var/run/docker.sock")
    assert (task.mem_limit, task.auto_remove, task.do_xcom_push, task.queue) == ("6g", "success", False, "training")
    assert (task.pool, task.retries >= 1, task.depends_on_past) == ("recsys_registry", True, True)
    context = render(task, tmp_path)
    container = sent(task, context)["container"]
    assert container["command"] == ["train", "--date", "2011-01-04"]
    assert container["image"] == IMAGE
    env = container["environment"]
    assert (env["RECSYS_STORAGE_ROOT"], env["RECSYS_EPOCHS"], env["RECSYS_STORAGE_BACKEND"]) == (
        str(tmp_path), "7", "local")
    assert all(key.startswith(("RECSYS_", "TF_")) for key in env)
    assert not container["private_environment"]


def test_docker_trains_the_date_a_manual_run_names(monkeypatch, tmp_path):
    task = fine_tune_task(monkeypatch, {"RECSYS_TRAIN_IN_CONTAINER": "docker", "RECSYS_STORAGE_ROOT": str(tmp_path)})
    render(task, tmp_path, partition_date="2010-12-02")
    assert task.command == ["train", "--date", "2010-12-02"]


def test_kubernetes_runs_recsys_train_in_a_valid_pod_with_its_resources(monkeypatch, tmp_path):
    from recsys_airflow.operators import TrainerPodOperator

    task = fine_tune_task(monkeypatch, {
        "RECSYS_TRAIN_IN_CONTAINER": "kubernetes", "RECSYS_TRAINER_IMAGE": IMAGE,
        "RECSYS_K8S_NAMESPACE": "ml", "RECSYS_TRAIN_CPU": "3", "RECSYS_STORAGE_ROOT": str(tmp_path),
    })
    assert isinstance(task, TrainerPodOperator)
    assert (task.queue, task.pool) == ("default", "recsys_registry")  # RECSYS_TRAINING_QUEUE unset: Airflow's
    context = render(task, tmp_path, partition_date="2010-12-02")
    pod = sent(task, context)["pod"]
    assert_valid(pod, "V1Pod")
    assert (pod["apiVersion"], pod["kind"], pod["metadata"]["namespace"]) == ("v1", "Pod", "ml")
    assert pod["spec"]["restartPolicy"] == "Never"
    labels = pod["metadata"]["labels"]  # the labels the provider finds its pod by
    assert (labels["dag_id"], labels["task_id"], labels["try_number"]) == (
        "recsys_incremental_update", "fine_tune", "1")
    (container,) = pod["spec"]["containers"]
    assert container["image"] == IMAGE
    assert container["args"] == ["train", "--date", "2010-12-02"]  # the partition_date param wins
    assert not container.get("command")  # the image's ENTRYPOINT (tini -- recsys) stays
    assert container["resources"] == {"requests": {"cpu": "3", "memory": "6Gi"}, "limits": {"memory": "6Gi"}}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["RECSYS_STORAGE_ROOT"] == str(tmp_path) and env["RECSYS_TRAIN_CPU"] == "3"
    assert all(key.startswith(("RECSYS_", "TF_")) for key in env)


def test_kubernetes_job_runs_recsys_train_in_every_pod_of_a_valid_job(monkeypatch, tmp_path):
    from recsys_airflow.operators import TrainerJobOperator

    task = fine_tune_task(monkeypatch, {
        "RECSYS_TRAIN_IN_CONTAINER": "kubernetes-job", "RECSYS_TRAINER_IMAGE": IMAGE, "RECSYS_K8S_NAMESPACE": "ml",
        "RECSYS_TRAIN_WORKERS": "2", "RECSYS_TRAIN_PS": "1", "RECSYS_STORAGE_ROOT": str(tmp_path),
    })
    assert isinstance(task, TrainerJobOperator)
    assert (task.pool, task.do_xcom_push, task.wait_until_job_complete) == ("recsys_registry", False, True)
    context = render(task, tmp_path, partition_date="2010-12-02")
    out = sent(task, context)
    assert_valid(out["job"], "V1Job")
    assert_valid(out["pod"], "V1Pod")
    assert_valid(out["service"], "V1Service")
    spec = out["job"]["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 4)  # chief+2+1
    (container,) = spec["template"]["spec"]["containers"]
    assert container["args"] == ["train", "--date", "2010-12-02"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["RECSYS_STORAGE_ROOT"] == str(tmp_path) and env["RECSYS_TRAIN_PS"] == "1"
    assert set(json.loads(env["RECSYS_TF_CLUSTER"])) == {"chief", "worker", "ps"}


@pytest.mark.parametrize("backend", ["smtp", "webhook"])
@pytest.mark.parametrize("mode", ["docker", "kubernetes", "kubernetes-job"])
def test_secrets_never_reach_the_container(monkeypatch, tmp_path, mode, backend):
    """The worker has every kind of secret (alert settings, Airflow connections, its own configuration); a grep
    of everything the rendered operator shows or sends finds none of them, but finds the settings it forwards."""
    from recsys_airflow.runtime import settings as task_settings

    env = {**SECRET_ENV, **AIRFLOW_SECRET_ENV, "RECSYS_NOTIFY_BACKEND": backend, "RECSYS_TRAIN_IN_CONTAINER": mode,
           "RECSYS_STORAGE_BACKEND": "webhdfs", "RECSYS_STORAGE_ROOT": "/data/recsys"}
    task = fine_tune_task(monkeypatch, env)
    context = render(task, tmp_path)
    # the worker really holds them: the alert secret from its connection, the NameNode from the HDFS connection
    worker = task_settings()
    if backend == "smtp":
        assert worker.notify_smtp_password == CONN_SMTP_PASSWORD
    else:
        assert CONN_WEBHOOK_TOKEN in (worker.notify_webhook_url or "")
    assert worker.webhdfs_url == "http://namenode:9870"
    text = json.dumps(sent(task, context))
    assert "/data/recsys" in text and "http://namenode:9870" in text  # the settings are there ...
    assert [secret for secret in SECRETS if secret in text] == []  # ... the secrets are not
    assert "RECSYS_NOTIFY_" not in text  # the task alerts, not the container
    assert "hooks.example.com" not in text and "AIRFLOW_" not in text


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
