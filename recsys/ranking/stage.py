"""Both stages for a batch of customers: retrieval scores, candidates, features, and the ranker's order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.ranking.candidates import Candidates, DayInputs, RetrievalScorer, generate
from recsys.ranking.features import FEATURES, build
from recsys.ranking.model import RankerWeights

BLOCK_USERS = 256  # customers scored at once: memory is a [block, items] score matrix


@dataclass(frozen=True)
class Ranked:
    """The outcome for ``users``: ``ranked[u]`` the top item ids of user u, best first; ``candidates`` and
    their ``features`` (the training rows of the day, once its purchases are known)."""

    users: list[str]
    ranked: list[list[str]]
    candidates: Candidates
    features: np.ndarray


def order(candidates: Candidates, scores: np.ndarray, n_users: int, k: int) -> list[np.ndarray]:
    """Per user, the rows of their ``k`` best candidates by ``scores`` [N] (ties: retrieval order)."""
    position = np.arange(len(candidates))  # candidates are in retrieval order within a user
    by = np.lexsort((position, -scores, candidates.user))
    user, row = candidates.user[by], candidates.row[by]
    starts = np.searchsorted(user, np.arange(n_users + 1))
    return [row[starts[u]: min(starts[u + 1], starts[u] + k)] for u in range(n_users)]


def rank(scorer: RetrievalScorer, users: list[str], inputs: DayInputs, weights: RankerWeights | None, k: int, *,
         n_retrieval: int = 200, n_trending: int = 50, n_ease: int = 100, block: int = BLOCK_USERS) -> Ranked:
    """The top ``k`` of each user: the ranker's order of their candidates (``weights`` None: the retrieval order,
    i.e. the first stage alone over the same candidates)."""
    parts, feats, ranked = [], [], []
    for start in range(0, len(users), block):
        batch = users[start: start + block]
        ease = inputs.ease_scores(batch)
        cands = generate(scorer.scores(batch), batch, inputs, n_retrieval=n_retrieval, n_trending=n_trending,
                         n_ease=n_ease, ease_scores=ease)
        x = build(cands, batch, inputs, ease)
        scores = weights.score(x) if weights is not None else cands.score
        ranked += [scorer.item_ids[rows].tolist() for rows in order(cands, scores, len(batch), k)]
        parts.append(Candidates(cands.user + start, cands.row, cands.score))
        feats.append(x)
    candidates = Candidates(*(np.concatenate([getattr(p, f) for p in parts]) if parts else np.zeros(0, t)
                              for f, t in (("user", np.int64), ("row", np.int64), ("score", np.float32))))
    return Ranked(list(users), ranked, candidates,
                  np.concatenate(feats) if feats else np.zeros((0, len(FEATURES)), np.float32))
