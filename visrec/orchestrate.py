"""Run the nightly DAG for one or more dates: through Airflow (``airflow dags test``) or in-process.

visrec never imports Airflow: this module drives the ``airflow`` command installed beside it, with an
``AIRFLOW_HOME`` under ``VISREC_HOME`` (SQLite metadata), the repository's ``dags/`` folder, no
example DAGs, and the two pools the DAG uses. ``airflow dags test`` runs every task of one DAG run in
one process, honouring retries, and exits non-zero when the run fails.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from visrec.errors import VisrecError
from visrec.lake import check_ds
from visrec.settings import Settings

log = logging.getLogger(__name__)

DAG_ID = "visrec_nightly"
DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"
POOLS = {"visrec_spark": "one local Spark job at a time", "visrec_training": "one model training at a time"}


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
    for pool, description in POOLS.items():
        _call([airflow, "pools", "set", pool, "1", description], env, f"create the pool {pool}")
    return env


def _call(cmd: list[str], env: dict[str, str], what: str, log_path: Path | None = None) -> None:
    out = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        result = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if log_path else subprocess.PIPE,
                                text=True)  # fmt: skip
    finally:
        if log_path:
            out.close()
    if result.returncode != 0:
        detail = f"; log: {log_path}" if log_path else f": {(result.stderr or '').strip()[-500:]}"
        raise RunFailed(f"could not {what} (exit {result.returncode}){detail}")


def run_dates(dates: list[str], settings: Settings, *, airflow: bool = True) -> list[DateRun]:
    """Run the whole nightly DAG for each date in order; stop at the first failed date."""
    from visrec.lake import Lake
    from visrec.pipeline import STEPS, run_summaries

    dates = [check_ds(d) for d in dates]
    lake = Lake.from_settings(settings)
    env = prepare_airflow(settings) if airflow else None
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
            _call([_airflow_bin(), "dags", "test", DAG_ID, ds], env, f"run {DAG_ID} for {ds}", log_path)
        else:
            for name, step in STEPS.items():
                step_started = time.perf_counter()
                step(ds, settings)
                task_seconds[name] = time.perf_counter() - step_started
        seconds = time.perf_counter() - started
        if airflow:
            task_seconds = _task_seconds(log_path)
        runs.append(DateRun(ds, seconds, str(log_path) if log_path else None, task_seconds))
        log.info("%s done in %.0fs; steps recorded: %s", ds, seconds, sorted(run_summaries(lake, ds)))
    return runs


def _task_seconds(log_path: Path | None) -> dict[str, float]:
    """Each task's wall time, from the ``[DAG TEST] starting/end task`` lines of a ``dags test`` log."""
    import re
    from datetime import datetime

    if log_path is None or not log_path.exists():
        return {}
    started: dict[str, datetime] = {}
    seconds: dict[str, float] = {}
    pattern = re.compile(r"^(\S+Z) .*\[DAG TEST\] (starting|end task) task_id=(\w+)")
    for line in log_path.read_text(errors="replace").splitlines():
        match = pattern.match(line)
        if not match:
            continue
        stamp = datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
        if match.group(2) == "starting":
            started[match.group(3)] = stamp
        elif match.group(3) in started:
            seconds[match.group(3)] = (stamp - started.pop(match.group(3))).total_seconds()
    return seconds
