"""The nightly recommender selection on a small, bursty shop: fewer users than the test window's
threshold, each active on one or two days. Its time-based validation window then holds almost no user
with history on both sides of its cut (the degenerate case that chose a model worse than the defaults on
a held-out public data set); the selection must notice, fall back to a per-user holdout, say so, and not
choose worse than the defaults on the test window."""

from __future__ import annotations

import logging
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from visrec.ingest.jobs.features import end_of_day
from visrec.recsys import data as recsys_data
from visrec.recsys.metrics import bootstrap_interval, ndcg_per_user, users_with
from visrec.recsys.select import default_params, make_vbpr, select_vbpr
from visrec.settings import Settings

DS = "2026-11-30"


def bursty_events(users: int = 240, items: int = 150, days: int = 60, seed: int = 3) -> pd.DataFrame:
    """Each user has a taste over four hidden traits and shows up on one or two days only, buying
    what they like then; clicks and purchases."""
    rng = np.random.default_rng(seed)
    taste, traits = rng.normal(size=(users, 4)), rng.normal(size=(4, items))
    rows = []
    start = pd.Timestamp(DS, tz="UTC") - pd.Timedelta(days=days - 1)
    for u in range(users):
        affinity = taste[u] @ traits + rng.gumbel(size=items)
        liked = np.argsort(-affinity)[: rng.integers(8, 20)]
        visits = rng.choice(days, size=rng.integers(1, 3), replace=False)
        for n, item in enumerate(rng.permutation(liked)):
            day = visits[n % len(visits)]
            ts = start + pd.Timedelta(days=int(day), hours=int(rng.integers(0, 23)))
            rows.append((f"u{u}", f"i{item:03d}", "purchase" if n % 3 == 0 else "click", ts))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "ts"])


@pytest.fixture(scope="module")
def bursty():
    settings = Settings(test_days=2, test_min_users=1000, mf_trials=4, mf_epochs=15, mf_minutes=5.0, seed=1)
    events = bursty_events()
    items = sorted(events["item_id"].unique())
    cut = end_of_day(DS) - timedelta(days=recsys_data.test_window_days(settings, events, DS))
    return settings, recsys_data.split_at(settings, events, items, None, cut)


def test_a_bursty_small_shop_falls_back_to_a_per_user_holdout_and_says_so(bursty, caplog):
    settings, split = bursty
    assert split.train.n_users < settings.test_min_users
    with caplog.at_level(logging.INFO, logger="visrec.recsys.select"):
        selection = select_vbpr(settings, split, DS)
    assert selection.design.startswith("per-user holdout")
    assert "the time window held" in selection.design and selection.validation_users >= 50
    assert any("validation by per-user holdout" in r.getMessage() for r in caplog.records)
    assert selection.verdict.startswith(("the defaults", "searched settings"))
    assert len(selection.trials) == settings.mf_trials + 1  # and EASE against the choice
    assert "EASE" in selection.verdict

    # On the test window: the choice is not worse than the defaults (a paired interval over users).
    def test_ndcg(params: dict) -> np.ndarray:
        model = make_vbpr(settings, params).fit(split.train)
        users = users_with(split.relevant)
        ids, _ = model.recommend(users, split.train.user_items, N=20, filter_already_liked_items=True)
        return ndcg_per_user(ids, [split.relevant[u] for u in users], 20)

    defaults = {**default_params(settings), "visual_factors": 0}
    chosen, baseline = test_ndcg(selection.params), test_ndcg(defaults)
    low, high = bootstrap_interval(chosen - baseline)
    assert high >= 0, f"the selection is worse than the defaults on the test window: [{low:.4f}, {high:.4f}]"


def test_below_the_floor_the_defaults_stay_and_the_reason_is_given(bursty):
    settings, split = bursty
    selection = select_vbpr(settings.with_overrides(mf_validation_min_users=100_000), split, DS)
    assert selection.params == {**default_params(settings), "visual_factors": 0}  # no images here
    assert selection.trials == [] and "too few validation users" in selection.verdict
