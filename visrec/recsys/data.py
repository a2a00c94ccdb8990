"""From lake tables to training data: confidence matrices, the temporal evaluation split, the
production training set and the already-bought matrix.

Evaluation uses a global time cut: events before ``end of ds - VISREC_TEST_DAYS`` train, and the
(user, item) pairs with a click, cart or purchase after it (and not already in the user's training
history) are what a model should find. Item ids are those with an image embedding (the catalog the
visual models can see); events on other items are counted and left out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import scipy.sparse as sp

from visrec.ingest.jobs.features import end_of_day
from visrec.settings import Settings
from visrec.store.catalog import read_catalog
from visrec.store.lake import Lake
from visrec.store.tables import in_shard, item_embeddings_split, load_events


@dataclass
class TrainData:
    """What every recommender fits on."""

    user_items: sp.csr_matrix  # (n_users, n_items) implicit-feedback confidence
    item_features: np.ndarray | None = None  # (n_items, d) L2-normalised image embeddings
    recent_user_items: sp.csr_matrix | None = None  # the last days only, for popularity
    user_ids: list[str] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    # How many leading columns of item_features are the image classifier's embedding (what VBPR learns
    # looks from); None: all of them.
    classifier_dims: int | None = None

    @property
    def n_users(self) -> int:
        return self.user_items.shape[0]

    @property
    def n_items(self) -> int:
        return self.user_items.shape[1]


log = logging.getLogger(__name__)
INTENT_EVENTS = ("click", "add_to_cart", "purchase")


@dataclass
class Split:
    """Training data before the cut and what each user did after it."""

    train: TrainData
    relevant: list[set[int]]
    cold: np.ndarray  # items with no interaction before the cut
    cut: datetime | None = None  # None: not cut by time (e.g. a random split per user)
    dropped_events: int = 0
    events: pd.DataFrame | None = None  # the events it was cut from (items with an embedding only)


def confidence_matrix(
    events: pd.DataFrame, users: dict[str, int], items: dict[str, int], ref: datetime, settings: Settings
) -> sp.csr_matrix:
    """Users x items confidence, the same formula as the ``interactions`` table, aged to ``ref``."""
    if events.empty:
        return sp.csr_matrix((len(users), len(items)), dtype=np.float32)
    weights = settings.weights()
    age_days = (pd.Timestamp(ref, tz="UTC") - events["ts"]).dt.total_seconds().to_numpy() / 86400.0
    value = events["event_type"].map(weights).to_numpy() * 0.5 ** (age_days / settings.decay_half_life_days)
    rows = events["user_id"].map(users).to_numpy()
    cols = events["item_id"].map(items).to_numpy()
    matrix = sp.coo_matrix((value.astype(np.float32), (rows, cols)), shape=(len(users), len(items))).tocsr()
    matrix.sum_duplicates()
    return matrix


def _frame_indexed(events: pd.DataFrame, item_index: dict[str, int]) -> tuple[pd.DataFrame, int]:
    known = events["item_id"].isin(item_index.keys())
    return events[known], int((~known).sum())


def test_window_days(settings: Settings, events: pd.DataFrame, ds: str) -> int:
    """Days in the evaluation's test window: ``VISREC_TEST_DAYS``, grown back one day at a time until
    the window holds ``VISREC_TEST_MIN_USERS`` users with a click, cart or purchase in it (or every
    user who has one anywhere in the history, when there are fewer), and never past half the history:
    a two-day window on sparse data held 17 users, too few to tell models apart."""
    intent = events[events["event_type"].isin(INTENT_EVENTS)]
    if intent.empty:
        return settings.test_days
    end = pd.Timestamp(end_of_day(ds), tz="UTC")
    history_days = max(1, int((end - events["ts"].min()).total_seconds() // 86400))
    longest = max(settings.test_days, history_days // 2)
    wanted = min(settings.test_min_users, intent["user_id"].nunique())
    days = settings.test_days
    while (
        days < longest
        and intent.loc[intent["ts"] >= end - pd.Timedelta(days=days), "user_id"].nunique() < wanted
    ):
        days += 1
    if days != settings.test_days:
        log.info("test window grown from %d to %d days to hold %d users", settings.test_days, days, wanted)
    return days


def build_split(settings: Settings, lake: Lake, ds: str, events: pd.DataFrame | None = None) -> Split:
    """The evaluation split as of ``ds`` (see the module docstring); ``events`` as ``load_events``
    gives them, when the caller has them already."""
    item_ids, features, _, classifier_dims = item_embeddings_split(lake, ds)
    item_index = {item: k for k, item in enumerate(item_ids)}
    events, dropped = _frame_indexed(load_events(lake, ds) if events is None else events, item_index)
    cut = end_of_day(ds) - timedelta(days=test_window_days(settings, events, ds))
    return split_at(settings, events, item_ids, features, cut, dropped, classifier_dims)


def validation_split(settings: Settings, split: Split, ds: str) -> Split:
    """A validation split cut from ``split``'s training events (``split`` as of ``ds``) by time, its
    window as long as the test window: model selection that never sees the test window."""
    window = end_of_day(ds) - split.cut
    earlier = split.events[split.events["ts"] < pd.Timestamp(split.cut, tz="UTC")]
    train = split.train
    return split_at(
        settings, earlier, train.item_ids, train.item_features, split.cut - window, 0, train.classifier_dims
    )


def split_at(
    settings: Settings,
    events: pd.DataFrame,
    item_ids: list[str],
    features: np.ndarray | None,
    cut: datetime,
    dropped: int = 0,
    classifier_dims: int | None = None,
) -> Split:
    """Events before ``cut`` train; the clicks, carts and purchases from ``cut`` on that are new to the
    user are what a model should find."""
    item_index = {item: k for k, item in enumerate(item_ids)}
    cut_ts = pd.Timestamp(cut, tz="UTC")
    train_events = events[events["ts"] < cut_ts]
    test_events = events[(events["ts"] >= cut_ts) & events["event_type"].isin(INTENT_EVENTS)]
    user_ids = sorted(set(events["user_id"]))
    user_index = {u: k for k, u in enumerate(user_ids)}
    train = confidence_matrix(train_events, user_index, item_index, cut, settings)
    recent = confidence_matrix(
        train_events[train_events["ts"] >= cut_ts - pd.Timedelta(days=7)],
        user_index,
        item_index,
        cut,
        settings,
    )
    relevant: list[set[int]] = [set() for _ in user_ids]
    for user, item in zip(
        test_events["user_id"].map(user_index), test_events["item_id"].map(item_index), strict=True
    ):
        relevant[user].add(int(item))
    for u in range(len(user_ids)):
        relevant[u] -= set(train.indices[train.indptr[u] : train.indptr[u + 1]].tolist())
    cold = np.asarray((train > 0).sum(axis=0)).ravel() == 0
    data = TrainData(train, features, recent, user_ids, item_ids, classifier_dims)
    return Split(data, relevant, cold, cut, dropped, events)


def full_data(settings: Settings, lake: Lake, ds: str, events: pd.DataFrame | None = None) -> TrainData:
    """All events up to the end of ``ds``: what the production model trains on."""
    item_ids, features, _, classifier_dims = item_embeddings_split(lake, ds)
    item_index = {item: k for k, item in enumerate(item_ids)}
    events, _ = _frame_indexed(load_events(lake, ds) if events is None else events, item_index)
    user_ids = sorted(set(events["user_id"]))
    user_index = {u: k for k, u in enumerate(user_ids)}
    ref = end_of_day(ds)
    matrix = confidence_matrix(events, user_index, item_index, ref, settings)
    recent_events = events[events["ts"] >= pd.Timestamp(ref - timedelta(days=7), tz="UTC")]
    recent = confidence_matrix(recent_events, user_index, item_index, ref, settings)
    return TrainData(matrix, features, recent, user_ids, item_ids, classifier_dims)


def snapshot_data(
    lake: Lake, ds: str, shard: tuple[int, int] | None = None
) -> tuple[TrainData, sp.csr_matrix]:
    """What scoring needs, from the ``interactions`` snapshot of ``ds`` (one row per pair, not per
    event): :func:`full_data`'s users, items and confidences (the same formula, rounded to float32),
    the pairs with an event in the last 7 days as ``recent_user_items`` (for popularity, which counts
    users per item), and :func:`purchased_matrix`. With ``shard``, the users of that shard only."""
    item_ids, features, _, classifier_dims = item_embeddings_split(lake, ds)
    item_index = {item: k for k, item in enumerate(item_ids)}
    columns = ["user_id", "item_id", "confidence", "n_purchase", "last_ts"]
    table = lake.read_table("interactions", ds).select(columns)
    pairs = (in_shard(table, shard) if shard else table).to_pandas()
    pairs = pairs[pairs["item_id"].isin(item_index.keys())]
    user_ids = sorted(set(pairs["user_id"]))
    user_index = {u: k for k, u in enumerate(user_ids)}
    rows, cols = pairs["user_id"].map(user_index).to_numpy(), pairs["item_id"].map(item_index).to_numpy()
    shape = (len(user_ids), len(item_ids))

    def matrix(keep: np.ndarray, values: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((values[keep].astype(np.float32), (rows[keep], cols[keep])), shape=shape)

    everything = np.ones(len(pairs), bool)
    confidence = pairs["confidence"].to_numpy()
    recent = (pairs["last_ts"] >= pd.Timestamp(end_of_day(ds) - timedelta(days=7), tz="UTC")).to_numpy()
    data = TrainData(
        matrix(everything, confidence),
        features,
        matrix(recent, confidence),
        user_ids,
        item_ids,
        classifier_dims,
    )
    return data, matrix(pairs["n_purchase"].to_numpy() > 0, np.ones(len(pairs)))


def purchased_matrix(events: pd.DataFrame, data: TrainData) -> sp.csr_matrix:
    """Users x items, 1 where the user already bought the item (never recommended again)."""
    user_index = {u: k for k, u in enumerate(data.user_ids)}
    item_index = {i: k for k, i in enumerate(data.item_ids)}
    bought = events[
        (events["event_type"] == "purchase")
        & events["item_id"].isin(item_index.keys())
        & events["user_id"].isin(user_index.keys())
    ]
    rows = bought["user_id"].map(user_index).to_numpy()
    cols = bought["item_id"].map(item_index).to_numpy()
    out = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(data.n_users, data.n_items))
    out.sum_duplicates()
    return out


def item_categories(lake: Lake, ds: str, item_ids: list[str]) -> list[str]:

    catalog, _ = read_catalog(lake)
    category = dict(
        zip(catalog.column("item_id").to_pylist(), catalog.column("category").to_pylist(), strict=True)
    )
    return [category.get(i, "") for i in item_ids]


def item_prices(lake: Lake, ds: str, item_ids: list[str], events: pd.DataFrame | None = None) -> np.ndarray:
    """Each item's price: the catalog's, else the mean over its events up to ``ds`` that carried one
    (NaN where neither says). ``events``: those events already loaded, with their ``price`` column
    (:func:`visrec.store.tables.load_events` with ``columns``), so they are not read again."""
    catalog, _ = read_catalog(lake)
    listed = catalog.select(["item_id", "price"]).to_pandas().dropna().drop_duplicates("item_id")
    if events is None:
        table = lake.read_table("events", [d for d in lake.partitions("events") if d <= ds])
        events = table.select(["item_id", "price"]).to_pandas()
    paid = events[["item_id", "price"]].dropna().groupby("item_id")["price"].mean()
    price = listed.set_index("item_id")["price"].combine_first(paid)
    return price.reindex(item_ids).to_numpy(np.float64)


def holdout_per_user(data: TrainData, share: float, seed: int) -> Split:
    """A random split per user of ``data``: ``share`` of each user's distinct items held out (users with
    one item keep it), what a model should find; the design for data without usable timestamps, or
    whose time windows hold too few users (see :func:`visrec.recsys.select.validation_design`)."""
    if not 0 < share < 1:
        raise ValueError(f"the held-out share must be between 0 and 1, got {share}")
    rng = np.random.default_rng(seed)
    matrix = data.user_items.tocsr()
    keep = np.ones(matrix.nnz, bool)
    relevant: list[set[int]] = []
    for u in range(data.n_users):
        start, stop = matrix.indptr[u], matrix.indptr[u + 1]
        n_test = int(round((stop - start) * share)) if stop - start > 1 else 0
        held = rng.choice(np.arange(start, stop), size=n_test, replace=False) if n_test else np.zeros(0, int)
        keep[held] = False
        relevant.append(set(matrix.indices[held].tolist()))
    # Copies of the index arrays: eliminate_zeros works in place, and ``data`` must stay as it was.
    train = sp.csr_matrix(
        (matrix.data * keep, matrix.indices.copy(), matrix.indptr.copy()), shape=matrix.shape
    )
    train.eliminate_zeros()
    recent = None
    if data.recent_user_items is not None:  # the recent part of what stays for training
        recent = data.recent_user_items.multiply(train > 0).tocsr()
    cold = np.asarray((train > 0).sum(axis=0)).ravel() == 0
    trained = TrainData(train, data.item_features, recent, data.user_ids, data.item_ids, data.classifier_dims)
    return Split(trained, relevant, cold)
