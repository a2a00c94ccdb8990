"""Candidate generators (the first stage of two-stage recommendations): what each proposes is new to
the user, N per user, best first; merging keeps every proposal once, in order; recall grows with N and
the union reaches at least what its best member reaches."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from visrec.recsys.baselines import EASE, ItemCF, Popularity, VisualNeighbours, VisualProfile
from visrec.recsys.candidates import FromRecommender, merge, recall_at
from visrec.recsys.data import TrainData, holdout_per_user
from visrec.recsys.metrics import users_with

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def split():
    """200 users in 4 taste groups over 80 items (20 per group, their looks clustered by group)."""
    rng = np.random.default_rng(0)
    users, items = 200, 80
    group = np.arange(users) % 4
    rows, cols = [], []
    for u in range(users):
        liked = rng.choice(np.arange(20) + 20 * group[u], size=8, replace=False)
        noise = rng.choice(items, size=2, replace=False)
        for i in {*liked.tolist(), *noise.tolist()}:
            rows.append(u)
            cols.append(i)
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(users, items))
    looks = rng.normal(size=(4, 16))[np.arange(items) // 20] + 0.3 * rng.normal(size=(items, 16))
    looks /= np.linalg.norm(looks, axis=1, keepdims=True)
    return holdout_per_user(TrainData(matrix, looks.astype(np.float32)), 0.25, seed=1)


GENERATORS = {
    "popularity": Popularity,
    "item_cf": ItemCF,
    "ease": lambda: EASE(l2=10.0),
    "visual_profile": VisualProfile,
    "visual_neighbours": VisualNeighbours,
}


@pytest.mark.parametrize("name", GENERATORS)
def test_each_generator_proposes_n_new_items_and_recall_grows_with_n(split, name):
    generator = FromRecommender(name, GENERATORS[name]()).fit(split.train)
    users = users_with(split.relevant)
    ids, scores = generator.candidates(users, split.train.user_items, 30)
    assert ids.shape == scores.shape == (len(users), 30)
    liked = split.train.user_items[users]
    assert all(not set(ids[r].tolist()) & set(liked[r].indices.tolist()) for r in range(len(users)))
    assert all(len(set(row.tolist())) == 30 for row in ids)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    relevant = [split.relevant[u] for u in users]
    recalls = [recall_at(ids[:, :n], relevant).mean() for n in (5, 10, 30)]
    assert recalls == sorted(recalls) and recalls[-1] > 0


def test_the_union_reaches_at_least_its_best_member(split):
    users = users_with(split.relevant)
    relevant = [split.relevant[u] for u in users]
    proposals = {
        name: FromRecommender(name, make()).fit(split.train).candidates(users, split.train.user_items, 10)[0]
        for name, make in GENERATORS.items()
    }
    union = merge(list(proposals.values()))
    best = max(recall_at(p, relevant).mean() for p in proposals.values())
    assert recall_at(union, relevant).mean() >= best
    # Collaborative signal beats popularity on clustered tastes (the fixture is not degenerate).
    assert recall_at(proposals["ease"], relevant).mean() > recall_at(proposals["popularity"], relevant).mean()


def test_merge_keeps_each_item_once_in_first_seen_order():
    a = np.array([[3, 1, 2], [0, 1, 2]])
    b = np.array([[1, 4, 3], [5, 0, 6]])
    assert merge([a, b]) == [[3, 1, 2, 4], [0, 1, 2, 5, 6]]


def test_inputs_are_checked_early(split):
    generator = FromRecommender("popularity", Popularity()).fit(split.train)
    with pytest.raises(ValueError, match="N must be at least 1"):
        generator.candidates(np.array([0]), split.train.user_items, 0)
    with pytest.raises(ValueError, match="same users"):
        merge([np.zeros((2, 3), int), np.zeros((3, 3), int)])
    with pytest.raises(ValueError, match="needs a relevant item"):
        recall_at(np.zeros((1, 3), int), [set()])


def test_visual_neighbours_follow_each_recent_look_where_the_profile_averages_them():
    """A user whose recent items are of two styles: look-alikes of both come first, where the mean
    of the two (the visual profile) points between them at a third style."""
    looks = np.array([[1, 0, 0], [0.95, 0.31, 0], [0, 0, 1], [0, 0.31, 0.95], [0.7, 0, 0.7]], np.float32)
    looks /= np.linalg.norm(looks, axis=1, keepdims=True)
    bought = sp.csr_matrix(np.array([[1, 0, 1, 0, 0]], np.float32))
    data = TrainData(bought, looks, recent_user_items=bought)
    ids, _ = VisualNeighbours().fit(data).recommend([0], bought, N=2)
    assert set(ids[0].tolist()) == {1, 3}
    profile, _ = VisualProfile().fit(data).recommend([0], bought, N=1)
    assert profile[0].tolist() == [4]
    with pytest.raises(ValueError, match="item_features"):
        VisualNeighbours().fit(TrainData(bought))
