"""The distributed fine-tune's launch on Kubernetes (RECSYS_TRAIN_IN_CONTAINER=kubernetes-job), without a cluster.

The real DAG file builds the ``fine_tune`` task; it is rendered with the context Airflow's task runner builds;
the Job, its pod template and its headless Service are the objects the operator's own methods build (the ones
``execute`` submits), checked against the Kubernetes API schema of the official client (tests/k8s_specs.py).
The launcher each pod runs is then executed as the container would run it, once per pod index, with a
stand-in ``recsys`` that prints what it was given; TensorFlow's own ``TFConfigClusterResolver`` and recsys's
distributed fine-tune (``recsys.training_distributed.cluster_from_env``) read the resulting ``TF_CONFIG``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.k8s_specs import REPO_ROOT, as_json, assert_valid, dag_task, kubeconfig, schema_errors, task_context

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # RFC 1035: Service names and pod hostnames
JOB_UID = "0b6c3f1e-5d2a-4c1e-9f4e-2a7d8c9b1e3f"


def job_task(monkeypatch, tmp_path, **env: str):
    """The incremental DAG's ``fine_tune`` for ``kubernetes-job``, rendered for 2011-01-04; its context."""
    task = dag_task(monkeypatch, {"RECSYS_TRAIN_IN_CONTAINER": "kubernetes-job", "RECSYS_STORAGE_ROOT": str(tmp_path),
                                  "RECSYS_TRAINER_IMAGE": "registry.example/recsys-trainer:1",
                                  "RECSYS_K8S_NAMESPACE": "ml", **env})
    task.config_file = kubeconfig(tmp_path)
    context = task_context(task)
    task.render_template_fields(context)
    return task, context


def submitted(task, context):
    """The Job, pod template and Service the operator would submit (the Service as created after the Job)."""
    job = task.build_job_request_obj(context)
    created = copy.deepcopy(job)
    created.metadata.uid = JOB_UID  # what the API server adds to the created Job
    return as_json(job), as_json(task.pod_request_obj), as_json(task.build_service_request_obj(created))


def the_container(job: dict) -> dict:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_mirrored_workers_are_an_indexed_job_behind_a_headless_service(monkeypatch, tmp_path):
    task, context = job_task(monkeypatch, tmp_path, RECSYS_TRAIN_WORKERS="3", RECSYS_TRAIN_CPU="4",
                             RECSYS_TRAIN_MEMORY="12Gi", RECSYS_TRAINING_QUEUE="training")
    from recsys_airflow.operators import LAUNCHER_SOURCE, TrainerJobOperator  # plugins/ is on the path once parsed

    assert isinstance(task, TrainerJobOperator)
    assert (task.queue, task.pool, task.do_xcom_push, task.wait_until_job_complete) == (
        "training", "recsys_registry", False, True)
    job, pod, service = submitted(task, context)
    assert_valid(job, "V1Job")
    assert_valid(pod, "V1Pod")
    assert_valid(service, "V1Service")

    name = job["metadata"]["name"]
    assert (job["apiVersion"], job["kind"], job["metadata"]["namespace"]) == ("batch/v1", "Job", "ml")
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (
        "Indexed", 3, 3, 0)
    assert "successPolicy" not in spec  # every worker trains to the end: the Job succeeds when all three do
    template = spec["template"]["spec"]
    assert (template["subdomain"], template["restartPolicy"]) == (service["metadata"]["name"], "Never")
    # the pod labels Airflow finds its pods by (dag, task, run, try)
    labels = spec["template"]["metadata"]["labels"]
    assert (labels["dag_id"], labels["task_id"], labels["try_number"]) == (
        "recsys_incremental_update", "fine_tune", "1")

    container = the_container(job)
    assert container["image"] == "registry.example/recsys-trainer:1"
    assert container["command"] == ["/usr/bin/tini", "--", "python", "-c", LAUNCHER_SOURCE]
    assert container["args"] == ["train", "--date", "2011-01-04"]
    assert container["resources"] == {"requests": {"cpu": "4", "memory": "12Gi"}, "limits": {"memory": "12Gi"}}
    assert container["ports"] == [{"containerPort": 2222, "name": "tfjob-port"}]
    env = env_of(container)
    assert (env["RECSYS_STORAGE_ROOT"], env["RECSYS_TRAIN_WORKERS"]) == (str(tmp_path), "3")
    assert json.loads(env["RECSYS_TF_CLUSTER"]) == {"worker": [f"{name}-{i}.{name}:2222" for i in range(3)]}
    # the pod the provider keeps is the Job's template (what each of the three pods is created from)
    assert (pod["spec"], pod["metadata"]) == (spec["template"]["spec"], spec["template"]["metadata"])


def test_the_headless_service_names_every_pod_and_belongs_to_the_job(monkeypatch, tmp_path):
    task, context = job_task(monkeypatch, tmp_path)
    job, _, service = submitted(task, context)
    name = job["metadata"]["name"]
    assert service["metadata"]["name"] == name and service["metadata"]["namespace"] == "ml"
    assert service["spec"]["clusterIP"] == "None"  # headless: one DNS record per pod, no virtual IP
    assert service["spec"]["publishNotReadyAddresses"] is True  # workers resolve each other while starting
    # the label the Job controller puts on its pods
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": name}
    assert service["spec"]["ports"] == [{"name": "tfjob-port", "port": 2222, "targetPort": 2222}]
    (owner,) = service["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["apiVersion"]) == ("Job", name, JOB_UID, "batch/v1")
    # the API server's rules for the names: the Service a DNS-1035 label, each pod's hostname <job>-<index> too
    assert DNS_LABEL.match(name) and len(name) <= 63
    assert all(DNS_LABEL.match(f"{name}-{i}") and len(f"{name}-{i}") <= 63 for i in range(job["spec"]["completions"]))


def test_parameter_servers_add_a_coordinator_and_the_job_succeeds_with_it(monkeypatch, tmp_path):
    task, context = job_task(monkeypatch, tmp_path, RECSYS_TRAIN_WORKERS="2", RECSYS_TRAIN_PS="2")
    job, pod, service = submitted(task, context)
    assert_valid(job, "V1Job")
    assert_valid(pod, "V1Pod")
    assert_valid(service, "V1Service")
    name = job["metadata"]["name"]
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (5, 5)
    # workers and servers serve until stopped: the chief (index 0) finishing ends the Job
    assert job["spec"]["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    hosts = [f"{name}-{i}.{name}:2222" for i in range(5)]
    assert json.loads(env_of(the_container(job))["RECSYS_TF_CLUSTER"]) == {
        "chief": hosts[:1], "worker": hosts[1:3], "ps": hosts[3:]}


def run_launcher(container: dict, index: int | None, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run the container's command as Kubernetes would (without tini), with a stand-in ``recsys`` on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "recsys"
    stub.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "print(json.dumps({'argv': sys.argv[1:], 'tf_config': os.environ['TF_CONFIG']}))\n")
    stub.chmod(0o755)
    env = {**env_of(container), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    if index is not None:
        env["JOB_COMPLETION_INDEX"] = str(index)  # what the Job controller sets in pod <index>
    command = container["command"]
    assert command[:2] == ["/usr/bin/tini", "--"] and command[2] == "python"
    return subprocess.run([sys.executable, *command[3:], *container["args"]], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize(("workers", "ps", "roles"), [
    ("2", "0", [("worker", 0), ("worker", 1)]),
    ("2", "2", [("chief", 0), ("worker", 0), ("worker", 1), ("ps", 0), ("ps", 1)]),
])
def test_each_pod_gets_its_place_in_the_cluster_as_tensorflow_reads_it(monkeypatch, tmp_path, workers, ps, roles):
    import tensorflow as tf

    from recsys import training_distributed

    task, context = job_task(monkeypatch, tmp_path, RECSYS_TRAIN_WORKERS=workers, RECSYS_TRAIN_PS=ps)
    job, _, _ = submitted(task, context)
    container = the_container(job)
    cluster = json.loads(env_of(container)["RECSYS_TF_CLUSTER"])
    for index, (role, role_index) in enumerate(roles):
        done = run_launcher(container, index, tmp_path)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert out["argv"] == ["train", "--date", "2011-01-04"]
        monkeypatch.setenv("TF_CONFIG", out["tf_config"])
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        assert (resolver.task_type, resolver.task_id) == (role, role_index)
        assert resolver.cluster_spec().as_dict() == cluster
        # the pod's own address is its stable DNS name: <job>-<index>.<service>
        assert cluster[role][role_index].startswith(f"{job['metadata']['name']}-{index}.")
        # and recsys's distributed fine-tune reads it: pod 0 alone is the chief, in the layout the servers choose
        task_of = training_distributed.cluster_from_env({"TF_CONFIG": out["tf_config"]})
        assert task_of is not None
        assert (task_of.task_type, task_of.task_index, task_of.is_chief) == (role, role_index, index == 0)
        assert task_of.mode == (training_distributed.PARAMETER_SERVER if ps != "0" else training_distributed.MIRRORED)
        assert task_of.address == cluster[role][role_index]


def test_the_launcher_refuses_to_start_outside_an_indexed_job(monkeypatch, tmp_path):
    task, context = job_task(monkeypatch, tmp_path)
    job, _, _ = submitted(task, context)
    done = run_launcher(the_container(job), None, tmp_path)
    assert done.returncode != 0 and "JOB_COMPLETION_INDEX" in done.stderr and not done.stdout


def test_execute_creates_the_job_then_its_service_owned_by_it(monkeypatch, tmp_path):
    """The two API calls of ``create_job`` (the client objects are the narrow stand-ins here)."""
    from types import SimpleNamespace

    task, context = job_task(monkeypatch, tmp_path)
    calls: list[tuple[str, dict]] = []

    def create_job(job):
        calls.append(("job", as_json(job)))
        created = copy.deepcopy(job)
        created.metadata.uid = JOB_UID
        return created

    job = task.build_job_request_obj(context)
    task.hook = SimpleNamespace(create_job=create_job)
    task.client = SimpleNamespace(
        create_namespaced_service=lambda namespace, body: calls.append(("service", {"ns": namespace, **as_json(body)})))
    assert task.create_job(job) is job
    assert [kind for kind, _ in calls] == ["job", "service"]
    service = calls[1][1]
    assert service.pop("ns") == "ml"
    assert_valid(service, "V1Service")
    assert service["metadata"]["ownerReferences"][0]["uid"] == JOB_UID
    assert service["metadata"]["name"] == calls[0][1]["spec"]["template"]["spec"]["subdomain"]


def test_the_schema_check_catches_unknown_fields_wrong_types_and_missing_required_ones():
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "spec": {"completionMode": "Indexed", "completions": 2, "template": {"spec": {
               "containers": [{"name": "base", "image": "x"}]}}}}
    assert schema_errors(job, "V1Job") == []
    typo = copy.deepcopy(job)
    typo["spec"]["parallelsim"] = 2
    assert schema_errors(typo, "V1Job") == ["$.spec.parallelsim: not a field of V1JobSpec"]
    wrong = copy.deepcopy(job)
    wrong["spec"]["completions"] = "2"
    assert schema_errors(wrong, "V1Job") == ["$.spec.completions: expected int, got '2'"]
    nameless = copy.deepcopy(job)
    del nameless["spec"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(ValueError, match="name"):
        assert_valid(nameless, "V1Job")


@pytest.mark.parametrize(("env", "message"), [
    ({"RECSYS_TRAIN_WORKERS": "0"}, "RECSYS_TRAIN_WORKERS must be positive"),
    ({"RECSYS_TRAIN_PS": "-1"}, "RECSYS_TRAIN_PS must be >= 0"),
])
def test_a_cluster_without_workers_is_refused(env, message):
    from recsys.config import ConfigError, Settings

    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"RECSYS_TRAIN_IN_CONTAINER": "kubernetes-job", **env})


def test_the_launcher_needs_nothing_but_the_standard_library():
    """The trainer image has no Airflow: the launcher's source must run on its own."""
    source = (REPO_ROOT / "plugins" / "recsys_airflow" / "tf_config.py").read_text()
    imported = set(re.findall(r"^(?:from|import) (\w+)", source, flags=re.MULTILINE))
    assert imported <= {"__future__", "json", "os", "sys"}
