#!/usr/bin/env bash
# The role of a container of the visrec image: the first argument names it (see docker/compose.yaml).
# `visrec-role health ROLE` is each role's healthcheck. Every setting and secret comes from the
# environment (docker/.env through env_file): Airflow's components share the API secret key (the
# api-server signs its requests for a worker's logs with it), the JWT secret (task tokens) and the
# Fernet key (connections), so a missing one stops the container with one line, not a 403 later.
set -euo pipefail

require_secrets() {
  local missing=()
  for name in AIRFLOW__API__SECRET_KEY AIRFLOW__API_AUTH__JWT_SECRET AIRFLOW__CORE__FERNET_KEY; do
    [ -n "${!name:-}" ] && [ "${!name}" != generate ] && [ "${!name}" != generate-fernet ] || missing+=("$name")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "visrec: ${missing[*]} not set: every Airflow component needs the same ones; docker/new-env.sh writes docker/.env with them" >&2
    exit 1
  fi
}

http_ok() {  # the image has no curl: Python's urllib
  python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=15)" "$1"
}

worker_name() { echo "${VISREC_WORKER_NAME:-$(hostname)}"; }

health() {
  case "${1:-}" in
    api-server)    http_ok http://localhost:8080/api/v2/monitor/health ;;
    scheduler)     airflow jobs check --job-type SchedulerJob --local ;;
    dag-processor) airflow jobs check --job-type DagProcessorJob --local ;;
    triggerer)     airflow jobs check --job-type TriggererJob --local ;;
    worker)        celery --app airflow.providers.celery.executors.celery_executor.app inspect ping \
                     -d "celery@$(worker_name)" ;;
    mlflow)        http_ok http://localhost:5000/health ;;
    spark-master)  http_ok http://localhost:8080/json/ ;;
    spark-worker)  http_ok http://localhost:8081/ ;;
    *) echo "health: one of api-server scheduler dag-processor triggerer worker mlflow spark-master spark-worker" >&2; exit 2 ;;
  esac
}

role="${1:-help}"; shift || true
case "$role" in
  airflow-init)
    require_secrets
    mkdir -p /shared/visrec
    airflow db migrate
    airflow pools set visrec_spark "${VISREC_SPARK_POOL_SLOTS:-1}" "Spark jobs at once"
    airflow pools set visrec_training "${VISREC_TRAINING_POOL_SLOTS:-1}" "model trainings at once"
    : "${AIRFLOW_ADMIN_PASSWORD:?set it in docker/.env (docker/new-env.sh writes one)}"
    if airflow users list --output plain | awk '{print $2}' | grep -qx "${AIRFLOW_ADMIN_USER:-admin}"; then
      echo "airflow-init: admin user ${AIRFLOW_ADMIN_USER:-admin} exists"
    else
      airflow users create --username "${AIRFLOW_ADMIN_USER:-admin}" --password "$AIRFLOW_ADMIN_PASSWORD" \
        --role Admin --email "${AIRFLOW_ADMIN_EMAIL:-admin@localhost}" --firstname visrec --lastname admin
    fi
    echo "airflow-init: metadata migrated, pools set; sign in as ${AIRFLOW_ADMIN_USER:-admin}"
    ;;
  api-server|scheduler|dag-processor|triggerer)
    require_secrets
    exec airflow "$role" "$@"
    ;;
  worker)
    # One worker per container; its queues: default, spark, training (a GPU worker: training only).
    require_secrets
    exec airflow celery worker --queues "${VISREC_QUEUES:-default,spark,training}" \
      --celery-hostname "celery@$(worker_name)" --concurrency "${VISREC_WORKER_CONCURRENCY:-1}" "$@"
    ;;
  mlflow)
    exec mlflow server --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
      --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --serve-artifacts \
      --host 0.0.0.0 --port 5000 --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:5000,localhost,localhost:5000}" "$@"
    ;;
  spark-master)
    # No REST submission server (port 6066): it takes jobs without authentication.
    export SPARK_MASTER_OPTS="${SPARK_MASTER_OPTS:-} -Dspark.master.rest.enabled=false"
    exec spark-class org.apache.spark.deploy.master.Master --host "$(hostname)" --port 7077 --webui-port 8080 "$@"
    ;;
  spark-worker)
    exec spark-class org.apache.spark.deploy.worker.Worker "${SPARK_MASTER_URL:-spark://spark-master:7077}" \
      --cores "${SPARK_WORKER_CORES:-1}" --memory "${SPARK_WORKER_MEMORY:-2g}" --webui-port 8081 "$@"
    ;;
  health)
    health "$@"
    ;;
  visrec)
    exec visrec "$@"
    ;;
  *)
    echo "roles: airflow-init api-server scheduler dag-processor triggerer worker mlflow spark-master spark-worker health visrec" >&2
    exit 2
    ;;
esac
