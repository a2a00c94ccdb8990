"""The candidates_ml1m bench: `python bench/run.py candidates_ml1m`. See :func:`run`."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from benchkit import Figures, figure

from visrec.recsys.baselines import ItemCF, LowRankEASE, Popularity, VisualProfile
from visrec.recsys.candidates import FromRecommender, merge, recall_at
from visrec.recsys.metrics import bootstrap_interval, users_with
from visrec.settings import Settings

SIZES = (50, 100, 200)


def run() -> Figures:
    """The first stage of two-stage recommendations on MovieLens-1M (the mf_ml1m protocol: per user a
    random 75/25 split of their movies, seed 42): each candidate generator's recall@N of the held-out
    movies at N = 50/100/200 (the ceiling a ranker over its proposals can reach), and the union's.
    Generators: popularity, item-CF, EASE as served (low rank 128, l2 500), the users' visual profiles
    over the poster embeddings (`mf_ml1m`'s cache; zeros for movies without a poster). Each figure
    carries a bootstrap 95% interval over users."""
    from benches.mf_ml1m import SEED, ml1m_split

    with tempfile.TemporaryDirectory() as tmp:
        loaded = ml1m_split(Settings(home=Path(tmp)), "candidates_ml1m")
    if loaded is None:
        return {}
    split, _ = loaded
    out: Figures = {}
    users = users_with(split.relevant)
    relevant = [split.relevant[u] for u in users]
    generators = [
        FromRecommender("popularity", Popularity()),
        FromRecommender("item_cf", ItemCF()),
        FromRecommender("ease", LowRankEASE(l2=500.0, rank=128, seed=SEED)),
        FromRecommender("visual_profile", VisualProfile()),
    ]
    proposals = {}
    for generator in generators:
        started = time.perf_counter()
        generator.fit(split.train)
        proposals[generator.name], _ = generator.candidates(users, split.train.user_items, max(SIZES))
        seconds = time.perf_counter() - started
        out[f"candidates.ml1m.{generator.name}.seconds"] = figure(round(seconds, 1), "s", "fit + propose 200")
    for n in SIZES:
        per_generator = {name: ids[:, :n] for name, ids in proposals.items()}
        rows = {**per_generator, "union": merge(list(per_generator.values()))}
        for name, proposed in rows.items():
            recall = recall_at(proposed, relevant)
            low, high = bootstrap_interval(recall)
            size = np.mean([len(p) for p in proposed]) if name == "union" else n
            note = f"95% CI {low:.4f}..{high:.4f}; {len(users)} users" + (
                f"; {size:.0f} candidates per user on average" if name == "union" else ""
            )
            out[f"candidates.ml1m.{name}.recall_at_{n}"] = figure(
                round(float(recall.mean()), 4), "recall", note
            )
    return out
