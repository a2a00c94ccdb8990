"""The ingestion steps of a nightly run for one ``ds``: events, features, images, validation.

Each step reads the raw zone and earlier tables, validates what it produced with Great Expectations,
and writes its own ``ds`` partitions (a rerun replaces them). Rejected input goes to
``quarantine/<table>/ds=<ds>/`` with a reason; when the rejected share of a day's input is above the
error budget (``VISREC_ERROR_BUDGET``), the step stops the run after writing the quarantine, so the
reasons can be read and nothing downstream is built on a bad day.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

from visrec.catalog import read_catalog
from visrec.errors import VisrecError
from visrec.images import content_hash, normalise_many
from visrec.jobs.events import EventCounts, classify_events, read_raw_events, split_events
from visrec.lake import Lake, check_ds
from visrec.schemas import QUARANTINE, quarantine_spec
from visrec.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from visrec.validation import TableValidator

log = logging.getLogger(__name__)
EVENT_EXTENSIONS = (".jsonl", ".json", ".csv")


class ErrorBudgetExceeded(VisrecError):
    """Too much of a day's input was rejected to trust the rest."""


@dataclass
class ImageCounts:
    """What happened to the catalog's images."""

    files: int = 0
    accepted: int = 0
    reused: int = 0
    quarantined: int = 0


@dataclass
class IngestReport:
    """Counts of one ``ds``'s ingestion, for logs, MLflow and the report."""

    ds: str
    events: EventCounts | None = None
    images: ImageCounts | None = None
    quarantine_reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    data_docs: str | None = None


def _reasons(quarantine: pa.Table) -> dict[str, int]:
    return dict(sorted(Counter(quarantine.column("reason").to_pylist()).items()))


def _check_budget(what: str, rejected: int, total: int, budget: float, reasons: dict[str, int]) -> None:
    share = rejected / total if total else 0.0
    if share > budget:
        raise ErrorBudgetExceeded(
            f"{what}: {rejected} of {total} rejected ({share:.1%}) exceeds the error budget of "
            f"{budget:.1%} (VISREC_ERROR_BUDGET); reasons: {reasons}. Fix the input or raise the budget."
        )
    if rejected:
        log.warning(
            "%s: %d of %d rejected (%.2f%%, budget %.1f%%): %s",
            what,
            rejected,
            total,
            100 * share,
            100 * budget,
            reasons,
        )


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
    from visrec.spark import local_paths, to_arrow

    check_ds(ds)
    keys = lake.list_keys(f"raw/events/dt={ds}")
    unsupported = [k for k in keys if not k.endswith(EVENT_EXTENSIONS)]
    jsonl = local_paths(lake, [k for k in keys if k.endswith((".jsonl", ".json"))])
    csv = local_paths(lake, [k for k in keys if k.endswith(".csv")])
    raw = read_raw_events(spark, jsonl, csv)
    classified = classify_events(
        raw, catalog_frame(spark, lake, catalog), ds, settings.max_event_age_days
    ).cache()
    valid_df, quarantine_df = split_events(classified)
    valid = to_arrow(valid_df)
    quarantine = to_arrow(quarantine_df)
    # Users who asked to be forgotten: their lines are dropped here, before anything is stored.
    from visrec.forget import drop_forgotten, drop_mentions, forgotten_users

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


def build_features(
    settings: Settings,
    lake: Lake,
    ds: str,
    spark: SparkSession,
    validator: TableValidator | None = None,
    catalog: pa.Table | None = None,
) -> dict[str, int]:
    """Clean events up to ``ds`` -> ``interactions``, ``user_profiles`` and ``item_stats`` of ``ds``."""
    from visrec.jobs import features
    from visrec.spark import read_table, to_arrow

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


def ingest_images(
    settings: Settings,
    lake: Lake,
    ds: str,
    validator: TableValidator | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    catalog: pa.Table | None = None,
) -> tuple[ImageCounts, dict[str, int]]:
    """Catalog images -> ``staging_images`` of ``ds`` (RGB PNG at ``settings.image_size``).

    An image whose bytes, name and target size are unchanged since the latest earlier partition is
    reused, not decoded again."""
    check_ds(ds)
    if catalog is None:
        catalog, _ = read_catalog(lake)
    category = dict(
        zip(catalog.column("item_id").to_pylist(), catalog.column("category").to_pylist(), strict=True)
    )
    by_item: dict[str, list[str]] = {}
    bad: dict[str, list] = {n: [] for n in QUARANTINE.names}

    def reject(key: str, reason: str, detail: str) -> None:
        for name, value in zip(QUARANTINE.names, ("raw/images", key, reason, detail), strict=True):
            bad[name].append(value)

    keys = lake.list_keys("raw/images")
    for key in keys:
        stem = key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if stem in category:
            by_item.setdefault(stem, []).append(key)
        else:
            reject(key, "unknown_item", f"no catalog item {stem!r}")
    for item in category:
        if item not in by_item:
            reject(f"raw/images/{item}.*", "missing_image", f"catalog item {item} has no image")
    for item, item_keys in by_item.items():
        for extra in item_keys[1:]:
            reject(extra, "duplicate_image", f"item {item} already has {item_keys[0]}")

    previous = _previous_images(lake, ds, settings.image_size)
    rows: dict[str, list] = {
        n: [] for n in ("item_id", "category", "image_png", "width", "height", "content_hash", "source_key")
    }
    todo: list[tuple[str, bytes]] = []
    hashes: dict[str, str] = {}
    counts = ImageCounts(files=len(keys))
    for item, item_keys in sorted(by_item.items()):
        key = item_keys[0]
        data = lake.get_bytes(key)
        digest = content_hash(data)
        old = previous.get(item)
        if old is not None and old["content_hash"] == digest and old["source_key"] == key:
            for name in rows:
                rows[name].append(category[item] if name == "category" else old[name])
            counts.reused += 1
        else:
            todo.append((key, data))
            hashes[key] = digest
    workers = min(os.cpu_count() or 1, 8)
    tick = (lambda done, total: progress("images", done, total)) if progress else None
    for result in normalise_many(todo, settings.image_size, workers, tick):
        if result.png is None:
            reject(result.key, result.reason or "bad_image", result.detail or "")
            continue
        item = result.key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        for name, value in (
            ("item_id", item),
            ("category", category[item]),
            ("image_png", result.png),
            ("width", result.width),
            ("height", result.height),
            ("content_hash", hashes[result.key]),
            ("source_key", result.key),
        ):
            rows[name].append(value)
    quarantine = pa.table(bad, schema=QUARANTINE)
    counts.quarantined = quarantine.num_rows
    counts.accepted = len(rows["item_id"])
    reasons = _reasons(quarantine)
    lake.write_table(quarantine_spec("staging_images"), ds, quarantine)
    _check_budget(
        f"images of {ds}",
        counts.quarantined,
        len(keys) + reasons.get("missing_image", 0),
        settings.error_budget,
        reasons,
    )
    table = pa.table(rows)
    if validator is not None:
        validator.validate(
            "staging_images", table.drop_columns(["image_png"]).to_pandas().assign(image_png=b"x")
        )
    lake.write_table("staging_images", ds, table)
    log.info(
        "images %s: %d files, %d accepted (%d reused), %d quarantined %s",
        ds,
        counts.files,
        counts.accepted,
        counts.reused,
        counts.quarantined,
        reasons,
    )
    return counts, reasons


def _previous_images(lake: Lake, ds: str, size: int) -> dict[str, dict]:
    """The latest ``staging_images`` partition at or before ``ds`` whose images have ``size``."""
    earlier = [d for d in lake.partitions("staging_images") if d <= ds]
    if not earlier:
        return {}
    table = lake.read_table("staging_images", earlier[-1])
    out = {}
    for row in table.to_pylist():
        png = row["image_png"]
        # PNG IHDR: width and height are the big-endian words at bytes 16..24.
        if int.from_bytes(png[16:20], "big") == size and int.from_bytes(png[20:24], "big") == size:
            out[row["item_id"]] = row
    return out


def ingest_day(
    settings: Settings,
    ds: str,
    *,
    lake: Lake | None = None,
    spark: SparkSession | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> IngestReport:
    """All ingestion steps for ``ds``: events, features, images; Data Docs into the lake."""
    from visrec.spark import get_spark
    from visrec.validation import TableValidator

    lake = lake or Lake.from_settings(settings)
    check_ds(ds)
    catalog, catalog_bad = read_catalog(lake)  # before Spark starts: a missing catalog fails fast
    spark = spark or get_spark(settings)
    validator = TableValidator(ds)
    report = IngestReport(ds=ds)
    try:
        lake.write_table(quarantine_spec("catalog"), ds, catalog_bad)
        validator.validate("catalog", catalog.to_pandas())
        # The catalog is read once above and handed to every step.
        report.events, report.quarantine_reasons["events"] = ingest_events(
            settings, lake, ds, spark, validator, catalog
        )
        report.rows = build_features(settings, lake, ds, spark, validator, catalog)
        report.images, report.quarantine_reasons["images"] = ingest_images(
            settings, lake, ds, validator, progress, catalog
        )
        report.quarantine_reasons["catalog"] = _reasons(catalog_bad)
    finally:
        report.data_docs = validator.publish_docs(lake)
    return report


def spark_job_main(step: str, argv: list[str] | None = None) -> int:
    """The ``main()`` of the spark-submit entry points in ``spark_jobs/``: one step for one ``--ds``."""
    import argparse

    from visrec.cli import setup_logging
    from visrec.spark import get_spark
    from visrec.validation import TableValidator

    steps = {"ingest_events": ingest_events, "build_features": build_features}
    parser = argparse.ArgumentParser(prog=f"spark_jobs/{step}.py", description=f"visrec {step} for one date")
    parser.add_argument("--ds", required=True, help="the date, YYYY-MM-DD")
    args = parser.parse_args(argv)
    setup_logging()
    settings = Settings.from_env()
    lake = Lake.from_settings(settings)
    validator = TableValidator(check_ds(args.ds))
    try:
        result = steps[step](settings, lake, args.ds, get_spark(settings, step), validator)
    except VisrecError as exc:
        print(f"{step}: error: {exc}")
        return 1
    finally:
        validator.publish_docs(lake)
    print(f"{step} {args.ds}: {result}")
    return 0
