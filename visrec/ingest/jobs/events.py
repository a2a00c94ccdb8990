"""Event ingestion: raw logs -> clean events + quarantine, one SQL definition for every engine.

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

Reading the files is the engine's own business (:func:`register_raw_events`); what happens to a line
after that (:data:`CLASSIFY`, :data:`VALID`, :data:`QUARANTINE_ROWS`) is SQL that DuckDB runs as it is
and Spark after SQLGlot's translation. Every relation carries ``dt``, the day of the raw folder a line
came from, so one query ingests one day or a whole range of days.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa

from visrec.store.spark import read_objects
from visrec.vocabulary import EVENT_TYPES

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from visrec.store.engine import Engine
    from visrec.store.lake import Lake

RAW_FIELDS = ("user_id", "item_id", "event_type", "ts", "event_id", "price")
REQUIRED = ("user_id", "item_id", "event_type", "ts")
CLOCK_SKEW = timedelta(hours=1)
DT = re.compile(r"dt=(\d{4}-\d{2}-\d{2})/")

# One row per raw line: where it came from, the line, the contract's fields as strings, malformed.
# ``file`` is an index into RAW_FILES (one row per file, not per line).
RAW_LINES = pa.schema([("file", pa.int32()), ("value", pa.large_string())])
RAW_FILES = pa.schema([("file", pa.int32()), ("dt", pa.string()), ("source", pa.string())])
RAW_EVENTS = pa.schema(
    [("dt", pa.string()), ("source", pa.string()), ("record", pa.string())]
    + [(n, pa.string()) for n in RAW_FIELDS]
    + [("malformed", pa.bool_())]
)


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


def day_of(key: str) -> str:
    """The ``dt`` of a raw event object's key (``raw/events/dt=<day>/...``)."""
    return DT.search(key).group(1)


# --- reading: per engine ---------------------------------------------------------------------------
def register_raw_events(engine: Engine, lake: Lake, jsonl_keys: list[str], csv_keys: list[str]) -> None:
    """Make the raw lines of ``jsonl_keys`` and ``csv_keys`` readable as ``raw_events``
    (:data:`RAW_EVENTS`). Blank lines are not records and are skipped."""
    if engine.name == "spark":
        engine.register_frame("raw_events", read_raw_events_spark(engine.spark, lake, jsonl_keys, csv_keys))
        return
    lines = [_lines(lake, key, n) for n, key in enumerate(jsonl_keys)]
    engine.register("raw_lines", pa.concat_tables(lines) if lines else RAW_LINES.empty_table())
    files = {
        "file": list(range(len(jsonl_keys))),
        "dt": [day_of(k) for k in jsonl_keys],
        "source": [lake.url(k) for k in jsonl_keys],
    }
    engine.register("raw_files", pa.table(files, schema=RAW_FILES))
    csv = [_csv_rows(lake, key) for key in csv_keys]
    engine.register("raw_csv", pa.concat_tables(csv) if csv else RAW_EVENTS.empty_table())
    fields = ", ".join(RAW_FIELDS)
    paths = ", ".join(f"'$.{n}'" for n in RAW_FIELDS)
    parsed = ", ".join(f"j[{i + 1}] AS {n}" for i, n in enumerate(RAW_FIELDS))
    engine.view(
        "raw_events",
        f"""
        SELECT dt, source, value AS record, {parsed}, NOT ok AS malformed
        FROM (
            SELECT dt, source, value, ok,
                   CASE WHEN ok THEN json_extract_string(value, [{paths}]) END AS j
            FROM (
                SELECT dt, source, CAST(value AS VARCHAR) AS value,
                       CASE WHEN json_valid(value) THEN json_type(value) = 'OBJECT' ELSE false END AS ok
                FROM raw_lines JOIN raw_files ON raw_lines.file = raw_files.file
                -- Blank lines (spaces only, as Spark's trim) are skipped; trim runs on few lines.
                WHERE value <> '' AND (left(value, 1) <> ' ' OR trim(value) <> '')
            )
        )
        UNION ALL BY NAME
        SELECT dt, source, record, {fields}, malformed FROM raw_csv
        """,
    )


def _split_lines(data: bytes) -> pa.LargeStringArray:
    """The lines of ``data``, split where Spark's text reader splits (``\r\n``, ``\n`` or ``\r``).
    Bytes that are not UTF-8 become U+FFFD, as in Spark's reader. (numpy finds the line ends and the
    array is built from the buffers directly: a per-line Python or regex split costs seconds on a
    2-million-line log.)"""
    import numpy as np

    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if data and not data.endswith(b"\n"):
        data += b"\n"
    ends = np.flatnonzero(np.frombuffer(data, np.uint8) == ord("\n"))
    # Without the newlines, line i ends where its newline was, less the i newlines before it.
    offsets = np.concatenate([[0], ends - np.arange(len(ends))]).astype(np.int64)
    lines = pa.LargeStringArray.from_buffers(
        len(ends), pa.py_buffer(offsets), pa.py_buffer(data.replace(b"\n", b""))
    )
    try:
        lines.validate(full=True)  # UTF-8
    except pa.ArrowInvalid:
        return _split_lines(data.decode("utf-8", errors="replace").encode("utf-8"))
    return lines


def _lines(lake: Lake, key: str, file: int) -> pa.Table:
    import numpy as np

    lines = _split_lines(lake.get_bytes(key))
    return pa.table([pa.array(np.full(len(lines), file, np.int32)), lines], schema=RAW_LINES)


def _csv_rows(lake: Lake, key: str) -> pa.Table:
    """A CSV log's rows, as Spark reads them: one row per line after the header, the contract's
    fields by position, every field a string, empty = missing. A line that is not one row of exactly
    those fields (a quote left open, too few or too many fields) is ``malformed``, with its text."""
    import csv

    lines = _split_lines(lake.get_bytes(key)).to_pylist()[1:]
    rows: list[dict] = []
    for line in lines:
        if not line.strip(" "):
            continue
        try:
            fields = next(csv.reader([line], strict=True))
        except csv.Error:
            fields = []
        row = {"record": line, "malformed": len(fields) != len(RAW_FIELDS)}
        if not row["malformed"]:
            row |= {n: v or None for n, v in zip(RAW_FIELDS, fields, strict=True)}
            row["record"] = ",".join(fields)
        rows.append(row)
    table = pa.Table.from_pylist(rows, schema=RAW_EVENTS.remove(0).remove(0))
    n = table.num_rows
    return table.add_column(0, "source", pa.array([lake.url(key)] * n)).add_column(
        0, "dt", pa.array([day_of(key)] * n)
    )


def read_raw_events_spark(
    spark: SparkSession, lake: Lake, jsonl_keys: list[str], csv_keys: list[str]
) -> DataFrame:
    """:data:`RAW_EVENTS` as a Spark DataFrame. Spark reads a local lake's files itself; on S3 the
    executors read the lines (see :func:`visrec.store.spark.read_objects`) and parse them the same way."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    strings = T.StructType([T.StructField(n, T.StringType()) for n in RAW_FIELDS])
    frames = []
    if jsonl_keys:
        text = _spark_lines(spark, lake, jsonl_keys, header=False).where(F.trim("value") != "")
        # Parse every field as a string, so a number where a string belongs is not a malformed line.
        parsed = F.from_json("value", strings)
        is_object = F.try_parse_json("value").isNotNull() & F.ltrim("value").startswith("{")
        frames.append(
            text.select(
                "source",
                F.col("value").alias("record"),
                *[parsed[n].alias(n) for n in RAW_FIELDS],
                (~is_object).alias("malformed"),
            )
        )
    if csv_keys:
        schema = T.StructType([*strings.fields, T.StructField("_corrupt", T.StringType())])
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
            text = _spark_lines(spark, lake, csv_keys, header=True).where(F.trim("value") != "")
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
        from pyspark.sql.pandas.types import from_arrow_schema

        return spark.createDataFrame([], from_arrow_schema(RAW_EVENTS))
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out.withColumn("dt", F.regexp_extract("source", DT.pattern, 1))


def _spark_lines(spark: SparkSession, lake: Lake, keys: list[str], header: bool) -> DataFrame:
    """``source`` and ``value``: each line of the objects ``keys`` (without a CSV's header line)."""
    from pyspark.sql import functions as F

    if lake.is_local:
        return spark.read.text([lake.path(k) for k in keys]).withColumn("source", F.input_file_name())

    schema = pa.schema([("value", pa.string()), ("source", pa.string())])

    def read(lake: Lake, key: str):
        lines = _split_lines(lake.get_bytes(key)).cast(pa.string())
        lines = lines.slice(1) if header else lines
        yield pa.record_batch([lines, pa.array([lake.url(key)] * len(lines))], schema)

    return read_objects(spark, lake, keys, schema, read)


# --- what happens to a line: one SQL definition ----------------------------------------------------
def day_bounds(days: list[str], max_age_days: int) -> pa.Table:
    """Per ingested day: the earliest and latest accepted event time, and how a detail names them."""
    rows = []
    for ds in days:
        day = date.fromisoformat(ds)
        latest = datetime.combine(day + timedelta(days=1), datetime.min.time()) + CLOCK_SKEW
        earliest = datetime.combine(day - timedelta(days=max_age_days), datetime.min.time())
        rows.append((ds, earliest, latest, f" outside [{earliest:%Y-%m-%d}, {latest:%Y-%m-%dT%H:%M}]"))
    dt, earliest, latest, text = zip(*rows, strict=True) if rows else ([], [], [], [])
    ts = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "dt": pa.array(dt, pa.string()),
            "earliest": pa.array(earliest, ts),
            "latest": pa.array(latest, ts),
            "bounds_text": pa.array(text, pa.string()),
        }
    )


def _blank(name: str) -> str:
    return f"({name} IS NULL OR trim({name}) = '')"


_ANY_BLANK = " OR ".join(_blank(f"r.{n}") for n in REQUIRED)
_TYPES = ", ".join(f"'{t}'" for t in EVENT_TYPES)
_MISSING = ", ".join(f"CASE WHEN {_blank(n)} THEN '{n}' END" for n in REQUIRED)

# raw_events + catalog (item_id, category) + bounds (day_bounds) -> every line with its verdict.
CLASSIFY = f"""
SELECT dt, source, record, {", ".join(RAW_FIELDS)}, ts_parsed, category, reason,
       CASE
           WHEN reason IS NULL THEN NULL
           WHEN reason = 'malformed' THEN 'not a JSON object / CSV row'
           WHEN reason = 'missing_field' THEN 'missing: ' || concat_ws(', ', {_MISSING})
           WHEN reason = 'bad_timestamp' THEN 'unparseable ts ' || ts
           WHEN reason = 'unknown_event_type' THEN 'event_type ' || event_type
           WHEN reason = 'unknown_item' THEN 'item_id not in catalog: ' || item_id
           ELSE 'ts ' || ts || bounds_text
       END AS detail
FROM (
    SELECT r.*, c.category, b.bounds_text,
           CASE
               WHEN r.malformed THEN 'malformed'
               WHEN {_ANY_BLANK} THEN 'missing_field'
               WHEN r.ts_parsed IS NULL THEN 'bad_timestamp'
               WHEN r.event_type NOT IN ({_TYPES}) THEN 'unknown_event_type'
               WHEN c.category IS NULL THEN 'unknown_item'
               WHEN r.ts_parsed >= b.latest THEN 'future_timestamp'
               WHEN r.ts_parsed < b.earliest THEN 'stale_timestamp'
           END AS reason
    FROM (SELECT *, TRY_CAST(ts AS TIMESTAMPTZ) AS ts_parsed FROM raw_events) AS r
    JOIN bounds AS b ON r.dt = b.dt
    LEFT JOIN (SELECT item_id, category FROM catalog) AS c ON r.item_id = c.item_id
)
"""

QUARANTINE_ROWS = "SELECT dt, source, record, reason, detail FROM classified WHERE reason IS NOT NULL"

# One row per exact duplicate (the same raw fields) of a valid line, with the events table's columns.
VALID = f"""
SELECT dt, user_id, item_id, event_type, ts_parsed AS ts, event_id, TRY_CAST(price AS DOUBLE) AS price,
       category
FROM (
    SELECT dt, {", ".join(RAW_FIELDS)}, ANY_VALUE(ts_parsed) AS ts_parsed, ANY_VALUE(category) AS category
    FROM classified WHERE reason IS NULL
    GROUP BY dt, {", ".join(RAW_FIELDS)}
)
"""

# Lines and valid lines per day, before duplicates are dropped.
LINE_COUNTS = """
SELECT dt, COUNT(*) AS lines, SUM(CASE WHEN reason IS NULL THEN 1 ELSE 0 END) AS valid_lines
FROM classified GROUP BY dt
"""
