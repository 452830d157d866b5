"""recsys.serving.export: the SavedModel ranks exactly as the numpy scorer, and its size stays in the checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.serving.export import tf  # TensorFlow as recsys sets it up (TF_USE_LEGACY_KERAS before the import)
from recsys.serving.index import Scorer

ITEMS, USERS, DIM = 400, 30, 8
OWN = {"u0": 0, "u1": 1, "u50": 50, "u200": 200, "h0": 0, "h1": 1, "h50": 50, "h200": 200}


def _scorer(query_length: int | None, seed: int = 0) -> Scorer:
    """Random tables; customers with 0, 1, 50 and 200 own items, with a row (u*) or only a history (h*)."""
    rng = np.random.default_rng(seed)
    user_rows = {f"u{n}": n % USERS + 1 for n in range(USERS)} | {u: 2 + n for n, u in enumerate(OWN) if u[0] == "u"}
    user_rows["beyond"] = USERS + 5  # a row the table lacks: scored with the OOV row
    histories = {}
    for user, own in OWN.items():
        if own:
            rows = rng.choice(np.arange(1, ITEMS), size=own, replace=False).astype(np.int64)
            histories[user] = (rows, rng.integers(1, 9, size=own).astype(np.float32))
    return Scorer(
        rng.normal(size=(USERS + 1, DIM)).astype(np.float32), rng.normal(size=(ITEMS, DIM)).astype(np.float32),
        user_rows, np.array([""] + [f"i{r}" for r in range(1, ITEMS)], dtype=object),
        item_bias=rng.normal(size=ITEMS).astype(np.float32), repeat_weight=0.7, history_weight=1.0,
        histories=histories, history_table=rng.normal(size=(ITEMS, DIM)).astype(np.float32),
        query_length=query_length,
    )


@pytest.mark.parametrize("query_length", [50, 10, None])
def test_the_saved_model_ranks_as_the_scorer_for_0_1_50_and_200_own_items(tmp_path, query_length):
    from recsys.serving.export import export_saved_model

    scorer = _scorer(query_length)
    served = [r for r in range(1, ITEMS) if r % 7]  # some items not served
    allowed = np.zeros(ITEMS, bool)
    allowed[served] = True
    export_saved_model(scorer, served, tmp_path / "m", k=20)
    serve = tf.saved_model.load(str(tmp_path / "m")).signatures["serving_default"]
    users = [*OWN, "never-seen", "beyond", "u3"]
    assert {len(scorer.history(u)[0]) for u in users} == {0, 1, 50, 200}
    out = serve(user_id=tf.constant(users))
    exported = [[i.decode() for i in row] for row in out["item_ids"].numpy()]
    assert exported == scorer.top_k(users, 20, allowed)
    expected = scorer.scores(users)
    expected[:, ~allowed] = -np.inf
    np.testing.assert_allclose(out["scores"].numpy(), -np.sort(-expected, axis=1)[:, :20], rtol=1e-5, atol=1e-5)
    # one user at a time: the same answers as in a batch
    single = serve(user_id=tf.constant(["u200"]))
    assert [i.decode() for i in single["item_ids"].numpy()[0]] == exported[users.index("u200")]


def test_the_graph_has_no_one_hot_and_no_big_constants(tmp_path):
    """Histories and id tables live in variables/: saved_model.pb does not grow with the customers."""
    from recsys.serving.export import export_saved_model

    small, big = _scorer(50), _scorer(50)
    big.user_rows = dict(big.user_rows) | {f"extra{n}": 1 for n in range(20_000)}
    rows = np.arange(1, 201, dtype=np.int64)
    big.histories = dict(big.histories) | {f"extra{n}": (rows, np.ones(200, np.float32)) for n in range(2_000)}
    sizes = {}
    for name, scorer in (("small", small), ("big", big)):
        export_saved_model(scorer, list(range(1, ITEMS)), tmp_path / name, k=5)
        graph = (tmp_path / name / "saved_model.pb").read_bytes()
        assert b"OneHot" not in graph
        sizes[name] = len(graph)
    assert sizes["big"] < sizes["small"] + 10_000  # 20,000 more ids and 400,000 more history entries
    serve = tf.saved_model.load(str(tmp_path / "big")).signatures["serving_default"]
    out = serve(user_id=tf.constant(["extra7", "u200"]))
    assert [i.decode() for i in out["item_ids"].numpy()[0]] == big.top_k(["extra7"], 5)[0]


def test_a_graph_mode_loader_restores_the_lookup_tables(tmp_path):
    """TensorFlow Serving loads a SavedModel through the v1 session loader: the tables kept in the
    checkpoint (mutable hash tables) are restored there too, with the same answers."""
    from recsys.serving.export import export_saved_model

    scorer = _scorer(50)
    export_saved_model(scorer, list(range(1, ITEMS)), tmp_path / "m", k=5)
    users = ["u200", "h50", "u1", "never-seen"]
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(tmp_path / "m"))
        signature = meta.signature_def["serving_default"]
        found = session.run(signature.outputs["item_ids"].name, {signature.inputs["user_id"].name: users})
    assert [[i.decode() for i in row] for row in found] == scorer.top_k(users, 5)


def test_the_with_session_signature_ranks_as_the_scorer_with_session_items(tmp_path):
    from recsys.serving.export import export_saved_model

    scorer = _scorer(10)
    scorer.session_weight, scorer.session_query_weight = 2.5, -0.8
    served = [r for r in range(1, ITEMS) if r % 7]
    allowed = np.zeros(ITEMS, bool)
    allowed[served] = True
    export_saved_model(scorer, served, tmp_path / "m", k=20)
    serve = tf.saved_model.load(str(tmp_path / "m")).signatures["with_session"]
    users = ["u0", "u50", "h200", "never-seen"]
    # most recent first, "" padding and an unknown item skipped, a repeated item in the mean as given and in the
    # bonus once (as Scorer takes session rows), more than query_length (10) items, an unserved item (14)
    given = [["i3", "i5", "", ""], ["nope", "i14", "i14", "i9"], [f"i{r}" for r in range(20, 34)], ["", "", "", ""]]
    width = max(len(g) for g in given)
    padded = [g + [""] * (width - len(g)) for g in given]
    row_of = {f"i{r}": r for r in range(1, ITEMS)}
    rows = [[row_of[i] for i in g if i in row_of] for g in given]
    scorer.sessions = {u: np.array(r, np.int64) for u, r in zip(users, rows, strict=True)}
    out = serve(user_id=tf.constant(users), session_item_ids=tf.constant(padded))
    exported = [[i.decode() for i in row] for row in out["item_ids"].numpy()]
    assert exported == scorer.top_k(users, 20, allowed)
    expected = scorer.scores(users)
    expected[:, ~allowed] = -np.inf
    np.testing.assert_allclose(out["scores"].numpy(), -np.sort(-expected, axis=1)[:, :20], rtol=1e-5, atol=1e-5)
    assert not np.allclose(expected, _scorer(10).scores(users))  # the session term changed the scores
