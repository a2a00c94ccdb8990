"""visrec nightly: ingest -> features -> image model -> embeddings, user photos -> recommender -> score ->
publish -> report.

Each task is one call into ``visrec.pipeline`` for the run's logical date (``ds``); heavy libraries are
imported inside the tasks, never when the scheduler parses this file. Tasks pass small summaries (counts,
model versions, lake URIs) through XCom, never dataframes. Every task overwrites only its own ``ds``
partitions, so retries, reruns and backfills (``airflow dags backfill`` or ``visrec run --ds ...``) are
safe; only ``publish`` changes what readers see, in one step, after validation.

Pools (created by ``visrec run``; create them with ``airflow pools set`` on a shared Airflow):
``visrec_spark`` (1 slot: one local Spark job at a time) and ``visrec_training`` (1 slot).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

SPARK_POOL = "visrec_spark"
TRAINING_POOL = "visrec_training"

DEFAULT_ARGS = {
    "owner": "visrec",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}


def _run(step: str, ds: str) -> dict:
    from visrec.cli import setup_logging
    from visrec.pipeline import STEPS

    setup_logging()
    return STEPS[step](ds)


@dag(
    dag_id="visrec_nightly",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(hours=6),
    tags=["visrec"],
    doc_md=__doc__,
)
def visrec_nightly():
    @task(pool=SPARK_POOL)
    def ingest_events(ds: str | None = None) -> dict:
        return _run("ingest_events", ds)

    @task
    def ingest_images(ds: str | None = None) -> dict:
        return _run("ingest_images", ds)

    @task
    def ingest_user_photos(ds: str | None = None) -> dict:
        return _run("ingest_user_photos", ds)

    @task(pool=SPARK_POOL)
    def build_features(events: dict, ds: str | None = None) -> dict:
        return _run("build_features", ds)

    @task(pool=TRAINING_POOL, execution_timeout=timedelta(hours=1))
    def train_cnn(images: dict, ds: str | None = None) -> dict:
        return _run("train_cnn", ds)

    @task
    def embed_items(cnn: dict, ds: str | None = None) -> dict:
        return _run("embed_items", ds)

    @task(pool=TRAINING_POOL, execution_timeout=timedelta(hours=1))
    def train_mf(features: dict, embeddings: dict, ds: str | None = None) -> dict:
        return _run("train_mf", ds)

    @task(pool=TRAINING_POOL, execution_timeout=timedelta(hours=1))
    def train_gan(embeddings: dict, ds: str | None = None) -> dict:
        return _run("train_gan", ds)

    @task
    def generate_looks(gan: dict, mf: dict, ds: str | None = None) -> dict:
        return _run("generate_looks", ds)

    @task
    def recognise_user_photos(uploads: dict, embeddings: dict, ds: str | None = None) -> dict:
        return _run("recognise_user_photos", ds)

    @task
    def score(mf: dict, photos: dict, looks: dict, ds: str | None = None) -> dict:
        return _run("score", ds)

    @task
    def publish(recommendations: dict, looks: dict, ds: str | None = None) -> dict:
        return _run("publish", ds)

    @task
    def report(published: dict, ds: str | None = None) -> dict:
        return _run("report", ds)

    images = ingest_images()
    features = build_features(ingest_events())
    embeddings = embed_items(train_cnn(images))
    photos = recognise_user_photos(ingest_user_photos(), embeddings)
    mf = train_mf(features, embeddings)
    looks = generate_looks(train_gan(embeddings), mf)
    report(publish(score(mf, photos, looks), looks))


visrec_nightly()
