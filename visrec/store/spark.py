"""SparkSession and the bridge between Spark DataFrames and lake tables.

Spark computes; the lake (pyarrow) stores. Reading goes through the partitions' manifests, so Spark
only ever sees published versions. Spark reads a local (or shared) lake folder itself; a lake on S3 is
read by the executors through pyarrow (:func:`read_objects`), because the pyspark wheel has no
hadoop-aws jars.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from visrec.settings import Settings
from visrec.store.lake import Lake
from visrec.store.schemas import TableSpec, spec_for

# What executors on other hosts need to read an S3 lake: the driver's credentials.
EXECUTOR_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION")

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def get_spark(settings: Settings, app: str = "visrec") -> SparkSession:
    """The (shared) SparkSession, UTC, no UI: on ``settings.spark_master`` (``local[2]`` by default),
    unless ``spark-submit --master`` already chose one.

    On a cluster (``spark://...``) a job takes at most ``VISREC_SPARK_CORES`` cores, so one job does
    not hold every core, and its executors get the driver's S3 credentials (they read the lake
    themselves)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    master = SparkConf().get("spark.master", None)  # set by spark-submit; a DAG task's driver has none
    if master is None:
        master = settings.spark_master
        builder = builder.master(master)
    if not master.startswith("local"):
        builder = builder.config("spark.cores.max", str(settings.spark_cores)).config(
            "spark.executor.memory", settings.spark_executor_memory
        )
        for name in EXECUTOR_ENV:
            if os.environ.get(name):
                builder = builder.config(f"spark.executorEnv.{name}", os.environ[name])
    spark = (
        builder.appName(app)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.driver.memory", "4g")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.warehouse.dir", str(settings.home / "spark-warehouse"))
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={settings.home}")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    if master.startswith("local"):
        # For Spark ALS (a bench baseline, run locally). Executors on other hosts cannot see this folder,
        # and nothing in the nightly run checkpoints, so a cluster gets none.
        checkpoints = settings.home / "spark-checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)
        spark.sparkContext.setCheckpointDir(str(checkpoints))
    return spark


def read_objects(
    spark: SparkSession,
    lake: Lake,
    keys: list[str],
    schema: pa.Schema,
    read: Callable[[Lake, str], Iterator[pa.RecordBatch]],
) -> DataFrame:
    """A DataFrame of the record batches ``read(lake, key)`` yields for each object, read inside the
    executors through pyarrow: nothing passes through the driver's disk, so executors on any host can
    read an S3 lake (the pyspark wheel has no ``hadoop-aws`` jars for ``s3a://``)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    uri, endpoint, region = lake.uri, lake.s3_endpoint, lake.s3_region

    def batches(key_batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        here = Lake(uri, s3_endpoint=endpoint, s3_region=region)
        for key_batch in key_batches:
            for key in key_batch.column(0).to_pylist():
                yield from read(here, key)

    tasks = max(1, min(len(keys), spark.sparkContext.defaultParallelism))
    frame = spark.createDataFrame([(k,) for k in keys], "key string").repartition(tasks)
    return frame.mapInArrow(batches, from_arrow_schema(schema))


def _parquet_with_ds(schema: pa.Schema) -> Callable[[Lake, str], Iterator[pa.RecordBatch]]:
    def read(lake: Lake, key: str) -> Iterator[pa.RecordBatch]:
        ds = re.search(r"ds=(\d{4}-\d{2}-\d{2})/", key).group(1)
        table = pq.read_table(lake.path(key), filesystem=lake.fs).select(schema.names[:-1])
        table = table.cast(pa.schema(list(schema)[:-1])).append_column("ds", pa.array([ds] * len(table)))
        yield from table.to_batches()

    return read


def read_table(spark: SparkSession, lake: Lake, table: str | TableSpec, dss: list[str]) -> DataFrame:
    """A DataFrame over the published partitions ``dss`` of a lake table, with a ``ds`` column."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    spec = table if isinstance(table, TableSpec) else spec_for(table)
    keys = []
    for ds in dss:
        manifest = lake.manifest(spec, ds)
        if manifest is not None and manifest.rows > 0:
            keys += [f"{spec.path}/ds={ds}/{f}" for f in manifest.files]
    if not keys:
        empty = spec.schema.append(pa.field("ds", pa.string()))
        return spark.createDataFrame([], schema=from_arrow_schema(empty))
    if not lake.is_local:
        schema = spec.schema.append(pa.field("ds", pa.string()))
        return read_objects(spark, lake, keys, schema, _parquet_with_ds(schema))
    # One read for all partitions (a union of hundreds of reads is slow to plan); ds from the path.
    return spark.read.parquet(*[lake.path(k) for k in keys]).withColumn(
        "ds", F.regexp_extract(F.input_file_name(), r"ds=(\d{4}-\d{2}-\d{2})/", 1)
    )


def to_arrow(df: DataFrame) -> pa.Table:
    """Collect a DataFrame as an Arrow table (through Arrow, no pandas round trip)."""
    return df.toArrow()
