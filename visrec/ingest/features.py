"""Feature building: clean events -> interactions, user days, user profiles, item statistics of ``ds``.

Incremental by default: the latest earlier snapshot plus the event partitions after it (see
:mod:`visrec.ingest.jobs.features`); ``rebuild=True`` (``visrec ingest --rebuild``) computes the same
tables from the whole history, and is what the first day gets.
"""

from __future__ import annotations

import logging
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


def previous_snapshot(lake: Lake, ds: str, history: list[str]) -> str | None:
    """The latest date before ``ds`` with every snapshot table written after every event partition
    up to it (``history``: the event partitions up to ``ds``), or None: a day ingested late, before
    the snapshot's date, makes the snapshot stale and the features are rebuilt."""
    dates = set.intersection(*(set(lake.partitions(t)) for t in SNAPSHOTS))
    earlier = [d for d in dates if d < ds]
    if not earlier:
        return None
    since = max(earlier)
    built = min(lake.manifest(t, since).written_at for t in SNAPSHOTS)
    late = [d for d in history if d <= since and lake.manifest("events", d).written_at > built]
    if late:
        log.info("features %s: events of %s were written after the snapshot of %s: rebuilding", ds, late, since)
        return None
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
    engine = engine or open_engine(settings, "visrec-build-features")
    if catalog is None:
        catalog, _ = read_catalog(lake)
    history = [d for d in lake.partitions("events") if d <= ds]
    since = None if rebuild else previous_snapshot(lake, ds, history)
    fresh = [d for d in history if since is None or d > since]
    engine.register("catalog", catalog.select(["item_id", "category", "price"]))
    engine.register_lake("events", lake, "events", fresh)
    if since is not None:
        engine.register_lake("previous", lake, "interactions", [since])
        engine.register_lake("previous_days", lake, "user_days", [since])
    sql = job.interactions_sql(ds, settings.weights(), settings.decay_half_life_days, since)
    engine.materialize("interactions", sql)
    engine.materialize("user_days", job.user_days_sql(incremental=since is not None))
    tables = {
        "interactions": engine.query("SELECT * FROM interactions"),
        "user_days": engine.query("SELECT * FROM user_days"),
        "user_profiles": job.with_top_categories(
            engine.query(job.user_profiles_sql(ds, job.price_terciles(catalog))),
            engine.query(job.TOP_CATEGORIES_SQL),
        ),
    }
    engine.register_lake("events", lake, "events", job.stats_days(ds, history))
    tables["item_stats"] = engine.query(job.item_stats_sql(ds))
    engine.drop("catalog", "events", "previous", "previous_days", "interactions", "user_days")
    rows = {}
    for name, table in tables.items():
        if validator is not None:
            validator.validate(name, table.to_pandas())
        lake.write_table(name, ds, table)
        rows[name] = table.num_rows
    how = f"from {since} + {len(fresh)} days of events" if since else f"from {len(fresh)} days of events"
    log.info("features %s %s (%s): %s", ds, how, engine.name, rows)
    return rows
