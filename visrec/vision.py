"""Training and using the image model: staged images -> CNN -> embeddings -> similar items / photo query.

``train_cnn`` trains on a day's ``staging_images`` with a stratified held-out split and early stopping,
logs params, per-epoch metrics and a confusion matrix to MLflow, and registers the model as
``visrec-cnn`` (champion only if it is at least as accurate as the current champion on the same
held-out images). When the category set is unchanged, it fine-tunes the champion instead of starting
over.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
from PIL import Image

from visrec.budget import EpochBudget
from visrec.lake import Lake
from visrec.settings import Settings
from visrec.tfdata import in_memory_batches

log = logging.getLogger(__name__)
MODEL_NAME = "visrec-cnn"


@dataclass
class StagedImages:
    """A day's staged catalog images in memory."""

    item_ids: list[str]
    categories: list[str]
    pixels: np.ndarray  # (n, size, size, 3) uint8


def decode_pngs(pngs: list[bytes]) -> np.ndarray:
    """PNG bytes -> one uint8 array (n, h, w, 3), decoded on all cores."""

    def one(data: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    with ThreadPoolExecutor() as pool:
        arrays = list(pool.map(one, pngs, chunksize=256))
    return np.stack(arrays) if arrays else np.zeros((0, 1, 1, 3), np.uint8)


def load_staged_images(lake: Lake, ds: str) -> StagedImages:
    """Read and decode the ``staging_images`` partition of ``ds``."""
    table = lake.read_table("staging_images", ds).sort_by("item_id")
    return StagedImages(
        item_ids=table.column("item_id").to_pylist(),
        categories=table.column("category").to_pylist(),
        pixels=decode_pngs(table.column("image_png").to_pylist()),
    )


def stratified_split(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held_out): ``share`` of each class held out; classes of one go to train."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_held = int(round(len(idx) * share)) if len(idx) > 1 else 0
        held.append(idx[:n_held])
        train.append(idx[n_held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


@dataclass
class CNNConfig:
    """Training hyperparameters of the image model (defaults: the nightly run on a CPU)."""

    epochs: int = 30
    fine_tune_epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 3e-3
    width: int = 32
    dropout: float = 0.25
    label_smoothing: float = 0.1
    held_out_share: float = 0.2
    patience: int = 10  # scored epochs without a better held-out accuracy before stopping
    validate_from: float = 0.5  # score the held-out images once training is this far along
    max_minutes: float | None = 20.0  # stop after this much training time, keeping the best epoch
    mixed_precision: bool = False  # float16 compute: worth it on a GPU only
    backbone: str = "compact"
    backbone_weights: str | None = None
    fine_tune: bool = True  # start from the champion when its categories are the same
    register: bool = True


@dataclass
class CNNResult:
    """What ``train_cnn`` produced."""

    model: object
    metrics: dict[str, float]
    class_names: list[str]
    held_out: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray
    version: str | None = None
    promoted: bool | None = None
    reason: str = ""
    fine_tuned_from: str | None = None
    history: dict = field(default_factory=dict)


def _epoch_logger(*args, **kwargs):
    """Keras callback: per-epoch metrics to MLflow and the log, a time-aware schedule, and
    early stopping on the held-out accuracy."""
    import keras

    class EpochLogger(keras.callbacks.Callback):
        """Cosine learning-rate decay over the training's progress, where progress is the larger
        of epochs done / epochs and time spent / time budget: a run stopped by its budget still
        ends at a small learning rate instead of being cut off mid-schedule. Training stops before
        an epoch that would not finish within the budget.

        The held-out images are scored once progress reaches ``validate_from`` (and after the last
        epoch), and the best-scoring epoch's weights are kept: with the learning rate decaying to
        the end, the best epoch comes late, while scoring the held-out images after every epoch
        (two forward passes each, with flip averaging) took about a tenth of the training time.
        Training also stops after ``patience`` scored epochs without improvement."""

        def __init__(
            self,
            max_minutes: float | None,
            progress: Callable | None,
            epochs: int,
            learning_rate: float,
            held_out=None,
            validate_from: float = 0.5,
            patience: int = 10,
        ):
            super().__init__()
            self.budget = EpochBudget(max_minutes)
            self.progress = progress
            self.epochs = epochs
            self.base_lr = learning_rate
            self.held_out, self.validate_from, self.patience = held_out, validate_from, patience
            self.best_accuracy, self.best_epoch, self.best_weights, self.wait = -1.0, None, None, 0

        def _fraction(self, epoch: int) -> float:
            by_epochs = (epoch + 0.5) / self.epochs
            if not self.budget.max_seconds or not self.budget.last_epoch:
                return by_epochs
            return max(
                by_epochs, (self.budget.elapsed() + 0.5 * self.budget.last_epoch) / self.budget.max_seconds
            )

        def _validate(self, epoch: int, logs: dict) -> None:
            scores = self.model.evaluate(self.held_out, verbose=0, return_dict=True)
            logs.update({f"val_{k}": float(v) for k, v in scores.items()})
            if logs["val_accuracy"] > self.best_accuracy:
                self.best_accuracy, self.best_epoch, self.wait = logs["val_accuracy"], epoch, 0
                self.best_weights = self.model.get_weights()
            else:
                self.wait += 1
                if self.wait >= self.patience:
                    log.info("cnn: stopping after epoch %d: no better held-out accuracy in %d scored epochs",
                             epoch + 1, self.patience)  # fmt: skip
                    self.model.stop_training = True

        def on_train_begin(self, logs=None):
            self.budget.start()

        def on_epoch_begin(self, epoch, logs=None):
            self.budget.epoch_started()
            fraction = min(self._fraction(epoch), 1.0)
            lr = self.base_lr * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * fraction)))
            self.model.optimizer.learning_rate.assign(lr)

        def on_epoch_end(self, epoch, logs=None):
            import mlflow

            # In place: Keras's History (and so CNNResult.history) reads the same dict after us.
            logs = logs if logs is not None else {}
            logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())
            done = max((epoch + 1) / self.epochs, self.budget.fraction_spent())
            validated = self.held_out is not None and done >= self.validate_from
            if validated:
                self._validate(epoch, logs)
            self.budget.epoch_done()
            over_budget = not self.budget.another_fits()
            if over_budget and self.held_out is not None and not validated:
                self._validate(epoch, logs)  # a budget too short to reach validate_from
            record = {k: float(v) for k, v in logs.items()}
            if mlflow.active_run():
                mlflow.log_metrics(record, step=epoch)
            log.info("cnn epoch %d: %s", epoch + 1, " ".join(f"{k}={v:.4g}" for k, v in record.items()))
            if self.progress:
                self.progress("cnn epochs", epoch + 1, self.epochs)
            if over_budget:
                log.info("cnn: stopping after epoch %d: another would pass the %.1f min budget", epoch + 1,
                         self.budget.max_seconds / 60)  # fmt: skip
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)
                log.info(
                    "cnn: kept epoch %d (held-out accuracy %.4f)", self.best_epoch + 1, self.best_accuracy
                )

    return EpochLogger(*args, **kwargs)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, n), np.int64)
    np.add.at(out, (labels, predictions), 1)
    return out


def _confusion_figure(matrix: np.ndarray, names: list[str]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.12 * len(names), 20)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rows, cmap="viridis", vmin=0, vmax=1)
    ticks = np.arange(len(names))
    fontsize = 8 if len(names) <= 30 else 4
    ax.set_xticks(ticks, names, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, names, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("held-out confusion matrix (row-normalised)")
    fig.tight_layout()
    return fig


def load_cnn(uri: str = f"models:/{MODEL_NAME}@champion"):
    """Load a registered image model; returns ``(model, version)``."""
    import visrec.models.cnn  # noqa: F401  (registers the custom class with Keras)
    from visrec.registry import load_keras

    return load_keras(uri)


def train_cnn(
    settings: Settings,
    ds: str,
    *,
    lake: Lake | None = None,
    config: CNNConfig | None = None,
    images: StagedImages | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> CNNResult:
    """Train (or fine-tune) the image model on ``ds``'s staged images; track and register it."""
    import keras
    import mlflow.keras

    import mlflow
    from visrec import registry
    from visrec.models.cnn import ImageClassifier
    from visrec.tracking import tracked_run

    config = config or CNNConfig()
    lake = lake or Lake.from_settings(settings)
    images = images or load_staged_images(lake, ds)
    class_names = sorted(set(images.categories))
    if len(class_names) < 2:
        raise ValueError(
            f"staging_images of {ds} has {len(class_names)} category; a classifier needs 2 or more"
        )
    index = {c: k for k, c in enumerate(class_names)}
    labels = np.array([index[c] for c in images.categories], np.int32)
    train_idx, held_idx = stratified_split(labels, config.held_out_share, settings.seed)
    keras.utils.set_random_seed(settings.seed)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")

    model, base_version, champion_accuracy = None, None, None
    if config.register:
        from visrec.tracking import ensure_experiment

        ensure_experiment(settings)  # sets the tracking URI
        current = registry.champion(MODEL_NAME)
        if current is not None:
            champion_model, base_version = load_cnn(f"models:/{MODEL_NAME}/{current.version}")
            base_version = f"{MODEL_NAME}/{current.version}"
            if list(champion_model.class_names) == class_names:
                probs = champion_model.predict(in_memory_batches(images.pixels[held_idx], 256), verbose=0)
                champion_accuracy = float(np.mean(probs.argmax(1) == labels[held_idx]))
                if config.fine_tune:
                    model = champion_model
    epochs = config.epochs
    learning_rate = config.learning_rate
    if model is None:
        base_version = None
        model = ImageClassifier(
            class_names,
            image_size=images.pixels.shape[1],
            width=config.width,
            dropout=config.dropout,
            backbone=config.backbone,
            backbone_weights=config.backbone_weights,
        )
    else:
        epochs, learning_rate = config.fine_tune_epochs, config.learning_rate / 5
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=1e-4),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy", keras.metrics.TopKCategoricalAccuracy(5, name="top5")],
    )
    one_hot = np.eye(len(class_names), dtype=np.float32)[labels]
    train_ds = in_memory_batches(
        (images.pixels[train_idx], one_hot[train_idx]), config.batch_size, shuffle_seed=settings.seed
    )
    held_ds = in_memory_batches((images.pixels[held_idx], one_hot[held_idx]), 256)
    nested = mlflow.active_run() is not None if config.register else False
    run_ctx = tracked_run(settings, "train_cnn", ds=ds, nested=nested) if config.register else nullcontext()
    with run_ctx:
        if config.register:
            mlflow.log_params(
                {
                    **asdict(config),
                    "n_train": len(train_idx),
                    "n_held_out": len(held_idx),
                    "n_classes": len(class_names),
                    "image_size": images.pixels.shape[1],
                    "fine_tuned_from": base_version or "",
                    "effective_epochs": epochs,
                    "effective_learning_rate": learning_rate,
                }
            )
        started = time.perf_counter()
        history = model.fit(
            train_ds,
            epochs=epochs,
            verbose=0,
            callbacks=[
                _epoch_logger(
                    config.max_minutes,
                    progress,
                    epochs,
                    learning_rate,
                    held_ds if len(held_idx) else None,
                    config.validate_from,
                    config.patience,
                )
            ],
        )
        train_seconds = time.perf_counter() - started
        probs = model.predict(in_memory_batches(images.pixels[held_idx], 256), verbose=0)
        predictions = probs.argmax(1)
        held_labels = labels[held_idx]
        top5 = np.argsort(-probs, axis=1)[:, :5]
        metrics = {
            "held_out_accuracy": float(np.mean(predictions == held_labels)),
            "held_out_top5_accuracy": float(np.mean((top5 == held_labels[:, None]).any(1))),
            "majority_class_accuracy": float(np.bincount(held_labels).max() / max(len(held_labels), 1)),
            "train_seconds": train_seconds,
            "epochs_run": len(history.history.get("loss", [])),
        }
        result = CNNResult(
            model,
            metrics,
            class_names,
            held_idx,
            predictions,
            held_labels,
            fine_tuned_from=base_version,
            history=history.history,
        )
        if config.register:
            mlflow.log_metrics(metrics)
            if champion_accuracy is not None:
                mlflow.log_metric("champion_held_out_accuracy", champion_accuracy)
            matrix = confusion_matrix(held_labels, predictions, len(class_names))
            fig = _confusion_figure(matrix, class_names)
            mlflow.log_figure(fig, "confusion_matrix.png")
            import matplotlib.pyplot as plt

            plt.close(fig)
            info = mlflow.keras.log_model(model, name="model", pip_requirements=_requirements())
            registration = registry.register(
                info.model_uri,
                MODEL_NAME,
                metric="held_out_accuracy",
                value=metrics["held_out_accuracy"],
                champion_value=champion_accuracy,
                tolerance=0.005,
            )
            result.version = f"{MODEL_NAME}/{registration.version}"
            result.promoted, result.reason = registration.promoted, registration.reason
    log.info("cnn %s: %s", ds, {k: round(v, 4) for k, v in metrics.items()})
    return result


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("keras", "tensorflow-cpu", "numpy", "pillow")]


def embed_pixels(model, pixels: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """L2-normalised embeddings (n, d) float32 of uint8 images, batched through tf.data."""
    import tensorflow as tf

    if len(pixels) == 0:
        return np.zeros((0, model.embedding_dim), np.float32)
    ds = in_memory_batches(pixels, batch_size)
    embed = tf.function(lambda x: model.embed(x), reduce_retracing=True)
    return np.concatenate([embed(batch).numpy() for batch in ds]).astype(np.float32)


def top_k_similar(
    queries: np.ndarray, items: np.ndarray, k: int, exclude_self: bool = False, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-``k`` of each query among ``items`` (both L2-normalised), in chunks of
    queries so memory stays at ``chunk x n_items`` scores. Returns (indices, scores), best first.
    With ``exclude_self``, query ``i`` is item ``i`` and never its own neighbour."""
    import tensorflow as tf

    k = min(k, len(items) - (1 if exclude_self else 0))
    all_idx, all_scores = [], []
    items_t = tf.constant(items, tf.float32)
    for start in range(0, len(queries), chunk):
        q = tf.constant(queries[start : start + chunk], tf.float32)
        scores = tf.matmul(q, items_t, transpose_b=True)
        if exclude_self:
            rows = tf.range(tf.shape(q)[0])
            mask = tf.one_hot(rows + start, len(items), on_value=-np.inf, off_value=0.0)
            scores = scores + mask
        values, idx = tf.math.top_k(scores, k=k)
        all_idx.append(idx.numpy())
        all_scores.append(values.numpy())
    if not all_idx:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    return np.concatenate(all_idx), np.concatenate(all_scores)


def embed_items(
    settings: Settings, ds: str, lake: Lake, model, model_version: str, images: StagedImages | None = None
) -> pa.Table:
    """Embed every staged item of ``ds`` into ``item_embeddings``; returns the table written."""
    images = images or load_staged_images(lake, ds)
    emb = embed_pixels(model, images.pixels)
    table = pa.table(
        {
            "item_id": images.item_ids,
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(emb.reshape(-1), pa.float32()), emb.shape[1]
            ),
            "model_version": [model_version] * len(images.item_ids),
        }
    )
    lake.write_table("item_embeddings", ds, table)
    log.info("embedded %d items with %s (%d dims)", len(images.item_ids), model_version, emb.shape[1])
    return table


def embeddings_matrix(table: pa.Table) -> np.ndarray:
    """The ``embedding`` column of an ``item_embeddings`` table as an (n, d) float32 array."""
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    return column.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)


def build_similar_items(lake: Lake, ds: str, k: int = 10) -> pa.Table:
    """Exact top-``k`` neighbours of every item in ``ds``'s embeddings -> ``similar_items``."""
    table = lake.read_table("item_embeddings", ds)
    ids = table.column("item_id").to_pylist()
    idx, scores = top_k_similar(embeddings_matrix(table), embeddings_matrix(table), k, exclude_self=True)
    kk = idx.shape[1] if len(ids) else 0
    out = pa.table(
        {
            "item_id": np.repeat(np.array(ids, dtype=object), kk).tolist(),
            "rank": np.tile(np.arange(1, kk + 1, dtype=np.int16), len(ids)),
            "similar_item_id": [ids[j] for j in idx.reshape(-1)],
            "score": scores.reshape(-1).astype(np.float32),
        }
    )
    lake.write_table("similar_items", ds, out)
    return out


@dataclass
class PhotoMatch:
    """A catalog item found for a photo."""

    item_id: str
    score: float
    category: str


def latest_partition(lake: Lake, table: str, ds: str | None = None) -> str:
    """The newest partition of ``table`` (at or before ``ds`` when given)."""
    from visrec.lake import PartitionNotFound

    dss = [d for d in lake.partitions(table) if ds is None or d <= ds]
    if not dss:
        raise PartitionNotFound(
            f"no {table} partition{'' if ds is None else f' at or before {ds}'} in {lake.uri}; "
            "run `visrec train cnn --ds DATE` first"
        )
    return dss[-1]


def find_similar_to_photo(
    settings: Settings,
    photo: bytes,
    name: str,
    *,
    k: int = 10,
    lake: Lake | None = None,
    ds: str | None = None,
    user: str | None = None,
) -> tuple[list[PhotoMatch], dict]:
    """Embed an uploaded photo with the champion image model and return the ``k`` nearest catalog
    items, best first, plus context (model version, partition, predicted categories).

    With ``user``, the ``max(50, 5k)`` visually nearest items are re-ranked by an equal blend of their
    standardised visual similarity and the champion recommender's standardised score for that user,
    so the photo says what to look for and the user's history which of those they prefer."""
    from visrec.errors import VisrecError
    from visrec.images import normalise_image
    from visrec.tracking import ensure_experiment

    lake = lake or Lake.from_settings(settings)
    ds = latest_partition(lake, "item_embeddings", ds)
    table = lake.read_table("item_embeddings", ds)
    ensure_experiment(settings)
    try:
        model, version = load_cnn()
    except Exception as exc:  # the registry's own errors are long and name internals
        raise VisrecError(
            f"no champion image model in {settings.mlflow_tracking_uri}: {str(exc)[:200]}"
        ) from None
    made_with = set(table.column("model_version").to_pylist())
    if made_with != {version}:
        raise VisrecError(
            f"item embeddings of {ds} were made with {sorted(made_with)} but the champion is {version}; "
            "re-embed the catalog (`visrec train cnn`)"
        )
    png, _, _ = normalise_image(photo, name, model.image_size, check_extension=False)
    pixels = decode_pngs([png])
    query = embed_pixels(model, pixels)
    probs = np.asarray(model.predict(pixels, verbose=0))[0]
    depth = max(50, 5 * k) if user else k
    idx, scores = top_k_similar(query, embeddings_matrix(table), depth)
    ids = table.column("item_id").to_pylist()
    reranked_by = None
    if user:
        idx, scores, reranked_by = _rerank_for_user(settings, user, ids, idx[0], scores[0], k)
    catalog_category = {}
    staged = (
        lake.read_table("staging_images", ds).select(["item_id", "category"])
        if lake.manifest("staging_images", ds)
        else None
    )
    if staged is not None:
        catalog_category = dict(
            zip(staged.column("item_id").to_pylist(), staged.column("category").to_pylist(), strict=True)
        )
    matches = [
        PhotoMatch(ids[j], float(s), catalog_category.get(ids[j], ""))
        for j, s in zip(idx[0], scores[0], strict=True)
    ]
    top = np.argsort(-probs)[:3]
    context = {
        "ds": ds,
        "model_version": version,
        "reranked_by": reranked_by,
        "categories": [(model.class_names[c], float(probs[c])) for c in top],
    }
    return matches, context


def _rerank_for_user(
    settings: Settings, user: str, ids: list[str], idx: np.ndarray, visual: np.ndarray, k: int
):
    from visrec.errors import VisrecError
    from visrec.recsys import champion_scorer

    scorer = champion_scorer(settings)
    if scorer is None:
        raise VisrecError(
            "no champion recommender (visrec-mf) yet to re-rank by; run `visrec train mf` or drop --user"
        )
    if user not in set(scorer.user_ids):
        raise VisrecError(f"user {user!r} is unknown to {scorer.version}; drop --user for visual results")
    aligned = scorer.aligned([user], [ids[j] for j in idx])
    preference = aligned.score(np.array([0]))[0]
    known = np.isfinite(preference)

    def z(x: np.ndarray) -> np.ndarray:
        return (x - x[known].mean()) / (x[known].std() + 1e-9) if known.any() else np.zeros_like(x)

    blended = np.where(known, 0.5 * z(visual) + 0.5 * z(np.where(known, preference, 0.0)), -np.inf)
    order = np.argsort(-blended, kind="stable")[:k]
    return idx[order][None, :], visual[order][None, :], scorer.version
