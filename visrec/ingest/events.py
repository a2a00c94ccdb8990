"""Event ingestion: a day's (or a range of days') raw logs -> ``events`` and ``quarantine/events``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pyarrow as pa

from visrec.ingest.jobs import events as job
from visrec.ingest.jobs.events import EventCounts
from visrec.ingest.quarantine import _check_budget, _reasons
from visrec.settings import Settings
from visrec.store.catalog import read_catalog
from visrec.store.engine import Engine, open_engine
from visrec.store.forgotten import drop_forgotten, drop_mentions, forgotten_users
from visrec.store.lake import Lake, check_ds
from visrec.store.schemas import QUARANTINE, quarantine_spec

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from visrec.mlops.validation import TableValidator


EVENT_EXTENSIONS = (".jsonl", ".json", ".csv")


def ingest_events(
    settings: Settings,
    lake: Lake,
    ds: str,
    engine: Engine | None = None,
    validator: TableValidator | None = None,
    catalog: pa.Table | None = None,
) -> tuple[EventCounts, dict[str, int]]:
    """Raw event logs of ``ds`` -> ``events`` and ``quarantine/events`` partitions of ``ds``."""
    return ingest_event_days(settings, lake, [ds], engine, validator, catalog)[ds]


def ingest_event_days(
    settings: Settings,
    lake: Lake,
    days: list[str],
    engine: Engine | None = None,
    validator: TableValidator | None = None,
    catalog: pa.Table | None = None,
) -> dict[str, tuple[EventCounts, dict[str, int]]]:
    """Raw event logs of each of ``days`` -> its ``events`` and ``quarantine/events`` partitions, every
    line parsed in one job and the clean events validated in one run. Every day's quarantine is written
    first; a day over the error budget stops the job there, before any day's events are written."""
    for ds in days:
        check_ds(ds)
    engine = engine or open_engine(settings, "visrec-ingest-events")
    if catalog is None:
        catalog, _ = read_catalog(lake)
    keys = {ds: lake.list_keys(f"raw/events/dt={ds}") for ds in days}
    every = [k for ks in keys.values() for k in ks]
    job.register_raw_events(
        engine,
        lake,
        [k for k in every if k.endswith((".jsonl", ".json"))],
        [k for k in every if k.endswith(".csv")],
    )
    engine.register("catalog", catalog.select(["item_id", "category", "price"]))
    engine.register("bounds", job.day_bounds(days, settings.max_event_age_days))
    engine.materialize("classified", job.CLASSIFY)
    valid_all = engine.query(job.VALID)
    quarantine_all = engine.query(job.QUARANTINE_ROWS)
    lines = {r["dt"]: r for r in engine.query(job.LINE_COUNTS).to_pylist()}
    engine.drop("classified", "raw_events", "raw_lines", "raw_files", "raw_csv", "bounds")
    # Users who asked to be forgotten: their lines are dropped here, before anything is stored.
    forgotten = forgotten_users(lake)
    out, clean = {}, {}
    valid_by_day, quarantine_by_day = _by_day(valid_all, days), _by_day(quarantine_all, days)
    for ds in days:
        valid, quarantine = valid_by_day[ds], quarantine_by_day[ds]
        valid, forgotten_valid = drop_forgotten(valid, forgotten)
        quarantine, forgotten_quarantined = drop_mentions(quarantine, forgotten)
        unsupported = [k for k in keys[ds] if not k.endswith(EVENT_EXTENSIONS)]
        if unsupported:
            extra = pa.table(
                {
                    "source": [lake.url(k) for k in unsupported],
                    "record": unsupported,
                    "reason": ["unsupported_file"] * len(unsupported),
                    "detail": [f"not one of {EVENT_EXTENSIONS}"] * len(unsupported),
                },
                schema=QUARANTINE,
            )
            quarantine = pa.concat_tables([quarantine.cast(QUARANTINE), extra])
        seen = lines.get(ds, {"lines": 0, "valid_lines": 0})
        counts = EventCounts(
            raw=int(seen["lines"]) + len(unsupported),
            valid=valid.num_rows,
            quarantined=quarantine.num_rows,
            duplicates=int(seen["valid_lines"]) - valid.num_rows - forgotten_valid,
            forgotten=forgotten_valid + forgotten_quarantined,
        )
        reasons = _reasons(quarantine)
        lake.write_table(quarantine_spec("events"), ds, quarantine)
        _check_budget(f"events of {ds}", counts.quarantined, counts.raw, settings.error_budget, reasons)
        out[ds], clean[ds] = (counts, reasons), valid
    if validator is not None:
        validator.validate("events", pa.concat_tables(clean.values()).to_pandas())
    for ds, valid in clean.items():
        lake.write_table("events", ds, valid)
        counts, reasons = out[ds]
        log.info(
            "events %s: %d raw, %d valid, %d quarantined %s, %d duplicates dropped (%s)",
            ds,
            counts.raw,
            counts.valid,
            counts.quarantined,
            reasons,
            counts.duplicates,
            engine.name,
        )
    return out


def _by_day(table: pa.Table, days: list[str]) -> dict[str, pa.Table]:
    """Each day's rows (by ``dt``), without the ``dt`` column: one sort, then slices."""
    import numpy as np

    if len(days) == 1:
        return {days[0]: table.drop_columns(["dt"])}
    table = table.sort_by("dt")
    dts = table.column("dt").to_numpy(zero_copy_only=False).astype(str)
    first, last = np.searchsorted(dts, days, "left"), np.searchsorted(dts, days, "right")
    rest = table.drop_columns(["dt"])
    return {ds: rest.slice(a, b - a) for ds, a, b in zip(days, first, last, strict=True)}
