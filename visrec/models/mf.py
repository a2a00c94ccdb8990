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
from keras import layers, ops

from visrec.deprecated import homes, moved


@keras.saving.register_keras_serializable(package="visrec")
class VBPR(keras.Model):
    """The scoring model; call it on (users, pos_items, neg_items) to get x_ui - x_uj."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        feature_dim: int = 0,
        factors: int = 32,
        visual_factors: int = 32,
        l2: float = 1e-4,
        visual_l2: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if n_users < 1 or n_items < 2:
            raise ValueError(f"need users >= 1 and items >= 2, got {n_users} and {n_items}")
        if visual_factors and feature_dim < 1:
            raise ValueError("visual_factors > 0 needs item features (feature_dim >= 1)")
        self.n_users, self.n_items, self.feature_dim = n_users, n_items, feature_dim
        self.factors, self.visual_factors, self.l2 = factors, visual_factors, l2
        self.visual_l2 = l2 if visual_l2 is None else visual_l2
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
            self.item_features = self.add_weight(
                shape=(n_items, feature_dim), initializer="zeros", trainable=False, name="item_features"
            )

    def build(self, input_shape=None) -> None:
        for layer in (self.user_factors, self.item_factors, self.item_bias):
            layer.build((None,))
        if self.visual_factors:
            self.user_visual.build((None,))
            self.projection.build((None, self.feature_dim))
            self.visual_bias.build((None, self.feature_dim))
        self.built = True

    def _user_vec(self, users):
        vec = self.user_factors(users)
        return ops.concatenate([vec, self.user_visual(users)], axis=-1) if self.visual_factors else vec

    def call(self, inputs, training=False):
        """``x_ui - x_uj`` for (users, positives, negatives); when training, also the L2 terms on the
        rows the batch touched (as in the paper's SGD) and on the shared visual weights, the
        collaborative and the visual parts each with its own strength, as ``add_loss``."""
        users, pos, neg = inputs
        # Written on differences, as in the paper: each row gathered once, and the visual term one
        # projection of f_i - f_j instead of two.
        gamma_u, gamma_i, gamma_j = self.user_factors(users), self.item_factors(pos), self.item_factors(neg)
        bias_i, bias_j = self.item_bias(pos), self.item_bias(neg)
        diff = ops.squeeze(bias_i - bias_j, -1) + ops.sum(gamma_u * (gamma_i - gamma_j), axis=-1)
        reg = ops.mean(ops.sum(gamma_u**2 + gamma_i**2 + gamma_j**2, -1)) + ops.mean(bias_i**2 + bias_j**2)
        penalty = self.l2 * reg
        if self.visual_factors:
            theta_u = self.user_visual(users)
            feats = ops.take(self.item_features, pos, axis=0) - ops.take(self.item_features, neg, axis=0)
            diff += ops.sum(theta_u * self.projection(feats), -1) + ops.squeeze(self.visual_bias(feats), -1)
            visual = ops.mean(ops.sum(theta_u**2, -1))
            visual += ops.sum(self.projection.kernel**2) + ops.sum(self.visual_bias.kernel**2)
            penalty += self.visual_l2 * visual
        if training:
            self.add_loss(penalty)
        return diff

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """BPR: ``-log sigmoid(x_ui - x_uj)``, weighted by each positive's confidence (the sample
        weight), plus the L2 terms ``call`` added. Keras's own ``train_step`` calls this on every
        backend (TensorFlow, JAX), so the model has no backend-specific code."""
        weights = ops.ones_like(y_pred) if sample_weight is None else ops.cast(sample_weight, y_pred.dtype)
        loss = -ops.sum(weights * ops.log_sigmoid(y_pred)) / ops.sum(weights)
        for extra in self.losses:
            loss = loss + extra
        return loss

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "n_users": self.n_users,
                "n_items": self.n_items,
                "feature_dim": self.feature_dim,
                "factors": self.factors,
                "visual_factors": self.visual_factors,
                "l2": self.l2,
                "visual_l2": self.visual_l2,
            }
        )
        return config


# Deprecated: the batch recommender on this model moved to visrec.recsys.vbpr (and visrec.api).
__getattr__ = moved(__name__, homes("visrec.recsys.vbpr", "VBPRRecommender"))
