#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for labelloop's ledger (tests, local trials). No Docker needed.
#
#   infra/postgres.sh install                 # apt-get install -y postgresql (as root; Debian/Ubuntu)
#   infra/postgres.sh start DIR [PORT]        # initdb + pg_ctl start under DIR on 127.0.0.1:PORT (default: free)
#                                             # prints the SQLAlchemy URL (with its password) on stdout
#   infra/postgres.sh url DIR                 # print that URL again
#   infra/postgres.sh stop DIR [MODE]         # pg_ctl stop -m MODE (fast; immediate skips the
#                                             # shutdown checkpoint); harmless when not running
#   infra/postgres.sh bindir                  # where initdb/pg_ctl live (exit 1 when PostgreSQL is not installed)
#
#   export LABELLOOP_LEDGER_URL=$(infra/postgres.sh start /tmp/pg)   # then [ledger] url_env = "LABELLOOP_LEDGER_URL"
#
# The cluster runs as the `postgres` user when invoked as root (initdb refuses root), as the calling
# user otherwise. Authentication is scram-sha-256 for the role `labelloop` with a generated password
# kept in DIR/credentials.env (mode 600); the database is `labelloop`. Only 127.0.0.1 is listened on.
# Exit codes: 0 ok; 1 failure; 2 usage; 4 PostgreSQL binaries not found.
set -euo pipefail

say() { echo "[postgres] $*" >&2; }
die() { local code="$1"; shift; echo "[postgres] ERROR: $*" >&2; exit "$code"; }

bindir() {
    if [[ -n "${LABELLOOP_PG_BINDIR:-}" && -x "$LABELLOOP_PG_BINDIR/initdb" ]]; then echo "$LABELLOOP_PG_BINDIR"; return 0; fi
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && { echo "$d"; return 0; }
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"; return 0
    fi
    return 1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# run a command as the cluster owner
as_owner() {
    if [[ "$(id -u)" == "0" ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

cmd_install() {
    if bindir >/dev/null; then say "PostgreSQL already installed ($(bindir))"; return 0; fi
    [[ "$(id -u)" == "0" ]] || die 1 "run as root (or: sudo apt-get install -y postgresql)"
    command -v apt-get >/dev/null || die 1 "no apt-get: install PostgreSQL with your package manager"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 || {
        apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
    bindir >/dev/null || die 1 "postgresql installed but initdb not found"
}

url_of() {
    local dir="$1"
    # shellcheck disable=SC1091
    source "$dir/credentials.env"
    echo "postgresql+psycopg://labelloop:${PG_PASSWORD}@127.0.0.1:${PG_PORT}/labelloop"
}

cmd_start() {
    local dir="${1:-}"; local port="${2:-}"
    [[ -n "$dir" ]] || die 2 "usage: infra/postgres.sh start DIR [PORT]"
    local bin; bin="$(bindir)" || die 4 "PostgreSQL binaries not found (infra/postgres.sh install, or apt-get install -y postgresql)"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if [[ "$(id -u)" == "0" ]]; then
        id postgres >/dev/null 2>&1 || die 1 "no 'postgres' user to run the cluster as (install the postgresql package)"
        chown postgres "$dir"
        # the owner must be able to reach DIR through every parent (e.g. a 700 pytest temp dir)
        local p="$dir"; while [[ "$p" != "/" ]]; do p="$(dirname "$p")"; chmod o+x "$p" 2>/dev/null || true; done
    fi
    if [[ -f "$dir/data/postmaster.pid" ]] && as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        say "already running"; url_of "$dir"; return 0
    fi
    if [[ ! -f "$dir/credentials.env" ]]; then
        local pw; pw="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
        port="${port:-$(free_port)}"
        ( umask 077; printf 'PG_PASSWORD=%s\nPG_PORT=%s\n' "$pw" "$port" > "$dir/credentials.env" )
    fi
    # shellcheck disable=SC1091
    source "$dir/credentials.env"
    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
        local pwfile="$dir/.pwfile"
        ( umask 077; printf '%s\n' "$PG_PASSWORD" > "$pwfile" )
        [[ "$(id -u)" == "0" ]] && chown postgres "$pwfile"
        as_owner "$bin/initdb" -D "$dir/data" -U labelloop --pwfile="$pwfile" --auth=scram-sha-256 \
            -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
            rm -f "$pwfile"; cat "$dir/initdb.log" >&2; die 1 "initdb failed"; }
        rm -f "$pwfile"
    fi
    [[ "$(id -u)" == "0" ]] && { touch "$dir/server.log"; chown postgres "$dir/server.log"; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories='$dir/data' -c fsync=off" \
        start >&2 || { tail -20 "$dir/server.log" >&2; die 1 "pg_ctl start failed"; }
    PGPASSWORD="$PG_PASSWORD" "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U labelloop -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname='labelloop'" | grep -q 1 ||
        PGPASSWORD="$PG_PASSWORD" "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U labelloop labelloop
    say "running on 127.0.0.1:$PG_PORT (data: $dir/data)"
    url_of "$dir"
}

cmd_stop() {
    local dir="${1:-}"
    [[ -n "$dir" ]] || die 2 "usage: infra/postgres.sh stop DIR"
    local bin; bin="$(bindir)" || die 4 "PostgreSQL binaries not found"
    local mode="${2:-fast}"
    [[ "$mode" == fast || "$mode" == immediate || "$mode" == smart ]] || die 2 "stop mode: fast, immediate or smart"
    [[ -f "$dir/data/postmaster.pid" ]] || { say "not running"; return 0; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -m "$mode" -w stop >&2 || true
}

case "${1:-}" in
    install) cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    url) shift; url_of "${1:?usage: infra/postgres.sh url DIR}" ;;
    bindir) bindir || exit 4 ;;
    *) die 2 "usage: infra/postgres.sh install|start DIR [PORT]|stop DIR [MODE]|url DIR|bindir" ;;
esac
