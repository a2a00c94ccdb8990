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
from pathlib import Path

import keras
import numpy as np
import pytest
import scipy.sparse as sp

from visrec.models.mf import VBPR
from visrec.recsys.vbpr import BPRTriples

REPO = Path(__file__).resolve().parents[1]
HAS_JAX = importlib.util.find_spec("jax") is not None


def _interactions(seed: int = 0) -> sp.csr_matrix:
    """60 users, each with a taste for one of 4 blocks of 10 items."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(60), 6)
    items = (users % 4) * 10 + rng.integers(0, 10, users.size)
    matrix = sp.csr_matrix((np.ones(users.size, np.float32), (users, items)), shape=(60, 40))
    matrix.sum_duplicates()
    return matrix


@pytest.mark.backend
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


def save_models(folder: Path) -> dict[str, list]:
    """Train a tiny VBPR (two epochs), build a tiny GAN with random weights, save them into ``folder``; their outputs."""
    from visrec.models.gan import ConditionalGAN
    from visrec.recsys.vbpr import BPRTriples

    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(30), 4)
    matrix = sp.csr_matrix(
        (np.ones(users.size, np.float32), (users, rng.integers(0, 20, users.size))), shape=(30, 20)
    )
    vbpr = VBPR(30, 20, feature_dim=3, factors=3, visual_factors=2)
    vbpr.build()
    vbpr.item_features.assign(rng.normal(size=(20, 3)).astype(np.float32))
    vbpr.compile(optimizer=keras.optimizers.Adam(0.05))
    vbpr.fit(BPRTriples(matrix, 2, 64, 0), epochs=2, verbose=0)
    vbpr.save(folder / "vbpr.keras")
    gan = ConditionalGAN(["a", "b", "c"], latent_dim=8, resolution=32, width=4, minibatch_kernels=2)
    gan.build()
    gan.compile()
    # Every variable off its initial value, the batch normalisations' statistics included (positive,
    # as variances must be): a load that drops any of them changes the outputs. (Each backend's
    # train step has its own test above; tracing the GAN's twice here cost 30 s.)
    for variable in gan.variables:
        noise = (
            rng.uniform(0.5, 1.5, variable.shape)
            if "variance" in variable.path
            else rng.normal(0, 0.2, variable.shape)
        )
        variable.assign(np.asarray(noise, variable.dtype))
    gan.save(folder / "gan.keras")
    return _outputs(vbpr, gan)


def load_models(folder: Path) -> dict[str, list]:
    """The outputs of the models :func:`save_models` saved into ``folder``, loaded on this backend."""
    import visrec.models.gan  # noqa: F401  (registers the GAN with Keras)

    return _outputs(
        keras.models.load_model(folder / "vbpr.keras"), keras.models.load_model(folder / "gan.keras")
    )


def _outputs(vbpr, gan) -> dict[str, list]:
    inputs = (np.arange(30), np.arange(30) % 20, (np.arange(30) + 7) % 20)
    z = np.random.default_rng(1).normal(size=(6, 8)).astype("float32")
    return {
        "vbpr": np.asarray(vbpr(inputs)).tolist(),
        "gan": np.asarray(gan.generator((z, np.arange(6) % 3), training=False)).ravel().tolist(),
    }


OTHER_BACKEND = """
import json, sys
from pathlib import Path
from tests.test_backends import load_models, save_models
here, other = Path(sys.argv[1]), Path(sys.argv[2])
print(json.dumps({"saved": save_models(other), "loaded": load_models(here)}))
"""


@pytest.mark.backend
@pytest.mark.integration
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


@pytest.mark.integration
@pytest.mark.skipif(not HAS_JAX, reason="JAX is not installed (make test-jax installs it)")
def test_models_saved_under_one_backend_give_the_same_outputs_under_the_other(tmp_path):
    """VBPR and the GAN saved on this backend load on the other one (a subprocess) and give the same
    outputs; the other backend's saved models load here and give its outputs."""
    here = keras.backend.backend()
    other = "jax" if here == "tensorflow" else "tensorflow"
    saved_here = save_models(tmp_path / here)
    env = {**os.environ, "KERAS_BACKEND": other, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", OTHER_BACKEND, str(tmp_path / here), str(tmp_path / other)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    there = json.loads(out.stdout.strip().splitlines()[-1])
    loaded_here = load_models(tmp_path / other)
    for model in ("vbpr", "gan"):
        np.testing.assert_allclose(there["loaded"][model], saved_here[model], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(loaded_here[model], there["saved"][model], rtol=1e-4, atol=1e-5)


@pytest.mark.backend
def test_image_model_training_lowers_its_loss_and_saves_on_this_backend(tmp_path):
    """The image model's own loss (category, contrastive over second views, an attribute head) falls
    on images one colour per category, and the saved model loads with the same outputs."""
    from visrec.models.cnn import ImageClassifier

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels, colours = rng.integers(0, 3, 64), rng.integers(0, 2, 64)
    images = np.stack([np.full((32, 32, 3), (40, 128, 220)[c], np.float32) for c in labels])
    images = np.clip(images + rng.normal(0, 10, images.shape), 0, 255).astype(np.uint8)
    model = ImageClassifier(
        ["a", "b", "c"], image_size=32, width=8, retrieval_dim=8, attributes={"colour": ["x", "y"]}
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=keras.losses.CategoricalCrossentropy())
    targets = np.concatenate([np.eye(3)[labels], colours[:, None]], axis=1).astype(np.float32)
    losses = model.fit(images, targets, batch_size=16, epochs=8, verbose=0).history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses
    model.save(tmp_path / "cnn.keras")
    loaded = keras.models.load_model(tmp_path / "cnn.keras")
    np.testing.assert_allclose(np.asarray(loaded(images[:8])), np.asarray(model(images[:8])), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(loaded.embed(images[:8])), np.asarray(model.embed(images[:8])), atol=1e-5
    )
    # Batch embedding runs the backbone with its trained normalisations folded into the convolutions.
    from visrec.vision.embed import embed_pixels

    assert not any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in loaded.inference_backbone().layers
    )
    np.testing.assert_allclose(embed_pixels(loaded, images), np.asarray(model.embed(images)), atol=1e-5)
