"""The learned ranker (second stage): it checks its inputs early, returns new items from its candidates
best first with the generator that proposed each, and learns from the features what no single
generator knows (here: which category a user buys from)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from visrec.recsys.baselines import EASE, ItemCF, ItemCooccurrence, Popularity, RP3Beta, VisualProfile
from visrec.recsys.data import TrainData, holdout_per_user
from visrec.recsys.metrics import ndcg_per_user, users_with
from visrec.recsys.ranker import CandidateRanker, Generator, as_if_new, top_by_score

pytestmark = pytest.mark.unit

GROUPS, PER_GROUP = 4, 20


@pytest.fixture(scope="module")
def split():
    """240 users, each buying from one of 4 categories of 20 items; within a category the lower item
    indices sell more (so popularity alone recommends the best-sellers of every category)."""
    rng = np.random.default_rng(0)
    users, items = 240, GROUPS * PER_GROUP
    weights = 1.0 / np.arange(1, PER_GROUP + 1)
    rows, cols = [], []
    for u in range(users):
        group = u % GROUPS
        liked = rng.choice(PER_GROUP, size=8, replace=False, p=weights / weights.sum()) + PER_GROUP * group
        for i in liked.tolist():
            rows.append(u)
            cols.append(i)
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(users, items))
    return holdout_per_user(TrainData(matrix), 0.25, seed=1)


CATEGORIES = [f"c{i // PER_GROUP}" for i in range(GROUPS * PER_GROUP)]


def _ndcg(model, split) -> float:
    users = users_with(split.relevant)
    ids, _ = model.recommend(users, split.train.user_items, N=10)
    return float(ndcg_per_user(ids, [split.relevant[u] for u in users], 10).mean())


@pytest.fixture(scope="module")
def fitted(split):
    validation = holdout_per_user(split.train, 0.25, seed=2)
    ranker = CandidateRanker([Generator("popularity", Popularity(), 40)], item_categories=CATEGORIES)
    return ranker.fit(split.train, validation)


def test_the_ranker_learns_what_its_generator_does_not_know(split, fitted):
    popularity = Popularity().fit(split.train)
    assert _ndcg(fitted, split) > _ndcg(popularity, split) + 0.15
    assert fitted.feature_importance().index[0] == "category_affinity"
    assert set(fitted.feature_importance().index) == set(fitted.feature_names)
    assert fitted.training_table.columns[: len(fitted.feature_names)].tolist() == fitted.feature_names
    assert set(fitted.training_table["label"]) == {0.0, 1.0}


def test_the_ranker_learns_from_a_numeric_item_value_relative_to_the_users_usual(split):
    # A price band per category (the categories themselves withheld): users buy near their usual price.
    rng = np.random.default_rng(3)
    price = np.array([10.0 * (i // PER_GROUP) for i in range(GROUPS * PER_GROUP)]) + rng.random(
        GROUPS * PER_GROUP
    )
    price[::9] = np.nan  # unknown prices are allowed
    validation = holdout_per_user(split.train, 0.25, seed=2)
    ranker = CandidateRanker([Generator("popularity", Popularity(), 40)], item_values={"price": price})
    ranker.fit(split.train, validation)
    assert _ndcg(ranker, split) > _ndcg(Popularity().fit(split.train), split) + 0.15
    assert ranker.feature_importance().index[0] == "price_vs_user"
    shuffled = CandidateRanker(
        [Generator("popularity", Popularity(), 40)], item_values={"price": rng.permutation(price)}
    )
    assert _ndcg(shuffled.fit(split.train, validation), split) < _ndcg(ranker, split) - 0.15


def test_simulated_new_items_are_trained_on_as_new_and_never_as_the_users_own(split):
    # Looks: each item's category, blurred; the visual profile proposes items nobody has had.
    rng = np.random.default_rng(4)
    looks = np.eye(GROUPS)[np.arange(GROUPS * PER_GROUP) // PER_GROUP] + 0.3 * rng.standard_normal(
        (GROUPS * PER_GROUP, GROUPS)
    )
    looks = (looks / np.linalg.norm(looks, axis=1, keepdims=True)).astype(np.float32)
    data = replace(split.train, item_features=looks, recent_user_items=split.train.user_items)
    validation = holdout_per_user(data, 0.25, seed=2)

    before = np.asarray((validation.train.user_items > 0).sum(axis=0)).ravel()
    new = as_if_new(validation.train, 0.25, np.random.default_rng(0))
    after = np.asarray((new.user_items > 0).sum(axis=0)).ravel()
    gone = (before > 0) & (after == 0)
    assert gone.sum() == round(0.25 * (before > 0).sum())
    kept = ~gone
    assert (validation.train.user_items[:, kept] != new.user_items[:, kept]).nnz == 0
    assert new.user_items[:, gone].nnz == 0 and new.recent_user_items[:, gone].nnz == 0

    def trained(cold_share: float) -> pd.DataFrame:
        generators = [
            Generator("visual_profile", VisualProfile(), 40),
            Generator("popularity", Popularity(), 10),
        ]
        return CandidateRanker(generators, cold_share=cold_share).fit(data, validation).training_table

    plain, simulated = trained(0.0), trained(0.25)
    assert (plain["item_cold"] == 1).sum() == 0  # every item of this shop has buyers: nothing to learn from
    cold = simulated[simulated["item_cold"] == 1]
    assert len(cold) > 0 and cold["label"].sum() > 0
    # An item the user had before the cut is never a candidate, new-looking or not.
    had = validation.train.user_items[simulated["user"].to_numpy(), simulated["item"].to_numpy()]
    assert np.count_nonzero(had) == 0


def test_recommendations_are_new_candidates_best_first_with_their_reason(split):
    validation = holdout_per_user(split.train, 0.25, seed=2)
    generators = [Generator("item_cf", ItemCF(), 5), Generator("popularity", Popularity(), 3)]
    ranker = CandidateRanker(generators, min_child_samples=5).fit(split.train, validation)
    users = np.arange(30)
    blocked = np.array([7, 8])
    ids, scores, reasons = ranker.recommend_with_reasons(
        users, split.train.user_items, N=12, filter_items=blocked
    )
    assert ids.shape == scores.shape == reasons.shape == (30, 12)
    item_cf = ItemCF().fit(split.train)
    popularity = Popularity().fit(split.train)
    for row, u in enumerate(users):
        real = ids[row] >= 0
        liked = set(split.train.user_items[u].indices.tolist())
        assert not set(ids[row][real].tolist()) & (liked | set(blocked.tolist()))
        assert len(set(ids[row][real].tolist())) == real.sum()
        assert (np.diff(scores[row][real]) <= 1e-9).all()  # best first
        assert (~real).sum() == 0 or (scores[row][~real] == -np.inf).all()  # padding after the candidates
        # Each item came from the generator named, within its top n (filters applied as in serving).
        proposals = {
            name: set(m.recommend([u], split.train.user_items, N=n, filter_items=blocked)[0][0].tolist())
            for name, m, n in (("item_cf", item_cf, 5), ("popularity", popularity, 3))
        }
        for item, reason in zip(ids[row][real].tolist(), reasons[row][real].tolist(), strict=True):
            assert item in proposals[reason]
        assert real.sum() == len(proposals["item_cf"] | proposals["popularity"])


def test_its_score_of_every_item_orders_its_candidates_as_its_lists_do(split, fitted):
    users = np.arange(12)
    ids, scores = fitted.recommend(users, split.train.user_items, N=10)
    every = fitted.score(users)
    np.testing.assert_allclose(np.take_along_axis(every, ids, axis=1), scores, rtol=1e-5)
    # Items no generator proposed are scored too (a caller may place them); liked ones are not.
    for row, u in enumerate(users):
        liked = split.train.user_items[u].indices
        assert np.isneginf(every[row, liked]).all()
        assert np.isfinite(np.delete(every[row], liked)).all()


def test_serving_uses_generators_refitted_on_all_the_data(split, fitted):
    """The ranker learns on the validation part, but serves from generators fitted on everything."""
    users = np.arange(10)
    served = fitted.generators[0].model.score(users)
    assert np.array_equal(served, Popularity().fit(split.train).score(users))
    validation = holdout_per_user(split.train, 0.25, seed=2)
    assert not np.array_equal(served, Popularity().fit(validation.train).score(users))


@pytest.mark.parametrize(
    ("generators", "kwargs", "message"),
    [
        ([], {}, "at least one generator"),
        ([Generator("a", Popularity(), 0)], {}, "must propose"),
        ([Generator("a", Popularity(), 5), Generator("a", ItemCF(), 5)], {}, "unique"),
        ([Generator("a", Popularity(), 5)], {"eval_share": 1.0}, "eval_share"),
        ([Generator("a", Popularity(), 5)], {"generator_features": ("rank", "colour")}, "generator_features"),
        ([Generator("a", Popularity(), 50)], {"rank_depth": 20}, "rank_depth"),
    ],
)
def test_bad_settings_are_refused_early(generators, kwargs, message):
    with pytest.raises(ValueError, match=message):
        CandidateRanker(generators, **kwargs)


def test_bad_inputs_are_refused_with_what_to_do(split):
    with pytest.raises(ValueError, match="n must be 0 or more"):
        Generator("a", Popularity(), -1)
    ranker = CandidateRanker([Generator("a", Popularity(), 5)])
    with pytest.raises(ValueError, match="validation split"):
        ranker.fit(split.train)
    with pytest.raises(RuntimeError, match="fit the ranker first"):
        ranker.recommend(np.arange(3), split.train.user_items)
    other = holdout_per_user(TrainData(split.train.user_items[:, :10].tocsr()), 0.25, seed=0)
    with pytest.raises(ValueError, match="must index the same catalog"):
        ranker.fit(split.train, other)
    short = CandidateRanker([Generator("a", Popularity(), 5)], item_categories=["x"] * 3)
    with pytest.raises(ValueError, match="3 item categories for 80 items"):
        short.fit(split.train, holdout_per_user(split.train, 0.25, seed=2))
    priced = CandidateRanker([Generator("a", Popularity(), 5)], item_values={"price": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="item value 'price': 3 values for 80 items"):
        priced.fit(split.train, holdout_per_user(split.train, 0.25, seed=2))


def test_rp3beta_ranks_items_co_bought_with_the_users_items(split):
    """RP3beta's walk stays inside the category a user buys from (the items are only co-bought there)."""
    model = RP3Beta(neighbours=30).fit(split.train)
    ids, _ = model.recommend(np.arange(8), split.train.user_items, N=5)
    assert all((row // PER_GROUP == u % GROUPS).all() for u, row in enumerate(ids))
    with pytest.raises(ValueError, match="beta"):
        RP3Beta(beta=-1)
    assert _ndcg(model, split) > _ndcg(Popularity().fit(split.train), split)


def test_top_by_score_is_the_head_of_a_stable_sort_ties_and_blocked_items_included():
    rng = np.random.default_rng(0)
    for _ in range(300):
        rows, n = rng.integers(1, 6), rng.integers(1, 80)
        scores = rng.integers(0, 4, size=(rows, n)).astype(np.float32)  # many ties
        scores[rng.random((rows, n)) < 0.3] = -np.inf
        k = int(rng.integers(1, n + 1))
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        assert np.array_equal(top_by_score(scores, k), expected)
    with pytest.raises(ValueError, match="k must be between 1 and 3"):
        top_by_score(np.zeros((2, 3)), 4)


def test_ranks_are_exact_to_the_rank_depth_and_shared_below_it(split):
    ranker = CandidateRanker([Generator("item_cf", ItemCF(), 5)], rank_depth=10)
    ranker.generators[0].model.fit(split.train)
    users = np.arange(6)
    table = next(ranker._candidate_chunks(ranker.generators, split.train, users, every_item=True))
    scores = ItemCF().fit(split.train).score(users)
    for row, u in enumerate(users):
        mine = table.users == u
        liked = split.train.user_items[u].indices
        order = [i for i in np.argsort(-scores[row], kind="stable").tolist() if i not in set(liked)]
        expected = {item: min(rank, 10) for rank, item in enumerate(order)}
        got = dict(
            zip(table.items[mine].tolist(), table.features["item_cf_rank"][mine].tolist(), strict=True)
        )
        assert got == expected
    # A ranker pickled before the depth existed (no attribute) ranks every item, as it learned to.
    del ranker.rank_depth
    deep = next(ranker._candidate_chunks(ranker.generators, split.train, users, every_item=True))
    assert deep.features["item_cf_rank"].max() > 10


def _rows(data: TrainData, users: np.ndarray) -> TrainData:
    return TrainData(data.user_items[users], None, None, [str(u) for u in users], data.item_ids)


def test_a_shard_fitted_on_every_shards_sums_scores_as_the_whole(split):
    """What Spark shards do with a ranker: each fits the item-item generators on the co-occurrence
    summed over every shard, and scores its own users as a fit on everyone would."""
    data = split.train
    shards = [np.arange(data.n_users)[k::3] for k in range(3)]
    parts = [ItemCooccurrence.of(_rows(data, users)) for users in shards]
    total = parts[0] + parts[1] + parts[2]
    whole = ItemCooccurrence.of(data)
    assert (total.gram != whole.gram).nnz == 0 and (total.recent == whole.recent).all()
    assert total.n_users == data.n_users
    for model in (EASE(l2=50.0), ItemCF(), Popularity()):
        everyone = type(model)(**({"l2": 50.0} if isinstance(model, EASE) else {})).fit(data)
        shard = model.fit_shared(total, _rows(data, shards[1]))
        alone = type(model)(**({"l2": 50.0} if isinstance(model, EASE) else {})).fit(_rows(data, shards[1]))
        rows = np.arange(len(shards[1]))
        np.testing.assert_allclose(shard.score(rows), everyone.score(shards[1]), rtol=1e-6, atol=1e-7)
        # (and a shard fitted on its own users alone would not: the sums are what the test is about)
        assert not np.allclose(alone.score(rows), everyone.score(shards[1]), rtol=1e-6, atol=1e-7)


def test_the_ranker_serves_a_shard_with_the_lists_of_the_whole(split, fitted):
    import copy

    data = split.train
    users = np.arange(data.n_users)[1::3]
    whole = copy.deepcopy(fitted).serve_on(data, CATEGORIES)
    shard = copy.deepcopy(fitted).serve_on(_rows(data, users), CATEGORIES, shared=ItemCooccurrence.of(data))
    ids, scores = shard.recommend(np.arange(len(users)), data.user_items[users], N=10)
    want_ids, want_scores = whole.recommend(users, data.user_items, N=10)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    # A generator with no way to fit from the sums is refused, not fitted on the shard alone.
    rp3 = CandidateRanker([Generator("rp3", RP3Beta(), 10)])
    assert not rp3.fits_shared and fitted.fits_shared
    rp3.booster = fitted.booster
    with pytest.raises(ValueError, match="cannot be fitted from statistics summed over shards"):
        rp3.serve_on(_rows(data, users), shared=ItemCooccurrence.of(data))
