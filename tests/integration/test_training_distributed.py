"""Multi-worker fine-tunes with TensorFlow's own runtime on loopback (issue 16): ``recsys train`` as 2 workers
(MultiWorkerMirroredStrategy) and as a chief with 2 workers and 2 parameter servers (ParameterServerStrategy,
tables sharded by rows), each on a copy of the same store with a real Online Retail day, against the
single-process fine-tune of that day.

Only the chief may write: every other task gets its own copy of the store, which must be unchanged afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recsys import registry
from recsys.config import Settings
from recsys.datasets.landing import land_days
from recsys.evaluation import compare_with_champion
from recsys.features import build_features
from recsys.features.build import load_stats
from recsys.model import two_tower
from recsys.model.tables import load_tables
from recsys.storage.local import LocalStore
from recsys.training import fine_tune
from recsys.training_distributed import cluster_from_env, table_digest
from recsys.validation import validate_partition

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import _harness

pytestmark = pytest.mark.integration

DAY1, DAY2 = date(2010, 12, 1), date(2010, 12, 2)  # Online Retail: the cold start, then the fine-tuned day
ENV = {  # small and fast: one epoch, small batches (enough steps for the model to move), half the users held out
    "RECSYS_EMBEDDING_DIM": "16", "RECSYS_EPOCHS": "1", "RECSYS_BATCH_SIZE": "64", "RECSYS_HOLDOUT_FRACTION": "0.5",
    "RECSYS_MIN_USER_COUNT": "1", "RECSYS_MIN_EVAL_USERS": "1", "RECSYS_HISTORY_LENGTH": "20",
}
RECALL_TOLERANCE = 0.01
TASK_TIMEOUT = 600  # seconds for a whole cluster to finish (2 cores shared with other work)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Settings]:
    """A store with two landed, validated, featurised days and the cold-start version of the first."""
    root = tmp_path_factory.mktemp("distributed") / "base"
    settings = Settings.from_env({**ENV, "RECSYS_STORAGE_ROOT": str(root)})
    store = LocalStore(root)
    land_days(store, DAY1, 2)
    for day in (DAY1, DAY2):
        assert validate_partition(store, settings, day).success
        build_features(store, settings, day)
    fine_tune(store, settings, DAY1)
    return root, settings


def _copy(base: tuple[Path, Settings], to: Path) -> tuple[LocalStore, Settings]:
    shutil.copytree(base[0], to)
    return LocalStore(to), base[1].replace(storage_root=str(to))


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content's hash."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _recall(store: LocalStore, settings: Settings, version: int) -> float:
    decision = compare_with_champion(store, settings, DAY2, version, None)
    return float(decision["candidate_metrics"][f"recall@{settings.k}"])


@pytest.fixture(scope="module")
def single(base, tmp_path_factory) -> dict[str, Any]:
    """The single-process fine-tune of DAY2: its version, recall and the warm-started tables' digest."""
    store, settings = _copy(base, tmp_path_factory.mktemp("single") / "store")
    parent = registry.version_for_date(registry.load(store), DAY1)
    stats = load_stats(store, DAY2)
    seed = settings.seed + DAY2.toordinal()
    grown = two_tower.grow_tables(load_tables(store, parent), stats["user_vocab_size"], stats["item_vocab_size"], seed)
    model = two_tower.build_model(stats["user_vocab_size"], stats["item_vocab_size"], settings.embedding_dim)
    two_tower.set_tables(model, grown)
    result = fine_tune(store, settings, DAY2)
    return {"result": result, "recall": _recall(store, settings, result["version"]),
            "restored_digest": table_digest(two_tower.get_tables(model)), "parent": parent}


def _run_cluster(spec: dict[str, list[str]], chief_root: Path, other_root: Path, logs: Path) -> dict[str, Any]:
    """``recsys train --date DAY2`` in every task of ``spec`` (the chief on ``chief_root``, the others on
    ``other_root``); each task's JSON result by (type, index). Fails with the logs if any task fails."""
    procs: dict[tuple[str, int], tuple[subprocess.Popen, Path]] = {}
    try:
        for job, addresses in spec.items():
            for index in range(len(addresses)):
                config = {"cluster": spec, "task": {"type": job, "index": index}}
                chief = cluster_from_env({"TF_CONFIG": json.dumps(config)})
                assert chief is not None
                root = chief_root if chief.is_chief else other_root
                env = {**os.environ, **ENV, "RECSYS_STORAGE_BACKEND": "local", "RECSYS_STORAGE_ROOT": str(root),
                       "TF_CONFIG": json.dumps(config), "TF_CPP_MIN_LOG_LEVEL": "2"}
                out = logs / f"{job}-{index}.out"
                with out.open("w") as stdout, (logs / f"{job}-{index}.err").open("w") as stderr:
                    procs[(job, index)] = (subprocess.Popen(
                        [sys.executable, "-m", "recsys.cli", "train", "--date", DAY2.isoformat()],
                        env=env, stdout=stdout, stderr=stderr), out)
        deadline = time.monotonic() + TASK_TIMEOUT
        for (job, index), (proc, _) in procs.items():
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            assert code == 0, f"{job} {index} exited with {code}:\n{(logs / f'{job}-{index}.err').read_text()[-4000:]}"
        return {key: json.loads(out.read_text()) for key, (_, out) in procs.items()}
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                _harness.stop(proc, timeout=10)


def _ports(n: int) -> list[str]:
    return [f"127.0.0.1:{_harness.free_port()}" for _ in range(n)]


def _check_chief(chief: dict[str, Any], single: dict[str, Any], store: LocalStore, settings: Settings) -> float:
    """The chief's version is a trained DAY2 fine-tune of the same parent, registered; its recall@K."""
    assert chief["trained_on"] == DAY2.isoformat() and chief["parent"] == single["parent"]
    assert chief["train_examples"] == single["result"]["train_examples"] > 0
    assert chief["replay_examples"] == single["result"]["replay_examples"]
    reg = registry.load(store)
    assert registry.version_for_date(reg, DAY2) == chief["version"]
    warm = chief["distributed"]["warm_start"]
    assert warm["bit_for_bit"] and warm["restored_digest"] == single["restored_digest"]
    # trained: the old rows moved away from the parent's
    parent, trained = load_tables(store, single["parent"]), load_tables(store, chief["version"])
    assert not np.array_equal(trained["user"][: len(parent["user"])], parent["user"])
    recall = _recall(store, settings, chief["version"])
    assert abs(recall - single["recall"]) <= RECALL_TOLERANCE, (recall, single["recall"])
    return recall


def test_two_mirrored_workers_fine_tune_like_one_process(base, single, tmp_path):
    store, settings = _copy(base, tmp_path / "chief")
    other = tmp_path / "other"
    _copy(base, other)
    before = _tree(other)
    (tmp_path / "logs").mkdir()
    results = _run_cluster({"worker": _ports(2)}, tmp_path / "chief", other, tmp_path / "logs")

    _check_chief(results[("worker", 0)], single, store, settings)
    worker = results[("worker", 1)]
    assert worker["trained"] and not worker["wrote"]
    assert worker["distributed"]["steps"] == results[("worker", 0)]["distributed"]["steps"]
    assert _tree(other) == before  # worker 1 read its store and wrote nothing: no version, no registry, no lock


def test_parameter_servers_shard_the_tables_and_fine_tune_like_one_process(base, single, tmp_path):
    store, settings = _copy(base, tmp_path / "chief")
    other = tmp_path / "other"
    _copy(base, other)
    before = _tree(other)
    (tmp_path / "logs").mkdir()
    spec = {"chief": _ports(1), "worker": _ports(2), "ps": _ports(2)}
    results = _run_cluster(spec, tmp_path / "chief", other, tmp_path / "logs")

    chief = results[("chief", 0)]
    _check_chief(chief, single, store, settings)
    for name in ("user", "item", "item_bias"):  # each growing table split by rows over both parameter servers
        shards = chief["distributed"]["shards"][name]
        assert sorted(s["device"].split("/device:")[0] for s in shards) == ["/job:ps/replica:0/task:0",
                                                                            "/job:ps/replica:0/task:1"], shards
        rows = chief[f"{'user' if name == 'user' else 'item'}_rows"]
        assert sum(s["rows"] for s in shards) == rows
        assert min(s["rows"] for s in shards) > 0
        # the coordinator warm-started, checked and saved it shard by shard: never the whole table in one piece
        by_rows = chief["distributed"]["warm_start"]["by_rows"][name]
        assert [s["rows"] for s in by_rows] == [s["rows"] for s in shards]
        assert all(1 <= s["largest_piece"] <= s["rows"] < rows for s in by_rows), by_rows
        saved = chief["distributed"]["saved"][name]
        assert saved["by_rows"] and saved["pieces"] >= len(shards) and saved["largest_piece"] < rows, saved
    shard_bytes = max(4 * 16 * s["rows"] for name in ("user", "item") for s in chief["distributed"]["shards"][name])
    assert 0 < chief["distributed"]["warm_start"]["largest_piece_bytes"] <= shard_bytes  # float32, 16-d
    for key, result in results.items():
        if key != ("chief", 0):
            assert not result["wrote"] and not result["trained"], (key, result)
    assert _tree(other) == before  # workers and parameter servers never touch the store
