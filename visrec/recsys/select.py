"""Model selection for the nightly recommender: an Optuna search over VBPR's settings, scored on a
validation window cut from the training data by time (so the test window that the promotion gate
uses is never seen), each trial stopped early on validation NDCG.

The search space and the defaults are settings (``VISREC_MF_*``); the defaults and the same without
a visual term are always the first two trials, so the search is never worse than the defaults on
validation, and the visual term is kept only when it earns its place there. Each trial is an MLflow
child run when a run is active.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import optuna

import mlflow
from visrec.recsys.data import Split, validation_split
from visrec.recsys.metrics import users_with
from visrec.recsys.vbpr import VBPRRecommender
from visrec.settings import Settings

log = logging.getLogger(__name__)

SEARCHED = ("factors", "visual_factors", "negatives", "l2", "visual_l2", "learning_rate")


@dataclass
class Selection:
    """The chosen settings (``VBPRRecommender`` keyword arguments, ``epochs`` included) and the trials."""

    params: dict
    validation_ndcg: float | None = None
    validation_users: int = 0
    trials: list[dict] = field(default_factory=list)

    @property
    def visual_helps(self) -> bool | None:
        """Whether the best trial with a visual term beat the best without one (None: not both tried)."""
        best = {True: -1.0, False: -1.0}
        for trial in self.trials:
            key = trial["visual_factors"] > 0
            best[key] = max(best[key], trial["validation_ndcg"])
        return None if min(best.values()) < 0 else best[True] > best[False]


def default_params(settings: Settings) -> dict:
    """The recommender's settings when nothing is searched."""
    return {
        "factors": settings.mf_factors,
        "visual_factors": settings.mf_visual_factors,
        "negatives": settings.mf_negatives,
        "l2": settings.mf_l2,
        "visual_l2": settings.mf_visual_l2,
        "learning_rate": settings.mf_learning_rate,
        "epochs": settings.mf_epochs,
    }


def make_vbpr(settings: Settings, params: dict) -> VBPRRecommender:
    """A ``VBPRRecommender`` with ``params`` and the settings' batch size and seed."""
    return VBPRRecommender(**params, batch_size=settings.mf_batch_size, seed=settings.seed)


def select_vbpr(settings: Settings, split: Split, ds: str) -> Selection:
    """The nightly selection: :func:`search_vbpr` on a validation window cut by time before ``split``'s
    cut (``split`` as of ``ds``)."""
    if settings.mf_trials == 0:
        return Selection(default_params(settings))
    return search_vbpr(settings, validation_split(settings, split, ds))


def search_vbpr(settings: Settings, validation: Split) -> Selection:
    """Search VBPR's settings on ``validation`` (models fit on its training data, ranked by NDCG on what
    its users went on to use) within ``VISREC_MF_MINUTES`` and ``VISREC_MF_TRIALS``; the defaults
    (``VISREC_MF_*``) are tried first, and the winner's epoch count is the one that did best."""
    defaults = default_params(settings)
    if validation.train.item_features is None:
        defaults["visual_factors"] = 0
    if settings.mf_trials == 0:
        return Selection(defaults)
    users = len(users_with(validation.relevant))
    if users == 0 or validation.train.user_items.nnz == 0:
        log.info("mf selection: an empty validation window; using the default settings")
        return Selection(defaults)
    space = settings.mf_search_space()
    if validation.train.item_features is None:  # no images: plain BPR-MF is all there is to search
        space["visual_factors"], defaults["visual_factors"] = [0], 0
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=settings.seed))
    for visual in (defaults["visual_factors"], 0):
        first = {**{k: defaults[k] for k in SEARCHED}, "visual_factors": visual}
        if all(_inside(first[k], space[k]) for k in SEARCHED):
            study.enqueue_trial(first, skip_if_exists=True)
    trials: list[dict] = []

    def objective(trial: optuna.Trial) -> float:
        params = {
            name: trial.suggest_categorical(name, choices)
            if isinstance(choices, list)
            else trial.suggest_float(name, *choices, log=True)
            for name, choices in space.items()
        }
        started = time.perf_counter()
        model = make_vbpr(settings, {**params, "epochs": settings.mf_epochs})
        model.fit(validation.train, validation=validation.relevant, k=settings.top_k)
        value = max(model.validation_history)
        record = {
            **params,
            "epochs": model.best_epochs,
            "validation_ndcg": value,
            "fit_seconds": time.perf_counter() - started,
        }
        trials.append(record)
        trial.set_user_attr("epochs", model.best_epochs)
        if mlflow.active_run() is not None:
            with mlflow.start_run(run_name=f"mf trial {trial.number}", nested=True):
                mlflow.log_params(params)
                mlflow.log_metrics(
                    {k: float(record[k]) for k in ("validation_ndcg", "epochs", "fit_seconds")}
                )
        log.info("mf trial %d: validation NDCG@%d %.4f with %s", trial.number, settings.top_k, value, record)
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=settings.mf_trials, timeout=settings.mf_minutes * 60)
    best = study.best_trial
    params = {**best.params, "epochs": best.user_attrs["epochs"]}
    selection = Selection(params, best.value, users, trials)
    log.info(
        "mf selection: %d trials on %d validation users; best NDCG@%d %.4f with %s (visual term helps: %s)",
        len(trials),
        users,
        settings.top_k,
        best.value,
        params,
        selection.visual_helps,
    )
    return selection


def _inside(value, choices) -> bool:
    if isinstance(choices, list):
        return value in choices
    return choices[0] <= value <= choices[1]
