"""The nightly run: its step graph (:mod:`visrec.pipeline.graph`) and its steps
(:mod:`visrec.pipeline.steps`).

This package's top is light (the standard library and pydantic): the Airflow scheduler imports it
each time it parses the DAG, which builds its tasks from :data:`STEPS`. The steps load on first use,
in the task.
"""

from __future__ import annotations

from typing import Any

from visrec.pipeline.alerts import task_failed
from visrec.pipeline.graph import BY_NAME, NAMES, POOLS, PUBLISHED_TABLES, STEPS, Step
from visrec.settings import Settings


def dag_schedule(settings: Settings | None = None) -> str | None:
    """The nightly DAG's schedule (``VISREC_DAG_SCHEDULE``; None: only when triggered)."""
    schedule = (settings or Settings.from_env()).dag_schedule
    return None if schedule.lower() == "none" else schedule


def run_task(name: str, ds: str, reuse_backfill: bool = False, **upstream: Any) -> dict[str, Any]:
    """A DAG task: one step of the graph for the run's date (see :func:`visrec.pipeline.steps.run_task`)."""
    # Imported here, in the task: the steps load pandas, scipy and PIL (1.1 s, 140 MB measured with
    # `python -X importtime`), which parsing the DAG must not pay.
    from visrec.pipeline import steps

    return steps.run_task(name, ds, reuse_backfill=reuse_backfill, **upstream)


def asset(table: str, settings: Settings | None = None) -> dict[str, str]:
    """A published table's Airflow Asset, as ``Asset(**asset(table))`` takes it: its name (what a
    consumer DAG schedules on), its URI (where it lives: the lake's ``published/<table>``) and group."""
    lake_uri = (settings or Settings.from_env()).lake_uri.rstrip("/")
    return {"name": f"visrec.{table}", "uri": f"{lake_uri}/published/{table}", "group": "visrec"}


def raw_events(ds: str, settings: Settings | None = None) -> dict[str, Any]:
    """What the lake holds of ``ds``'s raw event logs: how many ``files`` (an empty file is an
    explicitly empty day), ``where`` (the folder's URL), and the wait the nightly DAG's sensor allows
    them (``wait_minutes``)."""
    from visrec.store.lake import Lake  # in the task and the triggerer: the lake loads pyarrow

    settings = settings or Settings.from_env()
    lake = Lake.from_settings(settings)
    folder = f"raw/events/dt={ds}"
    return {
        "ds": ds,
        "files": len(lake.list_keys(folder)),
        "where": lake.url(folder),
        "wait_minutes": settings.events_wait_minutes,
    }


def export_serving(ds: str | None = None, force: bool = False) -> dict[str, Any]:
    """The serving export DAG's task: :func:`visrec.serving.export_recommendations` for ``ds``."""
    from visrec import serving  # in the task: it loads pyarrow and SQLAlchemy

    done = serving.export_recommendations(Settings.from_env(), ds, force=force)
    return {"ds": done.ds, "rows": done.rows, "serving": done.uri, "skipped": done.skipped}


__all__ = [
    "BY_NAME",
    "NAMES",
    "POOLS",
    "PUBLISHED_TABLES",
    "STEPS",
    "Step",
    "asset",
    "dag_schedule",
    "export_serving",
    "raw_events",
    "run_task",
    "task_failed",
]
