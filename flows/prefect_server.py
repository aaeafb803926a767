"""How labelloop reaches Prefect: ``PREFECT_API_URL`` when set, else one shared local server.

Why: without an API URL Prefect 3 starts a temporary server subprocess for every command
(15-30 s on two cores, before any work) and a ``kill -9`` of the command leaves that
server running for good. Instead the commands that orchestrate (``setup`` after its
validation, ``round``, ``run``, ``demo``, ``serve``, ``drift-check``, ``doctor --repair``)
call :func:`ensure_api`, which

* uses ``PREFECT_API_URL`` when it is set (environment or the active Prefect profile);
* else reuses the local server labelloop started before, or starts it once: ``prefect
  server start`` on 127.0.0.1 in its own session (so killing a command never kills it and
  it never becomes an orphan of one), state in ``$LABELLOOP_PREFECT_HOME`` (default
  ``~/.labelloop/prefect``: ``prefect.db``, ``server.pid``, ``server.port``, ``server.log``).

It keeps running, on purpose, so the next command answers in about a second; stop it with
``labelloop server stop`` (or ``infra/prefect_server.sh stop``, which shares the same
files). Read-only commands never call this and never import Prefect: :func:`api_url` and
:func:`running_url` only read files and the environment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

DEFAULT_PORT = 4200


def home() -> Path:
    """The shared server's folder (``PREFECT_HOME`` of the server)."""
    return Path(os.environ.get("LABELLOOP_PREFECT_HOME") or Path.home() / ".labelloop" / "prefect").expanduser()


def _profile_api_url() -> str | None:
    """``PREFECT_API_URL`` of the active Prefect profile (``prefect config set``), read without Prefect."""
    import tomllib

    prefect_home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or prefect_home / "profiles.toml").expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or data.get("active", "ephemeral")
    value = (data.get("profiles", {}).get(active) or {}).get("PREFECT_API_URL")
    return str(value) if value else None


def api_url() -> str | None:
    """The Prefect API the user configured (environment first, then the active profile), or None.

    An empty ``PREFECT_API_URL`` in the environment counts as "not configured", as in Prefect.
    """
    if "PREFECT_API_URL" in os.environ:
        return os.environ["PREFECT_API_URL"].strip() or None
    return _profile_api_url()


def _pid() -> int | None:
    try:
        pid = int((home() / "server.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _port() -> int:
    try:
        return int((home() / "server.port").read_text().strip())
    except (OSError, ValueError):
        return int(os.environ.get("LABELLOOP_PREFECT_PORT") or DEFAULT_PORT)


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}/api"


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def running_url() -> str | None:
    """URL of the shared server when it runs and answers, else None (never starts it)."""
    pid = _pid()
    if pid is None:
        return None
    url = _url(_port())
    return url if healthy(url) else None


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_port() -> int:
    want = int(os.environ.get("LABELLOOP_PREFECT_PORT") or DEFAULT_PORT)
    if _free(want):
        return want
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(progress: Callable[[str], None] | None = None, timeout: float | None = None) -> str:
    """Start the shared server unless it runs; return its API URL once ``/api/health`` answers.

    A file lock serialises two commands starting at once (the second waits and reuses).
    """
    import fcntl

    folder = home()
    folder.mkdir(parents=True, exist_ok=True)
    timeout = float(timeout or os.environ.get("LABELLOOP_PREFECT_TIMEOUT") or 120)
    with open(folder / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pid = _pid()
        url = _url(_port())
        if pid is None:
            port = _pick_port()
            url = _url(port)
            (folder / "server.port").write_text(str(port))
            env = {**os.environ, "PREFECT_HOME": str(folder), "PREFECT_API_URL": "",
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
            ui = [] if os.environ.get("LABELLOOP_PREFECT_UI", "1") == "1" else ["--no-ui"]
            with open(folder / "server.log", "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
                     "--analytics-off", *ui],
                    env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True)
            (folder / "server.pid").write_text(str(proc.pid))
            pid = proc.pid
            if progress:
                progress(f"starting the local Prefect server on {url} (once; later commands reuse it; "
                         f"`labelloop server stop` stops it; log {folder / 'server.log'})")
        t0 = time.monotonic()
        while not healthy(url):
            if _pid() is None:
                raise RuntimeError(f"the local Prefect server exited during start-up; see {folder / 'server.log'}")
            if time.monotonic() - t0 > timeout:
                stop()
                raise RuntimeError(f"the local Prefect server did not answer within {timeout:.0f}s; "
                                   f"see {folder / 'server.log'}")
            time.sleep(0.5)
    return url


def stop(timeout: float = 15.0) -> int | None:
    """Stop the shared server and its children (its whole process group). Returns the pid stopped, or None."""
    pid = _pid()
    if pid is None:
        (home() / "server.pid").unlink(missing_ok=True)
        return None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if not _alive(pid):
            break
    (home() / "server.pid").unlink(missing_ok=True)
    return pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie we started ourselves counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def ensure_api(progress: Callable[[str], None] | None = None) -> str:
    """Point this process's Prefect at an API before Prefect runs anything; return its URL.

    Sets ``PREFECT_API_URL`` in the environment (so Prefect reads it when first imported, and
    subprocesses inherit it) and, if Prefect's settings were already loaded, in its settings context.
    """
    url = api_url() or start(progress)
    os.environ["PREFECT_API_URL"] = url
    if "prefect.settings" in sys.modules:
        _apply_to_loaded_prefect(url)
    return url


_SETTINGS_CTX: list = []


def _apply_to_loaded_prefect(url: str) -> None:
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    if get_current_settings().api.url == url:
        return
    ctx = temporary_settings(updates={PREFECT_API_URL: url})
    ctx.__enter__()  # for the rest of this process
    _SETTINGS_CTX.append(ctx)
