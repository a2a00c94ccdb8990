"""The one top-K: exact against brute force, with every filter, on both paths and in chunks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from visrec.models.topk import topk, topk_best_of, topk_scores


def _brute(scores: np.ndarray, n: int) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :n]


@pytest.mark.parametrize("n_items, chunk", [(300, 64), (5000, 4096)])  # one- and two-stage selection
def test_topk_matches_brute_force_with_every_filter(n_items, chunk):
    rng = np.random.default_rng(1)
    items = rng.normal(size=(n_items, 16)).astype(np.float32)
    query = rng.normal(size=(150, 16)).astype(np.float32)
    biases = rng.normal(size=n_items).astype(np.float32)
    liked = sp.random(150, n_items, density=0.02, format="csr", random_state=2)
    banned = np.array([3, 7, 11])
    idx, scores = topk(
        items, query, 7, item_biases=biases, filter_query_items=liked, filter_items=banned, chunk=chunk
    )
    brute = query @ items.T + biases
    brute[liked.nonzero()] = -np.inf
    brute[:, banned] = -np.inf
    expected = _brute(brute, 7)
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(brute, expected, 1), rtol=1e-4, atol=1e-4)
    # Precomputed scores through the same selection and filters give the same lists.
    idx2, _ = topk_scores(query @ items.T + biases, 7, filter_query_items=liked, filter_items=banned)
    np.testing.assert_array_equal(idx2, expected)


@pytest.mark.parametrize("n_items", [300, 5000])
def test_best_of_views_matches_brute_force_with_filters_and_pads_short_lists(n_items):
    rng = np.random.default_rng(3)
    items = rng.normal(size=(n_items, 8)).astype(np.float32)
    views = rng.normal(size=(40, 6, 8)).astype(np.float32)
    liked = sp.random(40, n_items, density=0.05, format="csr", random_state=4)
    idx, scores = topk_best_of(items, views, 9, filter_query_items=liked)
    best = (views @ items.T).max(axis=1)  # (queries, items): each item's best view
    best[liked.nonzero()] = -np.inf
    expected = _brute(best, 9)
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(best, expected, 1), rtol=1e-4, atol=1e-4)
    assert len({tuple(sorted(set(row))) for row in idx}) == 40 and all(len(set(r)) == 9 for r in idx)
    # A query that runs out of items: each item once, then padding.
    bought = sp.csr_matrix(([1.0], ([0], [0])), shape=(2, 3))
    few, few_scores = topk_best_of(items[:3], views[:2], 3, filter_query_items=bought)
    assert sorted(few[0][:2]) == [1, 2] and few[0][2] == -1 and np.isneginf(few_scores[0][2])
    assert sorted(few[1]) == [0, 1, 2]


def test_item_is_never_its_own_neighbour_and_short_lists_pad():
    items = np.eye(4, dtype=np.float32)
    idx, scores = topk(items, items, 10, filter_query_items=sp.identity(4, format="csr"))
    assert idx.shape == (4, 4)  # N is capped at the number of items
    assert all(i not in row for i, row in enumerate(idx[:, :3]))
    assert (idx[:, 3] == -1).all() and np.isneginf(scores[:, 3]).all()


def test_bad_arguments_are_refused_early():
    items = np.ones((5, 3), np.float32)
    with pytest.raises(ValueError, match="N must be at least 1"):
        topk(items, items, 0)
    with pytest.raises(ValueError, match="query must be"):
        topk(items, np.ones((2, 4), np.float32), 2)
    with pytest.raises(ValueError, match="filter_query_items"):
        topk(items, items, 2, filter_query_items=sp.csr_matrix((2, 5)))
    with pytest.raises(ValueError, match="filter_items"):
        topk(items, items, 2, filter_items=np.array([9]))
