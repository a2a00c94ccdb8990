"""Feature building: clean events -> interactions, user days, user profiles, item statistics of ``ds``.

Incremental by default: the latest earlier snapshot plus the event partitions after it (see
:mod:`visrec.ingest.jobs.features`); ``rebuild=True`` (``visrec ingest --rebuild``) computes the same
tables from the whole history, and is what the first day gets.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa

from visrec.ingest.jobs import features as job
from visrec.settings import Settings
from visrec.store.catalog import read_catalog
from visrec.store.engine import Engine, open_engine
from visrec.store.lake import Lake

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from visrec.mlops.validation import TableValidator

SNAPSHOTS = ("interactions", "user_days")  # what the next night starts from


def previous_snapshot(lake: Lake, ds: str) -> str | None:
    """The latest date before ``ds`` with every snapshot table written after every event partition
    up to it, or None: a day ingested late, before the snapshot's date, makes the snapshot stale and
    the features are rebuilt."""
    snapshots = [lake.committed_at(t) for t in SNAPSHOTS]
    earlier = [d for d in set.intersection(*(set(c) for c in snapshots)) if d < ds]
    if not earlier:
        return None
    since = max(earlier)
    late = late_events(lake, since, [c[since] for c in snapshots])
    if late:
        log.info(
            "features %s: events of %s were written after the snapshot of %s: rebuilding", ds, late, since
        )
        return None
    return since


def late_events(
    lake: Lake, since: str, committed: list[datetime | None], tables: tuple[str, ...] = SNAPSHOTS
) -> list[str]:
    """The event partitions up to ``since`` written after the ``tables`` of ``since`` (``committed``:
    when each of those was, as :meth:`Lake.committed_at` lists it): days ingested late, which make
    those tables stale."""
    built = min(lake.manifest(t, since).written_at for t in tables)
    # One listing gives every event partition's commit time by the storage's clock (to the second on
    # S3): only those committed around the snapshot or after it need their manifest's exact time, so
    # a night reads no manifest per day of history.
    # (A storage that lists no times gets every manifest read, as before.)
    listed = None if None in committed else min(committed) - timedelta(seconds=2)
    events = lake.committed_at("events")
    maybe = [d for d, t in events.items() if d <= since and (listed is None or t is None or t >= listed)]
    return sorted(d for d in maybe if lake.manifest("events", d).written_at > built)


def interactions_current(lake: Lake, ds: str) -> bool:
    """Whether the ``interactions`` of ``ds`` exist and hold every event partition up to ``ds`` as it
    is now (none ingested again since): then they are the events' pairs, one row each."""
    committed = lake.committed_at("interactions").get(ds, False)
    return committed is not False and not late_events(lake, ds, [committed], ("interactions",))


def feature_tables(
    settings: Settings,
    lake: Lake,
    engine: Engine,
    ds: str,
    history: list[str],
    since: str | None,
    terciles: tuple[float, float] | None,
) -> dict[str, pa.Table]:
    """The feature tables of ``ds`` from the event partitions ``history`` (those up to ``ds``): from
    the whole history when ``since`` is None, otherwise from the snapshot of ``since`` (registered in
    ``engine`` as ``previous`` and ``previous_days``) and the partitions after it. The catalog is
    registered as ``catalog``; ``terciles``: its price terciles (:func:`job.price_terciles`)."""
    engine.register_lake("events", lake, "events", [d for d in history if since is None or d > since])
    sql = job.interactions_sql(ds, settings.weights(), settings.decay_half_life_days, since)
    engine.materialize("interactions", sql)
    engine.materialize("user_days", job.user_days_sql(incremental=since is not None))
    tables = {
        "interactions": engine.query("SELECT * FROM interactions"),
        "user_days": engine.query("SELECT * FROM user_days"),
        "user_profiles": job.with_top_categories(
            engine.query(job.user_profiles_sql(ds, terciles)),
            engine.query(job.TOP_CATEGORIES_SQL),
        ),
    }
    engine.register_lake("events", lake, "events", job.stats_days(ds, history))
    tables["item_stats"] = engine.query(job.item_stats_sql(ds))
    engine.drop("events", "interactions", "user_days")
    return tables


def _start(lake: Lake, engine: Engine, ds: str, rebuild: bool) -> str | None:
    """Register the snapshot the features of ``ds`` start from; return its date (None: rebuild)."""
    since = None if rebuild else previous_snapshot(lake, ds)
    if since is not None:
        engine.register_lake("previous", lake, "interactions", [since])
        engine.register_lake("previous_days", lake, "user_days", [since])
    return since


def build_features(
    settings: Settings,
    lake: Lake,
    ds: str,
    engine: Engine | None = None,
    validator: TableValidator | None = None,
    catalog: pa.Table | None = None,
    rebuild: bool = False,
) -> dict[str, int]:
    """Clean events up to ``ds`` -> ``interactions``, ``user_days``, ``user_profiles`` and
    ``item_stats`` of ``ds``; returns each table's row count."""
    return build_feature_days(settings, lake, [ds], engine, validator, catalog, rebuild)[ds]


def build_feature_days(
    settings: Settings,
    lake: Lake,
    days: list[str],
    engine: Engine | None = None,
    validator: TableValidator | None = None,
    catalog: pa.Table | None = None,
    rebuild: bool = False,
    chunk_rows: int = 2_000_000,
) -> dict[str, dict[str, int]]:
    """The feature tables of each of ``days`` (ascending), each day's from the day before it. Days
    are validated together, about ``chunk_rows`` rows at a time (one Great Expectations run per table,
    keys unique within each day), and then written: a long backfill does not pay a validation run
    per day (each costs 0.4 s and more), and memory holds one chunk."""
    engine = engine or open_engine(settings, "visrec-build-features")
    if catalog is None:
        catalog, _ = read_catalog(lake)
    days = sorted(days)
    every = lake.partitions("events")
    since = _start(lake, engine, days[0], rebuild)
    # Once for all days: the catalog and its price terciles.
    engine.register("catalog", catalog.select(["item_id", "category", "price"]))
    terciles = job.price_terciles(catalog)
    rows: dict[str, dict[str, int]] = {}
    todo = list(days)
    while todo:
        chunk: dict[str, dict[str, pa.Table]] = {}
        held = 0
        while todo and held < chunk_rows:
            ds = todo.pop(0)
            history = [d for d in every if d <= ds]
            chunk[ds] = feature_tables(settings, lake, engine, ds, history, since, terciles)
            held += sum(t.num_rows for t in chunk[ds].values())
            how = f"from {since} + the events after it" if since else f"from {len(history)} days of events"
            log.info("features %s %s (%s)", ds, how, engine.name)
            # The next day starts from this one's snapshot, kept in the engine.
            engine.register("previous", chunk[ds]["interactions"])
            engine.register("previous_days", chunk[ds]["user_days"])
            since = ds
        if validator is not None:
            for name in FEATURE_TABLES:
                if len(chunk) == 1:
                    validator.validate(name, next(iter(chunk.values()))[name].to_pandas())
                else:
                    validator.validate(
                        name, _with_ds({ds: t[name] for ds, t in chunk.items()}), partitioned=True
                    )
        for ds, tables in chunk.items():
            for name, table in tables.items():
                lake.write_table(name, ds, table)
            rows[ds] = {name: table.num_rows for name, table in tables.items()}
            log.info("features %s: %s", ds, rows[ds])
    engine.drop("catalog", "previous", "previous_days")
    return rows


FEATURE_TABLES = ("interactions", "user_days", "user_profiles", "item_stats")


def _with_ds(tables: dict[str, pa.Table]):
    """One pandas frame of several days' tables, with their ``ds``."""
    return pa.concat_tables(
        [t.append_column("ds", pa.array([ds] * t.num_rows, pa.string())) for ds, t in tables.items()]
    ).to_pandas()
