"""Recommenders behind one batch-first interface, after benfred/implicit:

    model.fit(data)
    ids, scores = model.recommend(userids, user_items, N=20, filter_already_liked_items=True,
                                  filter_items=None)

Users and items are integer indices (``TrainData`` holds the id maps). ``recommend`` scores users in
chunks (memory is chunk x items, never users x items) and selects with the one top-K of
:mod:`visrec.models.topk` (filters, padding with id -1 and score -inf).

Factor models (scores ``u . V + b``) inherit ``FactorRecommender``, whose ``recommend`` hands its
vectors to ``topk`` itself: the product, the filters and the selection in one graph per chunk.

Implemented here: ``Popularity`` (recent window), ``ItemCF`` (cosine item-item co-occurrence) and
``SparkItemCF`` (the same, computed by a Spark job), ``SparkALS`` (Spark ML implicit ALS),
``VisualProfile`` (content only: the user's mean image embedding), ``VisualNeighbours`` (look-alikes
of the user's recent items), ``RP3Beta`` (a popularity-damped
random walk), ``EASE`` and ``LowRankEASE`` (closed-form item-item). VBPR lives in :mod:`visrec.recsys.vbpr`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from visrec.models.topk import GROUP, topk, topk_scores
from visrec.recsys.data import TrainData
from visrec.recsys.spark_item_cf import item_similarities

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class Recommender:
    """Base class: subclasses implement ``fit`` and ``score`` (dense scores for some users), and
    ``fit_shared`` where the model can score one shard of the users as if fitted on all of them."""

    chunk_size = 2048
    # Whether ``fit_shared`` is implemented (what lets Spark shards serve a ranker over this model).
    fits_shared = False

    def fit(self, data: TrainData) -> Recommender:
        raise NotImplementedError

    def fit_shared(self, shared: ItemCooccurrence, data: TrainData) -> Recommender:
        """Fitted to score ``data``'s users (one shard of every user) as :meth:`fit` on every user
        would: what spans users comes from ``shared``, summed over every shard
        (:class:`ItemCooccurrence`), the rest from ``data``."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot be fitted from statistics summed over shards"
        )

    def score(self, userids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def recommend(
        self,
        userids: np.ndarray,
        user_items: sp.csr_matrix,
        N: int = 10,
        filter_already_liked_items: bool = True,
        filter_items: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``N`` items for each of ``userids``: (ids, scores), each (len(userids), N); already-liked
        items (non-zeros of ``user_items``' rows) and ``filter_items`` are never returned."""
        userids = np.asarray(userids, dtype=np.int64)
        liked = user_items[userids] if filter_already_liked_items else None
        all_ids, all_scores = [], []
        for start in range(0, len(userids), self.chunk_size):
            stop = start + self.chunk_size
            ids, scores = topk_scores(
                self.score(userids[start:stop]),
                N,
                filter_query_items=None if liked is None else liked[start:stop],
                filter_items=filter_items,
            )
            all_ids.append(ids)
            all_scores.append(scores)
        if not all_ids:
            k = min(N, user_items.shape[1])
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        return np.concatenate(all_ids), np.concatenate(all_scores)


class FactorRecommender(Recommender):
    """A model whose scores are ``user_vectors @ item_vectors.T + item_biases`` (biases optional);
    subclasses set the three arrays in ``fit``."""

    user_vectors: np.ndarray
    item_vectors: np.ndarray
    item_biases: np.ndarray | None = None
    chunk_size = 4096
    group_size = GROUP

    def score(self, userids: np.ndarray) -> np.ndarray:
        scores = self.user_vectors[userids] @ self.item_vectors.T
        return scores if self.item_biases is None else scores + self.item_biases[None, :]

    def recommend(self, userids, user_items, N=10, filter_already_liked_items=True, filter_items=None):
        userids = np.asarray(userids, dtype=np.int64)
        return topk(
            self.item_vectors,
            self.user_vectors[userids],
            N,
            item_biases=self.item_biases,
            filter_query_items=user_items[userids] if filter_already_liked_items else None,
            filter_items=filter_items,
            chunk=self.chunk_size,
            group=self.group_size,
        )


class VisualProfile(FactorRecommender):
    """Content-based: a user's profile is the confidence-weighted mean of the image embeddings of their
    items, and an item scores its cosine with it. Knows nothing of other users, so it reaches items
    nobody has bought yet as easily as popular ones (the content baseline for VBPR)."""

    fits_shared = True

    def fit_shared(self, shared: ItemCooccurrence, data: TrainData) -> VisualProfile:
        return self.fit(data)  # a user's scores are of their own rows and the catalog's embeddings

    def fit(self, data: TrainData) -> VisualProfile:
        if data.item_features is None:
            raise ValueError("VisualProfile needs TrainData.item_features (the image embeddings)")
        profiles = np.asarray(data.user_items @ data.item_features, dtype=np.float32)
        norms = np.linalg.norm(profiles, axis=1, keepdims=True)
        self.user_vectors = profiles / np.where(norms > 0, norms, 1.0)
        self.item_vectors = data.item_features.astype(np.float32)
        self.item_biases = None
        return self


class VisualNeighbours(Recommender):
    """Content-based, item by item: an item scores its highest cosine with any of the user's recent
    items (the last days' window of ``TrainData.recent_user_items``; all their items when they have
    none recent). Where :class:`VisualProfile` averages a user's taste into one point, this follows
    each thing they looked at lately, so a user who browses two styles gets look-alikes of both; like
    it, it reaches items nobody has bought yet. A candidate generator for the ranker."""

    fits_shared = True

    def __init__(self, recent_items: int = 10):
        if recent_items < 1:
            raise ValueError(f"VisualNeighbours needs recent_items >= 1, got {recent_items}")
        self.recent_items = recent_items
        self.item_features: np.ndarray | None = None
        self.anchors: list[np.ndarray] = []

    def fit(self, data: TrainData) -> VisualNeighbours:
        if data.item_features is None:
            raise ValueError("VisualNeighbours needs TrainData.item_features (the image embeddings)")
        self.item_features = data.item_features.astype(np.float32)
        recent = (data.recent_user_items if data.recent_user_items is not None else data.user_items).tocsr()
        every = data.user_items.tocsr()
        self.anchors = []
        for u in range(data.n_users):
            row = recent[u] if recent[u].nnz else every[u]
            # The user's strongest recent items (by confidence), at most ``recent_items`` of them.
            keep = np.argsort(-row.data, kind="stable")[: self.recent_items]
            self.anchors.append(row.indices[keep])
        return self

    def fit_shared(self, shared: ItemCooccurrence, data: TrainData) -> VisualNeighbours:
        return self.fit(data)  # a user's scores are of their own rows and the catalog's embeddings

    def score(self, userids: np.ndarray) -> np.ndarray:
        scores = np.zeros((len(userids), len(self.item_features)), np.float32)
        for row, u in enumerate(np.asarray(userids)):
            anchors = self.anchors[u]
            if len(anchors):
                scores[row] = (self.item_features[anchors] @ self.item_features.T).max(axis=0)
        return scores


class Popularity(Recommender):
    """What most users interacted with recently (the same list for everyone)."""

    fits_shared = True

    def __init__(self):
        self.popularity: np.ndarray | None = None

    def fit(self, data: TrainData) -> Popularity:
        recent = data.recent_user_items if data.recent_user_items is not None else data.user_items
        self.popularity = popularity_scores(users_per_item(recent), users_per_item(data.user_items))
        return self

    def fit_shared(self, shared: ItemCooccurrence, data: TrainData) -> Popularity:
        self.popularity = popularity_scores(shared.recent, shared.users_per_item)
        return self

    def score(self, userids: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity, (len(userids), len(self.popularity)))


@dataclass
class PopularityCounts:
    """What popularity lists are made of, summable over disjoint sets of users (shards): per item,
    how many users touched it recently and ever, and per segment its number of users and recent counts."""

    recent: np.ndarray  # (n_items,) int64
    all_time: np.ndarray  # (n_items,) int64
    segments: dict[str, tuple[int, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def of(cls, data: TrainData, segments: list[str | None]) -> PopularityCounts:
        if len(segments) != data.n_users:
            raise ValueError(f"{len(segments)} segments for {data.n_users} users")
        recent = data.recent_user_items if data.recent_user_items is not None else data.user_items
        labels = np.array([s or "" for s in segments])
        by_segment = {}
        for segment in sorted(set(labels) - {""}):
            rows = np.flatnonzero(labels == segment)
            by_segment[segment] = (len(rows), users_per_item(recent[rows]))
        return cls(users_per_item(recent), users_per_item(data.user_items), by_segment)

    def __add__(self, other: PopularityCounts) -> PopularityCounts:
        segments = dict(self.segments)
        for name, (users, counts) in other.segments.items():
            mine = segments.get(name, (0, np.zeros_like(counts)))
            segments[name] = (mine[0] + users, mine[1] + counts)
        return PopularityCounts(self.recent + other.recent, self.all_time + other.all_time, segments)


def users_per_item(matrix: sp.spmatrix) -> np.ndarray:
    """How many users (rows) have each item (column) non-zero."""
    return np.asarray((matrix > 0).sum(axis=0)).ravel().astype(np.int64)


@dataclass
class ItemCooccurrence:
    """What the item-item models, popularity and the ranker's catalog features are fitted from,
    summable over disjoint sets of users (shards): how many users have each pair of items (the binary
    user-item matrix's Gram; its diagonal, how many have each item), how many touched each item
    recently, and how many users there are."""

    gram: sp.csr_matrix  # (n_items, n_items) float64, exact counts
    recent: np.ndarray  # (n_items,) int64
    n_users: int

    @classmethod
    def of(cls, data: TrainData) -> ItemCooccurrence:
        binary = (data.user_items > 0).astype(np.float64).tocsc()
        recent = data.recent_user_items if data.recent_user_items is not None else data.user_items
        return cls((binary.T @ binary).tocsr(), users_per_item(recent), data.n_users)

    @property
    def users_per_item(self) -> np.ndarray:
        return self.gram.diagonal()

    def __add__(self, other: ItemCooccurrence) -> ItemCooccurrence:
        return ItemCooccurrence(
            (self.gram + other.gram).tocsr(), self.recent + other.recent, self.n_users + other.n_users
        )


def popularity_scores(recent: np.ndarray, all_time: np.ndarray) -> np.ndarray:
    """Users per item recently; ties broken by all-time popularity, then by index: deterministic."""
    all_time = all_time.astype(np.float32)
    return recent.astype(np.float32) + all_time / (all_time.max() + 1.0) * 0.5


class SegmentPopularity(Recommender):
    """What is popular recently among users of the same segment (``new``, ``loyal``, ...); users with
    no segment, or of a segment with fewer than ``min_users`` members, get the global list."""

    def __init__(self, segments: list[str | None], min_users: int = 20):
        self.segments, self.min_users = list(segments), min_users
        self.global_: np.ndarray | None = None
        self.by_segment: dict[str, np.ndarray] = {}

    def fit(self, data: TrainData) -> SegmentPopularity:
        return self.fit_counts(PopularityCounts.of(data, self.segments))

    def fit_counts(self, counts: PopularityCounts) -> SegmentPopularity:
        """Fit from counts (e.g. summed over every shard of the users)."""
        self.global_ = popularity_scores(counts.recent, counts.all_time)
        self.by_segment = {
            # The global list breaks ties (and fills in items the segment never touched).
            segment: recent.astype(np.float32) + self.global_ / (self.global_.max() + 1.0) * 0.5
            for segment, (users, recent) in counts.segments.items()
            if users >= self.min_users
        }
        return self

    def for_users(self, segments: list[str | None]) -> SegmentPopularity:
        """The fitted lists, scoring another set of users (e.g. a subset) by their segments."""
        out = SegmentPopularity(segments, self.min_users)
        out.global_, out.by_segment = self.global_, self.by_segment
        return out

    def score(self, userids: np.ndarray) -> np.ndarray:
        return np.stack([self.by_segment.get(self.segments[u] or "", self.global_) for u in userids])


class ItemCF(Recommender):
    """Item-item collaborative filtering: score(u, i) = sum over u's items j of cos(i, j), with each
    item keeping its ``neighbours`` most similar items (cosine of binary user-item columns)."""

    def __init__(self, neighbours: int = 100):
        self.neighbours = neighbours
        self.similarity: sp.csr_matrix | None = None
        self.user_items: sp.csr_matrix | None = None

    fits_shared = True

    def fit(self, data: TrainData) -> ItemCF:
        return self.fit_shared(ItemCooccurrence.of(data), data)

    def fit_shared(self, shared: ItemCooccurrence, data: TrainData) -> ItemCF:
        counts = shared.users_per_item
        sim = shared.gram.copy()  # co-occurrence counts, exact
        sim.setdiag(0)
        sim.eliminate_zeros()
        sim.sort_indices()  # ties in the top-neighbours cut go to the lower index, as in the Spark job
        rows = np.repeat(np.arange(sim.shape[0]), np.diff(sim.indptr))
        # The Spark job's formula and rounding (double, then float32), so both keep the same neighbours.
        sim.data = sim.data / np.sqrt(counts[rows] * counts[sim.indices])
        self.similarity = _keep_top_per_row(sim.astype(np.float32), self.neighbours)
        self.user_items = (data.user_items > 0).astype(np.float32).tocsr()
        return self

    def score(self, userids: np.ndarray) -> np.ndarray:
        return np.asarray((self.user_items[userids] @ self.similarity).todense())


class RP3Beta(Recommender):
    """RP3beta (Paudel et al. 2017): a three-step random walk user -> item -> user -> item over the
    binary interactions, each item's arrival probability divided by its popularity to the power
    ``beta`` (so the walk does not only end on best-sellers); each item keeps its ``neighbours``
    strongest successors. A graph model that ranks differently from EASE and item-CF: a second
    opinion for the candidate ranker."""

    def __init__(self, beta: float = 0.6, neighbours: int = 200):
        if beta < 0:
            raise ValueError(f"RP3Beta needs beta >= 0, got {beta}")
        if neighbours < 1:
            raise ValueError(f"RP3Beta needs neighbours >= 1, got {neighbours}")
        self.beta, self.neighbours = beta, neighbours
        self.similarity: sp.csr_matrix | None = None
        self.user_items: sp.csr_matrix | None = None

    def fit(self, data: TrainData) -> RP3Beta:
        binary = (data.user_items > 0).astype(np.float32).tocsr()
        per_user = np.asarray(binary.sum(axis=1)).ravel()
        per_item = np.asarray(binary.sum(axis=0)).ravel()
        user_to_item = sp.diags(1.0 / np.maximum(per_user, 1.0)) @ binary
        item_to_user = sp.diags(1.0 / np.maximum(per_item, 1.0)) @ binary.T.tocsr()
        walk = (item_to_user @ user_to_item).tocsr()
        walk = walk @ sp.diags(np.maximum(per_item, 1.0) ** -self.beta)
        walk.setdiag(0)
        walk.eliminate_zeros()
        walk.sort_indices()
        self.similarity = _keep_top_per_row(walk.tocsr().astype(np.float32), self.neighbours)
        self.user_items = binary
        return self

    def score(self, userids: np.ndarray) -> np.ndarray:
        return np.asarray((self.user_items[userids] @ self.similarity).todense())


# EASE's solve holds two items x items float64 matrices: 3.2 GB each at this many items.
EASE_MAX_ITEMS = 20_000


class EASE(Recommender):
    """EASE (Steck 2019): item-item weights in closed form, ``B = I - P / diag(P)`` with
    ``P = (X^T X + l2 I)^-1`` over the binary user-item matrix ``X``, zero diagonal; score(u) = X_u B.
    The solve holds a dense items x items matrix in float64: ``max_items`` (20,000: 3.2 GB for the
    matrix and as much for its inverse) refuses larger catalogs with a clear error rather than
    exhausting memory."""

    def __init__(self, l2: float = 500.0, max_items: int = EASE_MAX_ITEMS):
        if l2 <= 0:
            raise ValueError(f"EASE needs l2 > 0, got {l2}")
        self.l2, self.max_items = l2, max_items
        self.weights: np.ndarray | None = None
        self.user_items: sp.csr_matrix | None = None

    fits_shared = True

    def fit(self, data: TrainData) -> EASE:
        self._check(data.n_items)  # before the co-occurrence of a catalog too large is counted
        return self.fit_shared(ItemCooccurrence.of(data), data)

    def _check(self, n_items: int) -> None:
        if n_items > self.max_items:
            raise ValueError(
                f"EASE solves an items x items system: {n_items} items is over max_items={self.max_items}; "
                "use ItemCF or a factor model for a catalog this large"
            )

    def fit_shared(self, shared: ItemCooccurrence, data: TrainData) -> EASE:
        self._check(data.n_items)
        gram = shared.gram.toarray()
        gram[np.diag_indices_from(gram)] += self.l2
        inverse = np.linalg.inv(gram)
        weights = inverse / -np.diag(inverse)[None, :]
        weights[np.diag_indices_from(weights)] = 0.0
        self.weights = weights.astype(np.float32)
        self.user_items = (data.user_items > 0).astype(np.float32).tocsr()
        return self

    def score(self, userids: np.ndarray) -> np.ndarray:
        return np.asarray(self.user_items[userids] @ self.weights)


class LowRankEASE(FactorRecommender):
    """:class:`EASE` as a factor model, so the nightly run's factor scoring serves it: the item-item
    weights ``B`` are cut to their ``rank`` largest singular directions (``B ~ U S V^T``, a randomized
    SVD), user vectors ``X_u U S``, item vectors ``V``. On ML-1M rank 128 kept NDCG@10 0.467 of the full
    solve's 0.471. Items nobody touched have no weights: they get a bias far below every score, so they
    never fill a list (VBPR's images rank new items; EASE has nothing to rank them by)."""

    def __init__(self, l2: float = 500.0, rank: int = 128, max_items: int = EASE_MAX_ITEMS, seed: int = 42):
        if rank < 1:
            raise ValueError(f"LowRankEASE needs rank >= 1, got {rank}")
        self.l2, self.rank, self.max_items, self.seed = l2, rank, max_items, seed

    def fit(self, data: TrainData) -> LowRankEASE:
        # Here, not at the top: importing scikit-learn's extmath takes about 2 s (measured), which every
        # importer of the baselines (visrec.api, `visrec --help` through the steps) would pay.
        from sklearn.utils.extmath import randomized_svd

        full = EASE(self.l2, self.max_items).fit(data)
        rank = min(self.rank, data.n_items - 1)
        left, singular, right = randomized_svd(full.weights, rank, random_state=self.seed)
        self.user_vectors = np.asarray(full.user_items @ (left * singular), np.float32)
        self.item_vectors = np.ascontiguousarray(right.T, np.float32)
        cold = np.asarray((data.user_items > 0).sum(axis=0)).ravel() == 0
        self.item_biases = np.where(cold, np.float32(-1e6), np.float32(0.0)).astype(np.float32)
        return self


class SparkItemCF(ItemCF):
    """``ItemCF`` with the similarities computed by the Spark job ``visrec.recsys.spark_item_cf`` (for
    interaction logs larger than one machine's memory); scoring is the same sparse product."""

    def __init__(self, spark: SparkSession, neighbours: int = 100, max_items_per_user: int | None = None):
        super().__init__(neighbours)
        self.spark, self.max_items_per_user = spark, max_items_per_user

    def fit(self, data: TrainData) -> SparkItemCF:
        import pandas as pd

        coo = data.user_items.tocoo()
        pairs = self.spark.createDataFrame(
            pd.DataFrame(
                {
                    "user": coo.row.astype(np.int32),
                    "item": coo.col.astype(np.int32),
                    "confidence": coo.data.astype(np.float64),
                }
            )
        )
        sims = item_similarities(pairs, self.neighbours, self.max_items_per_user).toArrow()
        self.similarity = sp.csr_matrix(
            (
                sims.column("similarity").to_numpy(),
                (sims.column("item").to_numpy(), sims.column("other").to_numpy()),
            ),
            shape=(data.n_items, data.n_items),
            dtype=np.float32,
        )
        self.user_items = (data.user_items > 0).astype(np.float32).tocsr()
        return self


def _keep_top_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    rows, cols, vals = [], [], []
    for r in range(matrix.shape[0]):
        start, end = matrix.indptr[r], matrix.indptr[r + 1]
        if end == start:
            continue
        data, idx = matrix.data[start:end], matrix.indices[start:end]
        keep = np.argsort(-data, kind="stable")[:k]
        rows.append(np.full(len(keep), r))
        cols.append(idx[keep])
        vals.append(data[keep])
    if not rows:
        return sp.csr_matrix(matrix.shape, dtype=np.float32)
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=matrix.shape
    )


class SparkALS(FactorRecommender):
    """Spark ML's implicit-feedback ALS (Hu, Koren & Volinsky). Needs a SparkSession with a
    checkpoint directory (``visrec.store.spark.get_spark`` sets one: without it ALS overflows its stack)."""

    def __init__(
        self,
        spark: SparkSession,
        factors: int = 32,
        regularization: float = 0.05,
        alpha: float = 10.0,
        iterations: int = 10,
        seed: int = 42,
    ):
        self.spark = spark
        self.factors, self.regularization, self.alpha = factors, regularization, alpha
        self.iterations, self.seed = iterations, seed

    def fit(self, data: TrainData) -> SparkALS:
        from pyspark.ml.recommendation import ALS

        coo = data.user_items.tocoo()
        frame = self.spark.createDataFrame(
            list(zip(coo.row.tolist(), coo.col.tolist(), coo.data.astype(float).tolist(), strict=True)),
            "user int, item int, confidence double",
        )
        als = ALS(
            rank=self.factors,
            maxIter=self.iterations,
            regParam=self.regularization,
            alpha=self.alpha,
            implicitPrefs=True,
            userCol="user",
            itemCol="item",
            ratingCol="confidence",
            seed=self.seed,
            checkpointInterval=5,
            nonnegative=False,
            coldStartStrategy="nan",
        )
        model = als.fit(frame)
        self.user_vectors = _factor_matrix(model.userFactors.collect(), data.n_users, self.factors)
        self.item_vectors = _factor_matrix(model.itemFactors.collect(), data.n_items, self.factors)
        return self


def _factor_matrix(rows, n: int, k: int) -> np.ndarray:
    out = np.zeros((n, k), np.float32)
    for row in rows:
        out[row["id"]] = row["features"]
    return out
