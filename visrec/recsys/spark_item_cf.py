"""Item-item collaborative filtering as a Spark job: cosine similarity of items' binary user columns,

    sim(i, j) = |users(i) & users(j)| / sqrt(|users(i)| * |users(j)|)

computed by a self-join on the user, so it scales with the cluster rather than with one machine's
memory: its cost is the sum over users of (items per user)^2, which ``max_items_per_user`` bounds (a
user's most confident items are kept). Each item keeps its ``neighbours`` most similar items, ties
broken by the other item's index. The in-memory ``visrec.recsys.baselines.ItemCF`` computes the same
numbers with a sparse matrix product; a test holds the two to each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def item_similarities(
    pairs: DataFrame, neighbours: int = 100, max_items_per_user: int | None = None
) -> DataFrame:
    """(``item``, ``other``, ``similarity``) from (``user``, ``item``[, ``confidence``]) rows."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if neighbours < 1:
        raise ValueError(f"neighbours must be at least 1, got {neighbours}")
    if "confidence" not in pairs.columns:
        pairs = pairs.withColumn("confidence", F.lit(1.0))
    pairs = pairs.groupBy("user", "item").agg(F.sum("confidence").alias("confidence"))
    if max_items_per_user is not None:
        by_user = Window.partitionBy("user").orderBy(F.desc("confidence"), F.asc("item"))
        pairs = pairs.withColumn("_r", F.row_number().over(by_user)).where(F.col("_r") <= max_items_per_user)
    pairs = pairs.select("user", "item")
    counts = pairs.groupBy("item").agg(F.count("*").alias("n"))
    left, right = pairs.alias("a"), pairs.alias("b")
    co = (
        left.join(right, "user")
        .where(F.col("a.item") != F.col("b.item"))
        .groupBy(F.col("a.item").alias("item"), F.col("b.item").alias("other"))
        .agg(F.count("*").alias("co"))
    )
    other_counts = counts.select(F.col("item").alias("other"), F.col("n").alias("n_other"))
    sims = (
        co.join(counts, "item")
        .join(other_counts, "other")
        .select(
            "item",
            "other",
            (F.col("co") / F.sqrt(F.col("n") * F.col("n_other"))).cast("float").alias("similarity"),
        )
    )
    by_item = Window.partitionBy("item").orderBy(F.desc("similarity"), F.asc("other"))
    return sims.withColumn("_r", F.row_number().over(by_item)).where(F.col("_r") <= neighbours).drop("_r")
