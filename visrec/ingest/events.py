"""Event ingestion (Spark): a day's raw logs -> ``events`` and ``quarantine/events``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pyarrow as pa

from visrec.ingest.jobs.events import EventCounts, classify_events, read_raw_events, split_events
from visrec.ingest.quarantine import _check_budget, _reasons
from visrec.settings import Settings
from visrec.store.catalog import read_catalog
from visrec.store.forgotten import drop_forgotten, drop_mentions, forgotten_users
from visrec.store.lake import Lake, check_ds
from visrec.store.schemas import QUARANTINE, quarantine_spec

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from visrec.mlops.validation import TableValidator


EVENT_EXTENSIONS = (".jsonl", ".json", ".csv")


def catalog_frame(spark: SparkSession, lake: Lake, catalog: pa.Table | None = None) -> DataFrame:
    """The catalog (read from the lake unless the caller already has it) as a Spark DataFrame."""
    if catalog is None:
        catalog, _ = read_catalog(lake)
    return spark.createDataFrame(catalog.select(["item_id", "category", "price"]).to_pandas())


def ingest_events(
    settings: Settings,
    lake: Lake,
    ds: str,
    spark: SparkSession,
    validator: TableValidator | None = None,
    catalog: pa.Table | None = None,
) -> tuple[EventCounts, dict[str, int]]:
    """Raw event logs of ``ds`` -> ``events`` and ``quarantine/events`` partitions of ``ds``."""
    from visrec.store.spark import to_arrow

    check_ds(ds)
    keys = lake.list_keys(f"raw/events/dt={ds}")
    unsupported = [k for k in keys if not k.endswith(EVENT_EXTENSIONS)]
    jsonl = [k for k in keys if k.endswith((".jsonl", ".json"))]
    csv = [k for k in keys if k.endswith(".csv")]
    raw = read_raw_events(spark, lake, jsonl, csv)
    classified = classify_events(
        raw, catalog_frame(spark, lake, catalog), ds, settings.max_event_age_days
    ).cache()
    valid_df, quarantine_df = split_events(classified)
    valid = to_arrow(valid_df)
    quarantine = to_arrow(quarantine_df)
    # Users who asked to be forgotten: their lines are dropped here, before anything is stored.

    forgotten = forgotten_users(lake)
    valid, forgotten_valid = drop_forgotten(valid, forgotten)
    quarantine, forgotten_quarantined = drop_mentions(quarantine, forgotten)
    if unsupported:
        extra = pa.table(
            {
                "source": unsupported,
                "record": unsupported,
                "reason": ["unsupported_file"] * len(unsupported),
                "detail": [f"not one of {EVENT_EXTENSIONS}"] * len(unsupported),
            },
            schema=QUARANTINE,
        )
        quarantine = pa.concat_tables([quarantine.cast(QUARANTINE), extra])
    n_raw = classified.count()
    n_valid_rows = classified.where("reason IS NULL").count()
    classified.unpersist()
    counts = EventCounts(
        raw=n_raw + len(unsupported),
        valid=valid.num_rows,
        quarantined=quarantine.num_rows,
        duplicates=n_valid_rows - valid.num_rows - forgotten_valid,
        forgotten=forgotten_valid + forgotten_quarantined,
    )
    reasons = _reasons(quarantine)
    lake.write_table(quarantine_spec("events"), ds, quarantine)
    _check_budget(f"events of {ds}", counts.quarantined, counts.raw, settings.error_budget, reasons)
    if validator is not None:
        validator.validate("events", valid.to_pandas())
    lake.write_table("events", ds, valid)
    log.info(
        "events %s: %d raw, %d valid, %d quarantined %s, %d duplicates dropped",
        ds,
        counts.raw,
        counts.valid,
        counts.quarantined,
        reasons,
        counts.duplicates,
    )
    return counts, reasons
