"""The entrypoint of a distributed fine-tune's pods: ``TF_CONFIG`` from the pod's index, then ``recsys``.

:class:`recsys_airflow.operators.TrainerJobOperator` starts the fine-tune as an Indexed Kubernetes Job: every
pod runs the same template, Kubernetes gives each its completion index (``JOB_COMPLETION_INDEX``, 0 .. N-1)
and the stable DNS name ``<job>-<index>.<service>`` (the pod's hostname plus the Job's headless Service as its
subdomain). The operator puts the whole cluster in ``RECSYS_TF_CLUSTER`` (:func:`cluster_spec`, the same for
every pod); this script adds the pod's own place in it (:func:`tf_config`) and replaces itself with
``recsys <arguments>``, so ``recsys train`` finds ``TF_CONFIG`` as TensorFlow defines it.

Roles by index (:func:`roles`): without parameter servers every pod is a ``worker`` and worker 0 is the
chief (``MultiWorkerMirroredStrategy``); with parameter servers index 0 is the ``chief`` (the coordinator of
``ParameterServerStrategy``), then the workers, then the ``ps`` tasks.

The trainer image has no Airflow and no copy of this file: the operator runs this file's source with
``python -c`` (so it imports nothing but the standard library).
"""

from __future__ import annotations

import json
import os
import sys

CLUSTER_ENV = "RECSYS_TF_CLUSTER"  # the cluster as TF_CONFIG's "cluster" (JSON), set by the operator
INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes in every pod of an Indexed Job
ROLE_ORDER = ("chief", "worker", "ps")  # pod indexes are assigned to the roles in this order


def cluster_spec(job: str, service: str, workers: int, ps: int, port: int) -> dict[str, list[str]]:
    """TF_CONFIG's ``cluster`` for the pods of Indexed Job ``job`` behind the headless Service ``service``.

    ``ps == 0``: ``workers`` workers (``worker`` 0 is the chief). ``ps > 0``: one ``chief`` (the coordinator),
    ``workers`` workers and ``ps`` parameter servers. Addresses are ``<job>-<index>.<service>:<port>``.
    """
    if workers < 1 or ps < 0:
        raise ValueError(f"a cluster needs at least one worker and no negative ps count, got {workers}, {ps}")
    pods = workers + (1 + ps if ps else 0)
    hosts = [f"{job}-{index}.{service}:{port}" for index in range(pods)]
    if not ps:
        return {"worker": hosts}
    return {"chief": hosts[:1], "worker": hosts[1:1 + workers], "ps": hosts[1 + workers:]}


def roles(cluster: dict[str, list[str]]) -> list[tuple[str, int]]:
    """``(task type, index within the type)`` of each pod index, in :data:`ROLE_ORDER`."""
    return [(role, index) for role in ROLE_ORDER for index in range(len(cluster.get(role, ())))]


def tf_config(cluster: dict[str, list[str]], pod_index: int) -> str:
    """The ``TF_CONFIG`` value of the pod with completion index ``pod_index`` (JSON)."""
    layout = roles(cluster)
    if not 0 <= pod_index < len(layout):
        raise ValueError(f"pod index {pod_index} is outside the cluster's {len(layout)} tasks: {cluster}")
    role, index = layout[pod_index]
    return json.dumps({"cluster": cluster, "task": {"type": role, "index": index}})


def main(argv: list[str]) -> None:
    """Set ``TF_CONFIG`` from :data:`CLUSTER_ENV` and :data:`INDEX_ENV`, then become ``recsys <argv>``."""
    try:
        cluster = json.loads(os.environ[CLUSTER_ENV])
        pod_index = int(os.environ[INDEX_ENV])
    except (KeyError, ValueError) as err:
        sys.exit(f"recsys distributed launch: {CLUSTER_ENV} and {INDEX_ENV} must be set (an Indexed Job "
                 f"started by TrainerJobOperator): {err!r}")
    os.environ["TF_CONFIG"] = tf_config(cluster, pod_index)
    role, index = roles(cluster)[pod_index]
    print(f"recsys distributed launch: pod {pod_index} is {role} {index} of {json.dumps(cluster)}", file=sys.stderr,
          flush=True)
    os.execvp("recsys", ["recsys", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
