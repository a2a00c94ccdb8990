"""The conditional GAN: shapes, save/load, conditioning judged by the image model, cadence, looks."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tests.conftest import VISION_DAYS
from visrec.devdata.synth import ShopConfig, generate_shop
from visrec.generation.looks import generate_looks
from visrec.generation.train import GANConfig, gan_due, to_pixels, train_gan
from visrec.ingest.catalog_images import ingest_images
from visrec.settings import Settings
from visrec.store.lake import Lake
from visrec.store.runs import RunLog

DS = VISION_DAYS[-1]


@pytest.fixture(scope="module")
def trained(vision_shop):
    """The session's shop and image model (the judge), and a 32x32 GAN trained briefly on its images."""
    settings, lake, cnn = vision_shop.settings, vision_shop.lake, vision_shop.model
    config = GANConfig.from_settings(
        settings,
        resolution=32,
        width=16,
        epochs=GAN_EPOCHS,
        batch_size=32,
        max_minutes=None,
        quality_samples=256,
    )
    result = train_gan(settings, DS, lake=lake, config=config, cnn=cnn)
    return settings, lake, result, cnn


GAN_EPOCHS = 100


def test_generated_images_have_the_right_shape_and_range(trained):
    _, _, result, _ = trained
    images = np.asarray(result.model.generate(np.array([0, 1, 2, 7]), seed=1))
    assert images.shape == (4, 32, 32, 3)
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert to_pixels(images).dtype == np.uint8


def test_save_load_round_trip(trained, tmp_path):
    import keras

    _, _, result, _ = trained
    path = tmp_path / "gan.keras"
    result.model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.class_names == result.model.class_names
    labels = np.arange(len(loaded.class_names))
    np.testing.assert_allclose(
        np.asarray(loaded.generate(labels, seed=3)),
        np.asarray(result.model.generate(labels, seed=3)),
        atol=1e-5,
    )


def test_conditioning_is_recognised_by_the_image_model(trained):
    _, _, result, _ = trained
    m = result.metrics
    # Chance is 1/8. Measured before minibatch discrimination: 0.68 against the image model's 0.85 on
    # real images (0.32 before the generator's batch normalisations were conditioned and the critic's
    # classifier normalised).
    assert m["class_consistency"] > 0.5 * m["cnn_accuracy_on_real"], m


def test_registered_with_its_quality(trained):
    import mlflow

    _, _, result, _ = trained
    assert result.version == "visrec-gan/1" and result.promoted
    version = mlflow.MlflowClient().get_model_version("visrec-gan", "1")
    run = mlflow.get_run(version.run_id)
    metrics = run.data.metrics
    import keras

    assert run.data.tags["visrec.backend"] == keras.backend.backend()  # and the device it trained on
    assert run.data.tags["visrec.device"].startswith(("cpu", "gpu"))
    assert {"frechet_ratio", "class_consistency", "cnn_accuracy_on_real", "d_loss", "g_loss"} <= set(metrics)
    by_class = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/class_consistency.json")
    assert by_class == pytest.approx(result.consistency_by_class)
    assert set(by_class) <= set(result.class_names) and len(by_class) >= 6  # 256 samples over 8 categories


def test_consistency_per_category_exposes_a_collapsed_category(trained):
    """A generator that draws one category whatever is asked: its overall consistency is about one
    in eight, and the per-category figures say which category it draws."""
    settings, lake, result, cnn = trained
    from visrec.generation.train import gan_quality, judge_real, to_unit
    from visrec.store.tables import load_staged_images

    images = load_staged_images(lake, DS)
    drawn = images.categories[0]
    same = to_unit(images.pixels[[k for k, c in enumerate(images.categories) if c == drawn]])

    class DrawsOneCategory:
        class_names = result.model.class_names

        def generate(self, labels, seed=None, temperature=None):
            return same[np.arange(len(labels)) % len(same)]

    metrics, by_class = gan_quality(DrawsOneCategory(), cnn, images.pixels, images.categories, 256)
    assert by_class[drawn] > 0.8
    assert all(v < 0.2 for c, v in by_class.items() if c != drawn)
    assert metrics["classes_mostly_missed"] == len(by_class) - 1
    assert metrics["class_consistency_lowest"] == min(by_class.values())
    assert metrics["class_consistency"] < 0.3
    # The catalog judged once and handed in gives the same figures (what a bench judging several
    # sample sets of one catalog does).
    real = judge_real(cnn, images.pixels, images.categories, list(result.model.class_names))
    again, _ = gan_quality(DrawsOneCategory(), cnn, images.pixels, images.categories, 256, real=real)
    assert again == pytest.approx(metrics, rel=1e-6)


def test_a_generator_that_draws_real_photos_scores_a_frechet_ratio_near_one(trained):
    """The ratio's floor is measured at the generated set's size: real photos of the requested
    categories, as many as the quality check draws, are about as far from the catalog as two real
    sets of that size are (a floor from two halves of the catalog would put them well above 1)."""
    from visrec.generation.train import gan_quality, to_unit
    from visrec.store.tables import load_staged_images

    _, lake, result, cnn = trained
    images = load_staged_images(lake, DS)
    categories = np.array(images.categories)
    rng = np.random.default_rng(7)

    class DrawsRealPhotos:
        class_names = result.model.class_names

        def generate(self, labels, seed=None, temperature=None):
            picked = [rng.choice(np.flatnonzero(categories == self.class_names[k])) for k in labels]
            return to_unit(images.pixels[picked])

    n = 64
    assert len(categories) >= 4 * n  # the catalog is far larger than the generated set
    metrics, _ = gan_quality(DrawsRealPhotos(), cnn, images.pixels, images.categories, n)
    assert 0.5 < metrics["frechet_ratio"] < 1.6
    assert metrics["class_consistency"] == pytest.approx(metrics["cnn_accuracy_on_real"], abs=0.15)


def test_cadence_trains_only_when_due(tmp_path):
    day = "2026-11-01"
    settings = Settings(home=tmp_path, gan_every_days=7, gan_catalog_change=0.2)
    lake = Lake.from_settings(settings)
    generate_shop(ShopConfig(users=20, items=100, days=1, seed=1), lake)
    ingest_images(settings, lake, day)
    items = lake.read_table("staging_images", day).column("item_id").to_pylist()
    runs = RunLog(lake)

    def is_due(ds: str) -> tuple[bool, str]:  # as the pipeline's train_gan step asks
        return gan_due(settings, lake, ds, runs.last("train_gan", ds, "trained"))

    assert is_due("2026-11-03") == (True, "no GAN trained yet")

    def trained_on(ds: str, known: list[str]) -> None:
        runs.record(ds, "train_gan", {"trained": True, "items": known})

    trained_on("2026-10-30", items)
    due, why = is_due(day)
    assert not due and "2 days ago" in why
    trained_on("2026-10-30", items[:50])  # half the catalog is new since then
    due, why = is_due(day)
    assert due and "new since" in why
    trained_on("2026-10-30", items)
    due, why = is_due("2026-11-06")
    assert due and "7 days ago" in why
    trained_on("2026-10-30", [])
    runs.record(day, "train_gan", {"trained": False})
    assert is_due(day)[0]  # an untrained day does not count as a training


def test_generated_looks_follow_favourite_categories(trained):
    settings, lake, result, cnn = trained
    table = generate_looks(settings, lake, DS, result.model, cnn, result.version, users_per_segment=2, keep=2)
    assert table.num_rows > 0
    profiles = {
        r["user_id"]: [c["category"] for c in r["top_categories"]]
        for r in lake.read_table("user_profiles", DS).to_pylist()
    }
    for row in table.to_pylist():
        assert row["category"] in profiles[row["user_id"]][:2]
        assert lake.exists(row["image_uri"].removeprefix(f"{lake.uri}/"))
        assert len(row["nearest_item_ids"]) == 5 and row["nearest_scores"] == sorted(
            row["nearest_scores"], reverse=True
        )


@pytest.mark.backend
def test_diff_augment_shifts_and_cuts_out_and_passes_gradients():
    import keras

    from visrec.models.gan import diff_augment

    images = np.ones((16, 32, 32, 3), np.float32)
    augment = lambda x: diff_augment(x, keras.random.SeedGenerator(0))  # noqa: E731 (the same draw each call)
    if keras.backend.backend() == "jax":
        import jax

        out = np.asarray(augment(images))
        grad = np.asarray(jax.grad(lambda x: augment(x).sum())(images))
    else:
        import tensorflow as tf

        images = tf.constant(images)
        with tf.GradientTape() as tape:
            tape.watch(images)
            out = augment(images)
            total = tf.reduce_sum(out)
        out, grad = out.numpy(), tape.gradient(total, images).numpy()
    assert out.shape == (16, 32, 32, 3)
    zeroed = (out == 0).all(axis=-1).mean(axis=(1, 2))
    # Every image loses its cut-out square (a quarter of it, less where it leaves the frame) and what
    # the shift uncovers; nothing else changes.
    assert (zeroed >= 0.1).all() and (zeroed <= 0.6).all(), zeroed
    assert set(np.unique(out)) <= {0.0, 1.0}
    assert grad.sum() == pytest.approx(out.sum())  # each kept pixel reaches exactly one source pixel


@pytest.mark.backend
def test_conditional_batch_norm_normalises_then_scales_per_category():
    from visrec.models.gan import ConditionalBatchNorm

    layer = ConditionalBatchNorm(3, momentum=0.9, name="cbn")
    x = np.random.default_rng(0).normal(5.0, 2.0, (6, 4, 4, 2)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2])
    out = np.asarray(layer(x, labels, training=True))
    # Fresh: scale 1, shift 0 for every category, so plain batch normalisation.
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1.0, atol=1e-2)
    layer.gamma.embeddings.assign(np.array([[1.0, 1.0], [2.0, 2.0], [1.0, 1.0]], np.float32))
    layer.beta.embeddings.assign(np.array([[0.0, 0.0], [0.0, 0.0], [3.0, -3.0]], np.float32))
    steered = np.asarray(layer(x, labels, training=True))
    np.testing.assert_allclose(steered[labels == 0], out[labels == 0], atol=1e-5)
    np.testing.assert_allclose(steered[labels == 1], 2.0 * out[labels == 1], atol=1e-5)
    np.testing.assert_allclose(steered[labels == 2][..., 0], out[labels == 2][..., 0] + 3.0, atol=1e-5)
    np.testing.assert_allclose(steered[labels == 2][..., 1], out[labels == 2][..., 1] - 3.0, atol=1e-5)
    clone = ConditionalBatchNorm.from_config(layer.get_config())
    assert (clone.n_classes, clone.momentum, clone.norm.momentum) == (3, 0.9, 0.9)


@pytest.mark.backend
def test_minibatch_discrimination_sees_copies_within_a_category_only():
    from visrec.models.gan import Discriminator

    critic = Discriminator(3, resolution=32, width=8, minibatch_kernels=4)
    features = np.random.default_rng(0).normal(size=(6, 4, 4, 32)).astype(np.float32)
    features[1] = features[2] = features[0]  # category 0: three copies of one image
    features[5] = features[0]  # the same image again, but as category 2, its only image
    labels = np.array([0, 0, 0, 1, 1, 2])
    closeness = np.asarray(critic.same_category_closeness(features, labels))
    assert closeness.shape == (6, 4)
    # Each copy sees two identical others: exp(0) twice over (2 others + 1).
    np.testing.assert_allclose(closeness[:3], 2 / 3, rtol=1e-5)
    # Two different images of category 1 are less close than copies; symmetric.
    assert (closeness[3:5] < 0.5).all() and np.allclose(closeness[3], closeness[4])
    # A category's only image has no one to compare with, whatever other categories hold.
    np.testing.assert_allclose(closeness[5], 0.0)
    clone = Discriminator.from_config(critic.get_config())
    assert clone.minibatch_kernels == 4


@pytest.mark.backend
def test_the_generator_that_draws_is_the_moving_average_of_the_trained_one():
    import keras

    from visrec.models.gan import ConditionalGAN

    gan = ConditionalGAN(["a", "b"], latent_dim=8, resolution=32, width=8, ema_decay=0.9, seed=1)
    gan.build()
    gan.compile()
    start = [keras.ops.convert_to_numpy(w) for w in gan.generator.weights]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(gan.ema_generator.weights[0]), start[0]
    )  # starts equal
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (8, 32, 32, 3)).astype("float32")
    gan.fit(images, np.arange(8) % 2, batch_size=8, epochs=1, verbose=0)
    # One generator step: the decay ramps up from (1 + 1) / (10 + 1), far below 0.9.
    decay = 2 / 11
    trained = [keras.ops.convert_to_numpy(w) for w in gan.generator.weights]
    assert any(np.abs(t - s).max() > 1e-6 for t, s in zip(trained, start, strict=True))
    for average, before, after in zip(gan.ema_generator.weights, start, trained, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(average), decay * before + (1 - decay) * after, rtol=1e-4, atol=1e-6
        )
    # It draws the images; the trained generator is only what it averages.
    z = np.zeros((2, 8), "float32")
    drawn = np.asarray(gan((z, np.array([0, 1]))))
    np.testing.assert_allclose(
        drawn, np.asarray(gan.ema_generator((z, np.array([0, 1])), training=False)), atol=1e-6
    )
    assert ConditionalGAN.from_config(gan.get_config()).ema_decay == 0.9
    with pytest.raises(ValueError, match="ema_decay"):
        ConditionalGAN(["a", "b"], ema_decay=1.0)


def test_the_sample_grid_shows_real_photos_of_each_category_beside_generated_ones():
    from PIL import Image

    from visrec.generation.train import sample_grid
    from visrec.models.gan import ConditionalGAN

    gan = ConditionalGAN(["blue", "red"], latent_dim=8, resolution=32, width=8, seed=1)
    gan.build()
    red, blue = np.zeros((3, 16, 16, 3), np.uint8), np.zeros((1, 16, 16, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    real = (np.concatenate([red, blue]), ["red"] * 3 + ["blue"])
    grid = np.asarray(
        Image.open(io.BytesIO(sample_grid(gan, per_class=2, seed=5, real=real, real_per_class=2)))
    )
    generated = to_pixels(gan.generate(np.repeat([0, 1], 2), seed=5))
    assert grid.shape[0] == 2 * 32
    gen_width = 2 * 32
    label_width = grid.shape[1] - gen_width - 2 * 32 - 32 // 4
    assert label_width > 0  # the category's name is written on its row
    first_real = grid[:, label_width : label_width + 32]
    # Row 0 is "blue" (its one photo, resized, then a blank), row 1 "red" (two photos).
    assert (first_real[:32] == [0, 0, 255]).all() and (first_real[32:] == [255, 0, 0]).all()
    assert (grid[:32, label_width + 32 : label_width + 64] == 255).all()
    assert (grid[32:, label_width + 32 : label_width + 64] == [255, 0, 0]).all()
    # The generated images follow, row by row, as the generator draws them.
    np.testing.assert_array_equal(grid[:32, -gen_width:-32], generated[0])
    np.testing.assert_array_equal(grid[32:, -32:], generated[3])


@pytest.mark.backend
@pytest.mark.parametrize("loss", ["hinge", "non_saturating"])
def test_the_losses_are_the_named_functions_of_the_discriminators_outputs(loss, monkeypatch):
    import keras

    from visrec.models.gan import ConditionalGAN

    gan = ConditionalGAN(["a", "b"], latent_dim=8, resolution=32, width=8, seed=1, augment=False, loss=loss)
    gan.build()
    outputs = []
    call = gan.discriminator.call
    monkeypatch.setattr(
        gan.discriminator, "call", lambda *a, **k: outputs.append(call(*a, **k)) or outputs[-1]
    )
    rng = np.random.default_rng(0)
    images, labels = rng.uniform(-1, 1, (4, 32, 32, 3)).astype("float32"), np.array([0, 1, 1, 0])
    z = rng.normal(size=(4, 8)).astype("float32")
    d_loss = float(gan.discriminator_loss(images, labels, z))
    g_loss = float(gan.generator_loss(labels, z))
    (real, real_classes), (fake, _), (fake_for_g, fake_classes) = [
        [keras.ops.convert_to_numpy(t) for t in out] for out in outputs
    ]
    cce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    real_class_loss, fake_class_loss = float(cce(labels, real_classes)), float(cce(labels, fake_classes))
    if loss == "hinge":
        expected_d = np.maximum(1 - real, 0).mean() + np.maximum(1 + fake, 0).mean()
        expected_g = -fake_for_g.mean()
    else:
        bce = keras.losses.BinaryCrossentropy(from_logits=True)
        expected_d = float(bce(np.full_like(real, 0.9), real)) + float(bce(np.zeros_like(fake), fake))
        expected_g = float(bce(np.ones_like(fake_for_g), fake_for_g))
    assert d_loss == pytest.approx(expected_d + real_class_loss, rel=1e-4)
    assert g_loss == pytest.approx(expected_g + fake_class_loss, rel=1e-4)


@pytest.mark.backend
def test_a_hinge_gan_with_its_own_learning_rates_trains():
    import keras

    from visrec.models.gan import ConditionalGAN

    gan = ConditionalGAN(["a", "b"], latent_dim=8, resolution=32, width=8, seed=1, loss="hinge")
    gan.build()
    gan.compile(d_learning_rate=1e-4, g_learning_rate=4e-4)
    assert float(gan.d_optimizer.learning_rate) == pytest.approx(1e-4)
    assert float(gan.g_optimizer.learning_rate) == pytest.approx(4e-4)
    before = keras.ops.convert_to_numpy(gan.generator.weights[0])
    images = np.random.default_rng(0).uniform(-1, 1, (16, 32, 32, 3)).astype("float32")
    history = gan.fit(images, np.arange(16) % 2, batch_size=8, epochs=2, verbose=0).history
    assert np.isfinite(history["d_loss"]).all() and np.isfinite(history["g_loss"]).all()
    assert np.abs(keras.ops.convert_to_numpy(gan.generator.weights[0]) - before).max() > 0
    assert ConditionalGAN.from_config(gan.get_config()).loss == "hinge"
    with pytest.raises(ValueError, match="loss must be one of"):
        ConditionalGAN(["a", "b"], loss="wasserstein")


def test_a_lower_temperature_draws_less_varied_images_of_a_category(trained):
    _, _, result, _ = trained
    labels = np.zeros(32, np.int32)

    def spread(temperature: float) -> float:
        images = np.asarray(result.model.generate(labels, seed=2, temperature=temperature))
        return float(images.std(axis=0).mean())

    assert spread(0.001) < 0.05 * spread(1.0)
    assert spread(0.5) < spread(1.0)
    # The model's own temperature is the default, and travels with its config.
    result.model.temperature = 0.5
    try:
        assert np.allclose(
            result.model.generate(labels, seed=2), result.model.generate(labels, seed=2, temperature=0.5)
        )
        restored = type(result.model).from_config(result.model.get_config())
        assert restored.temperature == 0.5
    finally:
        result.model.temperature = 1.0


@pytest.mark.parametrize("temperature", [0.0, 1.5])
def test_a_temperature_outside_zero_to_one_is_refused(temperature):
    from visrec.models.gan import ConditionalGAN

    with pytest.raises(ValueError, match="temperature must be in"):
        ConditionalGAN(["a", "b"], temperature=temperature)


def test_the_sampling_temperature_is_a_setting_the_trained_model_keeps(tmp_path, monkeypatch):
    monkeypatch.setenv("VISREC_GAN_TEMPERATURE", "0.6")
    config = GANConfig.from_settings(Settings(home=tmp_path))
    assert config.temperature == 0.6
    monkeypatch.setenv("VISREC_GAN_TEMPERATURE", "1.2")
    with pytest.raises(ValueError, match="gan_temperature"):
        Settings(home=tmp_path)
