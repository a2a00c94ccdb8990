"""Cluster mode on one machine: the docker/ stack's topology as local processes on 127.0.0.1.

``visrec cluster up`` starts, each as its own process with its own log under ``<dir>/logs``:
PostgreSQL (Airflow's and MLflow's metadata), Redis (Celery's broker), an S3 server (moto; the compose
stack uses MinIO), the MLflow tracking server (Postgres backend, artifacts proxied to the S3 bucket), a
Spark standalone master with two 1-core workers, and Airflow: api-server, scheduler, dag-processor and
two Celery workers (distinct hostnames, pid files and log-server ports) on the ``default``, ``spark``
and ``training`` queues. ``<dir>/cluster.env`` holds the settings that point visrec and Airflow at them
(``set -a; . <dir>/cluster.env``); ``visrec cluster down`` stops everything it started.

The processes are the ones the compose file runs, with the same settings; only the host names differ.
S3 data lives in the moto server's memory, so ``down`` also removes the databases: every ``up`` starts
empty.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from base64 import urlsafe_b64encode
from dataclasses import dataclass
from pathlib import Path

from visrec.app.orchestrate import DAG_ID, POOL_NOTES
from visrec.errors import VisrecError
from visrec.settings import Settings
from visrec.store.lake import check_ds
from visrec.store.services import check_services

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
BUCKET = "visrec"
ARTIFACT_BUCKET = "visrec-mlflow"
# Every Airflow component needs these; tasks fail with "Invalid auth token" when they differ.
SHARED_SECRETS = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY")
WORKERS = ("worker1", "worker2")
QUEUES = "default,spark,training"


class ClusterError(VisrecError):
    """A service of the local cluster did not start; the message names it and its log."""


@dataclass(frozen=True)
class Ports:
    """The services' ports on 127.0.0.1: ``base`` and the next ones."""

    base: int = 47100

    @property
    def postgres(self) -> int:
        return self.base

    @property
    def redis(self) -> int:
        return self.base + 1

    @property
    def s3(self) -> int:
        return self.base + 2

    @property
    def mlflow(self) -> int:
        return self.base + 3

    @property
    def spark_master(self) -> int:
        return self.base + 4

    @property
    def spark_ui(self) -> int:
        return self.base + 5

    @property
    def airflow_api(self) -> int:
        return self.base + 6

    def spark_worker_ui(self, n: int) -> int:
        return self.base + 7 + n

    def worker_log_server(self, n: int) -> int:
        return self.base + 9 + n


class LocalCluster:
    """The process twin of docker/compose.yaml, rooted at ``root`` (state, logs, Airflow home)."""

    def __init__(self, root: Path, ports: Ports | None = None):
        self.root = Path(root).resolve()
        self.state_file = self.root / "cluster.json"
        state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        self.ports = ports or Ports(state.get("port_base", Ports.base))
        self.pids: dict[str, int] = state.get("pids", {})
        self.logs = self.root / "logs"
        # initdb refuses to run as root, and the postgres user cannot enter a private temp folder.
        self.pgdata = Path(
            state.get("pgdata") or Path(tempfile.gettempdir()) / f"visrec-postgres-{self.ports.postgres}"
        )

    # -- the environment every process (and a user's shell) runs with --------------------------------

    def env_file(self) -> Path:
        return self.root / "cluster.env"

    def service_env(self) -> dict[str, str]:
        """Settings pointing visrec, MLflow, Spark and Airflow at the cluster (without secrets)."""
        p = self.ports
        db = f"visrec@127.0.0.1:{p.postgres}"
        api = f"http://127.0.0.1:{p.airflow_api}"
        return {
            "VISREC_HOME": str(self.root / "visrec"),
            "VISREC_LAKE_URI": f"s3://{BUCKET}/lake",
            "VISREC_S3_ENDPOINT": f"http://127.0.0.1:{p.s3}",
            "VISREC_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{p.mlflow}",
            "VISREC_SPARK_MASTER": f"spark://127.0.0.1:{p.spark_master}",
            "VISREC_DAG_SCHEDULE": "none",  # a machine's twin runs what it is asked to, not every night
            "AWS_ACCESS_KEY_ID": "visrec",
            "AWS_SECRET_ACCESS_KEY": "visrec-local",
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{p.s3}",
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable,
            "AIRFLOW_HOME": str(self.root / "airflow"),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__API__BASE_URL": api,
            "AIRFLOW__API__PORT": str(p.airflow_api),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{db}/airflow",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{p.redis}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{db}/airflow",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            # A worker that dies mid-task: its task is failed (and retried) after this, not 5 minutes.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "45",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        }

    def env(self) -> dict[str, str]:
        """The caller's environment plus ``cluster.env`` (written by :meth:`up`: the services, the
        shared secrets and the visrec settings every task runs with)."""
        env = {**os.environ, **self.service_env()}
        if self.env_file().exists():
            for line in self.env_file().read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    env[key] = value
        return env

    def _write_env(self, settings_env: dict[str, str]) -> None:
        kept = {}
        if self.env_file().exists():
            kept = {k: v for k, v in self.env().items() if k in SHARED_SECRETS}
        kept.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_hex(32))
        kept.setdefault("AIRFLOW__CORE__FERNET_KEY", urlsafe_b64encode(os.urandom(32)).decode())
        lines = [f"{k}={v}" for k, v in {**settings_env, **self.service_env(), **kept}.items()]
        self.env_file().write_text("\n".join(lines) + "\n")
        self.env_file().chmod(0o600)

    # -- processes ----------------------------------------------------------------------------------

    def _start(self, name: str, cmd: list[str], env: dict[str, str] | None = None, **kw) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        proc = subprocess.Popen(
            cmd,
            env=env or self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: down (or a test) stops it with its children
            **kw,
        )
        out.close()
        self.pids[name] = proc.pid
        self._save()
        log.info("started %s (pid %d, log %s)", name, proc.pid, self.logs / f"{name}.log")

    def _save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        state = {"port_base": self.ports.base, "pids": self.pids, "pgdata": str(self.pgdata)}
        self.state_file.write_text(json.dumps(state, indent=1))

    def alive(self, name: str) -> bool:
        pid = self.pids.get(name)
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # A zombie (our own exited child) is not alive.
        stat = Path(f"/proc/{pid}/stat")
        return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))

    def _wait_port(self, name: str, port: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_open(port):
                return
            if name in self.pids and not self.alive(name):
                break
            time.sleep(0.5)
        raise ClusterError(f"{name} did not start on 127.0.0.1:{port}; see {self.logs / (name + '.log')}")

    def _run(self, what: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        result = subprocess.run(cmd, env=env or self.env(), capture_output=True, text=True)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()[-800:]
            raise ClusterError(f"could not {what} (exit {result.returncode}): {detail}")

    # -- services -----------------------------------------------------------------------------------

    def _postgres(self) -> None:
        bin_dir = _postgres_bin()
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        # Left by a cluster that was not stopped with `down`: its S3 objects are gone with the S3
        # server, so its databases would point at nothing. Start empty, as `down` leaves it.
        shutil.rmtree(self.pgdata, ignore_errors=True)
        self.pgdata.mkdir(parents=True)
        if as_postgres:
            shutil.chown(self.pgdata, "postgres", "postgres")
        self._run(
            "initialise PostgreSQL",
            [*as_postgres, f"{bin_dir}/initdb", "-D", str(self.pgdata), "-A", "trust", "-U", "visrec"],
        )
        self._start(
            "postgres",
            [
                *as_postgres,
                f"{bin_dir}/postgres",
                "-D",
                str(self.pgdata),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.ports.postgres),
                "-k",
                str(self.pgdata),
            ],
        )
        self._wait_port("postgres", self.ports.postgres)
        for database in ("airflow", "mlflow"):
            _create_database(self.ports.postgres, database)

    def _redis(self) -> None:
        redis = shutil.which("redis-server")
        if not redis:
            raise ClusterError("redis-server is not installed (Debian: apt-get install redis-server)")
        cmd = [
            redis,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.ports.redis),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self._start("redis", cmd)
        self._wait_port("redis", self.ports.redis)

    def _s3(self) -> None:
        moto = Path(sys.executable).with_name("moto_server")
        self._start("s3", [str(moto), "-H", "127.0.0.1", "-p", str(self.ports.s3)])
        self._wait_port("s3", self.ports.s3)
        client = self.s3_client()
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for bucket in {BUCKET, ARTIFACT_BUCKET} - existing:
            client.create_bucket(Bucket=bucket)

    def s3_client(self):
        """A boto3 S3 client of the cluster's S3 server, with its credentials."""
        import boto3

        env = self.env()
        return boto3.client(
            "s3",
            endpoint_url=env["VISREC_S3_ENDPOINT"],
            region_name="us-east-1",
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def _mlflow(self) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        cmd = [
            str(mlflow),
            "server",
            "--backend-store-uri",
            f"postgresql://visrec@127.0.0.1:{self.ports.postgres}/mlflow",
            "--artifacts-destination",
            f"s3://{ARTIFACT_BUCKET}/artifacts",
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.ports.mlflow),
            "--workers",
            "1",
        ]
        self._start("mlflow", cmd)
        self._wait_port("mlflow", self.ports.mlflow, timeout=180)

    def start_spark(self) -> None:
        """Start the Spark master and its two workers (alone: e.g. for a benchmark on a standalone cluster)."""
        p = self.ports
        master = [_spark_class(), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1"]
        self._start("spark-master", [*master, "--port", str(p.spark_master), "--webui-port", str(p.spark_ui)])
        self._wait_port("spark-master", p.spark_master)
        for n in (1, 2):
            self.start_spark_worker(n)

    def start_spark_worker(self, n: int) -> None:
        """Start (or restart) Spark worker ``n``: 1 core, 1.5 GB."""
        p = self.ports
        work = self.root / f"spark-worker{n}"
        work.mkdir(parents=True, exist_ok=True)
        cmd = [
            _spark_class(),
            "org.apache.spark.deploy.worker.Worker",
            f"spark://127.0.0.1:{p.spark_master}",
            "--host",
            "127.0.0.1",
            "--cores",
            "1",
            "--memory",
            "1536m",
            "--webui-port",
            str(p.spark_worker_ui(n)),
            "--work-dir",
            str(work),
        ]
        self._start(f"spark-worker{n}", cmd)
        self._wait_port(f"spark-worker{n}", p.spark_worker_ui(n))

    def airflow(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).with_name("airflow")), *args]

    def _airflow(self, pool_slots: dict[str, int]) -> None:
        self._run("create Airflow's metadata database in PostgreSQL", self.airflow("db", "migrate"))
        for pool, slots in pool_slots.items():
            self._run(
                f"create the pool {pool}", self.airflow("pools", "set", pool, str(slots), POOL_NOTES[pool])
            )
        self._start("api-server", self.airflow("api-server", "--workers", "1"))
        self._start("scheduler", self.airflow("scheduler"))
        self._start("dag-processor", self.airflow("dag-processor"))
        for n, name in enumerate(WORKERS, start=1):
            self.start_worker(name, n)
        self._wait_port("api-server", self.ports.airflow_api, timeout=180)

    def start_worker(self, name: str, n: int) -> None:
        """Start (or restart) Celery worker ``name`` with its own hostname, pid file and log port."""
        env = {
            **self.env(),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.ports.worker_log_server(n)),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "visrec.app.cluster.worker_hostname",
            "VISREC_WORKER_HOSTNAME": name,
        }
        pid_file = self.root / f"{name}.pid"
        pid_file.unlink(missing_ok=True)
        cmd = self.airflow(
            "celery", "worker", "--celery-hostname", f"{name}@visrec", "--queues", QUEUES,
            "--concurrency", "1", "--pid", str(pid_file),
        )  # fmt: skip
        self._start(name, cmd, env=env)

    # -- the verbs ----------------------------------------------------------------------------------

    def up(self, pool_slots: dict[str, int], settings_env: dict[str, str] | None = None) -> None:
        """Start every service that is not running; wait until each answers. ``settings_env``
        (``VISREC_*`` variables) is what every task runs with, beside the services' addresses."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_env(settings_env or {})
        steps = [
            ("postgres", self._postgres),
            ("redis", self._redis),
            ("s3", self._s3),
            ("mlflow", self._mlflow),
            ("spark-master", self.start_spark),
            ("scheduler", lambda: self._airflow(pool_slots)),
        ]
        for name, start in steps:
            if self.alive(name):
                log.info("%s is already running (pid %d)", name, self.pids[name])
                continue
            started = time.perf_counter()
            start()
            log.info("%s ready in %.1fs", name, time.perf_counter() - started)

    def down(self) -> list[str]:
        """Stop every process this cluster started (its whole process group) and remove its databases
        (the S3 server kept its objects in memory: a later ``up`` starts empty and consistent)."""
        stopped = []
        for name, pid in reversed(list(self.pids.items())):
            if not self.alive(name):
                continue
            _signal_group(pid, signal.SIGTERM)
            stopped.append(name)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(self.alive(n) for n in stopped):
            time.sleep(0.3)
        for name in stopped:
            if self.alive(name):
                _signal_group(self.pids[name], signal.SIGKILL)
        self.pids = {}
        self._save()
        shutil.rmtree(self.pgdata, ignore_errors=True)
        return stopped

    def status(self) -> dict[str, str]:
        """Each started process: running (pid) or stopped."""
        return {
            name: f"running (pid {pid})" if self.alive(name) else "stopped" for name, pid in self.pids.items()
        }

    def trigger(self, ds: str) -> str:
        """Trigger ``visrec_nightly`` for ``ds`` through the scheduler (not ``dags test``); return the
        run id. Waits (up to 3 minutes) for the dag-processor to have parsed the DAG."""
        check_ds(ds)
        env = self.env()
        check_services(Settings.from_env(env), env)
        deadline = time.monotonic() + 180
        while True:  # the DAG exists once the dag-processor has parsed it
            result = subprocess.run(self.airflow("dags", "unpause", DAG_ID), env=env, capture_output=True)
            if result.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise ClusterError(f"Airflow does not know {DAG_ID}; see {self.logs / 'dag-processor.log'}")
            time.sleep(3)
        run_id = f"visrec-{ds}-{int(time.time())}"
        self._run(
            f"trigger {DAG_ID} for {ds}",
            self.airflow(
                "dags", "trigger", DAG_ID, "--logical-date", f"{ds}T00:00:00+00:00", "--run-id", run_id
            ),
        )
        return run_id

    def run_state(self, run_id: str) -> str:
        """The DAG run's state (queued, running, success, failed), read from the metadata database."""
        rows = self.query("SELECT state FROM dag_run WHERE run_id = %s", (run_id,))
        return rows[0][0] if rows else "unknown"

    def wait(self, run_id: str, timeout: float = 1800, poll: float = 5, on_poll=None) -> str:
        """Wait until the run ends; return its final state. ``on_poll()`` is called at each poll."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run_state(run_id)
            if state in ("success", "failed"):
                return state
            if on_poll:
                on_poll()
            time.sleep(poll)
        raise ClusterError(f"run {run_id} did not finish in {timeout:.0f}s (state {self.run_state(run_id)})")

    def task_instances(self, run_id: str) -> list[dict]:
        """Every try of every task of the run: task_id, try_number, state, hostname (earlier tries
        come from Airflow's task-instance history)."""
        sql = (
            "SELECT task_id, try_number, state, hostname FROM task_instance WHERE run_id = %s UNION ALL "
            "SELECT task_id, try_number, state, hostname FROM task_instance_history WHERE run_id = %s"
        )
        rows = self.query(sql, (run_id, run_id))
        return [dict(zip(("task_id", "try_number", "state", "hostname"), r, strict=True)) for r in rows]

    def query(self, sql: str, params: tuple = (), database: str = "airflow") -> list[tuple]:
        """Rows of a query on the cluster's PostgreSQL (``airflow`` or ``mlflow``)."""
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=self.ports.postgres, user="visrec", dbname=database)
        try:
            with con.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            con.close()

    def kill(self, name: str) -> None:
        """SIGKILL process ``name`` and every process under it, whatever its group: a machine lost."""
        for pid in [self.pids[name], *_descendants(self.pids[name])]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def worker_hostname() -> str:
    """The host name Airflow records for a task (``AIRFLOW__CORE__HOSTNAME_CALLABLE``): the worker's
    own name, so that two workers on one machine are told apart as two machines would be."""
    return os.environ.get("VISREC_WORKER_HOSTNAME") or socket.getfqdn()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren...), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _postgres_bin() -> str:
    initdb = shutil.which("initdb")
    if initdb:
        return str(Path(initdb).parent)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise ClusterError("PostgreSQL's server is not installed (Debian: apt-get install postgresql)")
    return str(found[-1].parent)


def _spark_class() -> str:
    import pyspark

    path = Path(pyspark.__file__).parent / "bin" / "spark-class"
    if not path.exists():
        raise ClusterError(f"{path} is missing: the pyspark wheel is incomplete")
    return str(path)


def _create_database(port: int, name: str) -> None:
    import psycopg2

    con = psycopg2.connect(host="127.0.0.1", port=port, user="visrec", dbname="postgres")
    con.autocommit = True
    try:
        with con.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        con.close()
