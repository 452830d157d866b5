"""recsys.training_distributed: TF_CONFIG parsing, how the batches are shared, and tables split into shards
(the processes themselves: tests/integration/test_training_distributed.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys.model import two_tower
from recsys.training_distributed import (
    MIRRORED,
    PARAMETER_SERVER,
    DistributedError,
    cluster_from_env,
    epoch_batches,
    table_digest,
    worker_steps,
)


def _env(cluster: dict, task_type: str, index: int) -> dict[str, str]:
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})}


def test_no_tf_config_or_a_one_task_cluster_trains_in_one_process():
    assert cluster_from_env({}) is None
    assert cluster_from_env({"TF_CONFIG": "  "}) is None
    assert cluster_from_env(_env({"worker": ["a:1"]}, "worker", 0)) is None


def test_mirrored_workers_and_their_chief():
    spec = {"worker": ["a:1", "b:2"]}
    first, second = cluster_from_env(_env(spec, "worker", 0)), cluster_from_env(_env(spec, "worker", 1))
    assert first is not None and second is not None
    assert first.mode == second.mode == MIRRORED
    assert first.is_chief and not second.is_chief
    assert second.chief_address == "a:1" and second.address == "b:2"
    with_chief = cluster_from_env(_env({"chief": ["c:3"], "worker": ["a:1"]}, "worker", 0))
    assert with_chief is not None and not with_chief.is_chief and with_chief.chief_address == "c:3"


def test_parameter_servers_need_a_chief():
    spec = {"chief": ["c:3"], "worker": ["a:1", "b:2"], "ps": ["p:4", "q:5"]}
    ps = cluster_from_env(_env(spec, "ps", 1))
    assert ps is not None and ps.mode == PARAMETER_SERVER and not ps.is_chief
    assert ps.describe() == {"mode": PARAMETER_SERVER, "role": "ps", "index": 1, "chief": False, "workers": 2,
                             "parameter_servers": 2}
    with pytest.raises(DistributedError, match="exactly one 'chief'"):
        cluster_from_env(_env({"worker": ["a:1", "b:2"], "ps": ["p:4"]}, "worker", 0))


@pytest.mark.parametrize("text", ["{", json.dumps({"cluster": {"worker": ["a:1"]}}),
                                  json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker",
                                                                                             "index": 2}}),
                                  json.dumps({"cluster": {"evaluator": ["a:1"], "worker": ["b:2"]},
                                              "task": {"type": "worker", "index": 0}})])
def test_a_malformed_tf_config_is_an_error(text):
    with pytest.raises(DistributedError, match="TF_CONFIG"):
        cluster_from_env({"TF_CONFIG": text})


def test_workers_share_each_epoch_in_equal_steps():
    # 5 batches over 2 workers: 3 steps each, worker 1's last step wraps round to batch 0
    assert worker_steps(5, 2, 0) == [0, 2, 4]
    assert worker_steps(5, 2, 1) == [1, 3, 0]
    assert sorted(worker_steps(6, 3, 0) + worker_steps(6, 3, 1) + worker_steps(6, 3, 2)) == list(range(6))


def test_epoch_batches_cover_every_example_once_and_are_seeded():
    batches = epoch_batches(10, 4, seed=3, epoch=0)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    assert all(np.array_equal(a, b) for a, b in zip(batches, epoch_batches(10, 4, seed=3, epoch=0), strict=True))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(epoch_batches(10, 4, seed=3, epoch=1)))


def test_tables_are_written_and_read_across_shards_bit_for_bit():
    import tensorflow as tf
    from tensorflow.python.distribute.sharded_variable import ShardedVariable

    value = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    sharded = ShardedVariable([tf.Variable(np.zeros((4, 3), np.float32)), tf.Variable(np.zeros((3, 3), np.float32))])
    assert len(two_tower.shards(sharded)) == 2
    two_tower.write_table(sharded, value)
    assert two_tower.read_table(sharded).tobytes() == value.tobytes()
    assert sharded.variables[1].numpy().tobytes() == value[4:].tobytes()  # rows 4..6 live in the second shard
    # an embedding lookup of the sharded table finds every row where the single table has it
    looked_up = tf.nn.embedding_lookup(sharded, tf.range(7))
    assert looked_up.numpy().tobytes() == value.tobytes()
    with pytest.raises(ValueError, match="cannot take"):
        two_tower.write_table(sharded, value[:6])
    whole = tf.Variable(np.zeros((7, 3), np.float32))
    two_tower.write_table(whole, value)
    assert two_tower.shards(whole) == [whole] and two_tower.read_table(whole).tobytes() == value.tobytes()


def test_the_digest_sees_one_bit():
    tables = {"user": np.zeros((2, 2), np.float32), "item": np.ones((3, 2), np.float32)}
    flipped = {**tables, "item": tables["item"].copy()}
    flipped["item"].view(np.uint32)[2, 1] ^= 1
    assert table_digest(tables) == table_digest({k: v.copy() for k, v in tables.items()})
    assert table_digest(tables) != table_digest(flipped)
