"""SparkSession and the bridge between Spark DataFrames and lake tables.

Spark computes; the lake (pyarrow) stores. Reading goes through the partitions' manifests, so Spark
only ever sees published versions. A lake on S3 is staged to a local folder first, because the pyspark
wheel has no hadoop-aws jars (a cluster with them can read ``s3a://`` directly; see README).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from visrec.settings import Settings
from visrec.store.lake import Lake
from visrec.store.schemas import TableSpec, spec_for

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def get_spark(settings: Settings, app: str = "visrec") -> SparkSession:
    """The (shared) SparkSession: ``settings.spark_master`` (``local[2]`` by default), UTC, no UI."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
    from pyspark.sql import SparkSession

    checkpoints = settings.home / "spark-checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    spark = (
        SparkSession.builder.master(settings.spark_master)
        .appName(app)
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
    spark.sparkContext.setCheckpointDir(str(checkpoints))
    return spark


def local_paths(lake: Lake, keys: list[str], staging: Path | None = None) -> list[str]:
    """Paths Spark can read for ``keys``: the files themselves on a local lake, copies otherwise."""
    if lake.is_local:
        return [lake.path(k) for k in keys]
    staging = staging or Path(tempfile.mkdtemp(prefix="visrec-stage-"))
    out = []
    for key in keys:
        target = staging / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(lake.get_bytes(key))
        out.append(str(target))
    return out


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
    # One read for all partitions (a union of hundreds of reads is slow to plan); ds from the path.
    return spark.read.parquet(*local_paths(lake, keys)).withColumn(
        "ds", F.regexp_extract(F.input_file_name(), r"ds=(\d{4}-\d{2}-\d{2})/", 1)
    )


def to_arrow(df: DataFrame) -> pa.Table:
    """Collect a DataFrame as an Arrow table (through Arrow, no pandas round trip)."""
    return df.toArrow()
