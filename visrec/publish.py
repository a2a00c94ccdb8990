"""Publishing: validate a date's output tables, switch what readers see in one step, refresh DuckDB.

The pipeline's tasks write their outputs into the lake as they go (each partition atomically, see
:mod:`visrec.store.lake`), but consumers do not read those working partitions. They read the *release*:
one small object, ``published/_RELEASE.json``, that lists for every published table the exact
Parquet files of every published date. :func:`publish` validates today's outputs, then replaces the
release with a single write (a rename on disk, one PUT on S3), then rebuilds the DuckDB warehouse's
views from it in one transaction. A run that fails or is killed before that write leaves the release,
and therefore every published table and view, exactly as it was. The lake never garbage-collects a
version the release points at.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from visrec.errors import VisrecError
from visrec.mlops.validation import TableValidator, ValidationFailed
from visrec.settings import Settings
from visrec.store.catalog import read_catalog
from visrec.store.lake import RELEASE_KEY, Lake, check_ds, read_published, read_release
from visrec.store.schemas import spec_for
from visrec.store.tables import load_events
from visrec.vocabulary import PUBLISHED_TABLES

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# The published contract (each table an Airflow Asset of the nightly DAG).
OUTPUT_TABLES: tuple[str, ...] = PUBLISHED_TABLES
# Ranked tables: (group columns, the item column) for the rank/score/self checks.
_RANKED = {
    "recommendations": (["user_id"], "item_id"),
    "similar_items": (["item_id"], "similar_item_id"),
    "photo_recommendations": (["user_id", "photo_id"], "item_id"),
}


# Fault-injection points, for tests: ``HOOKS["before_switch"]`` runs just before the release is
# replaced, ``HOOKS["before_warehouse"]`` just before the warehouse is refreshed. A test's child process
# sets one to announce it got there and wait, so that its SIGKILL lands exactly at that point.
HOOKS: dict[str, Callable[[], None]] = {}


def _reached(point: str) -> None:
    hook = HOOKS.get(point)
    if hook is not None:
        hook()


@dataclass
class PublishResult:
    """What a publish switched to: the dates and row counts per table, and the warehouse path."""

    ds: str
    rows: dict[str, int]
    warehouse: str
    published_at: str


def check_ranked(df: pd.DataFrame, group: list[str], item_column: str, k: int | None = None) -> list[str]:
    """Problems of a ranked table: ranks not exactly 1..n per group (n = ``k`` when given), scores that
    rise with rank, an item listed twice for one group. Returns readable problem strings."""
    problems = []
    if df.empty:
        return problems
    ordered = df.sort_values([*group, "rank"])
    sizes = ordered.groupby(group, sort=False)["rank"].agg(["count", "min", "max", "nunique"])
    bad_ranks = sizes[
        (sizes["min"] != 1) | (sizes["max"] != sizes["count"]) | (sizes["nunique"] != sizes["count"])
    ]
    if len(bad_ranks):
        problems.append(f"{len(bad_ranks)} groups whose ranks are not 1..n, e.g. {list(bad_ranks.index[:3])}")
    if k is not None:
        short = sizes[sizes["count"] != k]
        if len(short):
            problems.append(f"{len(short)} groups without exactly {k} rows, e.g. {list(short.index[:3])}")
    rising = ordered.groupby(group, sort=False)["score"].diff() > 1e-6
    if rising.any():
        example = ordered.loc[rising, [*group, "rank"]].head(3).to_dict("records")
        problems.append(f"{int(rising.sum())} rows whose score is above the previous rank's, e.g. {example}")
    repeated = ordered.duplicated([*group, item_column])
    if repeated.any():
        problems.append(f"{int(repeated.sum())} repeated {item_column} within a group")
    return problems


def validate_outputs(
    settings: Settings, lake: Lake, ds: str, tables: list[str], k: int | None = None
) -> dict[str, int]:
    """Validate ``ds``'s partitions of ``tables`` (Great Expectations suites plus the ranking, catalog
    and already-purchased checks); raise :class:`ValidationFailed` naming every problem."""

    catalog, _ = read_catalog(lake)
    catalog_ids = set(catalog.column("item_id").to_pylist())
    validator = TableValidator(ds, step="publish")
    rows: dict[str, int] = {}
    problems: list[str] = []
    try:
        for table in tables:
            df = lake.read_table(table, ds).to_pandas()
            rows[table] = len(df)
            try:
                validator.validate(table, df)
            except ValidationFailed as exc:
                problems.append(str(exc))
            found: list[str] = []
            if table in _RANKED:
                group, item_column = _RANKED[table]
                found += check_ranked(df, group, item_column, k if table == "recommendations" else None)
            for column in ("item_id", "similar_item_id"):
                if column in df and len(df):
                    unknown = set(df[column]) - catalog_ids
                    if unknown:
                        found.append(
                            f"{len(unknown)} {column}s not in the catalog, e.g. {sorted(unknown)[:3]}"
                        )
            if table == "similar_items" and (df["item_id"] == df["similar_item_id"]).any():
                found.append(
                    f"{int((df['item_id'] == df['similar_item_id']).sum())} items listed as similar to themselves"
                )
            if table == "recommendations" and len(df):
                found += _purchased_problems(lake, ds, df)
            problems += [f"table {table} for ds={ds}: {p}" for p in found]
    finally:
        validator.publish_docs(lake)
    if problems:
        raise ValidationFailed("; ".join(problems))
    return rows


def _purchased_problems(lake: Lake, ds: str, recs: pd.DataFrame) -> list[str]:

    events = load_events(lake, ds)
    bought = events.loc[events["event_type"] == "purchase", ["user_id", "item_id"]].drop_duplicates()
    clash = recs.merge(bought, on=["user_id", "item_id"])
    if len(clash):
        return [
            f"{len(clash)} recommendations of an item the user already bought, e.g. "
            f"{clash[['user_id', 'item_id']].head(3).to_dict('records')}"
        ]
    return []


def publish(settings: Settings, ds: str, *, lake: Lake | None = None, k: int | None = None) -> PublishResult:
    """Validate ``ds``'s output tables and make them the published release, then refresh the warehouse.

    Tables without a ``ds`` partition keep what they had (a model that did not run today). Nothing
    reader-visible changes unless every table passes."""
    lake = lake or Lake.from_settings(settings)
    check_ds(ds)
    present = [t for t in OUTPUT_TABLES if lake.manifest(t, ds) is not None]
    if "recommendations" not in present:
        raise VisrecError(f"nothing to publish: no recommendations for ds={ds}; run `visrec score --ds {ds}`")
    rows = validate_outputs(settings, lake, ds, present, k)
    release = read_release(lake)
    for table in present:
        spec = spec_for(table)
        manifest = lake.manifest(table, ds)
        release["tables"].setdefault(table, {})[ds] = [f"{spec.path}/ds={ds}/{f}" for f in manifest.files]
    release["ds"] = max(d for parts in release["tables"].values() for d in parts)
    release["published_at"] = datetime.now(UTC).isoformat()
    # The switch: one object replaced in one step.
    _reached("before_switch")
    lake.put_bytes(RELEASE_KEY, json.dumps(release, indent=1, sort_keys=True).encode())
    log.info("published ds=%s: %s", ds, rows)
    _reached("before_warehouse")
    refresh_warehouse(settings, lake, release)
    return PublishResult(ds, rows, str(settings.warehouse_path), release["published_at"])


def refresh_warehouse(settings: Settings, lake: Lake, release: dict | None = None) -> dict[str, int]:
    """Create or replace the DuckDB views over the release's Parquet files, in one transaction.

    On a local lake the views read the Parquet files in place. DuckDB reads S3 only through its
    httpfs extension, which it downloads at run time; so for an S3 lake the published rows are
    copied into DuckDB tables instead (same names, same columns, same single transaction)."""
    import duckdb
    import pyarrow as pa

    release = read_release(lake) if release is None else release
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(settings.warehouse_path))
    counts: dict[str, int] = {}
    try:
        existing = dict(
            con.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall()
        )
        con.execute("BEGIN TRANSACTION")
        for name in (*OUTPUT_TABLES, "recommendations_latest"):
            if name in existing:
                kind = "VIEW" if existing[name] == "VIEW" else "TABLE"
                con.execute(f'DROP {kind} "{name}"')
        for table in OUTPUT_TABLES:
            parts = release["tables"].get(table, {})
            keys = [key for ds in sorted(parts) for key in parts[ds]]
            if keys and lake.is_local:
                files = ", ".join("'" + lake.path(k).replace("'", "''") + "'" for k in keys)
                con.execute(
                    f'CREATE VIEW "{table}" AS SELECT * EXCLUDE (filename), '
                    f"regexp_extract(filename, 'ds=([0-9-]{{10}})', 1) AS ds "
                    f"FROM read_parquet([{files}], filename = true, hive_partitioning = false, union_by_name = true)"
                )
            else:
                arrow = pa.concat_tables(
                    [read_published(lake, release, table, ds) for ds in sorted(parts)]
                    or [read_published(lake, release, table, "")],  # none: the empty table, its columns
                    promote_options="default",  # a date published before a column was added: nulls
                )
                con.register("_incoming", arrow)
                con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM _incoming')
                con.unregister("_incoming")
            counts[table] = con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0]
        con.execute(
            "CREATE VIEW recommendations_latest AS SELECT * FROM recommendations "
            "WHERE ds = (SELECT max(ds) FROM recommendations)"
        )
        con.execute("COMMIT")
    except Exception:
        con.rollback()  # the views stay as the last commit left them
        raise
    finally:
        con.close()
    log.info("warehouse %s refreshed: %s", settings.warehouse_path, counts)
    return counts
