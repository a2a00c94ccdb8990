"""The mf bench: `python bench/run.py mf`. See :func:`run`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from benchkit import Figures, figure


def synthetic_shop(settings):
    """The demo-scale synthetic shop in ``settings``' lake with its image model trained on the shop's
    own images (3-minute budget) and the catalog embedded; the evaluation split of its last day."""
    from visrec.devdata.synth import ShopConfig, generate_shop, write_events_table
    from visrec.ingest.catalog_images import ingest_images
    from visrec.recsys.data import build_split
    from visrec.store.lake import Lake
    from visrec.vision.embed import embed_items
    from visrec.vision.train import CNNConfig, train_cnn

    lake = Lake.from_settings(settings)
    config = ShopConfig()
    generate_shop(config, lake)
    last = f"2026-11-{config.days:02d}"
    ingest_images(settings, lake, last)
    cnn = train_cnn(
        settings, last, lake=lake, config=CNNConfig.from_settings(settings, max_minutes=3, register=False)
    )
    embed_items(settings, last, lake, cnn.model, "bench")
    write_events_table(lake)
    return lake, config, last, cnn, build_split(settings, lake, last)


def truth_models(lake):
    """The synthetic shop's two references, from its ``truth/``: an oracle that ranks by each user's
    true taste, and a learner that knows every item's true category, colour and pattern but must learn
    each user's weights on them from their history; and the items' true attributes."""
    import numpy as np

    from visrec.recsys.baselines import Recommender

    users = {u["user_id"]: u for u in map(json.loads, lake.get_bytes("truth/users.jsonl").splitlines())}
    truth = {}
    for line in lake.get_bytes("truth/items.csv").decode().splitlines()[1:]:
        item, cat, colour, pattern, *_ = line.split(",")
        truth[item] = (cat, colour, pattern)

    class Oracle(Recommender):
        def fit(self, data):
            self.affinity = np.array(
                [
                    [
                        users[u]["category"][truth[i][0]]
                        + users[u]["colour"][truth[i][1]]
                        + users[u]["pattern"][truth[i][2]]
                        for i in data.item_ids
                    ]
                    for u in data.user_ids
                ],
                np.float32,
            )
            return self

        def score(self, userids):
            return self.affinity[userids]

    class AttributeProfile(Recommender):
        """What a learner could reach if it knew every item's true category, colour and pattern
        (the image model only approximates them): each user's weights on the three are
        estimated from their own history (log of Laplace-smoothed counts), plus half the log
        popularity. The oracle knows the weights; this has to learn them from a few items."""

        def fit(self, data):
            seen = (data.user_items > 0).astype(np.float32).tocsr()
            scores = np.zeros(data.user_items.shape, np.float32)
            for k in range(3):
                values = sorted({truth[i][k] for i in data.item_ids})
                onehot = np.zeros((data.n_items, len(values)), np.float32)
                onehot[np.arange(data.n_items), [values.index(truth[i][k]) for i in data.item_ids]] = 1
                counts = np.asarray(seen @ onehot) + 1.0
                scores += np.log(counts / counts.sum(1, keepdims=True)) @ onehot.T
            popularity = np.asarray(seen.sum(0)).ravel() + 1.0
            self.scores = scores + 0.5 * np.log(popularity / popularity.sum())[None, :]
            return self

        def score(self, userids):
            return self.scores[userids]

    return Oracle(), AttributeProfile(), truth


def run() -> Figures:
    """Recommender quality on the demo-scale synthetic shop (last 2 days held out): every model's
    Recall@20 and cold-item recall beside an oracle that ranks by each user's true taste and a
    learner that knows the true item attributes but must learn the tastes; item embeddings from the
    image model trained on the shop's own images (3-minute budget). ``selected`` is what the nightly
    search picks; the ``*_true_attributes`` rows feed VBPR the true attributes instead of embeddings."""
    import dataclasses

    import numpy as np

    from visrec.recsys.baselines import ItemCF, Popularity, SparkALS, SparkItemCF, VisualProfile
    from visrec.recsys.select import make_recommender, select_vbpr
    from visrec.recsys.train import evaluate_model
    from visrec.recsys.vbpr import VBPRRecommender
    from visrec.settings import Settings
    from visrec.store.spark import get_spark

    out: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), test_days=2, test_min_users=1)  # the bench's fixed split
        lake, config, last, cnn, split = synthetic_shop(settings)

        oracle, attribute_profile, truth = truth_models(lake)

        spark = get_spark(settings, "bench-mf")
        models = {
            "oracle": oracle,
            "attribute_profile": attribute_profile,
            "popularity": Popularity(),
            "item_cf": ItemCF(),
            "spark_item_cf": SparkItemCF(spark),
            "visual_profile": VisualProfile(),
            "spark_als": SparkALS(spark),
            "mf": VBPRRecommender(visual_factors=0),
            "vbpr": VBPRRecommender(),
            # What the nightly training picks: a search on a validation window before the test window.
            "selected": make_recommender(settings, select_vbpr(settings, split, last).params),
        }
        note = (
            f"synthetic shop {config.users} users x {config.items} items x {config.days} days, "
            f"test = clicks/carts/purchases in the last {settings.test_days} days, "
            f"{int(split.cold.sum())} cold items; CNN held-out accuracy {cnn.metrics['held_out_accuracy']:.3f}"
        )
        results = {name: evaluate_model(model, split) for name, model in models.items()}
        # The same recommender fed the items' true attributes (one-hot) instead of the image model's
        # embeddings: how far the embeddings, not the recommender, limit it.
        names = sorted({v for attrs in truth.values() for v in attrs})
        onehot = np.zeros((split.train.n_items, len(names)), np.float32)
        for row, item in enumerate(split.train.item_ids):
            onehot[row, [names.index(v) for v in truth[item]]] = 1.0
        onehot /= np.linalg.norm(onehot, axis=1, keepdims=True)
        told = dataclasses.replace(
            split, train=dataclasses.replace(split.train, item_features=onehot, classifier_dims=None)
        )
        results["vbpr_true_attributes"] = evaluate_model(VBPRRecommender(), told)
        results["selected_true_attributes"] = evaluate_model(
            make_recommender(settings, select_vbpr(settings, told, last).params), told
        )
        # The item embeddings are the image model's classifier and retrieval embeddings side by side; VBPR
        # reads the classifier's part (classifier_dims), the visual profile all of it. Each fed the other
        # way (issue 24: which embedding each should use).
        both = dataclasses.replace(split, train=dataclasses.replace(split.train, classifier_dims=None))
        results["vbpr_both_embeddings"] = evaluate_model(VBPRRecommender(), both)
        part = split.train.item_features[:, : split.train.classifier_dims]
        part = part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
        fed = dataclasses.replace(
            split, train=dataclasses.replace(split.train, item_features=part, classifier_dims=None)
        )
        results["visual_profile_classifier_embedding"] = evaluate_model(VisualProfile(), fed)
        for name, metrics in results.items():
            for key in (
                "hits_at_20",
                "recall_at_20",
                "ndcg_at_20",
                "map_at_20",
                "cold_recall_at_20",
                "coverage",
                "intra_list_diversity",
                "novelty",
                "fit_seconds",
            ):
                out[f"mf.synthetic.{name}.{key}"] = figure(round(metrics[key], 4), key, note)
        out["mf.synthetic.vbpr_over_oracle_recall_at_20"] = figure(
            round(results["vbpr"]["recall_at_20"] / results["oracle"]["recall_at_20"], 3),
            "ratio",
            "goal >= 0.8",
        )
        out["mf.synthetic.selected_over_attribute_profile_recall_at_20"] = figure(
            round(results["selected"]["recall_at_20"] / results["attribute_profile"]["recall_at_20"], 3),
            "ratio",
            "goal >= 0.9",
        )
        out["mf.synthetic.attribute_profile_over_oracle_recall_at_20"] = figure(
            round(results["attribute_profile"]["recall_at_20"] / results["oracle"]["recall_at_20"], 3),
            "ratio",
            "how much of the oracle a learner that knows the true item attributes reaches from the histories",
        )
    return out
