"""The fine-tune in a container: ``recsys train --date <date>`` in the trainer image (docker/Dockerfile.trainer).

``RECSYS_TRAIN_IN_CONTAINER`` (``Settings.train_in_container``, read when the DAG file is parsed) chooses
:func:`trainer_operator`'s operator: ``docker`` (:class:`TrainerDockerOperator`, on the worker host's
Docker daemon), ``kubernetes`` (:class:`TrainerPodOperator`, a pod) or ``kubernetes-job``
(:class:`TrainerJobOperator`, a distributed fine-tune: an Indexed Job of ``RECSYS_TRAIN_WORKERS`` workers, plus
a coordinator and ``RECSYS_TRAIN_PS`` parameter servers, behind a headless Service; each pod gets its
``TF_CONFIG`` from its index, see :mod:`recsys_airflow.tf_config`). The container gets the worker's
settings as ``RECSYS_*`` variables (:func:`trainer_environment`), resolved when the task's templates are
rendered in the worker (on HDFS the NameNode comes from the Airflow connection, as for the in-process
task), so it trains on the same store with the same settings; Airflow shows them under "Rendered
Template". Secrets are never among them. ``recsys train`` exits 2 on a domain error, which fails the task.

Importing this module imports the Docker and Kubernetes providers: DAG files import it only when a
container mode is set, so the default parses without them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.cncf.kubernetes.operators.job import KubernetesJobOperator
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.docker.operators.docker import DockerOperator
from kubernetes.client import models as k8s

from recsys_airflow import tf_config
from recsys_airflow.runtime import settings as task_settings

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import BaseOperator

    from recsys.config import Settings

TASK_ID = "fine_tune"
# the partition date, by the same rule as every task (runtime.require_partition_day, a DAG macro)
DATE_TEMPLATE = "{{ recsys_partition_day(params, dag_run.logical_date) }}"
# the distributed fine-tune (TrainerJobOperator)
TF_PORT = 2222  # every pod's TensorFlow gRPC server (Kubeflow's TFJob uses the same)
TF_PORT_NAME = "tfjob-port"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # the Job controller labels its pods with it (Kubernetes 1.27+)
JOB_TTL_SECONDS = 24 * 3600  # a finished Job (and its Service) stays a day for its logs and events
LAUNCHER_SOURCE = Path(tf_config.__file__).read_text(encoding="utf-8")


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


def _resources(cpu: str, memory: str) -> k8s.V1ResourceRequirements:
    """A trainer container's requests (CPU, memory) and limit (memory)."""
    return k8s.V1ResourceRequirements(requests={"cpu": cpu, "memory": memory}, limits={"memory": memory})


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
            container_resources=_resources(cpu, memory),
            get_logs=True, on_finish_action="delete_succeeded_pod", do_xcom_push=False, **kwargs,
        )

    def render_template_fields(self, context: Any, jinja_env: jinja2.Environment | None = None) -> None:
        super().render_template_fields(context, jinja_env)
        extra = [k8s.V1EnvVar(name=k, value=v) for k, v in trainer_environment(task_settings()).items()]
        self.env_vars = [*extra, *(self.env_vars or [])]


class TrainerJobOperator(KubernetesJobOperator):
    """The distributed fine-tune: ``recsys train --date <partition date>`` in every pod of an Indexed Job.

    ``completionMode: Indexed`` with ``parallelism = completions = N`` pods, N = ``workers`` without parameter
    servers, else 1 (the coordinator, ``chief``) + ``workers`` + ``ps``. The pods' template sets
    ``subdomain`` to a headless Service of the Job's name (created right after the Job, owned by it, so
    Kubernetes deletes it with the Job), which gives pod ``i`` the DNS name ``<job>-<i>.<job>``. Every pod
    runs :mod:`recsys_airflow.tf_config` (its source, with ``python -c`` under the image's ``tini``), which
    sets ``TF_CONFIG`` from ``RECSYS_TF_CLUSTER`` and the pod's ``JOB_COMPLETION_INDEX``, then runs ``recsys``.

    With parameter servers the workers and servers never exit by themselves (they serve the coordinator), so
    the Job's ``successPolicy`` declares it succeeded when index 0 (the chief) succeeds; Kubernetes then stops
    the others (Kubernetes 1.33+, beta since 1.31). ``backoffLimit: 0``: a failed pod fails the Job and the
    task (a synchronous job cannot continue without it); the task's retry starts a new Job.

    :param image: the trainer image (its ``tini`` is kept; ``recsys`` is started by the launcher).
    :param namespace: where the Job, its pods and its Service live.
    :param cpu: each pod's CPU request; :param memory: each pod's memory request and limit.
    :param workers: training workers (>= 1); :param ps: parameter servers (0: data parallel, mirrored).
    :param partition_date: the date to train (templated; default: the run's partition date).
    """

    template_fields: Sequence[str] = tuple(KubernetesJobOperator.template_fields)

    def __init__(
        self, *, image: str, namespace: str, cpu: str, memory: str, workers: int, ps: int = 0,
        partition_date: str = DATE_TEMPLATE, **kwargs: Any,
    ) -> None:
        pods = len(tf_config.roles(tf_config.cluster_spec("job", "service", workers, ps, TF_PORT)))
        super().__init__(
            name="recsys-train", namespace=namespace, image=image, arguments=["train", "--date", partition_date],
            container_resources=_resources(cpu, memory),
            ports=[k8s.V1ContainerPort(container_port=TF_PORT, name=TF_PORT_NAME)],
            completion_mode="Indexed", completions=pods, parallelism=pods, backoff_limit=0,
            ttl_seconds_after_finished=JOB_TTL_SECONDS, wait_until_job_complete=True, get_logs=True,
            on_finish_action="delete_succeeded_pod", do_xcom_push=False, **kwargs,
        )
        self.workers, self.ps = workers, ps

    def render_template_fields(self, context: Any, jinja_env: jinja2.Environment | None = None) -> None:
        super().render_template_fields(context, jinja_env)
        # after rendering: the launcher's source is code, not a template
        self.cmds = ["/usr/bin/tini", "--", "python", "-c", LAUNCHER_SOURCE]
        extra = [k8s.V1EnvVar(name=k, value=v) for k, v in trainer_environment(task_settings()).items()]
        self.env_vars = [*extra, *(self.env_vars or [])]

    def build_job_request_obj(self, context: Any = None) -> k8s.V1Job:
        """The provider's Job (name, labels, pod template) made a TensorFlow cluster: pods reachable by name,
        each told the whole cluster (``RECSYS_TF_CLUSTER``), success by the chief when there are servers."""
        job = super().build_job_request_obj(context)
        name = job.metadata.name
        pod = job.spec.template.spec
        pod.subdomain = name  # the headless Service of build_service_request_obj has the Job's name
        cluster = tf_config.cluster_spec(name, name, self.workers, self.ps, TF_PORT)
        for container in pod.containers:
            if container.name == self.base_container_name:
                container.env = [*(container.env or []),
                                 k8s.V1EnvVar(name=tf_config.CLUSTER_ENV, value=json.dumps(cluster))]
        # the provider keeps the pod it built as pod_request_obj (it finds the Job's pods in its namespace):
        # make it the pods' real template
        self.pod_request_obj = k8s.V1Pod(api_version="v1", kind="Pod", metadata=job.spec.template.metadata, spec=pod)
        if self.ps:
            job.spec.success_policy = k8s.V1SuccessPolicy(rules=[k8s.V1SuccessPolicyRule(succeeded_indexes="0")])
        return job

    def build_service_request_obj(self, job: k8s.V1Job) -> k8s.V1Service:
        """The headless Service of ``job`` (as the API server returned it: with its uid, which owns the Service).

        No cluster IP: it only publishes a DNS record per pod, also before the pod is ready, since the workers
        look each other up while they start.
        """
        meta = job.metadata
        owner = k8s.V1OwnerReference(api_version="batch/v1", kind="Job", name=meta.name, uid=meta.uid,
                                     block_owner_deletion=True)
        return k8s.V1Service(
            api_version="v1", kind="Service",
            metadata=k8s.V1ObjectMeta(name=meta.name, namespace=meta.namespace,
                                      labels=job.spec.template.metadata.labels, owner_references=[owner]),
            spec=k8s.V1ServiceSpec(
                cluster_ip="None", publish_not_ready_addresses=True,
                selector={JOB_NAME_LABEL: meta.name},
                ports=[k8s.V1ServicePort(name=TF_PORT_NAME, port=TF_PORT, target_port=TF_PORT)],
            ),
        )

    def create_job(self, job_request_obj: k8s.V1Job) -> k8s.V1Job:
        """Create the Job, then its headless Service (owned by the Job, so deleted with it)."""
        created = self.hook.create_job(job=job_request_obj)
        service = self.build_service_request_obj(created)
        self.log.info("Creating the headless service %s of job %s", service.metadata.name, created.metadata.name)
        self.client.create_namespaced_service(namespace=service.metadata.namespace, body=service)
        return job_request_obj


def trainer_operator(settings: Settings, **task_kwargs: Any) -> BaseOperator:
    """The ``fine_tune`` task in the container ``settings.train_in_container`` names (docker, kubernetes or
    kubernetes-job)."""
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
    if settings.train_in_container == "kubernetes-job":
        return TrainerJobOperator(
            task_id=TASK_ID, image=settings.trainer_image, namespace=settings.k8s_namespace,
            cpu=settings.train_cpu, memory=settings.train_memory or "6Gi", workers=settings.train_workers,
            ps=settings.train_ps, **task_kwargs,
        )
    raise ValueError(f"train_in_container={settings.train_in_container!r}: no container to train in")
