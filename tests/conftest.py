"""Shared fixtures: a real Prefect API server and small generated campaigns.

The Prefect server is a real ``prefect server start`` on 127.0.0.1 with its
own PREFECT_HOME, started once per test session by the integration tests
that need it (or reused from ``LABELLOOP_TEST_PREFECT_API_URL`` when
``.ci/run`` started one), so flows in this process and in subprocesses
(kill tests) talk to the same API.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# the `labelloop` command's environment defaults (BLAS single-threaded, ...): importing the CLI module sets
# them, so rounds that tests run in-process get the same BLAS threading as a user's command
import labelloop.flows.cli  # noqa: E402,F401

# Commands run without PREFECT_API_URL start labelloop's shared local Prefect server
# (flows/prefect_server.py). In tests it lives in a folder of this session, on a free port,
# and is stopped when the session ends (pytest_sessionfinish), never in ~/.labelloop.
_OWN_SHARED_SERVER = "LABELLOOP_PREFECT_HOME" not in os.environ
if _OWN_SHARED_SERVER:
    os.environ["LABELLOOP_PREFECT_HOME"] = tempfile.mkdtemp(prefix="labelloop-shared-prefect-")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if _OWN_SHARED_SERVER:
    os.environ.setdefault("LABELLOOP_PREFECT_PORT", str(free_port()))


# The longest test files first (the order of their CI durations, longest first). `make test` runs
# `pytest -n 3 --dist loadfile --no-loadscope-reorder`: xdist hands whole files to the workers in this
# order, so the long integration files start at once and the many short unit files fill the gaps at the end.
# (xdist's default order is "most tests first", which put the one- and two-test files of several minutes
# each last, and one worker ran on for minutes after the other had finished.) A file not listed keeps its
# place after these; the order changes only when tests run, never what they check.
SLOWEST_FILES_FIRST = (
    "integration/test_service_faults.py", "integration/test_unlabelled.py", "integration/test_faults.py",
    "integration/test_real_annotators.py", "integration/test_replay_campaign.py",
    "integration/test_operations.py", "integration/test_stream.py", "integration/test_campaign_flow.py",
    "integration/test_label_studio.py", "integration/test_secrets.py",
    "integration/test_label_studio_campaign.py", "integration/test_round_interrupt.py",
    "integration/test_batch_trigger.py", "integration/test_trust.py", "integration/test_simulate.py",
    "integration/test_postgres_ledger.py", "integration/test_cli.py", "integration/test_any_label.py",
    "integration/test_adaptive_campaign.py", "integration/test_serve_cancel.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FILES_FIRST)}
    # sort is stable: files not listed keep their collection order, after the listed ones
    items.sort(key=lambda item: rank.get(f"{item.path.parent.name}/{item.path.name}", len(rank)))


def pytest_sessionfinish(session, exitstatus):
    """Stop the shared local Prefect server if a command of this session started it."""
    if _OWN_SHARED_SERVER:
        from labelloop.flows.prefect_server import stop

        stop()
        shutil.rmtree(os.environ["LABELLOOP_PREFECT_HOME"], ignore_errors=True)


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_mlflow_server(folder: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` on 127.0.0.1:``port`` (SQLite store and artifacts in ``folder``), in its own
    process group (stop it with :func:`stop_group`); restartable on the same store. Returns once healthy."""
    (folder / "mlruns").mkdir(parents=True, exist_ok=True)
    with open(folder / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{(folder / 'mlflow.db').resolve()}",
             "--default-artifact-root", str((folder / "mlruns").resolve()), "--workers", "1"],
            # no GenAI job runner / huey workers (three more processes importing mlflow): no test queues a job
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 180, proc)
    except Exception:
        stop_group(proc)
        raise
    return proc


@pytest.fixture(scope="session")
def prefect_api():
    """URL of a real Prefect API server; set for this process and its children."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = os.environ.get("LABELLOOP_TEST_PREFECT_API_URL")
    proc = None
    home = None
    if not url:
        port = free_port()
        home = tempfile.mkdtemp(prefix="labelloop-prefect-")
        env = {**os.environ, "PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_API_URL": ""}
        log = open(Path(home) / "server.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
             "--no-ui", "--analytics-off"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}/api"
        try:
            wait_http(f"{url}/health", 180, proc)
        except Exception:
            stop_group(proc)
            raise
    old = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url
    if old is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = old
    if proc is not None:
        stop_group(proc)
    if home:
        shutil.rmtree(home, ignore_errors=True)


def write_small_campaign(folder: Path, *, name: str = "t", n: int = 900, budget: int = 100, batch: int = 25,
                         seed_size: int = 25, backend: str = "simulated", extra: str = "") -> Path:
    """A small generated campaign (fast enough for integration tests)."""
    from labelloop.tasks.demo_data import CLASSES, write_demo_files

    files = write_demo_files(folder / "data", n=n, seed=1)
    labels = ", ".join(f'"{c}"' for c in CLASSES)
    cfg = folder / "campaign.toml"
    cfg.write_text(f'''
name = "{name}"
[data]
path = "data/{files['pool'].name}"
[labels]
names = [{labels}]
[splits]
test_size = 200
calibration_size = 120
seed_size = {seed_size}
[query]
strategy = "margin"
batch_size = {batch}
[budget]
max_labels = {budget}
[annotation]
backend = "{backend}"
overlap = 3
{extra}
''', encoding="utf-8")
    return cfg


def write_label_studio_campaign(folder: Path, url: str, *, name: str, extra: str = "", **sizes: int) -> Path:
    """``write_small_campaign`` on the Label Studio backend at ``url``, with three simulated annotators
    who are real Label Studio users (``simulate_annotators``); ``sizes``: n, budget, batch, seed_size."""
    ls = f'''
[annotation.simulated]
annotators = [{{ name = "ann-1", accuracy = 0.95 }}, {{ name = "ann-2", accuracy = 0.9 }}, {{ name = "ann-3", accuracy = 0.85 }}]
[annotation.label_studio]
url = "{url}"
project_title = "labelloop test {name}"
simulate_annotators = true
'''
    return write_small_campaign(folder, name=name, backend="label_studio", extra=ls + extra, **sizes)


@pytest.fixture
def small_campaign(tmp_path: Path) -> Path:
    return write_small_campaign(tmp_path)


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed `labelloop` entry point in a subprocess."""
    return subprocess.run([sys.executable, "-m", "labelloop.flows.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=cwd or ROOT)
