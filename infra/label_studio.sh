#!/usr/bin/env bash
# Run a local Label Studio 1.23 server for labelloop.
#
#   infra/label_studio.sh install          # .venv-labelstudio with label-studio==1.23.2 (idempotent)
#   infra/label_studio.sh start [--port P] # background server on 127.0.0.1:P (default 8089)
#   infra/label_studio.sh status           # running? healthy? where?
#   infra/label_studio.sh stop             # stop it (harmless when not running)
#   infra/label_studio.sh token            # print the admin API token
#   infra/label_studio.sh url              # print the server URL
#   infra/label_studio.sh annotator-tokens EMAIL...  # per-user tokens (JSON) for simulated annotators
#
#   export LABELLOOP_LS_URL=$(infra/label_studio.sh url)
#   export LABEL_STUDIO_API_KEY=$(infra/label_studio.sh token)
#
# Exit codes: 0 ok; 1 failure; 2 usage; 3 port busy (start) / not running (status).
#
# Environment:
#   LABELLOOP_LS_PORT           port (default 8089; --port wins)
#   LABELLOOP_LS_DATA           data folder (default <repo>/.labelloop/label-studio)
#   LABELLOOP_LS_VENV           server venv (default <repo>/.venv-labelstudio)
#   LABELLOOP_LS_USERNAME       admin e-mail on first start (default admin@labelloop.local)
#   LABELLOOP_LS_START_TIMEOUT  seconds to wait for /health (default 300: the first start's migrations are slow on a busy machine)
#   LABELLOOP_LS_PYTHON         python used to create the venv (default python3.11, else python3)
#   LABELLOOP_LS_SSRF_PROTECTION  Label Studio's SSRF_PROTECTION_ENABLED (default false: this local server
#                               may call webhooks on 127.0.0.1, i.e. `labelloop serve`'s receiver that
#                               starts a round when a batch is done; set true to forbid local addresses)
#
# API token: Label Studio >= 1.23 disables *legacy* API tokens for new organisations.
# We start the server with --enable-legacy-api-token (and LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true),
# which enables them for the organisation created on the first start, and hand the server our
# generated 40-hex admin token (LABEL_STUDIO_USER_TOKEN). The token is a plain `Token ...` key that
# never expires and that the SDK uses as-is. If the data folder was created some other way (legacy
# tokens off, or another token), `start` notices the 401 and fixes it once through Django's ORM
# (infra/label_studio_setup.py ensure-admin-token). Secrets live in credentials.env (chmod 600)
# and are passed to the server through its environment, never on a command line.
# The Python adapter (integrations/label_studio.py) equally accepts a personal access token (a JWT
# refresh token from the UI or POST /api/token/; the SDK refreshes access tokens itself) — the
# better choice for a shared team server where legacy tokens stay off.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
LS_VERSION="1.23.2"
VENV="${LABELLOOP_LS_VENV:-$REPO_ROOT/.venv-labelstudio}"
DATA="${LABELLOOP_LS_DATA:-$REPO_ROOT/.labelloop/label-studio}"
PORT="${LABELLOOP_LS_PORT:-8089}"
BIND="127.0.0.1"
START_TIMEOUT="${LABELLOOP_LS_START_TIMEOUT:-300}"
CREDS="$DATA/credentials.env"
PIDFILE="$DATA/server.pid"
PORTFILE="$DATA/server.port"
LOG="$DATA/server.log"

say() { echo "[label-studio] $*" >&2; }
die() { local code="$1"; shift; echo "[label-studio] ERROR: $*" >&2; exit "$code"; }

host_python() {
    if [[ -n "${LABELLOOP_LS_PYTHON:-}" ]]; then echo "$LABELLOOP_LS_PYTHON"; return; fi
    if command -v python3.11 >/dev/null 2>&1; then echo python3.11; else echo python3; fi
}

# Any python is fine for the small helpers below (stdlib only).
helper_python() {
    if [[ -x "$VENV/bin/python" ]]; then echo "$VENV/bin/python"; else host_python; fi
}

installed() {
    [[ -x "$VENV/bin/label-studio" ]] &&
        "$VENV/bin/python" - "$LS_VERSION" <<'EOF' >/dev/null 2>&1
import importlib.metadata as m, sys
sys.exit(0 if m.version("label-studio") == sys.argv[1] else 1)
EOF
}

cmd_install() {
    if installed; then
        say "label-studio $LS_VERSION already installed in $VENV"
        return 0
    fi
    mkdir -p "$VENV"
    # serialise concurrent installs (e.g. CI and a test fixture); lock and log live inside the venv
    exec 9>"$VENV/.labelloop-install.lock"
    if command -v flock >/dev/null 2>&1; then flock 9; fi
    if installed; then say "label-studio $LS_VERSION already installed in $VENV"; return 0; fi
    local py; py="$(host_python)"
    local ilog="$VENV/labelloop-install.log"
    if [[ ! -x "$VENV/bin/python" ]]; then
        say "creating virtual environment $VENV ($($py --version 2>&1))"
        "$py" -m venv "$VENV"
    fi
    say "installing label-studio==$LS_VERSION into $VENV (about 1 GB; 1-2 min with a warm pip cache)"
    say "pip log: $ilog"
    local t0=$SECONDS
    if ! "$VENV/bin/pip" install --disable-pip-version-check --progress-bar off \
        "label-studio==$LS_VERSION" >"$ilog" 2>&1; then
        grep -v '^WARNING: Location' "$ilog" | tail -20 >&2 || true
        die 1 "pip install label-studio==$LS_VERSION failed (see $ilog)"
    fi
    installed || die 1 "label-studio $LS_VERSION not importable after install (see $ilog)"
    say "installed label-studio $LS_VERSION in $((SECONDS - t0)) s"
}

# ---- small helpers --------------------------------------------------------------

# http_status URL  -> prints the HTTP status (000 when nothing answers).
# Sends the admin token only when LS_AUTH_TOKEN is set in the environment (never in argv).
http_status() {
    "$(helper_python)" - "$1" <<'EOF'
import os, sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1])
tok = os.environ.get("LS_AUTH_TOKEN")
if tok:
    req.add_header("Authorization", "Token " + tok)
try:
    with urllib.request.urlopen(req, timeout=3) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
EOF
}

port_in_use() {  # port_in_use PORT -> exit 0 when something listens on BIND:PORT
    "$(helper_python)" - "$BIND" "$1" <<'EOF'
import socket, sys
s = socket.socket(); s.settimeout(1)
sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)
EOF
}

gen_secret() {  # gen_secret hex|url
    "$(helper_python)" -c "import secrets,sys; print(secrets.token_hex(20) if sys.argv[1]=='hex' else secrets.token_urlsafe(18))" "$1"
}

running_pid() {  # prints the PID of our server when it is alive, else nothing
    [[ -f "$PIDFILE" ]] || return 0
    local pid; pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    local cmdline
    if [[ -r "/proc/$pid/cmdline" ]]; then cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    else cmdline="$(ps -o command= -p "$pid" 2>/dev/null || true)"; fi
    if [[ "$cmdline" == *label-studio* ]]; then
        echo "$pid"
    fi
}

running_port() { if [[ -f "$PORTFILE" ]]; then cat "$PORTFILE"; else echo "$PORT"; fi; }

load_creds() {
    mkdir -p "$DATA"
    if [[ ! -f "$CREDS" ]]; then
        (
            umask 077
            {
                echo "# Label Studio admin for labelloop (generated $(date -u +%Y-%m-%dT%H:%M:%SZ)); keep private"
                echo "LABEL_STUDIO_USERNAME=${LABELLOOP_LS_USERNAME:-admin@labelloop.local}"
                echo "LABEL_STUDIO_PASSWORD=$(gen_secret url)"
                echo "LABEL_STUDIO_API_KEY=$(gen_secret hex)"
            } >"$CREDS"
        )
        say "generated admin credentials in $CREDS"
    fi
    chmod 600 "$CREDS"
    LS_USERNAME="$(grep '^LABEL_STUDIO_USERNAME=' "$CREDS" | cut -d= -f2-)"
    LS_PASSWORD="$(grep '^LABEL_STUDIO_PASSWORD=' "$CREDS" | cut -d= -f2-)"
    LS_TOKEN="$(grep '^LABEL_STUDIO_API_KEY=' "$CREDS" | cut -d= -f2-)"
    [[ -n "$LS_USERNAME" && -n "$LS_PASSWORD" && -n "$LS_TOKEN" ]] || die 1 "incomplete credentials file $CREDS"
}

setup_py() {  # run infra/label_studio_setup.py with the server's data folder
    env LABEL_STUDIO_BASE_DATA_DIR="$DATA" LABEL_STUDIO_LATEST_VERSION_CHECK=false \
        LABEL_STUDIO_COLLECT_ANALYTICS=false SENTRY_DSN= FRONTEND_SENTRY_DSN= \
        "$VENV/bin/python" "$SCRIPT_DIR/label_studio_setup.py" "$@" 2>>"$LOG"
}

check_token() {  # make sure the admin token authenticates; fix through the ORM once if not
    local url="http://$BIND:$1" code
    code="$(LS_AUTH_TOKEN="$LS_TOKEN" http_status "$url/api/current-user/whoami")"
    if [[ "$code" == "200" ]]; then return 0; fi
    say "admin token refused (HTTP $code); enabling legacy tokens / resetting the token via Django ORM"
    LABELLOOP_LS_TOKEN="$LS_TOKEN" setup_py ensure-admin-token --email "$LS_USERNAME" >/dev/null ||
        die 1 "could not repair the admin token (see $LOG)"
    code="$(LS_AUTH_TOKEN="$LS_TOKEN" http_status "$url/api/current-user/whoami")"
    [[ "$code" == "200" ]] || die 1 "admin token still refused (HTTP $code) after the repair; see $LOG"
}

wait_healthy() {  # wait_healthy PID PORT
    local pid="$1" port="$2" t0=$SECONDS next=10
    while true; do
        if [[ "$(http_status "http://$BIND:$port/health")" == "200" ]]; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            grep -v 'RuntimeWarning\|warnings.warn' "$LOG" | tail -25 >&2 || true
            rm -f "$PIDFILE"
            die 1 "Label Studio exited during start-up (log: $LOG)"
        fi
        if ((SECONDS - t0 >= START_TIMEOUT)); then
            tail -25 "$LOG" >&2 || true
            die 1 "Label Studio did not answer /health within $START_TIMEOUT s (still running as PID $pid; log: $LOG)"
        fi
        if ((SECONDS - t0 >= next)); then
            say "still starting ($((SECONDS - t0)) s; the first start runs database migrations, ~1 min)"
            next=$((next + 15))
        fi
        sleep 1
    done
}

print_info() {
    local port="$1"
    echo "Label Studio is running"
    echo "  URL:    http://$BIND:$port"
    echo "  login:  $LS_USERNAME  (password and API token in $CREDS)"
    echo "  data:   $DATA  (log: $LOG)"
    echo "  token:  export LABEL_STUDIO_API_KEY=\$($0 token)"
}

cmd_start() {
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --port) PORT="${2:?--port needs a value}"; shift 2 ;;
            --port=*) PORT="${1#--port=}"; shift ;;
            *) die 2 "unknown option for start: $1" ;;
        esac
    done
    [[ "$PORT" =~ ^[0-9]+$ ]] || die 2 "port must be a number, got '$PORT'"
    installed || cmd_install
    mkdir -p "$DATA"

    local pid; pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
        load_creds
        local rport; rport="$(running_port)"
        if [[ "$rport" != "$PORT" ]]; then
            die 1 "Label Studio for $DATA already runs on port $rport (PID $pid); stop it first to use port $PORT"
        fi
        wait_healthy "$pid" "$rport"
        check_token "$rport"
        say "already running (PID $pid); nothing to do"
        print_info "$rport"
        return 0
    fi
    rm -f "$PIDFILE"

    if port_in_use "$PORT"; then
        die 3 "port $PORT on $BIND is already in use by another process; pick a free one with --port P or LABELLOOP_LS_PORT"
    fi
    load_creds

    say "starting Label Studio $LS_VERSION on http://$BIND:$PORT (data: $DATA)"
    echo "---- start $(date -u +%Y-%m-%dT%H:%M:%SZ) port $PORT" >>"$LOG"
    # setsid: the server leads its own process group, so `stop` can end it and its children.
    # The launched shell writes its own PID (== process group id) before exec'ing label-studio.
    (
        cd "$DATA"
        exec env \
            LABEL_STUDIO_BASE_DATA_DIR="$DATA" \
            LABEL_STUDIO_USERNAME="$LS_USERNAME" \
            LABEL_STUDIO_PASSWORD="$LS_PASSWORD" \
            LABEL_STUDIO_USER_TOKEN="$LS_TOKEN" \
            LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true \
            LABEL_STUDIO_LATEST_VERSION_CHECK=false \
            LABEL_STUDIO_COLLECT_ANALYTICS=false \
            SSRF_PROTECTION_ENABLED="${LABELLOOP_LS_SSRF_PROTECTION:-false}" \
            SENTRY_DSN= FRONTEND_SENTRY_DSN= \
            setsid sh -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$PIDFILE" \
            "$VENV/bin/label-studio" start --no-browser \
            --internal-host "$BIND" --host "http://$BIND:$PORT" --port "$PORT" \
            --username "$LS_USERNAME" --enable-legacy-api-token
    ) >>"$LOG" 2>&1 </dev/null &
    echo "$PORT" >"$PORTFILE"
    local t0=$SECONDS i
    for i in $(seq 1 100); do
        [[ -s "$PIDFILE" ]] && break
        sleep 0.1
    done
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || die 1 "Label Studio did not start (log: $LOG)"
    wait_healthy "$pid" "$PORT"
    check_token "$PORT"
    say "healthy after $((SECONDS - t0)) s (PID $pid)"
    print_info "$PORT"
}

cmd_stop() {
    local pid; pid="$(running_pid)"
    if [[ -z "$pid" ]]; then
        rm -f "$PIDFILE"
        say "not running (data: $DATA)"
        return 0
    fi
    say "stopping Label Studio (process group $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 40); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "still alive after 20 s; sending SIGKILL"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    say "stopped"
}

cmd_status() {
    local pid; pid="$(running_pid)"
    if [[ -z "$pid" ]]; then
        echo "Label Studio: not running (data: $DATA)"
        return 3
    fi
    local port; port="$(running_port)"
    if [[ "$(http_status "http://$BIND:$port/health")" == "200" ]]; then
        echo "Label Studio: running and healthy at http://$BIND:$port (PID $pid, data: $DATA)"
        return 0
    fi
    echo "Label Studio: process $pid alive but http://$BIND:$port/health does not answer yet (starting?)"
    return 1
}

cmd_token() {
    [[ -f "$CREDS" ]] || die 1 "no credentials yet in $CREDS; run '$0 start' first"
    grep '^LABEL_STUDIO_API_KEY=' "$CREDS" | cut -d= -f2-
}

cmd_url() { echo "http://$BIND:$(running_port)"; }

cmd_annotator_tokens() {
    [[ $# -gt 0 ]] || die 2 "usage: $0 annotator-tokens EMAIL [EMAIL...]"
    installed || die 1 "Label Studio is not installed; run '$0 install'"
    load_creds
    setup_py annotator-tokens --admin-email "$LS_USERNAME" "$@"
}

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
        install) cmd_install "$@" ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop ;;
        restart) cmd_stop; cmd_start "$@" ;;
        status) cmd_status ;;
        token) cmd_token ;;
        url) cmd_url ;;
        annotator-tokens) cmd_annotator_tokens "$@" ;;
        -h | --help | help | "")
            sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
            [[ -n "$cmd" ]] || exit 2 ;;
        *) die 2 "unknown command '$cmd' (install|start|stop|restart|status|token|url|annotator-tokens)" ;;
    esac
}

main "$@"
