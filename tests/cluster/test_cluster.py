"""Cluster mode, as deployed: the nightly DAG through a real scheduler and two Celery workers, Postgres
metadata, Redis broker, an MLflow server with artifacts in S3, the lake on S3, a Spark standalone
cluster (``visrec cluster up``: the docker/ stack's topology as local processes). ``make cluster-test``.

One DAG run is shared by the tests below. While it runs, the worker running the first training task is
killed with SIGKILL (a machine lost): the task must be retried on the other worker and the run must
still publish exactly what an in-process run of the same date publishes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from tests.cluster.browser import render
from visrec.app.cluster import AIRFLOW_COMPONENTS, WORKERS, LocalCluster, Ports, port_free, port_open
from visrec.devdata.trial import (
    HISTORY,
    NIGHT,
    SETTINGS,
    SHOP_ARGS,
    differing_tables,
    in_process_env,
    read_outputs,
)
from visrec.pipeline.graph import STEPS
from visrec.publish import OUTPUT_TABLES

pytestmark = pytest.mark.cluster

D1, D2 = HISTORY, NIGHT
VISREC = str(Path(sys.executable).with_name("visrec"))
TRAINING = tuple(step.name for step in STEPS if step.queue == "training")
POOLS = {"visrec_spark": 1, "visrec_training": 1}
# The trial's settings, and a short wait for a day's raw events (the missing-day test).
# A periodic schedule, as a deployment has (Airflow's backfills need one; its latest night runs at once
# and fails at the sensor: no events for today).
CLUSTER_SETTINGS = {**SETTINGS, "VISREC_EVENTS_WAIT_MINUTES": "0.25", "VISREC_DAG_SCHEDULE": "@daily"}


def _visrec(env: dict[str, str], *args: str) -> None:
    result = subprocess.run([VISREC, *args], env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"visrec {' '.join(args)}: {result.stderr[-2000:]}"


def _session(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def _free_base() -> int:
    for base in range(27300, 28000, 20):
        if all(port_free(port) for port in Ports(base).all()):
            return base
    pytest.skip(f"no {Ports.count} free ports between 27300 and 28000")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = [c for c in ("redis-server", "java") if shutil.which(c) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (make cluster-test installs redis-server)")
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), Ports(_free_base()))
    started = time.perf_counter()
    try:
        cluster.up(POOLS, CLUSTER_SETTINGS)
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
                fault["restarted"] = cluster.up(POOLS, CLUSTER_SETTINGS)

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
    assert len(final) == len(STEPS) + 1, sorted(final)  # every step and the sensor before them
    assert {t["hostname"] for t in tries if t["hostname"]} == set(WORKERS)


def test_a_task_of_a_killed_worker_is_retried_on_the_other(cluster, nightly):
    fault = nightly["fault"]
    assert fault, "no training task was seen running"
    tries = [t for t in cluster.task_instances(nightly["run_id"]) if t["task_id"] == fault["task"]]
    first = next(t for t in tries if t["try_number"] == 1)
    last = max(tries, key=lambda t: t["try_number"])
    assert first["hostname"] == fault["worker"] and first["state"] != "success"
    assert last["state"] == "success" and last["hostname"] != fault["worker"]
    # `visrec cluster up` brought the lost worker back, and only it.
    assert fault["restarted"] == [fault["worker"]] and cluster.alive(fault["worker"])


def test_each_airflow_component_has_its_own_home(cluster, nightly):
    """As in separate containers: each component wrote its own airflow.cfg (with its own random API
    secret key); what they share comes from the environment only."""
    homes = [cluster.root / "airflow" / name for name in AIRFLOW_COMPONENTS]
    assert all((home / "airflow.cfg").exists() for home in homes), [
        h for h in homes if not (h / "airflow.cfg").exists()
    ]
    keys = {re.search(r"^secret_key = (.*)$", (h / "airflow.cfg").read_text(), re.M).group(1) for h in homes}
    assert len(keys) == len(homes) and cluster.env()["AIRFLOW__API__SECRET_KEY"] not in keys


def _fetch_worker_log(env: dict[str, str], url: str, relative: str) -> tuple[int, str]:
    """What the api-server does for a running task's log: a request to the worker's log server signed
    with [api] secret_key (Airflow's own code), in a process with ``env``."""
    script = (
        "import sys; from airflow.utils.log.file_task_handler import _fetch_logs_from_service as f; "
        "r = f(sys.argv[1], sys.argv[2]); print('STATUS', r.status_code); print(r.text[-3000:])"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, url, relative], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    _, _, answer = out.stdout.partition("STATUS ")  # (after any warning Airflow prints)
    status, _, text = answer.partition("\n")
    return int(status), text


def test_the_rest_api_refuses_anonymous_requests_and_serves_task_logs(cluster, nightly):
    """Airflow's REST API behind the FAB auth manager: no token, 401; a token taken with the admin's
    password, the run's tasks and a task's log (written by a worker, read back by the api-server
    from S3, where every try's log was uploaded)."""
    api = cluster.api()
    status, body = api.request("GET", "/api/v2/dags", auth=False)
    assert status == 401, body
    status, body = api.request("GET", "/api/v2/dags")  # with a token taken with the admin's password
    assert status == 200 and "visrec_nightly" in {d["dag_id"] for d in body["dags"]}
    run = nightly["run_id"]
    done = next(
        t for t in cluster.task_instances(run) if t["task_id"] == "publish" and t["state"] == "success"
    )
    # A worker uploads a try's log after it reports the try's state: give the upload a moment.
    wanted = (
        f"airflow-logs/dag_id=visrec_nightly/run_id={run}/task_id=publish/attempt={done['try_number']}.log"
    )
    deadline = time.monotonic() + 120
    while True:
        keys = [
            o["Key"]
            for page in cluster.s3_client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket="visrec", Prefix="airflow-logs/")
            for o in page.get("Contents", [])
        ]
        if wanted in keys or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert wanted in keys and sum(f"run_id={run}" in k for k in keys) >= 13, keys[:20]  # every try's log
    status, body = api.request(
        "GET", f"/api/v2/dags/visrec_nightly/dagRuns/{run}/taskInstances/publish/logs/{done['try_number']}"
    )
    assert status == 200, body
    text = json.dumps(body["content"])
    assert "s3://visrec/airflow-logs" in text, text[-2000:]  # read from the bucket, not a worker's disk
    assert f"step publish {D2} done in" in text, text[-2000:]


def test_a_workers_log_server_accepts_the_shared_secret_key_only(cluster, nightly, tmp_path):
    """A running task's log is served by its worker's log server to requests signed with the API
    secret key. Signed with the cluster's shared key: served; signed by a component that did not get
    it (its own airflow.cfg's random key, as a container without the env file would have): 403."""
    tries = cluster.task_instances(nightly["run_id"])
    publish = next(t for t in tries if t["task_id"] == "publish" and t["state"] == "success")
    relative = f"dag_id=visrec_nightly/run_id={nightly['run_id']}/task_id=publish/attempt={publish['try_number']}.log"
    port = cluster.ports.worker_log_server(WORKERS.index(publish["hostname"]) + 1)
    url = f"http://127.0.0.1:{port}/log/{relative}"
    # (Served, not its text: once a try's log is in S3, the worker empties its own copy.)
    status, text = _fetch_worker_log(cluster.env(), url, relative)
    assert status == 200, (status, text[-500:])
    lost = {k: v for k, v in cluster.env().items() if k != "AIRFLOW__API__SECRET_KEY"}
    status, _ = _fetch_worker_log({**lost, "AIRFLOW_HOME": str(tmp_path / "airflow")}, url, relative)
    assert status == 403


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


def test_publish_emits_assets_and_the_serving_export_follows(cluster, nightly, monkeypatch):
    """publish's Asset events carry the release's date and rows; the scheduler starts the consumer DAG
    on the recommendations event, and it swaps the release into the PostgreSQL serving store."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        runs = cluster.query("SELECT state, run_type FROM dag_run WHERE dag_id = 'visrec_serving_export'")
        if any(state in ("success", "failed") for state, _ in runs):
            break
        time.sleep(3)
    assert runs == [("success", "asset_triggered")], runs
    events = cluster.query(
        "SELECT a.name, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.name LIKE 'visrec.%%'"
    )
    extras = {name: json.loads(extra) if isinstance(extra, str) else extra for name, extra in events}
    assert set(extras) == {f"visrec.{t}" for t in OUTPUT_TABLES}
    published = extras["visrec.recommendations"]
    assert published["ds"] == D2 and published["rows"] > 0
    served = cluster.query("SELECT ds, count(*) FROM recommendations GROUP BY ds", database="serving")
    assert served == [(D2, published["rows"])]


def test_a_missing_day_waits_in_the_triggerer_then_fails_in_one_line(cluster, nightly):
    """A run for a date whose raw events never arrive: its first task is deferred, its trigger held by
    the triggerer (no worker slot) until VISREC_EVENTS_WAIT_MINUTES pass; then it fails without
    retries and no other task runs."""
    day = "2026-11-20"
    run_id = cluster.trigger(day)
    sql = (
        "SELECT ti.state, t.triggerer_id FROM task_instance ti LEFT JOIN trigger t ON t.id = ti.trigger_id "
        "WHERE ti.run_id = %s AND ti.task_id = 'wait_for_events'"
    )
    held = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not held:
        held = [row for row in cluster.query(sql, (run_id,)) if row[0] == "deferred" and row[1] is not None]
        time.sleep(1)
    assert held, cluster.query(sql, (run_id,))
    assert cluster.wait(run_id, timeout=300, poll=2) == "failed"
    states = {t["task_id"]: t["state"] for t in cluster.task_instances(run_id)}
    assert states.pop("wait_for_events") == "failed"
    assert set(states.values()) == {"upstream_failed"}, states


def test_a_date_range_becomes_an_airflow_backfill(cluster, nightly):
    """`visrec run --start --end` in a shell that sourced the cluster's env (so: `visrec cluster run`) on
    a scheduled DAG: one-pass ingestion, then an Airflow backfill (listed by the REST API, its runs of
    type backfill, one at a time); here two days whose raw events never came, so each run fails at
    the sensor and the command says which task failed."""
    result = subprocess.run(
        [VISREC, "run", "--start", "2026-11-21", "--end", "2026-11-22"],
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out[-3000:]
    assert "(cluster" in out and "using it" in out, out[-3000:]
    assert "2026-11-21: failed (wait_for_events failed)" in out and "backfill" in out, out[-3000:]
    status, body = cluster.api().request("GET", "/api/v2/backfills?dag_id=visrec_nightly")
    assert status == 200 and body["backfills"], body
    backfill = body["backfills"][-1]
    assert backfill["from_date"].startswith("2026-11-21") and backfill["to_date"].startswith("2026-11-22")
    runs = cluster.query("SELECT run_type, state FROM dag_run WHERE backfill_id = %s", (backfill["id"],))
    assert sorted(runs) == [("backfill", "failed"), ("backfill", "failed")], runs


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
    """The run's page in the api-server's UI, rendered by headless Chromium with the session cookie a
    login sets: a row per task, each in state Success (the killed task on its second try); and a
    screenshot of it."""

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (make test and make cluster-test install Debian's chromium)")
    page = f"http://127.0.0.1:{cluster.ports.airflow_api}/dags/visrec_nightly/runs/{nightly['run_id']}"
    shot = tmp_path / "airflow-run.png"
    dom = render(
        chromium,
        page,
        {"_token": cluster.api().token()},
        tmp_path / "profile",
        ready_js=f"document.querySelectorAll('tbody tr').length >= {len(STEPS) + 1}",
        screenshot=shot,
    )
    rows = [" ".join(re.sub(r"<[^>]+>", " ", row).split()) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", dom)]
    tasks = {row.split()[0]: row.split()[1] for row in rows[1:]}
    assert len(tasks) == len(STEPS) + 1 and set(tasks.values()) == {"Success"}, rows  # and the sensor
    fault = nightly["fault"]
    assert re.search(
        rf"^{fault['task']} Success \S+ \S+ 2 ", next(r for r in rows if r.startswith(fault["task"]))
    )
    assert shot.stat().st_size > 30_000
    shutil.copy(shot, cluster.root / "airflow-run.png")  # kept beside the cluster's logs


def test_down_ends_every_process_of_the_cluster(cluster):
    """Last: `down` leaves no process of the cluster (a killed worker's children included) and frees
    every port."""
    leader = cluster.pids["worker2"]
    cluster.kill_leader("worker2")  # its children (log server, Celery's pool) outlive it
    time.sleep(2)
    orphans = [pid for pid in cluster.processes() if _session(pid) == leader]
    print(
        f"worker2's leader killed: {len(orphans)} of its processes live on; {len(cluster.processes())} in all"
    )
    cluster.down()
    assert cluster.processes() == []
    assert not [port for port in cluster.ports.all() if port_open(port)]
