"""recsys.training_distributed: TF_CONFIG parsing, how the batches are shared, tables split into shards, and the
parameter-server warm start, check and save going shard by shard and piece by piece, bit for bit the one-process
growth (the processes themselves: tests/integration/test_training_distributed.py)."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import numpy as np
import pytest

from recsys.model import two_tower
from recsys.model.tables import StoredArray, StreamedArray, TablesError, open_tables, tables_path, write_tables
from recsys.storage.local import LocalStore
from recsys.training_distributed import (
    MIRRORED,
    PARAMETER_SERVER,
    DistributedError,
    TableDigest,
    _restored,
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


# --- the parameter-server warm start and save, shard by shard -------------------------------------------------


def _grow_table_as_before(old: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """``two_tower.grow_table`` as it was before it could grow a range of rows: every new row drawn at once."""
    new = np.random.default_rng(seed).uniform(-two_tower.INIT_SCALE, two_tower.INIT_SCALE,
                                              size=(rows - old.shape[0], old.shape[1])).astype(old.dtype)
    return np.concatenate([old, new], axis=0)


OLD_USER = np.random.default_rng(4).normal(size=(7, 5)).astype(np.float32)


def test_a_range_of_grown_rows_is_bit_for_bit_the_whole_growth():
    whole = _grow_table_as_before(OLD_USER, 23, seed=11)
    assert two_tower.grow_table(OLD_USER, 23, seed=11).tobytes() == whole.tobytes()  # the one-process path
    # shard boundaries inside the old rows, at the old/new edge, inside the new rows; uneven pieces; empty
    for cuts in ([0, 3, 12, 23], [0, 7, 23], [0, 5, 6, 9, 10, 22, 23], [0, 23], [0, 0, 23]):
        pieces = [two_tower.grow_table(OLD_USER, 23, 11, a, b) for a, b in itertools.pairwise(cuts)]
        assert [len(p) for p in pieces] == np.diff(cuts).tolist()
        assert np.concatenate(pieces).tobytes() == whole.tobytes(), cuts
    grown = two_tower.grow_table(OLD_USER, 7, seed=1, start=2, stop=5)
    assert grown.tobytes() == OLD_USER[2:5].tobytes() and not np.shares_memory(grown, OLD_USER)
    with pytest.raises(ValueError, match="not rows of"):
        two_tower.grow_table(OLD_USER, 23, 11, 20, 24)


def test_grown_rows_of_every_growing_table_match_grow_tables():
    old = {"user": OLD_USER, "item": OLD_USER[:4] + 1, "item_bias": np.arange(4, dtype=np.float32) + 0.5,
           "word": np.ones((3, 5), np.float32)}
    grown = two_tower.grow_tables(old, user_rows=9, item_rows=10, seed=3)
    assert grown["item"].tobytes() == _grow_table_as_before(old["item"], 10, 4).tobytes()  # the item seed is seed+1
    assert grown["item_bias"].tolist() == [0.5, 1.5, 2.5, 3.5, 0, 0, 0, 0, 0, 0]
    for name, rows in (("user", 9), ("item", 10), ("item_bias", 10)):
        for a, b in ((0, 3), (3, 6), (6, rows), (2, 2)):
            assert two_tower.grown_rows(old, name, rows, 3, a, b).tobytes() == grown[name][a:b].tobytes(), (name, a, b)


def _stored(tmp_path, tables) -> LocalStore:
    path = tmp_path / tables_path(1)
    path.parent.mkdir(parents=True)
    write_tables(path, tables)
    return LocalStore(tmp_path)


def test_tables_written_piece_by_piece_load_as_savez_wrote_them_and_read_by_rows(tmp_path):
    user = _grow_table_as_before(OLD_USER, 23, 11)
    tables = {"user": user, "word": np.ones((3, 5), np.float32), "item_bias": user[:, 0].copy(),
              "repeat_weight": np.asarray(1.5, np.float32), "item_words": np.arange(12, dtype=np.int32).reshape(4, 3)}
    np.savez(tmp_path / "savez.npz", **tables)
    streamed = {**tables,
                "user": StreamedArray(user.shape, user.dtype, lambda: iter([user[:3], user[3:12], user[12:]])),
                "item_bias": StreamedArray((23,), np.dtype(np.float32), lambda: iter([user[:20, 0], user[20:, 0]]))}
    store = _stored(tmp_path / "store", streamed)
    with np.load(tmp_path / "savez.npz") as before, np.load(tmp_path / "store" / tables_path(1)) as after:
        assert after.files == before.files
        for name in before.files:
            assert (after[name].dtype, after[name].shape) == (before[name].dtype, before[name].shape), name
            assert after[name].tobytes() == before[name].tobytes(), name
    opened = open_tables(store, 1, ["user", "item_bias", "item"])  # no item table: not an error
    assert isinstance(opened["user"], StoredArray) and "item" not in opened
    assert (opened["user"].shape, opened["user"].dtype, len(opened["user"])) == ((23, 5), np.dtype(np.float32), 23)
    assert opened["user"][5:17].tobytes() == user[5:17].tobytes()
    assert opened["item_bias"][21:].tobytes() == user[21:, 0].tobytes()
    assert opened["item_words"].tolist() == tables["item_words"].tolist()  # the others are read whole
    # growing a range reads only that range of the stored table, and gives the rows of the whole growth
    assert two_tower.grow_table(opened["user"], 30, 2, 20, 26).tobytes() == \
        _grow_table_as_before(user, 30, 2)[20:26].tobytes()
    with pytest.raises(TablesError, match="2 rows streamed"):
        write_tables(tmp_path / "short.npz", {"user": StreamedArray((3, 5), np.dtype(np.float32),
                                                                    lambda: iter([user[:2]]))})


def test_a_digest_fed_by_pieces_is_the_whole_tables_digest():
    tables = {"user": _grow_table_as_before(OLD_USER, 23, 11), "item_bias": np.arange(6, dtype=np.float32)}
    digest = TableDigest()
    digest.table("user", (23, 5), np.dtype(np.float32))
    for a, b in ((0, 4), (4, 7), (7, 23)):
        digest.rows(tables["user"][a:b])
    digest.table("item_bias", (6,), np.dtype(np.float32))
    digest.rows(tables["item_bias"][:1])
    digest.rows(tables["item_bias"][1:])
    assert digest.hexdigest() == table_digest(tables)


def _split_by_rows(next_creator, **kwargs):
    """A variable creator that splits every table of 2 rows or more by rows into two shards (the first one the
    larger), as ParameterServerStrategy's partitioner does, but with both shards in this process (no cluster: a
    cluster connected to this test process would stay connected for every later test)."""
    import tensorflow as tf
    from tensorflow.python.distribute.sharded_variable import ShardedVariable

    shape = tf.TensorShape(kwargs.get("shape"))
    if shape.rank != 2 or shape[0] < 2:
        return next_creator(**kwargs)
    init = kwargs["initial_value"]
    value = tf.convert_to_tensor(init() if callable(init) else init)
    cut = (shape[0] + 1) // 2
    name = kwargs.get("name") or "table"
    return ShardedVariable([next_creator(**{**kwargs, "initial_value": piece, "shape": piece.shape,
                                            "name": f"{name}/part_{i}"})
                            for i, piece in enumerate((value[:cut], value[cut:]))])


def test_a_sharded_warm_start_check_and_save_go_piece_by_piece_bit_for_bit(tmp_path, monkeypatch):
    import tensorflow as tf

    old = {"user": OLD_USER, "item": OLD_USER[:4] + 1, "item_bias": np.arange(4, dtype=np.float32) + 0.5,
           "word": np.random.default_rng(1).normal(size=(two_tower.WORD_BUCKETS, 5)).astype(np.float32),
           "price": np.full((two_tower.PRICE_BANDS, 5), 0.25, np.float32),
           "repeat_weight": np.asarray(2.0, np.float32), "trend_weight": np.asarray(0.5, np.float32)}
    store = _stored(tmp_path, old)
    expected = two_tower.grow_tables(old, user_rows=23, item_rows=9, seed=5)  # the one-process growth
    monkeypatch.setattr(two_tower, "CHUNK_BYTES", 3 * 5 * 4)  # pieces of 3 rows of the 5-d tables
    with tf.variable_creator_scope(_split_by_rows):
        model = two_tower.build_model(23, 9, 5)
    user_shards = two_tower.shards(model.user_embedding.embeddings)
    assert [int(s.shape[0]) for s in user_shards] == [12, 11]  # uneven: 12 rows (7 old, 5 new) and 11 new
    opened = open_tables(store, 1, two_tower.GROWING)
    written = two_tower.warm_start(model, opened, seed=5)
    assert [(s["rows"], s["pieces"], s["largest_piece"]) for s in written["user"]] == [(12, 4, 3), (11, 4, 3)]
    tables = two_tower.get_tables(model)
    for name in ("user", "item", "item_bias", "word", "price", "repeat_weight", "trend_weight"):
        assert tables[name].tobytes() == expected[name].tobytes(), name

    inputs = SimpleNamespace(old=opened)
    restored = _restored(model, inputs, 5, written)
    assert restored["warm_start"]["restored_digest"] == table_digest(expected)
    assert restored["warm_start"]["largest_piece_bytes"] == 3 * 5 * 4 and restored["warm_start"]["old_user_rows"] == 7
    assert restored["warm_start"]["by_rows"] == written
    assert [s["rows"] for s in restored["shards"]["item"]] == [5, 4]
    with pytest.raises(DistributedError, match=r"\['user'\]"):  # a changed old row is found
        _restored(model, SimpleNamespace(old={**old, "user": OLD_USER + 1}), 5, written)

    streamed = two_tower.streamed_tables(model)
    assert [len(c) for c in streamed["user"].chunks()] == [3, 3, 3, 3, 3, 3, 3, 2]
    out = tmp_path / "saved.npz"
    write_tables(out, streamed)
    with np.load(out) as saved:
        whole = two_tower.get_tables(model)
        assert saved.files == list(whole)
        for name in saved.files:
            assert saved[name].dtype == whole[name].dtype and saved[name].tobytes() == whole[name].tobytes(), name


def test_a_built_model_starts_from_the_values_a_first_call_would_create():
    # build_model builds the tables without looking anything up (an eager lookup of a sharded table copies all of it
    # to the coordinator); the random initial values (the cold start) stay those of creating them by a first call
    import tensorflow as tf

    def called(users: int, items: int, dim: int) -> two_tower.TwoTowerModel:
        model = two_tower.TwoTowerModel(users, items, dim, np.zeros((items, two_tower.TITLE_WORDS), np.int32),
                                        np.zeros(items, np.int32))
        model.query_vectors(tf.zeros([1], tf.int64), tf.zeros([1, 1], tf.int64))
        model.candidate_vectors(tf.zeros([1], tf.int64))
        model.item_bias(tf.zeros([1], tf.int64))
        return model

    tf.keras.utils.set_random_seed(5)
    before = two_tower.get_tables(called(20, 12, 4))
    tf.keras.utils.set_random_seed(5)
    built = two_tower.build_model(20, 12, 4)
    after = two_tower.get_tables(built)
    assert list(after) == list(before)
    assert all(after[name].tobytes() == before[name].tobytes() for name in before)
    assert [v.name for v in built.trainable_variables][:2] == ["user_embedding/embeddings:0",
                                                              "item_embedding/embeddings:0"]
