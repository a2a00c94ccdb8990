"""Waiting for a day's raw events in the triggerer, not in a worker slot.

``RawEventsSensor`` is the nightly DAG's first task: if the date's raw event logs (or an explicit empty
day: an empty file in ``raw/events/dt=<ds>/``) are in the lake it succeeds at once; otherwise it defers
to ``RawEventsTrigger``, which the triggerer runs, looking every ``poll`` seconds until
``VISREC_EVENTS_WAIT_MINUTES`` have passed. Then the task fails with one line naming what is missing,
without retries, and nothing downstream runs. The lake is checked by ``visrec.pipeline.raw_events``
(both run in processes with visrec's settings in their environment).

In ``visrec_airflow`` (installed with visrec), because the triggerer imports the trigger by module
path and ``visrec`` itself never imports Airflow.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from visrec import pipeline


class RawEventsTrigger(BaseTrigger):
    """Fires when ``ds``'s raw events arrive, or with ``timeout`` once ``deadline`` (ISO, UTC) passes."""

    def __init__(self, ds: str, deadline: str, poll: float):
        super().__init__()
        self.ds, self.deadline, self.poll = ds, deadline, poll

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__name__}", {
            "ds": self.ds,
            "deadline": self.deadline,
            "poll": self.poll,
        }

    async def run(self):
        deadline = datetime.fromisoformat(self.deadline)
        while True:
            found = await asyncio.to_thread(pipeline.raw_events, self.ds)
            if found["files"]:
                yield TriggerEvent({"status": "arrived", **found})
                return
            if datetime.now(UTC) >= deadline:
                yield TriggerEvent({"status": "timeout", **found})
                return
            await asyncio.sleep(self.poll)


class RawEventsSensor(BaseSensorOperator):
    """Wait (deferred) up to ``VISREC_EVENTS_WAIT_MINUTES`` for the run date's raw events."""

    def __init__(self, **kwargs: Any):
        super().__init__(retries=0, **kwargs)  # a timeout is the answer, not a fault to retry

    def execute(self, context) -> dict:
        ds = context["ds"]
        found = pipeline.raw_events(ds)
        if found["files"]:
            return found
        wait = found["wait_minutes"]
        deadline = datetime.now(UTC) + timedelta(minutes=wait)
        self.log.info("no raw events for %s yet at %s: waiting until %s", ds, found["where"], deadline)
        poll = max(1.0, min(30.0, wait * 60 / 10))
        self.defer(
            trigger=RawEventsTrigger(ds, deadline.isoformat(), poll),
            method_name="execute_complete",
        )

    def execute_complete(self, context, event: dict) -> dict:
        if event["status"] != "arrived":
            raise AirflowFailException(
                f"no raw events for {event['ds']} after {event['wait_minutes']:g} minutes: nothing under "
                f"{event['where']} (an empty file there declares an empty day; VISREC_EVENTS_WAIT_MINUTES "
                "sets the wait)"
            )
        return {k: v for k, v in event.items() if k != "status"}
