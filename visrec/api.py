"""visrec's public Python API: the platform's models and measures on your own data, from a notebook or
another pipeline, without the lake, Airflow or a nightly run.

Importing it loads neither TensorFlow/Keras, Spark nor Airflow: the Keras models
(:class:`VBPRRecommender`, :func:`train_image_model`, :func:`embed_images`) load on first use.

A recommender session on a ratings-style DataFrame::

    import pandas as pd
    from visrec import api

    ratings = pd.DataFrame({"user_id": [...], "item_id": [...]})
    split = api.split_per_user(ratings, test_share=0.25, seed=42)
    model = api.VBPRRecommender(factors=32, visual_factors=0, epochs=10).fit(split.train)
    ids, scores = model.recommend(users, split.train.user_items, N=10)   # implicit's batch interface
    api.evaluate(api.ItemCF(), split, k=10)                              # every metric, on the test part

The nightly model selection is :func:`select_recommender`: you hand it the validation split it ranks
settings on (``split_per_user`` of the training part, or a time cut), and it returns the settings to
refit with (:func:`fit_selected`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from visrec.ingest.images import normalise_many
from visrec.recsys.baselines import EASE, ItemCF, Popularity, Recommender
from visrec.recsys.data import Split, TrainData, holdout_per_user
from visrec.recsys.metrics import bootstrap_interval, map_at_k, ndcg_at_k, recall_at_k
from visrec.recsys.train import evaluate_model
from visrec.settings import Settings
from visrec.store.tables import StagedImages, decode_pngs
from visrec.vision.embed import embed_pixels
from visrec.vision.train import CNNConfig, CNNResult, train_cnn

if TYPE_CHECKING:
    from visrec.models.cnn import ImageClassifier
    from visrec.recsys.select import Selection
    from visrec.recsys.vbpr import VBPRRecommender

# Loaded on first use (they import Keras): name -> "module:attribute".
_LAZY = {
    "VBPRRecommender": "visrec.recsys.vbpr:VBPRRecommender",
    "ImageClassifier": "visrec.models.cnn:ImageClassifier",
    "Selection": "visrec.recsys.select:Selection",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name].split(":")
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'visrec.api' has no attribute {name!r}")


def training_data(
    interactions: pd.DataFrame,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    weight_col: str | None = None,
    user_ids: list[str] | None = None,
    item_ids: list[str] | None = None,
    item_features: np.ndarray | None = None,
    classifier_dims: int | None = None,
) -> TrainData:
    """What every recommender fits on, from a DataFrame with one row per interaction: users x items
    confidence (the sum of ``weight_col``, or the count of rows). ``user_ids``/``item_ids`` fix the
    index (default: the ids found, sorted); ``item_features`` (n_items, d) in ``item_ids`` order feeds
    VBPR's visual term, which learns from the first ``classifier_dims`` columns (the image model's
    classifier embedding in visrec's ``item_embeddings`` table; None: all columns)."""
    for column in (user_col, item_col, *([weight_col] if weight_col else [])):
        if column not in interactions.columns:
            raise ValueError(f"interactions have no column {column!r}; columns: {list(interactions.columns)}")
    users = user_ids if user_ids is not None else sorted(interactions[user_col].astype(str).unique())
    items = item_ids if item_ids is not None else sorted(interactions[item_col].astype(str).unique())
    if item_features is not None and len(item_features) != len(items):
        raise ValueError(f"item_features has {len(item_features)} rows for {len(items)} items")
    rows = interactions[user_col].astype(str).map({u: k for k, u in enumerate(users)})
    cols = interactions[item_col].astype(str).map({i: k for k, i in enumerate(items)})
    unknown = rows.isna() | cols.isna()
    if unknown.any():
        raise ValueError(f"{int(unknown.sum())} interactions name a user or item outside user_ids/item_ids")
    values = (
        interactions[weight_col].to_numpy(np.float32)
        if weight_col
        else np.ones(len(interactions), np.float32)
    )
    matrix = sp.coo_matrix(
        (values, (rows.to_numpy(), cols.to_numpy())), shape=(len(users), len(items))
    ).tocsr()
    matrix.sum_duplicates()
    return TrainData(matrix, item_features, matrix, list(users), list(items), classifier_dims)


def split_per_user(
    interactions: pd.DataFrame | TrainData, test_share: float = 0.25, seed: int = 42, **columns: Any
) -> Split:
    """A random split per user: ``test_share`` of each user's distinct items held out (users with one
    item keep it), what a model should find; the protocol of data sets without usable timestamps
    (Microsoft Recommenders' random split). ``interactions``: a DataFrame (``columns``: the keyword
    arguments of :func:`training_data`) or training data, e.g. a split's ``train`` to cut a validation
    split from it."""
    data = interactions if isinstance(interactions, TrainData) else training_data(interactions, **columns)
    return holdout_per_user(data, test_share, seed)


def evaluate(model: Recommender, split: Split, k: int = 10) -> dict[str, float]:
    """Fit ``model`` on ``split.train`` and measure it on ``split.relevant``: Recall, NDCG and MAP at
    ``k``, cold-item recall, coverage, diversity, novelty, fit seconds, test users."""
    return evaluate_model(model, split, k)


def select_recommender(validation: Split, settings: Settings | None = None) -> Selection:
    """The nightly model selection on a validation split you choose: VBPR's defaults and settings from
    its search space (``VISREC_MF_*``), each fit on ``validation.train`` and ranked by NDCG on
    ``validation.relevant``, then the winner against EASE (``VISREC_MF_FAMILIES``); a challenger replaces
    the defaults only when clearly better. ``settings`` default to the environment's."""
    from visrec.recsys import select  # Keras and MLflow load here, on first use

    settings = settings or Settings.from_env()
    return select.compare_families(settings, validation, select.search_vbpr(settings, validation))


def fit_selected(
    selection: Selection | None, data: TrainData, settings: Settings | None = None
) -> Recommender:
    """The selected model (VBPR with its settings, or EASE when the selection chose that family; None:
    VBPR's defaults), fit on ``data`` (e.g. train + validation);
    without item features, plain BPR-MF (``visual_factors=0``)."""
    from visrec.recsys import select  # Keras and MLflow load here, on first use

    settings = settings or Settings.from_env()
    params = selection.params if selection is not None else select.default_params(settings)
    if data.item_features is None:
        params = {**params, "visual_factors": 0}
    return select.make_recommender(settings, params).fit(data)


@dataclass
class Images:
    """Images in memory: ids, categories and uint8 pixels (n, size, size, 3)."""

    item_ids: list[str]
    categories: list[str]
    pixels: np.ndarray


def load_images(source: str | Path | pd.DataFrame, size: int = 64) -> Images:
    """Images from a folder laid out ``<category>/<item_id>.<ext>`` (as Keras'
    ``image_dataset_from_directory`` reads it) or a DataFrame with columns ``item_id``, ``category`` and
    ``image`` (file bytes or a path), fitted onto ``size`` x ``size``. An unreadable image raises,
    naming it."""
    if isinstance(source, pd.DataFrame):
        missing = {"item_id", "category", "image"} - set(source.columns)
        if missing:
            raise ValueError(
                f"the images DataFrame needs columns item_id, category, image; missing {sorted(missing)}"
            )
        rows = [
            (
                str(r.item_id),
                str(r.category),
                r.image if isinstance(r.image, bytes) else Path(r.image).read_bytes(),
            )
            for r in source.itertuples()
        ]
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a folder of <category>/<item_id>.<ext> images")
        rows = [(f.stem, f.parent.name, f.read_bytes()) for f in sorted(folder.glob("*/*")) if f.is_file()]
    results = normalise_many([(item, data) for item, _, data in rows], size, workers=4)
    bad = [(item, r.reason) for (item, _, _), r in zip(rows, results, strict=True) if r.png is None]
    if bad:
        raise ValueError(f"{len(bad)} images could not be read, e.g. {bad[0][0]}: {bad[0][1]}")
    return Images([i for i, _, _ in rows], [c for _, c, _ in rows], decode_pngs([r.png for r in results]))


def train_image_model(images: Images, settings: Settings | None = None, **config: Any) -> CNNResult:
    """Train visrec's image model (classifier, retrieval embedding) on ``images``; tracked in MLflow
    (``VISREC_MLFLOW_TRACKING_URI``), not registered. ``config``: :class:`visrec.vision.train.CNNConfig`
    fields (epochs, max_minutes, width, ...). The result's ``model`` embeds with :func:`embed_images`."""
    settings = settings or Settings.from_env()
    staged = StagedImages(images.item_ids, images.categories, images.pixels)
    cnn_config = CNNConfig.from_settings(settings, **{"register": False, "attributes": False, **config})
    return train_cnn(settings, "2000-01-01", config=cnn_config, images=staged)


def embed_images(model: Any, pixels: np.ndarray, kind: str | None = None) -> np.ndarray:
    """L2-normalised embeddings (n, d) of uint8 images with an image model; ``kind``: ``classifier``,
    ``retrieval`` or None (the model's default: what similar items use)."""
    return embed_pixels(model, pixels, kind=kind)


__all__ = [
    "EASE",
    "ImageClassifier",
    "Images",
    "ItemCF",
    "Popularity",
    "Recommender",
    "Selection",
    "Settings",
    "Split",
    "TrainData",
    "VBPRRecommender",
    "bootstrap_interval",
    "embed_images",
    "evaluate",
    "fit_selected",
    "load_images",
    "map_at_k",
    "ndcg_at_k",
    "recall_at_k",
    "select_recommender",
    "split_per_user",
    "train_image_model",
    "training_data",
]
