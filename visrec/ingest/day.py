"""The ingestion steps of a nightly run for one ``ds``: events, features, images, validation.

Each step reads the raw zone and earlier tables, validates what it produced with Great Expectations,
and writes its own ``ds`` partitions (a rerun replaces them). Rejected input goes to
``quarantine/<table>/ds=<ds>/`` with a reason; when the rejected share of a day's input is above the
error budget (``VISREC_ERROR_BUDGET``), the step stops the run after writing the quarantine, so the
reasons can be read and nothing downstream is built on a bad day.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from visrec.ingest.catalog_images import ImageCounts, ingest_images
from visrec.ingest.events import ingest_event_days, ingest_events
from visrec.ingest.features import build_feature_days, build_features
from visrec.ingest.jobs.events import EventCounts
from visrec.ingest.quarantine import _reasons
from visrec.mlops.validation import TableValidator
from visrec.settings import Settings
from visrec.store.catalog import read_catalog
from visrec.store.engine import Engine, open_engine
from visrec.store.lake import Lake, check_ds
from visrec.store.schemas import quarantine_spec


@dataclass
class IngestReport:
    """Counts of one ``ds``'s ingestion, for logs, MLflow and the report."""

    ds: str
    events: EventCounts | None = None
    images: ImageCounts | None = None
    quarantine_reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    data_docs: str | None = None


def ingest_day(
    settings: Settings,
    ds: str,
    *,
    lake: Lake | None = None,
    engine: Engine | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    rebuild: bool = False,
) -> IngestReport:
    """All ingestion steps for ``ds``: events, features (``rebuild``: from the whole history), images;
    Data Docs into the lake."""
    lake = lake or Lake.from_settings(settings)
    check_ds(ds)
    catalog, catalog_bad = read_catalog(lake)  # before an engine starts: a missing catalog fails fast
    engine = engine or open_engine(settings)
    validator = TableValidator(ds)
    report = IngestReport(ds=ds)
    try:
        lake.write_table(quarantine_spec("catalog"), ds, catalog_bad)
        validator.validate("catalog", catalog.to_pandas())
        # The catalog is read once above and handed to every step.
        report.events, report.quarantine_reasons["events"] = ingest_events(
            settings, lake, ds, engine, validator, catalog
        )
        report.rows = build_features(settings, lake, ds, engine, validator, catalog, rebuild)
        report.images, report.quarantine_reasons["images"] = ingest_images(
            settings, lake, ds, validator, progress, catalog
        )
        report.quarantine_reasons["catalog"] = _reasons(catalog_bad)
    finally:
        report.data_docs = validator.publish_docs(lake)
    return report


def ingest_days(
    settings: Settings,
    days: list[str],
    *,
    lake: Lake | None = None,
    engine: Engine | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    rebuild: bool = False,
) -> list[IngestReport]:
    """A range of days in one pass (``visrec ingest --start --end``, a backfill): every day's event
    logs parsed and validated in one job, each day's features built from the day before it and
    validated a month at a time, the catalog's images checked once, for the last day. The tables
    are those that :func:`ingest_day` gives day by day (a test checks it), except ``staging_images``,
    which only the last day gets (training reads a date's own images: a backfilled date that is
    trained later ingests its images then)."""
    lake = lake or Lake.from_settings(settings)
    days = sorted(days)
    for ds in days:
        check_ds(ds)
    catalog, catalog_bad = read_catalog(lake)
    engine = engine or open_engine(settings)
    last = days[-1]
    validator = TableValidator(last, step=f"backfill-{days[0]}")
    reports = {ds: IngestReport(ds=ds) for ds in days}
    try:
        validator.validate("catalog", catalog.to_pandas())
        for ds in days:
            lake.write_table(quarantine_spec("catalog"), ds, catalog_bad)
            reports[ds].quarantine_reasons["catalog"] = _reasons(catalog_bad)
        events = ingest_event_days(settings, lake, days, engine, validator, catalog)
        for ds, (counts, reasons) in events.items():
            reports[ds].events, reports[ds].quarantine_reasons["events"] = counts, reasons
        for ds, rows in build_feature_days(settings, lake, days, engine, validator, catalog, rebuild).items():
            reports[ds].rows = rows
        report = reports[last]
        report.images, report.quarantine_reasons["images"] = ingest_images(
            settings, lake, last, validator, progress, catalog
        )
    finally:
        docs = validator.publish_docs(lake)
    for report in reports.values():
        report.data_docs = docs
    return list(reports.values())
