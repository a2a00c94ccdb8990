"""Event ingestion (Spark): a day's raw logs -> clean events + quarantine.

Every raw line ends in exactly one place: the clean ``events`` partition, the quarantine (with a
reason), or the count of exact duplicates dropped. So ``raw = valid + quarantined + duplicates``.

Reasons, checked in this order (the first that applies is recorded):

``malformed``           not a JSON object (JSONL) or a broken row (CSV)
``missing_field``       user_id, item_id, event_type or ts absent or empty
``bad_timestamp``       ts is not an ISO-8601 time
``unknown_event_type``  event_type not one of view, click, add_to_cart, purchase
``unknown_item``        item_id not in the catalog
``future_timestamp``    ts after the end of the day being ingested (plus one hour of clock skew)
``stale_timestamp``     ts more than ``max_event_age_days`` before the day
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from visrec.store.schemas import EVENT_TYPES

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from visrec.store.lake import Lake

RAW_FIELDS = ("user_id", "item_id", "event_type", "ts", "event_id", "price")
REQUIRED = ("user_id", "item_id", "event_type", "ts")
CLOCK_SKEW = timedelta(hours=1)


@dataclass
class EventCounts:
    """What happened to a day's raw lines."""

    raw: int
    valid: int
    quarantined: int
    duplicates: int
    forgotten: int = 0  # lines of users who asked to be forgotten: dropped, not stored anywhere

    @property
    def quarantine_share(self) -> float:
        return self.quarantined / self.raw if self.raw else 0.0


def _raw_schema():
    from pyspark.sql import types as T

    fields = [T.StructField(n, T.StringType()) for n in RAW_FIELDS if n != "price"]
    return T.StructType([*fields, T.StructField("price", T.StringType())])


def read_raw_events(spark: SparkSession, lake: Lake, jsonl_keys: list[str], csv_keys: list[str]) -> DataFrame:
    """Raw lines as rows: ``source``, ``record`` (the line), the contract's fields as strings, and
    ``malformed``. Blank lines are not records and are skipped.

    Spark reads a local lake's files itself; on S3 the executors read the lines (see
    :func:`visrec.store.spark.read_objects`) and parse them the same way."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    frames = []
    if jsonl_keys:
        text = _lines(spark, lake, jsonl_keys, header=False)
        text = text.where(F.trim("value") != "")
        # Parse every field as a string, so a number where a string belongs is not a malformed line.
        schema = T.StructType([T.StructField(n, T.StringType()) for n in RAW_FIELDS])
        parsed = F.from_json("value", schema)
        is_object = F.try_parse_json("value").isNotNull() & F.trim("value").startswith("{")
        frames.append(
            text.select(
                "source",
                F.col("value").alias("record"),
                *[parsed[n].alias(n) for n in RAW_FIELDS],
                (~is_object).alias("malformed"),
            )
        )
    if csv_keys:
        schema = T.StructType([*_raw_schema().fields, T.StructField("_corrupt", T.StringType())])
        options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"}
        if lake.is_local:
            csv = (
                spark.read.option("header", True)
                .options(**options)
                .schema(schema)
                .csv([lake.path(k) for k in csv_keys])
                .withColumn("source", F.input_file_name())
            )
        else:
            text = _lines(spark, lake, csv_keys, header=True).where(F.trim("value") != "")
            parsed = F.from_csv("value", schema.simpleString(), options)
            csv = text.select("source", parsed.alias("row")).select("source", "row.*")
        record = F.coalesce(
            F.col("_corrupt"), F.concat_ws(",", *[F.coalesce(F.col(n), F.lit("")) for n in RAW_FIELDS])
        )
        frames.append(
            csv.select(
                "source",
                record.alias("record"),
                *[F.col(n) for n in RAW_FIELDS],
                F.col("_corrupt").isNotNull().alias("malformed"),
            )
        )
    if not frames:
        schema = T.StructType(
            [T.StructField("source", T.StringType()), T.StructField("record", T.StringType())]
            + [T.StructField(n, T.StringType()) for n in RAW_FIELDS]
            + [T.StructField("malformed", T.BooleanType())]
        )
        return spark.createDataFrame([], schema)
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out


def _lines(spark: SparkSession, lake: Lake, keys: list[str], header: bool) -> DataFrame:
    """``source`` and ``value``: each line of the objects ``keys`` (without a CSV's header line)."""
    from pyspark.sql import functions as F

    if lake.is_local:
        return spark.read.text([lake.path(k) for k in keys]).withColumn("source", F.input_file_name())
    import pyarrow as pa

    from visrec.store.spark import read_objects

    schema = pa.schema([("value", pa.string()), ("source", pa.string())])

    def read(lake: Lake, key: str):
        # Line ends as Spark's text reader knows them (str.splitlines knows more).
        lines = re.split(r"\r\n|\n|\r", lake.get_bytes(key).decode("utf-8", errors="replace"))
        lines = lines[1 if header else 0 : -1 if lines[-1] == "" else None]
        yield pa.record_batch([pa.array(lines, pa.string()), pa.array([lake.url(key)] * len(lines))], schema)

    return read_objects(spark, lake, keys, schema, read)


def classify_events(raw: DataFrame, catalog: DataFrame, ds: str, max_age_days: int) -> DataFrame:
    """Add ``ts_parsed``, ``category`` and ``reason`` (null for a valid row) to raw event rows."""
    from pyspark.sql import functions as F

    day = date.fromisoformat(ds)
    latest = datetime.combine(day + timedelta(days=1), datetime.min.time()) + CLOCK_SKEW
    earliest = datetime.combine(day - timedelta(days=max_age_days), datetime.min.time())
    items = catalog.select(F.col("item_id").alias("_item"), F.col("category"))
    df = raw.withColumn("ts_parsed", F.try_to_timestamp(F.col("ts")))
    df = df.join(F.broadcast(items), df.item_id == items._item, "left").drop("_item")
    blank = [F.col(n).isNull() | (F.trim(F.col(n)) == "") for n in REQUIRED]
    any_blank = blank[0]
    for cond in blank[1:]:
        any_blank = any_blank | cond
    reason = (
        F.when(F.col("malformed"), "malformed")
        .when(any_blank, "missing_field")
        .when(F.col("ts_parsed").isNull(), "bad_timestamp")
        .when(~F.col("event_type").isin(*EVENT_TYPES), "unknown_event_type")
        .when(F.col("category").isNull(), "unknown_item")
        .when(F.col("ts_parsed") >= F.lit(latest), "future_timestamp")
        .when(F.col("ts_parsed") < F.lit(earliest), "stale_timestamp")
    )
    missing = F.concat_ws(", ", *[F.when(b, F.lit(n)) for n, b in zip(REQUIRED, blank, strict=True)])
    detail = (
        F.when(F.col("malformed"), "not a JSON object / CSV row")
        .when(any_blank, F.concat(F.lit("missing: "), missing))
        .when(F.col("ts_parsed").isNull(), F.concat(F.lit("unparseable ts "), F.col("ts")))
        .when(~F.col("event_type").isin(*EVENT_TYPES), F.concat(F.lit("event_type "), F.col("event_type")))
        .when(F.col("category").isNull(), F.concat(F.lit("item_id not in catalog: "), F.col("item_id")))
        .otherwise(
            F.concat(
                F.lit("ts "), F.col("ts"), F.lit(f" outside [{earliest:%Y-%m-%d}, {latest:%Y-%m-%dT%H:%M}]")
            )
        )
    )
    return df.withColumn("reason", reason).withColumn("detail", F.when(reason.isNotNull(), detail))


def split_events(classified: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Return ``(valid, quarantine)``; ``valid`` keeps one row per exact duplicate, with the
    ``events`` table's columns."""
    from pyspark.sql import functions as F

    quarantine = classified.where(F.col("reason").isNotNull()).select("source", "record", "reason", "detail")
    valid = (
        classified.where(F.col("reason").isNull())
        .dropDuplicates(list(RAW_FIELDS))
        .select(
            "user_id",
            "item_id",
            "event_type",
            F.col("ts_parsed").alias("ts"),
            "event_id",
            F.col("price").try_cast("double").alias("price"),
            "category",
        )
    )
    return valid, quarantine
