"""Feature building (Spark): clean events up to ``ds`` -> interactions, user profiles, item statistics."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pyarrow as pa

from visrec.ingest.events import catalog_frame
from visrec.settings import Settings
from visrec.store.lake import Lake

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from visrec.mlops.validation import TableValidator


def build_features(
    settings: Settings,
    lake: Lake,
    ds: str,
    spark: SparkSession,
    validator: TableValidator | None = None,
    catalog: pa.Table | None = None,
) -> dict[str, int]:
    """Clean events up to ``ds`` -> ``interactions``, ``user_profiles`` and ``item_stats`` of ``ds``."""
    from visrec.ingest.jobs import features
    from visrec.store.spark import read_table, to_arrow

    history = [d for d in lake.partitions("events") if d <= ds]
    events = read_table(spark, lake, "events", history).cache()
    catalog_df = catalog_frame(spark, lake, catalog).cache()
    outputs = {
        "interactions": features.interactions(events, ds, settings.weights(), settings.decay_half_life_days),
        "user_profiles": features.user_profiles(events, catalog_df, ds),
        "item_stats": features.item_stats(events, catalog_df, ds),
    }
    rows = {}
    for name, df in outputs.items():
        table = to_arrow(df)
        if validator is not None:
            validator.validate(name, table.to_pandas())
        lake.write_table(name, ds, table)
        rows[name] = table.num_rows
    events.unpersist()
    catalog_df.unpersist()
    log.info("features %s from %d days of events: %s", ds, len(history), rows)
    return rows
