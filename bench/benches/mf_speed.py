"""The mf_speed bench: `python bench/run.py mf_speed`. See :func:`run`."""

from __future__ import annotations

import os
import time

from benchkit import Figures, figure


def run() -> Figures:
    """The recommender's training cost: seconds per epoch per million interactions (each with the
    default four negatives), default settings, on a random matrix of 100k users x 20k items with a
    million interactions and 64-dimensional item features; the time of three epochs beyond the
    first (which also builds and compiles the model)."""

    import numpy as np
    import scipy.sparse as sp

    from visrec.recsys.data import TrainData
    from visrec.recsys.select import default_params, make_vbpr
    from visrec.settings import Settings

    rng = np.random.default_rng(0)
    users, items, n = 100_000, 20_000, 1_000_000
    matrix = sp.csr_matrix(
        (np.ones(n, np.float32), (rng.integers(0, users, n), rng.zipf(1.2, n) % items)), shape=(users, items)
    )
    matrix.sum_duplicates()
    data = TrainData(matrix, rng.normal(size=(items, 64)).astype(np.float32), None)
    settings = Settings()
    seconds = {}
    for epochs in (1, 4):
        started = time.perf_counter()
        make_vbpr(settings, {**default_params(settings), "epochs": epochs}).fit(data)
        seconds[epochs] = time.perf_counter() - started
    per_million = (seconds[4] - seconds[1]) / 3 / (matrix.nnz / 1e6)
    note = f"{matrix.nnz} interactions, batch {settings.mf_batch_size}, {os.cpu_count()} cores; goal <= 2"
    return {"mf.speed.epoch_seconds_per_million": figure(round(per_million, 2), "s", note)}
