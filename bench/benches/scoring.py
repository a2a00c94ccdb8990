"""The scoring bench: `python bench/run.py scoring`. See :func:`run`."""

from __future__ import annotations

import os
import time

from benchkit import Figures, figure

SCORING_SHAPE = (100_000, 20_000, 64, 20)  # users, items, dims, K


def _scoring_worker(chunk: int, generic: bool) -> dict:
    """Top-20 for every user of a random factor model (20 already-seen items each, filtered), in a
    fresh process so that its peak RSS is the scoring's own; also numpy's matmul peak on one chunk."""
    import resource

    import numpy as np
    import scipy.sparse as sp

    from visrec.recsys.baselines import FactorRecommender, Recommender

    users, items, dim, k = SCORING_SHAPE
    rng = np.random.default_rng(0)
    model = FactorRecommender()
    model.user_vectors = rng.standard_normal((users, dim), dtype=np.float32)
    model.item_vectors = rng.standard_normal((items, dim), dtype=np.float32)
    model.item_biases = rng.standard_normal(items).astype(np.float32)
    model.chunk_size = chunk
    cols = rng.integers(0, items, users * 20)
    seen = sp.csr_matrix(
        (np.ones(len(cols), np.float32), (np.repeat(np.arange(users), 20), cols)), shape=(users, items)
    )
    block = model.user_vectors[:4096]
    peak = 0.0
    for _ in range(5):
        started = time.perf_counter()
        np.matmul(block, model.item_vectors.T)
        peak = max(peak, 2 * block.shape[0] * items * dim / (time.perf_counter() - started))
    recommend = Recommender.recommend if generic else FactorRecommender.recommend
    recommend(model, np.arange(chunk), seen, N=k)  # warm-up: traces the graph
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    started = time.perf_counter()
    ids, _ = recommend(model, np.arange(users), seen, N=k)
    seconds = time.perf_counter() - started
    assert (ids >= 0).all()
    return {
        "seconds": seconds,
        "flops": 2 * users * items * dim / seconds,
        "peak": peak,
        "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "rss_before_gb": rss_before,
    }


def run() -> Figures:
    """Batch scoring throughput: top-20 of 100,000 users x 20,000 items x 64 dims (users x items x dims
    x 2 flops per second) against numpy's float32 matmul peak measured in the same process, with the
    process's peak memory; the fused two-stage path at two chunk sizes and the generic path."""
    import multiprocessing

    users, items, dim, k = SCORING_SHAPE
    out: Figures = {}
    spawn = multiprocessing.get_context("spawn")
    for name, chunk, generic in (
        ("fused", 4096, False),
        ("fused_chunk8192", 8192, False),
        ("generic", 4096, True),
    ):
        with spawn.Pool(1) as pool:
            r = pool.apply(_scoring_worker, (chunk, generic))
        path = (
            "numpy scores + tf.math.top_k (Recommender.recommend)"
            if generic
            else "FactorRecommender.recommend"
        )
        note = (
            f"{users:,} users x {items:,} items x {dim} dims, top {k}, 20 seen items filtered per user, "
            f"chunk {chunk}, {path}, {os.cpu_count()} cores; numpy matmul peak {r['peak'] / 1e9:.0f} GFLOP/s"
        )
        out[f"scoring.{name}.gflops"] = figure(round(r["flops"] / 1e9, 1), "GFLOP/s", note)
        out[f"scoring.{name}.over_numpy_peak"] = figure(
            round(r["flops"] / r["peak"], 3), "ratio", note + "; goal >= 0.5"
        )
        out[f"scoring.{name}.seconds"] = figure(round(r["seconds"], 2), "s", note)
        out[f"scoring.{name}.peak_rss_gb"] = figure(
            round(r["rss_gb"], 2),
            "GB",
            note + f"; inputs and process before scoring: {r['rss_before_gb']:.2f} GB",
        )
    return out
