"""Training the image model on a day's staged images.

``train_cnn`` trains with a stratified held-out split and early stopping, logs params, per-epoch
metrics and a confusion matrix to MLflow, and registers the model as ``visrec-cnn`` (champion only if
it is at least as accurate as the current champion on the same held-out images). When the category
set is unchanged, it fine-tunes the champion instead of starting over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from visrec.mlops import registry
from visrec.mlops.tracking import tracked_run, use_tracking
from visrec.models.tfdata import in_memory_batches
from visrec.settings import Settings
from visrec.store.catalog import CATALOG_KEY, catalog_attributes, read_catalog
from visrec.store.lake import Lake
from visrec.store.tables import StagedImages, load_staged_images
from visrec.vision.embed import MODEL_NAME, load_cnn

log = logging.getLogger(__name__)


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
    """Training hyperparameters of the image model (defaults: the nightly run on a CPU). Its epochs
    and budget are operational settings (``VISREC_CNN_EPOCHS``, ``VISREC_CNN_MINUTES``): build it with
    :meth:`from_settings`."""

    epochs: int
    max_minutes: float | None  # training budget (None: none)
    fine_tune_epochs: int = 5
    # Views through the network per step. With the retrieval embedding a step takes
    # batch_size / (1 + pair_share) images, the second views filling the rest: the same cost per step.
    batch_size: int = 64
    learning_rate: float = 3e-3
    width: int = 32
    dropout: float = 0.25
    label_smoothing: float = 0.1
    held_out_share: float = 0.2
    patience: int = 10  # scored epochs without a better held-out accuracy before stopping
    validate_from: float = 0.5  # score the held-out images once training is this far along
    mixed_precision: bool = False  # float16 compute: worth it on a GPU only
    # The retrieval embedding (see visrec.models.cnn); 0: the classifier's embedding only.
    retrieval_dim: int = 64
    pair_share: float = 0.25  # share of each batch's images that get a second view for the contrastive loss
    # The contrastive loss's weight beside the category loss (1). On a 400-item catalog in 30 epochs
    # (two shops): 0.35 found a shopper's photo's item first for 0.82-0.84 of the photos against
    # 0.65-0.70 at 0.2, held-out accuracy 0.94-0.96 against 0.96-0.98; 0.5 was no better than 0.35.
    # At 1.0 the classifier stayed at 0.23 after 14 epochs: the contrastive loss drowned it.
    contrastive_weight: float = 0.35
    attributes: bool = True  # heads for the catalog's attribute columns on the retrieval embedding
    # Each head's loss weight (the category head's too). On hm-sample in the 20-minute budget 0.2 gave
    # product-type top-1 0.748 and 0.755 (two runs) against 0.737 at 0.5, for look-alike precision
    # 0.217-0.218 against 0.224.
    attribute_weight: float = 0.2
    backbone: str = "compact"
    backbone_weights: str | None = None
    fine_tune: bool = True  # start from the champion when its categories are the same
    register: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> CNNConfig:
        """The nightly run's config: epochs and budget from ``settings``, ``overrides`` on top."""
        return cls(**{"epochs": settings.cnn_epochs, "max_minutes": settings.cnn_max_minutes, **overrides})


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


def training_callbacks(config: CNNConfig, epochs: int, learning_rate: float, held_out, progress=None) -> list:
    """The image model's callbacks: time budget, cosine schedule, late held-out scoring, Keras's early
    stopping that keeps the best scored epoch, and the per-epoch report (see :mod:`visrec.models.callbacks`)."""
    import keras

    from visrec.mlops.callbacks import EpochReport
    from visrec.models.callbacks import CosineSchedule, LateValidation, TimeBudget

    budget = TimeBudget(config.max_minutes, "cnn")
    callbacks = [budget, CosineSchedule(learning_rate, epochs, budget.budget)]
    if held_out is not None:
        callbacks += [
            LateValidation(held_out, epochs, budget, config.validate_from),
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", mode="max", patience=config.patience, restore_best_weights=True
            ),
        ]
    return [*callbacks, EpochReport("cnn", epochs, progress)]


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
    from visrec.models.cnn import ImageClassifier

    config = config or CNNConfig.from_settings(settings)
    lake = lake or Lake.from_settings(settings)
    images = images or load_staged_images(lake, ds)
    class_names = sorted(set(images.categories))
    if len(class_names) < 2:
        raise ValueError(
            f"staging_images of {ds} has {len(class_names)} category; a classifier needs 2 or more"
        )
    index = {c: k for k, c in enumerate(class_names)}
    labels = np.array([index[c] for c in images.categories], np.int32)
    attributes = _attributes(lake, images.item_ids) if config.attributes and config.retrieval_dim else {}
    attribute_values = {name: values for name, (values, _) in attributes.items()}
    if attributes:
        log.info(
            "cnn: attribute heads for the catalog's %s",
            ", ".join(f"{k} ({len(v[0])})" for k, v in attributes.items()),
        )
    train_idx, held_idx = stratified_split(labels, config.held_out_share, settings.seed)
    keras.utils.set_random_seed(settings.seed)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")

    model, base_version, champion_accuracy = None, None, None
    if config.register:
        use_tracking(settings)
        current = registry.champion(MODEL_NAME)
        if current is not None:
            champion_model, base_version = load_cnn(f"{MODEL_NAME}/{current.version}")
            base_version = f"{MODEL_NAME}/{current.version}"
            same_heads = (champion_model.retrieval_dim, champion_model.attributes) == (
                config.retrieval_dim,
                attribute_values,
            )
            if list(champion_model.class_names) == class_names:
                probs = champion_model.predict(in_memory_batches(images.pixels[held_idx], 256), verbose=0)
                champion_accuracy = float(np.mean(probs.argmax(1) == labels[held_idx]))
                if config.fine_tune and same_heads:
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
            retrieval_dim=config.retrieval_dim,
            pair_share=config.pair_share,
            contrastive_weight=config.contrastive_weight,
            attribute_weight=config.attribute_weight,
            attributes=attribute_values,
        )
    else:
        epochs, learning_rate = config.fine_tune_epochs, config.learning_rate / 5
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=1e-4),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy", keras.metrics.TopKCategoricalAccuracy(5, name="top5")],
    )
    one_hot = np.eye(len(class_names), dtype=np.float32)[labels]
    # Training labels: the one-hot category, then each attribute's value index (-1: unknown), in the
    # model's order of its attribute heads.
    heads = list(model.attributes)
    attribute_index = np.array([attributes[name][1] for name in heads], np.float32)
    targets = np.concatenate([one_hot, attribute_index.reshape(len(heads), len(labels)).T], axis=1)
    paired = model.pair_share if model.retrieval_dim else 0.0
    per_step = max(round(config.batch_size / (1.0 + paired)), 2)
    train_ds = in_memory_batches(
        (images.pixels[train_idx], targets[train_idx]),
        per_step,
        shuffle_seed=settings.seed,
        # A last batch of one image has no other image to tell its views from.
        drop_remainder=bool(model.retrieval_dim) and len(train_idx) > per_step,
    )
    held_ds = in_memory_batches((images.pixels[held_idx], one_hot[held_idx]), 256)
    nested = mlflow.active_run() is not None if config.register else False
    run_ctx = (
        tracked_run(settings, "cnn training", ds=ds, nested=nested, training=True)
        if config.register
        else nullcontext()
    )
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
            callbacks=training_callbacks(
                config, epochs, learning_rate, held_ds if len(held_idx) else None, progress
            ),
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
            from sklearn.metrics import confusion_matrix

            matrix = confusion_matrix(held_labels, predictions, labels=np.arange(len(class_names)))
            fig = _confusion_figure(matrix, class_names)
            mlflow.log_figure(fig, "confusion_matrix.png")
            import matplotlib.pyplot as plt

            plt.close(fig)
            example = images.pixels[held_idx[:1] if len(held_idx) else train_idx[:1]]
            model_uri = registry.log_keras_model(
                model,
                example,
                np.asarray(model.predict(example, verbose=0)),
                pip_requirements=_requirements(),
            )
            registration = registry.register(
                model_uri,
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


def _attributes(lake: Lake, item_ids: list[str]) -> dict[str, tuple[list[str], list[int]]]:
    """The catalog's attribute columns for the staged items (``{}`` without a catalog)."""
    if not lake.exists(CATALOG_KEY):
        return {}
    return catalog_attributes(read_catalog(lake)[0], item_ids)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("keras", "tensorflow-cpu", "numpy", "pillow")]
