"""Image generation: train the conditional GAN, measure it, decide when it is due, generate looks.

Quality is measured every training, in the image model's embedding space:

- Frechet distance between generated and real embeddings, beside the real-vs-real floor (two disjoint
  halves of the real images): their ratio is 1 for a perfect generator and grows as it falls short;
- class consistency: how often the image model recognises the requested category in generated
  images, beside its accuracy on real images.

Generated looks (the DVBPR idea, Kang et al. 2017): for the most active users of each segment, sample
candidates in their favourite categories, keep those their visual preference scores highest (the
recommender's visual factors mapped into embedding space), store the images in the lake, and retrieve
the nearest real catalog items: table ``generated_looks``.
"""

from __future__ import annotations

import io
import json
import logging
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import date

import numpy as np
import pyarrow as pa

from visrec.budget import EpochBudget
from visrec.lake import Lake, check_ds
from visrec.settings import Settings
from visrec.tfdata import in_memory_batches

log = logging.getLogger(__name__)

MODEL_NAME = "visrec-gan"
MIN_PER_CLASS = 10  # generated images a category needs before its own consistency is reported
MISSED_BELOW = 0.5  # a category recognised in fewer than this share of its images is "mostly missed"


@dataclass
class GANConfig:
    """Training hyperparameters (defaults: the nightly run on a CPU)."""

    resolution: int = 64
    latent_dim: int = 64
    width: int = 32
    epochs: int = 60
    batch_size: int = 32  # twice the updates of 64 for the same images/s on a CPU
    label_smoothing: float = 0.1
    class_weight: float = 1.0  # the auxiliary classifier's loss beside the adversarial one
    augment: bool = True  # DiffAugment (translation, cutout) before the discriminator
    minibatch_kernels: int = 16  # same-category minibatch discrimination; 0 turns it off
    max_minutes: float | None = 10.0
    quality_samples: int = 512
    register: bool = True


@dataclass
class GANResult:
    model: object
    metrics: dict[str, float]
    class_names: list[str]
    version: str | None = None
    promoted: bool | None = None
    reason: str = ""
    consistency_by_class: dict[str, float] = field(default_factory=dict)


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
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    root = root.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def gan_quality(
    gan, cnn, real_pixels: np.ndarray, real_labels: list[str], n: int = 512, seed: int = 0
) -> tuple[dict[str, float], dict[str, float]]:
    """Frechet distances and class consistency of ``gan`` judged by the image model ``cnn``, and the
    consistency per category (categories requested at least ``MIN_PER_CLASS`` times): one overall
    figure hides a category the generator draws as another one."""
    from visrec.vision import embed_pixels

    rng = np.random.default_rng(seed)
    size = cnn.image_size
    names = list(gan.class_names)
    cnn_index = {c: k for k, c in enumerate(cnn.class_names)}
    usable = np.array([c in cnn_index and c in names for c in real_labels])
    real_pixels, labels = real_pixels[usable], np.array(real_labels)[usable]
    order = rng.permutation(len(real_pixels))
    half = len(order) // 2
    real_emb = embed_pixels(cnn, resize(real_pixels, size))
    floor = frechet_distance(real_emb[order[:half]], real_emb[order[half:]])
    # Generate in the real class mix, so the comparison is like for like.
    requested = rng.choice(labels, size=min(n, len(labels)), replace=True)
    generated = to_pixels(gan.generate(np.array([names.index(c) for c in requested]), seed=seed))
    generated = resize(generated, size)
    fake_emb = embed_pixels(cnn, generated)
    distance = frechet_distance(fake_emb, real_emb[order[: len(fake_emb)]])
    fake_pred = np.asarray(cnn.predict(generated, verbose=0)).argmax(1)
    real_pred = np.asarray(cnn.predict(resize(real_pixels, size), verbose=0)).argmax(1)
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
        "class_consistency": consistency,
        "cnn_accuracy_on_real": real_accuracy,
        "consistency_over_real_accuracy": consistency / max(real_accuracy, 1e-9),
        "class_consistency_lowest": min(by_class.values(), default=float("nan")),
        "classes_mostly_missed": float(sum(v < MISSED_BELOW for v in by_class.values())),
    }
    return metrics, by_class


def sample_grid(gan, per_class: int = 8, seed: int = 0, classes: list[int] | None = None) -> bytes:
    """A PNG with one row per category (every category, or the label indices in ``classes``)."""
    from PIL import Image

    rows = np.arange(len(gan.class_names)) if classes is None else np.asarray(classes)
    n = len(rows)
    labels = np.repeat(rows, per_class)
    images = to_pixels(gan.generate(labels, seed=seed))
    r = images.shape[1]
    grid = images.reshape(n, per_class, r, r, 3).transpose(0, 2, 1, 3, 4).reshape(n * r, per_class * r, 3)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, "PNG")
    return buf.getvalue()


def load_gan(uri: str = f"models:/{MODEL_NAME}@champion"):
    """Load a registered GAN; returns ``(gan, version)``."""
    import visrec.models.gan  # noqa: F401  (registers the custom classes with Keras)
    from visrec.registry import load_keras

    return load_keras(uri)


def train_gan(settings: Settings, ds: str, *, lake: Lake | None = None, config: GANConfig | None = None,
              cnn=None) -> GANResult:  # fmt: skip
    """Train the conditional GAN on ``ds``'s staged images; measure it with the image model (the
    champion unless ``cnn`` is given); log losses, a sample grid and the quality to MLflow; register
    it as ``visrec-gan`` (champion only if its Frechet ratio is no worse than the champion's)."""
    import keras

    import mlflow
    from visrec import registry
    from visrec.models.gan import ConditionalGAN
    from visrec.tracking import ensure_experiment, tracked_run
    from visrec.vision import load_cnn, load_staged_images

    config = config or GANConfig()
    lake = lake or Lake.from_settings(settings)
    images = load_staged_images(lake, ds)
    class_names = sorted(set(images.categories))
    labels = np.array([class_names.index(c) for c in images.categories], np.int32)
    keras.utils.set_random_seed(settings.seed)
    if config.register:
        ensure_experiment(settings)
    if cnn is None:
        cnn, _ = load_cnn()
    pixels = resize(images.pixels, config.resolution)
    gan = ConditionalGAN(class_names, latent_dim=config.latent_dim, resolution=config.resolution,
                         width=config.width, label_smoothing=config.label_smoothing,
                         class_weight=config.class_weight, augment=config.augment, seed=settings.seed,
                         minibatch_kernels=config.minibatch_kernels)  # fmt: skip
    gan.build()
    gan.compile()
    data = in_memory_batches(
        (to_unit(pixels), labels), config.batch_size, shuffle_seed=settings.seed, drop_remainder=True
    )
    history: dict[str, list[float]] = {"d_loss": [], "g_loss": []}
    budget = EpochBudget(config.max_minutes)

    class Budget(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            budget.start()

        def on_epoch_begin(self, epoch, logs=None):
            budget.epoch_started()

        def on_epoch_end(self, epoch, logs=None):
            budget.epoch_done()
            for key in history:
                history[key].append(float((logs or {}).get(key, np.nan)))
            if config.register:
                mlflow.log_metrics({k: history[k][-1] for k in history}, step=epoch)
            log.info(
                "gan epoch %d: d_loss %.3f g_loss %.3f",
                epoch + 1,
                history["d_loss"][-1],
                history["g_loss"][-1],
            )
            if not budget.another_fits():
                log.info("gan: stopping after epoch %d: another would pass the %.1f min budget", epoch + 1,
                         config.max_minutes)  # fmt: skip
                self.model.stop_training = True

    run = (
        tracked_run(settings, "train_gan", ds=ds, nested=mlflow.active_run() is not None)
        if config.register
        else None
    )
    with run if run is not None else nullcontext():
        if config.register:
            mlflow.log_params({**asdict(config), "n_images": len(labels), "n_classes": len(class_names)})
        started = time.perf_counter()
        gan.fit(data, epochs=config.epochs, verbose=0, callbacks=[Budget()])
        train_seconds = time.perf_counter() - started
        metrics, by_class = gan_quality(
            gan, cnn, images.pixels, images.categories, config.quality_samples, settings.seed
        )
        metrics.update(train_seconds=train_seconds, epochs_run=len(history["d_loss"]))
        result = GANResult(gan, metrics, class_names, consistency_by_class=by_class)
        if config.register:
            import mlflow.keras

            mlflow.log_metrics({k: v for k, v in metrics.items()})
            mlflow.log_dict(by_class, "class_consistency.json")
            mlflow.log_image(_png_array(sample_grid(gan)), "samples.png")
            info = mlflow.keras.log_model(gan, name="model", pip_requirements=["keras", "tensorflow-cpu"])
            current = registry.champion(MODEL_NAME)
            champion_ratio = None
            if current is not None:
                champion_ratio = mlflow.get_run(current.run_id).data.metrics.get("frechet_ratio")
            registration = registry.register(info.model_uri, MODEL_NAME, metric="frechet_ratio",
                                             value=metrics["frechet_ratio"], champion_value=champion_ratio,
                                             higher_is_better=False, tolerance=0.05)  # fmt: skip
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


def gan_due(settings: Settings, lake: Lake, ds: str) -> tuple[bool, str]:
    """Whether the nightly run should train the GAN on ``ds``: when there is no GAN yet, when the last
    training is ``VISREC_GAN_EVERY_DAYS`` or more days old, or when more than
    ``VISREC_GAN_CATALOG_CHANGE`` of the catalog is new since then. Otherwise generate with the champion."""
    check_ds(ds)
    trained = []
    for name in lake.list_dirs("runs"):
        key = f"runs/{name}/train_gan.json"
        if name.startswith("ds=") and name[3:] <= ds and lake.exists(key):
            summary = json.loads(lake.get_bytes(key))
            if summary.get("trained"):
                trained.append((name[3:], summary))
    if not trained:
        return True, "no GAN trained yet"
    last_ds, last = max(trained)
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


def generate_looks(settings: Settings, lake: Lake, ds: str, gan, cnn, gan_version: str, *,
                   users_per_segment: int = 5, candidates: int = 16, keep: int = 3, nearest: int = 5) -> pa.Table:  # fmt: skip
    """Generated looks for the most active users of each segment -> images under
    ``published/looks/ds=<ds>/`` and the ``generated_looks`` table."""
    from visrec.recsys import champion_scorer, item_embeddings
    from visrec.vision import embed_pixels, top_k_similar

    profiles = lake.read_table("user_profiles", ds).to_pandas()
    profiles["activity"] = profiles[["n_view", "n_click", "n_add_to_cart", "n_purchase"]].sum(axis=1)
    chosen = (profiles.sort_values(["activity", "user_id"], ascending=[False, True])
              .groupby("segment", sort=True).head(users_per_segment))  # fmt: skip
    item_ids, item_matrix, _ = item_embeddings(lake, ds)
    scorer = champion_scorer(settings)
    preference = _visual_preferences(scorer, lake, ds, list(chosen["user_id"]), item_ids, item_matrix)
    names = list(gan.class_names)
    lake.delete(f"published/looks/ds={ds}")
    rng_seed = settings.seed
    out: dict[str, list] = {k: [] for k in ("user_id", "rank", "image_uri", "category", "preference_score",
                                            "nearest_item_ids", "nearest_scores")}  # fmt: skip
    for n, row in enumerate(chosen.itertuples()):
        top = [] if row.top_categories is None else list(row.top_categories)
        favourites = [c["category"] for c in top if c["category"] in names][:2]
        if not favourites:
            continue
        labels = np.repeat([names.index(c) for c in favourites], candidates)
        pixels = resize(to_pixels(gan.generate(labels, seed=rng_seed + n)), cnn.image_size)
        emb = embed_pixels(cnn, pixels)
        scores = emb @ preference[row.user_id]
        best = np.argsort(-scores)[:keep]
        idx, sims = top_k_similar(emb[best], item_matrix, nearest)
        for rank, b in enumerate(best, 1):
            key = f"published/looks/ds={ds}/{row.user_id}/{rank}.png"
            lake.put_bytes(key, _png(pixels[b]))
            for name, value in zip(out, (row.user_id, rank, lake.url(key), names[labels[b]], float(scores[b]),
                                         [item_ids[j] for j in idx[rank - 1]],
                                         [float(s) for s in sims[rank - 1]]), strict=True):  # fmt: skip
                out[name].append(value)
    table = pa.table({**out, "rank": pa.array(out["rank"], pa.int16()),
                      "preference_score": pa.array(out["preference_score"], pa.float32()),
                      "nearest_scores": pa.array(out["nearest_scores"], pa.list_(pa.float32()))})  # fmt: skip
    lake.write_table("generated_looks", ds, table)
    log.info(
        "generated looks %s with %s: %d users, %d looks",
        ds,
        gan_version,
        len(set(out["user_id"])),
        table.num_rows,
    )
    return table


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def _visual_preferences(scorer, lake: Lake, ds: str, users: list[str], item_ids: list[str],
                        item_matrix: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
    """Each user's visual preference as a direction in embedding space: the champion recommender's
    visual factors mapped back through its projection (VBPR: theta_u E + beta'), or, for a user it does
    not know, the mean embedding of the items they interacted with."""
    out: dict[str, np.ndarray] = {}
    known = {}
    if scorer is not None and getattr(scorer, "visual_preference", None) is not None:
        known = {u: k for k, u in enumerate(scorer.user_ids)}
    interactions = (
        lake.read_table("interactions", ds).select(["user_id", "item_id", "confidence"]).to_pandas()
    )
    position = {i: k for k, i in enumerate(item_ids)}
    for user in users:
        if user in known:
            out[user] = scorer.visual_preference[known[user]]
            continue
        mine = interactions[(interactions["user_id"] == user) & interactions["item_id"].isin(position)]
        if mine.empty:
            out[user] = item_matrix.mean(0)
        else:
            weights = mine["confidence"].to_numpy()[:, None]
            out[user] = (item_matrix[mine["item_id"].map(position).to_numpy()] * weights).sum(
                0
            ) / weights.sum()
    return out
