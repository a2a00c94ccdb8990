"""The recommender's model on any Keras backend: it trains with Keras's own ``train_step`` (the loss
in ``compute_loss``), so the same code runs under TensorFlow and JAX, and a model saved under one
loads and scores the same under the other. ``make test-jax`` runs this file under JAX."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import scipy.sparse as sp

from visrec.models.mf import VBPR
from visrec.recsys.vbpr import BPRTriples

HAS_JAX = importlib.util.find_spec("jax") is not None


def _interactions(seed: int = 0) -> sp.csr_matrix:
    """60 users, each with a taste for one of 4 blocks of 10 items."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(60), 6)
    items = (users % 4) * 10 + rng.integers(0, 10, users.size)
    matrix = sp.csr_matrix((np.ones(users.size, np.float32), (users, items)), shape=(60, 40))
    matrix.sum_duplicates()
    return matrix


def test_vbpr_training_lowers_its_loss_on_this_backend():
    keras.utils.set_random_seed(0)
    model = VBPR(60, 40, feature_dim=4, factors=4, visual_factors=2, l2=1e-4)
    model.build()
    model.item_features.assign(np.random.default_rng(1).normal(size=(40, 4)).astype(np.float32))
    model.compile(optimizer=keras.optimizers.Adam(0.05), jit_compile=True)
    history = model.fit(BPRTriples(_interactions(), negatives=4, batch_size=256, seed=0), epochs=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0], losses
    scores = np.asarray(model((np.array([0, 1]), np.array([0, 10]), np.array([10, 0]))))
    assert scores.shape == (2,) and np.isfinite(scores).all()


SAVE = """
import numpy as np, keras, scipy.sparse as sp, json, sys
from visrec.models.mf import VBPR
from visrec.recsys.vbpr import BPRTriples
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
users = np.repeat(np.arange(30), 4); items = rng.integers(0, 20, users.size)
matrix = sp.csr_matrix((np.ones(users.size, np.float32), (users, items)), shape=(30, 20))
model = VBPR(30, 20, feature_dim=3, factors=3, visual_factors=2)
model.build()
model.item_features.assign(rng.normal(size=(20, 3)).astype(np.float32))
model.compile(optimizer=keras.optimizers.Adam(0.05))
model.fit(BPRTriples(matrix, 2, 64, 0), epochs=2, verbose=0)
model.save(sys.argv[1])
inputs = (np.arange(30), np.arange(30) % 20, (np.arange(30) + 7) % 20)
print(json.dumps(np.asarray(model(inputs)).tolist()))
"""

LOAD = """
import numpy as np, keras, json, sys
import visrec.models.mf  # registers VBPR
model = keras.models.load_model(sys.argv[1])
inputs = (np.arange(30), np.arange(30) % 20, (np.arange(30) + 7) % 20)
print(json.dumps(np.asarray(model(inputs)).tolist()))
"""


def _run(script: str, backend: str, path) -> np.ndarray:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(path)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return np.array(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.skipif(not HAS_JAX, reason="JAX is not installed (make test-jax installs it)")
@pytest.mark.parametrize(("saved_with", "loaded_with"), [("tensorflow", "jax"), ("jax", "tensorflow")])
def test_vbpr_saved_under_one_backend_scores_the_same_under_the_other(tmp_path, saved_with, loaded_with):
    path = tmp_path / "vbpr.keras"
    saved = _run(SAVE, saved_with, path)
    loaded = _run(LOAD, loaded_with, path)
    np.testing.assert_allclose(loaded, saved, rtol=1e-5, atol=1e-5)
