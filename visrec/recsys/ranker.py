"""The second stage of two-stage recommendations: a learned ranker over the generators' candidates.

    ranker = CandidateRanker([Generator("ease", EASE(), 100), Generator("item_cf", ItemCF(), 50), ...])
    ranker.fit(data, validation)          # validation: a Split inside ``data`` (select.validation_design)
    ids, scores = ranker.recommend(userids, data.user_items, N=10)

Training: every generator is fitted on ``validation.train``; each proposes its top ``n`` items per user
(their union are the user's candidates) and every generator scores every candidate; the candidates
that ``validation.relevant`` holds are the positives. LightGBM's LambdaRank learns to order each
user's candidates from those features, early-stopped on NDCG@10 of a held-out slice of users. Then
the generators are refitted on all of ``data``, and serving computes the same features from them.

Why LightGBM's LambdaRank rather than XGBoost's ``rank:ndcg``: both optimise NDCG over query groups;
LightGBM trains faster on CPUs with histogram bins and few threads, is what the H&M competition's
published solutions ranked with, and ships a single wheel with no GPU build to choose.

Features per (user, candidate), all relative so that a model trained on the validation part (fewer
interactions) transfers to the refit on everything: each generator's score, its rank for the user
(exact down to ``rank_depth``, 200; deeper items share that rank) and its score's gap to the user's
best; how many generators proposed the item; the item's popularity (share of users), whether nobody
has it yet (cold) and its log-popularity against the user's usual; the user's activity (log of their
items); the share of the user's items in the candidate's category; and for each numeric item value the
catalog has (``item_values``, e.g. price) the item's value and its difference from the mean over the
user's items (NaN where unknown: LightGBM learns a side for it).
A generator with ``n=0`` proposes nothing and contributes features only (e.g. the visual profile's
cosine between the item's photo embedding and the user's mean).

``cold_share``: a share of the bought items made new for training only (:func:`as_if_new`), so the
ranker sees more new items than the validation window brings; on the synthetic shop it measured no
reliable gain in new items' recall (docs/explanation/models.md), so it is off by default.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from visrec.recsys.baselines import ItemCooccurrence, Recommender
from visrec.recsys.data import Split, TrainData

log = logging.getLogger(__name__)

MODEL_NAME = "visrec-ranker"
USER_FEATURES = ("user_log_items",)
# Per generator and candidate: its score, its rank for the user, the gap to the user's best score and
# the score's z-score over the user's catalog.
GENERATOR_FEATURES = ("score", "rank", "gap", "z")
# The item's popularity, whether nobody has it yet, and its log-popularity minus the mean of the user's
# items' (a user of niche items against a blockbuster).
ITEM_FEATURES = ("item_popularity", "item_cold", "popularity_vs_user")
# How deep a generator's ranks are exact; items below share this rank (its score, gap and z still
# tell them apart).
RANK_DEPTH = 200


def top_by_score(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, the indices of the ``k`` highest scores, best first, equal scores by lower index: the
    first ``k`` of a stable ``argsort(-scores)``, in time linear in the row's length (a partition finds
    the k-th score; only the ``k`` chosen are sorted)."""
    rows, n = scores.shape
    if not 0 < k <= n:
        raise ValueError(f"k must be between 1 and {n}, got {k}")
    items = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, items, axis=1)
    kth = values.min(axis=1, keepdims=True)
    # The partition chose among scores equal to the k-th arbitrarily; where more are equal than it
    # took, the lowest indices must be the ones chosen.
    ambiguous = np.nonzero(np.count_nonzero(scores >= kth, axis=1) > k)[0]
    if len(ambiguous):
        part, part_kth = scores[ambiguous], kth[ambiguous]
        above, tied = part > part_kth, part == part_kth
        chosen = above | (tied & (np.cumsum(tied, axis=1) <= k - above.sum(axis=1, keepdims=True)))
        items[ambiguous] = np.nonzero(chosen)[1].reshape(len(ambiguous), k)
    order = np.argsort(items, axis=1)
    items, values = np.take_along_axis(items, order, axis=1), np.take_along_axis(values, order, axis=1)
    if len(ambiguous):
        values[ambiguous] = np.take_along_axis(scores[ambiguous], items[ambiguous], axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(items, order, axis=1)


@dataclass
class Generator:
    """A fitted-on-demand recommender as a candidate source: its ``n`` best items per user are
    candidates (0: features only)."""

    name: str
    model: Recommender
    n: int = 100

    def __post_init__(self):
        if self.n < 0:
            raise ValueError(f"generator {self.name!r}: n must be 0 or more, got {self.n}")


@dataclass
class Candidates:
    """One batch of users' candidates as rows: ``users`` and ``items`` aligned with ``features``
    (rows grouped by user, in ``userids`` order; ``group_sizes`` per user)."""

    users: np.ndarray
    items: np.ndarray
    features: pd.DataFrame
    group_sizes: np.ndarray
    proposed_by: np.ndarray  # (rows,) the first generator (by list order) that proposed the item


def as_if_new(data: TrainData, share: float, rng: np.random.Generator) -> TrainData:
    """``data`` with a random ``share`` of its interacted items made new: their interactions removed,
    so each generator and feature sees them as it sees an item nobody has had yet. The ranker learns
    how to order new items from these too (their held-out interactions are still the labels), not
    only from the few the validation window's own arrivals give (DropoutNet's idea, Volkovs et al.,
    NeurIPS 2017, applied to the ranker's training data)."""
    seen = np.flatnonzero(np.asarray((data.user_items > 0).sum(axis=0)).ravel())
    chosen = rng.choice(seen, size=int(round(share * len(seen))), replace=False)
    keep = np.ones(data.n_items, np.float32)
    keep[chosen] = 0.0
    mask = sp.diags(keep)

    def without(matrix: sp.csr_matrix | None) -> sp.csr_matrix | None:
        if matrix is None:
            return None
        out = sp.csr_matrix(matrix @ mask, dtype=matrix.dtype)
        out.eliminate_zeros()
        return out

    return replace(
        data, user_items=without(data.user_items), recent_user_items=without(data.recent_user_items)
    )


class FixedValidation:
    """A :class:`CandidateRanker` whose ``fit(data)`` learns on a fixed validation split and returns
    the fitted ranker (see :meth:`CandidateRanker.on`)."""

    def __init__(self, ranker: CandidateRanker, validation: Split):
        self.ranker, self.validation = ranker, validation

    def fit(self, data: TrainData) -> CandidateRanker:
        return self.ranker.fit(data, self.validation)


class CandidateRanker(Recommender):
    """LightGBM LambdaRank over the union of several generators' candidates (see the module doc)."""

    chunk_size = 512  # users per batch: several dense (users x items) arrays live at once
    rank_depth: int | None = None  # rankers pickled before ``rank_depth`` existed ranked every item
    cold_share = 0.0  # rankers pickled before ``cold_share`` existed simulated no new items
    # Statistics of every user when this ranker serves one shard of them (see :meth:`serve_on`).
    shared: ItemCooccurrence | None = None

    def __init__(
        self,
        generators: list[Generator],
        num_leaves: int = 31,
        learning_rate: float = 0.05,
        max_rounds: int = 500,
        rank_depth: int | None = RANK_DEPTH,
        early_stopping_rounds: int = 50,
        eval_share: float = 0.2,
        min_child_samples: int = 50,
        seed: int = 42,
        threads: int = 0,
        item_categories: list[str] | None = None,
        generator_features: tuple[str, ...] = GENERATOR_FEATURES,
        item_values: dict[str, np.ndarray] | None = None,
        cold_share: float = 0.0,
    ):
        if not generators:
            raise ValueError("the ranker needs at least one generator")
        if not any(g.n > 0 for g in generators):
            raise ValueError("at least one generator must propose candidates (n > 0)")
        names = [g.name for g in generators]
        if len(set(names)) != len(names):
            raise ValueError(f"generator names must be unique, got {names}")
        if not generator_features or set(generator_features) - set(GENERATOR_FEATURES):
            raise ValueError(
                f"generator_features must be some of {GENERATOR_FEATURES}, got {generator_features}"
            )
        deepest = max(g.n for g in generators)
        if rank_depth is not None and rank_depth < deepest:
            raise ValueError(f"rank_depth ({rank_depth}) must reach the deepest generator's n ({deepest})")
        if not 0 < eval_share < 1:
            raise ValueError(f"eval_share must be between 0 and 1, got {eval_share}")
        if not 0 <= cold_share < 1:
            raise ValueError(f"cold_share must be in [0, 1), got {cold_share}")
        self.generators = generators
        self.num_leaves = num_leaves
        self.learning_rate = learning_rate
        self.max_rounds = max_rounds
        self.rank_depth = rank_depth
        self.early_stopping_rounds = early_stopping_rounds
        self.eval_share = eval_share
        self.min_child_samples = min_child_samples
        self.seed = seed
        self.threads = threads
        self.item_categories = None if item_categories is None else list(item_categories)
        self.generator_features = tuple(generator_features)
        self.item_values = {k: np.asarray(v, np.float64) for k, v in (item_values or {}).items()}
        self.cold_share = cold_share
        self.booster = None
        self.training_table: pd.DataFrame | None = None
        self.best_iteration = 0
        self.eval_ndcg: float | None = None

    @property
    def generator_names(self) -> np.ndarray:
        """The generators' names in order (what ``proposed_by`` and ``reason`` index)."""
        return np.array([g.name for g in self.generators], object)

    @property
    def feature_names(self) -> list[str]:
        per_generator = [f"{g.name}_{kind}" for g in self.generators for kind in self.generator_features]
        category = ["category_affinity"] if self.item_categories is not None else []
        values = [f"{name}{suffix}" for name in self.item_values for suffix in ("", "_vs_user")]
        return [*per_generator, "proposed_by_count", *ITEM_FEATURES, *USER_FEATURES, *category, *values]

    # -- training ------------------------------------------------------------------------------------

    def fit(self, data: TrainData, validation: Split | None = None) -> CandidateRanker:
        """Learn the ranker on ``validation`` (generators fitted on its training part, labels its
        held-out items), then refit the generators on ``data`` for serving."""
        import lightgbm as lgb

        if validation is None:
            raise ValueError("CandidateRanker.fit needs a validation split (select.validation_design)")
        # Its users may differ (a time window has fewer), but the items are the same, in the same order.
        if validation.train.n_items != data.n_items:
            raise ValueError(
                f"the validation split has {validation.train.n_items} items, data {data.n_items}: "
                "both must index the same catalog"
            )
        train = validation.train
        if self.cold_share:
            train = as_if_new(train, self.cold_share, np.random.default_rng([self.seed, 1]))
        inner = [Generator(g.name, copy.deepcopy(g.model), g.n) for g in self.generators]
        for g in inner:
            g.model.fit(train)
        users = np.array([u for u, r in enumerate(validation.relevant) if r], np.int64)
        if len(users) < 10:
            raise ValueError(f"the ranker needs held-out items for at least 10 users, got {len(users)}")
        # What a user had stays filtered out, including items that ``train`` pretends are new.
        table = self._candidates(inner, train, users, validation.train.user_items)
        labels = np.array(
            [i in validation.relevant[u] for u, i in zip(table.users, table.items, strict=True)], np.float32
        )
        # Groups without a positive teach LambdaRank nothing; dropping them saves most of the rows.
        positives = np.add.reduceat(labels, np.r_[0, np.cumsum(table.group_sizes)[:-1]])
        keep_users = positives > 0
        row_user_index = np.repeat(np.arange(len(users)), table.group_sizes)
        keep_rows = keep_users[row_user_index]
        frame = table.features[keep_rows].reset_index(drop=True)
        labels, sizes = labels[keep_rows], table.group_sizes[keep_users]
        rng = np.random.default_rng(self.seed)
        eval_groups = rng.random(len(sizes)) < self.eval_share
        row_eval = np.repeat(eval_groups, sizes)
        params = {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [10],
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "seed": self.seed,
            "deterministic": True,
            "verbosity": -1,
            "num_threads": self.threads,
        }
        train_set = lgb.Dataset(frame[~row_eval], labels[~row_eval], group=sizes[~eval_groups])
        eval_set = lgb.Dataset(
            frame[row_eval], labels[row_eval], group=sizes[eval_groups], reference=train_set
        )
        self.booster = lgb.train(
            params,
            train_set,
            num_boost_round=self.max_rounds,
            valid_sets=[eval_set],
            valid_names=["held_out_users"],
            callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
        )
        self.best_iteration = int(self.booster.best_iteration or self.max_rounds)
        self.eval_ndcg = float(self.booster.best_score["held_out_users"]["ndcg@10"])
        names = self.generator_names
        self.training_table = frame.assign(
            user=table.users[keep_rows],
            item=table.items[keep_rows],
            label=labels,
            eval=row_eval,
            proposed_by=names[table.proposed_by[keep_rows]],
        )
        log.info(
            "ranker: %d candidate rows for %d users (%d with a positive), %d rounds, held-out NDCG@10 %.4f",
            len(table.users),
            len(users),
            int(keep_users.sum()),
            self.best_iteration,
            self.eval_ndcg,
        )
        for g in self.generators:
            g.model.fit(data)
        self.data, self.shared = data, None
        return self

    def feature_importance(self) -> pd.Series:
        """Total gain per feature, largest first: what the ranker's ordering rests on."""
        if self.booster is None:
            raise RuntimeError("fit the ranker first")
        gain = self.booster.feature_importance(importance_type="gain")
        return pd.Series(gain, index=self.feature_names).sort_values(ascending=False)

    # -- serving -------------------------------------------------------------------------------------

    def recommend(
        self,
        userids: np.ndarray,
        user_items: sp.csr_matrix,
        N: int = 10,
        filter_already_liked_items: bool = True,
        filter_items: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``N`` of each user's candidates by the ranker's score (padded with -1 / -inf when a user
        has fewer candidates)."""
        ids, scores, _ = self.recommend_with_reasons(
            userids, user_items, N, filter_already_liked_items, filter_items
        )
        return ids, scores

    def recommend_with_reasons(
        self,
        userids: np.ndarray,
        user_items: sp.csr_matrix,
        N: int = 10,
        filter_already_liked_items: bool = True,
        filter_items: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`recommend`, plus per slot the name of the generator that proposed the item."""
        if self.booster is None:
            raise RuntimeError("fit the ranker first")
        userids = np.asarray(userids, np.int64)
        ids = np.full((len(userids), N), -1, np.int64)
        scores = np.full((len(userids), N), -np.inf, np.float32)
        reasons = np.full((len(userids), N), "", object)
        names = self.generator_names
        chunks = self._candidate_chunks(
            self.generators,
            self.data,
            userids,
            user_items,
            filter_already_liked_items,
            filter_items,
            shared=self.shared,
        )
        for start, table in zip(range(0, len(userids), self.chunk_size), chunks, strict=True):
            predicted = self.booster.predict(table.features, num_iteration=self.best_iteration)
            offset = 0
            for row, size in enumerate(table.group_sizes):
                part = slice(offset, offset + size)
                order = np.argsort(-predicted[part], kind="stable")[:N]
                ids[start + row, : len(order)] = table.items[part][order]
                scores[start + row, : len(order)] = predicted[part][order]
                reasons[start + row, : len(order)] = names[table.proposed_by[part][order]]
                offset += size
        return ids, scores, reasons

    def score(self, userids: np.ndarray) -> np.ndarray:
        """The learned ordering's score of every item each user has not interacted with, proposed by a
        generator or not (-inf for the others, whose features are not defined: the features are the
        ones its lists are ranked by): what a caller that places items of its own in a list compares
        (e.g. the items nearest a user's generated looks)."""
        if self.booster is None:
            raise RuntimeError("fit the ranker first")
        userids = np.asarray(userids, np.int64)
        out = np.full((len(userids), self.data.n_items), -np.inf, np.float32)
        chunks = self._candidate_chunks(
            self.generators, self.data, userids, every_item=True, shared=self.shared
        )
        for start, table in zip(range(0, len(userids), self.chunk_size), chunks, strict=True):
            rows = start + np.repeat(np.arange(len(table.group_sizes)), table.group_sizes)
            out[rows, table.items] = self.booster.predict(table.features, num_iteration=self.best_iteration)
        return out

    @property
    def fits_shared(self) -> bool:
        """Whether :meth:`serve_on` can serve one shard of the users with ``shared`` statistics: every
        generator can be fitted from them (:meth:`Recommender.fit_shared`)."""
        return all(g.model.fits_shared for g in self.generators)

    def serve_on(
        self,
        data: TrainData,
        item_categories: list[str] | None = None,
        item_values: dict[str, np.ndarray] | None = None,
        shared: ItemCooccurrence | None = None,
    ) -> CandidateRanker:
        """Ready to recommend for ``data``'s users: every generator refitted on ``data``, the learned
        ordering unchanged (what scoring does each night with the registered ranker, whose catalog may
        have grown since). ``item_categories`` and ``item_values`` describe ``data``'s items, for the
        features the ranker learned with (the same value names). With ``shared`` (summed over every
        shard of the users, ``data`` one shard), the generators and the catalog's features come from
        every user's statistics, so a shard's lists are those of a ranker served on everyone."""
        if self.booster is None:
            raise RuntimeError("fit the ranker first")
        if (self.item_categories is None) != (item_categories is None):
            raise ValueError("give item categories exactly when the ranker learned with them")
        if set(item_values or {}) != set(self.item_values):
            raise ValueError(
                f"the ranker learned with item values {sorted(self.item_values)}, got {sorted(item_values or {})}"
            )
        self.item_categories = None if item_categories is None else list(item_categories)
        self.item_values = {k: np.asarray(v, np.float64) for k, v in (item_values or {}).items()}
        if shared is not None and not self.fits_shared:
            cannot = [g.name for g in self.generators if not g.model.fits_shared]
            raise ValueError(f"generators {cannot} cannot be fitted from statistics summed over shards")
        for g in self.generators:
            if shared is None:
                g.model.fit(data)
            else:
                g.model.fit_shared(shared, data)
        self.data, self.shared = data, shared
        return self

    def on(self, validation: Split) -> FixedValidation:
        """This ranker behind the one-argument ``fit(data)`` of every recommender (what
        :func:`visrec.recsys.train.fit_and_evaluate` calls), learning on ``validation``."""
        return FixedValidation(self, validation)

    # -- features ------------------------------------------------------------------------------------

    def _candidates(
        self,
        generators: list[Generator],
        data: TrainData,
        userids: np.ndarray,
        user_items: sp.csr_matrix | None = None,
    ) -> Candidates:
        """Candidates and their features for every one of ``userids`` (what the ranker trains on),
        without the items ``user_items`` (``data``'s by default) holds for each."""
        parts = list(self._candidate_chunks(generators, data, userids, user_items))
        return Candidates(
            np.concatenate([p.users for p in parts]),
            np.concatenate([p.items for p in parts]),
            pd.concat([p.features for p in parts], ignore_index=True),
            np.concatenate([p.group_sizes for p in parts]),
            np.concatenate([p.proposed_by for p in parts]),
        )

    def _candidate_chunks(
        self,
        generators: list[Generator],
        data: TrainData,
        userids: np.ndarray,
        user_items: sp.csr_matrix | None = None,
        filter_already_liked_items: bool = True,
        filter_items: np.ndarray | None = None,
        every_item: bool = False,
        shared: ItemCooccurrence | None = None,
    ) -> Iterator[Candidates]:
        """Candidates and their features for ``userids``, one chunk of ``chunk_size`` users at a time
        (in order); the catalog's statistics are computed once, before the first (from ``shared``,
        every shard's, when given). ``every_item``: rows for every item not filtered, proposed or not
        (what :meth:`score` predicts on)."""
        user_items = data.user_items if user_items is None else user_items
        binary = (data.user_items > 0).astype(np.float32)
        if shared is None:
            n_users = data.n_users
            item_popularity = np.asarray(binary.sum(axis=0)).ravel() / max(n_users, 1)
        else:
            n_users = shared.n_users
            # float32 counts, as the line above divides: the same features to the last bit.
            item_popularity = shared.users_per_item.astype(np.float32) / max(n_users, 1)
        # The user's own features come from the data the generators were fitted on (``user_items`` may
        # be a narrower filter, e.g. purchases only).
        user_binary = binary
        user_counts = np.asarray(user_binary.sum(axis=1)).ravel()
        user_log_items = np.log1p(user_counts)
        log_popularity = np.log(item_popularity + 1.0 / max(n_users, 1))
        user_log_popularity = (user_binary @ log_popularity) / np.maximum(user_counts, 1)
        user_values = {}
        for name, values in self.item_values.items():
            if len(values) != data.n_items:
                raise ValueError(f"item value {name!r}: {len(values)} values for {data.n_items} items")
            known = np.isfinite(values)
            total = user_binary @ np.where(known, values, 0.0)
            count = user_binary @ known.astype(np.float64)
            user_values[name] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        affinity = None
        if self.item_categories is not None:
            if len(self.item_categories) != data.n_items:
                raise ValueError(f"{len(self.item_categories)} item categories for {data.n_items} items")
            codes, names = pd.factorize(pd.Series(self.item_categories))
            one_hot = sp.csr_matrix(
                (np.ones(data.n_items, np.float32), (np.arange(data.n_items), codes)),
                shape=(data.n_items, len(names)),
            )
            per_user = (binary @ one_hot).toarray()
            affinity = (per_user / np.maximum(per_user.sum(axis=1, keepdims=True), 1.0), codes)
        # Ranks are exact down to ``depth`` and ``depth`` beyond: a full sort of every user's catalog
        # per generator was most of serving's time, and ranks that deep carry no order.
        depth = min(self.rank_depth or data.n_items, data.n_items)
        for start in range(0, len(userids), self.chunk_size):
            batch = userids[start : start + self.chunk_size]
            blocked = np.zeros((len(batch), data.n_items), bool)
            if filter_already_liked_items:
                blocked |= user_items[batch].toarray() > 0
            if filter_items is not None and len(filter_items):
                blocked[:, filter_items] = True
            dense = {}
            proposed = np.zeros((len(batch), data.n_items), np.int16)
            first = np.full((len(batch), data.n_items), -1, np.int16)
            row_index = np.arange(len(batch))[:, None]
            for index, g in enumerate(generators):
                s = np.asarray(g.model.score(batch), np.float32)
                s = np.where(blocked | np.isnan(s), -np.inf, s)
                top = top_by_score(s, depth)
                rank = np.full(s.shape, depth, np.int32)
                rank[row_index, top] = np.arange(depth, dtype=np.int32)
                best = s[row_index[:, 0], top[:, 0]][:, None]
                # The mean and spread of the user's finite scores (blocked items are -inf).
                finite = np.isfinite(s)
                count = np.count_nonzero(finite, axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean = (np.where(finite, s, 0.0).sum(axis=1, dtype=np.float64) / count).astype(np.float32)
                    centered = np.where(finite, s - mean[:, None], 0.0)
                    std = np.sqrt(np.einsum("ij,ij->i", centered, centered) / count)
                dense[g.name] = (s, rank, best, mean, np.where(std > 0, std, 1.0))
                if g.n:
                    proposed[row_index, top[:, : g.n]] += 1
                    mine = first[row_index, top[:, : g.n]]
                    first[row_index, top[:, : g.n]] = np.where(mine < 0, index, mine)
            rows, cols = np.nonzero(((first >= 0) | every_item) & ~blocked)
            columns = {}
            for g in generators:
                s, rank, best, mean, std = dense[g.name]
                score = s[rows, cols]
                columns[f"{g.name}_score"] = np.where(np.isfinite(score), score, np.nan)
                columns[f"{g.name}_rank"] = rank[rows, cols].astype(np.float32)
                columns[f"{g.name}_gap"] = columns[f"{g.name}_score"] - best[rows, 0]
                columns[f"{g.name}_z"] = (columns[f"{g.name}_score"] - mean[rows]) / std[rows]
            columns["proposed_by_count"] = proposed[rows, cols].astype(np.float32)
            columns["item_popularity"] = item_popularity[cols].astype(np.float32)
            columns["item_cold"] = (item_popularity[cols] == 0).astype(np.float32)
            columns["popularity_vs_user"] = (log_popularity[cols] - user_log_popularity[batch[rows]]).astype(
                np.float32
            )
            columns["user_log_items"] = user_log_items[batch[rows]].astype(np.float32)
            for name, values in self.item_values.items():
                columns[name] = values[cols].astype(np.float32)
                columns[f"{name}_vs_user"] = (values[cols] - user_values[name][batch[rows]]).astype(
                    np.float32
                )
            if affinity is not None:
                shares, codes = affinity
                columns["category_affinity"] = shares[batch[rows], codes[cols]].astype(np.float32)
            yield Candidates(
                batch[rows],
                cols.astype(np.int64),
                pd.DataFrame(columns, columns=self.feature_names),
                np.bincount(rows, minlength=len(batch)),
                first[rows, cols].astype(np.int64),
            )
