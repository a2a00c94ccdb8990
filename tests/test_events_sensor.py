"""The nightly DAG's first task waits for the day's raw events in the triggerer: the sensor succeeds at
once when they are there (an empty file declares an empty day), else defers to its trigger, which
fires when they arrive or at the deadline; a timeout fails the task in one line, without retries.
(The whole DAG failing at the sensor: tests/test_pipeline.py; the triggerer holding the wait: make
cluster-test.)"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from visrec.settings import Settings
from visrec.store.lake import Lake
from visrec_airflow.sensors import RawEventsSensor, RawEventsTrigger

pytestmark = pytest.mark.unit

DS = "2026-11-07"


@pytest.fixture
def lake(tmp_path, monkeypatch):
    monkeypatch.setenv("VISREC_HOME", str(tmp_path))
    monkeypatch.setenv("VISREC_EVENTS_WAIT_MINUTES", "0.05")
    return Lake.from_settings(Settings.from_env())


def _first_event(trigger: RawEventsTrigger) -> dict:
    async def first():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first())


def test_the_sensor_passes_at_once_when_the_day_is_there(lake):
    lake.put_bytes(f"raw/events/dt={DS}/events.jsonl", b"")  # an explicitly empty day
    found = RawEventsSensor(task_id="wait").execute({"ds": DS})
    assert found["files"] == 1 and found["where"].endswith(f"raw/events/dt={DS}")


def test_the_sensor_defers_to_its_trigger_and_fails_in_one_line_at_the_deadline(lake):
    sensor = RawEventsSensor(task_id="wait")
    assert sensor.retries == 0
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"ds": DS})
    trigger = deferred.value.trigger
    assert (
        isinstance(trigger, RawEventsTrigger)
        and trigger.serialize()[0] == "visrec_airflow.sensors.RawEventsTrigger"
    )
    deadline = datetime.fromisoformat(trigger.deadline)
    assert timedelta(seconds=1) < deadline - datetime.now(UTC) <= timedelta(seconds=3)
    started = time.monotonic()
    event = _first_event(trigger)
    assert event["status"] == "timeout" and 1 < time.monotonic() - started < 10
    with pytest.raises(AirflowFailException) as failed:
        sensor.execute_complete({"ds": DS}, event)
    message = str(failed.value)
    assert (
        message.startswith(f"no raw events for {DS} after 0.05 minutes: nothing under ")
        and "\n" not in message
    )


def test_the_trigger_fires_when_the_events_arrive(lake):
    deadline = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    trigger = RawEventsTrigger(DS, deadline, poll=0.2)
    later = threading.Timer(1.0, lambda: lake.put_bytes(f"raw/events/dt={DS}/a.jsonl", b'{"x": 1}\n'))
    later.start()
    started = time.monotonic()
    event = _first_event(trigger)
    assert event["status"] == "arrived" and event["files"] == 1 and time.monotonic() - started < 10
