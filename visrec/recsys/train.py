"""Training the nightly recommender: compare popularity, the champion and a new VBPR on the same
split, refit on all data, register ``visrec-mf`` behind the promotion gate.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from visrec.errors import VisrecError
from visrec.mlops import registry
from visrec.mlops.tracking import tracked_run, use_tracking
from visrec.recsys.baselines import FactorRecommender, Popularity, Recommender
from visrec.recsys.data import Split, TrainData, build_split, full_data, item_categories
from visrec.recsys.metrics import bootstrap_interval, evaluate, recall_per_user, users_with
from visrec.recsys.rules import cap_per_category
from visrec.settings import Settings
from visrec.store.lake import Lake
from visrec.store.tables import load_events

if TYPE_CHECKING:
    from visrec.recsys.select import Selection

log = logging.getLogger(__name__)

MODEL_NAME = "visrec-mf"


def evaluate_model(model: Recommender, split: Split, k: int = 20) -> dict[str, float]:
    """Fit on the split's training data and measure every metric on its test window."""
    return fit_and_evaluate(model, split, k)[0]


def fit_and_evaluate(model: Recommender, split: Split, k: int = 20) -> tuple[dict[str, float], np.ndarray]:
    """:func:`evaluate_model`'s metrics, and Recall@k per test user (``users_with`` order): what the
    promotion gate compares, user by user."""
    if split.train.user_items.nnz == 0:
        when = f" before the cut {split.cut:%Y-%m-%d %H:%M}" if split.cut else ""
        raise VisrecError(f"no training interactions{when}; ingest more days or lower VISREC_TEST_DAYS")
    started = time.perf_counter()
    model = model.fit(split.train)  # a frozen FactorScorer returns an aligned copy rather than itself
    fit_seconds = time.perf_counter() - started
    users = users_with(split.relevant)
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
    return metrics, recall_per_user(ids, relevant, k)


def promotion_gate(
    challenger: np.ndarray, rivals: dict[str, np.ndarray], metric: str, seed: int = 0
) -> tuple[bool, str]:
    """Whether the challenger beats every rival on the same test users by a margin that a paired
    bootstrap over users says is real (the 95% interval of the per-user difference above zero), and
    why, with each interval."""
    if len(challenger) == 0:
        return False, f"no test users to compare on: {metric} cannot tell the models apart"
    parts, beats_all = [], True
    for name, values in rivals.items():
        low, high = bootstrap_interval(challenger - values, seed=seed)
        beats = low > 0
        beats_all &= beats
        parts.append(
            f"vs {name} {values.mean():.4f}: {challenger.mean() - values.mean():+.4f} "
            f"[{low:+.4f}, {high:+.4f}] {'beaten' if beats else 'not clearly beaten'}"
        )
    return beats_all, f"{metric} {challenger.mean():.4f} on {len(challenger)} users; " + "; ".join(parts)


def evaluate_published_lists(
    model: Recommender, split: Split, categories: list[str], k: int, max_per_category: int | None
) -> dict[str, float]:
    """The metrics of the lists users get from an already fitted ``model`` after the category cap
    (the photo blend and generated slots need that night's photos and looks, so they are not applied
    here): beside the raw model's, they show what a rule costs."""
    users = users_with(split.relevant)
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
    """How the nightly recommender is evaluated and published (its hyperparameters and search space
    are settings: ``VISREC_MF_*``)."""

    k: int  # evaluation cutoff (VISREC_EVAL_K)
    max_per_category: int | None  # cap per category in a published list (VISREC_MAX_PER_CATEGORY; None: none)
    register: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> MFConfig:
        """The nightly run's config from ``settings``, ``overrides`` on top."""
        cap = settings.max_per_category or None
        return cls(**{"k": settings.eval_k, "max_per_category": cap, **overrides})


def champion_scorer(
    settings: Settings, artifact: str = "factors.npz", version: str | None = None
) -> FactorScorer | None:
    """A registered recommender (``version`` like ``visrec-mf/4``, the champion without one) as a
    :class:`FactorScorer`, or None when there is no champion. ``factors.npz`` is the model trained on
    everything (for scoring), ``eval_factors.npz`` the one trained before its evaluation cut (for the
    promotion gate)."""
    import mlflow

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
    serving: str = "model"  # or "popularity": what scoring publishes until the next training
    selected: dict = field(default_factory=dict)  # the settings the search chose


SERVING_TAG = "visrec.serving"


def serving(settings: Settings) -> tuple[str, str]:
    """What the last training decided scoring should publish, ``("model" | "popularity", why)``: the
    champion's lists only while the champion beats popularity on the latest test window."""
    from mlflow.exceptions import MlflowException

    import mlflow

    use_tracking(settings)
    try:
        tags = mlflow.MlflowClient().get_registered_model(MODEL_NAME).tags
    except MlflowException:
        return "popularity", f"no {MODEL_NAME} registered yet"
    return tags.get(SERVING_TAG, "model"), tags.get(f"{SERVING_TAG}.reason", "")


def train_mf(
    settings: Settings, ds: str, *, lake: Lake | None = None, config: MFConfig | None = None
) -> MFResult:
    """Select VBPR's settings on a validation window, evaluate popularity, the champion and the
    selected VBPR on the test window as of ``ds``, refit it on all data and register it as
    ``visrec-mf``: champion only if it beats popularity and the champion by a real margin (see
    :func:`promotion_gate`); scoring publishes popularity lists while nothing beats popularity."""
    import contextlib

    import mlflow
    from visrec.recsys.select import make_recommender, select_vbpr

    config = config or MFConfig.from_settings(settings)
    lake = lake or Lake.from_settings(settings)
    events = load_events(lake, ds)
    split = build_split(settings, lake, ds, events)
    k, gate = config.k, f"recall_at_{config.k}"
    run = (
        tracked_run(settings, "mf training", ds=ds, nested=mlflow.active_run() is not None, training=True)
        if config.register
        else contextlib.nullcontext()
    )
    with run:
        selection = select_vbpr(settings, split, ds)
        challenger, popularity = make_recommender(settings, selection.params), Popularity()
        metrics, rivals = {}, {}
        metrics["popularity"], rivals["popularity"] = fit_and_evaluate(popularity, split, k)
        family = selection.params.get("family", "vbpr")  # the metrics say which model they measure
        metrics[family], recall = fit_and_evaluate(challenger, split, k)
        categories = item_categories(lake, ds, split.train.item_ids)
        metrics[f"{family}_published"] = evaluate_published_lists(
            challenger, split, categories, k, config.max_per_category
        )
        # Like with like: the champion's own evaluation model (trained before *its* cut, so it never
        # saw today's test window) on today's window, against the challenger's.
        champion = champion_scorer(settings, artifact="eval_factors.npz") if config.register else None
        if champion is not None:
            metrics["champion"], rivals[f"champion {champion.version}"] = fit_and_evaluate(champion, split, k)
        promote, verdict = promotion_gate(recall, rivals, gate, settings.seed)
        if settings.mf_promotion == "always" and not promote:
            promote, verdict = True, f"promoted by VISREC_MF_PROMOTION=always; the gate says: {verdict}"
        if promote or champion is None:
            serve = "model" if promote else "popularity"
        else:  # the champion stays: it serves only while it still beats popularity
            name = f"champion {champion.version}"
            kept_beats, _ = promotion_gate(
                rivals[name], {"popularity": rivals["popularity"]}, gate, settings.seed
            )
            serve = "model" if kept_beats else "popularity"
        full = full_data(settings, lake, ds, events)
        production = make_recommender(settings, selection.params).fit(full)
        scorer = FactorScorer.from_model(production, full)
        version = promoted = None
        reason = f"not registered ({verdict})"
        if config.register:
            reason = _register(
                settings,
                split=split,
                full=full,
                selection=selection,
                metrics=metrics,
                models=(challenger, production, scorer),
                decision=(promote, verdict, serve),
            )
            version, promoted = scorer.version, promote
    log.info(
        "mf %s: %s; %s; serving %s", ds, {n: round(m[gate], 4) for n, m in metrics.items()}, reason, serve
    )
    return MFResult(metrics, version, promoted, reason, scorer, serve, selection.params)


def _factors_as_keras(model: FactorRecommender):
    """A factor model of another family (EASE) as the Keras scoring model the registry holds: a
    :class:`visrec.models.mf.VBPR` without a visual term whose factors and biases are the model's, so
    ``x_ui - x_uj`` is its score difference."""
    from visrec.models.mf import VBPR

    users, items = model.user_vectors.shape[0], model.item_vectors.shape[0]
    keras_model = VBPR(users, items, 0, model.item_vectors.shape[1], 0)
    keras_model.build()
    keras_model.user_factors.set_weights([model.user_vectors])
    keras_model.item_factors.set_weights([model.item_vectors])
    keras_model.item_bias.set_weights([model.item_biases.reshape(-1, 1)])
    return keras_model


def _register(
    settings: Settings,
    *,
    split: Split,
    full: TrainData,
    selection: Selection,
    metrics: dict[str, dict[str, float]],
    models: tuple[FactorRecommender, FactorRecommender, FactorScorer],
    decision: tuple[bool, str, str],
) -> str:
    """Log the training to the active MLflow run, register the production model (``models``: the
    evaluated challenger, the production model and its scorer; ``decision``: promote, why, what
    scoring serves) and record what scoring serves on the registered model."""
    import tempfile
    from pathlib import Path

    import mlflow

    challenger, production, scorer = models
    promote, verdict, serve = decision
    mlflow.log_params(
        {
            **{f"selected.{k}": v for k, v in selection.params.items()},
            "selection_trials": len(selection.trials),
            "selection_validation_users": selection.validation_users,
            "batch_size": settings.mf_batch_size,
            "n_users": full.n_users,
            "n_items": full.n_items,
            "cut": split.cut.isoformat(),
            "events_without_embedding": split.dropped_events,
        }
    )
    for name, values in metrics.items():
        mlflow.log_metrics({f"{name}.{k}": v for k, v in values.items()})
    if selection.validation_ndcg is not None:
        mlflow.log_metric("selection.validation_ndcg", selection.validation_ndcg)
    if selection.visual_helps is not None:
        mlflow.log_metric("selection.visual_helps", float(selection.visual_helps))
    mlflow.log_metric("serving_model", float(serve == "model"))
    with tempfile.TemporaryDirectory() as tmp:
        scorer.save(Path(tmp) / "factors.npz")
        FactorScorer.from_model(challenger, split.train).save(Path(tmp) / "eval_factors.npz")
        mlflow.log_artifact(str(Path(tmp) / "factors.npz"), "scoring")
        mlflow.log_artifact(str(Path(tmp) / "eval_factors.npz"), "scoring")
    example = {name: np.array([0], np.int32) for name in ("users", "pos_items", "neg_items")}
    example["neg_items"][0] = min(1, full.n_items - 1)
    keras_model = production.model if hasattr(production, "model") else _factors_as_keras(production)
    model_uri = registry.log_keras_model(
        keras_model,
        example,
        np.asarray(keras_model(tuple(example.values()))),
        pip_requirements=["keras", "tensorflow-cpu"],
    )
    registration = registry.register_decided(model_uri, MODEL_NAME, promote, verdict)
    scorer.version = f"{MODEL_NAME}/{registration.version}"
    why = f"{scorer.version} {'promoted' if promote else 'not promoted'}; scoring serves " + (
        "the champion's lists"
        if serve == "model"
        else "popularity-by-segment lists: nothing beats popularity"
    )
    client = mlflow.MlflowClient()
    client.set_registered_model_tag(MODEL_NAME, SERVING_TAG, serve)
    client.set_registered_model_tag(MODEL_NAME, f"{SERVING_TAG}.reason", why)
    mlflow.set_tag(SERVING_TAG, serve)
    return registration.reason
