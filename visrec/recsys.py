"""From lake tables to recommendations: the temporal split, the model comparison, training and
registering ``visrec-mf``, and batch scoring of every user into the ``recommendations`` table.

Evaluation uses a global time cut: events before ``end of ds - VISREC_TEST_DAYS`` train, and the
(user, item) pairs with a click, cart or purchase after it (and not already in the user's training
history) are what a model should find. Item ids are those with an image embedding (the catalog the
visual models can see); events on other items are counted and left out.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from visrec.evaluate import evaluate
from visrec.jobs.features import end_of_day
from visrec.lake import Lake
from visrec.recommenders import FactorRecommender, Recommender, TrainData
from visrec.settings import Settings

log = logging.getLogger(__name__)
MODEL_NAME = "visrec-mf"
INTENT_EVENTS = ("click", "add_to_cart", "purchase")


@dataclass
class Split:
    """Training data before the cut and what each user did after it."""

    train: TrainData
    relevant: list[set[int]]
    cold: np.ndarray  # items with no interaction before the cut
    cut: datetime
    dropped_events: int


def load_events(lake: Lake, ds: str) -> pd.DataFrame:
    """Clean events of every partition up to ``ds`` (later partitions are not read)."""
    table = lake.read_table("events", [d for d in lake.partitions("events") if d <= ds])
    return table.select(["user_id", "item_id", "event_type", "ts"]).to_pandas()


def item_embeddings(lake: Lake, ds: str) -> tuple[list[str], np.ndarray, str]:
    """(item ids, embeddings, CNN version) of the newest ``item_embeddings`` at or before ``ds``."""
    from visrec.vision import embeddings_matrix, latest_partition

    table = lake.read_table("item_embeddings", latest_partition(lake, "item_embeddings", ds))
    versions = sorted(set(table.column("model_version").to_pylist()))
    return table.column("item_id").to_pylist(), embeddings_matrix(table), ",".join(versions)


def confidence_matrix(events: pd.DataFrame, users: dict[str, int], items: dict[str, int], ref: datetime,
                      settings: Settings) -> sp.csr_matrix:  # fmt: skip
    """Users x items confidence, the same formula as the ``interactions`` table, aged to ``ref``."""
    if events.empty:
        return sp.csr_matrix((len(users), len(items)), dtype=np.float32)
    weights = settings.weights()
    age_days = (pd.Timestamp(ref, tz="UTC") - events["ts"]).dt.total_seconds().to_numpy() / 86400.0
    value = events["event_type"].map(weights).to_numpy() * 0.5 ** (age_days / settings.decay_half_life_days)
    rows = events["user_id"].map(users).to_numpy()
    cols = events["item_id"].map(items).to_numpy()
    matrix = sp.coo_matrix((value.astype(np.float32), (rows, cols)), shape=(len(users), len(items))).tocsr()
    matrix.sum_duplicates()
    return matrix


def _frame_indexed(events: pd.DataFrame, item_index: dict[str, int]) -> tuple[pd.DataFrame, int]:
    known = events["item_id"].isin(item_index.keys())
    return events[known], int((~known).sum())


def build_split(settings: Settings, lake: Lake, ds: str, events: pd.DataFrame | None = None) -> Split:
    """The evaluation split as of ``ds`` (see the module docstring); ``events`` as ``load_events``
    gives them, when the caller has them already."""
    item_ids, features, _ = item_embeddings(lake, ds)
    item_index = {item: k for k, item in enumerate(item_ids)}
    events, dropped = _frame_indexed(load_events(lake, ds) if events is None else events, item_index)
    cut = end_of_day(ds) - timedelta(days=settings.test_days)
    cut_ts = pd.Timestamp(cut, tz="UTC")
    train_events = events[events["ts"] < cut_ts]
    test_events = events[(events["ts"] >= cut_ts) & events["event_type"].isin(INTENT_EVENTS)]
    user_ids = sorted(set(events["user_id"]))
    user_index = {u: k for k, u in enumerate(user_ids)}
    train = confidence_matrix(train_events, user_index, item_index, cut, settings)
    recent = confidence_matrix(train_events[train_events["ts"] >= cut_ts - pd.Timedelta(days=7)], user_index,
                               item_index, cut, settings)  # fmt: skip
    relevant: list[set[int]] = [set() for _ in user_ids]
    for user, item in zip(
        test_events["user_id"].map(user_index), test_events["item_id"].map(item_index), strict=True
    ):
        relevant[user].add(int(item))
    for u in range(len(user_ids)):
        relevant[u] -= set(train.indices[train.indptr[u] : train.indptr[u + 1]].tolist())
    cold = np.asarray((train > 0).sum(axis=0)).ravel() == 0
    data = TrainData(train, features, recent, user_ids, item_ids)
    return Split(data, relevant, cold, cut, dropped)


def evaluate_model(model: Recommender, split: Split, k: int = 20) -> dict[str, float]:
    """Fit on the split's training data and measure every metric on its test window."""
    if split.train.user_items.nnz == 0:
        from visrec.errors import VisrecError

        raise VisrecError(
            f"no interactions before the cut {split.cut:%Y-%m-%d %H:%M}; ingest more days or lower VISREC_TEST_DAYS"
        )
    started = time.perf_counter()
    model = model.fit(split.train)  # a frozen FactorScorer returns an aligned copy rather than itself
    fit_seconds = time.perf_counter() - started
    users = np.array([u for u, rel in enumerate(split.relevant) if rel], dtype=np.int64)
    ids, _ = model.recommend(users, split.train.user_items, N=k, filter_already_liked_items=True)
    relevant = [split.relevant[u] for u in users]
    counts = np.asarray((split.train.user_items > 0).sum(axis=0)).ravel()
    metrics = evaluate(ids, relevant, k=k, n_items=split.train.n_items, cold=split.cold,
                       embeddings=split.train.item_features, item_user_counts=counts,
                       n_users=split.train.n_users)  # fmt: skip
    metrics["fit_seconds"] = fit_seconds
    metrics["test_users"] = float(len(users))
    return metrics


def full_data(settings: Settings, lake: Lake, ds: str, events: pd.DataFrame | None = None) -> TrainData:
    """All events up to the end of ``ds``: what the production model trains on."""
    item_ids, features, _ = item_embeddings(lake, ds)
    item_index = {item: k for k, item in enumerate(item_ids)}
    events, _ = _frame_indexed(load_events(lake, ds) if events is None else events, item_index)
    user_ids = sorted(set(events["user_id"]))
    user_index = {u: k for k, u in enumerate(user_ids)}
    ref = end_of_day(ds)
    matrix = confidence_matrix(events, user_index, item_index, ref, settings)
    recent_events = events[events["ts"] >= pd.Timestamp(ref - timedelta(days=7), tz="UTC")]
    recent = confidence_matrix(recent_events, user_index, item_index, ref, settings)
    return TrainData(matrix, features, recent, user_ids, item_ids)


def purchased_matrix(events: pd.DataFrame, data: TrainData) -> sp.csr_matrix:
    """Users x items, 1 where the user already bought the item (never recommended again)."""
    user_index = {u: k for k, u in enumerate(data.user_ids)}
    item_index = {i: k for k, i in enumerate(data.item_ids)}
    bought = events[(events["event_type"] == "purchase") & events["item_id"].isin(item_index.keys())
                    & events["user_id"].isin(user_index.keys())]  # fmt: skip
    rows = bought["user_id"].map(user_index).to_numpy()
    cols = bought["item_id"].map(item_index).to_numpy()
    out = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(data.n_users, data.n_items))
    out.sum_duplicates()
    return out


def score_all_users(
    model: Recommender,
    data: TrainData,
    purchased: sp.csr_matrix,
    categories: list[str],
    *,
    k: int = 20,
    max_per_category: int | None = None,
    exclude: list[str] | None = None,
    model_version: str = "",
    source: str = "mf",
    chunk: int = 2048,
) -> pa.Table:
    """Top ``k`` for every user in chunks: already-bought and excluded items filtered, at most
    ``max_per_category`` items of one category per list (greedy over 3k candidates)."""
    item_index = {i: n for n, i in enumerate(data.item_ids)}
    filter_items = np.array([item_index[i] for i in (exclude or []) if i in item_index], dtype=np.int64)
    cats = np.array(categories)
    users_out, ranks, items_out, scores_out = [], [], [], []

    def pick(ids: np.ndarray, scores: np.ndarray) -> tuple[list[int], list[float]]:
        chosen, chosen_scores, per_cat = [], [], {}
        for item, score in zip(ids, scores, strict=True):
            if item < 0:
                break
            if max_per_category is not None and per_cat.get(cats[item], 0) >= max_per_category:
                continue
            per_cat[cats[item]] = per_cat.get(cats[item], 0) + 1
            chosen.append(int(item))
            chosen_scores.append(float(score))
            if len(chosen) == k:
                break
        return chosen, chosen_scores

    for start in range(0, data.n_users, chunk):
        users = np.arange(start, min(start + chunk, data.n_users))
        picked: dict[int, tuple[list[int], list[float]]] = {}
        todo, depth = users, k if max_per_category is None else min(3 * k, data.n_items)
        # The category cap can skip many candidates: users left short are asked again, deeper.
        while len(todo):
            ids, scores = model.recommend(todo, purchased, N=depth, filter_already_liked_items=True,
                                          filter_items=filter_items)  # fmt: skip
            short = []
            for row, user in enumerate(todo):
                picked[user] = pick(ids[row], scores[row])
                if len(picked[user][0]) < k and depth < data.n_items and ids[row, -1] >= 0:
                    short.append(user)
            todo, depth = np.array(short, dtype=np.int64), min(4 * depth, data.n_items)
        for user in users:
            chosen, chosen_scores = picked[user]
            users_out.extend([data.user_ids[user]] * len(chosen))
            ranks.extend(range(1, len(chosen) + 1))
            items_out.extend(data.item_ids[i] for i in chosen)
            scores_out.extend(chosen_scores)
    return pa.table({
        "user_id": users_out, "rank": pa.array(ranks, pa.int16()), "item_id": items_out,
        "score": pa.array(scores_out, pa.float32()), "source": [source] * len(users_out),
        "model_version": [model_version] * len(users_out),
    })  # fmt: skip


class FactorScorer(FactorRecommender):
    """A trained factor model frozen into arrays (user vectors, item vectors, item biases) with its
    own id maps, aligned to another index: how the registered champion scores today's users.
    Users or items the model never saw get no score from it (-inf), so callers can fall back."""

    def __init__(self, user_ids, item_ids, user_vectors, item_vectors, item_biases, version: str = "",
                 visual_preference: np.ndarray | None = None):  # fmt: skip
        self.user_ids, self.item_ids = list(user_ids), list(item_ids)
        self.user_vectors, self.item_vectors = user_vectors, item_vectors
        self.item_biases, self.version = item_biases, version
        self.visual_preference = visual_preference  # (users, embedding dim): VBPR's taste for any image

    @classmethod
    def from_model(cls, model, data: TrainData, version: str = "") -> FactorScorer:
        return cls(data.user_ids, data.item_ids, model.user_vectors, model.item_vectors, model.item_biases,
                   version, getattr(model, "visual_preference", None))  # fmt: skip

    def save(self, path) -> None:
        extra = {} if self.visual_preference is None else {"visual_preference": self.visual_preference}
        np.savez_compressed(path, user_ids=np.array(self.user_ids, dtype=object), item_ids=np.array(self.item_ids, dtype=object),
                            user_vectors=self.user_vectors, item_vectors=self.item_vectors, item_biases=self.item_biases,
                            **extra)  # fmt: skip

    @classmethod
    def load(cls, path, version: str = "") -> FactorScorer:
        z = np.load(path, allow_pickle=True)
        return cls(z["user_ids"].tolist(), z["item_ids"].tolist(), z["user_vectors"], z["item_vectors"],
                   z["item_biases"], version, z["visual_preference"] if "visual_preference" in z else None)  # fmt: skip

    def aligned(self, user_ids: list[str], item_ids: list[str]) -> FactorScorer:
        """The same model indexed by ``user_ids`` x ``item_ids``; unknown rows score -inf."""
        dim = self.user_vectors.shape[1]
        u_pos = {u: k for k, u in enumerate(self.user_ids)}
        i_pos = {i: k for k, i in enumerate(self.item_ids)}
        users = np.zeros((len(user_ids), dim), np.float32)
        known_users = np.zeros(len(user_ids), bool)
        for k, u in enumerate(user_ids):
            if u in u_pos:
                users[k], known_users[k] = self.user_vectors[u_pos[u]], True
        items = np.zeros((len(item_ids), dim), np.float32)
        biases = np.full(len(item_ids), -np.inf, np.float32)
        for k, i in enumerate(item_ids):
            if i in i_pos:
                items[k], biases[k] = self.item_vectors[i_pos[i]], self.item_biases[i_pos[i]]
        out = FactorScorer(user_ids, item_ids, users, items, biases, self.version)
        out.known_users = known_users
        return out

    def fit(self, data: TrainData) -> FactorScorer:  # frozen: aligning is its "fit"
        return self.aligned(data.user_ids, data.item_ids)


@dataclass
class MFConfig:
    """Hyperparameters of the nightly recommender (VBPR) and its evaluation."""

    factors: int = 32
    visual_factors: int = 32
    epochs: int = 20
    learning_rate: float = 0.005
    l2: float = 1e-5  # chosen on the synthetic bench's split (see bench/RESULTS.md)
    negatives: int = 4
    k: int = 20
    max_per_category: int | None = 8
    gate_metric: str = "recall_at_20"
    gate_tolerance: float = 0.002
    register: bool = True


def _vbpr(config: MFConfig, seed: int):
    from visrec.models.mf import VBPRRecommender

    return VBPRRecommender(config.factors, config.visual_factors, config.epochs, learning_rate=config.learning_rate,
                           l2=config.l2, negatives=config.negatives, seed=seed)  # fmt: skip


def champion_scorer(settings: Settings, artifact: str = "factors.npz") -> FactorScorer | None:
    """The registered champion recommender as a :class:`FactorScorer`, or None. ``factors.npz`` is
    the model trained on everything (for scoring), ``eval_factors.npz`` the one trained before its
    evaluation cut (for the promotion gate)."""
    import mlflow
    from visrec import registry
    from visrec.tracking import ensure_experiment

    ensure_experiment(settings)
    current = registry.champion(MODEL_NAME)
    if current is None:
        return None
    path = mlflow.artifacts.download_artifacts(run_id=current.run_id, artifact_path=f"scoring/{artifact}")
    return FactorScorer.load(path, version=f"{MODEL_NAME}/{current.version}")


@dataclass
class MFResult:
    metrics: dict[str, dict[str, float]]
    version: str | None
    promoted: bool | None
    reason: str
    scorer: FactorScorer


def train_mf(
    settings: Settings, ds: str, *, lake: Lake | None = None, config: MFConfig | None = None
) -> MFResult:
    """Evaluate popularity, the champion and a new VBPR on the split as of ``ds``; refit VBPR on all
    data; register it as ``visrec-mf`` (champion only if it beats the champion on the split)."""
    import mlflow
    from visrec import registry
    from visrec.recommenders import Popularity
    from visrec.tracking import tracked_run

    config = config or MFConfig()
    lake = lake or Lake.from_settings(settings)
    events = load_events(lake, ds)
    split = build_split(settings, lake, ds, events)
    challenger = _vbpr(config, settings.seed)
    metrics = {"popularity": evaluate_model(Popularity(), split, config.k),
               "vbpr": evaluate_model(challenger, split, config.k)}  # fmt: skip
    # The gate compares like with like: the champion's own evaluation model (trained before *its*
    # cut, so it never saw today's test window) on today's window, against the challenger's.
    champion = champion_scorer(settings, artifact="eval_factors.npz") if config.register else None
    if champion is not None:
        metrics["champion"] = evaluate_model(champion, split, config.k)
    full = full_data(settings, lake, ds, events)
    production = _vbpr(config, settings.seed).fit(full)
    scorer = FactorScorer.from_model(production, full)
    version = promoted = None
    reason = "not registered"
    if config.register:
        nested = mlflow.active_run() is not None
        with tracked_run(settings, "train_mf", ds=ds, nested=nested):
            mlflow.log_params({**{k: v for k, v in config.__dict__.items()}, "n_users": full.n_users,
                               "n_items": full.n_items, "cut": split.cut.isoformat(),
                               "events_without_embedding": split.dropped_events})  # fmt: skip
            for name, values in metrics.items():
                mlflow.log_metrics({f"{name}.{k}": v for k, v in values.items()})
            import tempfile
            from pathlib import Path

            with tempfile.TemporaryDirectory() as tmp:
                scorer.save(Path(tmp) / "factors.npz")
                FactorScorer.from_model(challenger, split.train).save(Path(tmp) / "eval_factors.npz")
                mlflow.log_artifact(str(Path(tmp) / "factors.npz"), "scoring")
                mlflow.log_artifact(str(Path(tmp) / "eval_factors.npz"), "scoring")
            import mlflow.keras

            info = mlflow.keras.log_model(
                production.model, name="model", pip_requirements=["keras", "tensorflow-cpu"]
            )
            gate = config.gate_metric
            registration = registry.register(
                info.model_uri, MODEL_NAME, metric=gate, value=metrics["vbpr"][gate],
                champion_value=metrics["champion"][gate] if "champion" in metrics else None,
                tolerance=config.gate_tolerance,
            )  # fmt: skip
            version, promoted, reason = (
                f"{MODEL_NAME}/{registration.version}",
                registration.promoted,
                registration.reason,
            )
            scorer.version = version
    log.info("mf %s: %s; %s", ds, {n: round(m[config.gate_metric], 4) for n, m in metrics.items()}, reason)
    return MFResult(metrics, version, promoted, reason, scorer)


class PhotoBlend(Recommender):
    """Photo evidence beside behaviour: per user, ``z(base) + weight * z(photo similarity)``, each score
    standardised over the user's catalog; users without photos keep the base scores unchanged, and
    without a base (``None``: users whose only signal is uploads) the photo similarity alone ranks."""

    def __init__(self, base: Recommender | None, photo_vectors: np.ndarray, has_photos: np.ndarray,
                 item_features: np.ndarray, weight: float):  # fmt: skip
        self.base, self.photo_vectors, self.has_photos = base, photo_vectors, has_photos
        self.item_features, self.weight = item_features, weight

    def fit(self, data: TrainData) -> PhotoBlend:
        return self

    @staticmethod
    def _z(x: np.ndarray) -> np.ndarray:
        finite = np.isfinite(x)
        safe = np.where(finite, x, np.nan)
        mean, std = np.nanmean(safe, axis=1, keepdims=True), np.nanstd(safe, axis=1, keepdims=True)
        return np.where(finite, (x - mean) / (std + 1e-9), -np.inf)

    def score(self, userids: np.ndarray) -> np.ndarray:
        visual = self.photo_vectors[userids] @ self.item_features.T
        if self.base is None:
            return visual
        out = self.base.score(userids).astype(np.float32)
        rows = self.has_photos[userids]
        if rows.any():
            out[rows] = self._z(out[rows]) + self.weight * self._z(visual[rows])
        return out


def score_users(settings: Settings, ds: str, *, lake: Lake | None = None, config: MFConfig | None = None,
                scorer: FactorScorer | None = None, exclude: list[str] | None = None,
                looks_version: str = "visrec-gan") -> pa.Table:  # fmt: skip
    """Recommendations for every user as of ``ds`` -> ``recommendations``.

    Users the champion recommender knows: its scores, blended with their photos' visual evidence when
    they uploaded any (``source='mf'``); when the day has generated looks for them, real items nearest
    those looks take the last places (``source='generated'``, see ``add_generated_candidates``).
    Users whose only signal is uploads: ranked by how close items look to their photos
    (``source='photo'``). Everyone else: what is popular lately among users of their segment, or
    overall for users without one (``source='popular'``). Forgotten users get nothing."""
    from visrec.forget import forgotten_users
    from visrec.photos import photo_profiles
    from visrec.recommenders import SegmentPopularity

    config = config or MFConfig()
    lake = lake or Lake.from_settings(settings)
    scorer = scorer or champion_scorer(settings)
    if scorer is None:
        from visrec.errors import VisrecError

        raise VisrecError(
            f"no champion {MODEL_NAME} in {settings.mlflow_tracking_uri}; run `visrec train mf --ds {ds}`"
        )
    events = load_events(lake, ds)
    data = full_data(settings, lake, ds, events)
    photo_users, photo_vectors, photo_version = photo_profiles(lake, ds)
    _, _, embedding_version = item_embeddings(lake, ds)
    if photo_users and photo_version not in embedding_version.split(","):
        log.warning("user photos of %s were embedded with %s, the catalog with %s: photos not used",
                    ds, photo_version, embedding_version)  # fmt: skip
        photo_users = []
    forgotten = forgotten_users(lake)
    # Every user with events or photos, minus the forgotten; upload-only users get empty history rows.
    extra = sorted(set(photo_users) - set(data.user_ids))
    user_ids = data.user_ids + extra
    rows = np.array([u not in forgotten for u in user_ids])
    empty = sp.csr_matrix((len(extra), data.n_items), dtype=np.float32)
    everyone = TrainData(sp.vstack([data.user_items, empty]).tocsr()[rows], data.item_features,
                         sp.vstack([data.recent_user_items, empty]).tocsr()[rows],
                         [u for u, keep in zip(user_ids, rows, strict=True) if keep], data.item_ids)  # fmt: skip
    purchased = sp.vstack([purchased_matrix(events, data), empty]).tocsr()[rows]
    vectors = np.zeros((everyone.n_users, data.item_features.shape[1]), np.float32)
    has_photos = np.zeros(everyone.n_users, bool)
    if photo_users:
        position = {u: k for k, u in enumerate(everyone.user_ids)}
        for u, vector in zip(photo_users, photo_vectors, strict=True):
            if u in position:
                vectors[position[u]], has_photos[position[u]] = vector, True
    categories = _categories(lake, ds, data.item_ids)
    # Segments come from the day's profiles; without them every unknown user gets the global list.
    profiles = (lake.read_table("user_profiles", ds).select(["user_id", "segment"]).to_pylist()
                if lake.manifest("user_profiles", ds) is not None else [])  # fmt: skip
    segment_of = {p["user_id"]: p["segment"] for p in profiles}
    segments = [segment_of.get(u) for u in everyone.user_ids]
    popular = SegmentPopularity(segments).fit(everyone)
    aligned = scorer.aligned(everyone.user_ids, everyone.item_ids)
    known = aligned.known_users
    weight = settings.photo_weight
    groups = (
        (known, PhotoBlend(aligned, vectors, has_photos, data.item_features, weight), "mf", scorer.version),
        (~known & has_photos, PhotoBlend(None, vectors, has_photos, data.item_features, weight), "photo",
         f"{scorer.version}+{photo_version}"),
        (~known & ~has_photos, popular, "popular", "popularity-by-segment"),
    )  # fmt: skip
    parts = []
    for mask, model, source, version in groups:
        if not mask.any():
            continue
        index = np.flatnonzero(mask)
        sub = TrainData(everyone.user_items[index], data.item_features, None,
                        [everyone.user_ids[i] for i in index], data.item_ids)  # fmt: skip
        if isinstance(model, PhotoBlend):
            base = model.base.aligned(sub.user_ids, sub.item_ids) if model.base is not None else None
            model = PhotoBlend(base, vectors[index], has_photos[index], data.item_features, weight)
        elif isinstance(model, SegmentPopularity):
            model = model.for_users([segments[i] for i in index])
        parts.append(score_all_users(model, sub, purchased[index], categories, k=config.k,
                                     max_per_category=config.max_per_category, exclude=exclude,
                                     model_version=version, source=source))  # fmt: skip
    table = pa.concat_tables(parts) if parts else None
    if table is None:
        from visrec.schemas import RECOMMENDATIONS

        table = RECOMMENDATIONS.empty_table()
    looks = (
        lake.read_table("generated_looks", ds) if lake.manifest("generated_looks", ds) is not None else None
    )
    if looks is not None and looks.num_rows and settings.generated_slots > 0:
        blend = PhotoBlend(aligned, vectors, has_photos, data.item_features, weight)
        table = add_generated_candidates(table, looks, blend, everyone, purchased, categories,
                                         slots=settings.generated_slots, max_per_category=config.max_per_category,
                                         exclude=set(exclude or []), version=f"{scorer.version}+{looks_version}")  # fmt: skip
    lake.write_table("recommendations", ds, table)
    log.info("scored %d users for %s (%d with photos, %d upload-only): %d rows", everyone.n_users, ds,
             int(has_photos.sum()), int((~known & has_photos).sum()), table.num_rows)  # fmt: skip
    return table


def add_generated_candidates(recs: pa.Table, looks: pa.Table, model: Recommender, data: TrainData,
                             purchased: sp.csr_matrix, categories: list[str], *, slots: int,
                             max_per_category: int | None, exclude: set[str], version: str) -> pa.Table:  # fmt: skip
    """Widen the lists of users with generated looks (DVBPR's idea): the last ``slots`` places of a
    recommender-made list (``source='mf'``) go to the real items nearest the user's looks, taken round
    robin over the looks (each look's nearest first); items already listed, bought, excluded, unknown
    to ``data`` or over the category cap are skipped. Each is scored by ``model``, the model that made
    the rest of the list, and the list is re-sorted by score, so the table keeps its contract (K rows,
    ranks 1..K, scores non-increasing). Other users' rows are unchanged."""
    from collections import Counter

    frame = recs.to_pandas()
    user_pos = {u: k for k, u in enumerate(data.user_ids)}
    item_pos = {i: k for k, i in enumerate(data.item_ids)}
    nearest: dict[str, list[list[str]]] = {}
    for row in sorted(looks.to_pylist(), key=lambda r: (r["user_id"], r["rank"])):
        nearest.setdefault(row["user_id"], []).append(list(row["nearest_item_ids"]))
    touched = frame["user_id"].isin(nearest.keys())
    parts, widened = [frame[~touched]], 0
    for user, rows in frame[touched].groupby("user_id", sort=False):
        rows = rows.sort_values("rank")
        if user not in user_pos or (rows["source"] != "mf").any():
            parts.append(rows)
            continue
        u = user_pos[user]
        listed, bought = set(rows["item_id"]), set(purchased[u].indices.tolist())
        per_category = Counter(categories[item_pos[i]] for i in rows["item_id"])
        tail = rows.iloc[max(len(rows) - slots, 0) :]  # the places a generated item may take, last first
        given_up = 0
        scores = model.score(np.array([u]))[0]
        picks: list[tuple[str, float]] = []
        depth = max(map(len, nearest[user]))
        for item in (lst[d] for d in range(depth) for lst in nearest[user] if d < len(lst)):
            if given_up == len(tail):
                break
            pos = item_pos.get(item)
            if (
                pos is None
                or item in listed
                or pos in bought
                or item in exclude
                or not np.isfinite(scores[pos])
            ):
                continue
            out_category = categories[item_pos[tail.iloc[len(tail) - 1 - given_up]["item_id"]]]
            if (max_per_category is not None and categories[pos] != out_category
                    and per_category[categories[pos]] >= max_per_category):  # fmt: skip
                continue
            per_category[out_category] -= 1
            per_category[categories[pos]] += 1
            picks.append((item, float(scores[pos])))
            listed.add(item)
            given_up += 1
        if not picks:
            parts.append(rows)
            continue
        keep = rows.iloc[: len(rows) - len(picks)]
        added = pd.DataFrame({"user_id": user, "rank": 0, "item_id": [i for i, _ in picks],
                              "score": np.array([s for _, s in picks], np.float32), "source": "generated",
                              "model_version": version})  # fmt: skip
        merged = pd.concat([keep, added]).sort_values("score", ascending=False, kind="stable")
        merged["rank"] = np.arange(1, len(merged) + 1)
        parts.append(merged)
        widened += 1
    out = pd.concat(parts).sort_values(["user_id", "rank"], kind="stable")
    log.info("generated looks widened %d users' lists (%d places each at most)", widened, slots)
    return pa.Table.from_pandas(out, schema=recs.schema, preserve_index=False)


def _categories(lake: Lake, ds: str, item_ids: list[str]) -> list[str]:
    from visrec.catalog import read_catalog

    catalog, _ = read_catalog(lake)
    category = dict(
        zip(catalog.column("item_id").to_pylist(), catalog.column("category").to_pylist(), strict=True)
    )
    return [category.get(i, "") for i in item_ids]
