"""VBPR (He & McAuley 2016) behind the batch recommender interface: sampled BPR triples fed to the
Keras model in :mod:`visrec.models.mf`, then frozen into dense arrays for scoring.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from visrec.models.mf import VBPR
from visrec.models.tfdata import in_memory_batches
from visrec.recsys.baselines import FactorRecommender
from visrec.recsys.data import TrainData


class VBPRRecommender(FactorRecommender):
    """Fits a :class:`VBPR` with sampled negatives and serves it through the batch interface."""

    def __init__(
        self,
        factors: int = 32,
        visual_factors: int = 32,
        epochs: int = 20,
        batch_size: int = 4096,
        learning_rate: float = 0.005,
        l2: float = 1e-5,
        negatives: int = 4,
        seed: int = 42,
    ):
        self.factors, self.visual_factors, self.epochs = factors, visual_factors, epochs
        self.batch_size, self.learning_rate, self.l2 = batch_size, learning_rate, l2
        self.negatives, self.seed = negatives, seed
        self.model: VBPR | None = None
        self.cold: np.ndarray | None = None

    def fit(self, data: TrainData) -> VBPRRecommender:
        if self.visual_factors and data.item_features is None:
            raise ValueError(
                "VBPR with visual_factors > 0 needs TrainData.item_features (the image embeddings)"
            )
        keras.utils.set_random_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        features = data.item_features if self.visual_factors else None
        self.model = VBPR(
            data.n_users,
            data.n_items,
            0 if features is None else features.shape[1],
            self.factors,
            self.visual_factors,
            self.l2,
        )
        self.model.build()
        if features is not None:
            # Centred and scaled: CNN embeddings share a large common component (post-ReLU pooling),
            # which would otherwise dominate E f_i and leave little to tell items apart.
            centred = features - features.mean(axis=0, keepdims=True)
            self.model.item_features.assign((centred / (centred.std() + 1e-8)).astype(np.float32))
        self.model.compile(optimizer=keras.optimizers.Adam(self.learning_rate))
        coo = data.user_items.tocoo()
        warm = np.flatnonzero(np.asarray((data.user_items > 0).sum(axis=0)).ravel())
        self.cold = np.ones(data.n_items, dtype=bool)
        self.cold[warm] = False
        liked = data.user_items.tocsr()
        # Confidence as a weight, compressed so a heavy buyer's pair does not drown the rest.
        weights = np.log1p(coo.data).astype(np.float32)
        for _ in range(self.epochs):
            users = np.repeat(coo.row, self.negatives)
            pos = np.repeat(coo.col, self.negatives)
            w = np.repeat(weights, self.negatives)
            neg = warm[rng.integers(0, len(warm), len(users))]
            # Resample negatives the user actually liked (once; a rare leftover is harmless noise).
            clash = np.asarray(liked[users, neg]).ravel() > 0
            neg[clash] = warm[rng.integers(0, len(warm), clash.sum())]
            order = rng.permutation(len(users))
            triples = (
                users[order].astype(np.int32),
                pos[order].astype(np.int32),
                neg[order].astype(np.int32),
            )
            self.model.fit(in_memory_batches((triples, w[order]), self.batch_size), epochs=1, verbose=0)
        self._export()
        return self

    def _export(self) -> None:
        """Dense arrays for scoring: user vectors, item vectors and biases, cold items handled."""
        m = self.model
        items = np.arange(m.n_items, dtype=np.int32)
        users = np.arange(m.n_users, dtype=np.int32)
        gamma_i = np.asarray(m.item_factors(items)).copy()
        bias = np.asarray(ops.squeeze(m.item_bias(items), -1)).copy()
        gamma_i[self.cold] = 0.0
        if (~self.cold).any():
            bias[self.cold] = np.median(bias[~self.cold])
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
            self.visual_preference = (theta @ e.T + beta[None, :]).astype(np.float32)
