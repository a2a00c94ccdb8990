"""Visual matrix factorisation: VBPR (He & McAuley, AAAI 2016), a thin ``keras.Model``.

    score(u, i) = b_i + <gamma_u, gamma_i> + <theta_u, E f_i> + <beta', f_i>

with ``f_i`` the item's CNN embedding (fixed), ``E`` a learned projection to ``visual_factors``
dimensions, ``theta_u`` the user's visual taste and ``beta'`` a visual bias. Trained with BPR on
(user, positive, negative) triples, each weighted by the positive's implicit-feedback confidence.
``visual_factors=0`` drops the visual terms: plain BPR-MF, the ablation.

Items with no training interactions ("cold") are never sampled as negatives, so their latent factors
stay untrained; at scoring time their ``gamma_i`` is zero and ``b_i`` the median warm bias, which leaves
the visual term to rank them: a brand-new item reaches users whose visual taste it matches.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from visrec.recommenders import FactorRecommender, TrainData
from visrec.tfdata import in_memory_batches


@keras.saving.register_keras_serializable(package="visrec")
class VBPR(keras.Model):
    """The scoring model; call it on (users, pos_items, neg_items) to get x_ui - x_uj."""

    def __init__(self, n_users: int, n_items: int, feature_dim: int = 0, factors: int = 32,
                 visual_factors: int = 32, l2: float = 1e-4, **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        if n_users < 1 or n_items < 2:
            raise ValueError(f"need users >= 1 and items >= 2, got {n_users} and {n_items}")
        if visual_factors and feature_dim < 1:
            raise ValueError("visual_factors > 0 needs item features (feature_dim >= 1)")
        self.n_users, self.n_items, self.feature_dim = n_users, n_items, feature_dim
        self.factors, self.visual_factors, self.l2 = factors, visual_factors, l2
        init = keras.initializers.RandomNormal(stddev=0.01)
        self.user_factors = layers.Embedding(n_users, factors, embeddings_initializer=init, name="gamma_user")
        self.item_factors = layers.Embedding(n_items, factors, embeddings_initializer=init, name="gamma_item")
        self.item_bias = layers.Embedding(n_items, 1, embeddings_initializer="zeros", name="item_bias")
        if visual_factors:
            self.user_visual = layers.Embedding(
                n_users, visual_factors, embeddings_initializer=init, name="theta_user"
            )
            self.projection = layers.Dense(visual_factors, use_bias=False, name="E")
            self.visual_bias = layers.Dense(1, use_bias=False, kernel_initializer="zeros", name="beta_visual")
            self.item_features = self.add_weight(shape=(n_items, feature_dim), initializer="zeros",
                                                 trainable=False, name="item_features")  # fmt: skip
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def build(self, input_shape=None) -> None:
        for layer in (self.user_factors, self.item_factors, self.item_bias):
            layer.build((None,))
        if self.visual_factors:
            self.user_visual.build((None,))
            self.projection.build((None, self.feature_dim))
            self.visual_bias.build((None, self.feature_dim))
        self.built = True

    def _item_terms(self, items):
        """(item vector, item bias) for a batch of item indices."""
        vec, bias = self.item_factors(items), ops.squeeze(self.item_bias(items), -1)
        if self.visual_factors:
            feats = ops.take(self.item_features, items, axis=0)
            vec = ops.concatenate([vec, self.projection(feats)], axis=-1)
            bias = bias + ops.squeeze(self.visual_bias(feats), -1)
        return vec, bias

    def _user_vec(self, users):
        vec = self.user_factors(users)
        return ops.concatenate([vec, self.user_visual(users)], axis=-1) if self.visual_factors else vec

    def call(self, inputs):
        users, pos, neg = inputs
        u = self._user_vec(users)
        vi, bi = self._item_terms(pos)
        vj, bj = self._item_terms(neg)
        return bi - bj + ops.sum(u * (vi - vj), axis=-1)

    def train_step(self, data):
        import tensorflow as tf

        (users, pos, neg), weights = data
        with tf.GradientTape() as tape:
            diff = self((users, pos, neg))
            bpr = -ops.sum(weights * ops.log_sigmoid(diff)) / ops.sum(weights)
            # L2 on the rows this batch touched (as in the paper's SGD), plus the shared visual weights.
            reg = ops.mean(ops.sum(self._user_vec(users) ** 2, -1))
            for items in (pos, neg):
                vec, bias = self.item_factors(items), self.item_bias(items)
                reg += ops.mean(ops.sum(vec**2, -1)) + ops.mean(bias**2)
            if self.visual_factors:
                reg += ops.sum(self.projection.kernel**2) + ops.sum(self.visual_bias.kernel**2)
            loss = bpr + self.l2 * reg
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
        self.loss_tracker.update_state(bpr)
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"n_users": self.n_users, "n_items": self.n_items, "feature_dim": self.feature_dim,
                       "factors": self.factors, "visual_factors": self.visual_factors, "l2": self.l2})  # fmt: skip
        return config


class VBPRRecommender(FactorRecommender):
    """Fits a :class:`VBPR` with sampled negatives and serves it through the batch interface."""

    def __init__(self, factors: int = 32, visual_factors: int = 32, epochs: int = 20, batch_size: int = 4096,
                 learning_rate: float = 0.005, l2: float = 1e-5, negatives: int = 4, seed: int = 42):  # fmt: skip
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
        self.model = VBPR(data.n_users, data.n_items, 0 if features is None else features.shape[1],
                          self.factors, self.visual_factors, self.l2)  # fmt: skip
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
