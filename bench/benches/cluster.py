"""The cluster bench: `python bench/run.py cluster`. See :func:`run`."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from benchkit import Figures, figure


def run() -> Figures:
    """Cluster mode beside the in-process default on the same data (visrec.devdata.trial: a small shop,
    its first day ingested as history, the nightly DAG for the second): the DAG through the scheduler and
    two Celery workers of `visrec cluster up` (Postgres, Redis, S3, MLflow server, Spark standalone)
    against `visrec run` (`airflow dags test`, one process, local Spark, SQLite); and whether both
    published the same tables."""
    import subprocess

    from visrec.app.cluster import parse_env
    from visrec.devdata.trial import (
        HISTORY,
        NIGHT,
        SETTINGS,
        SHOP_ARGS,
        differing_tables,
        in_process_env,
        read_outputs,
    )
    from visrec.publish import OUTPUT_TABLES
    from visrec.settings import Settings
    from visrec.store.lake import Lake

    visrec = str(Path(sys.executable).with_name("visrec"))

    def call(env: dict, *args: str) -> float:
        started = time.perf_counter()
        subprocess.run([visrec, *args], env=env, check=True, capture_output=True)
        return time.perf_counter() - started

    out: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Through the command line, as an operator runs it: the trial's settings in the environment.
        where = ["--dir", str(Path(tmp) / "cluster"), "--port-base", "47500"]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("VISREC_", "AIRFLOW"))}
        try:
            up = call({**base, **SETTINGS}, "cluster", "up", *where)
            out["cluster.up_seconds"] = figure(round(up, 1), "s", "13 processes")
            printed = subprocess.run(
                [visrec, "cluster", "env", *where], check=True, capture_output=True, text=True
            )
            env = {**base, **parse_env(printed.stdout)}
            call(env, "synth", *SHOP_ARGS)
            out["cluster.history_ingest_seconds"] = figure(
                round(call(env, "ingest", "--ds", HISTORY), 1), "s", "visrec ingest: Spark cluster, S3 lake"
            )
            out["cluster.dag_seconds"] = figure(
                round(call(env, "cluster", "run", "--ds", NIGHT, *where), 1),
                "s",
                "trigger to success (`visrec cluster run`): scheduler, 2 Celery workers",
            )
            os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
            on_cluster = read_outputs(Lake.from_settings(Settings.from_env(env)), NIGHT, OUTPUT_TABLES)
        finally:
            subprocess.run([visrec, "cluster", "down", *where], capture_output=True)
        home = Path(tmp) / "in-process"
        env = in_process_env(home)
        call(env, "synth", *SHOP_ARGS)
        call(env, "ingest", "--ds", HISTORY)
        out["cluster.in_process_dag_seconds"] = figure(
            round(call(env, "run", "--ds", NIGHT), 1), "s", "visrec run: airflow dags test, local[2], SQLite"
        )
        differ = differing_tables(
            on_cluster, read_outputs(Lake.from_settings(Settings(home=home)), NIGHT, OUTPUT_TABLES)
        )
        out["cluster.tables_identical"] = figure(
            int(not differ),
            "bool",
            f"{len(on_cluster)} output tables: the same rows, scores to float rounding (rel 1e-5); differing: {differ}",
        )
    return out
