"""Where the data jobs run: DuckDB inside this process (one machine) or Spark (a cluster).

The jobs (:mod:`visrec.ingest.jobs`) are SQL written once, in DuckDB's dialect. The DuckDB engine runs
that text as it is; the Spark engine runs it after SQLGlot has transpiled it to Spark SQL. Both take
their inputs as named relations (Arrow tables, lake partitions, or a query over earlier relations) and
return results as Arrow tables, so the code around a job does not know which engine ran it.

Measured on the 2-million-line log of ``python bench/run.py ingest`` (2 cores): DuckDB is many times
faster than Spark ``local[2]`` on one machine (no JVM, no task scheduling), so it is the default there;
Spark is the engine as soon as ``VISREC_SPARK_MASTER`` names a cluster, or when ``VISREC_ENGINE=spark``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import pyarrow as pa

from visrec.settings import Settings
from visrec.store.lake import Lake
from visrec.store.schemas import TableSpec, spec_for
from visrec.store.spark import get_spark, read_table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


class Engine:
    """Named relations in, Arrow tables out. ``name`` is ``"duckdb"`` or ``"spark"``."""

    name: str

    def register(self, name: str, data: pa.Table) -> None:
        """Make an Arrow table readable as ``name``."""
        raise NotImplementedError

    def register_lake(self, name: str, lake: Lake, table: str | TableSpec, dss: list[str]) -> None:
        """Make the published partitions ``dss`` of a lake table readable as ``name`` (with ``ds``)."""
        raise NotImplementedError

    def view(self, name: str, sql: str) -> None:
        """Name a query (DuckDB dialect) so later queries can read it; computed when read."""
        raise NotImplementedError

    def materialize(self, name: str, sql: str) -> None:
        """Compute a query (DuckDB dialect) once and keep its result as ``name``, for several readers."""
        raise NotImplementedError

    def query(self, sql: str) -> pa.Table:
        """Run a query (DuckDB dialect) and return its result."""
        raise NotImplementedError

    def drop(self, *names: str) -> None:
        """Forget relations registered or named earlier (idempotent)."""
        raise NotImplementedError


class DuckDBEngine(Engine):
    """An in-memory DuckDB database in this process, on ``threads`` threads (default: every core).
    Without its ICU extension (never downloaded here) DuckDB keeps every time in UTC, as Spark's
    session does here."""

    name = "duckdb"

    def __init__(self, threads: int | None = None):
        import duckdb

        self.con = duckdb.connect()
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self._arrow: dict[str, pa.Table] = {}  # keeps registered tables alive while DuckDB reads them
        self._kinds: dict[str, str] = {}  # name -> "arrow" | "VIEW" | "TABLE"

    def register(self, name: str, data: pa.Table) -> None:
        self.drop(name)
        self._arrow[name], self._kinds[name] = data, "arrow"
        self.con.register(name, data)

    def register_lake(self, name: str, lake: Lake, table: str | TableSpec, dss: list[str]) -> None:
        spec = table if isinstance(table, TableSpec) else spec_for(table)
        # Parquet gives back exactly the table's schema; timestamps stay UTC.
        self.register(name, lake.read_table(spec, dss))

    def view(self, name: str, sql: str) -> None:
        self.drop(name)
        self.con.execute(f"CREATE VIEW {name} AS {sql}")
        self._kinds[name] = "VIEW"

    def materialize(self, name: str, sql: str) -> None:
        self.drop(name)
        self.con.execute(f"CREATE TEMP TABLE {name} AS {sql}")
        self._kinds[name] = "TABLE"

    def query(self, sql: str) -> pa.Table:
        return self.con.sql(sql).to_arrow_table()

    def drop(self, *names: str) -> None:
        for name in names:
            kind = self._kinds.pop(name, None)
            if kind == "arrow":
                self.con.unregister(name)
                del self._arrow[name]
            elif kind is not None:
                self.con.execute(f"DROP {kind} {name}")


# DuckDB functions SQLGlot does not translate, and their Spark names.
SPARK_FUNCTIONS = {"EPOCH_US": "UNIX_MICROS"}


@functools.cache
def to_spark_sql(sql: str) -> str:
    """A job's SQL (DuckDB dialect) as Spark SQL."""
    import sqlglot
    from sqlglot import exp

    def rename(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Anonymous) and node.name.upper() in SPARK_FUNCTIONS:
            return exp.Anonymous(this=SPARK_FUNCTIONS[node.name.upper()], expressions=node.expressions)
        return node

    return sqlglot.parse_one(sql, read="duckdb").transform(rename).sql(dialect="spark")


class SparkEngine(Engine):
    """Temporary views of a SparkSession; queries transpiled to Spark SQL."""

    name = "spark"

    def __init__(self, spark: SparkSession):
        self.spark = spark

    def register(self, name: str, data: pa.Table) -> None:
        self.spark.createDataFrame(data).createOrReplaceTempView(name)

    def register_frame(self, name: str, frame: DataFrame) -> None:
        """Make a Spark DataFrame readable as ``name`` (the Spark-only readers produce these)."""
        frame.createOrReplaceTempView(name)

    def register_lake(self, name: str, lake: Lake, table: str | TableSpec, dss: list[str]) -> None:

        read_table(self.spark, lake, table, dss).createOrReplaceTempView(name)

    def view(self, name: str, sql: str) -> None:
        self.spark.sql(to_spark_sql(sql)).createOrReplaceTempView(name)

    def materialize(self, name: str, sql: str) -> None:
        self.spark.sql(to_spark_sql(sql)).cache().createOrReplaceTempView(name)

    def query(self, sql: str) -> pa.Table:
        return self.spark.sql(to_spark_sql(sql)).toArrow()

    def drop(self, *names: str) -> None:
        for name in names:
            if self.spark.catalog.tableExists(name):
                self.spark.catalog.uncacheTable(name)
            self.spark.catalog.dropTempView(name)


def engine_name(settings: Settings) -> str:
    """``duckdb`` or ``spark``: ``VISREC_ENGINE``, or for ``auto`` Spark exactly when the Spark master
    is not a local one."""
    if settings.engine != "auto":
        return settings.engine
    return "duckdb" if settings.spark_master.startswith("local") else "spark"


def open_engine(settings: Settings, app: str = "visrec") -> Engine:
    """The engine the settings ask for (see :func:`engine_name`)."""
    name = engine_name(settings)
    if name == "spark":
        return SparkEngine(get_spark(settings, app))
    return DuckDBEngine()
