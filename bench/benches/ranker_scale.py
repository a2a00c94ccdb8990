"""The ranker_scale bench: `python bench/run.py ranker_scale`. See :func:`run`."""

from __future__ import annotations

import sys
import time
import tracemalloc

import numpy as np
import scipy.sparse as sp
from benchkit import Figures, figure

SIZES = (1, 4, 16)
BASE_USERS, BASE_ITEMS = 6_000, 300  # the scale bench's 1x (bench/benches/scale.py SCALE_BASE)
ITEMS_PER_USER = 20
TIMED_USERS = 2_048  # time per user is measured on this many users (the cost is per user)
TRAINING_USERS = 4_096  # the ranker learns from this many users' candidates at every size


def _shop(users: int, items: int, seed: int = 0):
    """Random implicit feedback with a long tail (item popularity ~ rank^-0.8) and random unit image
    embeddings: the shape of the work, not of anyone's taste."""
    from visrec.recsys.data import TrainData

    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, items + 1) ** 0.8
    rows = np.repeat(np.arange(users), ITEMS_PER_USER)
    cols = rng.choice(items, size=users * ITEMS_PER_USER, p=p / p.sum())
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(users, items))
    matrix.data[:] = 1.0
    features = rng.normal(size=(items, 32)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return TrainData(matrix, features, matrix, [str(u) for u in range(users)], [str(i) for i in range(items)])


def run() -> Figures:
    """The nightly ranker's serving cost at the scale bench's sizes (1x: 6,000 users x 300 items, 4x,
    16x: 96,000 x 4,800; 20 items per user), beside the factor model's top-K that scoring runs today,
    on the same users: milliseconds per user of ``recommend`` (top-20) on 2,048 users (the ranker:
    every generator's dense scores, the candidates' features, LightGBM's prediction; the generators'
    scores alone, the floor under it), the peak memory
    one chunk of users allocates (tracemalloc), and the projection to a million users on one core
    pair. The generators are the nightly ones (EASE, item-CF, popularity, visual profile, visual
    neighbours); the ranker learns (50 rounds at most) from 4,096 users' candidates at every size."""
    from visrec.recsys.baselines import FactorRecommender
    from visrec.recsys.data import Split, holdout_per_user
    from visrec.recsys.ranker import CandidateRanker
    from visrec.recsys.train_ranker import nightly_generators

    out: Figures = {}
    for size in SIZES:
        users, items = BASE_USERS * size, BASE_ITEMS * size
        data = _shop(users, items)
        held = holdout_per_user(data, 0.25, seed=0)
        learn = Split(
            held.train, [r if u < TRAINING_USERS else set() for u, r in enumerate(held.relevant)], held.cold
        )
        ranker = CandidateRanker(nightly_generators(data), max_rounds=50)
        started = time.perf_counter()
        ranker.fit(data, learn)
        fit_seconds = time.perf_counter() - started
        sample = np.arange(min(TIMED_USERS, users))
        ranker.recommend(sample[:8], data.user_items, N=20)  # warm, as the factor model below
        started = time.perf_counter()
        ranker.recommend(sample, data.user_items, N=20)
        ranker_ms = (time.perf_counter() - started) * 1000 / len(sample)
        started = time.perf_counter()
        for start in range(0, len(sample), ranker.chunk_size):
            for g in ranker.generators:
                g.model.score(sample[start : start + ranker.chunk_size])
        generators_ms = (time.perf_counter() - started) * 1000 / len(sample)
        tracemalloc.start()
        ranker.recommend(sample[: ranker.chunk_size], data.user_items, N=20)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        factors = FactorRecommender()
        rng = np.random.default_rng(1)
        factors.user_vectors = rng.normal(size=(users, 64)).astype(np.float32)
        factors.item_vectors = rng.normal(size=(items, 64)).astype(np.float32)
        factors.item_biases = np.zeros(items, np.float32)
        factors.recommend(sample[:8], data.user_items, N=20)  # the first call builds the TF graph
        started = time.perf_counter()
        factors.recommend(sample, data.user_items, N=20)
        factor_ms = (time.perf_counter() - started) * 1000 / len(sample)
        shape = f"{size}x: {users} users x {items} items, {ITEMS_PER_USER} items per user; {len(sample)} users timed"
        print(
            f"  {size}x: ranker {ranker_ms:.3f} ms/user (generators' scores {generators_ms:.3f}), "
            f"factor model {factor_ms:.4f} ms/user, "
            f"peak {peak / 2**20:.0f} MiB per chunk, fit {fit_seconds:.0f} s",
            file=sys.stderr,
        )
        key = f"mf.scale.ranker.{size}x"
        out[f"{key}.ms_per_user"] = figure(round(ranker_ms, 3), "ms/user", shape)
        out[f"{key}.factor_ms_per_user"] = figure(round(factor_ms, 4), "ms/user", shape + "; today's top-K")
        out[f"{key}.generators_ms_per_user"] = figure(
            round(generators_ms, 3),
            "ms/user",
            shape + "; the generators' scores of every item alone (the floor under the ranker's time)",
        )
        out[f"{key}.rounds"] = figure(
            ranker.best_iteration, "rounds", "LightGBM's trees after early stopping"
        )
        out[f"{key}.over_factor"] = figure(round(ranker_ms / factor_ms, 1), "ratio", shape)
        out[f"{key}.chunk_peak_mib"] = figure(
            round(peak / 2**20, 1), "MiB", f"{ranker.chunk_size} users per chunk; " + shape
        )
        out[f"{key}.minutes_per_million_users"] = figure(
            round(ranker_ms * 1e6 / 60_000, 1), "min", "projected from ms/user; " + shape
        )
        out[f"{key}.fit_seconds"] = figure(round(fit_seconds, 1), "s", f"{TRAINING_USERS} users' candidates")
    growth = out["mf.scale.ranker.16x.ms_per_user"]["value"] / out["mf.scale.ranker.1x.ms_per_user"]["value"]
    out["mf.scale.ranker.16x_over_1x_per_user"] = figure(
        round(growth, 1), "ratio", "time per user at 16x over 1x (items grow 16x too)"
    )
    return out
