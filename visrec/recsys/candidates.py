"""Candidate generators: the first stage of two-stage recommendations.

Each generator proposes, for a batch of users, ``N`` items they have not interacted with, best first
(``(ids, scores)``, each ``(len(userids), N)``, like :meth:`Recommender.recommend`). A learned ranker
orders the union of their proposals; its quality can only reach what the union holds, so each
generator is judged by its recall@N of the held-out items, alone and merged (:func:`recall_at`,
:func:`merge`). Any fitted :class:`~visrec.recsys.baselines.Recommender` is a generator (the served
factor model, item-CF, popularity, the users' visual profiles) through :class:`FromRecommender`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from visrec.recsys.baselines import Recommender
from visrec.recsys.data import TrainData


@dataclass
class FromRecommender:
    """A recommender as a candidate generator, under ``name``."""

    name: str
    model: Recommender

    def fit(self, data: TrainData) -> FromRecommender:
        self.model.fit(data)
        return self

    def candidates(
        self, userids: np.ndarray, user_items: sp.csr_matrix, N: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``N`` best items per user that the user has not interacted with."""
        if N < 1:
            raise ValueError(f"N must be at least 1, got {N}")
        return self.model.recommend(userids, user_items, N=N, filter_already_liked_items=True)


def merge(proposals: list[np.ndarray]) -> list[list[int]]:
    """The union of several generators' proposals per user (rows aligned), in first-seen order: a
    generator's earlier ranks before a later generator's."""
    if not proposals:
        return []
    rows = len(proposals[0])
    if any(len(p) != rows for p in proposals):
        raise ValueError("every generator must propose for the same users, in the same order")
    merged = []
    for u in range(rows):
        seen: dict[int, None] = {}
        for p in proposals:
            for item in p[u].tolist():
                seen.setdefault(int(item), None)
        merged.append(list(seen))
    return merged


def recall_at(proposed: np.ndarray | list[list[int]], relevant: list[set[int]]) -> np.ndarray:
    """Per user (rows aligned with ``relevant``, each non-empty): the share of their relevant items
    among what was proposed for them."""
    if len(proposed) != len(relevant):
        raise ValueError(f"{len(proposed)} proposal rows for {len(relevant)} users")
    if any(not r for r in relevant):
        raise ValueError("every user measured needs a relevant item (see metrics.users_with)")
    return np.array(
        [
            len(set(np.asarray(row).tolist()) & rel) / len(rel)
            for row, rel in zip(proposed, relevant, strict=True)
        ],
        np.float64,
    )
