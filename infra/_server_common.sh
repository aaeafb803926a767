# Shared start/stop/status for infra/prefect_server.sh and infra/mlflow_server.sh (sourced, not run).
# Expects: NAME, DATA_DIR, PORT, TIMEOUT, HEALTH_PATH, PY, start_cmd(), url_of(port).
PIDFILE="$DATA_DIR/server.pid"
PORTFILE="$DATA_DIR/server.port"
LOG="$DATA_DIR/server.log"

say() { echo "[$NAME] $*" >&2; }
die() { local code="$1"; shift; echo "[$NAME] ERROR: $*" >&2; exit "$code"; }

running_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid; pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && { echo "$pid"; return 0; }
    return 1
}
current_port() { if [[ -f "$PORTFILE" ]]; then cat "$PORTFILE"; else echo "$PORT"; fi; }
healthy() {
    "$PY" - "$(url_of "$1")" "$HEALTH_PATH" <<'PYEOF' >/dev/null 2>&1
import sys, urllib.request
base, path = sys.argv[1], sys.argv[2]
root = base[: -len("/api")] if base.endswith("/api") else base
with urllib.request.urlopen(root + path, timeout=3) as r:
    sys.exit(0 if r.status == 200 else 1)
PYEOF
}
port_busy() {
    "$PY" - "$1" <<'PYEOF' >/dev/null 2>&1
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
PYEOF
}

cmd_start() {
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --port) PORT="$2"; shift 2 ;;
            *) die 2 "unknown option $1" ;;
        esac
    done
    mkdir -p "$DATA_DIR"
    if pid="$(running_pid)"; then
        say "already running (pid $pid) at $(url_of "$(current_port)")"
        return 0
    fi
    port_busy "$PORT" && die 3 "port $PORT is busy; pick another with --port"
    echo "$PORT" > "$PORTFILE"
    # setsid: own session and process group, so `stop` reaches every child
    export PY DATA_DIR PORT HOME_DIR UI
    setsid bash -c "$(declare -f start_cmd); start_cmd" > "$LOG" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    say "starting on $(url_of "$PORT") (log: $LOG) ..."
    local waited=0
    until healthy "$PORT"; do
        if ! running_pid >/dev/null; then
            tail -n 30 "$LOG" >&2 || true
            die 1 "server exited during start-up"
        fi
        (( waited >= TIMEOUT )) && { tail -n 30 "$LOG" >&2 || true; cmd_stop; die 1 "not healthy after ${TIMEOUT}s"; }
        sleep 1; waited=$((waited + 1))
    done
    say "healthy after ${waited}s: $(url_of "$PORT")"
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PIDFILE"
        say "not running"
        return 0
    fi
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
    say "stopped (pid $pid)"
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        local port; port="$(current_port)"
        if healthy "$port"; then say "running (pid $pid), healthy: $(url_of "$port")"; else say "running (pid $pid), not healthy yet"; fi
        return 0
    fi
    say "not running"
    return 3
}

case "${1:-}" in
    start) shift; cmd_start "$@" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    url) url_of "$(current_port)" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
