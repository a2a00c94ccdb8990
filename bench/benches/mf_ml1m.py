"""The mf_ml1m bench: `python bench/run.py mf_ml1m`. See :func:`run`."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from benchkit import CACHE, ML1M, Figures, figure, implicit_model

from visrec.api import load_images, split_per_user, train_image_model
from visrec.recsys.baselines import EASE, ItemCF, Popularity, Recommender
from visrec.recsys.data import Split
from visrec.recsys.metrics import bootstrap_interval, map_at_k, ndcg_per_user, recall_per_user, users_with
from visrec.settings import Settings

K = 10
SEED = 42
POSTER_MINUTES = 8.0  # the image model's budget on the posters
MODELS = (
    "popularity",
    "item_cf",
    "ease",
    "defaults",
    "visual_ablation",
    "selected",
    "implicit_als",
    "implicit_bpr",
)


def first_genres() -> dict[str, str]:
    """Each movie's first genre (its category, as the image model and the ranker see it)."""
    movies = pd.read_csv(
        ML1M / "movies.dat",
        sep="::",
        engine="python",
        names=["item_id", "title", "genres"],
        encoding="latin-1",
    )
    return dict(zip(movies["item_id"].astype(str), movies["genres"].str.split("|").str[0], strict=True))


def user_segments() -> dict[str, str]:
    """Each user's segment: gender and age bracket from users.dat (e.g. ``F25``)."""
    users = pd.read_csv(
        ML1M / "users.dat",
        sep="::",
        engine="python",
        names=["user_id", "gender", "age", "occupation", "zip"],
        encoding="latin-1",
    )
    return dict(zip(users["user_id"].astype(str), users["gender"] + users["age"].astype(str), strict=True))


def _poster_embeddings(item_ids: list[str], settings: Settings) -> tuple[np.ndarray, int]:
    """The image model trained on the posters with each movie's first genre as its category, as the
    nightly run would train it on a catalog; the served embedding (classifier's, then retrieval's) of
    every rated movie (a movie without a poster: zeros), and the classifier's width. Cached."""
    from visrec.vision.embed import embed_kinds

    cache = CACHE / "ml1m_posters.npz"
    if cache.exists():
        z = np.load(cache)
        if z["item_ids"].tolist() == item_ids:
            return z["embeddings"], int(z["classifier_dims"])
    genre = first_genres()
    have = [i for i in item_ids if (ML1M / "posters" / f"{i}.jpg").exists()]
    frame = pd.DataFrame(
        {
            "item_id": have,
            "category": [genre[i] for i in have],
            "image": [str(ML1M / "posters" / f"{i}.jpg") for i in have],
        }
    )
    images = load_images(frame, size=64)
    result = train_image_model(images, settings, max_minutes=POSTER_MINUTES)
    kinds = embed_kinds(result.model, images.pixels)
    served = kinds.get("both", kinds["classifier"])  # what the nightly item_embeddings table holds
    embeddings = np.zeros((len(item_ids), served.shape[1]), np.float32)
    index = {i: n for n, i in enumerate(item_ids)}
    embeddings[[index[i] for i in have]] = served
    dims = kinds["classifier"].shape[1]
    CACHE.mkdir(exist_ok=True)
    np.savez(
        cache,
        item_ids=np.array(item_ids),
        embeddings=embeddings,
        classifier_dims=dims,
        accuracy=result.metrics["held_out_accuracy"],
    )
    return embeddings, dims


def ml1m_split(settings: Settings, bench: str) -> tuple[Split, int] | None:
    """ML-1M's per-user 75/25 split (seed 42) with the poster embeddings as item features, and its
    number of interactions; None, saying so on stderr, where the data is absent."""
    if not (ML1M / "ratings.parquet").exists():
        print(f"  {bench}: needs {ML1M} (absent here); skipped", file=sys.stderr)
        return None
    ratings = pd.read_parquet(ML1M / "ratings.parquet").rename(
        columns={"userID": "user_id", "movieID": "item_id"}
    )
    item_ids = sorted(ratings["item_id"].astype(str).unique())
    features, dims = _poster_embeddings(item_ids, settings)
    split = split_per_user(
        ratings, test_share=0.25, seed=SEED, item_ids=item_ids, item_features=features, classifier_dims=dims
    )
    return split, len(ratings)


def _measure(model: Recommender, split: Split, seen: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """Fit on the split's training part; rank, for every test user, the items seen in training that
    they have not interacted with; top-10 NDCG, MAP, precision and recall, and NDCG per user."""
    started = time.perf_counter()
    model = model.fit(split.train)
    seconds = time.perf_counter() - started
    users = users_with(split.relevant)
    ids, _ = model.recommend(users, split.train.user_items, N=K, filter_items=np.flatnonzero(~seen))
    relevant = [split.relevant[u] for u in users]
    ndcg = ndcg_per_user(ids, relevant, K)
    hits = np.array([len(set(row.tolist()) & r) for row, r in zip(ids, relevant, strict=True)])
    metrics = {
        "ndcg_at_10": float(ndcg.mean()),
        "map_at_10": map_at_k(ids, relevant, K),
        "precision_at_10": float((hits / K).mean()),
        "recall_at_10": float(recall_per_user(ids, relevant, K).mean()),
        "fit_seconds": seconds,
    }
    return metrics, ndcg


def run() -> Figures:
    """Recommenders on MovieLens-1M with posters (../shared/data/ml1m-posters), the protocol Microsoft
    Recommenders publishes against: per user a random 75/25 split of their movies (seed 42), rank the
    movies seen in training that the user has not rated, top-10. Models: popularity, item-CF, EASE
    (closed-form item-item, l2 500), visrec's
    VBPR at its defaults with the poster embeddings (``defaults``), the same without the visual term
    (``visual_ablation``, i.e. BPR-MF), the nightly selection exactly as ``train_mf`` runs it on this
    data (no timestamps: its per-user holdout design) then refit (``selected``), and implicit's ALS and
    BPR. The image model trains on the posters (first genre as category) for a budget. Each model's
    NDCG@10 carries a paired-bootstrap 95% interval of its difference to ``defaults`` over users."""
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking

    from visrec.recsys.select import default_params, make_recommender, make_vbpr, select_vbpr

    out: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp))
        loaded = ml1m_split(settings, "mf_ml1m")
        if loaded is None:
            return {}
        split, interactions = loaded
        seen = np.asarray((split.train.user_items > 0).sum(axis=0)).ravel() > 0
        started = time.perf_counter()
        selection = select_vbpr(settings, split, "2000-01-01")
        select_seconds = time.perf_counter() - started
        defaults = default_params(settings)
        models = {
            "popularity": Popularity(),
            "item_cf": ItemCF(),
            "ease": EASE(l2=500.0),
            "defaults": make_vbpr(settings, defaults),
            "visual_ablation": make_vbpr(settings, {**defaults, "visual_factors": 0}),
            "selected": make_recommender(settings, selection.params),
            "implicit_als": implicit_model(
                AlternatingLeastSquares(factors=64, iterations=15, random_state=0)
            ),
            "implicit_bpr": implicit_model(
                BayesianPersonalizedRanking(factors=64, iterations=100, random_state=0)
            ),
        }
        users = len(users_with(split.relevant))
        note = (
            f"ML-1M: {interactions:,} interactions, {split.train.n_users} users, {int(seen.sum())} movies seen "
            f"in training; per-user 75/25 split seed {SEED}, {users} test users, top-{K}"
        )
        per_user = {}
        for name, model in models.items():
            metrics, per_user[name] = _measure(model, split, seen)
            for key, value in metrics.items():
                out[f"mf.ml1m.{name}.{key}"] = figure(round(value, 4), key, note)
            print(f"  {name}: NDCG@10 {metrics['ndcg_at_10']:.4f}", file=sys.stderr)
        for name in MODELS:
            if name != "defaults":
                low, high = bootstrap_interval(per_user[name] - per_user["defaults"], seed=SEED)
                out[f"mf.ml1m.{name}.ndcg_at_10_vs_defaults_low"] = figure(
                    round(low, 4), "delta", "paired bootstrap, 95%"
                )
                out[f"mf.ml1m.{name}.ndcg_at_10_vs_defaults_high"] = figure(
                    round(high, 4), "delta", "paired bootstrap, 95%"
                )
        peers = max(out[f"mf.ml1m.{p}.ndcg_at_10"]["value"] for p in ("implicit_als", "implicit_bpr"))
        out["mf.ml1m.selected_over_best_peer"] = figure(
            round(out["mf.ml1m.selected.ndcg_at_10"]["value"] / peers, 3),
            "ratio",
            "NDCG@10; goal >= 1, moonshot 1.05",
        )
        out["mf.ml1m.selection.seconds"] = figure(
            round(select_seconds, 1), "s", f"{len(selection.trials)} trials"
        )
        out["mf.ml1m.selection.validation_users"] = figure(
            selection.validation_users, "users", selection.design
        )
        out["mf.ml1m.selection.kept_defaults"] = figure(
            int(selection.verdict.startswith("the defaults")),
            "bool",
            f"{selection.verdict}; chosen {selection.params}",
        )
    return out
