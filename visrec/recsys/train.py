"""Training the nightly recommender: compare popularity, the champion and a new VBPR on the same
split, refit on all data, register ``visrec-mf`` behind the promotion gate.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from visrec.errors import VisrecError
from visrec.mlops import registry
from visrec.recsys.baselines import FactorRecommender, Recommender
from visrec.recsys.data import Split, TrainData, build_split, full_data, item_categories
from visrec.recsys.metrics import evaluate
from visrec.recsys.rules import cap_per_category
from visrec.settings import Settings
from visrec.store.lake import Lake
from visrec.store.tables import load_events

log = logging.getLogger(__name__)

MODEL_NAME = "visrec-mf"


def evaluate_model(model: Recommender, split: Split, k: int = 20) -> dict[str, float]:
    """Fit on the split's training data and measure every metric on its test window."""
    if split.train.user_items.nnz == 0:
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
    metrics = evaluate(
        ids,
        relevant,
        k=k,
        n_items=split.train.n_items,
        cold=split.cold,
        embeddings=split.train.item_features,
        item_user_counts=counts,
        n_users=split.train.n_users,
    )
    metrics["fit_seconds"] = fit_seconds
    metrics["test_users"] = float(len(users))
    return metrics


def evaluate_published_lists(
    model: Recommender, split: Split, categories: list[str], k: int, max_per_category: int | None
) -> dict[str, float]:
    """The metrics of the lists users get from an already fitted ``model`` after the category cap
    (the photo blend and generated slots need that night's photos and looks, so they are not applied
    here): beside the raw model's, they show what a rule costs."""
    users = np.array([u for u, rel in enumerate(split.relevant) if rel], dtype=np.int64)
    depth = min(3 * k, split.train.n_items)
    ids, _ = model.recommend(users, split.train.user_items, N=depth, filter_already_liked_items=True)
    lists = np.full((len(users), k), -1, np.int64)
    for row in range(len(users)):
        positions = cap_per_category(ids[row], categories, k, max_per_category)
        lists[row, : len(positions)] = ids[row, positions]
    counts = np.asarray((split.train.user_items > 0).sum(axis=0)).ravel()
    return evaluate(
        lists,
        [split.relevant[u] for u in users],
        k=k,
        n_items=split.train.n_items,
        cold=split.cold,
        embeddings=split.train.item_features,
        item_user_counts=counts,
        n_users=split.train.n_users,
    )


class FactorScorer(FactorRecommender):
    """A trained factor model frozen into arrays (user vectors, item vectors, item biases) with its
    own id maps, aligned to another index: how the registered champion scores today's users.
    Users or items the model never saw get no score from it (-inf), so callers can fall back."""

    def __init__(
        self,
        user_ids,
        item_ids,
        user_vectors,
        item_vectors,
        item_biases,
        version: str = "",
        visual_preference: np.ndarray | None = None,
    ):
        self.user_ids, self.item_ids = list(user_ids), list(item_ids)
        self.user_vectors, self.item_vectors = user_vectors, item_vectors
        self.item_biases, self.version = item_biases, version
        self.visual_preference = visual_preference  # (users, embedding dim): VBPR's taste for any image

    @classmethod
    def from_model(cls, model, data: TrainData, version: str = "") -> FactorScorer:
        return cls(
            data.user_ids,
            data.item_ids,
            model.user_vectors,
            model.item_vectors,
            model.item_biases,
            version,
            getattr(model, "visual_preference", None),
        )

    def save(self, path) -> None:
        extra = {} if self.visual_preference is None else {"visual_preference": self.visual_preference}
        np.savez_compressed(
            path,
            user_ids=np.array(self.user_ids, dtype=object),
            item_ids=np.array(self.item_ids, dtype=object),
            user_vectors=self.user_vectors,
            item_vectors=self.item_vectors,
            item_biases=self.item_biases,
            **extra,
        )

    @classmethod
    def load(cls, path, version: str = "") -> FactorScorer:
        z = np.load(path, allow_pickle=True)
        return cls(
            z["user_ids"].tolist(),
            z["item_ids"].tolist(),
            z["user_vectors"],
            z["item_vectors"],
            z["item_biases"],
            version,
            z["visual_preference"] if "visual_preference" in z else None,
        )

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
    from visrec.recsys.vbpr import VBPRRecommender

    return VBPRRecommender(
        config.factors,
        config.visual_factors,
        config.epochs,
        learning_rate=config.learning_rate,
        l2=config.l2,
        negatives=config.negatives,
        seed=seed,
    )


def champion_scorer(
    settings: Settings, artifact: str = "factors.npz", version: str | None = None
) -> FactorScorer | None:
    """A registered recommender (``version`` like ``visrec-mf/4``, the champion without one) as a
    :class:`FactorScorer`, or None when there is no champion. ``factors.npz`` is the model trained on
    everything (for scoring), ``eval_factors.npz`` the one trained before its evaluation cut (for the
    promotion gate)."""
    import mlflow
    from visrec.mlops.tracking import use_tracking

    use_tracking(settings)
    if version:
        number = registry.model_uri(MODEL_NAME, version).rsplit("/", 1)[1]
        current = mlflow.MlflowClient().get_model_version(MODEL_NAME, number)
    else:
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
    from visrec.mlops.tracking import tracked_run
    from visrec.recsys.baselines import Popularity

    config = config or MFConfig()
    lake = lake or Lake.from_settings(settings)
    events = load_events(lake, ds)
    split = build_split(settings, lake, ds, events)
    challenger = _vbpr(config, settings.seed)
    metrics = {
        "popularity": evaluate_model(Popularity(), split, config.k),
        "vbpr": evaluate_model(challenger, split, config.k),
    }
    categories = item_categories(lake, ds, split.train.item_ids)
    metrics["vbpr_published"] = evaluate_published_lists(
        challenger, split, categories, config.k, config.max_per_category
    )
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
            mlflow.log_params(
                {
                    **{k: v for k, v in config.__dict__.items()},
                    "n_users": full.n_users,
                    "n_items": full.n_items,
                    "cut": split.cut.isoformat(),
                    "events_without_embedding": split.dropped_events,
                }
            )
            for name, values in metrics.items():
                mlflow.log_metrics({f"{name}.{k}": v for k, v in values.items()})
            import tempfile
            from pathlib import Path

            with tempfile.TemporaryDirectory() as tmp:
                scorer.save(Path(tmp) / "factors.npz")
                FactorScorer.from_model(challenger, split.train).save(Path(tmp) / "eval_factors.npz")
                mlflow.log_artifact(str(Path(tmp) / "factors.npz"), "scoring")
                mlflow.log_artifact(str(Path(tmp) / "eval_factors.npz"), "scoring")
            example = {name: np.array([0], np.int32) for name in ("users", "pos_items", "neg_items")}
            example["neg_items"][0] = min(1, full.n_items - 1)
            model_uri = registry.log_keras_model(
                production.model,
                example,
                np.asarray(production.model(tuple(example.values()))),
                pip_requirements=["keras", "tensorflow-cpu"],
            )
            gate = config.gate_metric
            registration = registry.register(
                model_uri,
                MODEL_NAME,
                metric=gate,
                value=metrics["vbpr"][gate],
                champion_value=metrics["champion"][gate] if "champion" in metrics else None,
                tolerance=config.gate_tolerance,
            )
            version, promoted, reason = (
                f"{MODEL_NAME}/{registration.version}",
                registration.promoted,
                registration.reason,
            )
            scorer.version = version
    log.info("mf %s: %s; %s", ds, {n: round(m[config.gate_metric], 4) for n, m in metrics.items()}, reason)
    return MFResult(metrics, version, promoted, reason, scorer)
