"""The mf_hm bench: `python bench/run.py mf_hm`. See :func:`run`."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchkit import CACHE, HM_SAMPLE, Figures, figure, implicit_model

CUT, LAST = "2020-07-09", "2020-09-22"


def hm_split(home: Path, bench: str):
    """hm-sample imported into a lake under ``home`` with the cnn bench's embeddings, and the split of
    the recommender issue: train before 2020-07-09, test = what users with a purchase before the cut
    bought on or after it (not bought before). ``(settings, lake, split, last, cut)``, or None (saying
    so on stderr) where hm-sample or the embeddings are absent."""
    import dataclasses
    from datetime import date

    import numpy as np

    from visrec.devdata.importer import import_hm
    from visrec.devdata.synth import write_events_table
    from visrec.recsys.data import build_split
    from visrec.settings import Settings
    from visrec.store.lake import Lake
    from visrec.store.tables import embeddings_table

    cache = CACHE / "hm_embeddings.npz"
    if not (HM_SAMPLE / "articles.csv").exists() or not cache.exists():
        print(f"{bench}: needs hm-sample and the cnn bench's embeddings; skipped", file=sys.stderr)
        return None
    cut = date.fromisoformat(CUT)
    settings = Settings(home=home, test_days=(date.fromisoformat(LAST) - cut).days + 1, test_min_users=1)
    lake = Lake.from_settings(settings)
    import_hm(HM_SAMPLE, lake)
    write_events_table(lake)
    z = np.load(cache)
    # The served embedding (classifier's, then retrieval's); VBPR learns from the classifier's part.
    dims = int(z["classifier_dims"]) if "classifier_dims" in z else None
    lake.write_table(
        "item_embeddings",
        LAST,
        embeddings_table(z["item_ids"].tolist(), z["embeddings"].astype(np.float32), "bench-cnn", dims),
    )
    split = build_split(settings, lake, LAST)
    history = np.asarray((split.train.user_items > 0).sum(axis=1)).ravel() > 0
    split = dataclasses.replace(
        split, relevant=[r if history[u] else set() for u, r in enumerate(split.relevant)]
    )
    return settings, lake, split, LAST, cut


def run() -> Figures:
    """Recommenders on hm-sample's real purchases, the split of the recommender issue: train before
    2020-07-09, test = what users with a purchase before the cut bought on or after it (not bought
    before), candidates every imaged article; K = 12. Item embeddings from the cnn bench's model
    (run it first). Hits are reported beside every metric: a handful of them decides the rest."""

    from visrec.recsys.baselines import ItemCF, Popularity, SparkALS, SparkItemCF, VisualProfile
    from visrec.recsys.select import make_recommender, select_vbpr
    from visrec.recsys.train import evaluate_model
    from visrec.recsys.vbpr import VBPRRecommender
    from visrec.store.spark import get_spark

    out: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        loaded = hm_split(Path(tmp), "mf_hm")
        if loaded is None:
            return {}
        settings, lake, split, last, cut = loaded
        spark = get_spark(settings, "bench-mf-hm")
        from implicit.als import AlternatingLeastSquares
        from implicit.bpr import BayesianPersonalizedRanking

        models = {
            "popularity": Popularity(),
            "item_cf": ItemCF(),
            "spark_item_cf": SparkItemCF(spark),
            "spark_als": SparkALS(spark),
            "visual_profile": VisualProfile(),
            "implicit_als": implicit_model(
                AlternatingLeastSquares(factors=64, iterations=15, random_state=0)
            ),
            "implicit_bpr": implicit_model(
                BayesianPersonalizedRanking(factors=64, iterations=100, random_state=0)
            ),
            "mf": VBPRRecommender(visual_factors=0),
            "vbpr": VBPRRecommender(),
            "selected": make_recommender(settings, select_vbpr(settings, split, last).params),
        }
        rel = [r for r in split.relevant if r]
        cold_pairs = sum(len({i for i in r if split.cold[i]}) for r in rel)
        note = (
            f"hm-sample: train before {cut}, test = {len(rel)} users with a purchase before it, "
            f"{sum(map(len, rel))} user-article pairs after it ({cold_pairs} of articles nobody bought "
            f"before), {split.train.n_items} candidate articles; embeddings of the cnn bench's model"
        )
        hits = {}
        for name, model in models.items():
            metrics = evaluate_model(model, split, k=12)
            hits[name] = metrics["hits_at_12"]
            for key in (
                "hits_at_12",
                "map_at_12",
                "recall_at_12",
                "ndcg_at_12",
                "cold_recall_at_12",
                "coverage",
                "fit_seconds",
            ):
                out[f"mf.hm.{name}.{key}"] = figure(round(metrics[key], 4), key, note)
        best = max((h, n) for n, h in hits.items() if n not in ("mf", "vbpr", "selected"))
        out["mf.hm.selected_hits_over_best_baseline"] = figure(
            round(hits["selected"] / max(best[0], 1), 2),
            "ratio",
            f"best baseline: {best[1]} ({best[0]:.0f} hits); goal >= 1",
        )
        out["mf.hm.vbpr_hits_over_best_baseline"] = figure(
            round(hits["vbpr"] / max(best[0], 1), 2),
            "ratio",
            f"best baseline: {best[1]} ({best[0]:.0f} hits); goal >= 2",
        )
    return out
