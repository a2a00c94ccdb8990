"""Image generation: train the conditional GAN, measure it, decide when it is due.

Quality is measured every training, in the image model's embedding space:

- Frechet distance between generated and real embeddings, beside the real-vs-real floor (two disjoint
  sets of real images, each the size of the generated set): their ratio is about 1 for a perfect
  generator and grows as it falls short;
- class consistency: how often the image model recognises the requested category in generated
  images, beside its accuracy on real images.
"""

from __future__ import annotations

import io
import logging
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import numpy as np

from visrec.mlops import registry
from visrec.mlops.registry import load_keras, model_uri
from visrec.mlops.tracking import tracked_run, use_tracking
from visrec.models.tfdata import in_memory_batches
from visrec.settings import Settings
from visrec.store.lake import Lake, check_ds
from visrec.store.runs import Summary
from visrec.store.tables import load_staged_images
from visrec.vision.embed import embed_kinds, load_cnn

log = logging.getLogger(__name__)

MODEL_NAME = "visrec-gan"


MIN_PER_CLASS = 10  # generated images a category needs before its own consistency is reported


MISSED_BELOW = 0.5  # a category recognised in fewer than this share of its images is "mostly missed"


@dataclass
class GANConfig:
    """Training hyperparameters (defaults: the nightly run on a CPU). Its epochs and budget are
    operational settings (``VISREC_GAN_EPOCHS``, ``VISREC_GAN_MINUTES``): build it with
    :meth:`from_settings`."""

    epochs: int
    max_minutes: float | None  # training budget (None: none)
    resolution: int = 64
    latent_dim: int = 64
    width: int = 32
    batch_size: int = 32  # twice the updates of 64 for the same images/s on a CPU
    label_smoothing: float = 0.1
    class_weight: float = 1.0  # the auxiliary classifier's loss beside the adversarial one
    augment: bool = True  # DiffAugment (translation, cutout) before the discriminator
    minibatch_kernels: int = 16  # same-category minibatch discrimination; 0 turns it off
    ema_decay: float = 0.999  # the generator that draws is this moving average of its weights; 0: none
    loss: str = "non_saturating"  # or "hinge"
    temperature: float = 1.0  # the latents' scale when it draws (below 1: the truncation trick)
    d_learning_rate: float = 2e-4
    g_learning_rate: float = 2e-4
    quality_samples: int = 512
    register: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> GANConfig:
        """The nightly run's config: epochs and budget from ``settings``, ``overrides`` on top."""
        return cls(
            **{
                "epochs": settings.gan_epochs,
                "max_minutes": settings.gan_max_minutes,
                "ema_decay": settings.gan_ema_decay,
                "temperature": settings.gan_temperature,
                **overrides,
            }
        )


@dataclass
class GANResult:
    model: object
    metrics: dict[str, float]
    class_names: list[str]
    version: str | None = None
    promoted: bool | None = None
    reason: str = ""
    consistency_by_class: dict[str, float] = field(default_factory=dict)
    samples: bytes = b""  # PNG: per category, real photos beside generated images (see sample_grid)


def to_unit(pixels: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return pixels.astype(np.float32) / 127.5 - 1.0


def to_pixels(images) -> np.ndarray:
    """[-1, 1] -> uint8."""
    return np.clip((np.asarray(images) + 1.0) * 127.5, 0, 255).round().astype(np.uint8)


def resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """Square uint8 images to ``size`` (the image model's input)."""
    if pixels.shape[1] == size:
        return pixels
    import tensorflow as tf

    return tf.cast(tf.round(tf.image.resize(pixels, (size, size), "bilinear")), tf.uint8).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two sets of embeddings (rows)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr(sqrt(A B)) from the eigenvalues of the symmetric sqrt(A) B sqrt(A), which are those of A B:
    # no complex round-off, as a general matrix square root has.
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


@dataclass
class JudgedReal:
    """The image model's view of the real images of the categories a GAN draws: what every
    :func:`gan_quality` of one catalog, judge and GAN categories shares (a catalog is embedded once,
    not once per sample set judged)."""

    labels: np.ndarray  # each usable image's category
    embeddings: dict[str, np.ndarray]  # embed_kinds of the images, at the judge's size
    predicted: np.ndarray  # the judge's predicted class index of each


def judge_real(cnn, real_pixels: np.ndarray, real_labels: list[str], class_names: list[str]) -> JudgedReal:
    """:class:`JudgedReal` of the images whose category both the judge ``cnn`` and a GAN of
    ``class_names`` know."""
    known, drawn = set(cnn.class_names), set(class_names)
    usable = np.array([c in known and c in drawn for c in real_labels], bool)
    pixels = resize(real_pixels[usable], cnn.image_size)
    predicted = np.asarray(cnn.predict(pixels, verbose=0)).argmax(1)
    return JudgedReal(np.array(real_labels)[usable], embed_kinds(cnn, pixels), predicted)


def gan_quality(
    gan,
    cnn,
    real_pixels: np.ndarray,
    real_labels: list[str],
    n: int = 512,
    seed: int = 0,
    temperature: float | None = None,
    real: JudgedReal | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Frechet distances and class consistency of ``gan`` judged by the image model ``cnn``, and the
    consistency per category (categories requested at least ``MIN_PER_CLASS`` times): one overall
    figure hides a category the generator draws as another one. Samples are drawn at ``temperature``
    (the model's own unless given). ``real``: the real images already judged (:func:`judge_real` of
    ``real_pixels``), when several sample sets are judged against one catalog."""

    real = real or judge_real(cnn, real_pixels, real_labels, list(gan.class_names))
    rng = np.random.default_rng(seed)
    size = cnn.image_size
    names = list(gan.class_names)
    cnn_index = {c: k for k, c in enumerate(cnn.class_names)}
    labels = real.labels
    order = rng.permutation(len(labels))
    half = len(order) // 2
    # Generate in the real class mix, so the comparison is like for like.
    requested = rng.choice(labels, size=min(n, len(labels)), replace=True)
    asked = np.array([names.index(c) for c in requested])
    generated = to_pixels(gan.generate(asked, seed=seed, temperature=temperature))
    generated = resize(generated, size)
    # The gate's distance is in the classifier's embedding (how like real images of their category the
    # generated ones look); the retrieval embedding's (instance-level) is logged beside it.
    real_by_kind, fake_by_kind = real.embeddings, embed_kinds(cnn, generated)
    ratios = {}
    for kind in ("classifier", "retrieval"):
        if kind in real_by_kind:
            real_emb, fake_emb = real_by_kind[kind], fake_by_kind[kind]
            # Both distances at one sample size: an estimate's bias grows as its samples shrink, and
            # a floor from two halves of a large catalog sits far below what even real images score
            # at the generated set's size (a perfect generator's ratio would not be 1).
            compared = min(len(fake_emb), half)
            sample = real_emb[order[:compared]]
            real_floor = frechet_distance(sample, real_emb[order[half : half + compared]])
            ratios[kind] = (frechet_distance(fake_emb[:compared], sample), real_floor)
    distance, floor = ratios["classifier"]
    fake_pred = np.asarray(cnn.predict(generated, verbose=0)).argmax(1)
    real_pred = real.predicted
    hits = fake_pred == np.array([cnn_index[c] for c in requested])
    consistency = float(np.mean(hits))
    real_accuracy = float(np.mean(real_pred == np.array([cnn_index[c] for c in labels])))
    by_class = {
        str(c): float(hits[requested == c].mean())
        for c in sorted(set(requested))
        if (requested == c).sum() >= MIN_PER_CLASS
    }
    metrics = {
        "frechet_distance": distance,
        "frechet_real_vs_real": floor,
        "frechet_ratio": distance / max(floor, 1e-9),
        **{
            f"frechet_ratio_{kind}": d / max(f, 1e-9)
            for kind, (d, f) in ratios.items()
            if kind != "classifier"
        },
        "class_consistency": consistency,
        "cnn_accuracy_on_real": real_accuracy,
        "consistency_over_real_accuracy": consistency / max(real_accuracy, 1e-9),
        "class_consistency_lowest": min(by_class.values(), default=float("nan")),
        "classes_mostly_missed": float(sum(v < MISSED_BELOW for v in by_class.values())),
    }
    return metrics, by_class


def sample_grid(
    gan,
    per_class: int = 8,
    seed: int = 0,
    classes: list[int] | None = None,
    real: tuple[np.ndarray, list[str]] | None = None,
    real_per_class: int = 4,
) -> bytes:
    """A PNG with one row per category (every category, or the label indices in ``classes``): its
    name, then with ``real`` (uint8 photos and their categories) ``real_per_class`` real photos of it,
    a gap, and ``per_class`` generated images, so a reader judges the generator against the catalog."""
    from PIL import Image, ImageDraw

    rows = np.arange(len(gan.class_names)) if classes is None else np.asarray(classes)
    n = len(rows)
    generated = to_pixels(gan.generate(np.repeat(rows, per_class), seed=seed))
    r = generated.shape[1]
    blocks = [generated.reshape(n, per_class, r, r, 3)]
    if real is not None:
        pixels, categories = real
        categories = np.asarray(categories)
        rng = np.random.default_rng(seed)
        shown = np.full((n, real_per_class, r, r, 3), 255, np.uint8)  # white where a category has fewer
        for row, label in enumerate(rows):
            found = np.flatnonzero(categories == gan.class_names[label])
            picked = rng.choice(found, size=min(real_per_class, len(found)), replace=False)
            if len(picked):
                shown[row, : len(picked)] = resize(pixels[np.sort(picked)], r)
        gap = np.full((n, 1, r, r // 4, 3), 255, np.uint8)
        blocks = [shown, gap, blocks[0]]
    names = [gan.class_names[k] for k in rows]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = int(max(measure.textlength(name) for name in names)) + 8 if real is not None else 0
    width = label_width + sum(b.shape[1] * b.shape[3] for b in blocks)
    grid = np.full((n * r, width, 3), 255, np.uint8)
    x = label_width
    for block in blocks:
        w = block.shape[1] * block.shape[3]
        grid[:, x : x + w] = block.transpose(0, 2, 1, 3, 4).reshape(n * r, w, 3)
        x += w
    image = Image.fromarray(grid)
    if label_width:
        draw = ImageDraw.Draw(image)
        for row, name in enumerate(names):
            draw.text((4, row * r + r // 2 - 5), name, fill=(0, 0, 0))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def load_gan(version: str | None = None):
    """Load a registered GAN (``version`` like ``visrec-gan/2``, the champion without one); returns
    ``(gan, version)``."""
    import visrec.models.gan  # noqa: F401  (registers the custom classes with Keras)

    return load_keras(model_uri(MODEL_NAME, version))


def train_gan(
    settings: Settings, ds: str, *, lake: Lake | None = None, config: GANConfig | None = None, cnn=None
) -> GANResult:
    """Train the conditional GAN on ``ds``'s staged images; measure it with the image model (the
    champion unless ``cnn`` is given); log losses, a sample grid and the quality to MLflow; register
    it as ``visrec-gan`` (champion only if its Frechet ratio is no worse than the champion's)."""
    import keras

    import mlflow
    from visrec.mlops.callbacks import EpochReport
    from visrec.models.callbacks import TimeBudget
    from visrec.models.gan import ConditionalGAN

    config = config or GANConfig.from_settings(settings)
    lake = lake or Lake.from_settings(settings)
    images = load_staged_images(lake, ds)
    class_names = sorted(set(images.categories))
    labels = np.array([class_names.index(c) for c in images.categories], np.int32)
    keras.utils.set_random_seed(settings.seed)
    if config.register:
        use_tracking(settings)
    if cnn is None:
        cnn, _ = load_cnn()
    pixels = resize(images.pixels, config.resolution)
    gan = ConditionalGAN(
        class_names,
        latent_dim=config.latent_dim,
        resolution=config.resolution,
        width=config.width,
        label_smoothing=config.label_smoothing,
        class_weight=config.class_weight,
        augment=config.augment,
        seed=settings.seed,
        minibatch_kernels=config.minibatch_kernels,
        ema_decay=config.ema_decay,
        loss=config.loss,
        temperature=config.temperature,
    )
    gan.build()
    gan.compile(d_learning_rate=config.d_learning_rate, g_learning_rate=config.g_learning_rate)
    data = in_memory_batches(
        (to_unit(pixels), labels), config.batch_size, shuffle_seed=settings.seed, drop_remainder=True
    )
    run = (
        tracked_run(settings, "gan training", ds=ds, nested=mlflow.active_run() is not None, training=True)
        if config.register
        else None
    )
    with run if run is not None else nullcontext():
        if config.register:
            mlflow.log_params({**asdict(config), "n_images": len(labels), "n_classes": len(class_names)})
        started = time.perf_counter()
        report = EpochReport("gan", config.epochs)
        gan.fit(
            data, epochs=config.epochs, verbose=0, callbacks=[TimeBudget(config.max_minutes, "gan"), report]
        )
        train_seconds = time.perf_counter() - started
        metrics, by_class = gan_quality(
            gan, cnn, images.pixels, images.categories, config.quality_samples, settings.seed
        )
        metrics.update(train_seconds=train_seconds, epochs_run=len(report.history))
        samples = sample_grid(gan, seed=settings.seed, real=(images.pixels, images.categories))
        result = GANResult(gan, metrics, class_names, consistency_by_class=by_class, samples=samples)
        if config.register:
            import mlflow.keras

            mlflow.log_metrics({k: v for k, v in metrics.items()})
            mlflow.log_dict(by_class, "class_consistency.json")
            mlflow.log_image(_png_array(samples), "samples.png")
            example = {"z": np.zeros((1, config.latent_dim), np.float32), "labels": np.array([0], np.int32)}
            model_uri = registry.log_keras_model(
                gan,
                example,
                np.asarray(gan((example["z"], example["labels"]))),
                pip_requirements=["keras", "tensorflow-cpu"],
            )
            current = registry.champion(MODEL_NAME)
            champion_ratio = None
            if current is not None:
                champion_ratio = mlflow.get_run(current.run_id).data.metrics.get("frechet_ratio")
            registration = registry.register(
                model_uri,
                MODEL_NAME,
                metric="frechet_ratio",
                value=metrics["frechet_ratio"],
                champion_value=champion_ratio,
                higher_is_better=False,
                tolerance=0.05,
            )
            result.version = f"{MODEL_NAME}/{registration.version}"
            result.promoted, result.reason = registration.promoted, registration.reason
    log.info("gan %s: %s", ds, {k: round(v, 4) for k, v in metrics.items()})
    missed = sorted(c for c, v in by_class.items() if v < MISSED_BELOW)
    if missed:
        log.info("gan %s: recognised in fewer than half of their images: %s", ds, ", ".join(missed))
    return result


def _png_array(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def gan_due(
    settings: Settings, lake: Lake, ds: str, last_trained: tuple[str, Summary] | None
) -> tuple[bool, str]:
    """Whether the nightly run should train the GAN on ``ds``, given the last training's (date, run
    record) at or before ``ds``: when there is no GAN yet, when the last training is
    ``VISREC_GAN_EVERY_DAYS`` or more days old, or when more than ``VISREC_GAN_CATALOG_CHANGE`` of the
    catalog is new since then. Otherwise generate with the champion."""
    check_ds(ds)
    if last_trained is None:
        return True, "no GAN trained yet"
    last_ds, last = last_trained
    age = (date.fromisoformat(ds) - date.fromisoformat(last_ds)).days
    if age == 0:
        return False, f"trained for {ds} already ({last.get('version')})"
    if age >= settings.gan_every_days:
        return True, f"last trained {age} days ago (every {settings.gan_every_days} days)"
    staged = set(lake.read_table("staging_images", ds).column("item_id").to_pylist())
    before = set(last.get("items", []))
    changed = len(staged - before) / max(len(staged), 1)
    if changed > settings.gan_catalog_change:
        return (
            True,
            f"{changed:.0%} of the catalog is new since {last_ds} (threshold {settings.gan_catalog_change:.0%})",
        )
    return (
        False,
        f"last trained {age} days ago, {changed:.0%} of the catalog new: generating with the champion",
    )
