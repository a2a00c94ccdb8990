"""visrec nightly: ingest -> features -> image model -> embeddings, user photos -> recommender -> score ->
publish -> report.

Each task is one call into ``visrec.pipeline`` (the only visrec module this file imports, inside the
tasks) for the run's logical date (``ds``); heavy libraries are imported inside the tasks, never when
the scheduler parses this file. Tasks hand their results (counts, model versions, lake URIs, K) to the
tasks that depend on them through XCom, and those use them: never dataframes. Every task overwrites only its own ``ds``
partitions, so retries, reruns and backfills (``airflow dags backfill`` or ``visrec run --ds ...``) are
safe; only ``publish`` changes what readers see, in one step, after validation.

Queues (Celery): Spark jobs go to ``spark``, model training to ``training`` (where a GPU worker plugs
in), everything else to ``default``; a worker serves some or all of them (``airflow celery worker
--queues``). Pools: ``visrec_spark`` and ``visrec_training``, sized by ``VISREC_SPARK_POOL_SLOTS`` and
``VISREC_TRAINING_POOL_SLOTS`` (1 each), created by ``visrec run`` and ``visrec cluster up``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

from visrec.settings import Settings

SETTINGS = Settings.from_env()  # light (pydantic): the schedule; the heavy libraries load in the tasks

SPARK_POOL = "visrec_spark"
TRAINING_POOL = "visrec_training"
SPARK = {"pool": SPARK_POOL, "queue": "spark"}
TRAINING = {"pool": TRAINING_POOL, "queue": "training", "execution_timeout": timedelta(hours=1)}

DEFAULT_ARGS = {
    "owner": "visrec",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}


def _run(step: str, ds: str, params: dict | None = None, **upstream: dict) -> dict:
    """One pipeline step for the run's date, handed the results of the tasks it depends on."""
    from visrec import pipeline

    return pipeline.run_task(step, ds, reuse_backfill=bool((params or {}).get("ingested")), **upstream)


@dag(
    dag_id="visrec_nightly",
    schedule=None if SETTINGS.dag_schedule.lower() == "none" else SETTINGS.dag_schedule,
    # Early enough for any shop's history: a run for a date before start_date runs no task at all.
    start_date=pendulum.datetime(2000, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(hours=6),
    tags=["visrec"],
    doc_md=__doc__,
    params={
        "ingested": Param(
            False,
            type="boolean",
            description="the date's events and features were ingested by `visrec ingest --start --end` "
            "(as `visrec run --start --end` does first): reuse them",
        )
    },
)
def visrec_nightly():
    @task(**SPARK)
    def ingest_events(ds: str | None = None, params: dict | None = None) -> dict:
        return _run("ingest_events", ds, params)

    @task
    def ingest_images(ds: str | None = None) -> dict:
        return _run("ingest_images", ds)

    @task
    def ingest_user_photos(ds: str | None = None) -> dict:
        return _run("ingest_user_photos", ds)

    @task(**SPARK)
    def build_features(events: dict, ds: str | None = None, params: dict | None = None) -> dict:
        return _run("build_features", ds, params, events=events)

    @task(**TRAINING)
    def train_cnn(images: dict, ds: str | None = None) -> dict:
        return _run("train_cnn", ds, images=images)

    @task
    def embed_items(cnn: dict, ds: str | None = None) -> dict:
        return _run("embed_items", ds, cnn=cnn)

    @task(**TRAINING)
    def train_mf(features: dict, embeddings: dict, ds: str | None = None) -> dict:
        return _run("train_mf", ds, features=features, embeddings=embeddings)

    @task(**TRAINING)
    def train_gan(embeddings: dict, ds: str | None = None) -> dict:
        return _run("train_gan", ds, embeddings=embeddings)

    @task
    def generate_looks(gan: dict, mf: dict, embeddings: dict, ds: str | None = None) -> dict:
        return _run("generate_looks", ds, gan=gan, mf=mf, embeddings=embeddings)

    @task
    def recognise_user_photos(uploads: dict, embeddings: dict, ds: str | None = None) -> dict:
        return _run("recognise_user_photos", ds, uploads=uploads, embeddings=embeddings)

    @task
    def score(mf: dict, photos: dict, looks: dict, ds: str | None = None) -> dict:
        return _run("score", ds, mf=mf, photos=photos, looks=looks)

    @task
    def publish(recommendations: dict, looks: dict, ds: str | None = None) -> dict:
        return _run("publish", ds, recommendations=recommendations, looks=looks)

    @task
    def report(published: dict, ds: str | None = None) -> dict:
        return _run("report", ds, published=published)

    images = ingest_images()
    features = build_features(ingest_events())
    embeddings = embed_items(train_cnn(images))
    photos = recognise_user_photos(ingest_user_photos(), embeddings)
    mf = train_mf(features, embeddings)
    looks = generate_looks(train_gan(embeddings), mf, embeddings)
    report(publish(score(mf, photos, looks), looks))


visrec_nightly()
