"""Cluster mode, as deployed: the nightly DAG through a real scheduler and two Celery workers, Postgres
metadata, Redis broker, an MLflow server with artifacts in S3, the lake on S3, a Spark standalone
cluster (``visrec cluster up``: the docker/ stack's topology as local processes). ``make cluster-test``.

One DAG run is shared by the tests below. While it runs, the worker running the first training task is
killed with SIGKILL (a machine lost): the task must be retried on the other worker and the run must
still publish exactly what an in-process run of the same date publishes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from visrec.app.cluster import WORKERS, LocalCluster, Ports, port_open
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

pytestmark = pytest.mark.cluster

D1, D2 = HISTORY, NIGHT
VISREC = str(Path(sys.executable).with_name("visrec"))
TRAINING = ("train_cnn", "train_gan", "train_mf")


def _visrec(env: dict[str, str], *args: str) -> None:
    result = subprocess.run([VISREC, *args], env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"visrec {' '.join(args)}: {result.stderr[-2000:]}"


def _free_base() -> int:
    for base in range(47300, 48000, 20):
        if not any(port_open(base + n) for n in range(12)):
            return base
    pytest.skip("no 12 free ports between 47300 and 48000")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = [c for c in ("redis-server", "java") if shutil.which(c) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (make cluster-test installs redis-server)")
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), Ports(_free_base()))
    started = time.perf_counter()
    try:
        cluster.up({"visrec_spark": 1, "visrec_training": 1}, SETTINGS)
        print(f"cluster up in {time.perf_counter() - started:.0f}s")
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="module")
def nightly(cluster):
    """Synthesise a shop into the S3 lake, ingest its first day as history, then trigger the DAG for
    the second day through the scheduler; kill the worker of the first training task it sees."""
    env = cluster.env()
    _visrec(env, "synth", *SHOP_ARGS)
    _visrec(env, "ingest", "--ds", D1)
    started = time.perf_counter()
    run_id = cluster.trigger(D2)
    fault: dict = {}

    def kill_a_training_worker() -> None:
        tries = cluster.task_instances(run_id)
        if not fault:
            running = [
                t for t in tries if t["task_id"] in TRAINING and t["state"] == "running" and t["hostname"]
            ]
            if running:
                fault.update(task=running[0]["task_id"], worker=running[0]["hostname"])
                cluster.kill(fault["worker"])
        elif "restarted" not in fault:
            # A retry queued keeps the lost worker's hostname until a worker takes it: wait for the other.
            retried = [
                t
                for t in tries
                if t["task_id"] == fault["task"]
                and t["try_number"] > 1
                and t["hostname"] not in (None, "", fault["worker"])
            ]
            if retried:  # the other worker took the retry: bring the lost one back, as an operator would
                cluster.start_worker(fault["worker"], WORKERS.index(fault["worker"]) + 1)
                fault["restarted"] = True

    state = cluster.wait(run_id, timeout=1200, poll=1, on_poll=kill_a_training_worker)
    return {"run_id": run_id, "state": state, "seconds": time.perf_counter() - started, "fault": fault}


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """The same shop and date run in one process: file lake, SQLite MLflow, Spark local[2]."""
    home = tmp_path_factory.mktemp("in-process")
    env = in_process_env(home)
    _visrec(env, "synth", *SHOP_ARGS)
    _visrec(env, "ingest", "--ds", D1)
    _visrec(env, "run", "--no-airflow", "--ds", D2)
    return home


def test_the_run_succeeds_through_the_scheduler_on_both_workers(cluster, nightly):
    print(f"cluster-mode DAG run: {nightly['seconds']:.0f}s; fault: {nightly['fault']}")
    assert nightly["state"] == "success"
    tries = cluster.task_instances(nightly["run_id"])
    final = {t["task_id"]: t for t in tries if t["state"] == "success"}
    assert len(final) == 13, sorted(final)
    assert {t["hostname"] for t in tries if t["hostname"]} == set(WORKERS)


def test_a_task_of_a_killed_worker_is_retried_on_the_other(cluster, nightly):
    fault = nightly["fault"]
    assert fault, "no training task was seen running"
    tries = [t for t in cluster.task_instances(nightly["run_id"]) if t["task_id"] == fault["task"]]
    first = next(t for t in tries if t["try_number"] == 1)
    last = max(tries, key=lambda t: t["try_number"])
    assert first["hostname"] == fault["worker"] and first["state"] != "success"
    assert last["state"] == "success" and last["hostname"] != fault["worker"]


def test_spark_jobs_ran_on_the_standalone_cluster(cluster, nightly):
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.ports.spark_ui}/json/") as response:
        master = json.load(response)
    completed = {app["name"] for app in master["completedapps"]}
    assert {"visrec-ingest_events", "visrec-build_features"} <= completed
    assert len(master["workers"]) == 2


def test_mlflow_keeps_runs_in_postgres_and_models_in_s3(cluster, nightly):
    runs = cluster.query("SELECT count(*) FROM runs WHERE status = 'FINISHED'", database="mlflow")[0][0]
    versions = cluster.query("SELECT DISTINCT name FROM model_versions", database="mlflow")
    assert runs >= 3 and {"visrec-cnn", "visrec-mf", "visrec-gan"} <= {v[0] for v in versions}
    env = cluster.env()
    s3 = cluster.s3_client()
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="visrec-mlflow")
        for o in page.get("Contents", [])
    ]
    assert any(k.endswith("MLmodel") for k in keys) and any(k.endswith(".keras") for k in keys)
    assert not (Path(env["VISREC_HOME"]) / "mlartifacts").exists()  # nothing landed on a worker's disk


def test_published_tables_are_identical_to_an_in_process_run(cluster, nightly, in_process, monkeypatch):
    from visrec.settings import Settings
    from visrec.store.lake import Lake, published_dates

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, cluster.env()[name])
    on_cluster = Lake.from_settings(Settings.from_env(cluster.env()))
    local = Lake.from_settings(Settings(home=in_process))
    assert set(published_dates(on_cluster)) == set(published_dates(local)) == {D2}
    cluster_tables = read_outputs(on_cluster, D2, OUTPUT_TABLES)
    assert len(cluster_tables) >= 6
    # The same rows (lists, ranks, ids); scores equal to float rounding: Spark tasks score on one thread.
    assert differing_tables(cluster_tables, read_outputs(local, D2, OUTPUT_TABLES)) == []


def test_a_spark_job_survives_a_lost_worker(cluster, tmp_path):
    """A Spark worker killed mid-job: its tasks run again on the remaining worker; the result is right."""
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent("""
        import time
        from visrec.settings import Settings
        from visrec.store.spark import get_spark

        spark = get_spark(Settings.from_env(), "visrec-lost-worker")
        def slow(batches):
            for batch in batches:
                time.sleep(1.5)
                yield batch
        df = spark.range(0, 10_000, numPartitions=12).mapInPandas(slow, "id long")
        print("SUM", df.groupBy().sum("id").collect()[0][0], flush=True)
        """)
    )
    work = cluster.root / "spark-worker2"
    before = set(work.glob("app-*"))
    job = subprocess.Popen(
        [sys.executable, str(script)],
        env=cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not set(work.glob("app-*")) - before:
        time.sleep(0.5)  # the worker has launched the job's executor
    time.sleep(3)
    cluster.kill("spark-worker2")
    try:
        out, _ = job.communicate(timeout=300)
        assert f"SUM {sum(range(10_000))}" in out
    finally:
        cluster.start_spark_worker(2)


def test_the_airflow_ui_shows_the_run_with_every_task_green(cluster, nightly, tmp_path):
    """The run's page in the api-server's UI, rendered by headless Chromium: a row per task, each in
    state Success (the killed task on its second try); and a screenshot of it."""
    import re

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (make test installs Debian's chromium when it can)")
    page = f"http://127.0.0.1:{cluster.ports.airflow_api}/dags/visrec_nightly/runs/{nightly['run_id']}"
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
    ]  # fmt: skip
    dom = subprocess.run(
        [chromium, *flags, "--virtual-time-budget=15000", "--dump-dom", page],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    rows = [" ".join(re.sub(r"<[^>]+>", " ", row).split()) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", dom)]
    tasks = {row.split()[0]: row.split()[1] for row in rows[1:]}
    assert len(tasks) == 13 and set(tasks.values()) == {"Success"}, rows
    fault = nightly["fault"]
    assert re.search(
        rf"^{fault['task']} Success \S+ \S+ 2 ", next(r for r in rows if r.startswith(fault["task"]))
    )
    shot = tmp_path / "airflow-run.png"
    subprocess.run(
        [
            chromium,
            *flags,
            "--virtual-time-budget=15000",
            "--window-size=1400,1100",
            f"--screenshot={shot}",
            page,
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 30_000
    shutil.copy(shot, cluster.root / "airflow-run.png")  # kept beside the cluster's logs
