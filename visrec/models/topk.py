"""One exact top-K for every ranked list visrec makes, after implicit's ``topk``:

    ids, scores = topk(items, query, N, item_biases=None, filter_query_items=None, filter_items=None)

scores ``query @ items.T (+ item_biases)`` and returns, per query row, the ``N`` best item indices and
their scores, best first. Recommendations (user vectors against item vectors), similar items (item
embeddings against themselves), photo search and the real items nearest a generated look all go
through it. :func:`topk_scores` is the same selection over scores a model computed some other way
(item-item CF, popularity, blends); :func:`topk_best_of` the same for queries seen several ways (a
photo whole and in crops: an item scores its best view's score).

One way to filter, for every caller: ``filter_query_items`` is a sparse (queries x items) matrix whose
non-zeros are never returned for that query (what a user already bought, an item itself among its
neighbours); ``filter_items`` are item indices never returned for anyone. A query that runs out of
items is padded with id -1 and score -inf.

The product, the filters and the selection run in one TensorFlow graph per chunk of queries (memory
is chunk x items). Selection is exact and two-stage when the catalog is large: the item axis is cut
into groups of ``group`` items, the K groups with the largest maxima are kept (every top-K item lies
in one of them), and the top K is taken over those candidates only, so selection costs a fraction of
the product (``python bench/run.py scoring`` measures both).
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp

GROUP = 32  # items per group in the two-stage selection (32 and 64 measured best)
CHUNK = 4096  # queries per graph call


def _excluded_pairs(filter_query_items: sp.spmatrix | None, start: int, stop: int) -> np.ndarray:
    """(row in chunk, item) pairs to exclude for queries ``start:stop``, as an (n, 2) int64 array."""
    if filter_query_items is None:
        return np.zeros((0, 2), np.int64)
    rows = filter_query_items[start:stop].tocsr()
    chunk_rows = np.repeat(np.arange(stop - start), np.diff(rows.indptr))
    return np.stack([chunk_rows, rows.indices], axis=1).astype(np.int64)


@functools.cache
def _select_graph(k: int, group: int, from_factors: bool):
    """A traced ``(a, b, biases, excluded) -> (values, ids)``: scores are ``a @ b + biases`` when
    ``from_factors`` (a = queries, b = items transposed), else ``a`` itself."""
    import tensorflow as tf

    # One trace per (k, group, from_factors): every shape is left open, so chunks of any size, catalogs
    # of any size and any number of filtered pairs reuse it.
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.float32),
            tf.TensorSpec([None, None], tf.float32),
            tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([None, 2], tf.int64),
        ]
    )
    def select(a, b, biases, excluded):
        if from_factors:
            # The bias rides in the product as one more dimension: one pass over the scores fewer.
            ones = tf.ones([tf.shape(a)[0], 1], a.dtype)
            scores = tf.matmul(tf.concat([a, ones], axis=1), tf.concat([b, biases[None, :]], axis=0))
        else:
            scores = a + biases[None, :]
        scores = tf.tensor_scatter_nd_update(
            scores, excluded, tf.fill([tf.shape(excluded)[0]], float("-inf"))
        )
        if group == 1:
            return tf.math.top_k(scores, k=k)
        n = tf.shape(scores)[0]
        blocks = tf.reshape(scores, [n, -1, group])
        _, best_groups = tf.math.top_k(tf.reduce_max(blocks, axis=2), k=k)
        candidates = tf.reshape(tf.gather(blocks, best_groups, batch_dims=1), [n, k * group])
        values, pos = tf.math.top_k(candidates, k=k)
        return values, tf.gather(best_groups, pos // group, batch_dims=1) * group + pos % group

    return select


def _check(n_queries: int, n_items: int, N: int, filter_query_items, filter_items) -> int:
    if N < 1:
        raise ValueError(f"N must be at least 1, got {N}")
    if filter_query_items is not None and filter_query_items.shape != (n_queries, n_items):
        raise ValueError(
            f"filter_query_items must be (queries, items) = {(n_queries, n_items)}, got {filter_query_items.shape}"
        )
    if (
        filter_items is not None
        and len(filter_items)
        and (np.min(filter_items) < 0 or np.max(filter_items) >= n_items)
    ):
        raise ValueError(f"filter_items must be item indices in [0, {n_items})")
    return min(N, n_items)


def _run(
    a_rows,
    n_items: int,
    k: int,
    b,
    biases: np.ndarray,
    filter_query_items,
    from_factors: bool,
    chunk: int,
    group: int,
) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow as tf

    # Two stages pay off only when K groups are a small part of the catalog.
    group = group if n_items >= 8 * k * group else 1
    padded = -(-n_items // group) * group
    full_biases = np.full(padded, -np.inf, np.float32)
    full_biases[:n_items] = biases
    graph = _select_graph(k, group, from_factors)
    b_t = tf.constant(b) if b is not None else tf.zeros((0, 0), tf.float32)
    biases_t = tf.constant(full_biases)
    n = len(a_rows)
    all_ids, all_scores = [], []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        a = np.asarray(a_rows[start:stop], np.float32)
        if not from_factors and padded != n_items:
            a = np.pad(a, ((0, 0), (0, padded - n_items)))
        excluded = _excluded_pairs(filter_query_items, start, stop)
        values, ids = graph(tf.constant(a), b_t, biases_t, tf.constant(excluded))
        values, ids = values.numpy(), ids.numpy().astype(np.int64)
        ids[~np.isfinite(values)] = -1
        all_ids.append(ids)
        all_scores.append(values)
    if not all_ids:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    return np.concatenate(all_ids), np.concatenate(all_scores)


def topk(
    items: np.ndarray,
    query: np.ndarray,
    N: int,
    *,
    item_biases: np.ndarray | None = None,
    filter_query_items: sp.spmatrix | None = None,
    filter_items: np.ndarray | None = None,
    chunk: int = CHUNK,
    group: int = GROUP,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``N`` items with the largest ``query @ items.T + item_biases`` for each query row:
    ``(ids, scores)``, each (queries, min(N, items)), best first; see the module docstring."""
    items = np.asarray(items, np.float32)
    query = np.asarray(query, np.float32)
    n_items, dim = items.shape
    if query.ndim != 2 or query.shape[1] != dim:
        raise ValueError(f"query must be (n, {dim}) to match items {items.shape}, got {query.shape}")
    k = _check(len(query), n_items, N, filter_query_items, filter_items)
    group_used = group if n_items >= 8 * k * group else 1
    padded = -(-n_items // group_used) * group_used
    items_t = np.zeros((dim, padded), np.float32)
    items_t[:, :n_items] = items.T
    biases = (
        np.zeros(n_items, np.float32) if item_biases is None else np.asarray(item_biases, np.float32).copy()
    )
    if filter_items is not None and len(filter_items):
        biases[np.asarray(filter_items, np.int64)] = -np.inf
    return _run(query, n_items, k, items_t, biases, filter_query_items, True, chunk, group)


def topk_scores(
    scores: np.ndarray,
    N: int,
    *,
    filter_query_items: sp.spmatrix | None = None,
    filter_items: np.ndarray | None = None,
    group: int = GROUP,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`topk` over scores already computed, (queries, items), with the same filters."""
    scores = np.asarray(scores, np.float32)
    k = _check(scores.shape[0], scores.shape[1], N, filter_query_items, filter_items)
    biases = np.zeros(scores.shape[1], np.float32)
    if filter_items is not None and len(filter_items):
        biases[np.asarray(filter_items, np.int64)] = -np.inf
    return _run(scores, scores.shape[1], k, None, biases, filter_query_items, False, len(scores) or 1, group)


def topk_best_of(
    items: np.ndarray,
    query_views: np.ndarray,
    N: int,
    *,
    filter_query_items: sp.spmatrix | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`topk` for queries seen several ways: ``query_views`` is (queries, views, dim) and a
    query's score of an item is the best of its views' scores (a photo looked at whole and in crops).
    Exact: an item in a query's top ``N`` by best score is in the top ``N`` of the view that gives
    that score, so the union of the views' lists holds every answer."""
    query_views = np.asarray(query_views, np.float32)
    if query_views.ndim != 3:
        raise ValueError(f"query_views must be (queries, views, dim), got shape {query_views.shape}")
    n, views, dim = query_views.shape
    rows = np.repeat(np.arange(n), views)
    view_filter = None if filter_query_items is None else sp.csr_matrix(filter_query_items)[rows]
    ids, scores = topk(items, query_views.reshape(n * views, dim), N, filter_query_items=view_filter)
    k = ids.shape[1]
    ids, scores = ids.reshape(n, views * k), scores.reshape(n, views * k)
    out_ids, out_scores = np.full((n, k), -1, np.int64), np.full((n, k), -np.inf, np.float32)
    for row in range(n):
        order = np.argsort(-scores[row], kind="stable")
        found = ids[row, order]
        # Best first, so an item's first place in the order carries its best score.
        _, first = np.unique(found, return_index=True)
        keep = np.sort(first[found[first] >= 0])[:k]
        out_ids[row, : len(keep)] = found[keep]
        out_scores[row, : len(keep)] = scores[row, order[keep]]
    return out_ids.astype(ids.dtype), out_scores
