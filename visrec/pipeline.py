"""The nightly run's steps: the one place where the stages are wired together.

One function per DAG task, each ``(ds, settings, **upstream) -> small dict``. ``upstream`` are the
dicts that the steps before it returned (the DAG passes them through XCom): model versions, table
URIs, K. A step uses what it is handed, so a task of a distributed run never guesses what its
upstream task did; called alone (``visrec step NAME --ds DATE``) it falls back to the registry's
champions and to the date's run records.

Every step reads and writes only its own ``ds`` partitions (overwriting them), so a retry, a rerun or
a backfill of a date gives the same tables. Each step also records its summary under
``runs/ds=<ds>/<step>.json`` (:mod:`visrec.store.runs`): the run's history for the report. The DAG
(``dags/visrec_nightly.py``), the command line and the demo all call these functions; nothing here
imports Airflow, and the heavy libraries are imported inside the steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from visrec.settings import Settings
from visrec.store.lake import Lake, check_ds
from visrec.store.runs import Summary, record, run_summary

log = logging.getLogger(__name__)

Upstream = dict[str, Any] | None


def _open(settings: Settings | None, ds: str) -> tuple[Settings, Lake]:
    settings = settings or Settings.from_env()
    check_ds(ds)
    return settings, Lake.from_settings(settings)


def _trained_already(settings: Settings, lake: Lake, ds: str, step: str) -> Summary | None:
    """The summary of a model already trained for ``ds`` and still registered, if any.

    A retry or rerun of a date reuses that model instead of training another one, so rerunning a
    date gives the same tables (``VISREC_RETRAIN=1`` forces a new model)."""
    from visrec.mlops import registry
    from visrec.mlops.tracking import use_tracking

    summary = None if settings.retrain else run_summary(lake, ds, step)
    if summary is None:
        return None
    use_tracking(settings)
    if not summary.get("version") or not registry.version_exists(summary["version"]):
        return None
    log.info(
        "%s %s: reusing %s trained for this date (VISREC_RETRAIN=1 trains anew)", step, ds, summary["version"]
    )
    return {**summary, "reused": True}


def _champion(name: str) -> str | None:
    """``name/version`` of the registered champion of ``name``, or None."""
    from visrec.mlops.registry import champion

    current = champion(name)
    return f"{name}/{current.version}" if current else None


def _from(upstream: Upstream, key: str) -> Any:
    return (upstream or {}).get(key)


def _validated(ds: str, step: str, lake: Lake, run: Callable[[Any], Any]) -> Any:
    """Run ``run(validator)`` with a Great Expectations validator for ``step``; Data Docs into the lake."""
    from visrec.mlops.validation import TableValidator

    validator = TableValidator(ds, step=step)
    try:
        return run(validator)
    finally:
        validator.publish_docs(lake)


def ingest_images(ds: str, settings: Settings | None = None) -> Summary:
    """Catalog images -> ``staging_images`` (validated), bad files quarantined with a reason."""
    from visrec.ingest.catalog_images import ingest_images as ingest
    from visrec.store.catalog import read_catalog
    from visrec.store.schemas import quarantine_spec

    settings, lake = _open(settings, ds)
    catalog, catalog_bad = read_catalog(lake)

    def run(validator):
        lake.write_table(quarantine_spec("catalog"), ds, catalog_bad)
        validator.validate("catalog", catalog.to_pandas())
        return ingest(settings, lake, ds, validator, catalog=catalog)

    counts, reasons = _validated(ds, "ingest_images", lake, run)
    return record(
        lake,
        ds,
        "ingest_images",
        {
            "table": lake.url(f"staging/images/ds={ds}"),
            "files": counts.files,
            "accepted": counts.accepted,
            "reused": counts.reused,
            "quarantined": counts.quarantined,
            "reasons": reasons,
            "warnings": counts.warnings,
            "catalog_rows": catalog.num_rows,
            "catalog_quarantined": catalog_bad.num_rows,
        },
    )


def _spark_step(ds: str, settings: Settings | None, step: str, job: Callable) -> tuple[Lake, Any]:
    from visrec.store.spark import get_spark

    settings, lake = _open(settings, ds)
    spark = get_spark(settings, f"visrec-{step}")
    return lake, _validated(ds, step, lake, lambda validator: job(settings, lake, ds, spark, validator))


def ingest_events(ds: str, settings: Settings | None = None) -> Summary:
    """The day's raw event logs -> ``events`` (Spark), malformed/unknown/duplicate rows accounted for."""
    from visrec.ingest.events import ingest_events as job

    lake, (counts, reasons) = _spark_step(ds, settings, "ingest_events", job)
    return record(
        lake,
        ds,
        "ingest_events",
        {
            "table": lake.url(f"features/events/ds={ds}"),
            "raw": counts.raw,
            "valid": counts.valid,
            "quarantined": counts.quarantined,
            "duplicates": counts.duplicates,
            "reasons": reasons,
        },
    )


def build_features(ds: str, settings: Settings | None = None, events: Upstream = None) -> Summary:
    """All clean events up to ``ds`` -> interactions, user_profiles, item_stats (Spark)."""
    from visrec.ingest.features import build_features as job

    lake, rows = _spark_step(ds, settings, "build_features", job)
    return record(lake, ds, "build_features", {"rows": rows, "events": _from(events, "table")})


def ingest_user_photos(ds: str, settings: Settings | None = None) -> Summary:
    """The day's uploads -> stored without metadata, staged, bad files quarantined; retention applied."""
    from visrec.ingest.user_photos import ingest_user_photos as ingest

    settings, lake = _open(settings, ds)
    counts, reasons = _validated(
        ds, "ingest_user_photos", lake, lambda validator: ingest(settings, lake, ds, validator)
    )
    return record(
        lake,
        ds,
        "ingest_user_photos",
        {
            "files": counts.files,
            "accepted": counts.accepted,
            "quarantined": counts.quarantined,
            "forgotten": counts.forgotten,
            "reasons": reasons,
        },
    )


def ingest(ds: str, settings: Settings | None = None) -> dict[str, Summary]:
    """Every ingestion step for ``ds`` (what ``visrec ingest`` runs): images, events, features, uploads."""
    summaries = {"ingest_images": ingest_images(ds, settings), "ingest_events": ingest_events(ds, settings)}
    summaries["build_features"] = build_features(ds, settings, summaries["ingest_events"])
    summaries["ingest_user_photos"] = ingest_user_photos(ds, settings)
    return summaries


def train_cnn(
    ds: str, settings: Settings | None = None, images: Upstream = None, config: dict | None = None
) -> Summary:
    """Train (or fine-tune from the champion) the image model; register it behind the gate.
    ``config``: :class:`visrec.vision.train.CNNConfig` fields to change (the command line's flags)."""
    from visrec.vision.embed import MODEL_NAME
    from visrec.vision.train import CNNConfig
    from visrec.vision.train import train_cnn as train

    settings, lake = _open(settings, ds)
    if (done := _trained_already(settings, lake, ds, "train_cnn")) is not None:
        return done
    result = train(
        settings, ds, lake=lake, config=CNNConfig(max_minutes=settings.cnn_max_minutes, **(config or {}))
    )
    return record(
        lake,
        ds,
        "train_cnn",
        {
            "version": result.version,
            "promoted": result.promoted,
            "reason": result.reason,
            "champion": _champion(MODEL_NAME),
            "fine_tuned_from": result.fine_tuned_from,
            "metrics": result.metrics,
        },
    )


def embed_items(ds: str, settings: Settings | None = None, cnn: Upstream = None) -> Summary:
    """Embed the catalog with the champion image model (the one ``cnn`` names); exact top-K ``similar_items``."""
    from visrec.mlops.tracking import use_tracking
    from visrec.vision.embed import build_similar_items, load_cnn
    from visrec.vision.embed import embed_items as embed

    settings, lake = _open(settings, ds)
    use_tracking(settings)
    model, version = load_cnn(_from(cnn, "champion"))
    embeddings = embed(settings, ds, lake, model, version)
    similar = build_similar_items(lake, ds, k=settings.similar_k)
    return record(
        lake,
        ds,
        "embed_items",
        {
            "model_version": version,
            "item_embeddings": embeddings.num_rows,
            "similar_items": similar.num_rows,
            "table": lake.url(f"features/item_embeddings/ds={ds}"),
        },
    )


def recognise_user_photos(
    ds: str, settings: Settings | None = None, uploads: Upstream = None, embeddings: Upstream = None
) -> Summary:
    """Retained photos through the image model that embedded the catalog -> user_photos; today's ->
    photo_recommendations."""
    from visrec.mlops.tracking import use_tracking
    from visrec.vision.embed import load_cnn
    from visrec.vision.photos import recognise_user_photos as recognise

    settings, lake = _open(settings, ds)
    use_tracking(settings)
    model, version = load_cnn(_from(embeddings, "model_version"))
    recognised, recs = recognise(settings, lake, ds, model, version)
    return record(
        lake,
        ds,
        "recognise_user_photos",
        {
            "model_version": version,
            "user_photos": recognised.num_rows,
            "photo_recommendations": recs.num_rows,
        },
    )


def train_mf(
    ds: str,
    settings: Settings | None = None,
    features: Upstream = None,
    embeddings: Upstream = None,
    config: dict | None = None,
) -> Summary:
    """Evaluate popularity, the champion and a new VBPR on the same window; register behind the gate.
    ``config``: :class:`visrec.recsys.train.MFConfig` fields to change."""
    from visrec.recsys.train import MODEL_NAME, MFConfig
    from visrec.recsys.train import train_mf as train

    settings, lake = _open(settings, ds)
    if (done := _trained_already(settings, lake, ds, "train_mf")) is not None:
        return done
    result = train(settings, ds, lake=lake, config=MFConfig(**(config or {})))
    return record(
        lake,
        ds,
        "train_mf",
        {
            "version": result.version,
            "promoted": result.promoted,
            "reason": result.reason,
            "champion": _champion(MODEL_NAME),
            "metrics": result.metrics,
        },
    )


def train_gan(
    ds: str, settings: Settings | None = None, embeddings: Upstream = None, config: dict | None = None
) -> Summary:
    """Train the conditional GAN when it is due (see ``gan_due``; always when ``VISREC_RETRAIN``),
    judged by the image model that embedded the catalog; otherwise keep the champion. ``config``:
    :class:`visrec.generation.train.GANConfig` fields to change."""
    from visrec.generation.train import MODEL_NAME, GANConfig, gan_due
    from visrec.generation.train import train_gan as train
    from visrec.mlops.tracking import use_tracking
    from visrec.vision.embed import load_cnn

    settings, lake = _open(settings, ds)
    if (done := _trained_already(settings, lake, ds, "train_gan")) is not None:
        return done
    use_tracking(settings)
    due, why = (True, "asked to retrain") if settings.retrain else gan_due(settings, lake, ds)
    if not due:
        version = _champion(MODEL_NAME)
        log.info("train_gan %s: not due (%s); generating with %s", ds, why, version)
        return {"trained": False, "reason": why, "champion": version}
    cnn, _ = load_cnn(_from(embeddings, "model_version"))
    result = train(
        settings,
        ds,
        lake=lake,
        config=GANConfig(max_minutes=settings.gan_max_minutes, **(config or {})),
        cnn=cnn,
    )
    items = lake.read_table("staging_images", ds).column("item_id").to_pylist()
    return record(
        lake,
        ds,
        "train_gan",
        {
            "trained": True,
            "due_because": why,
            "version": result.version,
            "promoted": result.promoted,
            "reason": result.reason,
            "champion": _champion(MODEL_NAME),
            "metrics": result.metrics,
            "items": items,
        },
    )


def generate_looks(
    ds: str,
    settings: Settings | None = None,
    gan: Upstream = None,
    mf: Upstream = None,
    embeddings: Upstream = None,
) -> Summary:
    """Generated looks for the most active users of each segment, with the champion GAN."""
    from visrec.generation.looks import generate_looks as generate
    from visrec.generation.train import MODEL_NAME, load_gan
    from visrec.mlops.tracking import use_tracking
    from visrec.recsys.train import champion_scorer
    from visrec.vision.embed import load_cnn

    settings, lake = _open(settings, ds)
    use_tracking(settings)
    gan_version = _from(gan, "champion") or _champion(MODEL_NAME)
    if gan_version is None:
        return record(lake, ds, "generate_looks", {"looks": 0, "reason": "no GAN champion yet"})
    generator, gan_version = load_gan(gan_version)
    cnn, _ = load_cnn(_from(embeddings, "model_version"))
    scorer = champion_scorer(settings, version=_from(mf, "champion"))
    table = generate(settings, lake, ds, generator, cnn, gan_version, scorer=scorer)
    return record(
        lake,
        ds,
        "generate_looks",
        {
            "gan_version": gan_version,
            "looks": table.num_rows,
            "users": len(set(table.column("user_id").to_pylist())),
        },
    )


def score(
    ds: str,
    settings: Settings | None = None,
    mf: Upstream = None,
    photos: Upstream = None,
    looks: Upstream = None,
    exclude: list[str] | None = None,
) -> Summary:
    """Top-K for every user with the champion recommender (the one ``mf`` names) -> ``recommendations``."""
    from collections import Counter

    from visrec.recsys.score import score_users
    from visrec.recsys.train import champion_scorer

    settings, lake = _open(settings, ds)
    if looks is None:
        looks = run_summary(lake, ds, "generate_looks")
    scorer = champion_scorer(settings, version=_from(mf, "champion"))
    table = score_users(
        settings,
        ds,
        lake=lake,
        scorer=scorer,
        exclude=exclude,
        looks_version=_from(looks, "gan_version") or "visrec-gan",
    )
    return record(
        lake,
        ds,
        "score",
        {
            "rows": table.num_rows,
            "users": len(set(table.column("user_id").to_pylist())),
            "k": settings.top_k,
            "sources": dict(Counter(table.column("source").to_pylist())),
            "model_versions": sorted(set(table.column("model_version").to_pylist())),
            "table": lake.url(f"published/recommendations/ds={ds}"),
        },
    )


def publish(
    ds: str, settings: Settings | None = None, recommendations: Upstream = None, looks: Upstream = None
) -> Summary:
    """Validate ``ds``'s output tables, switch the release, refresh the DuckDB views. Lists must hold
    the K that ``score`` used (from ``recommendations``, or the date's score record when run alone)."""
    from visrec import publish as publishing

    settings, lake = _open(settings, ds)
    scored = recommendations or run_summary(lake, ds, "score") or {}
    result = publishing.publish(settings, ds, lake=lake, k=scored.get("k", settings.top_k))
    return record(
        lake,
        ds,
        "publish",
        {
            "rows": result.rows,
            "warehouse": result.warehouse,
            "published_at": result.published_at,
        },
    )


def report(ds: str, settings: Settings | None = None, published: Upstream = None) -> Summary:
    """The run's HTML report -> ``reports/ds=<ds>/index.html`` and an MLflow artifact."""
    from visrec.report.nightly import build_report

    settings, lake = _open(settings, ds)
    return record(lake, ds, "report", {"report": build_report(settings, ds, lake=lake)})


def find_similar(
    settings: Settings,
    photo: bytes,
    name: str,
    *,
    k: int = 10,
    ds: str | None = None,
    user: str | None = None,
    lake: Lake | None = None,
) -> tuple[list, dict]:
    """ "Products like this photo": the nearest catalog items, re-ranked for ``user`` when given (the
    photo says what to look for, the user's history which of those they prefer; see
    :func:`visrec.recsys.score.rerank_for_user`)."""
    from visrec.recsys.score import rerank_for_user
    from visrec.vision.search import find_similar_to_photo

    lake = lake or Lake.from_settings(settings)
    depth = max(50, 5 * k) if user else k
    matches, context = find_similar_to_photo(settings, photo, name, k=depth, lake=lake, ds=ds)
    context["reranked_by"] = None
    if user:
        matches, context["reranked_by"] = rerank_for_user(settings, user, matches, k)
    return matches, context


def forget(user_id: str, settings: Settings | None = None):
    """Remove ``user_id`` from the lake and the warehouse, and from every later run (``visrec forget``)."""
    from visrec.forget import forget_user

    settings = settings or Settings.from_env()
    return forget_user(settings, user_id, lake=Lake.from_settings(settings))


# Each step and the upstream steps whose results it takes, in DAG order. The DAG file wires the same
# graph with Airflow's operators; ``visrec run --no-airflow`` and the tests walk this one.
STEPS: dict[str, tuple[Callable[..., Summary], dict[str, str]]] = {
    "ingest_images": (ingest_images, {}),
    "ingest_events": (ingest_events, {}),
    "build_features": (build_features, {"events": "ingest_events"}),
    "ingest_user_photos": (ingest_user_photos, {}),
    "train_cnn": (train_cnn, {"images": "ingest_images"}),
    "embed_items": (embed_items, {"cnn": "train_cnn"}),
    "recognise_user_photos": (
        recognise_user_photos,
        {"uploads": "ingest_user_photos", "embeddings": "embed_items"},
    ),
    "train_mf": (train_mf, {"features": "build_features", "embeddings": "embed_items"}),
    "train_gan": (train_gan, {"embeddings": "embed_items"}),
    "generate_looks": (generate_looks, {"gan": "train_gan", "mf": "train_mf", "embeddings": "embed_items"}),
    "score": (score, {"mf": "train_mf", "photos": "recognise_user_photos", "looks": "generate_looks"}),
    "publish": (publish, {"recommendations": "score", "looks": "generate_looks"}),
    "report": (report, {"published": "publish"}),
}


def run_step(name: str, ds: str, settings: Settings | None = None, **upstream: Upstream) -> Summary:
    """Run one step by name (``visrec step NAME --ds DATE``, the DAG's tasks)."""
    if name not in STEPS:
        from visrec.errors import VisrecError

        raise VisrecError(f"unknown step {name!r}; steps: {', '.join(STEPS)}")
    return STEPS[name][0](ds, settings, **upstream)


def run_task(name: str, ds: str, **upstream: Upstream) -> Summary:
    """A DAG task: visrec's logging set up in the worker, then one step with settings from the environment."""
    from visrec.logs import setup_logging

    setup_logging()
    return run_step(name, ds, None, **upstream)


def run_all(ds: str, settings: Settings | None = None, on_step: Callable[[str, float], None] | None = None):
    """Every step for ``ds`` in this process, each handed its upstream steps' results (the DAG's graph)."""
    import time

    results: dict[str, Summary] = {}
    for name, (step, needs) in STEPS.items():
        started = time.perf_counter()
        results[name] = step(ds, settings, **{arg: results[up] for arg, up in needs.items()})
        if on_step:
            on_step(name, time.perf_counter() - started)
    return results
