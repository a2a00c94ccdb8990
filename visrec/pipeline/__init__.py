"""The nightly run: its step graph (:mod:`visrec.pipeline.graph`) and its steps
(:mod:`visrec.pipeline.steps`).

This package's top is light (the standard library and pydantic): the Airflow scheduler imports it
each time it parses the DAG, which builds its tasks from :data:`STEPS`. The steps load on first use,
in the task.
"""

from __future__ import annotations

from typing import Any

from visrec.pipeline.graph import BY_NAME, NAMES, POOLS, STEPS, Step
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


__all__ = ["BY_NAME", "NAMES", "POOLS", "STEPS", "Step", "dag_schedule", "run_task"]
