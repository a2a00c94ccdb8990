#!/usr/bin/env bash
# The MLflow UI over visrec's tracking store: runs, metrics, the registry's champion/challenger aliases.
# Usage: mlflow/ui.sh [PORT]   (reads the same VISREC_* settings as visrec; default port 5000)
set -euo pipefail
cd "$(dirname "$0")/.."
HOME_DIR="$(realpath -m "${VISREC_HOME:-.visrec}")"
STORE="${VISREC_MLFLOW_TRACKING_URI:-sqlite:///$HOME_DIR/mlflow.db}"
ARTIFACTS="${VISREC_MLFLOW_ARTIFACT_URI:-file://$HOME_DIR/mlartifacts}"
PORT="${1:-5000}"
echo "MLflow UI on http://127.0.0.1:$PORT (store $STORE)"
exec .venv/bin/mlflow server --backend-store-uri "$STORE" --default-artifact-root "$ARTIFACTS" \
  --host 127.0.0.1 --port "$PORT"
