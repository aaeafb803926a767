#!/usr/bin/env bash
# Run a local Prefect 3 API server for labelloop (schedules, event triggers, the UI).
#
#   infra/prefect_server.sh start [--port P]   # background server on 127.0.0.1:P (default 4200), waits for /api/health
#   infra/prefect_server.sh status             # running? healthy? (exit 3 when not running)
#   infra/prefect_server.sh url                # print the API URL to export as PREFECT_API_URL
#   infra/prefect_server.sh stop               # stop it and its children (harmless when not running)
#
#   infra/prefect_server.sh start && export PREFECT_API_URL=$(infra/prefect_server.sh url)
#   labelloop serve campaign.toml
#
# Environment:
#   LABELLOOP_PREFECT_PORT     port (default 4200; --port wins)
#   LABELLOOP_PREFECT_HOME     PREFECT_HOME of the server: database, logs (default ~/.labelloop/prefect: the
#                              shared server `labelloop server start|stop|status` manages; same files)
#   LABELLOOP_PREFECT_UI       1 to serve the UI too (default 1)
#   LABELLOOP_PREFECT_TIMEOUT  seconds to wait for health (default 120)
#   LABELLOOP_PYTHON           python with prefect installed (default <repo>/.venv/bin/python)
#
# The server runs in its own session (setsid) with a PID file; `stop` signals the whole process group.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
PY="${LABELLOOP_PYTHON:-$REPO_ROOT/.venv/bin/python}"
HOME_DIR="${LABELLOOP_PREFECT_HOME:-$HOME/.labelloop/prefect}"
PORT="${LABELLOOP_PREFECT_PORT:-4200}"
TIMEOUT="${LABELLOOP_PREFECT_TIMEOUT:-120}"
UI="${LABELLOOP_PREFECT_UI:-1}"
NAME="prefect"
HEALTH_PATH="/api/health"

start_cmd() {
    local ui_flag="--no-ui"; [[ "$UI" == "1" ]] && ui_flag=""
    PREFECT_HOME="$HOME_DIR" PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_API_URL="" \
        exec "$PY" -m prefect server start --host 127.0.0.1 --port "$PORT" --analytics-off $ui_flag
}
url_of() { echo "http://127.0.0.1:$1/api"; }
DATA_DIR="$HOME_DIR"
# shellcheck source=infra/_server_common.sh
source "$SCRIPT_DIR/_server_common.sh"
