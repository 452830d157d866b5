"""The fine-tune across processes with TensorFlow's own runtime: ``recsys train`` when ``TF_CONFIG`` is set.

``TF_CONFIG`` is TensorFlow's (``{"cluster": {job: [host:port, ...]}, "task": {"type": job, "index": i}}``;
``plugins/recsys_airflow/tf_config.py`` builds it for the pods of an Indexed Kubernetes Job). Two layouts:

* **mirrored** (``worker`` tasks, optionally a ``chief``): ``tf.distribute.MultiWorkerMirroredStrategy``. Every
  worker holds every table; each step, each worker trains on its own batch of the epoch's shuffle (worker k takes
  batches k, k + N, ...) and the gradients are averaged across workers (collective all-reduce), so every copy
  stays equal. A day's steps are ~1/N of a single process's, at N x the examples per step.
* **parameter servers** (a ``chief``, ``worker`` tasks and ``ps`` tasks):
  ``tf.distribute.ParameterServerStrategy`` with a ``FixedShardsPartitioner``: every table is split by rows
  across the parameter servers (a 100M-user table no longer has to fit in one process). The chief is the
  coordinator (``tf.distribute.coordinator.ClusterCoordinator``): it sends the example indices of each batch of
  the epoch's shuffle to whichever worker is free (each example trained on once per epoch, as in one
  process), and the workers update the shards asynchronously. Workers and parameter servers only run a
  ``tf.distribute.Server`` until the chief is gone.

The chief alone takes the fine-tune's training lock, decides what to train (the version already trained on the
day, a thin day, or the parent to warm-start from) and writes the version and the registry; in the mirrored
layout it hands its decision to the other workers through a collective (:func:`_agree`), so they train the same
parent's tables or stop with it. No other task writes anything to the store.

Warm start: the parent's tables are grown to today's vocabularies (:func:`recsys.model.two_tower.warm_start`,
seeded: old rows bit for bit, new rows the draws :func:`recsys.model.two_tower.grow_table` makes in one process) and
written into the (sharded or mirrored) variables; the chief reads them back and checks them bit for bit against the
grown rows before training (:func:`_restored`), and reports a digest of them (:func:`table_digest`'s, the same as one
process's), the rows of every shard and where each shard lives. With parameter servers no process ever holds a whole
growing table (user, item, item bias): the chief opens the parent's ``tables.npz`` by rows
(:func:`recsys.model.tables.open_tables`: ranged reads of the store, local or HDFS), and the warm start, the check and
the save go shard by shard in pieces of about :data:`recsys.model.two_tower.CHUNK_BYTES` (each shard receives only its
own rows; a new row's values are drawn by advancing the seeded PCG64 stream to it), the save streaming each table
into its ``tables.npz`` entry (:func:`recsys.model.tables.write_tables`); the result's ``distributed`` record says
so (``warm_start.by_rows``, ``saved``). Adagrad's slots are made on the parameter servers beside their shards. In the
mirrored layout every worker holds every table by definition, and reads and writes them whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from recsys import registry
from recsys.config import Settings
from recsys.progress import bar
from recsys.storage import PartitionStore
from recsys.training import (
    FineTunePlan,
    TrainingError,
    batch_gatherer,
    plan_fine_tune,
    save_trained,
    training_inputs,
    warm_model,
)

log = logging.getLogger(__name__)

TF_CONFIG_ENV = "TF_CONFIG"
MIRRORED = "mirrored"
PARAMETER_SERVER = "parameter_server"
# the tables of the model in the order they are digested (growing ones first), see table_digest
DIGESTED = ("user", "item", "item_bias", "word", "price")
CHIEF_WAIT_SECONDS = 1800.0  # how long a worker or parameter server waits for its chief to appear
TASK_WAIT_SECONDS = 600.0  # how long the coordinator waits for the workers and parameter servers to listen


class DistributedError(TrainingError):
    """A distributed fine-tune cannot run (TF_CONFIG malformed, a task that never came up, a chief that failed)."""


@dataclass(frozen=True)
class Cluster:
    """This process's place in the cluster of ``TF_CONFIG``."""

    spec: dict[str, list[str]]
    task_type: str
    task_index: int

    @property
    def mode(self) -> str:
        """:data:`PARAMETER_SERVER` when the cluster has ``ps`` tasks, else :data:`MIRRORED`."""
        return PARAMETER_SERVER if self.spec.get("ps") else MIRRORED

    @property
    def is_chief(self) -> bool:
        """The task that writes: the ``chief``, or worker 0 of a cluster without one."""
        if self.spec.get("chief"):
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0

    @property
    def chief_address(self) -> str:
        return (self.spec.get("chief") or self.spec["worker"])[0]

    @property
    def address(self) -> str:
        return self.spec[self.task_type][self.task_index]

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: mode, this task's role and index, and the size of each job."""
        return {"mode": self.mode, "role": self.task_type, "index": self.task_index, "chief": self.is_chief,
                "workers": len(self.spec.get("worker", [])), "parameter_servers": len(self.spec.get("ps", []))}


def cluster_from_env(environ: Mapping[str, str] | None = None) -> Cluster | None:
    """The cluster of ``TF_CONFIG`` (None: unset, empty, or a cluster of this one task: train in one process).

    :class:`DistributedError` when it is malformed: not JSON, a task outside its cluster, or parameter servers
    without a ``chief`` (the coordinator of ``ParameterServerStrategy``).
    """
    text = (os.environ if environ is None else environ).get(TF_CONFIG_ENV, "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
        spec = {str(job): [str(a) for a in addresses] for job, addresses in config["cluster"].items() if addresses}
        task_type, task_index = str(config["task"]["type"]), int(config["task"]["index"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DistributedError(f"{TF_CONFIG_ENV} is not a TensorFlow cluster configuration: JSON with 'cluster' "
                               f"(job -> host:port list) and 'task' (type, index); {err!r}") from err
    unknown = set(spec) - {"chief", "worker", "ps"}
    if unknown or not spec.get("worker"):
        raise DistributedError(f"{TF_CONFIG_ENV}: a cluster has 'worker' tasks and optionally 'chief' and 'ps' "
                               f"ones; got jobs {sorted(spec)}")
    if task_type not in spec or not 0 <= task_index < len(spec[task_type]):
        raise DistributedError(f"{TF_CONFIG_ENV}: task {task_type} {task_index} is not in the cluster {spec}")
    if spec.get("ps") and len(spec.get("chief", [])) != 1:
        raise DistributedError(f"{TF_CONFIG_ENV}: parameter servers need exactly one 'chief' task (the "
                               f"coordinator of ParameterServerStrategy); got {spec}")
    if len(spec.get("chief", [])) > 1:
        raise DistributedError(f"{TF_CONFIG_ENV}: at most one 'chief' task; got {spec}")
    if sum(map(len, spec.values())) == 1:
        return None
    return Cluster(spec, task_type, task_index)


def fine_tune(
    store: PartitionStore, settings: Settings, day: date, cluster: Cluster, *, run_id: str | None = None
) -> dict[str, Any]:
    """This task's part of the distributed fine-tune of ``day`` (the chief's result is
    :func:`recsys.training.fine_tune`'s plus ``distributed``; other tasks return what they did and write nothing)."""
    if cluster.mode == PARAMETER_SERVER and not cluster.is_chief:
        return serve(cluster)
    if cluster.mode == PARAMETER_SERVER:
        wait_for_tasks([a for job in ("worker", "ps") for a in cluster.spec[job]], TASK_WAIT_SECONDS)
    strategy = _strategy(cluster)  # first: collective ops are configured before anything else runs
    if not cluster.is_chief:  # a mirrored worker: trains what the chief decided, writes nothing
        status, parent = _agree(strategy, cluster, 0, None)
        if status < 0:
            raise DistributedError(f"the chief ({cluster.chief_address}) failed before training {day}: see its log")
        if status == 0:
            return {"trained": False, "wrote": False, "reason": "the chief had nothing to train",
                    "distributed": cluster.describe()}
        plan = plan_fine_tune(store, settings, day, parent=parent)
        return _train(store, settings, day, plan, strategy, cluster, run_id)
    with registry.training_lock(store, registry.FINE_TUNE, day, run_id):
        try:
            plan = plan_fine_tune(store, settings, day)
        except BaseException:
            if cluster.mode == MIRRORED:
                _agree(strategy, cluster, -1, None)  # the other workers stop instead of waiting for ever
            raise
        if cluster.mode == MIRRORED:
            _agree(strategy, cluster, 1 if plan.done is None else 0, plan.parent)
        if plan.done is not None:
            return plan.done | {"distributed": cluster.describe()}
        result = _train(store, settings, day, plan, strategy, cluster, run_id)
    return result if plan.thin is None else result | {"note": plan.thin}


def _strategy(cluster: Cluster) -> Any:
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if cluster.mode == MIRRORED:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    partitioner = tf.distribute.experimental.partitioners.FixedShardsPartitioner(len(cluster.spec["ps"]))
    return tf.distribute.experimental.ParameterServerStrategy(resolver, variable_partitioner=partitioner)


def _agree(strategy: Any, cluster: Cluster, status: int, parent: int | None) -> tuple[int, int | None]:
    """The chief's decision, known to every mirrored worker: ``status`` (1 train, 0 nothing to train, -1 the
    chief failed) and the parent version. A sum over the workers, to which only the chief contributes."""
    import tensorflow as tf

    mine = [float(status), float(-1 if parent is None else parent)] if cluster.is_chief else [0.0, 0.0]
    value = tf.constant(mine, tf.float64)
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(value)), axis=None)
    agreed, chosen = (round(float(x)) for x in total.numpy())
    return agreed, None if chosen < 0 else chosen


def _train(
    store: PartitionStore, settings: Settings, day: date, plan: FineTunePlan, strategy: Any, cluster: Cluster,
    run_id: str | None,
) -> dict[str, Any]:
    import tensorflow as tf

    from recsys.model import two_tower

    sharded = cluster.mode == PARAMETER_SERVER  # the coordinator reads, checks and writes the tables by rows
    inputs = training_inputs(store, settings, day, [plan.train], plan.replay, plan.parent, by_rows=sharded)
    tf.keras.utils.set_random_seed(plan.seed)
    with strategy.scope():
        model, written = warm_model(settings, inputs, plan.seed)
        optimizer = tf.keras.optimizers.Adagrad(learning_rate=settings.learning_rate)
        optimizer.build(_OnTheirDevices(model.trainable_variables))  # its slots now, beside their variables (or shards)
    restored = _restored(model, inputs, plan.seed, written) if cluster.is_chief else {}
    started = time.perf_counter()
    if cluster.mode == PARAMETER_SERVER:
        loss, steps = _train_coordinated(strategy, model, optimizer, inputs, settings, plan.seed, day)
    else:
        loss, steps = _train_mirrored(strategy, model, optimizer, inputs, settings, plan.seed, cluster, day)
    seconds = time.perf_counter() - started
    about = cluster.describe() | {"steps": steps, "seconds": round(seconds, 2)} | restored
    if not cluster.is_chief:
        log.info("worker %d trained %d steps on %s in %.1f s; the chief writes the version", cluster.task_index,
                 steps, day, seconds)
        return {"trained": True, "wrote": False, "final_loss": loss, "distributed": about}
    tables = two_tower.streamed_tables(model) if sharded else two_tower.get_tables(model)
    metadata = save_trained(store, settings, day, registry.FINE_TUNE, plan.parent, inputs, tables, loss, seconds,
                            run_id)
    if sharded:
        about["saved"] = {name: {"by_rows": True, "pieces": len(two_tower.table_pieces(v)),
                                 "largest_piece": max(b - a for _, _, a, b in two_tower.table_pieces(v))}
                          for name, v in two_tower.growing_variables(model).items()}
    return dict(metadata) | {"reused": False, "distributed": about}


class _OnTheirDevices(list):
    """The variables to build an optimizer's slots for, each visited under its own device: Adagrad builds each
    slot's initial value (a constant of the variable's shape) eagerly where the current device is, so for a shard
    on a parameter server the constant is made there, not in the coordinator and then sent."""

    def __iter__(self) -> Any:
        import tensorflow as tf

        for variable in super().__iter__():
            with tf.device(variable.device):
                yield variable


def epoch_batches(examples: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The example indices of each batch of ``epoch``: a seeded shuffle cut into ``batch_size`` pieces (the
    last may be smaller); the same on every task."""
    order = np.random.default_rng([seed, epoch]).permutation(examples).astype(np.int32)
    return [order[start:start + batch_size] for start in range(0, examples, batch_size)]


def worker_steps(batches: int, workers: int, worker: int) -> list[int]:
    """The batches ``worker`` trains on, one per step, when ``workers`` train together on ``batches``
    batches: worker k takes k, k + N, ...; every worker takes the same number of steps (collectives need
    that), the last ones wrapping round to the epoch's first batches."""
    steps = -(-batches // workers)
    return [(step * workers + worker) % batches for step in range(steps)]


def _step_function(strategy: Any, model: Any, optimizer: Any, inputs: Any, scale: float) -> Callable[[Any], Any]:
    """A ``tf.function`` of example indices [B]: gather the batch, one optimizer step; the loss (averaged
    over the replicas). The example arrays are constants of the traced graph, so a parameter-server worker
    receives them once with the function, not with every step."""
    import tensorflow as tf

    arrays = (inputs.features, inputs.hist_index, inputs.hist_rows, inputs.hist_days, inputs.trend_table)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
    def step(indices: tf.Tensor) -> tf.Tensor:
        gather = batch_gatherer(*arrays)

        def replica(i: tf.Tensor) -> tf.Tensor:
            batch = gather(i)
            with tf.GradientTape() as tape:
                loss = model.compute_loss(batch, training=True)
                scaled = loss * scale if scale != 1.0 else loss
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return scaled

        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica, args=(indices,)), axis=None)

    return step


def _train_mirrored(
    strategy: Any, model: Any, optimizer: Any, inputs: Any, settings: Settings, seed: int, cluster: Cluster,
    day: date,
) -> tuple[float, int]:
    workers = strategy.num_replicas_in_sync
    me = cluster.spec.get("chief", []) + cluster.spec["worker"]
    worker = me.index(cluster.address)  # this worker's place among the replicas (chief first)
    step = _step_function(strategy, model, optimizer, inputs, 1.0 / workers)
    loss, steps = float("nan"), 0
    batches = -(-inputs.examples // settings.batch_size)
    with bar(settings.epochs * -(-batches // workers), f"training fine_tune on {day} (worker {worker})",
             "batch") as shown:
        for epoch in range(settings.epochs):
            pieces = epoch_batches(inputs.examples, settings.batch_size, seed, epoch)
            for b in worker_steps(len(pieces), workers, worker):
                loss = float(step(pieces[b]).numpy())
                steps += 1
                shown.update(1)
    return loss, steps


def _train_coordinated(
    strategy: Any, model: Any, optimizer: Any, inputs: Any, settings: Settings, seed: int, day: date
) -> tuple[float, int]:
    import tensorflow as tf

    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    step = _step_function(strategy, model, optimizer, inputs, 1.0)
    last = None
    steps = 0
    batches = -(-inputs.examples // settings.batch_size)
    with bar(settings.epochs * batches, f"training fine_tune on {day} (coordinator)", "batch") as shown:
        for epoch in range(settings.epochs):
            for piece in epoch_batches(inputs.examples, settings.batch_size, seed, epoch):
                last = coordinator.schedule(step, args=(tf.constant(piece),))
                steps += 1
                shown.update(1)
            coordinator.join()  # an epoch ends when its every step has
    return (float(last.fetch()) if last is not None else float("nan")), steps


class TableDigest:
    """A SHA-256 of tables fed table by table, each in row-order pieces: :func:`table_digest` of the same tables."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def table(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        """Start table ``name`` of ``shape`` and ``dtype`` (then feed its rows in order with :meth:`rows`)."""
        self._digest.update(f"{name}{tuple(shape)}{np.dtype(dtype)}".encode())

    def rows(self, value: np.ndarray) -> None:
        self._digest.update(np.ascontiguousarray(value).tobytes())

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def table_digest(tables: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of the trainable tables' bytes (:data:`DIGESTED`, in that order; shapes included): equal
    digests mean equal tables bit for bit."""
    digest = TableDigest()
    for name in DIGESTED:
        if name in tables:
            value = np.ascontiguousarray(tables[name])
            digest.table(name, value.shape, value.dtype)
            digest.rows(value)
    return digest.hexdigest()


def _restored(model: Any, inputs: Any, seed: int, written: Mapping[str, Any]) -> dict[str, Any]:
    """Check the warm start bit for bit: the tables read back from the (sharded) variables equal the parent's
    tables grown to today's vocabularies. Their digest (:func:`table_digest`'s), and each growing table's shards:
    rows and device. A growing table is read and grown piece by piece (:func:`recsys.model.two_tower.table_pieces`),
    never whole in this process: ``by_rows`` says how the rows went in (per shard: rows, pieces, the largest
    piece's rows), ``largest_piece_bytes`` the most bytes of a growing table read back at once."""
    from recsys.model import two_tower

    growing = two_tower.growing_variables(model)
    shards = {name: [{"rows": int(v.shape[0]), "device": str(v.device)} for v in two_tower.shards(variable)]
              for name, variable in growing.items()}
    if inputs.old is None:
        return {"shards": shards, "warm_start": None}
    digest, differ, largest = TableDigest(), [], 0
    for name in DIGESTED:
        if name not in growing:  # a table of fixed size (words, price bands): small, read whole
            value = two_tower.read_table(getattr(model, f"{name}_embedding").embeddings)
            digest.table(name, value.shape, value.dtype)
            digest.rows(value)
            if name in inputs.old and value.tobytes() != np.asarray(inputs.old[name]).tobytes():
                differ.append(name)
            continue
        variable = growing[name]
        rows = sum(int(v.shape[0]) for v in two_tower.shards(variable))
        digest.table(name, (rows,) if name == "item_bias" else (rows, *variable.shape[1:]),
                     np.dtype(variable.dtype.as_numpy_dtype))
        same = True
        for shard, first, start, stop in two_tower.table_pieces(variable):
            read = two_tower.read_rows(shard, first, start, stop)
            largest = max(largest, read.nbytes)
            read = read[:, 0] if name == "item_bias" else read
            digest.rows(read)
            if name in inputs.old:
                expected = two_tower.grown_rows(inputs.old, name, rows, seed, start, stop)
                same = same and read.shape == expected.shape and read.tobytes() == expected.tobytes()
        if not same:
            differ.append(name)
    if differ:
        raise DistributedError(f"the warm start did not restore {differ} bit for bit across the shards")
    return {"shards": shards, "warm_start": {"restored_digest": digest.hexdigest(), "bit_for_bit": True,
                                             "old_user_rows": len(inputs.old["user"]),
                                             "old_item_rows": len(inputs.old["item"]),
                                             "by_rows": dict(written), "largest_piece_bytes": largest}}


def wait_for_tasks(addresses: list[str], timeout: float) -> None:
    """Wait until every ``host:port`` accepts a TCP connection; :class:`DistributedError` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    for address in addresses:
        while not _listening(address):
            if time.monotonic() > deadline:
                raise DistributedError(f"task {address} did not start listening within {timeout:.0f} s")
            time.sleep(0.5)


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
            return True
    except OSError:
        return False


def serve(cluster: Cluster, *, poll: float = 1.0, chief_wait: float = CHIEF_WAIT_SECONDS) -> dict[str, Any]:
    """Run this worker's or parameter server's ``tf.distribute.Server`` until the chief is gone.

    The chief is gone when its address, once seen listening, stops accepting connections (it has trained,
    written the version and exited, or failed: either way its job is over). :class:`DistributedError` when
    it never appears within ``chief_wait`` seconds.
    """
    import tensorflow as tf

    started = time.monotonic()
    server = tf.distribute.Server(tf.train.ClusterSpec(cluster.spec), job_name=cluster.task_type,
                                  task_index=cluster.task_index, protocol="grpc", start=True)
    log.info("%s %d serving at %s until the chief (%s) is done", cluster.task_type, cluster.task_index,
             server.target, cluster.chief_address)
    seen = False
    while True:
        up = _listening(cluster.chief_address)
        if up:
            seen = True
        elif seen:
            break
        elif time.monotonic() - started > chief_wait:
            raise DistributedError(f"the chief {cluster.chief_address} did not appear within {chief_wait:.0f} s")
        time.sleep(poll)
    return {"trained": False, "wrote": False, "served_seconds": round(time.monotonic() - started, 1),
            "distributed": cluster.describe()}
