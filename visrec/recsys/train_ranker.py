"""Training the nightly ranker (the second stage, :mod:`visrec.recsys.ranker`): learn it on the
selection's validation design, judge it on the test window beside every generator alone, write what it
learned from to the lake, register ``visrec-ranker`` behind the promotion gate.

The ranker is a champion only when its lists beat the best single generator, popularity and the
``visrec-mf`` champion (whose lists it would replace) on the same test users by a paired bootstrap's
95% interval: a second stage that adds cost without a measured gain stays a challenger.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from visrec.mlops import registry
from visrec.mlops.tracking import tracked_run, use_tracking
from visrec.mlops.validation import TableValidator
from visrec.recsys.baselines import (
    EASE,
    EASE_MAX_ITEMS,
    ItemCF,
    ItemCooccurrence,
    Popularity,
    VisualNeighbours,
    VisualProfile,
)
from visrec.recsys.candidates import merge, recall_at
from visrec.recsys.data import TrainData, build_split, full_data, item_categories, item_prices
from visrec.recsys.metrics import users_with
from visrec.recsys.ranker import MODEL_NAME, CandidateRanker, Generator
from visrec.recsys.train import champion_scorer, fit_and_evaluate, promotion_gate
from visrec.settings import Settings
from visrec.store.lake import Lake
from visrec.store.schemas import RANKER_TRAINING
from visrec.store.tables import EVENT_COLUMNS, load_events

log = logging.getLogger(__name__)

SERVING_ARTIFACT = "ranker.pkl"
CANDIDATE_DEPTHS = (50, 100, 200)  # each generator's candidate recall is reported at these depths


@dataclass
class RankerResult:
    """What a night's ranker training did: ``trained`` False (and why) where the data allow no
    validation design."""

    trained: bool
    reason: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    importance: dict[str, float] = field(default_factory=dict)  # share of the total gain per feature
    training_rows: int = 0
    version: str | None = None
    promoted: bool | None = None
    ranker: CandidateRanker | None = None  # fitted on all the data (generators refitted), for serving


def nightly_generators(data: TrainData) -> list[Generator]:
    """The candidate sources of the nightly ranker: EASE where the catalog allows its item-item solve,
    item-CF, popularity of the recent window and, where the catalog is embedded, the user's visual
    profile and the look-alikes of their items (the two that reach items nobody has bought)."""
    generators = [Generator("item_cf", ItemCF(), 50), Generator("popularity", Popularity(), 20)]
    if data.n_items <= EASE_MAX_ITEMS:
        generators.insert(0, Generator("ease", EASE(), 100))
    if data.item_features is not None:
        generators += [
            Generator("visual_profile", VisualProfile(), 50),
            Generator("visual_neighbours", VisualNeighbours(), 50),
        ]
    return generators


def training_table(ranker: CandidateRanker, data: TrainData) -> pa.Table:
    """The fitted ``ranker``'s training set as a ``ranker_training`` table (``data`` names its users
    and items)."""
    frame = ranker.training_table
    features = frame[ranker.feature_names].to_numpy(np.float32)
    n_rows, n_features = features.shape
    keys = pa.array(np.tile(np.array(ranker.feature_names, object), n_rows), pa.string())
    offsets = pa.array(np.arange(0, (n_rows + 1) * n_features, n_features, dtype=np.int32))
    users, items = np.array(data.user_ids, object), np.array(data.item_ids, object)
    return pa.table(
        {
            "user_id": pa.array(users[frame["user"].to_numpy()], pa.string()),
            "item_id": pa.array(items[frame["item"].to_numpy()], pa.string()),
            "label": pa.array(frame["label"].to_numpy(np.float32)),
            "held_out": pa.array(frame["eval"].to_numpy(bool)),
            "proposed_by": pa.array(frame["proposed_by"].astype(str).tolist(), pa.string()),
            "features": pa.MapArray.from_arrays(offsets, keys, pa.array(features.ravel(), pa.float32())),
        },
        schema=RANKER_TRAINING,
    )


def train_ranker(
    settings: Settings,
    ds: str,
    *,
    lake: Lake | None = None,
    register: bool = True,
    validator: TableValidator | None = None,
) -> RankerResult:
    """Learn the ranker on the validation design as of ``ds`` (:func:`validation_design`), measure it
    and every generator alone on the test window (Recall@``VISREC_EVAL_K``), write its training set to
    ``ranker_training``, refit it on all the data and register it as ``visrec-ranker``: champion only if
    it beats the best single generator, popularity and the ``visrec-mf`` champion it would replace in
    scoring (:func:`promotion_gate`). ``validator``: checks the
    training set before it is written."""
    import mlflow
    from visrec.recsys.select import validation_design

    lake = lake or Lake.from_settings(settings)
    events = load_events(lake, ds, columns=(*EVENT_COLUMNS, "price"))
    split = build_split(settings, lake, ds, events)
    validation, design = validation_design(settings, split, ds)
    if validation is None:
        log.warning("ranker %s: not trained: %s", ds, design)
        return RankerResult(False, f"no validation design: {design}")
    k, gate = settings.eval_k, f"recall_at_{settings.eval_k}"
    categories = item_categories(lake, ds, split.train.item_ids)
    prices = item_prices(lake, ds, split.train.item_ids, events)
    values = {"price": prices} if np.isfinite(prices).any() else None

    def make() -> CandidateRanker:
        return CandidateRanker(
            nightly_generators(split.train),
            item_categories=categories,
            item_values=values,
            seed=settings.seed,
        )

    run = (
        tracked_run(settings, "ranker training", ds=ds, nested=mlflow.active_run() is not None, training=True)
        if register
        else contextlib.nullcontext()
    )
    with run:
        ranker = make()
        metrics, per_user = {}, {}
        metrics["ranker"], per_user["ranker"] = fit_and_evaluate(ranker.on(validation), split, k)
        users = users_with(split.relevant)
        relevant = [split.relevant[u] for u in users]
        proposals = []
        for g in ranker.generators:
            alone = copy.deepcopy(g.model)
            metrics[g.name], per_user[g.name] = fit_and_evaluate(alone, split, k)
            # Its recall among its best N: the ceiling a ranker over its candidates could reach.
            ids, _ = alone.recommend(users, split.train.user_items, N=max(CANDIDATE_DEPTHS))
            for depth in CANDIDATE_DEPTHS:
                metrics[g.name][f"candidate_recall_at_{depth}"] = float(
                    recall_at(ids[:, :depth], relevant).mean()
                )
            proposals.append(ids[:, : g.n])
        union = merge([p for p in proposals if p.shape[1]])
        metrics["ranker"]["candidate_recall"] = float(recall_at(union, relevant).mean())
        metrics["ranker"]["candidates_per_user"] = float(np.mean([len(row) for row in union]))
        singles = [g.name for g in ranker.generators]
        best = max(singles, key=lambda name: metrics[name][gate])
        rivals = {f"best single ({best})": per_user[best], "popularity": per_user["popularity"]}
        # And the recommender scoring serves today, whose lists the ranker's would replace: the
        # champion's evaluation model (trained before its own cut) on the same window, as train_mf does.
        served = champion_scorer(settings, artifact="eval_factors.npz") if register else None
        if served is not None:
            metrics["served"], rivals[f"served {served.version}"] = fit_and_evaluate(served, split, k)
        promote, verdict = promotion_gate(per_user["ranker"], rivals, gate, settings.seed)
        if settings.ranker_promotion != "gate":
            promote = settings.ranker_promotion == "always"
            verdict = f"{'promoted' if promote else 'kept out'} by VISREC_RANKER_PROMOTION; the gate says: {verdict}"
        importance = ranker.feature_importance()
        shares = (importance / max(float(importance.sum()), 1e-12)).round(4).to_dict()
        table = training_table(ranker, validation.train)
        if validator is not None:
            validator.validate("ranker_training", table.drop_columns(["features"]).to_pandas())
        lake.write_table("ranker_training", ds, table)
        # Serving: the same design on the latest window (the test window's labels), generators refitted
        # on everything.
        full = full_data(settings, lake, ds, events)
        production = make()
        if full.item_ids == split.train.item_ids:
            production.fit(full, split)
        else:  # a catalog changed between the split and the full data: learn on the validation window
            production.fit(split.train, validation)
        result = RankerResult(True, verdict, metrics, shares, table.num_rows, ranker=production)
        if register:
            result.version, result.promoted, result.reason = _register(
                ranker, production, make(), metrics, shares, design, (promote, verdict)
            )
    log.info("ranker %s: %s; %s", ds, {n: round(m[gate], 4) for n, m in metrics.items()}, result.reason)
    return result


def _register(
    evaluated: CandidateRanker,
    production: CandidateRanker,
    unfitted: CandidateRanker,
    metrics: dict[str, dict[str, float]],
    importance: dict[str, float],
    design: str,
    decision: tuple[bool, str],
) -> tuple[str, bool, str]:
    """Log the training to the active MLflow run and register the production ranker's booster (with
    its signature and an input example of real candidate rows) behind the gate's ``decision``; beside
    it, ``unfitted`` (the same design, generators not fitted) carrying that booster, for scoring."""
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    import mlflow

    promote, verdict = decision
    mlflow.log_params(
        {
            "generators": ", ".join(f"{g.name}:{g.n}" for g in evaluated.generators),
            "validation": design,
            "rounds": evaluated.best_iteration,
            "features": len(evaluated.feature_names),
        }
    )
    for name, values in metrics.items():
        mlflow.log_metrics({f"{name}.{key}": value for key, value in values.items()})
    mlflow.log_dict(importance, "feature_importance.json")
    example = production.training_table[production.feature_names].head(5)
    signature = infer_signature(example, production.booster.predict(example))
    info = mlflow.lightgbm.log_model(
        production.booster, name="ranker", signature=signature, input_example=example
    )
    # What scoring loads: the learned ordering with the generators unfitted (it refits them on the
    # night's data, see CandidateRanker.serve_on), small whatever the catalog's size.
    unfitted.booster, unfitted.best_iteration = production.booster, production.best_iteration
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / SERVING_ARTIFACT
        path.write_bytes(pickle.dumps(unfitted))
        mlflow.log_artifact(str(path), "serving")
    registration = registry.register_decided(info.model_uri, MODEL_NAME, promote, verdict)
    return f"{MODEL_NAME}/{registration.version}", promote, registration.reason


def champion_ranker(settings: Settings) -> tuple[CandidateRanker, str] | None:
    """The ``visrec-ranker`` champion as scoring loads it (its generators unfitted: see
    :meth:`CandidateRanker.serve_on`) and its ``name/version``; None without a champion."""
    import mlflow

    use_tracking(settings)
    current = registry.champion(MODEL_NAME)
    if current is None:
        return None
    path = mlflow.artifacts.download_artifacts(
        run_id=current.run_id, artifact_path=f"serving/{SERVING_ARTIFACT}"
    )
    return pickle.loads(Path(path).read_bytes()), f"{MODEL_NAME}/{current.version}"


def ranker_on(
    ranker: CandidateRanker,
    data: TrainData,
    lake: Lake,
    ds: str,
    categories: list[str] | None = None,
    shared: ItemCooccurrence | None = None,
) -> CandidateRanker:
    """``ranker`` ready to recommend for ``data`` as of ``ds``: its generators fitted on ``data`` (on
    ``shared``, every shard's statistics, when ``data`` is one shard of the users: see
    :meth:`CandidateRanker.serve_on`), the catalog's categories (``categories`` when the caller has
    read them) and prices of ``data``'s items for its features."""
    if ranker.item_categories is None:
        categories = None
    elif categories is None:
        categories = item_categories(lake, ds, data.item_ids)
    values = {"price": item_prices(lake, ds, data.item_ids)} if ranker.item_values else None
    return ranker.serve_on(data, categories, values, shared)
