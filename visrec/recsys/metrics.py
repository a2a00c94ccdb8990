"""Ranking metrics: the same functions serve offline evaluation, the promotion gate and the nightly
metrics in MLflow.

``recommended`` is an (n_users, K) array of item indices, best first (-1 pads a short list);
``relevant`` is a list with, for each of those users, the set of item indices they interacted with in
the test window. Users with nothing relevant are skipped by the accuracy metrics.

Recall and NDCG carry a 95% bootstrap interval over users (``recall_at_20_low`` / ``_high``): on a
few hundred test users, a difference inside it is noise.

- Hits@K: relevant items in the top K, summed over users (a count: on sparse data a handful of hits
  decides every other metric, so it is reported beside them).
- Recall@K: hits in the top K / number of relevant items.
- NDCG@K: binary gains, DCG = sum 1/log2(rank + 1) over hits, divided by the DCG of a perfect list
  of min(K, relevant) hits.
- MAP@K: mean over users of sum(precision@r for each hit rank r) / min(K, relevant).
- Coverage: distinct recommended items / catalog size.
- Intra-list diversity: mean over lists of the mean pairwise cosine distance (1 - cos) of the items'
  image embeddings.
- Novelty: mean -log2(p_i) of recommended items, p_i the share of training users who had item i
  (add-one smoothed).
- Cold recall@K: recall over relevant items that had no interactions before the cut, for users with
  at least one such item.
"""

from __future__ import annotations

import numpy as np


def users_with(relevant: list[set[int]]) -> np.ndarray:
    """The users (indices) with something relevant: the ones every metric averages over."""
    return np.array([u for u, rel in enumerate(relevant) if rel], dtype=np.int64)


def hits_at_k(recommended: np.ndarray, relevant: list[set[int]], k: int) -> int:
    return sum(len(set(recommended[u, :k].tolist()) & relevant[u]) for u in users_with(relevant))


def recall_per_user(recommended: np.ndarray, relevant: list[set[int]], k: int) -> np.ndarray:
    """Recall@K of each user with something relevant (the values :func:`recall_at_k` averages)."""
    return np.array(
        [
            len(set(recommended[u, :k].tolist()) & relevant[u]) / len(relevant[u])
            for u in users_with(relevant)
        ],
        np.float64,
    )


def recall_at_k(recommended: np.ndarray, relevant: list[set[int]], k: int) -> float:
    """Mean Recall@K over the users with something relevant: the share of their relevant items in
    their first ``k`` recommendations (``recommended``: item ids, one row per user of ``relevant``)."""
    per_user = recall_per_user(recommended, relevant, k)
    return float(per_user.mean()) if len(per_user) else 0.0


def bootstrap_interval(
    values: np.ndarray, *, samples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """The ``level`` interval of the mean of ``values`` (one per user) by resampling users with
    replacement. For the difference between two models, pass the per-user differences on the same
    users: a paired bootstrap."""
    values = np.asarray(values, np.float64)
    if len(values) == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def ndcg_per_user(recommended: np.ndarray, relevant: list[set[int]], k: int) -> np.ndarray:
    """NDCG@K of each user with something relevant (the values :func:`ndcg_at_k` averages)."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    out = []
    for u in users_with(relevant):
        hits = np.array([item in relevant[u] for item in recommended[u, :k]], dtype=float)
        ideal = discounts[: min(k, len(relevant[u]))].sum()
        out.append(float((hits * discounts[: len(hits)]).sum() / ideal))
    return np.array(out, np.float64)


def ndcg_at_k(recommended: np.ndarray, relevant: list[set[int]], k: int) -> float:
    """Mean NDCG@K (binary relevance) over the users with something relevant."""
    per_user = ndcg_per_user(recommended, relevant, k)
    return float(per_user.mean()) if len(per_user) else 0.0


def map_at_k(recommended: np.ndarray, relevant: list[set[int]], k: int) -> float:
    """Mean average precision at K over the users with something relevant."""
    users = users_with(relevant)
    if not len(users):
        return 0.0
    out = []
    for u in users:
        hits, total = 0, 0.0
        for rank, item in enumerate(recommended[u, :k], start=1):
            if item in relevant[u]:
                hits += 1
                total += hits / rank
        out.append(total / min(k, len(relevant[u])))
    return float(np.mean(out))


def coverage(recommended: np.ndarray, n_items: int) -> float:
    items = np.unique(recommended[recommended >= 0])
    return float(len(items) / n_items) if n_items else 0.0


def intra_list_diversity(recommended: np.ndarray, embeddings: np.ndarray) -> float:
    """Mean pairwise cosine distance within lists (embeddings L2-normalised)."""
    values = []
    for row in recommended:
        row = row[row >= 0]
        if len(row) < 2:
            continue
        e = embeddings[row]
        sims = e @ e.T
        n = len(row)
        values.append(float((n * n - sims.sum()) / (n * (n - 1))))  # mean of 1 - cos off the diagonal
    return float(np.mean(values)) if values else 0.0


def novelty(recommended: np.ndarray, item_user_counts: np.ndarray, n_users: int) -> float:
    p = (item_user_counts + 1.0) / (n_users + 1.0)
    items = recommended[recommended >= 0]
    return float(np.mean(-np.log2(p[items]))) if len(items) else 0.0


def cold_recall_at_k(recommended: np.ndarray, relevant: list[set[int]], cold: np.ndarray, k: int) -> float:
    cold_set = set(np.flatnonzero(cold).tolist())
    return recall_at_k(recommended, [rel & cold_set for rel in relevant], k)


def evaluate(
    recommended: np.ndarray,
    relevant: list[set[int]],
    *,
    k: int,
    n_items: int,
    cold: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    item_user_counts: np.ndarray | None = None,
    n_users: int | None = None,
) -> dict[str, float]:
    """Every metric at once, keyed like ``recall_at_20``."""
    recall, ndcg = recall_per_user(recommended, relevant, k), ndcg_per_user(recommended, relevant, k)
    (recall_low, recall_high), (ndcg_low, ndcg_high) = bootstrap_interval(recall), bootstrap_interval(ndcg)
    out = {
        f"hits_at_{k}": float(hits_at_k(recommended, relevant, k)),
        f"recall_at_{k}": float(recall.mean()) if len(recall) else 0.0,
        f"recall_at_{k}_low": recall_low,
        f"recall_at_{k}_high": recall_high,
        f"ndcg_at_{k}": float(ndcg.mean()) if len(ndcg) else 0.0,
        f"ndcg_at_{k}_low": ndcg_low,
        f"ndcg_at_{k}_high": ndcg_high,
        f"map_at_{k}": map_at_k(recommended, relevant, k),
        "coverage": coverage(recommended[:, :k], n_items),
    }
    if cold is not None:
        out[f"cold_recall_at_{k}"] = cold_recall_at_k(recommended, relevant, cold, k)
    if embeddings is not None:
        out["intra_list_diversity"] = intra_list_diversity(recommended[:, :k], embeddings)
    if item_user_counts is not None and n_users:
        out["novelty"] = novelty(recommended[:, :k], item_user_counts, n_users)
    return out
