#!/usr/bin/env bash
# The role of a container of the visrec image: the first argument names it (see docker/compose.yaml).
# Airflow roles read the secrets that airflow-init generated once onto the shared volume, so every
# component signs and checks task tokens with the same JWT secret and reads connections with the same
# Fernet key.
set -euo pipefail
SECRETS=/shared/airflow-secrets.env

load_secrets() {
  for _ in $(seq 60); do [ -s "$SECRETS" ] && break; sleep 2; done
  [ -s "$SECRETS" ] || { echo "no $SECRETS: did airflow-init run?" >&2; exit 1; }
  set -a; . "$SECRETS"; set +a
}

role="${1:-help}"; shift || true
case "$role" in
  airflow-init)
    mkdir -p /shared/visrec
    if [ ! -s "$SECRETS" ]; then
      umask 077
      python - > "$SECRETS" <<'PY'
import base64, os, secrets
print(f"AIRFLOW__API_AUTH__JWT_SECRET={secrets.token_hex(32)}")
print(f"AIRFLOW__CORE__FERNET_KEY={base64.urlsafe_b64encode(os.urandom(32)).decode()}")
PY
    fi
    load_secrets
    airflow db migrate
    airflow pools set visrec_spark "${VISREC_SPARK_POOL_SLOTS:-1}" "Spark jobs at once"
    airflow pools set visrec_training "${VISREC_TRAINING_POOL_SLOTS:-1}" "model trainings at once"
    echo "airflow-init: metadata migrated, pools set; admin user: ${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}"
    ;;
  api-server|scheduler|dag-processor|triggerer)
    load_secrets
    exec airflow "$role" "$@"
    ;;
  worker)
    # One worker per container; its queues: default, spark, training (a GPU worker: training only).
    load_secrets
    exec airflow celery worker --queues "${VISREC_QUEUES:-default,spark,training}" \
      --celery-hostname "${VISREC_WORKER_NAME:-$(hostname)}" --concurrency "${VISREC_WORKER_CONCURRENCY:-1}" "$@"
    ;;
  mlflow)
    exec mlflow server --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
      --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --serve-artifacts \
      --host 0.0.0.0 --port 5000 --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:5000,localhost,localhost:5000}" "$@"
    ;;
  spark-master)
    exec spark-class org.apache.spark.deploy.master.Master --host "$(hostname)" --port 7077 --webui-port 8080 "$@"
    ;;
  spark-worker)
    exec spark-class org.apache.spark.deploy.worker.Worker "${SPARK_MASTER_URL:-spark://spark-master:7077}" \
      --cores "${SPARK_WORKER_CORES:-1}" --memory "${SPARK_WORKER_MEMORY:-2g}" --webui-port 8081 "$@"
    ;;
  visrec)
    exec visrec "$@"
    ;;
  *)
    echo "roles: airflow-init api-server scheduler dag-processor triggerer worker mlflow spark-master spark-worker visrec" >&2
    exit 2
    ;;
esac
