"""Model selection for the nightly recommender: an Optuna search over VBPR's settings on a validation
split cut from the training data (so the test window that the promotion gate uses is never seen),
each trial stopped early on validation NDCG.

The validation split is a time window before the test window's cut when that window holds at least
``VISREC_MF_VALIDATION_MIN_USERS`` users with history on both sides of its own cut; otherwise (few
users, bursty activity, no timestamps) a random holdout of each user's items inside the training data;
below the floor in both, the defaults are kept. Trials are scored on the users a model would serve:
those with history in the validation's training part. The defaults (and the same without a visual
term) are always the first trials, and a searched setting replaces them only when its per-user NDCG
gain over the defaults has a paired-bootstrap 95% interval above zero. The design, its user count
and the verdict are logged and recorded in the MLflow run; each trial is an MLflow child run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import optuna

import mlflow
from visrec.recsys.baselines import EASE_MAX_ITEMS, FactorRecommender, LowRankEASE, Recommender
from visrec.recsys.data import Split, holdout_per_user, validation_split
from visrec.recsys.metrics import bootstrap_interval, ndcg_per_user, users_with
from visrec.recsys.vbpr import VBPRRecommender
from visrec.settings import Settings

log = logging.getLogger(__name__)

SEARCHED = ("factors", "visual_factors", "negatives", "l2", "visual_l2", "learning_rate")
HOLDOUT_SHARE = 0.25  # of each user's items, in the per-user holdout design


@dataclass
class Selection:
    """The chosen settings (``VBPRRecommender`` keyword arguments, ``epochs`` included), the trials, and
    how they were chosen: the validation ``design``, its ``validation_users`` and the ``verdict``."""

    params: dict
    validation_ndcg: float | None = None
    validation_users: int = 0
    trials: list[dict] = field(default_factory=list)
    design: str = "none"
    verdict: str = "the defaults (no search)"
    # The chosen settings' NDCG per validation user (what a family comparison pairs against).
    validation_per_user: np.ndarray | None = field(default=None, repr=False)

    @property
    def visual_helps(self) -> bool | None:
        """Whether the best trial with a visual term beat the best without one (None: not both tried)."""
        best = {True: -1.0, False: -1.0}
        for trial in self.trials:
            if "visual_factors" not in trial:  # another family's trial
                continue
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


def make_recommender(settings: Settings, params: dict) -> FactorRecommender:
    """The model a selection's ``params`` describe: EASE (as a low-rank factor model) when their
    ``family`` is ``ease``, else VBPR."""
    if params.get("family") == "ease":
        return LowRankEASE(l2=params["l2"], rank=params["rank"], seed=settings.seed)
    return make_vbpr(settings, params)


def validation_ndcg(model: Recommender, validation: Split, k: int) -> np.ndarray:
    """NDCG@k of a fitted ``model`` for each validation user with something to find (their liked items
    filtered): what trials and families are ranked and paired on."""
    users = users_with(validation.relevant)
    ids, _ = model.recommend(users, validation.train.user_items, N=k, filter_already_liked_items=True)
    return ndcg_per_user(ids, [validation.relevant[u] for u in users], k)


def compare_families(settings: Settings, validation: Split, selection: Selection) -> Selection:
    """The chosen VBPR against EASE (``VISREC_MF_FAMILIES``) on the same validation users: EASE replaces
    it only when the paired-bootstrap 95% interval of its per-user NDCG gain is above zero."""
    if "ease" not in settings.mf_families.split(",") or selection.validation_per_user is None:
        return selection
    if validation.train.n_items > EASE_MAX_ITEMS:
        log.info(
            "mf selection: EASE not tried: %d items (its solve holds up to %d)",
            validation.train.n_items,
            EASE_MAX_ITEMS,
        )
        return selection
    params = {"family": "ease", "l2": settings.mf_ease_l2, "rank": settings.mf_ease_rank}
    started = time.perf_counter()
    model = make_recommender(settings, params).fit(validation.train)
    ease = validation_ndcg(model, validation, settings.eval_k)
    low, high = bootstrap_interval(ease - selection.validation_per_user, seed=settings.seed)
    gain = (
        f"EASE's NDCG@{settings.eval_k} {ease.mean():.4f} against VBPR's "
        f"{selection.validation_per_user.mean():.4f}, gain [{low:+.4f}, {high:+.4f}]"
    )
    log.info("mf selection: %s (%.1fs)", gain, time.perf_counter() - started)
    trial = {**params, "validation_ndcg": float(ease.mean()), "fit_seconds": time.perf_counter() - started}
    trials = [*selection.trials, trial]
    if low <= 0:
        return dataclasses.replace(
            selection, trials=trials, verdict=f"{selection.verdict}; VBPR kept: {gain}"
        )
    return dataclasses.replace(
        selection,
        params=params,
        validation_ndcg=float(ease.mean()),
        trials=trials,
        verdict=f"EASE: {gain}",
        validation_per_user=ease,
    )


def served_users(split: Split) -> Split:
    """``split`` with only the users a model would serve scored: those with history in its training
    part (the others get popularity lists, whatever the settings)."""
    history = np.diff(split.train.user_items.tocsr().indptr) > 0
    relevant = [items if history[u] else set() for u, items in enumerate(split.relevant)]
    return Split(split.train, relevant, split.cold, split.cut, split.dropped_events, split.events)


def validation_design(settings: Settings, split: Split, ds: str) -> tuple[Split | None, str]:
    """The split that the selection ranks settings on, and a line saying which design it is and why:
    a time window before ``split``'s cut, else a per-user holdout inside the training data, else None
    (fewer than ``VISREC_MF_VALIDATION_MIN_USERS`` users either way)."""
    floor = settings.mf_validation_min_users
    timed = served_users(validation_split(settings, split, ds)) if split.cut is not None else None
    in_window = len(users_with(timed.relevant)) if timed is not None else 0
    if timed is not None and in_window >= floor:
        return timed, f"time window before {split.cut:%Y-%m-%d}: {in_window} users with history on both sides"
    holdout = served_users(holdout_per_user(split.train, HOLDOUT_SHARE, settings.seed))
    held = len(users_with(holdout.relevant))
    window = f"the time window held {in_window} users with history on both sides" if timed else "no time cut"
    if held >= floor:
        return (
            holdout,
            f"per-user holdout of {HOLDOUT_SHARE:.0%} of each user's items: {held} users ({window})",
        )
    return None, f"too few validation users ({window}, a per-user holdout {held}; the floor is {floor})"


def select_vbpr(settings: Settings, split: Split, ds: str) -> Selection:
    """The nightly selection: :func:`search_vbpr` on the validation design that ``split`` (as of ``ds``)
    allows (see :func:`validation_design`); the defaults when none does."""
    if settings.mf_trials == 0:
        return Selection(default_params(settings))
    validation, design = validation_design(settings, split, ds)
    log.info("mf selection: validation by %s", design)
    if validation is None:
        defaults = default_params(settings)
        if split.train.item_features is None:
            defaults["visual_factors"] = 0
        selection = Selection(defaults, design=design, verdict="the defaults: " + design)
        _record(selection)
        return selection
    selection = compare_families(settings, validation, search_vbpr(settings, validation, design))
    return scaled_epochs(settings, selection, validation.train.user_items.nnz, split.train.user_items.nnz)


def scaled_epochs(
    settings: Settings, selection: Selection, validation_pairs: int, final_pairs: int
) -> Selection:
    """``selection`` with its epoch count (the best on validation) scaled by how much more data the
    model it configures trains on (``final_pairs`` user-item pairs against ``validation_pairs``), at most
    ``VISREC_MF_EPOCHS``: on ML-1M the count chosen on a 75% holdout (19) left the refit on all the
    training data short of what 30 epochs reached (NDCG@10 0.406 against 0.412)."""
    chosen = selection.params.get("epochs")  # None for a family without epochs (EASE)
    if not chosen or not validation_pairs or final_pairs <= validation_pairs or not selection.trials:
        return selection
    epochs = min(settings.mf_epochs, max(chosen, round(chosen * final_pairs / validation_pairs)))
    if epochs != chosen:
        log.info("mf selection: %d epochs on validation -> %d on %d pairs", chosen, epochs, final_pairs)
    return dataclasses.replace(selection, params={**selection.params, "epochs": epochs})


def search_vbpr(
    settings: Settings, validation: Split, design: str = "the validation split given"
) -> Selection:
    """Search VBPR's settings on ``validation`` (models fit on its training data, each user's NDCG on
    what they went on to use) within ``VISREC_MF_MINUTES`` and ``VISREC_MF_TRIALS``. The defaults
    (``VISREC_MF_*``) are tried first and stay unless the best trial beats them clearly (a paired
    bootstrap over users: the 95% interval of the NDCG gain above zero); the winner's epoch count is
    the one that did best on validation."""
    defaults = default_params(settings)
    space = settings.mf_search_space()
    if validation.train.item_features is None:  # no images: plain BPR-MF is all there is to search
        space["visual_factors"], defaults["visual_factors"] = [0], 0
    if settings.mf_trials == 0:
        return Selection(defaults)
    users = users_with(validation.relevant)
    if len(users) == 0 or validation.train.user_items.nnz == 0:
        log.info("mf selection: an empty validation split; using the default settings")
        return Selection(defaults, design=design, verdict="the defaults: an empty validation split")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=settings.seed))
    for visual in (defaults["visual_factors"], 0):
        first = {**{k: defaults[k] for k in SEARCHED}, "visual_factors": visual}
        if all(_inside(first[k], space[k]) for k in SEARCHED):
            study.enqueue_trial(first, skip_if_exists=True)
    trials: list[dict] = []
    per_user: dict[int, np.ndarray] = {}
    k = settings.eval_k

    def objective(trial: optuna.Trial) -> float:
        params = {
            name: trial.suggest_categorical(name, choices)
            if isinstance(choices, list)
            else trial.suggest_float(name, *choices, log=True)
            for name, choices in space.items()
        }
        started = time.perf_counter()
        model = make_vbpr(settings, {**params, "epochs": settings.mf_epochs})
        model.fit(validation.train, validation=validation.relevant, k=k)
        per_user[trial.number] = validation_ndcg(model, validation, k)
        value = float(per_user[trial.number].mean())
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
        log.info("mf trial %d: validation NDCG@%d %.4f with %s", trial.number, k, value, record)
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=settings.mf_trials, timeout=settings.mf_minutes * 60)
    first, best = study.trials[0], study.best_trial
    chosen = best
    if best.number == first.number:
        verdict = "the defaults: no trial did better on validation"
    else:
        low, high = bootstrap_interval(per_user[best.number] - per_user[first.number], seed=settings.seed)
        gain = f"NDCG@{k} gain over the defaults {best.value - first.value:+.4f} [{low:+.4f}, {high:+.4f}]"
        if low > 0:
            verdict = f"searched settings: {gain}"
        else:
            chosen, verdict = first, f"the defaults: the best trial's {gain} is not clearly above zero"
    params = {**chosen.params, "epochs": chosen.user_attrs["epochs"]}
    selection = Selection(params, chosen.value, len(users), trials, design, verdict, per_user[chosen.number])
    log.info(
        "mf selection: %d trials on %d validation users (%s); %s; chosen %s (visual term helps: %s)",
        len(trials),
        len(users),
        design,
        verdict,
        params,
        selection.visual_helps,
    )
    _record(selection)
    return selection


def _record(selection: Selection) -> None:
    """The selection's design and verdict in the active MLflow run (the training's), if any."""
    if mlflow.active_run() is not None:
        mlflow.set_tags({"selection.design": selection.design, "selection.verdict": selection.verdict})


def _inside(value, choices) -> bool:
    if isinstance(choices, list):
        return value in choices
    return choices[0] <= value <= choices[1]
