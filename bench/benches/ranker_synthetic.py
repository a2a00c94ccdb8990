"""The ranker_synthetic bench: `python bench/run.py ranker_synthetic`. See :func:`run`."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchkit import Figures, figure, ranker_key

K = 20
SEEDS = (0, 1, 2)  # VBPR and the rankers train once per seed: one run's noise is as large as the effects
COLD_SHARE = 0.1  # ranker_cold_share: the share of bought items its training treats as new


def run() -> Figures:
    """Two-stage recommendations on the demo-scale synthetic shop, whose users' taste is defined over
    what items look like (the mf bench's shop, split and image model: the last 2 days held out). The
    ranker (:mod:`visrec.recsys.ranker`) learns on the nightly selection's validation design (a time
    window before the test window) over the candidates of EASE (100), VBPR at its defaults (100),
    item-CF (50), popularity (20), the users' visual profiles (50) and the look-alikes of their recent
    items (50: the visual generators reach items nobody has bought), with the catalog's categories for
    the category affinity; beside it the same ranker without VBPR and the visual generators
    (``ranker_no_visual``), the ranker trained with a tenth of the bought items made new
    (``ranker_cold_share``: ``cold_share``, DropoutNet's idea), every generator alone, and the learner
    told every item's true attributes.
    VBPR and the rankers train once per seed (``SEEDS``) and their figures are the means. Recall@20 and
    cold-item recall@20, with a paired-bootstrap 95% interval of the ranker's recall gain over the best
    single model (per-user recall averaged over the seeds)."""

    import numpy as np

    from benches.mf import synthetic_shop, truth_models
    from visrec.recsys.baselines import EASE, ItemCF, Popularity, VisualNeighbours, VisualProfile
    from visrec.recsys.data import item_categories
    from visrec.recsys.metrics import bootstrap_interval
    from visrec.recsys.ranker import CandidateRanker, Generator
    from visrec.recsys.select import validation_design
    from visrec.recsys.train import fit_and_evaluate
    from visrec.recsys.vbpr import VBPRRecommender
    from visrec.settings import Settings

    out: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), test_days=2, test_min_users=1)  # the mf bench's split
        lake, config, last, cnn, split = synthetic_shop(settings)
        _, attribute_profile, _ = truth_models(lake)
        validation, design = validation_design(settings, split, last)
        if validation is None:
            print(f"  ranker_synthetic: no validation design ({design}); skipped", file=sys.stderr)
            return {}
        categories = item_categories(lake, last, split.train.item_ids)

        def generators(visual: bool, seed: int) -> list[Generator]:
            chosen = [
                Generator("ease", EASE(l2=500.0), 100),
                Generator("item_cf", ItemCF(), 50),
                Generator("popularity", Popularity(), 20),
            ]
            if visual:
                chosen += [
                    Generator("vbpr", VBPRRecommender(seed=seed), 100),
                    Generator("visual_profile", VisualProfile(), 50),
                    Generator("visual_neighbours", VisualNeighbours(), 50),
                ]
            return chosen

        deterministic = {
            "attribute_profile": attribute_profile,
            "popularity": Popularity(),
            "item_cf": ItemCF(),
            "ease": EASE(l2=500.0),
            "visual_profile": VisualProfile(),
            "visual_neighbours": VisualNeighbours(),
        }
        seeded = {
            "vbpr": lambda seed: VBPRRecommender(seed=seed),
            "ranker": lambda seed: CandidateRanker(
                generators(True, seed), item_categories=categories, seed=seed
            ).on(validation),
            "ranker_no_visual": lambda seed: CandidateRanker(
                generators(False, seed), item_categories=categories, seed=seed
            ).on(validation),
            "ranker_cold_share": lambda seed: CandidateRanker(
                generators(True, seed), item_categories=categories, seed=seed, cold_share=COLD_SHARE
            ).on(validation),
        }
        note = (
            f"synthetic shop {config.users} users x {config.items} items x {config.days} days, test = the last "
            f"{settings.test_days} days, {int(split.cold.sum())} cold items; validation: {design}"
        )
        results, per_user, rankers = {}, {}, []
        for name in [*deterministic, *seeded]:
            runs = [deterministic[name]] if name in deterministic else [seeded[name](seed) for seed in SEEDS]
            measured = [fit_and_evaluate(model, split, K) for model in runs]
            if name == "ranker":
                rankers = [run.ranker for run in runs]
            results[name] = {k: float(np.mean([m[k] for m, _ in measured])) for k in measured[0][0]}
            per_user[name] = np.mean([users for _, users in measured], axis=0)
            seeds = (
                ""
                if len(runs) == 1
                else f"; mean of seeds {SEEDS}: " + ", ".join(f"{m['recall_at_20']:.4f}" for m, _ in measured)
            )
            print(
                f"  {name}: Recall@{K} {results[name]['recall_at_20']:.4f}, "
                f"cold {results[name]['cold_recall_at_20']:.4f}{seeds}",
                file=sys.stderr,
            )
            for key in ("recall_at_20", "cold_recall_at_20", "ndcg_at_20", "fit_seconds"):
                out[f"{ranker_key('synthetic', name)}.{key}"] = figure(
                    round(results[name][key], 4), key, note + seeds
                )
        singles = ("popularity", "item_cf", "ease", "vbpr", "visual_profile", "visual_neighbours")
        best = max(singles, key=lambda n: results[n]["recall_at_20"])
        for name in ("ranker", "ranker_no_visual", "ranker_cold_share"):
            low, high = bootstrap_interval(per_user[name] - per_user[best], seed=settings.seed)
            out[f"mf.synthetic.{name}.recall_at_20_vs_best_single_low"] = figure(
                round(low, 4), "delta", f"vs {best}"
            )
            out[f"mf.synthetic.{name}.recall_at_20_vs_best_single_high"] = figure(
                round(high, 4), "delta", f"vs {best}"
            )
        out["mf.synthetic.ranker_over_attribute_profile_recall_at_20"] = figure(
            round(results["ranker"]["recall_at_20"] / results["attribute_profile"]["recall_at_20"], 3),
            "ratio",
            "goal >= 0.9",
        )
        for name in ("ranker", "ranker_cold_share"):
            out[f"mf.synthetic.{name}_cold_over_visual_profile"] = figure(
                round(
                    results[name]["cold_recall_at_20"]
                    / max(results["visual_profile"]["cold_recall_at_20"], 1e-9),
                    3,
                ),
                "ratio",
                "cold-item recall@20; goal >= 1" + (f"; cold_share {COLD_SHARE}" if name != "ranker" else ""),
            )
        low, high = bootstrap_interval(per_user["ranker_cold_share"] - per_user["ranker"], seed=settings.seed)
        out["mf.synthetic.ranker_cold_share.recall_at_20_vs_ranker_low"] = figure(
            round(low, 4), "delta", "paired bootstrap, 95%"
        )
        out["mf.synthetic.ranker_cold_share.recall_at_20_vs_ranker_high"] = figure(
            round(high, 4), "delta", "paired bootstrap, 95%"
        )
        importance = sum(ranker.feature_importance() for ranker in rankers)
        for feature, share in (importance / importance.sum()).sort_values(ascending=False).items():
            out[f"mf.synthetic.ranker.importance.{feature}"] = figure(
                round(float(share), 4), "share of gain", ""
            )
        out["mf.synthetic.ranker.rounds"] = figure(
            float(np.mean([r.best_iteration for r in rankers])),
            "rounds",
            f"early-stopped; mean of seeds {SEEDS}",
        )
    return out
