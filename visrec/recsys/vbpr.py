"""VBPR (He & McAuley 2016) behind the batch recommender interface: sampled BPR triples fed to the
Keras model in :mod:`visrec.models.mf`, then frozen into dense arrays for scoring.

Training speed: triples are cut into equal batches in numpy (a tf.data pipeline that batched them one
element at a time cost more than the model) and the training step is XLA-compiled; an epoch of a
million interactions with four negatives each takes about 2 s on two cores (``make bench``,
``mf.speed.epoch_seconds_per_million``).
"""

from __future__ import annotations

import logging
import math

import keras
import numpy as np
import scipy.sparse as sp
from keras import ops

from visrec.models.mf import VBPR
from visrec.recsys.baselines import FactorRecommender
from visrec.recsys.data import TrainData
from visrec.recsys.metrics import ndcg_per_user, users_with

log = logging.getLogger(__name__)


class BPRTriples(keras.utils.PyDataset):
    """Batches of ((user, positive, negative), target placeholder, weight), with fresh negatives every
    epoch.

    Every user-item pair with positive confidence is a positive, repeated once per negative; negatives
    are drawn from the warm items (those with any interaction) and redrawn once when the user liked
    them. All batches have the same size (the last wraps around to the first triples), so the
    compiled step is traced once."""

    def __init__(self, user_items: sp.csr_matrix, negatives: int, batch_size: int, seed: int):
        super().__init__()
        coo = user_items.tocoo()
        self.liked = user_items.tocsr()
        self.warm = np.flatnonzero(np.asarray((user_items > 0).sum(axis=0)).ravel())
        self.users = np.repeat(coo.row, negatives).astype(np.int32)
        self.pos = np.repeat(coo.col, negatives).astype(np.int32)
        # Confidence as a weight, compressed so a heavy buyer's pair does not drown the rest.
        self.weights = np.repeat(np.log1p(coo.data), negatives).astype(np.float32)
        self.batch_size = max(1, min(batch_size, len(self.users)))
        self.zeros = np.zeros(self.batch_size, np.float32)
        self.rng = np.random.default_rng(seed)
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.users) / self.batch_size)

    def on_epoch_end(self) -> None:
        neg = self.warm[self.rng.integers(0, len(self.warm), len(self.users))]
        clash = np.asarray(self.liked[self.users, neg]).ravel() > 0
        neg[clash] = self.warm[self.rng.integers(0, len(self.warm), clash.sum())]
        self.order = self.rng.permutation(len(self.users))
        self.neg = neg.astype(np.int32)

    def __getitem__(self, index: int):
        rows = self.order[np.arange(index * self.batch_size, (index + 1) * self.batch_size) % len(self.order)]
        # (x, y, sample_weight): BPR has no target (an all-zero placeholder); the weight is the confidence.
        return (self.users[rows], self.pos[rows], self.neg[rows]), self.zeros, self.weights[rows]


class RankingValidation(keras.callbacks.Callback):
    """Scores held-out interactions after each epoch (NDCG@k of the model as it is, already-liked items
    filtered) into ``logs["val_ndcg"]``, for ``EarlyStopping(monitor="val_ndcg", mode="max")``."""

    def __init__(self, recommender: VBPRRecommender, data: TrainData, relevant: list[set[int]], k: int):
        super().__init__()
        self.recommender, self.data, self.k = recommender, data, k
        self.users = users_with(relevant)
        self.relevant = [relevant[u] for u in self.users]
        self.history: list[float] = []

    def on_epoch_end(self, epoch, logs=None):
        self.recommender._export(self.data)
        ids, _ = self.recommender.recommend(self.users, self.data.user_items, N=self.k)
        value = float(ndcg_per_user(ids, self.relevant, self.k).mean()) if len(self.users) else 0.0
        self.history.append(value)
        if logs is not None:
            logs["val_ndcg"] = value


class VBPRRecommender(FactorRecommender):
    """Fits a :class:`VBPR` with sampled negatives and serves it through the batch interface.

    ``l2`` regularises the collaborative part (user and item factors, item biases), ``visual_l2`` the
    visual part (user visual taste, the projection ``E`` and the visual bias). ``visual_factors=0`` is
    plain BPR-MF; given item features, its cold items still get vectors through their images (the mean
    of their most similar warm items'), so a brand-new item can still be recommended.

    The visual part learns from the image classifier's embedding (the first ``data.classifier_dims``
    columns of the item features): on the synthetic shop VBPR reached Recall@20 0.195 on it against
    0.183 on the classifier's and the retrieval embedding together (``python bench/run.py mf``).

    ``fit(data, validation=...)`` stops early on the validation NDCG and keeps the best epoch's weights;
    ``best_epochs`` is then the epoch count to refit with on more data."""

    def __init__(
        self,
        factors: int = 32,
        visual_factors: int = 32,
        epochs: int = 30,
        batch_size: int = 32768,
        learning_rate: float = 0.01,
        l2: float = 1e-2,
        visual_l2: float | None = None,
        negatives: int = 4,
        seed: int = 42,
        patience: int = 3,
    ):
        if factors < 1 or visual_factors < 0 or epochs < 1 or negatives < 1 or batch_size < 1:
            raise ValueError(
                "need factors >= 1, visual_factors >= 0, epochs >= 1, negatives >= 1 and batch_size >= 1, "
                f"got {factors}, {visual_factors}, {epochs}, {negatives} and {batch_size}"
            )
        if learning_rate <= 0 or l2 < 0 or (visual_l2 is not None and visual_l2 < 0):
            raise ValueError(f"need learning_rate > 0 and l2 >= 0, got {learning_rate}, {l2}, {visual_l2}")
        self.factors, self.visual_factors, self.epochs = factors, visual_factors, epochs
        self.batch_size, self.learning_rate, self.l2 = batch_size, learning_rate, l2
        self.visual_l2 = l2 if visual_l2 is None else visual_l2
        self.negatives, self.seed, self.patience = negatives, seed, patience
        self.model: VBPR | None = None
        self.cold: np.ndarray | None = None
        self.best_epochs = epochs
        self.validation_history: list[float] = []

    def fit(self, data: TrainData, validation: list[set[int]] | None = None, k: int = 20) -> VBPRRecommender:
        """Fit on ``data``; with ``validation`` (per user of ``data``, the items they went on to use),
        stop when its NDCG@``k`` has not improved for ``patience`` epochs and keep the best epoch."""
        if self.visual_factors and data.item_features is None:
            raise ValueError(
                "VBPR with visual_factors > 0 needs TrainData.item_features (the image embeddings)"
            )
        if data.user_items.nnz == 0:
            raise ValueError("VBPR needs at least one interaction to fit")
        keras.utils.set_random_seed(self.seed)
        features = data.item_features if self.visual_factors else None
        if features is not None and data.classifier_dims:
            features = features[:, : data.classifier_dims]
        self.model = VBPR(
            data.n_users,
            data.n_items,
            0 if features is None else features.shape[1],
            self.factors,
            self.visual_factors,
            self.l2,
            self.visual_l2,
        )
        self.model.build()
        if features is not None:
            self.model.item_features.assign(_standardised(features))
        self.model.compile(optimizer=keras.optimizers.Adam(self.learning_rate), jit_compile=True)
        self.cold = np.asarray((data.user_items > 0).sum(axis=0)).ravel() == 0
        triples = BPRTriples(data.user_items, self.negatives, self.batch_size, self.seed)
        callbacks = []
        if validation is not None:
            check = RankingValidation(self, data, validation, k)
            stop = keras.callbacks.EarlyStopping(
                monitor="val_ndcg", mode="max", patience=self.patience, restore_best_weights=True
            )
            callbacks = [check, stop]
        self.model.fit(triples, epochs=self.epochs, verbose=0, callbacks=callbacks)
        if validation is not None:
            self.validation_history = check.history
            self.best_epochs = int(np.argmax(check.history)) + 1
        self._export(data)
        return self

    def _export(self, data: TrainData) -> None:
        """Dense arrays for scoring: user vectors, item vectors and biases, cold items handled.

        Cold items were never sampled, so their factors are untrained: their ``gamma_i`` becomes zero
        and their bias the median warm bias, leaving the visual term to rank them; without a visual
        term (``visual_factors=0``) they take the mean vector and bias of their ten most similar warm
        items by image."""
        m = self.model
        items = np.arange(m.n_items, dtype=np.int32)
        users = np.arange(m.n_users, dtype=np.int32)
        gamma_i = np.asarray(m.item_factors(items)).copy()
        bias = np.asarray(ops.squeeze(m.item_bias(items), -1)).copy()
        warm = ~self.cold
        if self.cold.any() and warm.any():
            if m.visual_factors or data.item_features is None:
                gamma_i[self.cold] = 0.0
                bias[self.cold] = np.median(bias[warm])
            else:
                gamma_i[self.cold], bias[self.cold] = _borrowed(data.item_features, warm, gamma_i, bias)
        parts = [gamma_i]
        if m.visual_factors:
            feats = np.asarray(m.item_features)
            parts.append(np.asarray(m.projection(feats)))
            bias = bias + np.asarray(m.visual_bias(feats)).ravel()
        self.item_vectors = np.concatenate(parts, axis=1).astype(np.float32)
        self.item_biases = bias.astype(np.float32)
        self.user_vectors = np.asarray(m._user_vec(users)).astype(np.float32)
        # The visual part of a user's score for any image embedding f is (theta_u E^T + beta') . g(f),
        # with g the fixed centring and scaling above: a direction in embedding space per user. It
        # scores images that are not in the catalog (generated looks, photos) as the model would.
        self.visual_preference = None
        if m.visual_factors:
            theta = np.asarray(m.user_visual(users))
            e = np.asarray(m.projection.kernel)  # (feature_dim, visual_factors)
            beta = np.asarray(m.visual_bias.kernel)[:, 0]
            preference = (theta @ e.T + beta[None, :]).astype(np.float32)
            # Zeros over the embedding's other columns: the same direction in the served embedding's space.
            rest = data.item_features.shape[1] - preference.shape[1]
            self.visual_preference = np.pad(preference, ((0, 0), (0, rest)))


def _standardised(features: np.ndarray) -> np.ndarray:
    """Centred and scaled: CNN embeddings share a large common component (post-ReLU pooling), which
    would otherwise dominate ``E f_i`` and leave little to tell items apart."""
    centred = features - features.mean(axis=0, keepdims=True)
    return (centred / (centred.std() + 1e-8)).astype(np.float32)


def _borrowed(
    features: np.ndarray, warm: np.ndarray, vectors: np.ndarray, biases: np.ndarray, neighbours: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """For each cold item, the mean factor vector and bias of the ``neighbours`` warm items whose image
    embeddings are most similar (cosine)."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    warm_index, cold_index = np.flatnonzero(warm), np.flatnonzero(~warm)
    n = min(neighbours, len(warm_index))
    out_vectors = np.zeros((len(cold_index), vectors.shape[1]), vectors.dtype)
    out_biases = np.zeros(len(cold_index), biases.dtype)
    for start in range(0, len(cold_index), 2048):  # memory: a chunk of cold items x warm items
        rows = cold_index[start : start + 2048]
        similarity = unit[rows] @ unit[warm_index].T
        nearest = warm_index[np.argpartition(-similarity, n - 1, axis=1)[:, :n]]
        out_vectors[start : start + len(rows)] = vectors[nearest].mean(axis=1)
        out_biases[start : start + len(rows)] = biases[nearest].mean(axis=1)
    return out_vectors, out_biases
