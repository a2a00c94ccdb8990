"""Every recommender through one behavioural test mixin, the metrics by hand, and VBPR's visual
signal on a synthetic shop whose true tastes are known."""

from __future__ import annotations

import csv
import dataclasses
import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp

from visrec.devdata.synth import CATEGORIES, COLOURS, PATTERNS, ShopConfig, generate_shop, write_events_table
from visrec.devdata.trial import differing_tables
from visrec.models.mf import VBPR
from visrec.recsys.baselines import (
    EASE,
    ItemCF,
    LowRankEASE,
    Popularity,
    RP3Beta,
    SparkALS,
    SparkItemCF,
    VisualNeighbours,
    VisualProfile,
)
from visrec.recsys.data import Split, TrainData, build_split
from visrec.recsys.metrics import (
    coverage,
    hits_at_k,
    intra_list_diversity,
    map_at_k,
    ndcg_at_k,
    novelty,
    recall_at_k,
)
from visrec.recsys.score import score_users
from visrec.recsys.select import select_vbpr
from visrec.recsys.train import MFConfig, evaluate_model, promotion_gate, train_mf
from visrec.recsys.train_ranker import champion_ranker, train_ranker
from visrec.recsys.vbpr import VBPRRecommender
from visrec.settings import Settings
from visrec.store.lake import Lake
from visrec.store.tables import embeddings_table

SHOP = ShopConfig(users=600, items=300, days=8, seed=11)
LAST = "2026-11-08"


def visual_features(lake: Lake, item_ids: list[str], noise: float = 0.3, seed: int = 0) -> np.ndarray:
    """What a good image model sees: category, colour and pattern one-hot, plus noise, normalised."""
    truth = {r["item_id"]: r for r in csv.DictReader(io.StringIO(lake.get_bytes("truth/items.csv").decode()))}
    names = [*CATEGORIES, *COLOURS, *PATTERNS]
    feats = np.zeros((len(item_ids), len(names)), np.float32)
    for k, item in enumerate(item_ids):
        for attr in ("category", "colour", "pattern"):
            feats[k, names.index(truth[item][attr])] = 1.0
    feats += np.random.default_rng(seed).normal(0, noise / np.sqrt(len(names)), feats.shape)
    return feats / np.linalg.norm(feats, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A synthetic shop with its events and item embeddings written as lake tables (no Spark)."""
    settings = Settings(
        home=tmp_path_factory.mktemp("rec"), test_days=2, test_min_users=1
    )  # calibrated split
    lake = Lake.from_settings(settings)
    generate_shop(SHOP, lake)
    write_events_table(lake)
    catalog = pd.read_csv(io.BytesIO(lake.get_bytes("raw/catalog/items.csv")), dtype=str)
    item_ids = sorted(catalog["item_id"])
    emb = visual_features(lake, item_ids)
    lake.write_table("item_embeddings", LAST, embeddings_table(item_ids, emb, "truth-features"))
    return settings, lake, build_split(settings, lake, LAST)


class RecommenderBehaviour:
    """The behaviour every recommender owes its callers (run against each model below)."""

    def make(self, spark):
        raise NotImplementedError

    def test_k_items_per_user_none_filtered_deterministic(self, shop, spark):
        _, _, split = shop
        data = split.train
        users = np.arange(0, data.n_users, 7)
        banned = np.array([0, 5, 9])
        first = self.make(spark).fit(data)
        ids, scores = first.recommend(users, data.user_items, N=10, filter_items=banned)
        assert ids.shape == (len(users), 10) and (ids >= 0).all()
        for row, user in enumerate(users):
            liked = set(data.user_items[user].indices.tolist())
            assert not (set(ids[row].tolist()) & (liked | set(banned.tolist())))
            assert len(set(ids[row].tolist())) == 10
            assert (np.diff(scores[row]) <= 1e-6).all()
        again, _ = self.make(spark).fit(data).recommend(users, data.user_items, N=10, filter_items=banned)
        np.testing.assert_array_equal(ids, again)

    def test_short_catalog_pads_with_minus_one(self, spark):
        matrix = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], np.float32))
        feats = np.eye(3, dtype=np.float32)
        model = self.make(spark).fit(TrainData(matrix, feats, None, ["a", "b"], ["x", "y", "z"]))
        ids, scores = model.recommend(np.array([0, 1]), matrix, N=3)
        assert ids.tolist() == [[2, -1, -1], [0, -1, -1]] and np.isneginf(scores[:, 1:]).all()


class TestPopularity(RecommenderBehaviour):
    def make(self, spark):
        return Popularity()


class TestItemCF(RecommenderBehaviour):
    def make(self, spark):
        return ItemCF(neighbours=50)


class TestVisualNeighbours(RecommenderBehaviour):
    def make(self, spark):
        return VisualNeighbours(recent_items=5)


class TestRP3Beta(RecommenderBehaviour):
    def make(self, spark):
        return RP3Beta(neighbours=50)


class TestEASE(RecommenderBehaviour):
    def make(self, spark):
        return EASE(l2=50.0)


def test_ease_solves_the_closed_form_and_refuses_a_catalog_too_large():
    rng = np.random.default_rng(0)
    x = (rng.random((60, 12)) < 0.3).astype(np.float32)
    model = EASE(l2=10.0).fit(TrainData(sp.csr_matrix(x)))
    p = np.linalg.inv(x.T.astype(np.float64) @ x + 10.0 * np.eye(12))
    expected = np.eye(12) - p / np.diag(p)[None, :]
    assert np.allclose(model.weights, expected, atol=1e-5) and np.allclose(np.diag(model.weights), 0)
    assert np.allclose(model.score(np.arange(3)), x[:3] @ expected, atol=1e-4)
    with pytest.raises(ValueError, match="over max_items=5"):
        EASE(max_items=5).fit(TrainData(sp.csr_matrix(x)))


class TestLowRankEASE(RecommenderBehaviour):
    def make(self, spark):
        return LowRankEASE(l2=50.0, rank=16)


def test_low_rank_ease_is_a_factor_model_the_registry_can_hold():
    from visrec.recsys.train import _factors_as_keras

    rng = np.random.default_rng(1)
    x = (rng.random((80, 30)) < 0.25).astype(np.float32)
    x[:, 29] = 0  # an item nobody touched
    data = TrainData(sp.csr_matrix(x))
    model = LowRankEASE(l2=5.0, rank=29).fit(data)
    full = EASE(l2=5.0).fit(data)
    # At full rank the factors give EASE's scores (the untouched item pushed below everything).
    assert np.allclose(model.score(np.arange(5))[:, :29], full.score(np.arange(5))[:, :29], atol=1e-3)
    ids, _ = model.recommend(np.arange(80), data.user_items, N=5)
    assert 29 not in ids
    keras_model = _factors_as_keras(model)
    users, pos, neg = np.array([0, 1], np.int32), np.array([2, 3], np.int32), np.array([4, 5], np.int32)
    scores = model.score(np.array([0, 1]))
    expected = scores[[0, 1], pos] - scores[[0, 1], neg]
    assert np.allclose(np.asarray(keras_model((users, pos, neg))).ravel(), expected, atol=1e-4)


class TestVisualProfile(RecommenderBehaviour):
    def make(self, spark):
        return VisualProfile()


class TestSparkItemCF(RecommenderBehaviour):
    def make(self, spark):
        return SparkItemCF(spark, neighbours=50)


def test_spark_item_cf_job_computes_the_in_memory_similarities(shop, spark):
    _, _, split = shop
    local = ItemCF(neighbours=30).fit(split.train).similarity
    distributed = SparkItemCF(spark, neighbours=30).fit(split.train).similarity
    assert local.nnz > 1000
    assert abs(local - distributed).max() < 1e-5  # the same pairs kept, the same cosines
    # Capping the items per user changes the similarities (and the job still runs).
    capped = SparkItemCF(spark, neighbours=30, max_items_per_user=2).fit(split.train).similarity
    assert 0 < capped.nnz < local.nnz


class TestSparkALS(RecommenderBehaviour):
    def make(self, spark):
        return SparkALS(spark, factors=8, iterations=5, seed=3)


class TestMF(RecommenderBehaviour):
    def make(self, spark):
        return VBPRRecommender(factors=8, visual_factors=0, epochs=3, seed=3)


class TestVBPR(RecommenderBehaviour):
    def make(self, spark):
        return VBPRRecommender(factors=8, visual_factors=8, epochs=3, seed=3)


def test_metrics_by_hand():
    rec = np.array([[3, 1, 2], [0, 4, 5]])
    relevant = [{1, 2, 9}, {7}]
    assert recall_at_k(rec, relevant, 3) == pytest.approx((2 / 3 + 0) / 2)
    assert hits_at_k(rec, relevant, 3) == 2 and hits_at_k(rec, relevant, 1) == 0
    dcg = 1 / np.log2(3) + 1 / np.log2(4)
    ideal = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert ndcg_at_k(rec, relevant, 3) == pytest.approx((dcg / ideal + 0) / 2)
    assert map_at_k(rec, relevant, 3) == pytest.approx(((1 / 2 + 2 / 3) / 3 + 0) / 2)
    assert recall_at_k(rec, [set(), set()], 3) == 0.0
    assert coverage(np.array([[0, 1, -1], [1, 2, -1]]), 10) == pytest.approx(0.3)
    emb = np.array([[1, 0], [0, 1], [1, 0]], np.float32)
    assert intra_list_diversity(np.array([[0, 1], [0, 2]]), emb) == pytest.approx(0.5)
    counts = np.array([3, 0])
    assert novelty(np.array([[0, 1]]), counts, 3) == pytest.approx((-np.log2(1.0) - np.log2(0.25)) / 2)


@pytest.mark.backend
def test_vbpr_save_load_round_trip(tmp_path):
    import keras

    model = VBPR(n_users=5, n_items=7, feature_dim=4, factors=3, visual_factors=2)
    model.build()
    model.item_features.assign(np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32))
    inputs = (np.array([0, 1, 4]), np.array([2, 3, 6]), np.array([1, 0, 5]))
    model.save(tmp_path / "vbpr.keras")
    loaded = keras.models.load_model(tmp_path / "vbpr.keras")
    assert loaded.get_config() == model.get_config()
    np.testing.assert_allclose(np.asarray(loaded(inputs)), np.asarray(model(inputs)), atol=1e-6)


@pytest.mark.backend
def test_vbpr_learns_the_visual_signal(shop):
    """VBPR beats plain MF on items nobody had touched before the cut, and popularity overall."""
    _, _, split = shop
    assert split.cold.sum() > 10
    vbpr = evaluate_model(VBPRRecommender(seed=1), split)
    mf = evaluate_model(VBPRRecommender(visual_factors=0, seed=1), split)
    pop = evaluate_model(Popularity(), split)
    assert vbpr["cold_recall_at_20"] > mf["cold_recall_at_20"] + 0.05
    assert vbpr["recall_at_20"] > pop["recall_at_20"]


def test_vbpr_learns_looks_from_the_classifier_part_of_the_embedding(shop):
    """Item embeddings that are the classifier's embedding and then another one (the retrieval
    embedding): VBPR reads only the first ``classifier_dims`` columns, and its users' visual taste is a
    direction in the whole embedding's space, zero over the other columns."""
    _, _, split = shop
    assert split.train.classifier_dims == split.train.item_features.shape[1]  # written without a split
    features = split.train.item_features
    other = np.random.default_rng(2).normal(size=(features.shape[0], 5)).astype(np.float32)

    def fitted(extra: np.ndarray) -> VBPRRecommender:
        train = dataclasses.replace(
            split.train, item_features=np.hstack([features, extra]), classifier_dims=features.shape[1]
        )
        return VBPRRecommender(factors=8, visual_factors=8, epochs=2, seed=3).fit(train)

    one, two = fitted(other), fitted(-3 * other)
    np.testing.assert_allclose(one.item_vectors, two.item_vectors, atol=1e-6)  # the other columns: unread
    assert one.visual_preference.shape == (split.train.n_users, features.shape[1] + 5)
    assert np.all(one.visual_preference[:, features.shape[1] :] == 0)
    assert np.abs(one.visual_preference[:, : features.shape[1]]).sum() > 0


def _noise_split(split: Split, seed: int = 0) -> Split:
    """The same split with image features that carry nothing about the items."""
    noise = np.random.default_rng(seed).normal(size=split.train.item_features.shape).astype(np.float32)
    train = dataclasses.replace(
        split.train, item_features=noise / np.linalg.norm(noise, axis=1, keepdims=True), classifier_dims=None
    )
    return dataclasses.replace(split, train=train)


def test_selection_keeps_the_visual_term_only_where_it_helps(shop):
    """The search's first two trials are the defaults with and without the visual term; with features
    that carry the taste the visual one wins on validation, with noise the plain one."""
    settings, _, split = shop
    settings = settings.with_overrides(mf_trials=2, mf_families="vbpr")  # VBPR's own trials only
    informed = select_vbpr(settings, split, LAST)
    noise = select_vbpr(settings, _noise_split(split), LAST)
    assert [t["visual_factors"] for t in informed.trials] == [settings.mf_visual_factors, 0]
    assert informed.visual_helps and informed.params["visual_factors"] > 0
    assert noise.visual_helps is False and noise.params["visual_factors"] == 0
    assert 1 <= informed.params["epochs"] <= settings.mf_epochs and informed.validation_users > 0


def test_each_search_trial_is_an_mlflow_child_run(shop, tmp_path):
    import mlflow

    settings, lake, _ = shop
    settings = settings.with_overrides(
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", mf_trials=2, mf_epochs=3
    )
    result = train_mf(settings, LAST, lake=lake, config=MFConfig.from_settings(settings, register=True))
    parent = mlflow.search_runs(
        filter_string="tags.`visrec.step` = 'mf training'", output_format="list", search_all_experiments=True
    )
    assert len(parent) == 1
    children = mlflow.search_runs(
        filter_string=f"tags.`mlflow.parentRunId` = '{parent[0].info.run_id}'",
        output_format="list",
        search_all_experiments=True,
    )
    assert len(children) == 2 and all("validation_ndcg" in c.data.metrics for c in children)
    assert {c.data.params["visual_factors"] for c in children} == {"0", str(settings.mf_visual_factors)}
    assert parent[0].data.params["selected.visual_factors"] == str(result.selected["visual_factors"])
    assert parent[0].data.tags["visrec.serving"] == result.serving


def test_gate_needs_a_margin_the_bootstrap_believes():
    rng = np.random.default_rng(0)
    rival = rng.random(400)
    promote, why = promotion_gate(rival + 0.05, {"popularity": rival}, "recall_at_20")
    assert promote and "vs popularity" in why and "beaten" in why
    tie, why = promotion_gate(rival + rng.normal(0, 0.2, 400), {"popularity": rival}, "recall_at_20")
    assert not tie and "not clearly beaten" in why
    assert not promotion_gate(np.array([]), {"popularity": np.array([])}, "recall_at_20")[0]


def test_train_register_and_score_every_user(shop):
    settings, lake, _ = shop
    settings = settings.with_overrides(mf_trials=0, mf_epochs=10)
    result = train_mf(settings, LAST, lake=lake)
    assert result.version == "visrec-mf/1" and result.promoted and result.serving == "model"
    assert "vs popularity" in result.reason
    assert set(result.metrics) == {"popularity", "vbpr", "vbpr_published"}
    # What users get (at most 8 items of a category) is measured beside the raw model, intervals included.
    raw, capped = result.metrics["vbpr"], result.metrics["vbpr_published"]
    assert capped["recall_at_20_low"] <= capped["recall_at_20"] <= capped["recall_at_20_high"]
    assert capped["hits_at_20"] > 0 and capped["recall_at_20"] <= raw["recall_at_20"] + 0.05
    second = train_mf(settings, LAST, lake=lake)
    assert "champion" in second.metrics and "vs champion visrec-mf/1" in second.reason
    # The same model again cannot beat itself by a real margin: the champion stays, and serves.
    assert not second.promoted and second.serving == "model"
    # Same data, same seed: the champion's evaluation model scores today's window like the challenger.
    assert second.metrics["champion"]["recall_at_20"] == pytest.approx(
        second.metrics["vbpr"]["recall_at_20"], abs=0.02
    )
    scored = score_users(
        settings.with_overrides(top_k=10),
        LAST,
        lake=lake,
        config=MFConfig.from_settings(settings, max_per_category=4),
    )
    recs = lake.read_table("recommendations", LAST).to_pandas()
    assert (scored.rows, scored.users) == (len(recs), recs["user_id"].nunique())
    catalog = pd.read_csv(io.BytesIO(lake.get_bytes("raw/catalog/items.csv")), dtype=str)
    category = dict(zip(catalog["item_id"], catalog["category"], strict=True))
    events = lake.read_table("events").to_pandas()
    purchases = events[events.event_type == "purchase"]
    bought = set(zip(purchases.user_id, purchases.item_id, strict=True))
    assert recs["user_id"].nunique() == events["user_id"].nunique()
    assert (recs.groupby("user_id")["rank"].apply(lambda r: list(r) == list(range(1, len(r) + 1)))).all()
    assert (recs.groupby("user_id").size() == 10).all()
    assert not any((u, i) in bought for u, i in zip(recs.user_id, recs.item_id, strict=True))
    assert recs.assign(cat=recs.item_id.map(category)).groupby(["user_id", "cat"]).size().max() <= 4
    assert (recs.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    assert set(recs.source) == {"mf"} and set(recs.model_version) == {"visrec-mf/1"}


@pytest.mark.integration
def test_a_model_that_loses_to_popularity_is_not_promoted_and_popularity_serves(tmp_path):
    """A shop whose test window holds what was popular, with image features that say nothing: the
    first model is not promoted by default, and every user gets popularity-by-segment lists."""
    settings = Settings(home=tmp_path, test_days=2, test_min_users=1, mf_trials=0, mf_epochs=2)
    lake = Lake.from_settings(settings)
    generate_shop(ShopConfig(users=300, items=200, days=6, seed=5, popularity_bias=(1.0, 1.0)), lake)
    write_events_table(lake)
    item_ids = sorted(pd.read_csv(io.BytesIO(lake.get_bytes("raw/catalog/items.csv")), dtype=str)["item_id"])
    noise = np.random.default_rng(1).normal(size=(len(item_ids), 8)).astype(np.float32)
    lake.write_table("item_embeddings", "2026-11-06", embeddings_table(item_ids, noise, "noise"))
    result = train_mf(settings, "2026-11-06", lake=lake)
    assert result.metrics["popularity"]["recall_at_20"] >= result.metrics["vbpr"]["recall_at_20"]
    assert result.promoted is False and result.serving == "popularity"
    assert "vs popularity" in result.reason and "not clearly beaten" in result.reason
    score_users(settings, "2026-11-06", lake=lake)
    recs = lake.read_table("recommendations", "2026-11-06").to_pandas()
    users = lake.read_table("events").column("user_id").unique()
    assert set(recs.source) == {"popular"} and recs.user_id.nunique() == len(users)


def test_segment_popularity_serves_each_segment_its_own_list():
    from visrec.recsys.baselines import SegmentPopularity

    # 30 "loyal" users all bought item 0, 30 "new" users item 1, 5 "casual" users item 2; one has none.
    cols = [0] * 30 + [1] * 30 + [2] * 5
    users = list(range(30)) + list(range(30, 60)) + list(range(60, 65))
    matrix = sp.csr_matrix((np.ones(65, np.float32), (users, cols)), shape=(66, 4))
    segments = ["loyal"] * 30 + ["new"] * 30 + ["casual"] * 5 + [None]
    data = TrainData(matrix, None, None, [f"u{n}" for n in range(66)], [f"i{n}" for n in range(4)])
    model = SegmentPopularity(segments, min_users=20).fit(data)
    ids, _ = model.recommend(np.array([0, 30, 60, 65]), sp.csr_matrix((66, 4)), N=1)
    assert ids[:, 0].tolist()[:2] == [0, 1]
    # Too small a segment and no segment both get the global list (items 0 and 1 tie; 0 wins by index).
    assert ids[2, 0] == ids[3, 0] == model.global_.argmax()
    subset = model.for_users(["new", "loyal"])
    assert subset.recommend(np.array([0, 1]), sp.csr_matrix((2, 4)), N=1)[0][:, 0].tolist() == [1, 0]


@pytest.mark.parametrize("with_biases", [True, False])
def test_factor_top_k_two_stage_matches_brute_force(with_biases):
    """The fused two-stage selection returns exactly the brute-force top K, filters applied; a user
    with fewer unfiltered items than K gets -1 padding."""
    from visrec.recsys.baselines import FactorRecommender

    rng = np.random.default_rng(5)
    n_users, n_items, k = 70, 3001, 7  # not a multiple of the group: the padding must never win
    model = FactorRecommender()
    model.user_vectors = rng.standard_normal((n_users, 16)).astype(np.float32)
    model.item_vectors = rng.standard_normal((n_items, 16)).astype(np.float32)
    model.item_biases = rng.standard_normal(n_items).astype(np.float32) if with_biases else None
    model.group_size, model.chunk_size = 8, 32  # 3001 >= 8 * 7 * 8: the two-stage path, in 3 chunks
    liked = sp.random(n_users, n_items, density=0.05, format="lil", random_state=1, dtype=np.float32)
    liked[3, :] = 1.0
    liked[3, [10, 20]] = 0.0  # user 3 may only get items 10 and 20 (20 is banned below)
    liked = liked.tocsr()
    liked.eliminate_zeros()
    banned = np.array([20, 2999, 3000])
    ids, scores = model.recommend(np.arange(n_users), liked, N=k, filter_items=banned)

    brute = model.score(np.arange(n_users))
    brute[liked.toarray() > 0] = -np.inf
    brute[:, banned] = -np.inf
    expected = np.argsort(-brute, axis=1, kind="stable")[:, :k]
    for user in range(n_users):
        if user == 3:
            assert ids[3].tolist() == [10] + [-1] * (k - 1) and np.isneginf(scores[3, 1:]).all()
            continue
        assert ids[user].tolist() == expected[user].tolist()
        np.testing.assert_allclose(scores[user], brute[user, expected[user]], rtol=1e-4, atol=1e-4)


def test_generated_looks_widen_the_last_places_of_recommender_lists():
    from visrec.recsys.baselines import FactorRecommender
    from visrec.recsys.score import add_generated_candidates
    from visrec.store.schemas import GENERATED_LOOKS, RECOMMENDATIONS

    items = [f"i{n}" for n in range(8)]
    model = FactorRecommender()  # user 0 scores item n as 8 - n; user 1 the same
    model.user_vectors = np.ones((2, 1), np.float32)
    model.item_vectors = np.arange(8, 0, -1, dtype=np.float32)[:, None]
    data = TrainData(sp.csr_matrix((2, 8), dtype=np.float32), None, None, ["a", "b"], items)
    purchased = sp.csr_matrix(([1.0], ([0], [6])), shape=(2, 8))  # a bought i6
    recs = pa.table(
        {
            "user_id": ["a"] * 4 + ["b"] * 4,
            "rank": pa.array([1, 2, 3, 4] * 2, pa.int16()),
            "item_id": ["i0", "i1", "i2", "i3"] * 2,
            "score": pa.array([8, 7, 6, 5] * 2, pa.float32()),
            "source": ["mf"] * 8,
            "reason": ["model"] * 8,
            "model_version": ["m"] * 8,
        },
        schema=RECOMMENDATIONS,
    )
    # a's looks: the first look's nearest are i0 (listed: stays listed) and i6 (bought), the second's i7, i5.
    looks = pa.table(
        {
            "user_id": ["a", "a"],
            "rank": pa.array([1, 2], pa.int16()),
            "image_uri": ["x", "y"],
            "category": ["c", "c"],
            "preference_score": pa.array([1, 1], pa.float32()),
            "nearest_item_ids": [["i0", "i6"], ["i7", "i5"]],
            "nearest_scores": [[0.9, 0.8], [0.9, 0.8]],
        },
        schema=GENERATED_LOOKS,
    )
    out = add_generated_candidates(
        recs,
        looks,
        model,
        data,
        purchased,
        ["c"] * 8,
        slots=2,
        max_per_category=None,
        exclude={"i5"},
        version="m+gan",
    )
    a = [r for r in out.to_pylist() if r["user_id"] == "a"]
    # i2 and i3 gave their places; i6 (bought) and i5 (excluded) were skipped, so only i7 came in, and
    # i2 stays. Sorted by the model's score: i7 (1) last.
    assert [(r["rank"], r["item_id"], r["source"]) for r in a] == [
        (1, "i0", "mf"),
        (2, "i1", "mf"),
        (3, "i2", "mf"),
        (4, "i7", "generated"),
    ]
    assert a[3]["model_version"] == "m+gan" and a[3]["score"] == 1.0
    assert [r for r in out.to_pylist() if r["user_id"] == "b"] == [
        r for r in recs.to_pylist() if r["user_id"] == "b"
    ]
    assert out.schema == recs.schema


def test_test_window_grows_until_it_holds_enough_users():
    from visrec.recsys.data import test_window_days

    # 20 days of history; user u<n> clicks on day 19 - n % 10: one more day back adds users.
    rows = [
        {
            "user_id": f"u{n}",
            "item_id": "i1",
            "event_type": "click",
            "ts": pd.Timestamp("2026-11-20T12:00:00Z") - pd.Timedelta(days=n % 10),
        }
        for n in range(40)
    ]
    rows.append(
        {"user_id": "old", "item_id": "i1", "event_type": "view", "ts": pd.Timestamp("2026-11-01T00:00:00Z")}
    )
    events = pd.DataFrame(rows)
    ds = "2026-11-20"
    assert test_window_days(Settings(test_days=2, test_min_users=1), events, ds) == 2
    assert test_window_days(Settings(test_days=2, test_min_users=20), events, ds) == 5  # 4 users a day
    assert test_window_days(Settings(test_days=2, test_min_users=1000), events, ds) == 10  # all 40 users
    # Never past half the history.
    assert (
        test_window_days(Settings(test_days=2, test_min_users=1000), events[events.user_id != "old"], ds) == 4
    )


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_users():
    from visrec.recsys.metrics import bootstrap_interval

    rng = np.random.default_rng(0)
    few, many = rng.random(30), rng.random(3000)
    low, high = bootstrap_interval(few)
    assert low <= few.mean() <= high
    assert np.subtract(*bootstrap_interval(many)[::-1]) < (high - low) / 4
    assert bootstrap_interval(np.ones(10)) == (1.0, 1.0) and bootstrap_interval(np.array([])) == (0.0, 0.0)


def test_scoring_in_spark_shards_writes_the_same_table(tmp_path, spark, monkeypatch):
    """Distributed scoring: Spark tasks each read their shard of the users' inputs, load the model
    themselves and write their own parts of the partition; the table is the one single-process scoring
    writes, generated looks and the users the model does not know (popularity by segment, whose counts
    are summed over the shards) included."""
    from visrec.ingest.features import build_features
    from visrec.recsys.score import ScoreGroup, ScorerRef
    from visrec.recsys.train import FactorScorer
    from visrec.store.tables import user_shards

    settings = Settings(home=tmp_path)
    lake = Lake.from_settings(settings)
    generate_shop(ShopConfig(users=200, items=100, days=8, seed=4), lake)
    write_events_table(lake)
    ds = "2026-11-08"
    build_features(settings, lake, ds, rebuild=True)  # the users' segments
    item_ids = sorted(pd.read_csv(io.BytesIO(lake.get_bytes("raw/catalog/items.csv")), dtype=str)["item_id"])
    emb = visual_features(lake, item_ids)
    lake.write_table("item_embeddings", ds, embeddings_table(item_ids, emb, "t"))
    users = sorted(set(lake.read_table("events").column("user_id").to_pylist()))
    known = users[: len(users) * 9 // 10]  # the rest: popularity by segment
    rng = np.random.default_rng(0)
    scorer = FactorScorer(
        known,
        item_ids,
        rng.normal(size=(len(known), 8)).astype(np.float32),
        rng.normal(size=(100, 8)).astype(np.float32),
        rng.normal(size=100).astype(np.float32),
        "visrec-mf/7",
    )
    looks = [
        {
            "user_id": u,
            "rank": 1,
            "image_uri": f"file:///looks/{u}.png",
            "category": "skirt",
            "preference_score": 1.0,
            "nearest_item_ids": item_ids[n : n + 5],
            "nearest_scores": [0.9] * 5,
        }
        for n, u in enumerate(known[::10])
    ]
    lake.write_table("generated_looks", ds, pa.Table.from_pylist(looks))
    monkeypatch.setattr(ScoreGroup, "CHUNK", 16)  # many top-K batches on a small shop
    # A segment big enough for its own list overall (20 users) but not within every shard: the
    # shards' popularity counts must be summed before the lists are made.
    profiles = lake.read_table("user_profiles", ds)
    segments = pd.Series(profiles.column("segment").to_pylist())
    shards = user_shards(profiles.column("user_id").to_pylist(), 4)
    assert any(
        (segments == s).sum() >= 20 and min(((segments == s) & (shards == k)).sum() for k in range(4)) < 20
        for s in set(segments)
    )
    settings = settings.with_overrides(top_k=10, generated_slots=2)
    single = score_users(settings, ds, lake=lake, scorer=scorer)
    one = lake.read_table("recommendations", ds)
    scorer.save(tmp_path / "factors.npz")  # the tasks load it: the driver never holds it
    ref = ScorerRef(version="visrec-mf/7", path=str(tmp_path / "factors.npz"))
    sharded = score_users(settings, ds, lake=lake, scorer=ref, spark=spark, shards=4)
    parts = lake.read_table("recommendations", ds)
    assert len(lake.manifest("recommendations", ds).files) >= 4  # one file per task
    assert sharded == single and single.sources.get("generated", 0) > 0 and single.sources["popular"] > 0
    keys = [("user_id", "ascending"), ("rank", "ascending")]
    # The same users, ranks, items, sources and versions; scores to float rounding (a Spark task's BLAS
    # runs on one thread, this process's on all cores: on some CPUs another summation order).
    assert differing_tables({"r": parts.sort_by(keys)}, {"r": one.sort_by(keys)}) == []


@pytest.mark.integration
def test_scoring_reads_the_days_pairs_as_the_event_history_gives_them(tmp_path):
    """Scoring reads the day's ``interactions`` snapshot (built night after night) instead of every
    event: the same users, items, confidences, recent pairs and purchases, whole and per shard."""
    from visrec.ingest.features import build_feature_days
    from visrec.recsys.data import full_data, purchased_matrix, snapshot_data
    from visrec.store.tables import load_events

    settings = Settings(home=tmp_path)
    lake = Lake.from_settings(settings)
    generate_shop(ShopConfig(users=150, items=80, days=12, seed=3), lake)
    write_events_table(lake)
    days = lake.partitions("events")
    build_feature_days(settings, lake, days[:1], rebuild=True)
    for ds in days[1:]:  # one night at a time, each from the snapshot before it
        build_feature_days(settings, lake, [ds])
    ds = days[-1]
    item_ids = sorted(pd.read_csv(io.BytesIO(lake.get_bytes("raw/catalog/items.csv")), dtype=str)["item_id"])
    kept = item_ids[:-6]  # events on items without an embedding are left out on both sides
    lake.write_table("item_embeddings", ds, embeddings_table(kept, visual_features(lake, kept), "t"))
    for shard in (None, (1, 3)):
        data, bought = snapshot_data(lake, ds, shard)
        events = load_events(lake, ds, shard)
        want = full_data(settings, lake, ds, events)
        assert data.user_ids == want.user_ids and data.item_ids == want.item_ids == kept
        np.testing.assert_allclose(data.user_items.toarray(), want.user_items.toarray(), rtol=1e-5)
        recent, want_recent = data.recent_user_items > 0, want.recent_user_items > 0
        assert 0 < want_recent.nnz < (want.user_items > 0).nnz and (recent != want_recent).nnz == 0
        assert bought.nnz > 0 and ((bought > 0) != (purchased_matrix(events, want) > 0)).nnz == 0


def test_when_ease_wins_the_selection_it_is_registered_and_serves(shop, tmp_path, monkeypatch):
    """The EASE family through the whole recommender path: selected, evaluated under its own name,
    registered (as a Keras factor model) and scoring every user. The VBPR search is made to lose
    (its validation NDCG zero for every user): this test is about serving the other family."""
    from visrec.recsys import select

    settings, lake, _ = shop
    settings = settings.with_overrides(
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        mf_trials=1,
        mf_epochs=2,
        mf_ease_rank=32,
        mf_promotion="always",  # serve it whatever the gate says of it on this small shop
    )
    real_search = select.search_vbpr

    def losing_search(settings, validation, design="given"):
        chosen = real_search(settings, validation, design)
        return dataclasses.replace(chosen, validation_per_user=np.zeros_like(chosen.validation_per_user))

    monkeypatch.setattr(select, "search_vbpr", losing_search)
    result = train_mf(settings, LAST, lake=lake)
    assert result.selected["family"] == "ease" and "ease" in result.metrics and "vbpr" not in result.metrics
    assert result.version == "visrec-mf/1" and result.serving == "model"
    scored = score_users(settings.with_overrides(top_k=10), LAST, lake=lake)
    recs = lake.read_table("recommendations", LAST).to_pandas()
    assert scored.rows == len(recs) > 0 and (recs.groupby("user_id").size() == 10).all()
    assert "visrec-mf/1" in set(recs["model_version"])
    # The ranker's gate also asks the served champion, by its evaluation model on the same window.
    ranked = train_ranker(settings.with_overrides(ranker_promotion="gate"), LAST, lake=lake)
    assert "served" in ranked.metrics and "vs served visrec-mf/1" in ranked.reason
    assert ranked.promoted == ("not clearly beaten" not in ranked.reason)


def test_the_nightly_ranker_is_judged_beside_its_generators_and_leaves_its_training_set(shop, tmp_path):
    import mlflow.lightgbm

    settings, lake, _ = shop
    settings = settings.with_overrides(mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = train_ranker(settings, LAST, lake=lake)
    generators = {"ease", "item_cf", "popularity", "visual_profile", "visual_neighbours"}
    assert result.trained and result.version == "visrec-ranker/1"
    assert set(result.metrics) == {"ranker", *generators}
    # The gate compares with the best generator alone and with popularity; promoted only if both fall.
    assert "vs best single" in result.reason and "vs popularity" in result.reason
    assert result.promoted == ("not clearly beaten" not in result.reason)
    assert sum(result.importance.values()) == pytest.approx(1.0, abs=0.01)
    # Candidate recall grows with depth; the union of the proposals (each generator's best 50 or more,
    # popularity's 20) holds at least what any one generator's best 50 holds.
    for name in generators:
        at = [result.metrics[name][f"candidate_recall_at_{n}"] for n in (50, 100, 200)]
        assert at == sorted(at) and at[-1] > 0
    union = result.metrics["ranker"]["candidate_recall"]
    assert union >= max(
        result.metrics[name]["candidate_recall_at_50"] for name in generators - {"popularity"}
    )
    assert "price_vs_user" in result.importance  # the shop's events carry prices
    table = lake.read_table("ranker_training", LAST)
    assert table.num_rows == result.training_rows > 0
    assert set(table.column("label").to_pylist()) == {0.0, 1.0}
    assert set(table.column("proposed_by").to_pylist()) <= generators
    first = dict(table.column("features")[0].as_py())
    assert list(first) == result.ranker.feature_names
    # The registered model is the production booster, loadable by MLflow alone.
    registered = mlflow.lightgbm.load_model("models:/visrec-ranker/1")
    rows = result.ranker.training_table[result.ranker.feature_names].head(20)
    np.testing.assert_allclose(registered.predict(rows), result.ranker.booster.predict(rows), rtol=1e-6)


def test_a_ranker_champion_serves_everyone_with_history_and_says_why(shop, tmp_path):
    settings, lake, split = shop
    settings = settings.with_overrides(
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", ranker_promotion="always"
    )
    result = train_ranker(settings, LAST, lake=lake)
    assert result.promoted and "promoted by VISREC_RANKER_PROMOTION" in result.reason
    summary = score_users(settings, LAST, lake=lake)
    recs = lake.read_table("recommendations", LAST).to_pandas()
    assert summary.rows == len(recs) and recs["reason"].notna().all()
    served = recs[recs["model_version"] == result.version]
    history = {
        u for u, row in zip(split.train.user_ids, np.diff(split.train.user_items.indptr), strict=True) if row
    }
    assert set(served["user_id"]) >= history and (served["source"] == "mf").all()
    # Each item's reason is the generator that proposed it; users without history get popularity's.
    assert set(served["reason"]) <= {"ease", "item_cf", "popularity", "visual_profile", "visual_neighbours"}
    assert served["reason"].nunique() > 1
    popular = recs[recs["source"] == "popular"]
    assert popular["reason"].str.startswith("popular").all()
    # Scoring loaded the registered champion: its generators unfitted, its booster the production one.
    ranker, version = champion_ranker(settings)
    assert version == result.version and not hasattr(ranker, "data")
    assert ranker.booster.model_to_string() == result.ranker.booster.model_to_string()


def test_spark_shards_serve_the_ranker_champion_with_the_lists_of_one_process(shop, spark, tmp_path):
    """Sharded scoring serves the ranker: each shard fits the item-item generators and the catalog's
    features on every shard's summed co-occurrence (the first job's counts), its per-user generators
    on its own rows, so the table is the one a single process writes."""
    settings, lake, _ = shop
    settings = settings.with_overrides(
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", ranker_promotion="always"
    )
    result = train_ranker(settings, LAST, lake=lake)
    single = score_users(settings, LAST, lake=lake)
    one = lake.read_table("recommendations", LAST)
    sharded = score_users(settings, LAST, lake=lake, spark=spark, shards=3)
    parts = lake.read_table("recommendations", LAST)
    assert len(lake.manifest("recommendations", LAST).files) >= 3
    assert sharded == single
    assert result.version in set(parts.column("model_version").to_pylist())
    keys = [("user_id", "ascending"), ("rank", "ascending")]
    assert differing_tables({"r": parts.sort_by(keys)}, {"r": one.sort_by(keys)}) == []
