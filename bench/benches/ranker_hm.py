"""The ranker_hm bench: `python bench/run.py ranker_hm`. See :func:`run`."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchkit import HM_SAMPLE, Figures, figure, ranker_key

K = 12


def run() -> Figures:
    """Two-stage recommendations on hm-sample's real purchases (the mf_hm split: train before
    2020-07-09, test = what users with a purchase before the cut bought after it; K = 12; item
    embeddings from the cnn bench's model, run it first). The ranker learns on the nightly selection's
    validation design over the candidates of popularity (50, recent window), item-CF (50), RP3beta (50)
    and the users' visual profiles (50), with the articles' product types for the category affinity
    and each article's mean price before the cut (against the customer's usual price) as features;
    beside it every generator alone on the same split. Recall@12 and MAP@12 with hits, and the paired-
    bootstrap 95% interval of the ranker's recall gain over popularity (the sample is sparse: a handful
    of hits decides the rest)."""

    from benches.mf_hm import hm_split
    from visrec.recsys.baselines import ItemCF, Popularity, RP3Beta, VisualProfile
    from visrec.recsys.data import item_categories
    from visrec.recsys.metrics import bootstrap_interval
    from visrec.recsys.ranker import CandidateRanker, Generator
    from visrec.recsys.select import validation_design
    from visrec.recsys.train import fit_and_evaluate

    out: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        loaded = hm_split(Path(tmp), "ranker_hm")
        if loaded is None:
            return {}
        settings, lake, split, last, cut = loaded
        validation, design = validation_design(settings, split, last)
        if validation is None:
            print(f"  ranker_hm: no validation design ({design}); skipped", file=sys.stderr)
            return {}
        categories = item_categories(lake, last, split.train.item_ids)
        prices = _prices_before(cut, split.train.item_ids)

        generators = [
            Generator("popularity", Popularity(), 50),
            Generator("item_cf", ItemCF(), 50),
            Generator("rp3", RP3Beta(), 50),
            Generator("visual_profile", VisualProfile(), 50),
        ]
        models = {
            "popularity": Popularity(),
            "item_cf": ItemCF(),
            "rp3": RP3Beta(),
            "visual_profile": VisualProfile(),
            "ranker": CandidateRanker(
                generators,
                item_categories=categories,
                item_values={"price": prices},
                min_child_samples=20,
                seed=settings.seed,
            ).on(validation),
        }
        rel = [r for r in split.relevant if r]
        note = f"hm-sample: train before {cut}, {len(rel)} test users; validation: {design}"
        per_user = {}
        for name, model in models.items():
            metrics, per_user[name] = fit_and_evaluate(model, split, K)
            print(
                f"  {name}: {metrics['hits_at_12']:.0f} hits, recall@12 {metrics['recall_at_12']:.4f}",
                file=sys.stderr,
            )
            for key in ("hits_at_12", "recall_at_12", "map_at_12", "cold_recall_at_12", "fit_seconds"):
                out[f"{ranker_key('hm', name)}.{key}"] = figure(round(metrics[key], 4), key, note)
        low, high = bootstrap_interval(per_user["ranker"] - per_user["popularity"], seed=settings.seed)
        out["mf.hm.ranker.recall_at_12_vs_popularity_low"] = figure(
            round(low, 4), "delta", "paired bootstrap, 95%"
        )
        out["mf.hm.ranker.recall_at_12_vs_popularity_high"] = figure(
            round(high, 4), "delta", "paired bootstrap, 95%"
        )
        importance = models["ranker"].ranker.feature_importance()
        for feature, share in (importance / max(importance.sum(), 1e-12)).items():
            out[f"mf.hm.ranker.importance.{feature}"] = figure(round(float(share), 4), "share of gain", "")
    return out


def _prices_before(cut, item_ids: list[str]):
    """Each article's mean paid price in hm-sample's transactions before ``cut`` (NaN: none)."""
    import pandas as pd

    paid = pd.read_csv(HM_SAMPLE / "transactions.csv", dtype={"article_id": str}, parse_dates=["t_dat"])
    mean = paid[paid["t_dat"] < pd.Timestamp(cut)].groupby("article_id")["price"].mean()
    return mean.reindex(item_ids).to_numpy(float)
