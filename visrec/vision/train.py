"""Training the image model on a day's staged images.

``train_cnn`` trains with a stratified held-out split and early stopping, logs params, per-epoch
metrics and a confusion matrix to MLflow, and registers the model as ``visrec-cnn`` (champion only if
it is at least as accurate as the current champion on the same held-out images). When the category
set is unchanged and few images are new to the champion, it fine-tunes the champion instead of
starting over (:func:`warm_start` says when).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
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

PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
CATALOG_ARTIFACT = "training_catalog.json"  # the item ids a training saw (train and held out)


def held_out_split(
    item_ids: list[str], labels: np.ndarray, share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held_out): an item is held out when a hash of its id (and ``seed``) falls in
    the first ``share`` of the hash range, so an item stays on its side as the catalog grows night
    after night (a fine-tuned champion is never scored on images it trained on); each category keeps
    at least one training image (its item with the highest hash)."""
    if len(item_ids) != len(labels):
        raise ValueError(f"{len(item_ids)} item ids for {len(labels)} labels")
    if not 0 <= share < 1:
        raise ValueError(f"the held-out share must be in [0, 1), got {share}")
    import pandas as pd

    key = f"visrec-split-{seed % 1000:03d}"  # pandas takes a 16-character key
    unit = pd.util.hash_array(np.asarray(item_ids, dtype=object), hash_key=key) / 2.0**64
    held = unit < share
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if held[members].all():
            held[members[np.argmax(unit[members])]] = False
    return np.flatnonzero(~held), np.flatnonzero(held)


def warm_start(
    config: CNNConfig,
    same_model: bool,
    item_ids: list[str],
    champion_items: set[str] | None,
    champion_warm_starts: int,
) -> tuple[bool, str]:
    """Whether to fine-tune the champion rather than train from scratch, and why: only when it has
    the same categories and heads (``same_model``), fine-tuning is on, at most
    ``config.max_catalog_change`` of today's images are new to it, and it is not the end of a chain
    of ``config.scratch_every - 1`` warm starts (every so often a fresh start, so the weights do not
    drift with the catalog forever)."""
    if not config.fine_tune:
        return False, "from scratch: fine-tuning is off"
    if not same_model:
        return False, "from scratch: the champion's categories or heads differ from today's"
    if champion_items is None:
        return False, "from scratch: the champion's catalog is not recorded"
    new = sum(item not in champion_items for item in item_ids) / max(len(item_ids), 1)
    if new > config.max_catalog_change:
        return False, f"from scratch: {new:.1%} of the images are new (over {config.max_catalog_change:.0%})"
    if champion_warm_starts + 1 >= config.scratch_every:
        return False, (
            f"from scratch: {champion_warm_starts} warm starts in a row (a fresh start every "
            f"{config.scratch_every} trainings)"
        )
    return True, f"warm start: {new:.1%} of the images are new, warm start {champion_warm_starts + 1}"


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
    # Compute precision: "bfloat16" or "float16" compute with float32 weights (Keras's mixed
    # policies); float16 is for GPUs, bfloat16 for CPUs with AVX-512 BF16 or AMX.
    precision: str = "float32"
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
    fine_tune: bool = True  # start from the champion when its categories are the same (see warm_start)
    max_catalog_change: float = 0.2  # most share of new images for a warm start
    scratch_every: int = 7  # a from-scratch training at least every this many trainings
    register: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> CNNConfig:
        """The nightly run's config: epochs and budget from ``settings``, ``overrides`` on top."""
        return cls(
            **{
                "epochs": settings.cnn_epochs,
                "max_minutes": settings.cnn_max_minutes,
                "max_catalog_change": settings.cnn_warm_start_max_change,
                "precision": settings.cnn_precision,
                "scratch_every": settings.cnn_scratch_every,
                **overrides,
            }
        )


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
    start: str = ""  # how training started, and why (see warm_start)
    warm_starts: int = 0  # fine-tunings in a row that led to this model


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
    if attributes:
        log.info(
            "cnn: attribute heads for the catalog's %s",
            ", ".join(f"{k} ({len(v[0])})" for k, v in attributes.items()),
        )
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {config.precision!r}")
    split = held_out_split(images.item_ids, labels, config.held_out_share, settings.seed)
    keras.utils.set_random_seed(settings.seed)
    with _dtype_policy(PRECISIONS[config.precision]):
        return _train(settings, ds, config, images, class_names, labels, attributes, split, progress)


def _train(
    settings: Settings,
    ds: str,
    config: CNNConfig,
    images: StagedImages,
    class_names: list[str],
    labels: np.ndarray,
    attributes: dict[str, tuple[list[str], list[int]]],
    split: tuple[np.ndarray, np.ndarray],
    progress: Callable[[str, int, int], None] | None,
) -> CNNResult:
    """:func:`train_cnn` past its checks, under the config's dtype policy."""
    import keras
    import mlflow.keras

    import mlflow
    from visrec.models.cnn import ImageClassifier

    train_idx, held_idx = split
    attribute_values = {name: values for name, (values, _) in attributes.items()}

    model, base_version, champion_accuracy = None, None, None
    start = "from scratch: no champion" if config.register else "from scratch: the registry is not used"
    warm_starts = 0
    if config.register:
        use_tracking(settings)
        current = registry.champion(MODEL_NAME)
        if current is not None:
            champion_model, _ = load_cnn(f"{MODEL_NAME}/{current.version}")
            same_categories = list(champion_model.class_names) == class_names
            if same_categories:
                probs = champion_model.predict(in_memory_batches(images.pixels[held_idx], 256), verbose=0)
                champion_accuracy = float(np.mean(probs.argmax(1) == labels[held_idx]))
            same_heads = (champion_model.retrieval_dim, champion_model.attributes) == (
                config.retrieval_dim,
                attribute_values,
            )
            champion_items, champion_chain = _champion_catalog(current.run_id)
            warm, start = warm_start(
                config, same_categories and same_heads, images.item_ids, champion_items, champion_chain
            )
            if warm:
                model, base_version = champion_model, f"{MODEL_NAME}/{current.version}"
                warm_starts = champion_chain + 1
    log.info("cnn %s: %s", ds, start)
    epochs = config.epochs
    learning_rate = config.learning_rate
    if model is None:
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
                    "warm_starts": warm_starts,
                    "start": start[:500],
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
            start=start,
            warm_starts=warm_starts,
        )
        if config.register:
            mlflow.log_metrics(metrics)
            if champion_accuracy is not None:
                mlflow.log_metric("champion_held_out_accuracy", champion_accuracy)
            from sklearn.metrics import confusion_matrix

            matrix = confusion_matrix(held_labels, predictions, labels=np.arange(len(class_names)))
            fig = _confusion_figure(matrix, class_names)
            mlflow.log_figure(fig, "confusion_matrix.png")
            # What the next night's warm-start decision compares its catalog with.
            mlflow.log_dict({"item_ids": list(images.item_ids)}, CATALOG_ARTIFACT)
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


@contextmanager
def _dtype_policy(name: str) -> Iterator[None]:
    """Keras's global dtype policy set to ``name`` for the block: a model built inside keeps it, and
    whatever the process builds after (the GAN, in the same worker) gets the previous one back."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _champion_catalog(run_id: str) -> tuple[set[str] | None, int]:
    """(the item ids the champion's run saw, its warm starts in a row); (None, 0) for a champion
    trained before they were recorded."""
    import mlflow

    try:
        items = mlflow.artifacts.load_dict(f"runs:/{run_id}/{CATALOG_ARTIFACT}")["item_ids"]
    except Exception:  # noqa: BLE001  (an older run without the artifact: train from scratch)
        return None, 0
    chain = mlflow.MlflowClient().get_run(run_id).data.params.get("warm_starts", "0")
    return set(items), int(chain)


def _attributes(lake: Lake, item_ids: list[str]) -> dict[str, tuple[list[str], list[int]]]:
    """The catalog's attribute columns for the staged items (``{}`` without a catalog)."""
    if not lake.exists(CATALOG_KEY):
        return {}
    return catalog_attributes(read_catalog(lake)[0], item_ids)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("keras", "tensorflow-cpu", "numpy", "pillow")]
