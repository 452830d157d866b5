"""The fine-tune task in a container, chosen by configuration (imported by recsys_incremental_update.py).

``RECSYS_TRAIN_IN_CONTAINER`` (read when the DAG file is parsed, like the storage backend):

* empty (default): the usual ``@task`` that calls ``recsys.training.fine_tune`` in the worker;
* ``docker``: a ``DockerOperator`` running ``recsys train --date <date>`` in ``RECSYS_TRAINER_IMAGE``
  (docker/Dockerfile.trainer) on the worker host's Docker daemon;
* ``kubernetes``: a ``KubernetesPodOperator`` running the same command in a pod.

The container gets the worker's settings as ``RECSYS_*`` variables, resolved when the task runs (on HDFS
the NameNode comes from the Airflow connection, exactly as for the in-process task), so it trains on the
same store with the same settings. ``evaluate`` reads the new version from the registry by date, as it
does today, so nothing downstream changes. ``recsys train`` exits 2 on a domain error (no features, no
training examples), which fails the task.

The providers (apache-airflow-providers-docker, -cncf-kubernetes) are in the Airflow image
(docker/providers.in), not in requirements.txt: import them only when the mode asks for them, so the
embedded default parses without them; a mode whose provider is missing fails at parse time with a
message that says which package to install.
"""

from __future__ import annotations

import os
from typing import Any

TASK_ID = "fine_tune"
DATE_TEMPLATE = "{{ params.partition_date or ds }}"  # the partition date, as _partition_day() computes it
MODES = ("", "docker", "kubernetes")


def train_in_container_mode() -> str:
    mode = os.environ.get("RECSYS_TRAIN_IN_CONTAINER", "").strip().lower()
    if mode not in MODES:
        raise ValueError(f"RECSYS_TRAIN_IN_CONTAINER={mode!r}: expected '' (in the worker), 'docker' or 'kubernetes'")
    return mode


def trainer_environment() -> dict[str, str]:
    """The worker's effective settings as RECSYS_* variables (None settings left out), at run time."""
    import dataclasses

    from recsys_dag_support import settings  # in dags/: the connection-aware Settings

    resolved = settings()
    env = {f"RECSYS_{f.name.upper()}": str(getattr(resolved, f.name)) for f in dataclasses.fields(resolved)
           if getattr(resolved, f.name) is not None}
    env["TF_CPP_MIN_LOG_LEVEL"] = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def training_task(**task_kwargs: Any) -> Any | None:
    """The container operator for the fine-tune, or None when it runs in the worker (the default)."""
    mode = train_in_container_mode()
    if not mode:
        return None
    image = os.environ.get("RECSYS_TRAINER_IMAGE", "recsys-trainer:latest")
    command = ["train", "--date", DATE_TEMPLATE]  # the image's entrypoint is `recsys`
    if mode == "docker":
        try:
            from airflow.providers.docker.operators.docker import DockerOperator
        except ImportError as err:
            raise ImportError("RECSYS_TRAIN_IN_CONTAINER=docker needs apache-airflow-providers-docker "
                              "(in the Airflow image: docker/providers.in)") from err

        class TrainerDockerOperator(DockerOperator):
            def execute(self, context: Any) -> Any:
                self.environment = {**trainer_environment(), **(self.environment or {})}
                return super().execute(context)

        return TrainerDockerOperator(
            task_id=TASK_ID,
            image=image,
            command=command,
            docker_url=os.environ.get("RECSYS_DOCKER_URL", "unix://var/run/docker.sock"),
            network_mode=os.environ.get("RECSYS_DOCKER_NETWORK", "recsys_default"),  # reaches `namenode`
            auto_remove="success",
            mount_tmp_dir=False,
            do_xcom_push=False,
            mem_limit=os.environ.get("RECSYS_TRAIN_MEMORY", "6g"),
            **task_kwargs,
        )
    try:
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
        from kubernetes.client import models as k8s
    except ImportError as err:
        raise ImportError("RECSYS_TRAIN_IN_CONTAINER=kubernetes needs apache-airflow-providers-cncf-kubernetes "
                          "(in the Airflow image: docker/providers.in)") from err

    class TrainerPodOperator(KubernetesPodOperator):
        def execute(self, context: Any) -> Any:
            extra = [k8s.V1EnvVar(name=k, value=v) for k, v in trainer_environment().items()]
            self.env_vars = [*extra, *(self.env_vars or [])]
            return super().execute(context)

    memory = os.environ.get("RECSYS_TRAIN_MEMORY", "6Gi")
    cpu = os.environ.get("RECSYS_TRAIN_CPU", "2")
    return TrainerPodOperator(
        task_id=TASK_ID,
        name="recsys-fine-tune",
        namespace=os.environ.get("RECSYS_K8S_NAMESPACE", "default"),
        image=image,
        arguments=command,  # the image's ENTRYPOINT (tini -- recsys) stays
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": cpu, "memory": memory}, limits={"memory": memory}
        ),
        get_logs=True,
        on_finish_action="delete_succeeded_pod",
        do_xcom_push=False,
        **task_kwargs,
    )
