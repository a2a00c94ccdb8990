"""The nightly run's steps: one function per DAG task, each ``(ds, settings) -> small dict``.

Every step reads and writes only its own ``ds`` partitions (overwriting them), so a retry, a rerun or
a backfill of a date gives the same tables. What a step returns is small and JSON-friendly (counts,
model versions, lake URIs): the DAG passes it on through XCom, never a dataframe. Each step also
writes its summary to ``runs/ds=<ds>/<step>.json`` so the report can put a run beside the one before.
The DAG (``dags/visrec_nightly.py``) is a thin wrapper around these; nothing here imports Airflow.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from visrec.lake import Lake, check_ds
from visrec.settings import Settings

log = logging.getLogger(__name__)

Summary = dict[str, Any]


def _open(settings: Settings | None) -> tuple[Settings, Lake]:
    settings = settings or Settings.from_env()
    return settings, Lake.from_settings(settings)


def _record(lake: Lake, ds: str, step: str, summary: Summary) -> Summary:
    lake.put_bytes(f"runs/ds={ds}/{step}.json", json.dumps(summary, indent=1, sort_keys=True).encode())
    log.info("%s %s: %s", step, ds, summary)
    return summary


def run_summaries(lake: Lake, ds: str) -> dict[str, Summary]:
    """The step summaries recorded for ``ds`` (empty when that date never ran)."""
    out = {}
    for key in lake.list_keys(f"runs/ds={ds}"):
        if key.endswith(".json"):
            out[key.rsplit("/", 1)[1][:-5]] = json.loads(lake.get_bytes(key))
    return out


def _trained_already(settings: Settings, lake: Lake, ds: str, step: str) -> Summary | None:
    """The summary of a model already trained for ``ds`` and still registered, if any.

    A retry or rerun of a date reuses that model instead of training another one, so rerunning a
    date gives the same tables (``VISREC_RETRAIN=1`` forces a new model)."""
    from visrec import registry
    from visrec.tracking import ensure_experiment

    key = f"runs/ds={ds}/{step}.json"
    if settings.retrain or not lake.exists(key):
        return None
    summary = json.loads(lake.get_bytes(key))
    ensure_experiment(settings)  # sets the tracking URI
    if not summary.get("version") or not registry.version_exists(summary["version"]):
        return None
    log.info(
        "%s %s: reusing %s trained for this date (VISREC_RETRAIN=1 trains anew)", step, ds, summary["version"]
    )
    return {**summary, "reused": True}


def ingest_images(ds: str, settings: Settings | None = None) -> Summary:
    """Catalog images -> ``staging_images`` (validated), bad files quarantined with a reason."""
    from visrec import ingest
    from visrec.catalog import read_catalog
    from visrec.schemas import quarantine_spec
    from visrec.validation import TableValidator

    settings, lake = _open(settings)
    check_ds(ds)
    catalog, catalog_bad = read_catalog(lake)
    validator = TableValidator(ds, step="ingest_images")
    try:
        lake.write_table(quarantine_spec("catalog"), ds, catalog_bad)
        validator.validate("catalog", catalog.to_pandas())
        counts, reasons = ingest.ingest_images(settings, lake, ds, validator, catalog=catalog)
    finally:
        validator.publish_docs(lake)
    return _record(lake, ds, "ingest_images", {
        "table": lake.url(f"staging/images/ds={ds}"), "files": counts.files, "accepted": counts.accepted,
        "reused": counts.reused, "quarantined": counts.quarantined, "reasons": reasons,
        "catalog_rows": catalog.num_rows, "catalog_quarantined": catalog_bad.num_rows,
    })  # fmt: skip


def _spark_step(ds: str, settings: Settings | None, step: str, run: Callable) -> tuple[Settings, Lake, Any]:
    from visrec.spark import get_spark
    from visrec.validation import TableValidator

    settings, lake = _open(settings)
    check_ds(ds)
    validator = TableValidator(ds, step=step)
    try:
        result = run(settings, lake, ds, get_spark(settings, f"visrec-{step}"), validator)
    finally:
        validator.publish_docs(lake)
    return settings, lake, result


def ingest_events(ds: str, settings: Settings | None = None) -> Summary:
    """The day's raw event logs -> ``events`` (Spark), malformed/unknown/duplicate rows accounted for."""
    from visrec import ingest

    _, lake, (counts, reasons) = _spark_step(ds, settings, "ingest_events", ingest.ingest_events)
    return _record(lake, ds, "ingest_events", {
        "table": lake.url(f"features/events/ds={ds}"), "raw": counts.raw, "valid": counts.valid,
        "quarantined": counts.quarantined, "duplicates": counts.duplicates, "reasons": reasons,
    })  # fmt: skip


def build_features(ds: str, settings: Settings | None = None) -> Summary:
    """All clean events up to ``ds`` -> interactions, user_profiles, item_stats (Spark)."""
    from visrec import ingest

    _, lake, rows = _spark_step(ds, settings, "build_features", ingest.build_features)
    return _record(lake, ds, "build_features", {"rows": rows})


def train_cnn(ds: str, settings: Settings | None = None) -> Summary:
    """Train (or fine-tune from the champion) the image model; register it behind the gate."""
    from visrec import vision

    settings, lake = _open(settings)
    if (done := _trained_already(settings, lake, ds, "train_cnn")) is not None:
        return done
    result = vision.train_cnn(
        settings, ds, lake=lake, config=vision.CNNConfig(max_minutes=settings.cnn_max_minutes)
    )
    return _record(lake, ds, "train_cnn", {
        "version": result.version, "promoted": result.promoted, "reason": result.reason,
        "fine_tuned_from": result.fine_tuned_from, "metrics": result.metrics,
    })  # fmt: skip


def embed_items(ds: str, settings: Settings | None = None) -> Summary:
    """Embed the catalog with the champion image model; exact top-K ``similar_items``."""
    from visrec import vision

    settings, lake = _open(settings)
    from visrec.tracking import ensure_experiment

    ensure_experiment(settings)  # sets the tracking URI for the registry lookup
    model, version = vision.load_cnn()
    embeddings = vision.embed_items(settings, ds, lake, model, version)
    similar = vision.build_similar_items(lake, ds)
    return _record(lake, ds, "embed_items", {
        "model_version": version, "item_embeddings": embeddings.num_rows, "similar_items": similar.num_rows,
        "table": lake.url(f"features/item_embeddings/ds={ds}"),
    })  # fmt: skip


def ingest_user_photos(ds: str, settings: Settings | None = None) -> Summary:
    """The day's uploads -> stored without metadata, staged, bad files quarantined; retention applied."""
    from visrec import photos
    from visrec.validation import TableValidator

    settings, lake = _open(settings)
    check_ds(ds)
    validator = TableValidator(ds, step="ingest_user_photos")
    try:
        counts, reasons = photos.ingest_user_photos(settings, lake, ds, validator)
    finally:
        validator.publish_docs(lake)
    return _record(lake, ds, "ingest_user_photos", {
        "files": counts.files, "accepted": counts.accepted, "quarantined": counts.quarantined,
        "forgotten": counts.forgotten, "reasons": reasons,
    })  # fmt: skip


def recognise_user_photos(ds: str, settings: Settings | None = None) -> Summary:
    """Retained photos through the champion image model -> user_photos; today's -> photo_recommendations."""
    from visrec import photos, vision
    from visrec.tracking import ensure_experiment

    settings, lake = _open(settings)
    ensure_experiment(settings)
    model, version = vision.load_cnn()
    recognised, recs = photos.recognise_user_photos(settings, lake, ds, model, version)
    return _record(lake, ds, "recognise_user_photos", {
        "model_version": version, "user_photos": recognised.num_rows, "photo_recommendations": recs.num_rows,
    })  # fmt: skip


def train_mf(ds: str, settings: Settings | None = None) -> Summary:
    """Evaluate popularity, the champion and a new VBPR on the same window; register behind the gate."""
    from visrec import recsys

    settings, lake = _open(settings)
    if (done := _trained_already(settings, lake, ds, "train_mf")) is not None:
        return done
    result = recsys.train_mf(settings, ds, lake=lake)
    return _record(lake, ds, "train_mf", {
        "version": result.version, "promoted": result.promoted, "reason": result.reason,
        "metrics": result.metrics,
    })  # fmt: skip


def train_gan(ds: str, settings: Settings | None = None) -> Summary:
    """Train the conditional GAN when it is due (see ``generation.gan_due``); otherwise keep the champion."""
    from visrec import generation
    from visrec.registry import champion

    settings, lake = _open(settings)
    if (done := _trained_already(settings, lake, ds, "train_gan")) is not None:
        return done
    due, why = generation.gan_due(settings, lake, ds)
    if not due:
        current = champion(generation.MODEL_NAME)
        version = f"{generation.MODEL_NAME}/{current.version}" if current else None
        log.info("train_gan %s: not due (%s); generating with %s", ds, why, version)
        return {"trained": False, "reason": why, "champion": version}
    result = generation.train_gan(settings, ds, lake=lake,
                                  config=generation.GANConfig(max_minutes=settings.gan_max_minutes))  # fmt: skip
    items = lake.read_table("staging_images", ds).column("item_id").to_pylist()
    return _record(lake, ds, "train_gan", {
        "trained": True, "due_because": why, "version": result.version, "promoted": result.promoted,
        "reason": result.reason, "metrics": result.metrics, "items": items,
    })  # fmt: skip


def generate_looks(ds: str, settings: Settings | None = None) -> Summary:
    """Generated looks for the most active users of each segment, with the champion GAN."""
    from visrec import generation, vision
    from visrec.registry import champion
    from visrec.tracking import ensure_experiment

    settings, lake = _open(settings)
    ensure_experiment(settings)
    if champion(generation.MODEL_NAME) is None:
        return _record(lake, ds, "generate_looks", {"looks": 0, "reason": "no GAN champion yet"})
    gan, gan_version = generation.load_gan()
    cnn, _ = vision.load_cnn()
    table = generation.generate_looks(settings, lake, ds, gan, cnn, gan_version)
    return _record(lake, ds, "generate_looks", {
        "gan_version": gan_version, "looks": table.num_rows, "users": len(set(table.column("user_id").to_pylist())),
    })  # fmt: skip


def score(ds: str, settings: Settings | None = None) -> Summary:
    """Top-K for every user with the champion recommender -> ``recommendations``."""
    from visrec import recsys

    settings, lake = _open(settings)
    looks = run_summaries(lake, ds).get("generate_looks", {})
    table = recsys.score_users(settings, ds, lake=lake, looks_version=looks.get("gan_version", "visrec-gan"))
    sources: dict[str, int] = {}
    for source in table.column("source").to_pylist():
        sources[source] = sources.get(source, 0) + 1
    versions = sorted(set(table.column("model_version").to_pylist()))
    return _record(lake, ds, "score", {
        "rows": table.num_rows, "users": len(set(table.column("user_id").to_pylist())),
        "sources": sources, "model_versions": versions, "table": lake.url(f"published/recommendations/ds={ds}"),
    })  # fmt: skip


def publish(ds: str, settings: Settings | None = None) -> Summary:
    """Validate ``ds``'s output tables, switch the release, refresh the DuckDB views."""
    from visrec import publish as publishing
    from visrec.recsys import MFConfig

    settings, lake = _open(settings)
    result = publishing.publish(settings, ds, lake=lake, k=MFConfig().k)
    return _record(lake, ds, "publish", {
        "rows": result.rows, "warehouse": result.warehouse, "published_at": result.published_at,
    })  # fmt: skip


def report(ds: str, settings: Settings | None = None) -> Summary:
    """The run's HTML report -> ``reports/ds=<ds>/index.html`` and an MLflow artifact."""
    from visrec import report as reporting

    settings, lake = _open(settings)
    uri = reporting.build_report(settings, ds, lake=lake)
    return _record(lake, ds, "report", {"report": uri})


# In DAG order; ``visrec run --no-airflow`` and the tests walk this list.
STEPS: dict[str, Callable[[str, Settings | None], Summary]] = {
    "ingest_images": ingest_images,
    "ingest_events": ingest_events,
    "build_features": build_features,
    "ingest_user_photos": ingest_user_photos,
    "train_cnn": train_cnn,
    "embed_items": embed_items,
    "recognise_user_photos": recognise_user_photos,
    "train_mf": train_mf,
    "train_gan": train_gan,
    "generate_looks": generate_looks,
    "score": score,
    "publish": publish,
    "report": report,
}
