"""docker/: the compose file parses and names every role; the image installs from the lock; every role
the compose file runs is one the entrypoint knows. (No Docker engine runs here: the same topology is
run as processes by the cluster tests.)"""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.conftest import REPO

DOCKER = REPO / "docker"
ROLES = {
    "postgres", "redis", "minio", "minio-init", "mlflow", "airflow-init", "airflow-api-server",
    "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker-1",
    "airflow-worker-2", "spark-master", "spark-worker-1", "spark-worker-2",
}  # fmt: skip


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_has_every_role_of_the_stack():
    services = _compose()["services"]
    assert ROLES <= set(services)
    built = {
        name for name, s in services.items() if s.get("build", {}).get("dockerfile") == "docker/Dockerfile"
    }
    assert ROLES - {"postgres", "redis", "minio", "minio-init"} <= built  # one image for every visrec role
    assert "postgres-init.sql" in str(services["postgres"]["volumes"])
    mlflow_env = services["mlflow"]["environment"]
    assert mlflow_env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    for name in ("airflow-worker-1", "airflow-worker-2", "airflow-scheduler"):
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["VISREC_LAKE_URI"].startswith("s3://") and env["VISREC_SPARK_MASTER"].startswith(
            "spark://"
        )
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-worker-gpu"]["environment"]["VISREC_QUEUES"] == "training"


def test_no_secret_is_committed():
    text = (DOCKER / "compose.yaml").read_text()
    assert "FERNET_KEY" not in text and "JWT_SECRET" not in text and "SECRET_KEY" not in text  # in .env
    assert re.search(r"POSTGRES_PASSWORD:\s*\$\{POSTGRES_PASSWORD:\?", text)
    assert (DOCKER / ".env.example").exists() and not (DOCKER / ".env").exists()
    example = (DOCKER / ".env.example").read_text()
    assert "change-me" not in example and "admin:admin" not in example


LONG_RUNNING = ROLES - {"minio-init", "airflow-init"}
AIRFLOW = {"airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
           "airflow-worker-1", "airflow-worker-2"}  # fmt: skip


def test_images_are_pinned_and_every_long_running_service_is_supervised():
    services = _compose()["services"]
    for name, service in services.items():
        image = service["image"]
        tag = image.split("@")[0].rsplit(":", 1)[-1] if ":" in image else ""
        assert "@sha256:" in image or re.search(r"\d", tag), f"{name}: {image} is not pinned"
        assert "latest" not in image, name
    for name in LONG_RUNNING:
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
        assert services[name].get("restart") == "unless-stopped", name
    entrypoint = (DOCKER / "entrypoint.sh").read_text()
    for name in LONG_RUNNING & set(_built()):
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "visrec-role", "health"] and f"    {test[3]})" in entrypoint, (name, test)
    # Airflow waits for healthy metadata, broker and S3, not only for their containers to exist.
    for name in AIRFLOW:
        needs = services[name]["depends_on"]
        assert {needs[s]["condition"] for s in ("postgres", "redis", "minio")} == {"service_healthy"}, name
    for name in ("spark-worker-1", "spark-worker-2"):
        assert services[name]["depends_on"]["spark-master"]["condition"] == "service_healthy"


def _built() -> dict:
    return {n: s for n, s in _compose()["services"].items() if s.get("build")}


def test_one_env_file_shared_secrets_remote_logs_and_production_auth():
    services = _built()
    example = dict(
        line.split("=", 1)
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if re.match(r"^\w+=", line)
    )
    # The secrets every Airflow component must share come from the one env file every service reads.
    assert {"AIRFLOW__API__SECRET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY"} <= set(
        example
    )
    for name, service in services.items():
        assert service["env_file"] == [".env"], name
        assert service["user"] == "50000:0", name
        env = service["environment"]
        assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("fab_auth_manager.FabAuthManager"), name
        assert env["AIRFLOW__LOGGING__REMOTE_LOGGING"] == "True", name
        assert env["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"].startswith("s3://"), name
        assert "${REDIS_PASSWORD" in env["AIRFLOW__CELERY__BROKER_URL"], name
        assert int(env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"]) <= 60, name
    assert "--requirepass" in str(_compose()["services"]["redis"]["command"])


def test_the_twin_runs_with_the_stacks_airflow_settings(tmp_path):
    """The process twin (visrec cluster) and the compose stack agree on what decides behaviour."""
    from visrec.app.cluster import LocalCluster

    twin = LocalCluster(tmp_path).service_env()
    stack = _compose()["services"]["airflow-scheduler"]["environment"]
    for key in (
        "AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__AUTH_MANAGER", "AIRFLOW__CORE__LOAD_EXAMPLES",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL", "AIRFLOW__LOGGING__REMOTE_LOGGING",
        "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID", "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER",
    ):  # fmt: skip
        assert twin[key] == stack[key], key
    for key in ("AIRFLOW__API__SECRET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY"):
        assert twin[key]  # generated once, shared by every component


def test_new_env_writes_fresh_secrets(tmp_path):
    from cryptography.fernet import Fernet

    runs = [
        subprocess.run(["sh", str(DOCKER / "new-env.sh")], capture_output=True, text=True, check=True)
        for _ in "ab"
    ]
    envs = [dict(re.findall(r"^(\w+)=(.*)$", r.stdout, re.M)) for r in runs]
    assert not [v for v in envs[0].values() if v.startswith("generate")]
    assert envs[0]["AIRFLOW__API__SECRET_KEY"] != envs[1]["AIRFLOW__API__SECRET_KEY"]
    assert len(envs[0]["AIRFLOW__API__SECRET_KEY"]) == 64  # 64 bytes: no short-key warning from HS512
    Fernet(envs[0]["AIRFLOW__CORE__FERNET_KEY"].encode())  # a valid key


def test_the_image_installs_from_the_lock_and_knows_every_role():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "-c requirements.lock" in dockerfile and "openjdk-17-jre-headless" in dockerfile
    assert '".[${EXTRAS}]"' in dockerfile and "ARG EXTRAS=cluster" in dockerfile
    # Dependencies in a layer before the code; a pinned base; not root.
    assert dockerfile.index('".[${EXTRAS}]"') < dockerfile.index("COPY visrec ./visrec")
    assert re.search(r"^FROM python:3\.11\.\d+-slim", dockerfile, re.M)
    assert re.search(r"^USER 50000$", dockerfile, re.M)
    entrypoint = DOCKER / "entrypoint.sh"
    subprocess.run(["bash", "-n", str(entrypoint)], check=True)
    known = set(re.findall(r"^\s+([a-z|-]+)\)$", entrypoint.read_text(), re.M))
    known = {role for case in known for role in case.split("|")}
    used = {s["command"][0] for s in _compose()["services"].values() if s.get("build") and "command" in s}
    assert used and used <= known, used - known
