"""visrec nightly: ingest -> features -> image model -> embeddings, user photos -> recommender -> GAN ->
generated looks -> score -> publish -> report.

The tasks are built in a loop from the step graph declared once in ``visrec.pipeline.graph``: each
task is one call into ``visrec.pipeline`` (the only visrec module this file imports; the steps load
inside the task) for the run's logical date (``ds``). A task is handed the results of the steps it
takes (counts, model versions, lake URIs, K) through XCom, never dataframes; a step that only has to
come after another gets a plain dependency. Every task overwrites only its own ``ds`` partitions, so
retries, reruns and backfills (``airflow dags backfill`` or ``visrec run --ds ...``) are safe; only
``publish`` changes what readers see, in one step, after validation, and emits an Airflow Asset event
per published table (``visrec.<table>``, the release's ``ds`` and row count in its extra): the
``visrec_serving_export`` DAG is scheduled on ``visrec.recommendations``.

Queues (Celery): Spark jobs go to ``spark``, model training to ``training`` (where a GPU worker plugs
in), everything else to ``default``; a worker serves some or all of them (``airflow celery worker
--queues``). Pools: ``visrec_spark`` and ``visrec_training``, sized by ``VISREC_SPARK_POOL_SLOTS`` and
``VISREC_TRAINING_POOL_SLOTS`` (1 each), created by ``visrec run`` and ``visrec cluster up``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, task

from visrec import pipeline
from visrec_airflow.sensors import RawEventsSensor

WAIT_TASK = "wait_for_events"
# A training that runs past this is stuck: fail it (and retry) rather than hold its pool slot all night.
TIMEOUTS = {"training": timedelta(hours=1)}

DEFAULT_ARGS = {
    "owner": "visrec",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    # Once a task has used its retries: a log line, and a post to VISREC_ALERT_WEBHOOK when set.
    "on_failure_callback": pipeline.task_failed,
}


# Each published table is an Asset: DAGs downstream (dags/visrec_serving_export.py) schedule on them.
ASSETS = {table: Asset(**pipeline.asset(table)) for table in pipeline.PUBLISHED_TABLES}


def _task(step: pipeline.Step):
    """The TaskFlow task of one declared step (the publishing one with its tables' Assets as outlets)."""
    where = {"queue": step.queue, **({"pool": step.pool} if step.pool else {})}
    if step.queue in TIMEOUTS:
        where["execution_timeout"] = TIMEOUTS[step.queue]
    outlets = [ASSETS[table] for table in step.publishes]

    @task(task_id=step.name, doc_md=step.doc, outlets=outlets, **where)
    def run(upstream: dict, ds: str | None = None, params: dict | None = None, outlet_events=None) -> dict:
        ingested = bool((params or {}).get("ingested"))
        result = pipeline.run_task(step.name, ds, reuse_backfill=ingested, **upstream)
        for table in step.publishes:  # the asset event says which release, and how big
            rows = (result.get("rows") or {}).get(table)
            outlet_events[ASSETS[table]].extra = {
                "ds": ds,
                "rows": rows,
                "published_at": result.get("published_at"),
            }
        return result

    return run


@dag(
    dag_id="visrec_nightly",
    schedule=pipeline.dag_schedule(),
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
    # First, the day's raw events (or an empty file declaring an empty day), waited for in the triggerer.
    arrived = RawEventsSensor(task_id=WAIT_TASK, doc_md="the day's raw events are in the lake")
    results = {}  # step name -> its task's XCom result
    for step in pipeline.STEPS:  # declared in order: every upstream step is built before
        results[step.name] = _task(step)({arg: results[up] for arg, up in step.takes.items()})
        for up in step.follows:
            results[up] >> results[step.name]
        if not step.upstream:
            arrived >> results[step.name]


visrec_nightly()
