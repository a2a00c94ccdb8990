"""Cluster mode on one machine: the docker/ stack's topology as local processes on 127.0.0.1.

``visrec cluster up`` starts, each as its own process with its own log under ``<dir>/logs``:
PostgreSQL (Airflow's and MLflow's metadata, the serving store), Redis (Celery's broker, with a password), an S3 server
(moto; the compose stack uses MinIO), the MLflow tracking server (Postgres backend, artifacts proxied to
the S3 bucket), a Spark standalone master with two 1-core workers, and Airflow: api-server (FAB auth
manager: a user and password, or a token), scheduler, dag-processor, triggerer and two Celery workers
(distinct hostnames and log-server ports) on the ``default``, ``spark`` and ``training`` queues.

Like the compose stack's containers, each Airflow component has its own ``AIRFLOW_HOME`` and takes its
configuration only from environment variables: a setting the compose file would fail to share (the API
secret key that signs log requests, the JWT secret of task tokens) differs between components here
too, and the cluster tests see it. Task logs go to the S3 bucket (remote logging), so a lost worker
does not take them along.

``<dir>/cluster.env`` holds the settings and secrets that point visrec and Airflow at the services
(``set -a; . <dir>/cluster.env; set +a``); ``visrec cluster up`` restarts any component that died,
``down`` ends every process of the cluster (found by a marker in their environment, so a dead
leader's children are found too). S3 data lives in the moto server's memory, so ``down`` also removes
the databases: an ``up`` after ``down`` starts empty.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
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

from visrec.app.airflow_api import AirflowAPI
from visrec.app.orchestrate import DAG_ID, POOL_NOTES
from visrec.errors import VisrecError
from visrec.settings import Settings
from visrec.store.lake import check_ds
from visrec.store.services import check_services

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
BUCKET = "visrec"
ARTIFACT_BUCKET = "visrec-mlflow"
ADMIN = "admin"
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
# Generated once per cluster, kept in cluster.env across `up`s. Every Airflow component needs the first
# three: tasks fail with "Invalid auth token" when the JWT secrets differ, and the api-server's requests
# for a running task's log are refused (403) by the worker when the API secret keys differ.
SECRETS = (
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CORE__FERNET_KEY",
    "REDIS_PASSWORD",
    "POSTGRES_PASSWORD",
    "AIRFLOW_ADMIN_PASSWORD",
)
WORKERS = ("worker1", "worker2")
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer", *WORKERS)
QUEUES = "default,spark,training"
NO_SPARK_REST = "-Dspark.master.rest.enabled=false"
# Every process the cluster starts carries this variable (not in cluster.env: a user's shell that
# sources it is no part of the cluster), so `down` finds them all, however they were spawned.
MARKER = "CLUSTER_TWIN_ROOT"


class ClusterError(VisrecError):
    """A service of the local cluster did not start; the message names it and its log."""


@dataclass(frozen=True)
class Ports:
    """The services' ports on 127.0.0.1: ``base`` and the next 12.

    Below Linux's ephemeral range (32768-60999), from which every outgoing connection takes its local
    port: a service whose port a client connection holds cannot bind it and dies at start.
    """

    base: int = 27100
    count = 13

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

    @property
    def triggerer_log_server(self) -> int:
        return self.base + 12

    def all(self) -> range:
        """Every port of the cluster, ``base`` to ``base + count - 1``."""
        return range(self.base, self.base + self.count)


class LocalCluster:
    """The process twin of docker/compose.yaml, rooted at ``root`` (state, logs, Airflow homes)."""

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
        self._secrets: dict[str, str] | None = None

    # -- the environment every process (and a user's shell) runs with --------------------------------

    def env_file(self) -> Path:
        return self.root / "cluster.env"

    def secrets(self) -> dict[str, str]:
        """The cluster's secrets (:data:`SECRETS`), from cluster.env; generated (once per instance, then
        written by :meth:`up`) when it has none."""
        if self._secrets is not None:
            return self._secrets
        kept = parse_env(self.env_file().read_text()) if self.env_file().exists() else {}
        generated = {
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
            "AIRFLOW__CORE__FERNET_KEY": urlsafe_b64encode(os.urandom(32)).decode(),
            "REDIS_PASSWORD": secrets.token_hex(16),
            "POSTGRES_PASSWORD": secrets.token_hex(16),
            "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(12),
        }
        self._secrets = {key: kept.get(key) or generated[key] for key in SECRETS}
        return self._secrets

    def database_uri(self, database: str, scheme: str = "postgresql") -> str:
        """The URI of one of the cluster's PostgreSQL databases (airflow, mlflow, serving), with its
        password."""
        return f"{scheme}://visrec:{self.secrets()['POSTGRES_PASSWORD']}@127.0.0.1:{self.ports.postgres}/{database}"

    def service_env(self) -> dict[str, str]:
        """Settings pointing visrec, MLflow, Spark and Airflow at the cluster, with its secrets."""
        secret = self.secrets()
        p = self.ports
        api = f"http://127.0.0.1:{p.airflow_api}"
        s3 = f"http://127.0.0.1:{p.s3}"
        aws = {"AWS_ACCESS_KEY_ID": "visrec", "AWS_SECRET_ACCESS_KEY": "visrec-local"}
        log_connection = {
            "conn_type": "aws",
            "login": aws["AWS_ACCESS_KEY_ID"],
            "password": aws["AWS_SECRET_ACCESS_KEY"],
            "extra": {"endpoint_url": s3, "region_name": "us-east-1"},
        }
        return {
            "VISREC_CLUSTER_DIR": str(self.root),
            "VISREC_HOME": str(self.root / "visrec"),
            "VISREC_LAKE_URI": f"s3://{BUCKET}/lake",
            "VISREC_S3_ENDPOINT": s3,
            "VISREC_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{p.mlflow}",
            "VISREC_SPARK_MASTER": f"spark://127.0.0.1:{p.spark_master}",
            "VISREC_SERVING_URI": self.database_uri("serving"),
            **aws,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": s3,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable,
            # This shell's Airflow CLI; each component has its own (component_env).
            "AIRFLOW_HOME": str(self.root / "airflow" / "cli"),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__API__BASE_URL": api,
            "AIRFLOW__API__PORT": str(p.airflow_api),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_uri("airflow", "postgresql+psycopg2"),
            "AIRFLOW__CELERY__BROKER_URL": f"redis://:{secret['REDIS_PASSWORD']}@127.0.0.1:{p.redis}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": self.database_uri("airflow", "db+postgresql"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            # A worker that dies mid-task: its task is failed (and retried) after this, not 5 minutes.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "45",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            # Task logs to the bucket when a try ends: readable after its worker is gone.
            "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
            "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"s3://{BUCKET}/airflow-logs",
            "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": "visrec_s3",
            "AIRFLOW_CONN_VISREC_S3": json.dumps(log_connection),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(p.triggerer_log_server),
            "AIRFLOW_ADMIN_USER": ADMIN,
            **secret,
        }

    def env(self) -> dict[str, str]:
        """The caller's environment plus ``cluster.env`` (written by :meth:`up`: the services, the
        secrets and the visrec settings every task runs with)."""
        env = {**os.environ, **self.service_env()}
        if self.env_file().exists():
            env.update(parse_env(self.env_file().read_text()))
        return env

    def component_env(self, name: str) -> dict[str, str]:
        """What component ``name`` runs with: :meth:`env`, its own ``AIRFLOW_HOME`` and the marker."""
        return {**self.env(), "AIRFLOW_HOME": str(self.root / "airflow" / name), MARKER: str(self.root)}

    def _write_env(self, settings_env: dict[str, str]) -> None:
        """cluster.env: the visrec settings every task runs with (those of an earlier ``up``, updated by
        ``settings_env``), the services' addresses and the secrets (kept across ``up``s)."""
        service = self.service_env()
        kept = parse_env(self.env_file().read_text()) if self.env_file().exists() else {}
        settings = {k: v for k, v in {**kept, **settings_env}.items() if k not in service}
        # A machine's twin runs what it is asked to, not every night, unless told otherwise (Airflow's
        # backfills need a periodic schedule; with one, the latest night also runs at once).
        settings.setdefault("VISREC_DAG_SCHEDULE", "none")
        lines = [f"{k}={shlex.quote(v)}" for k, v in {**settings, **service}.items()]
        self.env_file().write_text("\n".join(lines) + "\n")
        self.env_file().chmod(0o600)

    # -- processes ----------------------------------------------------------------------------------

    def _start(self, name: str, cmd: list[str], env: dict[str, str] | None = None, **kw) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        proc = subprocess.Popen(
            cmd,
            env=env or self.component_env(name),
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
        return bool(pid) and _running(pid)

    def processes(self) -> list[int]:
        """Every live process of this cluster: the components and whatever they spawned, whether or
        not their leader still runs. Found by session (each component leads its own, and its children
        stay in it) and by the marker in the environment (for a child that started a session of its
        own; a process that rewrites its title can hide its environment, hence both)."""
        leaders = set(self.pids.values())
        found = set()
        for proc in Path("/proc").glob("[0-9]*"):
            pid = int(proc.name)
            try:
                session = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3])
                marked = f"{MARKER}={self.root}".encode() in (proc / "environ").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if (session in leaders or marked) and pid != os.getpid() and _running(pid):
                found.add(pid)
        found |= {child for pid in list(found) for child in _descendants(pid) if _running(child)}
        return sorted(found)

    def _wait_port(self, name: str, port: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_open(port):
                return
            if name in self.pids and not self.alive(name):
                break
            time.sleep(0.5)
        raise ClusterError(f"{name} did not start on 127.0.0.1:{port}; {self._log_tail(name)}")

    def _log_tail(self, name: str, lines: int = 5) -> str:
        """The last lines of a service's log, quoted into its error (CI shows the error, not the file)."""
        path = self.logs / f"{name}.log"
        try:
            tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            tail = []
        said = "\n".join(f"  | {line}" for line in tail) if tail else "  (it wrote nothing)"
        return f"the end of {path}:\n{said}"

    def _run(self, what: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        result = subprocess.run(cmd, env=env or self.env(), capture_output=True, text=True)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()[-800:]
            raise ClusterError(f"could not {what} (exit {result.returncode}): {detail}")

    # -- services -----------------------------------------------------------------------------------

    def _postgres(self, init: bool) -> None:
        bin_dir = _postgres_bin()
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if init or not (self.pgdata / "PG_VERSION").exists():
            # Left by a cluster that was not stopped with `down`: its S3 objects are gone with the S3
            # server, so its databases would point at nothing. Start empty, as `down` leaves it.
            shutil.rmtree(self.pgdata, ignore_errors=True)
            self.pgdata.mkdir(parents=True)
            if as_postgres:
                shutil.chown(self.pgdata, "postgres", "postgres")
            # Password authentication, as in compose: the password file is read once and removed.
            password_file = self.pgdata.with_name(self.pgdata.name + ".pw")
            password_file.write_text(self.secrets()["POSTGRES_PASSWORD"] + "\n")
            password_file.chmod(0o600)
            if as_postgres:
                shutil.chown(password_file, "postgres", "postgres")
            try:
                self._run(
                    "initialise PostgreSQL",
                    [*as_postgres, f"{bin_dir}/initdb", "-D", str(self.pgdata), "-A", "scram-sha-256", "-U",
                     "visrec", f"--pwfile={password_file}"],
                )  # fmt: skip
            finally:
                password_file.unlink(missing_ok=True)
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
        for database in ("airflow", "mlflow", "serving"):
            _create_database(self.ports.postgres, self.secrets()["POSTGRES_PASSWORD"], database)

    def _redis(self) -> None:
        redis = shutil.which("redis-server")
        if not redis:
            raise ClusterError("redis-server is not installed (Debian: apt-get install redis-server)")
        # The password in a private config file, not on the command line (which `ps` shows to anyone).
        config = self.root / "redis.conf"
        config.touch(mode=0o600)
        config.write_text(
            f'bind 127.0.0.1\nport {self.ports.redis}\nsave ""\nappendonly no\n'
            f"requirepass {self.secrets()['REDIS_PASSWORD']}\n"
        )
        self._start("redis", [redis, str(config)])
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
        # The store's URI (with its password) from the environment, not the command line.
        store = self.database_uri("mlflow")
        self._start("mlflow", cmd, env={**self.component_env("mlflow"), "MLFLOW_BACKEND_STORE_URI": store})
        self._wait_port("mlflow", self.ports.mlflow, timeout=180)

    def start_spark(self) -> None:
        """Start the Spark master and its two workers, those not running (alone: e.g. for a benchmark
        on a standalone cluster)."""
        if not self.alive("spark-master"):
            self._spark_master()
        for n in (1, 2):
            if not self.alive(f"spark-worker{n}"):
                self.start_spark_worker(n)

    def _spark_master(self) -> None:
        p = self.ports
        master = [_spark_class(), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1"]
        # No REST submission server (port 6066: unauthenticated job submission), as in compose.
        env = {**self.component_env("spark-master"), "SPARK_MASTER_OPTS": NO_SPARK_REST}
        cmd = [*master, "--port", str(p.spark_master), "--webui-port", str(p.spark_ui)]
        self._start("spark-master", cmd, env=env)
        self._wait_port("spark-master", p.spark_master)

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

    def _airflow_init(self, pool_slots: dict[str, int]) -> None:
        """What compose's airflow-init does: migrate the metadata database, set the pools, create the
        admin user (its password in cluster.env)."""
        self._run("create Airflow's metadata database in PostgreSQL", self.airflow("db", "migrate"))
        for pool, slots in pool_slots.items():
            self._run(
                f"create the pool {pool}", self.airflow("pools", "set", pool, str(slots), POOL_NOTES[pool])
            )
        self._run(
            "create Airflow's admin user",
            self.airflow(
                "users", "create", "--username", ADMIN, "--password", self.secrets()["AIRFLOW_ADMIN_PASSWORD"],
                "--role", "Admin", "--email", "admin@localhost", "--firstname", "visrec", "--lastname", "admin",
            ),
        )  # fmt: skip

    def start_airflow(self, name: str) -> None:
        """Start (or restart) Airflow component ``name`` (one of :data:`AIRFLOW_COMPONENTS`)."""
        if name in WORKERS:
            self.start_worker(name, WORKERS.index(name) + 1)
        elif name == "api-server":
            self._start(name, self.airflow("api-server", "--workers", "1"))
        else:
            self._start(name, self.airflow(name))

    def start_worker(self, name: str, n: int) -> None:
        """Start (or restart) Celery worker ``name`` with its own hostname, pid file and log port."""
        env = {
            **self.component_env(name),
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

    def up(self, pool_slots: dict[str, int], settings_env: dict[str, str] | None = None) -> list[str]:
        """Start every component that is not running (a dead one is restarted) and wait until each
        answers; return the ones started. ``settings_env`` (``VISREC_*`` variables) is what every task
        runs with, beside the services' addresses."""
        self.root.mkdir(parents=True, exist_ok=True)
        fresh = not any(self.alive(name) for name in self.pids)
        if fresh:
            taken = [port for port in self.ports.all() if not port_free(port)]
            if taken:
                raise ClusterError(
                    f"port(s) {', '.join(map(str, taken))} of 127.0.0.1 are in use (by a server, or as a "
                    f"connection's local port); start it on {self.ports.count} free ports with --port-base"
                )
            self.pids = {}
        self._write_env(settings_env or {})
        services = [
            ("postgres", lambda: self._postgres(init=fresh)),
            ("redis", self._redis),
            ("s3", self._s3),
            ("mlflow", self._mlflow),
            ("spark-master", self._spark_master),
            ("spark-worker1", lambda: self.start_spark_worker(1)),
            ("spark-worker2", lambda: self.start_spark_worker(2)),
        ]
        airflow = [(name, lambda name=name: self.start_airflow(name)) for name in AIRFLOW_COMPONENTS]
        started = []
        for name, start in services + [("airflow-init", lambda: None)] + airflow:
            if name == "airflow-init":
                if fresh:
                    self._airflow_init(pool_slots)
                continue
            if self.alive(name):
                log.info("%s is already running (pid %d)", name, self.pids[name])
                continue
            if name in self.pids:
                log.warning("%s had stopped (see %s): restarting it", name, self.logs / f"{name}.log")
                if name == "s3":
                    log.warning("the S3 server kept its objects in memory: the lake starts empty again")
            began = time.perf_counter()
            start()
            started.append(name)
            log.info("%s started in %.1fs", name, time.perf_counter() - began)
        self._wait_port("api-server", self.ports.airflow_api, timeout=180)
        return started

    def down(self) -> list[str]:
        """End every process of this cluster (each component's process group, and any process with the
        cluster's marker: a dead leader's children too) and remove its databases (the S3 server kept
        its objects in memory: a later ``up`` starts empty and consistent). Returns the components that
        were running."""
        stopped = [name for name in self.pids if self.alive(name)]
        for pid in reversed(list(self.pids.values())):
            _signal_group(pid, signal.SIGTERM)
        for pid in self.processes():
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.processes():
            time.sleep(0.3)
        for pid in reversed(list(self.pids.values())):
            _signal_group(pid, signal.SIGKILL)
        for pid in self.processes():
            _signal(pid, signal.SIGKILL)
        self.pids = {}
        self._save()
        shutil.rmtree(self.pgdata, ignore_errors=True)
        return stopped

    def status(self) -> dict[str, str]:
        """Each started component: running (pid) or stopped."""
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

    def backfill(self, start: str, end: str, conf: dict | None = None) -> dict:
        """An Airflow backfill of the nightly DAG for ``start``..``end``, created through the REST API
        (the UI shows it, and can pause or cancel it); one run at a time. Needs a periodic schedule."""
        check_ds(start), check_ds(end)
        return self.api().create_backfill(DAG_ID, start, end, conf, max_active_runs=1)

    def wait_backfill(
        self, backfill_id: int, runs: int, timeout: float = 7200, poll: float = 5
    ) -> dict[str, str]:
        """Wait until the backfill's ``runs`` runs have ended; their states by date."""
        deadline = time.monotonic() + timeout
        sql = "SELECT logical_date, state FROM dag_run WHERE backfill_id = %s ORDER BY logical_date"
        while True:
            rows = self.query(sql, (backfill_id,))
            states = {str(ds.date()): state for ds, state in rows}
            if len(states) >= runs and all(s in ("success", "failed") for s in states.values()):
                return states
            if time.monotonic() > deadline:
                raise ClusterError(f"backfill {backfill_id} did not finish in {timeout:.0f}s: {states}")
            time.sleep(poll)

    def backfill_failures(self, backfill_id: int) -> dict[str, list[str]]:
        """The failed tasks of each failed date of a backfill."""
        sql = (
            "SELECT dr.logical_date, ti.task_id FROM task_instance ti JOIN dag_run dr ON dr.dag_id = ti.dag_id "
            "AND dr.run_id = ti.run_id WHERE dr.backfill_id = %s AND ti.state = 'failed' ORDER BY 1, 2"
        )
        failures: dict[str, list[str]] = {}
        for ds, task in self.query(sql, (backfill_id,)):
            failures.setdefault(str(ds.date()), []).append(task)
        return failures

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

        con = psycopg2.connect(
            host="127.0.0.1",
            port=self.ports.postgres,
            user="visrec",
            password=self.secrets()["POSTGRES_PASSWORD"],
            dbname=database,
        )
        try:
            with con.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            con.close()

    def api(self) -> AirflowAPI:
        """Airflow's REST API of this cluster, as its admin (FAB user and password)."""
        return AirflowAPI(
            f"http://127.0.0.1:{self.ports.airflow_api}", ADMIN, self.secrets()["AIRFLOW_ADMIN_PASSWORD"]
        )

    def kill_leader(self, name: str) -> None:
        """SIGKILL process ``name`` alone: what an OOM kill does; its children live on as orphans."""
        _signal(self.pids[name], signal.SIGKILL)

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
    """Whether a server listens on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind ``host:port`` now: nothing listens there and no connection holds it
    as its local port (which ``port_open`` cannot see)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the services' servers bind
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


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


def parse_env(text: str) -> dict[str, str]:
    """The variables of an env file as :meth:`LocalCluster._write_env` writes it (``KEY=shell-quoted``)."""
    env = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = " ".join(shlex.split(value)) if value.strip() else ""
    return env


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (an exited child not yet reaped) is not running.
    stat = Path(f"/proc/{pid}/stat")
    try:
        return not stat.read_text().rsplit(") ", 1)[-1].startswith("Z")
    except OSError:
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


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


def _create_database(port: int, password: str, name: str) -> None:
    import psycopg2

    con = psycopg2.connect(host="127.0.0.1", port=port, user="visrec", password=password, dbname="postgres")
    con.autocommit = True
    try:
        with con.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        con.close()
