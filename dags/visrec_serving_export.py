"""visrec serving export: when the nightly run publishes recommendations, copy the release into the
serving store an application reads per user (``VISREC_SERVING_URI``: a SQLite file by default,
PostgreSQL on a cluster), swapped atomically.

Scheduled on the ``visrec.recommendations`` Asset, which the nightly DAG's ``publish`` task emits with
the release's ``ds`` in the event's extra. Idempotent per date: an export of what is served already
does nothing, and an older date (a backfill's run) never replaces a newer one; ``visrec export --ds D
--force`` does, on purpose. Its one task calls ``visrec.pipeline.export_serving``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task

from visrec import pipeline

RECOMMENDATIONS = Asset(**pipeline.asset("recommendations"))


@dag(
    dag_id="visrec_serving_export",
    schedule=[RECOMMENDATIONS],
    start_date=pendulum.datetime(2000, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "visrec", "retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["visrec"],
    doc_md=__doc__,
)
def visrec_serving_export():
    @task(queue="default")
    def export(triggering_asset_events=None) -> dict:
        events = (triggering_asset_events or {}).get(RECOMMENDATIONS, [])
        dates = [e.extra["ds"] for e in events if (e.extra or {}).get("ds")]
        # The newest release among the events (several can arrive while a run waits).
        return pipeline.export_serving(max(dates) if dates else None)

    export()


visrec_serving_export()
