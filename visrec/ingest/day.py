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
from visrec.ingest.events import ingest_events
from visrec.ingest.features import build_features
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
