"""Rendering the container-training tasks as a worker does, and checking Kubernetes objects without a cluster.

- :func:`dag_task`: a task of a real DAG file, parsed with some environment set (the DAG reads its container
  mode when parsed).
- :func:`task_context`: the template context Airflow's task runner builds for a task instance
  (``RuntimeTaskInstance.get_template_context``), for a scheduled run of a date.
- :func:`kubeconfig`: a kubeconfig naming a cluster that does not exist; the Kubernetes operators need one to
  build their objects (they ask the client whether they run in a cluster), never to send them here.
- :func:`schema_errors` / :func:`assert_valid`: a rendered object (the JSON the client would send) against
  the Kubernetes API schema the official ``kubernetes`` client is generated from: every key a field of its
  model, every value of the field's type, recursively; every required field present (the models refuse to
  be built without them); and nothing lost or changed by a round trip through the typed models.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pendulum

REPO_ROOT = Path(__file__).resolve().parents[1]
_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "datetime": (str,), "date": (str,),
    "object": (str, int, dict, list, bool, float),  # IntOrString, RawExtension
}


def dag_task(monkeypatch: Any, env: dict[str, str], task_id: str = "fine_tune",
             dag_file: str = "recsys_incremental_update.py") -> Any:
    """Task ``task_id`` of ``dags/<dag_file>``, parsed with ``env`` set (as the DAG processor would)."""
    from airflow.dag_processing.dagbag import DagBag

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # what is parsed matters here, not how fast (bench/dag_parse): a shared, loaded machine may take over 30 s
    monkeypatch.setenv("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "600")
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / dag_file))
    assert bag.import_errors == {}
    (dag,) = bag.dags.values()
    return dag.get_task(task_id)


def task_context(task: Any, day: str = "2011-01-04", params: dict[str, Any] | None = None,
                 try_number: int = 1) -> Any:
    """The context Airflow's task runner gives ``task`` in the scheduled run of ``day`` (Task SDK models)."""
    from airflow.sdk.api.datamodels._generated import DagRun, TIRunContext
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    start = pendulum.parse(day, tz="UTC")
    run = DagRun(dag_id=task.dag_id, run_id=f"scheduled__{start.isoformat()}", logical_date=start,
                 data_interval_start=start, data_interval_end=start.add(days=1), run_after=start.add(days=1),
                 start_date=start.add(days=1), end_date=None, run_type="scheduled", state="running",
                 consumed_asset_events=[], partition_key=None)
    ti = RuntimeTaskInstance.model_construct(
        id=uuid.uuid4(), task_id=task.task_id, dag_id=task.dag_id, run_id=run.run_id, try_number=try_number,
        map_index=-1, dag_version_id=uuid.uuid4(), task=task, start_date=start.add(days=1), max_tries=task.retries,
        _ti_context_from_server=TIRunContext(dag_run=run, max_tries=task.retries),
    )
    context = ti.get_template_context()
    if params:
        context["params"].update(params)
    return context


def kubeconfig(directory: Path) -> str:
    """A kubeconfig file (a cluster at a closed port, namespace ``ml``); the path."""
    path = directory / "kubeconfig.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: none, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: nobody, user: {token: not-a-secret}}]\n"
        "contexts: [{name: none, context: {cluster: none, user: nobody, namespace: ml}}]\n"
        "current-context: none\n"
    )
    return str(path)


def as_json(obj: Any) -> Any:
    """The JSON the ``kubernetes`` client sends for a model object (``ApiClient.sanitize_for_serialization``)."""
    from kubernetes.client import ApiClient

    return json.loads(json.dumps(ApiClient().sanitize_for_serialization(obj)))


def _collection_errors(data: Any, type_name: str, path: str) -> list[str]:
    """:func:`schema_errors` of a ``list[T]`` or ``dict(str, T)`` (the client's spellings of the OpenAPI types)."""
    if type_name.startswith("list["):
        if not isinstance(data, list):
            return [f"{path}: expected a list, got {data!r}"]
        return [e for i, item in enumerate(data) for e in schema_errors(item, type_name[5:-1], f"{path}[{i}]")]
    inner = type_name[type_name.index(",") + 1:-1].strip()  # dict(str, T) or dict[str, T]
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        return [f"{path}: expected a map with string keys, got {data!r}"]
    return [e for k, v in data.items() for e in schema_errors(v, inner, f"{path}.{k}")]


def schema_errors(data: Any, type_name: str, path: str = "$") -> list[str]:
    """Where ``data`` (JSON) breaks the schema of ``type_name`` (a kubernetes client model, e.g. ``V1Job``)."""
    from kubernetes.client import models

    if type_name.startswith(("list[", "dict(", "dict[")):
        return _collection_errors(data, type_name, path)
    if type_name in _PRIMITIVES:
        ok = isinstance(data, _PRIMITIVES[type_name]) and not (type_name in ("int", "float") and isinstance(data, bool))
        return [] if ok else [f"{path}: expected {type_name}, got {data!r}"]
    model = getattr(models, type_name)
    if not isinstance(data, dict):
        return [f"{path}: expected a {type_name} object, got {data!r}"]
    fields = {json_key: attr for attr, json_key in model.attribute_map.items()}
    errors = []
    for key, value in data.items():
        if key not in fields:
            errors.append(f"{path}.{key}: not a field of {type_name}")
        elif value is not None:
            errors += schema_errors(value, model.openapi_types[fields[key]], f"{path}.{key}")
    return errors


def assert_valid(data: Any, type_name: str) -> Any:
    """Assert ``data`` is a valid ``type_name`` (see the module docstring); the typed model object."""
    from kubernetes.client import ApiClient

    assert schema_errors(data, type_name) == []
    # the generated models refuse a missing required field (client-side validation, on by default)
    typed = ApiClient().deserialize(SimpleNamespace(data=json.dumps(data)), type_name)
    assert as_json(typed) == data  # nothing unknown dropped, nothing converted
    return typed
