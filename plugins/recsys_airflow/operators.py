"""The fine-tune in a container: ``recsys train --date <date>`` in the trainer image (docker/Dockerfile.trainer).

``RECSYS_TRAIN_IN_CONTAINER`` (``Settings.train_in_container``, read when the DAG file is parsed) chooses
:func:`trainer_operator`'s operator: ``docker`` (:class:`TrainerDockerOperator`, on the worker host's
Docker daemon) or ``kubernetes`` (:class:`TrainerPodOperator`, a pod). The container gets the worker's
settings as ``RECSYS_*`` variables (:func:`trainer_environment`), resolved when the task's templates are
rendered in the worker (on HDFS the NameNode comes from the Airflow connection, as for the in-process
task), so it trains on the same store with the same settings; Airflow shows them under "Rendered
Template". Secrets are never among them. ``recsys train`` exits 2 on a domain error, which fails the task.

Importing this module imports the Docker and Kubernetes providers: DAG files import it only when a
container mode is set, so the default parses without them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.docker.operators.docker import DockerOperator
from kubernetes.client import models as k8s

from recsys_airflow.runtime import settings as task_settings

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import BaseOperator

    from recsys.config import Settings

TASK_ID = "fine_tune"
# the partition date, by the same rule as every task (runtime.require_partition_day, a DAG macro)
DATE_TEMPLATE = "{{ recsys_partition_day(params, dag_run.logical_date) }}"


def trainer_environment(settings: Settings) -> dict[str, str]:
    """The trainer's ``RECSYS_*`` variables: ``settings`` without its secrets and alert settings.

    ``Settings.from_env`` of the result gives back ``settings`` (None as ``none``). Alerts are sent by the
    Airflow task, not by the container; and an smtp or webhook backend without its secret would not even
    validate there.
    """
    env = {f"RECSYS_{name.upper()}": "none" if value is None else str(value)
           for name, value in settings.public().items() if not name.startswith("notify_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


class TrainerDockerOperator(DockerOperator):
    """``recsys train --date <partition date>`` in ``image`` on a Docker daemon, with the worker's settings.

    :param image: the trainer image (its entrypoint is ``recsys``).
    :param partition_date: the date to train (templated; default: the run's partition date).
    :param docker_url: the Docker daemon.
    :param network_mode: the network the container joins (the compose network reaches ``namenode``).
    :param mem_limit: the container's memory limit, e.g. ``6g``.
    """

    template_fields: Sequence[str] = tuple(DockerOperator.template_fields)

    def __init__(
        self, *, image: str, docker_url: str, network_mode: str, mem_limit: str,
        partition_date: str = DATE_TEMPLATE, **kwargs: Any,
    ) -> None:
        super().__init__(
            image=image, command=["train", "--date", partition_date], docker_url=docker_url,
            network_mode=network_mode, mem_limit=mem_limit, auto_remove="success", mount_tmp_dir=False,
            do_xcom_push=False, **kwargs,
        )

    def render_template_fields(self, context: Any, jinja_env: jinja2.Environment | None = None) -> None:
        super().render_template_fields(context, jinja_env)
        self.environment = {**trainer_environment(task_settings()), **(self.environment or {})}


class TrainerPodOperator(KubernetesPodOperator):
    """``recsys train --date <partition date>`` in a Kubernetes pod, with the worker's settings.

    :param image: the trainer image (its ENTRYPOINT ``tini -- recsys`` stays; the command is ``arguments``).
    :param namespace: where the pod runs.
    :param cpu: the pod's CPU request, e.g. ``2``.
    :param memory: the pod's memory request and limit, e.g. ``6Gi``.
    :param partition_date: the date to train (templated; default: the run's partition date).
    """

    template_fields: Sequence[str] = tuple(KubernetesPodOperator.template_fields)

    def __init__(
        self, *, image: str, namespace: str, cpu: str, memory: str, partition_date: str = DATE_TEMPLATE,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            name="recsys-fine-tune", namespace=namespace, image=image,
            arguments=["train", "--date", partition_date],
            container_resources=k8s.V1ResourceRequirements(
                requests={"cpu": cpu, "memory": memory}, limits={"memory": memory}
            ),
            get_logs=True, on_finish_action="delete_succeeded_pod", do_xcom_push=False, **kwargs,
        )

    def render_template_fields(self, context: Any, jinja_env: jinja2.Environment | None = None) -> None:
        super().render_template_fields(context, jinja_env)
        extra = [k8s.V1EnvVar(name=k, value=v) for k, v in trainer_environment(task_settings()).items()]
        self.env_vars = [*extra, *(self.env_vars or [])]


def trainer_operator(settings: Settings, **task_kwargs: Any) -> BaseOperator:
    """The ``fine_tune`` task in the container ``settings.train_in_container`` names (docker or kubernetes)."""
    if settings.train_in_container == "docker":
        return TrainerDockerOperator(
            task_id=TASK_ID, image=settings.trainer_image, docker_url=settings.docker_url,
            network_mode=settings.docker_network, mem_limit=settings.train_memory or "6g", **task_kwargs,
        )
    if settings.train_in_container == "kubernetes":
        return TrainerPodOperator(
            task_id=TASK_ID, image=settings.trainer_image, namespace=settings.k8s_namespace,
            cpu=settings.train_cpu, memory=settings.train_memory or "6Gi", **task_kwargs,
        )
    raise ValueError(f"train_in_container={settings.train_in_container!r}: no container to train in")
