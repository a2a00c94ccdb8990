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

from visrec.errors import VisrecError
from visrec.settings import Settings
from visrec.store.lake import Lake, check_ds, published_dates
from visrec.store.runs import Summary, record, run_summary

log = logging.getLogger(__name__)

Upstream = dict[str, Any] | None


class InputMissing(VisrecError):
    """A step's input for its date does not exist: the message names it and the command that makes it."""


class AlreadyPublished(VisrecError):
    """A step would change a date that is already published, and was not told ``force``."""


# What each step reads for its own date, and the command that makes it.
NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "build_features": (("events", "visrec step ingest_events"),),
    "train_cnn": (("staging_images", "visrec step ingest_images"),),
    "embed_items": (("staging_images", "visrec step ingest_images"),),
    "recognise_user_photos": (("item_embeddings", "visrec step embed_items"),),
    "train_mf": (("events", "visrec step ingest_events"), ("item_embeddings", "visrec step embed_items")),
    "train_gan": (("staging_images", "visrec step ingest_images"),),
    "generate_looks": (
        ("user_profiles", "visrec step build_features"),
        ("item_embeddings", "visrec step embed_items"),
    ),
    "score": (
        ("events", "visrec step ingest_events"),
        ("user_profiles", "visrec step build_features"),
        ("item_embeddings", "visrec step embed_items"),
    ),
    "publish": (("recommendations", "visrec score"),),
    "report": (("recommendations", "visrec score"),),
}
# Steps that write tables of the published contract for their date.
CHANGES_PUBLISHED = {
    "build_features",
    "embed_items",
    "recognise_user_photos",
    "generate_looks",
    "score",
    "publish",
}


def _open(settings: Settings | None, ds: str) -> tuple[Settings, Lake]:
    from visrec.store.services import check_services

    settings = settings or Settings.from_env()
    check_ds(ds)
    check_services(settings)
    return settings, Lake.from_settings(settings)


def _prepare(step: str, ds: str, settings: Settings | None, force: bool = False) -> tuple[Settings, Lake]:
    """Open the lake for ``step`` on ``ds`` after checking, before any work, that the step's inputs for
    ``ds`` exist and that it would not change a published date unless ``force``."""
    settings, lake = _open(settings, ds)
    check_inputs(lake, step, ds)
    if step in CHANGES_PUBLISHED and not force:
        check_unpublished(lake, step, ds)
    return settings, lake


def check_inputs(lake: Lake, step: str, ds: str, skip: tuple[str, ...] = ()) -> None:
    """Raise :class:`InputMissing` naming the first input of ``step`` that ``ds`` lacks."""
    for table, command in NEEDS.get(step, ()):
        if table not in skip and lake.manifest(table, ds) is None:
            raise InputMissing(f"{step} {ds}: no {table} for {ds}; run `{command} --ds {ds}` first")


def check_unpublished(lake: Lake, step: str, ds: str) -> None:
    """Raise :class:`AlreadyPublished` when ``ds`` is in the current release."""
    if ds in published_dates(lake):
        raise AlreadyPublished(
            f"{step} {ds}: {ds} is already published and this would change it; pass --force to rerun it "
            "(readers keep the published tables until the next publish)"
        )


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


def _timed(step: Callable[..., Summary]) -> Callable[..., Summary]:
    """Write a step's summary, with how long it took (``seconds``: the report's task times), as its
    run record: the one place run records are written."""
    import functools
    import time

    @functools.wraps(step)
    def timed(ds: str, settings: Settings | None = None, *args: Any, **kwargs: Any) -> Summary:
        started = time.perf_counter()
        summary = step(ds, settings, *args, **kwargs)
        settings = settings or Settings.from_env()
        summary = {**summary, "seconds": round(time.perf_counter() - started, 3)}
        return record(Lake.from_settings(settings), ds, step.__name__, summary)

    return timed


def _validated(ds: str, step: str, lake: Lake, run: Callable[[Any], Any]) -> Any:
    """Run ``run(validator)`` with a Great Expectations validator for ``step``; Data Docs into the lake."""
    from visrec.mlops.validation import TableValidator

    validator = TableValidator(ds, step=step)
    try:
        return run(validator)
    finally:
        validator.publish_docs(lake)


@_timed
def ingest_images(ds: str, settings: Settings | None = None, force: bool = False) -> Summary:
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
    return {
        "table": lake.url(f"staging/images/ds={ds}"),
        "files": counts.files,
        "accepted": counts.accepted,
        "reused": counts.reused,
        "quarantined": counts.quarantined,
        "reasons": reasons,
        "warnings": counts.warnings,
        "catalog_rows": catalog.num_rows,
        "catalog_quarantined": catalog_bad.num_rows,
    }


def _engine_step(ds: str, settings: Settings | None, step: str, job: Callable) -> tuple[Lake, Any]:
    from visrec.store.engine import open_engine

    settings, lake = _open(settings, ds)
    engine = open_engine(settings, f"visrec-{step}")
    return lake, _validated(ds, step, lake, lambda validator: job(settings, lake, ds, engine, validator))


@_timed
def ingest_events(ds: str, settings: Settings | None = None, force: bool = False) -> Summary:
    """The day's raw event logs -> ``events`` (DuckDB or Spark), malformed/unknown/duplicate rows accounted for."""
    from visrec.ingest.events import ingest_events as job

    lake, (counts, reasons) = _engine_step(ds, settings, "ingest_events", job)
    return {
        "table": lake.url(f"features/events/ds={ds}"),
        "raw": counts.raw,
        "valid": counts.valid,
        "quarantined": counts.quarantined,
        "duplicates": counts.duplicates,
        "reasons": reasons,
    }


@_timed
def build_features(
    ds: str,
    settings: Settings | None = None,
    events: Upstream = None,
    force: bool = False,
    rebuild: bool = False,
) -> Summary:
    """Clean events up to ``ds`` -> interactions, user_days, user_profiles, item_stats: from the
    previous day's snapshot and the new events, or (``rebuild``) from the whole history."""
    from visrec.ingest.features import build_features as features

    def job(*args):
        return features(*args, rebuild=rebuild)

    _prepare("build_features", ds, settings, force)
    lake, rows = _engine_step(ds, settings, "build_features", job)
    return {"rows": rows, "events": _from(events, "table")}


@_timed
def ingest_user_photos(ds: str, settings: Settings | None = None, force: bool = False) -> Summary:
    """The day's uploads -> stored without metadata, staged, bad files quarantined; retention applied."""
    from visrec.ingest.user_photos import ingest_user_photos as ingest

    settings, lake = _open(settings, ds)
    counts, reasons = _validated(
        ds, "ingest_user_photos", lake, lambda validator: ingest(settings, lake, ds, validator)
    )
    return {
        "files": counts.files,
        "accepted": counts.accepted,
        "quarantined": counts.quarantined,
        "forgotten": counts.forgotten,
        "reasons": reasons,
    }


def ingest(ds: str, settings: Settings | None = None, rebuild: bool = False) -> dict[str, Summary]:
    """Every ingestion step for ``ds`` (what ``visrec ingest`` runs): images, events, features, uploads."""
    summaries = {"ingest_images": ingest_images(ds, settings), "ingest_events": ingest_events(ds, settings)}
    summaries["build_features"] = build_features(ds, settings, summaries["ingest_events"], rebuild=rebuild)
    summaries["ingest_user_photos"] = ingest_user_photos(ds, settings)
    return summaries


def ingest_range(days: list[str], settings: Settings | None = None, rebuild: bool = False) -> Summary:
    """A range of days in one pass (``visrec ingest --start --end``; see
    :func:`visrec.ingest.day.ingest_days`), then each day's user photos where it has uploads (the last
    day's always: it applies the retention). Writes each day's run records."""
    import time

    from visrec.ingest.day import ingest_days

    days = sorted(days)
    settings, lake = _open(settings, days[-1])
    started = time.perf_counter()
    reports = ingest_days(settings, days, lake=lake, rebuild=rebuild)
    for report in reports:
        ev = report.events
        record(
            lake,
            report.ds,
            "ingest_events",
            {
                "table": lake.url(f"features/events/ds={report.ds}"),
                "raw": ev.raw,
                "valid": ev.valid,
                "quarantined": ev.quarantined,
                "duplicates": ev.duplicates,
                "reasons": report.quarantine_reasons["events"],
                "backfill": f"{days[0]}..{days[-1]}",
            },
        )
        record(lake, report.ds, "build_features", {"rows": report.rows, "backfill": f"{days[0]}..{days[-1]}"})
    photos = {
        ds: ingest_user_photos(ds, settings)
        for ds in days
        if ds == days[-1] or lake.list_keys(f"raw/user_images/dt={ds}")
    }
    images = reports[-1].images
    return {
        "days": len(days),
        "events": {
            "raw": sum(r.events.raw for r in reports),
            "valid": sum(r.events.valid for r in reports),
            "quarantined": sum(r.events.quarantined for r in reports),
            "duplicates": sum(r.events.duplicates for r in reports),
        },
        "quarantine_reasons": {
            r.ds: r.quarantine_reasons["events"] for r in reports if r.quarantine_reasons["events"]
        },
        "images": {
            "files": images.files,
            "accepted": images.accepted,
            "reused": images.reused,
            "quarantined": images.quarantined,
            "reasons": reports[-1].quarantine_reasons["images"],
        },
        "rows": reports[-1].rows,
        "user_photos": {ds: p["accepted"] for ds, p in photos.items()},
        "data_docs": reports[-1].data_docs,
        "seconds": round(time.perf_counter() - started, 3),
    }


@_timed
def train_cnn(
    ds: str,
    settings: Settings | None = None,
    images: Upstream = None,
    config: dict | None = None,
    force: bool = False,
) -> Summary:
    """Train (or fine-tune from the champion) the image model; register it behind the gate.
    ``config``: :class:`visrec.vision.train.CNNConfig` fields to change (the command line's flags)."""
    settings, lake = _prepare("train_cnn", ds, settings, force)

    from visrec.vision.embed import MODEL_NAME
    from visrec.vision.train import CNNConfig
    from visrec.vision.train import train_cnn as train

    if (done := _trained_already(settings, lake, ds, "train_cnn")) is not None:
        return done
    result = train(
        settings,
        ds,
        lake=lake,
        config=CNNConfig(
            **{"max_minutes": settings.cnn_max_minutes, "epochs": settings.cnn_epochs, **(config or {})}
        ),
    )
    return {
        "version": result.version,
        "promoted": result.promoted,
        "reason": result.reason,
        "champion": _champion(MODEL_NAME),
        "fine_tuned_from": result.fine_tuned_from,
        "metrics": result.metrics,
    }


@_timed
def embed_items(
    ds: str, settings: Settings | None = None, cnn: Upstream = None, force: bool = False
) -> Summary:
    """Embed the catalog with the champion image model (the one ``cnn`` names); exact top-K ``similar_items``."""
    settings, lake = _prepare("embed_items", ds, settings, force)

    from visrec.mlops.tracking import use_tracking
    from visrec.vision.embed import build_similar_items, load_cnn
    from visrec.vision.embed import embed_items as embed

    use_tracking(settings)
    model, version = load_cnn(_from(cnn, "champion"))
    embeddings = embed(settings, ds, lake, model, version)
    similar = build_similar_items(lake, ds, k=settings.similar_k)
    return {
        "model_version": version,
        "item_embeddings": embeddings.num_rows,
        "similar_items": similar.num_rows,
        "table": lake.url(f"features/item_embeddings/ds={ds}"),
    }


@_timed
def recognise_user_photos(
    ds: str,
    settings: Settings | None = None,
    uploads: Upstream = None,
    embeddings: Upstream = None,
    force: bool = False,
) -> Summary:
    """Retained photos through the image model that embedded the catalog -> user_photos; today's ->
    photo_recommendations."""
    settings, lake = _prepare("recognise_user_photos", ds, settings, force)

    from visrec.mlops.tracking import use_tracking
    from visrec.vision.embed import load_cnn
    from visrec.vision.photos import recognise_user_photos as recognise

    use_tracking(settings)
    model, version = load_cnn(_from(embeddings, "model_version"))
    recognised, recs = recognise(settings, lake, ds, model, version)
    return {
        "model_version": version,
        "user_photos": recognised.num_rows,
        "photo_recommendations": recs.num_rows,
    }


@_timed
def train_mf(
    ds: str,
    settings: Settings | None = None,
    features: Upstream = None,
    embeddings: Upstream = None,
    config: dict | None = None,
    force: bool = False,
) -> Summary:
    """Select and evaluate a new VBPR beside popularity and the champion on the same window; register
    it behind the gate. ``config``: :class:`visrec.recsys.train.MFConfig` fields to change (the model's
    own settings are ``VISREC_MF_*``)."""
    settings, lake = _prepare("train_mf", ds, settings, force)

    from visrec.recsys.train import MODEL_NAME, MFConfig
    from visrec.recsys.train import train_mf as train

    if (done := _trained_already(settings, lake, ds, "train_mf")) is not None:
        return done
    result = train(settings, ds, lake=lake, config=MFConfig(**(config or {})))
    return {
        "version": result.version,
        "promoted": result.promoted,
        "reason": result.reason,
        "champion": _champion(MODEL_NAME),
        "serving": result.serving,
        "selected": result.selected,
        "metrics": result.metrics,
    }


@_timed
def train_gan(
    ds: str,
    settings: Settings | None = None,
    embeddings: Upstream = None,
    config: dict | None = None,
    force: bool = False,
) -> Summary:
    """Train the conditional GAN when it is due (see ``gan_due``; always when ``VISREC_RETRAIN``),
    judged by the image model that embedded the catalog; otherwise keep the champion. ``config``:
    :class:`visrec.generation.train.GANConfig` fields to change."""
    settings, lake = _prepare("train_gan", ds, settings, force)

    from visrec.generation.train import MODEL_NAME, GANConfig, gan_due, sample_grid
    from visrec.generation.train import train_gan as train
    from visrec.mlops.tracking import use_tracking
    from visrec.vision.embed import load_cnn

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
        config=GANConfig(
            **{"max_minutes": settings.gan_max_minutes, "epochs": settings.gan_epochs, **(config or {})}
        ),
        cnn=cnn,
    )
    items = lake.read_table("staging_images", ds).column("item_id").to_pylist()
    lake.put_bytes(f"runs/ds={ds}/gan_samples.png", sample_grid(result.model))  # for the report
    return {
        "trained": True,
        "due_because": why,
        "version": result.version,
        "promoted": result.promoted,
        "reason": result.reason,
        "champion": _champion(MODEL_NAME),
        "metrics": result.metrics,
        "items": items,
    }


@_timed
def generate_looks(
    ds: str,
    settings: Settings | None = None,
    gan: Upstream = None,
    mf: Upstream = None,
    embeddings: Upstream = None,
    force: bool = False,
) -> Summary:
    """Generated looks for the most active users of each segment, with the champion GAN."""
    settings, lake = _prepare("generate_looks", ds, settings, force)

    from visrec.generation.looks import generate_looks as generate
    from visrec.generation.train import MODEL_NAME, load_gan
    from visrec.mlops.tracking import use_tracking
    from visrec.recsys.train import champion_scorer
    from visrec.vision.embed import load_cnn

    use_tracking(settings)
    gan_version = _from(gan, "champion") or _champion(MODEL_NAME)
    if gan_version is None:
        return {"looks": 0, "reason": "no GAN champion yet"}
    generator, gan_version = load_gan(gan_version)
    cnn, _ = load_cnn(_from(embeddings, "model_version"))
    scorer = champion_scorer(settings, version=_from(mf, "champion"))
    table = generate(settings, lake, ds, generator, cnn, gan_version, scorer=scorer)
    return {
        "gan_version": gan_version,
        "looks": table.num_rows,
        "users": len(set(table.column("user_id").to_pylist())),
    }


@_timed
def score(
    ds: str,
    settings: Settings | None = None,
    mf: Upstream = None,
    photos: Upstream = None,
    looks: Upstream = None,
    exclude: list[str] | None = None,
    force: bool = False,
    latest_features: bool = False,
) -> Summary:
    """Top-K for every user with the champion recommender (the one ``mf`` names) -> ``recommendations``.
    Scores with ``ds``'s own features; ``latest_features``: with the newest at or before ``ds`` (a
    deliberate choice, recorded as ``features_ds``)."""
    settings, lake = _open(settings, ds)
    features_ds = ds
    if latest_features:  # the newest date at or before ds with every input of scoring
        tables = [table for table, _ in NEEDS["score"]]
        ready = [
            d
            for d in lake.partitions("user_profiles")
            if d <= ds and all(lake.manifest(x, d) for x in tables)
        ]
        features_ds = ready[-1] if ready else ds
    check_inputs(lake, "score", features_ds)
    if not force:
        check_unpublished(lake, "score", ds)

    from visrec.recsys.score import ScorerRef, score_users
    from visrec.recsys.train import MODEL_NAME as MF_MODEL
    from visrec.recsys.train import serving
    from visrec.store.engine import engine_name

    if looks is None:
        looks = run_summary(lake, ds, "generate_looks")
    # The champion's lists while it beats popularity (the last training's verdict), else popularity's.
    # A reference, not the model: on Spark each task loads it, and the driver never holds it.
    serve = _from(mf, "serving") or serving(settings)[0]
    champion = (_from(mf, "champion") or _champion(MF_MODEL)) if serve == "model" else None
    scorer = ScorerRef(champion) if champion else None
    spark = None
    if engine_name(settings) == "spark":  # on a cluster, Spark tasks score the users in shards
        from visrec.store.spark import get_spark

        spark = get_spark(settings, "visrec-score")
    scored = score_users(
        settings,
        ds,
        features_ds=features_ds,
        lake=lake,
        scorer=scorer,
        exclude=exclude,
        looks_version=_from(looks, "gan_version") or "visrec-gan",
        spark=spark,
        shards=2 * settings.spark_cores,
    )
    return {
        "rows": scored.rows,
        "users": scored.users,
        "k": settings.top_k,
        "features_ds": features_ds,
        "serving": "model" if scorer is not None else "popularity",
        "sources": scored.sources,
        "model_versions": scored.model_versions,
        "table": lake.url(f"published/recommendations/ds={ds}"),
        **(
            {"shards": 2 * settings.spark_cores, "collected_bytes": scored.collected_bytes}
            if spark is not None
            else {}
        ),
    }


@_timed
def publish(
    ds: str,
    settings: Settings | None = None,
    recommendations: Upstream = None,
    looks: Upstream = None,
    force: bool = False,
) -> Summary:
    """Validate ``ds``'s output tables, switch the release, refresh the DuckDB views. Lists must hold
    the K that ``score`` used (from ``recommendations``, or the date's score record when run alone)."""
    settings, lake = _prepare("publish", ds, settings, force)

    from visrec import publish as publishing

    scored = recommendations or run_summary(lake, ds, "score") or {}
    result = publishing.publish(settings, ds, lake=lake, k=scored.get("k", settings.top_k))
    return {
        "rows": result.rows,
        "warehouse": result.warehouse,
        "published_at": result.published_at,
    }


@_timed
def report(
    ds: str, settings: Settings | None = None, published: Upstream = None, force: bool = False
) -> Summary:
    """The run's HTML report -> ``reports/ds=<ds>/index.html`` and an MLflow artifact."""
    settings, lake = _prepare("report", ds, settings, force)

    from visrec.report.nightly import build_report

    return {"report": build_report(settings, ds, lake=lake)}


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


def run_step(
    name: str, ds: str, settings: Settings | None = None, force: bool = False, **upstream: Upstream
) -> Summary:
    """Run one step by name (``visrec step NAME --ds DATE``, the DAG's tasks); ``force`` lets it change
    a published date."""
    if name not in STEPS:
        from visrec.errors import VisrecError

        raise VisrecError(f"unknown step {name!r}; steps: {', '.join(STEPS)}")
    return STEPS[name][0](ds, settings, force=force, **upstream)


# What ``ingest_range`` records for every day of a range: a run of the DAG for such a day may reuse it.
BACKFILLED = ("ingest_events", "build_features")


def _backfilled(name: str, ds: str, settings: Settings | None) -> Summary | None:
    """The record of ``name`` for ``ds`` when a one-pass ingestion of a range wrote it, else None."""
    if name not in BACKFILLED:
        return None
    settings = settings or Settings.from_env()
    done = run_summary(Lake.from_settings(settings), ds, name)
    if done is None or "backfill" not in done:
        return None
    log.info("%s %s: done by the one-pass ingestion of %s, not run again", name, ds, done["backfill"])
    return done


def run_task(name: str, ds: str, reuse_backfill: bool = False, **upstream: Upstream) -> Summary:
    """A DAG task: visrec's logging set up in the worker, then one step with settings from the
    environment. The DAG's runs, reruns and retries of a date are deliberate: they may change it.
    ``reuse_backfill`` (a run of ``visrec run`` over a range, which ingested it in one pass first): the
    range's records of the events and features steps stand in for running them again."""
    from visrec.logs import setup_logging

    setup_logging()
    done = _backfilled(name, ds, None) if reuse_backfill else None
    return done if done is not None else run_step(name, ds, None, force=True, **upstream)


def run_all(
    ds: str,
    settings: Settings | None = None,
    on_step: Callable[[str, float], None] | None = None,
    reuse_backfill: bool = False,
):
    """Every step for ``ds`` in this process, each handed its upstream steps' results (the DAG's graph);
    ``reuse_backfill`` as in :func:`run_task`."""
    import time

    results: dict[str, Summary] = {}
    for name, (step, needs) in STEPS.items():
        started = time.perf_counter()
        done = _backfilled(name, ds, settings) if reuse_backfill else None
        results[name] = (
            done
            if done is not None
            else step(ds, settings, force=True, **{arg: results[up] for arg, up in needs.items()})
        )
        if on_step:
            on_step(name, time.perf_counter() - started)
    return results
