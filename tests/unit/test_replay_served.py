"""bench/replay_quality/run.py: strategy (b) ranks as the deployed state serves, the popularity fallback included."""

from __future__ import annotations

import importlib.util
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from recsys import registry, schema
from recsys.config import Settings
from recsys.evaluation import popularity_ranking
from recsys.serving.popularity import PairedRecall, fallback_verdict

# loaded under its own name: bench/scale has a run.py too
_SPEC = importlib.util.spec_from_file_location(
    "replay_quality_run", Path(__file__).resolve().parents[2] / "bench" / "replay_quality" / "run.py")
assert _SPEC is not None and _SPEC.loader is not None
run = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(run)

D1, DAY = date(2011, 1, 4), date(2011, 1, 5)
USERS = [[-1, -1], [1, 0], [0, 1]]  # OOV, u1, u2
ITEMS = [[10, 10], [3, 0], [0, 2], [1, 0.5]]  # OOV, A, B, C: u2's model ranking C, A, B (A, C in the index)


def _deployed(store, put_vocab, put_version, ahead: bool) -> None:
    """Version 1 (trained on D1) deployed with A and C in its index; purchases of D1 B 3, A 2, C 1; its gate
    decision measured popularity ahead of it (``ahead``) or behind."""
    put_vocab(store, "users", ["u1", "u2"])
    put_vocab(store, "items", ["A", "B", "C"])
    put_version(store, 1, D1, USERS, ITEMS)
    index = pd.DataFrame({"item_id": ["A", "C"], "row": [1, 3], "title": ["", ""], "price": [1.0, 2.0]})
    store.write_parquet("models/two_tower/versions/1/index.parquet", index)
    bought = pd.DataFrame({schema.USER_ID: ["x"] * 6, schema.ITEM_ID: ["B", "B", "B", "A", "A", "C"],
                           schema.USER_ROW: 0, schema.ITEM_ROW: [2, 2, 2, 1, 1, 3], schema.SPLIT: "train"})
    store.write_parquet("features/dt=2011-01-04/examples.parquet", bought)
    store.mark_success("features/dt=2011-01-04")
    evidence = PairedRecall.of(np.ones(10), np.zeros(10)) if ahead else PairedRecall.of(np.zeros(10), np.ones(10))
    registry.record_decision(store, D1, {"date": "2011-01-04", "candidate_version": 1, "blessed": True,
                                         "reason": "test",
                                         "popularity_fallback": fallback_verdict(evidence, 10, True, "recall@100")},
                             None)
    registry.set_champion(store, 1, "deployed", "test", None)


def test_b_serves_popularity_where_the_gate_called_for_it(store, put_vocab, put_version):
    _deployed(store, put_vocab, put_version, ahead=True)
    ranked, fallback = run._served_ranking(store, Settings(storage_root=str(store.root)), 1, ["u1", "u2"], DAY)
    # the gate's ranking B, A, C without B (not in the index), for every customer
    assert popularity_ranking(store, DAY, np.array(["", "A", "B", "C"]), 7, 3) == ["B", "A", "C"]
    assert (ranked, fallback) == ([["A", "C"], ["A", "C"]], True)
    off = Settings(storage_root=str(store.root), popularity_fallback=False)
    assert run._served_ranking(store, off, 1, ["u2"], DAY) == ([["C", "A"]], False)  # the model's


def test_b_ranks_with_the_model_where_the_gate_measured_it_ahead(store, put_vocab, put_version):
    _deployed(store, put_vocab, put_version, ahead=False)
    assert run._served_ranking(store, Settings(storage_root=str(store.root)), 1, ["u2"], DAY) == ([["C", "A"]], False)
