"""Run the nightly DAG for one or more dates: through Airflow (``airflow dags test``) or in-process.

visrec never imports Airflow: this module drives the ``airflow`` command installed beside it, with an
``AIRFLOW_HOME`` under ``VISREC_HOME`` (SQLite metadata), the repository's ``dags/`` folder, no
example DAGs, and the two pools the DAG uses. ``airflow dags test`` runs every task of one DAG run in
one process, honouring retries, and exits non-zero when the run fails.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from visrec.errors import VisrecError
from visrec.pipeline import POOLS, STEPS, steps
from visrec.settings import Settings
from visrec.store.catalog import CATALOG_KEY
from visrec.store.lake import Lake, check_ds
from visrec.store.runs import RunLog

log = logging.getLogger(__name__)

DAG_ID = "visrec_nightly"
DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"
# Each pool's description in Airflow.
POOL_NOTES = {pool: f"visrec's {queue} tasks at once" for queue, pool in POOLS.items()}


def pool_slots(settings: Settings) -> dict[str, int]:
    """Each pool of the step graph (one per bounded queue) and its size, from the settings."""
    sizes = {"spark": settings.spark_pool_slots, "training": settings.training_pool_slots}
    return {pool: sizes[queue] for queue, pool in POOLS.items()}


class RunFailed(VisrecError):
    """A DAG run failed; the message says which date and where its log is."""


@dataclass
class DateRun:
    """One date's run: how long it took and each task's seconds (from the step summaries)."""

    ds: str
    seconds: float
    log: str | None = None
    task_seconds: dict[str, float] = field(default_factory=dict)


def airflow_env(settings: Settings) -> dict[str, str]:
    """The environment the ``airflow`` command runs with (the caller's, plus visrec's defaults)."""
    env = dict(os.environ)
    env.setdefault("AIRFLOW_HOME", str(settings.home / "airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS_FOLDER))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__CORE__PARALLELISM", "2")
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env.update(settings.to_env())
    return env


def _airflow_bin() -> str:
    local = Path(sys.executable).with_name("airflow")
    found = str(local) if local.exists() else shutil.which("airflow")
    if not found:
        raise VisrecError("the `airflow` command is not installed; run `make demo` or `pip install -e .`")
    return found


def prepare_airflow(settings: Settings) -> dict[str, str]:
    """Create Airflow's metadata database (once) and the DAG's pools; return the environment."""
    env = airflow_env(settings)
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    airflow = _airflow_bin()
    if not (home / "airflow.db").exists():
        _call([airflow, "db", "migrate"], env, "create Airflow's metadata database")
    for pool, slots in pool_slots(settings).items():
        _call([airflow, "pools", "set", pool, str(slots), POOL_NOTES[pool]], env, f"create the pool {pool}")
    return env


def _call(cmd: list[str], env: dict[str, str], what: str, log_path: Path | None = None) -> None:
    out = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        result = subprocess.run(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT if log_path else subprocess.PIPE, text=True
        )
    finally:
        if log_path:
            out.close()
    if result.returncode != 0:
        detail = f"; log: {log_path}" if log_path else f": {(result.stderr or '').strip()[-500:]}"
        failed = _failed_task(log_path) if log_path else None
        raise RunFailed(
            f"could not {what} (exit {result.returncode}){': ' + failed if failed else ''}{detail}"
        )


def _failed_task(log_path: Path) -> str | None:
    """The first failed task's summary in a DAG run's log (the line ``visrec.pipeline.alerts`` writes
    when a task has used its retries), without the logger's decorations."""
    for line in log_path.read_text(errors="replace").splitlines():
        _, marker, alert = line.partition("visrec alert: ")
        if marker:
            alert = re.sub(r"\s+\[visrec\.pipeline\.alerts\].*$", "", alert)
            return re.sub(r"; log https?://\S+$", "", alert.strip())  # the run's own log is named after
    return None


def run_dates(dates: list[str], settings: Settings, *, airflow: bool = True) -> list[DateRun]:
    """Run the whole nightly DAG for each date in order; stop at the first failed date. More than one
    date (a backfill): their events and features are ingested first in one pass (``visrec ingest
    --start --end``), and each date's run reuses them (the DAG's ``ingested`` parameter)."""
    dates = [check_ds(d) for d in dates]
    lake = Lake.from_settings(settings)
    check_inputs_exist(lake)
    env = prepare_airflow(settings) if airflow else None
    backfill = len(dates) > 1
    if backfill and airflow:
        log.info(
            "no Airflow server here: each date runs with `airflow dags test`, in order (against a running "
            "Airflow, `visrec cluster run --start --end` creates an Airflow backfill)"
        )
    if backfill:
        done = steps.ingest_range(dates, settings)
        log.info("ingested %d days in one pass in %.1fs; now the DAG for each", len(dates), done["seconds"])
    runs = []
    for ds in dates:
        started = time.perf_counter()
        log_path = None
        task_seconds: dict[str, float] = {}
        if airflow:
            log_dir = settings.home / "logs"
            log_dir.mkdir(parents=True, exist_ok=True)
            log_path = log_dir / f"dag-{ds}.log"
            log.info("running DAG %s for %s through Airflow (log: %s)", DAG_ID, ds, log_path)
            conf = ["--conf", json.dumps({"ingested": True})] if backfill else []
            _call(
                [_airflow_bin(), "dags", "test", DAG_ID, ds, *conf], env, f"run {DAG_ID} for {ds}", log_path
            )
            task_seconds = task_durations(ds, env)
            missing = sorted({step.name for step in STEPS} - set(task_seconds))
            if missing:  # Airflow marks a run with tasks it never started as a success
                raise RunFailed(
                    f"the {DAG_ID} run for {ds} did not run {', '.join(missing)}; log: {log_path}"
                )
        else:
            steps.run_all(ds, settings, on_step=task_seconds.__setitem__, reuse_backfill=backfill)
        seconds = time.perf_counter() - started
        runs.append(DateRun(ds, seconds, str(log_path) if log_path else None, task_seconds))
        log.info("%s done in %.0fs; steps recorded: %s", ds, seconds, sorted(RunLog(lake).night(ds)))
    return runs


def check_inputs_exist(lake: Lake) -> None:
    """Refuse, before Airflow starts or anything is written, a lake with nothing to run on: no catalog
    (every night ingests its images), or no event log at all."""
    if not lake.exists(CATALOG_KEY):
        raise RunFailed(
            f"no catalog at {lake.url(CATALOG_KEY)}: make a shop first (`visrec synth`, or `visrec import` "
            "for your own data)"
        )
    if not lake.list_keys("raw/events"):
        raise RunFailed(
            f"no event logs under {lake.url('raw/events')}: `visrec synth` or `visrec import` first"
        )


def task_durations(ds: str, env: dict[str, str]) -> dict[str, float]:
    """Each task's wall time in the DAG run of ``ds``, from Airflow's task-instance records
    (``airflow tasks states-for-dag-run``), in the order the tasks started."""
    result = subprocess.run(
        [_airflow_bin(), "tasks", "states-for-dag-run", DAG_ID, ds, "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
    )
    rows = next(
        (json.loads(line) for line in reversed(result.stdout.splitlines()) if line.startswith("[")), None
    )
    if result.returncode != 0 or rows is None:
        log.warning(
            "could not read the task instances of %s %s: %s", DAG_ID, ds, result.stderr.strip()[-300:]
        )
        return {}
    seconds = {}
    for row in sorted(rows, key=lambda r: r.get("start_date") or ""):
        if row.get("start_date") and row.get("end_date"):
            start, end = (datetime.fromisoformat(row[k]) for k in ("start_date", "end_date"))
            seconds[row["task_id"]] = (end - start).total_seconds()
    return seconds
