"""Models on any Keras backend. The recommender trains with Keras's own ``train_step`` (the loss in
``compute_loss``); the GAN has a step per backend over the same loss functions. Each trains under
TensorFlow and JAX, and a model saved under one loads and gives the same outputs under the other.
``make test-jax`` runs this file (and the model tests) under JAX."""

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


GAN_SAVE = """
import numpy as np, keras, json, sys
from visrec.models.gan import ConditionalGAN
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.uniform(-1, 1, (48, 32, 32, 3)).astype("float32"); y = rng.integers(0, 3, 48).astype("int32")
gan = ConditionalGAN(["a", "b", "c"], latent_dim=8, resolution=32, width=4, minibatch_kernels=2)
gan.build(); gan.compile()
gan.fit(x, y, batch_size=16, epochs=2, verbose=0)
gan.save(sys.argv[1])
z = np.random.default_rng(1).normal(size=(6, 8)).astype("float32"); labels = np.arange(6) % 3
print(json.dumps(np.asarray(gan.generator((z, labels), training=False)).ravel().tolist()))
"""

GAN_LOAD = """
import numpy as np, keras, json, sys
import visrec.models.gan  # registers the GAN
gan = keras.models.load_model(sys.argv[1])
z = np.random.default_rng(1).normal(size=(6, 8)).astype("float32"); labels = np.arange(6) % 3
print(json.dumps(np.asarray(gan.generator((z, labels), training=False)).ravel().tolist()))
"""


def test_gan_training_lowers_the_discriminators_loss_on_this_backend():
    """On separable data (one colour per category) the discriminator's loss, classifier included,
    falls on either backend's step; the generator's loss stays finite."""
    from visrec.models.gan import ConditionalGAN

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 96).astype("int32")
    images = np.stack([np.full((32, 32, 3), (-0.8, 0.0, 0.8)[c], np.float32) for c in labels])
    images += rng.normal(0, 0.05, images.shape).astype(np.float32)
    gan = ConditionalGAN(["a", "b", "c"], latent_dim=8, resolution=32, width=8, augment=False)
    gan.build()
    gan.compile()
    history = gan.fit(images, labels, batch_size=16, epochs=6, verbose=0).history
    assert history["d_loss"][-1] < 0.8 * history["d_loss"][0], history
    assert np.isfinite(history["g_loss"]).all()


@pytest.mark.skipif(not HAS_JAX, reason="JAX is not installed (make test-jax installs it)")
@pytest.mark.parametrize("model", ["vbpr", "gan"])
@pytest.mark.parametrize(("saved_with", "loaded_with"), [("tensorflow", "jax"), ("jax", "tensorflow")])
def test_a_model_saved_under_one_backend_gives_the_same_outputs_under_the_other(
    tmp_path, model, saved_with, loaded_with
):
    save, load = {"vbpr": (SAVE, LOAD), "gan": (GAN_SAVE, GAN_LOAD)}[model]
    path = tmp_path / f"{model}.keras"
    saved = _run(save, saved_with, path)
    loaded = _run(load, loaded_with, path)
    np.testing.assert_allclose(loaded, saved, rtol=1e-4, atol=1e-5)
