"""The nightly run's steps: the one place where the stages are wired together.

One function per step of :mod:`visrec.pipeline.graph`, each ``(ds, settings, **upstream) -> small
dict``. ``upstream`` are the results of the steps the declaration says it takes (the DAG passes them
through XCom): model versions, table URIs, K. A step uses what it is handed, so a task of a
distributed run never guesses what its upstream task did; called alone (``visrec step NAME --ds
DATE``) it falls back to the registry's champions and to the date's run records.

Every step reads and writes only its own ``ds`` partitions (overwriting them), so a retry, a rerun or
a backfill of a date gives the same tables. Each step's summary is recorded through
:class:`visrec.store.runs.RunLog`: the run's history for the report. Nothing here imports Airflow;
Keras, Spark and MLflow load inside the stages that use them. This module is checked against the
declaration when imported: a declared step without its function (or the reverse) fails at once.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from visrec import forget as forgetting
from visrec import publish as publishing
from visrec.errors import VisrecError
from visrec.generation import looks as generated_looks
from visrec.generation import train as gan_training
from visrec.ingest import catalog_images, day, events, features, user_photos
from visrec.logs import setup_logging
from visrec.mlops import registry, tracking
from visrec.mlops.validation import TableValidator
from visrec.pipeline.champions import rollbacks
from visrec.pipeline.graph import BY_NAME, STEPS, Step, made_by
from visrec.recsys import score as scoring
from visrec.recsys import train as mf_training
from visrec.recsys import train_ranker as ranker_training
from visrec.report import nightly
from visrec.settings import Settings
from visrec.store import engine as engines
from visrec.store import spark as spark_session
from visrec.store.catalog import read_catalog
from visrec.store.lake import Lake, check_ds, published_dates
from visrec.store.runs import RunLog, Summary
from visrec.store.schemas import quarantine_spec
from visrec.store.services import check_services
from visrec.vision import embed, photos, search
from visrec.vision import train as cnn_training

log = logging.getLogger(__name__)

Upstream = dict[str, Any] | None


class InputMissing(VisrecError):
    """A step's input for its date does not exist: the message names it and the command that makes it."""


class AlreadyPublished(VisrecError):
    """A step would change a date that is already published, and was not told ``force``."""


def _open(settings: Settings | None, ds: str) -> tuple[Settings, Lake]:
    settings = settings or Settings.from_env()
    check_ds(ds)
    check_services(settings)
    return settings, Lake.from_settings(settings)


def check_inputs(lake: Lake, step: str, ds: str) -> None:
    """Raise :class:`InputMissing` naming the first table that ``step`` reads and ``ds`` lacks."""
    for table in BY_NAME[step].reads:
        if lake.manifest(table, ds) is None:
            raise InputMissing(f"{step} {ds}: no {table} for {ds}; run `{made_by(table)} --ds {ds}` first")


def check_unpublished(lake: Lake, step: str, ds: str) -> None:
    """Raise :class:`AlreadyPublished` when ``ds`` is in the current release."""
    if ds in published_dates(lake):
        raise AlreadyPublished(
            f"{step} {ds}: {ds} is already published and this would change it; pass --force to rerun it "
            "(readers keep the published tables until the next publish)"
        )


FUNCTIONS: dict[str, Callable[..., Summary]] = {}


def step(*, checks: bool = True) -> Callable[[Callable[..., Summary]], Callable[..., Summary]]:
    """Make ``fn(ds, settings, lake, **kwargs)`` the step of its name: the public
    ``fn(ds, settings=None, force=False, **kwargs)`` opens the lake, checks before any work that the
    declared inputs for ``ds`` exist and that it would not change a published date unless ``force``
    (``checks=False``: the step checks itself), and records the summary with how long it took
    (``seconds``: the report's task times): the one place run records are written."""

    def register(fn: Callable[..., Summary]) -> Callable[..., Summary]:
        declared = BY_NAME[fn.__name__]

        @functools.wraps(fn)
        def run(ds: str, settings: Settings | None = None, *, force: bool = False, **kwargs: Any) -> Summary:
            started = time.perf_counter()
            settings, lake = _open(settings, ds)
            if checks:
                check_inputs(lake, declared.name, ds)
                if declared.changes_published and not force:
                    check_unpublished(lake, declared.name, ds)
            else:
                kwargs["force"] = force
            summary = fn(ds, settings, lake, **kwargs)
            summary = {**summary, "seconds": round(time.perf_counter() - started, 3)}
            log.info("step %s %s done in %.1fs", declared.name, ds, summary["seconds"])
            return RunLog(lake).record(ds, declared.name, summary)

        FUNCTIONS[declared.name] = run
        return run

    return register


def _trained_already(settings: Settings, lake: Lake, ds: str, name: str) -> Summary | None:
    """The summary of a model already trained for ``ds`` and still registered, if any.

    A retry or rerun of a date reuses that model instead of training another one, so rerunning a
    date gives the same tables (``VISREC_RETRAIN=1`` forces a new model)."""
    summary = None if settings.retrain else RunLog(lake).get(ds, name)
    if summary is None:
        return None
    tracking.use_tracking(settings)
    if not summary.get("version") or not registry.version_exists(summary["version"]):
        return None
    log.info(
        "%s %s: reusing %s trained for this date (VISREC_RETRAIN=1 trains anew)", name, ds, summary["version"]
    )
    return {**summary, "reused": True}


def _champion(name: str) -> str | None:
    """``name/version`` of the registered champion of ``name``, or None."""
    current = registry.champion(name)
    return f"{name}/{current.version}" if current else None


def _from(upstream: Upstream, key: str) -> Any:
    return (upstream or {}).get(key)


def _validated(ds: str, name: str, lake: Lake, run: Callable[[TableValidator], Any]) -> Any:
    """Run ``run(validator)`` with a Great Expectations validator for step ``name``; Data Docs into the lake."""
    validator = TableValidator(ds, step=name)
    try:
        return run(validator)
    finally:
        validator.publish_docs(lake)


def _engine_job(ds: str, settings: Settings, lake: Lake, name: str, job: Callable) -> Any:
    engine = engines.open_engine(settings, f"visrec-{name}")
    return _validated(ds, name, lake, lambda validator: job(settings, lake, ds, engine, validator))


@step()
def ingest_images(ds: str, settings: Settings, lake: Lake) -> Summary:
    """Catalog images -> ``staging_images`` (validated), bad files quarantined with a reason."""
    catalog, catalog_bad = read_catalog(lake)

    def run(validator: TableValidator):
        lake.write_table(quarantine_spec("catalog"), ds, catalog_bad)
        validator.validate("catalog", catalog.to_pandas())
        return catalog_images.ingest_images(settings, lake, ds, validator, catalog=catalog)

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


def _events_summary(lake: Lake, ds: str, counts: Any, reasons: dict) -> Summary:
    return {
        "table": lake.url(f"features/events/ds={ds}"),
        "raw": counts.raw,
        "valid": counts.valid,
        "quarantined": counts.quarantined,
        "duplicates": counts.duplicates,
        "reasons": reasons,
    }


@step()
def ingest_events(ds: str, settings: Settings, lake: Lake) -> Summary:
    """The day's raw event logs -> ``events`` (DuckDB or Spark), malformed/unknown/duplicate rows accounted for."""
    counts, reasons = _engine_job(ds, settings, lake, "ingest_events", events.ingest_events)
    return _events_summary(lake, ds, counts, reasons)


@step()
def build_features(ds: str, settings: Settings, lake: Lake, rebuild: bool = False) -> Summary:
    """Clean events up to ``ds`` -> interactions, user_days, user_profiles, item_stats: from the
    previous day's snapshot and the new events, or (``rebuild``) from the whole history."""

    def job(*args):
        return features.build_features(*args, rebuild=rebuild)

    return {"rows": _engine_job(ds, settings, lake, "build_features", job)}


@step()
def ingest_user_photos(ds: str, settings: Settings, lake: Lake) -> Summary:
    """The day's uploads -> stored without metadata, staged, bad files quarantined; retention applied."""
    counts, reasons = _validated(
        ds,
        "ingest_user_photos",
        lake,
        lambda validator: user_photos.ingest_user_photos(settings, lake, ds, validator),
    )
    return {
        "files": counts.files,
        "accepted": counts.accepted,
        "quarantined": counts.quarantined,
        "forgotten": counts.forgotten,
        "reasons": reasons,
    }


@dataclass(frozen=True)
class Ingested:
    """The summaries of the ingestion steps for one date."""

    images: Summary
    events: Summary
    features: Summary
    user_photos: Summary


def ingest(ds: str, settings: Settings | None = None, rebuild: bool = False) -> Ingested:
    """Every ingestion step for ``ds`` (what ``visrec ingest`` runs): images, events, features, uploads."""
    return Ingested(
        images=ingest_images(ds, settings),
        events=ingest_events(ds, settings),
        features=build_features(ds, settings, rebuild=rebuild),
        user_photos=ingest_user_photos(ds, settings),
    )


# What ``ingest_range`` records for every day of a range: a run of the DAG for such a day may reuse it.
BACKFILLED = (ingest_events.__name__, build_features.__name__)


def ingest_range(days: list[str], settings: Settings | None = None, rebuild: bool = False) -> Summary:
    """A range of days in one pass (``visrec ingest --start --end``; see
    :func:`visrec.ingest.day.ingest_days`), then each day's user photos where it has uploads (the last
    day's always: it applies the retention). Writes each day's run records."""
    days = sorted(days)
    settings, lake = _open(settings, days[-1])
    runs = RunLog(lake)
    started = time.perf_counter()
    reports = day.ingest_days(settings, days, lake=lake, rebuild=rebuild)
    backfill = {"backfill": f"{days[0]}..{days[-1]}"}
    for report in reports:
        events_summary = _events_summary(lake, report.ds, report.events, report.quarantine_reasons["events"])
        runs.record(report.ds, ingest_events.__name__, {**events_summary, **backfill})
        runs.record(report.ds, build_features.__name__, {"rows": report.rows, **backfill})
    uploads = {
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
        "user_photos": {ds: p["accepted"] for ds, p in uploads.items()},
        "data_docs": reports[-1].data_docs,
        "seconds": round(time.perf_counter() - started, 3),
    }


@step()
def train_cnn(ds: str, settings: Settings, lake: Lake, config: dict | None = None) -> Summary:
    """Train (or fine-tune from the champion) the image model; register it behind the gate.
    ``config``: :class:`visrec.vision.train.CNNConfig` fields to change (the command line's flags)."""
    if (done := _trained_already(settings, lake, ds, "train_cnn")) is not None:
        return done
    config = cnn_training.CNNConfig.from_settings(settings, **(config or {}))
    result = cnn_training.train_cnn(settings, ds, lake=lake, config=config)
    return {
        "version": result.version,
        "promoted": result.promoted,
        "reason": result.reason,
        "champion": _champion(embed.MODEL_NAME),
        "fine_tuned_from": result.fine_tuned_from,
        "start": result.start,
        "metrics": result.metrics,
    }


@step()
def embed_items(ds: str, settings: Settings, lake: Lake, cnn: Upstream = None) -> Summary:
    """Embed the catalog with the champion image model (the one ``cnn`` names); exact top-K ``similar_items``."""
    tracking.use_tracking(settings)
    model, version = embed.load_cnn(_from(cnn, "champion"))
    embeddings = embed.embed_items(settings, ds, lake, model, version)
    similar = embed.build_similar_items(lake, ds, k=settings.similar_k)
    return {
        "model_version": version,
        "item_embeddings": embeddings.num_rows,
        "similar_items": similar.num_rows,
        "table": lake.url(f"features/item_embeddings/ds={ds}"),
    }


@step()
def recognise_user_photos(ds: str, settings: Settings, lake: Lake, embeddings: Upstream = None) -> Summary:
    """Retained photos through the image model that embedded the catalog -> user_photos; today's ->
    photo_recommendations."""
    tracking.use_tracking(settings)
    model, version = embed.load_cnn(_from(embeddings, "model_version"))
    recognised, recs = photos.recognise_user_photos(settings, lake, ds, model, version)
    return {
        "model_version": version,
        "user_photos": recognised.num_rows,
        "photo_recommendations": recs.num_rows,
    }


@step()
def train_mf(ds: str, settings: Settings, lake: Lake, config: dict | None = None) -> Summary:
    """Select and evaluate a new VBPR beside popularity and the champion on the same window; register
    it behind the gate. ``config``: :class:`visrec.recsys.train.MFConfig` fields to change (the model's
    own settings are ``VISREC_MF_*``)."""
    if (done := _trained_already(settings, lake, ds, "train_mf")) is not None:
        return done
    config = mf_training.MFConfig.from_settings(settings, **(config or {}))
    result = mf_training.train_mf(settings, ds, lake=lake, config=config)
    return {
        "version": result.version,
        "promoted": result.promoted,
        "reason": result.reason,
        "champion": _champion(mf_training.MODEL_NAME),
        "serving": result.serving,
        "selected": result.selected,
        "metrics": result.metrics,
    }


@step()
def train_ranker(ds: str, settings: Settings, lake: Lake) -> Summary:
    """Learn the second-stage ranker over the candidate generators on the validation design, judge it
    beside each generator alone, write its training set to ``ranker_training`` and register it behind
    the gate (champion only if it beats the best single generator, popularity and the served
    recommender)."""
    if (done := _trained_already(settings, lake, ds, "train_ranker")) is not None:
        return done
    result = _validated(
        ds,
        "train_ranker",
        lake,
        lambda validator: ranker_training.train_ranker(settings, ds, lake=lake, validator=validator),
    )
    gate = f"recall_at_{settings.eval_k}"
    return {
        "trained": result.trained,
        "version": result.version,
        "promoted": result.promoted,
        "reason": result.reason,
        "champion": _champion(ranker_training.MODEL_NAME) if result.trained else None,
        # The report tabulates these (and their change from the night before): the gate's metric of the
        # ranker and of each generator alone; the recall among each generator's best 100 and among the
        # ranker's candidates (the ceilings); the share of the gain of its eight leading features.
        "metrics": {
            gate: {name: round(m[gate], 4) for name, m in result.metrics.items()},
            "candidate_recall": {
                name: round(m.get("candidate_recall", m.get("candidate_recall_at_100", 0.0)), 4)
                for name, m in result.metrics.items()
            },
            "importance": dict(list(result.importance.items())[:8]),
        },
        "training_rows": result.training_rows,
    }


@step()
def train_gan(
    ds: str, settings: Settings, lake: Lake, embeddings: Upstream = None, config: dict | None = None
) -> Summary:
    """Train the conditional GAN when it is due (see ``gan_due``; always when ``VISREC_RETRAIN``),
    judged by the image model that embedded the catalog; otherwise keep the champion. ``config``:
    :class:`visrec.generation.train.GANConfig` fields to change."""
    if (done := _trained_already(settings, lake, ds, "train_gan")) is not None:
        return done
    tracking.use_tracking(settings)
    runs = RunLog(lake)
    last = runs.last("train_gan", ds, "trained")
    due, why = (
        (True, "asked to retrain") if settings.retrain else gan_training.gan_due(settings, lake, ds, last)
    )
    if not due:
        version = _champion(gan_training.MODEL_NAME)
        log.info("train_gan %s: not due (%s); generating with %s", ds, why, version)
        return {"trained": False, "reason": why, "champion": version}
    cnn, _ = embed.load_cnn(_from(embeddings, "model_version"))
    config = gan_training.GANConfig.from_settings(settings, **(config or {}))
    result = gan_training.train_gan(settings, ds, lake=lake, config=config, cnn=cnn)
    items = lake.read_table("staging_images", ds).column("item_id").to_pylist()
    return {
        "trained": True,
        "due_because": why,
        "version": result.version,
        "promoted": result.promoted,
        "reason": result.reason,
        "champion": _champion(gan_training.MODEL_NAME),
        "metrics": result.metrics,
        "items": items,
        "samples": runs.put_file(ds, "gan_samples.png", result.samples),
    }


@step()
def generate_looks(
    ds: str,
    settings: Settings,
    lake: Lake,
    gan: Upstream = None,
    mf: Upstream = None,
    embeddings: Upstream = None,
) -> Summary:
    """Generated looks for the most active users of each segment, with the champion GAN."""
    tracking.use_tracking(settings)
    gan_version = _from(gan, "champion") or _champion(gan_training.MODEL_NAME)
    if gan_version is None:
        return {"looks": 0, "reason": "no GAN champion yet"}
    generator, gan_version = gan_training.load_gan(gan_version)
    cnn, _ = embed.load_cnn(_from(embeddings, "model_version"))
    scorer = mf_training.champion_scorer(settings, version=_from(mf, "champion"))
    table = generated_looks.generate_looks(settings, lake, ds, generator, cnn, gan_version, scorer=scorer)
    return {
        "gan_version": gan_version,
        "looks": table.num_rows,
        "users": len(set(table.column("user_id").to_pylist())),
    }


@step(checks=False)
def score(
    ds: str,
    settings: Settings,
    lake: Lake,
    mf: Upstream = None,
    looks: Upstream = None,
    exclude: list[str] | None = None,
    force: bool = False,
    latest_features: bool = False,
) -> Summary:
    """Top-K for every user with the champion recommender (the one ``mf`` names) -> ``recommendations``.
    Scores with ``ds``'s own features; ``latest_features``: with the newest at or before ``ds`` (a
    deliberate choice, recorded as ``features_ds``)."""
    features_ds = ds
    if latest_features:  # the newest date at or before ds with every input of scoring
        tables = BY_NAME["score"].reads
        ready = [
            d
            for d in lake.partitions("user_profiles")
            if d <= ds and all(lake.manifest(x, d) for x in tables)
        ]
        features_ds = ready[-1] if ready else ds
    check_inputs(lake, "score", features_ds)
    if not force:
        check_unpublished(lake, "score", ds)
    if looks is None:
        looks = RunLog(lake).get(ds, "generate_looks")
    # The champion's lists while it beats popularity (the last training's verdict), else popularity's.
    # A reference, not the model: on Spark each task loads it, and the driver never holds it.
    serve = _from(mf, "serving") or mf_training.serving(settings)[0]
    champion = (_from(mf, "champion") or _champion(mf_training.MODEL_NAME)) if serve == "model" else None
    scorer = scoring.ScorerRef(champion) if champion else None
    spark = None
    if engines.engine_name(settings) == "spark":  # on a cluster, Spark tasks score the users in shards
        spark = spark_session.get_spark(settings, "visrec-score")
    scored = scoring.score_users(
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


@step()
def publish(ds: str, settings: Settings, lake: Lake, recommendations: Upstream = None) -> Summary:
    """Validate ``ds``'s output tables, switch the release, refresh the DuckDB views. Lists must hold
    the K that ``score`` used (from ``recommendations``, or the date's score record when run alone)."""
    scored = recommendations or RunLog(lake).get(ds, "score") or {}
    result = publishing.publish(settings, ds, lake=lake, k=scored.get("k", settings.top_k))
    return {
        "rows": result.rows,
        "warehouse": result.warehouse,
        "published_at": result.published_at,
    }


@step()
def report(ds: str, settings: Settings, lake: Lake, **night: Upstream) -> Summary:
    """The run's HTML report -> ``reports/ds=<ds>/index.html`` and an MLflow artifact, from the night's
    step results (``night``: every step's, as the DAG hands them; run alone, the date's run records)."""
    given = {name: summary for name, summary in night.items() if summary is not None}
    tracking.use_tracking(settings)
    moves = [asdict(move) for move in rollbacks()]
    return {"report": nightly.build_report(settings, ds, given or None, lake=lake, champion_moves=moves)}


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
    lake = lake or Lake.from_settings(settings)
    depth = max(50, 5 * k) if user else k
    matches, context = search.find_similar_to_photo(settings, photo, name, k=depth, lake=lake, ds=ds)
    context["reranked_by"] = None
    if user:
        matches, context["reranked_by"] = scoring.rerank_for_user(settings, user, matches, k)
    return matches, context


def forget(user_id: str, settings: Settings | None = None) -> forgetting.ForgetReport:
    """Remove ``user_id`` from the lake and the warehouse, and from every later run (``visrec forget``)."""
    settings = settings or Settings.from_env()
    return forgetting.forget_user(settings, user_id, lake=Lake.from_settings(settings))


def _check_against_graph() -> None:
    """Every declared step has its function here, taking the results the declaration says it takes."""
    missing = [s.name for s in STEPS if s.name not in FUNCTIONS]
    extra = sorted(set(FUNCTIONS) - set(BY_NAME))
    wrong = []
    for declared in STEPS:
        if declared.name in FUNCTIONS:
            params = inspect.signature(FUNCTIONS[declared.name].__wrapped__).parameters
            var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
            if not var_kw and set(declared.takes) - set(params):
                wrong.append(f"{declared.name} takes {sorted(declared.takes)}")
    if missing or extra or wrong:
        raise RuntimeError(
            f"pipeline steps disagree with visrec.pipeline.graph: missing {missing}, "
            f"undeclared {extra}, signatures {wrong}"
        )


_check_against_graph()


def run_step(
    name: str, ds: str, settings: Settings | None = None, force: bool = False, **upstream: Upstream
) -> Summary:
    """Run one step by name (``visrec step NAME --ds DATE``, the DAG's tasks); ``force`` lets it change
    a published date."""
    if name not in FUNCTIONS:
        raise VisrecError(f"unknown step {name!r}; steps: {', '.join(FUNCTIONS)}")
    return FUNCTIONS[name](ds, settings, force=force, **upstream)


def _backfilled(name: str, ds: str, settings: Settings | None) -> Summary | None:
    """The record of ``name`` for ``ds`` when a one-pass ingestion of a range wrote it, else None."""
    if name not in BACKFILLED:
        return None
    done = RunLog(Lake.from_settings(settings or Settings.from_env())).backfilled(ds, name)
    if done is not None:
        log.info("%s %s: done by the one-pass ingestion of %s, not run again", name, ds, done["backfill"])
    return done


def run_task(name: str, ds: str, reuse_backfill: bool = False, **upstream: Upstream) -> Summary:
    """A DAG task: visrec's logging set up in the worker, then one step with settings from the
    environment. The DAG's runs, reruns and retries of a date are deliberate: they may change it.
    ``reuse_backfill`` (a run of ``visrec run`` over a range, which ingested it in one pass first): the
    range's records of the events and features steps stand in for running them again."""
    setup_logging()
    done = _backfilled(name, ds, None) if reuse_backfill else None
    return done if done is not None else run_step(name, ds, None, force=True, **upstream)


def run_all(
    ds: str,
    settings: Settings | None = None,
    on_step: Callable[[str, float], None] | None = None,
    reuse_backfill: bool = False,
) -> dict[str, Summary]:
    """Every step for ``ds`` in this process in the declared order, each handed the results it takes
    (the DAG's graph); ``reuse_backfill`` as in :func:`run_task`."""
    results: dict[str, Summary] = {}
    for declared in STEPS:
        started = time.perf_counter()
        done = _backfilled(declared.name, ds, settings) if reuse_backfill else None
        if done is None:
            taken = {arg: results[up] for arg, up in declared.takes.items()}
            done = FUNCTIONS[declared.name](ds, settings, force=True, **taken)
        results[declared.name] = done
        if on_step:
            on_step(declared.name, time.perf_counter() - started)
    return results


__all__ = [
    "AlreadyPublished",
    "InputMissing",
    "Step",
    "check_inputs",
    "check_unpublished",
    "run_all",
    "run_step",
    "run_task",
    *FUNCTIONS,
    "ingest",
    "ingest_range",
    "find_similar",
    "forget",
]
