#!/usr/bin/env bash
# Run a local MLflow 3 tracking server for labelloop (runs, model registry, the UI).
#
#   infra/mlflow_server.sh start [--port P]   # background server on 127.0.0.1:P (default 5000), waits for /health
#   infra/mlflow_server.sh status             # running? healthy? (exit 3 when not running)
#   infra/mlflow_server.sh url                # print the tracking URI for [mlflow] tracking_uri
#   infra/mlflow_server.sh stop               # stop it and its workers (harmless when not running)
#
# Campaign config:  [mlflow]  tracking_uri = "http://127.0.0.1:5000"
#
# Environment:
#   LABELLOOP_MLFLOW_PORT      port (default 5000; --port wins)
#   LABELLOOP_MLFLOW_DATA      folder with mlflow.db and mlruns/ (default <repo>/.labelloop/mlflow)
#   LABELLOOP_MLFLOW_BACKEND   backend store URI (default sqlite:////<data>/mlflow.db; a postgresql:// URL for teams)
#   LABELLOOP_MLFLOW_ARTIFACTS artifact root (default <data>/mlruns; s3://... for teams)
#   LABELLOOP_MLFLOW_TIMEOUT   seconds to wait for health (default 120)
#   LABELLOOP_PYTHON           python with mlflow installed (default <repo>/.venv/bin/python)
#
# The server runs in its own session (setsid) with a PID file; `stop` signals the whole process
# group (mlflow spawns gunicorn/uvicorn workers).
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
PY="${LABELLOOP_PYTHON:-$REPO_ROOT/.venv/bin/python}"
DATA_DIR="${LABELLOOP_MLFLOW_DATA:-$REPO_ROOT/.labelloop/mlflow}"
PORT="${LABELLOOP_MLFLOW_PORT:-5000}"
TIMEOUT="${LABELLOOP_MLFLOW_TIMEOUT:-120}"
NAME="mlflow"
HEALTH_PATH="/health"

start_cmd() {
    mkdir -p "$DATA_DIR/mlruns"
    local backend="${LABELLOOP_MLFLOW_BACKEND:-sqlite:///$DATA_DIR/mlflow.db}"
    local artifacts="${LABELLOOP_MLFLOW_ARTIFACTS:-$DATA_DIR/mlruns}"
    # MLflow 3 also starts a job runner and huey workers for its GenAI jobs (scorers, prompt optimisation):
    # labelloop logs classic training runs and never queues a job, so they are off unless you turn them on.
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
    MLFLOW_DISABLE_TELEMETRY=true exec "$PY" -m mlflow server --host 127.0.0.1 --port "$PORT" \
        --backend-store-uri "$backend" --default-artifact-root "$artifacts" --workers 1
}
url_of() { echo "http://127.0.0.1:$1"; }
# shellcheck source=infra/_server_common.sh
source "$SCRIPT_DIR/_server_common.sh"
