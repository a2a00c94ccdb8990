"""Feature jobs: clean events -> interactions, user days, user profiles, item statistics, as SQL
written once for every engine (see :mod:`visrec.store.engine`).

All are snapshots "as of the end of ``ds``". A night's cost follows the night's data:

- ``interactions`` of ``ds`` is the previous snapshot decayed to the end of ``ds`` plus the events
  ingested since (:func:`interactions_sql` with ``incremental=True``); rebuilt from the whole history
  it is the same table (up to float32 rounding of the confidences; a test checks it);
- ``user_days`` (one row per user and day with an event, for ``active_days``) likewise;
- ``user_profiles`` come from those two tables and the catalog, never from the raw history;
- ``item_stats`` count the last 30 days, so they read only the event partitions that can hold them.

Confidence of a (user, item) pair: ``sum over its events of weight[event_type] * 0.5 ** (age_days /
half_life_days)``, with the weights and half-life from the settings (``VISREC_EVENT_WEIGHTS``,
``VISREC_DECAY_HALF_LIFE_DAYS``) and the age measured to the end of ``ds``.

User segments (first match wins), with ``recent`` meaning the last 7 days before the end of ``ds``:

``new``       first event in the last 7 days
``loyal``     3 or more purchases and 5 or more active days
``engaged``   3 or more active days, or 5 or more clicks
``casual``    everyone else
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa

from visrec.vocabulary import EVENT_TYPES

SEGMENTS = ("new", "loyal", "engaged", "casual")
TOP_CATEGORIES = 3
STATS_WINDOW_DAYS = 30
DAY_US = 86_400_000_000


def end_of_day(ds: str) -> datetime:
    """The first instant after ``ds`` (UTC), the reference time of a run's snapshots."""
    return datetime.combine(date.fromisoformat(ds) + timedelta(days=1), datetime.min.time())


def _age_days(column: str, ds: str) -> str:
    # Microseconds since the epoch (EPOCH_US, UNIX_MICROS on Spark: see visrec.store.engine) are
    # twice as fast in DuckDB as DATE_DIFF. Doubles throughout: Spark reads a literal such as
    # 86400000000.0 as a DECIMAL, and its division as DECIMAL arithmetic of limited scale.
    ref_us = int(end_of_day(ds).replace(tzinfo=UTC).timestamp()) * 1_000_000
    return f"(CAST({ref_us} - EPOCH_US({column}) AS DOUBLE) / {DAY_US})"


def _counts(prefix: str = "") -> str:
    return ", ".join(
        f"CAST(SUM(CASE WHEN event_type = '{t}' THEN 1 ELSE 0 END) AS INTEGER) AS {prefix}n_{t}"
        for t in EVENT_TYPES
    )


_N = ", ".join(f"n_{t}" for t in EVENT_TYPES)


def interactions_sql(ds: str, weights: dict[str, float], half_life_days: float, since: str | None) -> str:
    """One row per (user, item) from ``events``: decayed confidence, counts per event type, first and
    last time. With ``since`` (the date of the snapshot ``previous``), the snapshot decayed from the
    end of ``since`` to the end of ``ds`` is added to what ``events`` (the days after it) hold."""
    weight = " ".join(f"WHEN '{t}' THEN CAST({float(weights[t])} AS DOUBLE)" for t in EVENT_TYPES)
    fresh = f"""
        SELECT user_id, item_id,
               SUM((CASE event_type {weight} ELSE CAST(0 AS DOUBLE) END)
                   * POWER(CAST(0.5 AS DOUBLE), {_age_days("ts", ds)} / CAST({float(half_life_days)} AS DOUBLE))) AS confidence,
               {_counts()}, MIN(ts) AS first_ts, MAX(ts) AS last_ts
        FROM events GROUP BY user_id, item_id
    """
    if since is not None:
        gap_days = (date.fromisoformat(ds) - date.fromisoformat(since)).days
        decay = 0.5 ** (gap_days / half_life_days)  # a literal: the same double on every engine
        fresh = f"""
            SELECT user_id, item_id, SUM(confidence) AS confidence,
                   {", ".join(f"SUM(n_{t}) AS n_{t}" for t in EVENT_TYPES)},
                   MIN(first_ts) AS first_ts, MAX(last_ts) AS last_ts
            FROM (
                SELECT user_id, item_id,
                       CAST(confidence AS DOUBLE) * CAST({decay!r} AS DOUBLE) AS confidence,
                       {_N}, first_ts, last_ts
                FROM previous
                UNION ALL
                {fresh}
            ) AS both_parts
            GROUP BY user_id, item_id
        """
    return f"""
        SELECT user_id, item_id, CAST(confidence AS FLOAT) AS confidence,
               {", ".join(f"CAST(n_{t} AS INTEGER) AS n_{t}" for t in EVENT_TYPES)}, first_ts, last_ts
        FROM ({fresh}) AS pairs
    """


def user_days_sql(incremental: bool) -> str:
    """One row per user and UTC day with an event: ``events``' days, with ``previous_days`` added."""
    days = "SELECT DISTINCT user_id, CAST(ts AS DATE) AS day FROM events"
    if incremental:
        days = f"{days} UNION SELECT user_id, day FROM previous_days"
    return f"SELECT user_id, day FROM ({days}) AS d"


def price_terciles(catalog: pa.Table) -> tuple[float, float] | None:
    """The catalog's price terciles (linear interpolation), or None when no item has a price."""
    prices = catalog.column("price").drop_null().to_numpy()
    if len(prices) == 0:
        return None
    lo, hi = np.quantile(prices, [1 / 3, 2 / 3])
    return float(lo), float(hi)


def user_profiles_sql(ds: str, terciles: tuple[float, float] | None) -> str:
    """Behaviour profile per user from ``interactions`` (this date's snapshot), ``user_days`` and
    ``catalog``: counts, recency, activity, funnel conversion, price band (low / mid / high against
    the catalog's price terciles) and segment. Top categories: :data:`TOP_CATEGORIES_SQL`."""
    user_price = "COALESCE(buy_price, any_price)"
    band = "CAST(NULL AS VARCHAR)"
    if terciles is not None:
        lo, hi = terciles
        band = (
            f"CASE WHEN {user_price} < {lo!r} THEN 'low' WHEN {user_price} < {hi!r} THEN 'mid' "
            f"WHEN {user_price} IS NOT NULL THEN 'high' END"
        )

    def ratio(num: str, den: str) -> str:
        return f"CAST(CASE WHEN {den} > 0 THEN {num} / {den} END AS FLOAT)"

    return f"""
        WITH pairs AS (
            SELECT i.*, c.price, {" + ".join(f"i.n_{t}" for t in EVENT_TYPES)} AS n_events
            FROM interactions AS i LEFT JOIN catalog AS c ON i.item_id = c.item_id
        ),
        base AS (
            SELECT user_id, {", ".join(f"SUM(n_{t}) AS n_{t}" for t in EVENT_TYPES)},
                   MIN(first_ts) AS first_ts, MAX(last_ts) AS last_ts, SUM(n_events) AS n_events,
                   SUM(n_purchase * price)
                       / NULLIF(SUM(CASE WHEN price IS NOT NULL THEN n_purchase END), 0) AS buy_price,
                   SUM(n_events * price)
                       / NULLIF(SUM(CASE WHEN price IS NOT NULL THEN n_events END), 0) AS any_price
            FROM pairs GROUP BY user_id
        ),
        days AS (SELECT user_id, COUNT(*) AS active_days FROM user_days GROUP BY user_id)
        SELECT base.user_id,
               CASE
                   WHEN {_age_days("first_ts", ds)} < 7 THEN 'new'
                   WHEN n_purchase >= 3 AND active_days >= 5 THEN 'loyal'
                   WHEN active_days >= 3 OR n_click >= 5 THEN 'engaged'
                   ELSE 'casual'
               END AS segment,
               {", ".join(f"CAST(n_{t} AS INTEGER) AS n_{t}" for t in EVENT_TYPES)},
               first_ts, last_ts,
               CAST({_age_days("last_ts", ds)} AS FLOAT) AS recency_days,
               CAST(active_days AS INTEGER) AS active_days,
               CAST(n_events / active_days AS FLOAT) AS events_per_active_day,
               {ratio("n_click", "n_view")} AS view_to_click,
               {ratio("n_add_to_cart", "n_click")} AS click_to_cart,
               {ratio("n_purchase", "n_add_to_cart")} AS cart_to_purchase,
               {band} AS price_band
        FROM base JOIN days ON base.user_id = days.user_id
        ORDER BY base.user_id
    """


# Each user's most frequent categories (by events, ties by name) with their shares of the user's events.
TOP_CATEGORIES_SQL = f"""
    SELECT user_id, category, CAST(share AS FLOAT) AS share, rank
    FROM (
        SELECT user_id, category, n / SUM(n) OVER (PARTITION BY user_id) AS share,
               ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY n DESC, category ASC) AS rank
        FROM (
            SELECT i.user_id, c.category, SUM({" + ".join(f"i.n_{t}" for t in EVENT_TYPES)}) AS n
            FROM interactions AS i LEFT JOIN catalog AS c ON i.item_id = c.item_id
            GROUP BY i.user_id, c.category
        ) AS per_category
    ) AS ranked
    WHERE rank <= {TOP_CATEGORIES} AND category IS NOT NULL
    ORDER BY user_id, rank
"""


def with_top_categories(profiles: pa.Table, top: pa.Table) -> pa.Table:
    """``profiles`` (sorted by user) with ``top_categories``: the rows of :data:`TOP_CATEGORIES_SQL`
    (sorted by user and rank) as one list of (category, share) per user, empty when none."""
    users = profiles.column("user_id").to_numpy(zero_copy_only=False)
    owners = top.column("user_id").to_numpy(zero_copy_only=False)
    # Both sides are sorted by user: each user's top rows are the run [first, last) of ``top``.
    first, last = np.searchsorted(owners, users, "left"), np.searchsorted(owners, users, "right")
    offsets = np.concatenate([[0], np.cumsum(last - first)]).astype(np.int32)
    rows = np.repeat(first - offsets[:-1], last - first) + np.arange(offsets[-1])
    entries = pa.StructArray.from_arrays(
        [top.column(n).combine_chunks().take(rows) for n in ("category", "share")],
        names=["category", "share"],
    )
    return profiles.append_column("top_categories", pa.ListArray.from_arrays(pa.array(offsets), entries))


def item_stats_sql(ds: str) -> str:
    """Per catalog item: views and purchases over the last 7 and 30 days, distinct users and
    view-to-purchase conversion over 30 days (items without events get zeros), from ``events`` (the
    partitions of the last :data:`STATS_WINDOW_DAYS` days and one more: see :func:`stats_days`)."""
    age = _age_days("ts", ds)

    def n(event_type: str, days: int) -> str:
        return f"SUM(CASE WHEN event_type = '{event_type}' AND {age} <= {days} THEN 1 ELSE 0 END)"

    counts = ["n_view_7d", "n_purchase_7d", "n_view_30d", "n_purchase_30d", "n_users_30d"]
    return f"""
        WITH recent AS (
            SELECT item_id, {n("view", 7)} AS n_view_7d, {n("purchase", 7)} AS n_purchase_7d,
                   {n("view", 30)} AS n_view_30d, {n("purchase", 30)} AS n_purchase_30d,
                   COUNT(DISTINCT user_id) AS n_users_30d
            FROM events WHERE {age} <= {STATS_WINDOW_DAYS}
            GROUP BY item_id
        )
        SELECT c.item_id, c.category,
               {", ".join(f"CAST(COALESCE(r.{k}, 0) AS INTEGER) AS {k}" for k in counts)},
               CAST(CASE WHEN r.n_view_30d > 0 THEN r.n_purchase_30d / r.n_view_30d END AS FLOAT)
                   AS conversion_30d
        FROM catalog AS c LEFT JOIN recent AS r ON c.item_id = r.item_id
        ORDER BY c.item_id
    """


def stats_days(ds: str, days: list[str]) -> list[str]:
    """The event partitions that can hold events of the stats window: a partition's events are at most
    a day and the clock skew past its date, so the window's first day and one before it suffice."""
    first = (date.fromisoformat(ds) - timedelta(days=STATS_WINDOW_DAYS + 1)).isoformat()
    return [d for d in days if first <= d <= ds]
