"""Feature jobs (Spark): clean events up to ``ds`` -> interactions, user profiles, item statistics.

All three are snapshots "as of the end of ``ds``" computed from the whole clean event history, so a
backfill of an old date gives the same tables it gave then.

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

from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from visrec.store.schemas import EVENT_TYPES

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

SEGMENTS = ("new", "loyal", "engaged", "casual")
TOP_CATEGORIES = 3


def end_of_day(ds: str) -> datetime:
    """The first instant after ``ds`` (UTC), the reference time of a run's snapshots."""
    return datetime.combine(date.fromisoformat(ds) + timedelta(days=1), datetime.min.time())


def _age_days(ds: str) -> Column:
    from pyspark.sql import functions as F

    return (F.lit(end_of_day(ds)).cast("long") - F.col("ts").cast("long")) / 86400.0


def _count(event_type: str) -> Column:
    from pyspark.sql import functions as F

    return F.sum(F.when(F.col("event_type") == event_type, 1).otherwise(0)).cast("int")


def interactions(events: DataFrame, ds: str, weights: dict[str, float], half_life_days: float) -> DataFrame:
    """One row per (user, item): decayed confidence, counts per event type, first and last time."""
    from pyspark.sql import functions as F

    weight = F.lit(0.0)
    for name in EVENT_TYPES:
        weight = F.when(F.col("event_type") == name, F.lit(weights[name])).otherwise(weight)
    decay = F.pow(F.lit(0.5), _age_days(ds) / F.lit(half_life_days))
    return events.groupBy("user_id", "item_id").agg(
        F.sum(weight * decay).cast("float").alias("confidence"),
        *[_count(t).alias(f"n_{t}") for t in EVENT_TYPES],
        F.min("ts").alias("first_ts"),
        F.max("ts").alias("last_ts"),
    )


def user_profiles(events: DataFrame, catalog: DataFrame, ds: str) -> DataFrame:
    """Behaviour profile per user: counts, recency, activity, funnel conversion, top categories,
    price band (low / mid / high against the catalog's price terciles) and segment."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    ref = F.lit(end_of_day(ds))
    prices = catalog.select(F.col("item_id").alias("_pid"), F.col("price").alias("_price"))
    events = events.join(F.broadcast(prices), events.item_id == prices._pid, "left").drop("_pid")
    base = events.groupBy("user_id").agg(
        *[_count(t).alias(f"n_{t}") for t in EVENT_TYPES],
        F.min("ts").alias("first_ts"),
        F.max("ts").alias("last_ts"),
        F.countDistinct(F.to_date("ts")).cast("int").alias("active_days"),
        F.count("*").alias("_events"),
        F.avg(F.when(F.col("event_type") == "purchase", F.col("_price"))).alias("_buy_price"),
        F.avg("_price").alias("_any_price"),
    )

    def ratio(num: str, den: str) -> Column:
        return F.when(F.col(den) > 0, (F.col(num) / F.col(den)).cast("float"))

    # Top categories by number of events, with their shares of the user's events.
    per_cat = events.groupBy("user_id", "category").agg(F.count("*").alias("_n"))
    rank = Window.partitionBy("user_id").orderBy(F.desc("_n"), F.asc("category"))
    top = (
        per_cat.withColumn("_r", F.row_number().over(rank))
        .withColumn("_share", F.col("_n") / F.sum("_n").over(Window.partitionBy("user_id")))
        .where(F.col("_r") <= TOP_CATEGORIES)
        .groupBy("user_id")
        .agg(
            F.sort_array(
                F.collect_list(
                    F.struct(F.col("_r"), F.col("category"), F.col("_share").cast("float").alias("share"))
                )
            ).alias("_top")
        )
        .select(
            "user_id",
            F.transform("_top", lambda s: F.struct(s["category"], s["share"])).alias("top_categories"),
        )
    )
    terciles = catalog.approxQuantile("price", [1 / 3, 2 / 3], 0.001)  # [] when no item has a price
    user_price = F.coalesce(F.col("_buy_price"), F.col("_any_price"))
    band = F.lit(None).cast("string")
    if len(terciles) == 2:
        lo, hi = terciles
        band = (
            F.when(user_price < lo, "low").when(user_price < hi, "mid").when(user_price.isNotNull(), "high")
        )
    recent = ref.cast("long") - F.col("first_ts").cast("long") < 7 * 86400
    segment = (
        F.when(recent, "new")
        .when((F.col("n_purchase") >= 3) & (F.col("active_days") >= 5), "loyal")
        .when((F.col("active_days") >= 3) | (F.col("n_click") >= 5), "engaged")
        .otherwise("casual")
    )
    return base.join(top, "user_id", "left").select(
        "user_id",
        segment.alias("segment"),
        *[f"n_{t}" for t in EVENT_TYPES],
        "first_ts",
        "last_ts",
        ((ref.cast("long") - F.col("last_ts").cast("long")) / 86400.0).cast("float").alias("recency_days"),
        "active_days",
        (F.col("_events") / F.col("active_days")).cast("float").alias("events_per_active_day"),
        ratio("n_click", "n_view").alias("view_to_click"),
        ratio("n_add_to_cart", "n_click").alias("click_to_cart"),
        ratio("n_purchase", "n_add_to_cart").alias("cart_to_purchase"),
        "top_categories",
        band.alias("price_band"),
    )


def item_stats(events: DataFrame, catalog: DataFrame, ds: str) -> DataFrame:
    """Per catalog item: views and purchases over the last 7 and 30 days, distinct users and
    view-to-purchase conversion over 30 days (items without events get zeros)."""
    from pyspark.sql import functions as F

    age = _age_days(ds)

    def n(event_type: str, days: int) -> Column:
        return F.sum(F.when((F.col("event_type") == event_type) & (age <= days), 1).otherwise(0)).cast("int")

    recent = (
        events.where(age <= 30)
        .groupBy("item_id")
        .agg(
            n("view", 7).alias("n_view_7d"),
            n("purchase", 7).alias("n_purchase_7d"),
            n("view", 30).alias("n_view_30d"),
            n("purchase", 30).alias("n_purchase_30d"),
            F.countDistinct("user_id").cast("int").alias("n_users_30d"),
        )
    )
    counts = ["n_view_7d", "n_purchase_7d", "n_view_30d", "n_purchase_30d", "n_users_30d"]
    out = catalog.select("item_id", "category").join(recent, "item_id", "left").fillna(0, subset=counts)
    return out.withColumn(
        "conversion_30d",
        F.when(F.col("n_view_30d") > 0, (F.col("n_purchase_30d") / F.col("n_view_30d")).cast("float")),
    )
