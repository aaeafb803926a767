"""Fixtures for integration tests against real local services."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- Label Studio


class LabelStudioServer(tuple):
    """``(url, token)``; unpacks as a pair. ``data_dir``/``env`` are set when this session
    started the server itself (``None`` when reusing one from LABELLOOP_LS_URL)."""

    def __new__(cls, url: str, token: str, data_dir: Path | None = None, env: dict | None = None):
        obj = super().__new__(cls, (url, token))
        obj.url, obj.token, obj.data_dir, obj.env = url, token, data_dir, env
        return obj

    def __repr__(self) -> str:  # never show the token
        return f"LabelStudioServer(url={self.url!r}, data_dir={self.data_dir!r})"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A running Label Studio: reuse LABELLOOP_LS_URL + LABEL_STUDIO_API_KEY when both are set,
    else `infra/label_studio.sh install && start` on a free port with a temporary data folder
    (stopped at the end of the session)."""
    url, key = os.environ.get("LABELLOOP_LS_URL"), os.environ.get("LABEL_STUDIO_API_KEY")
    if url and key:
        yield LabelStudioServer(url.rstrip("/"), key)
        return

    script = REPO / "infra" / "label_studio.sh"
    port = _free_port()
    data = tmp_path_factory.mktemp("label-studio")
    env = {**os.environ, "LABELLOOP_LS_DATA": str(data), "LABELLOOP_LS_PORT": str(port)}

    def run(*args: str, timeout: float) -> str:
        proc = subprocess.run(
            [str(script), *args], env=env, capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            pytest.fail(
                f"infra/label_studio.sh {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}",
                pytrace=False,
            )
        return proc.stdout

    run("install", timeout=900)
    try:
        run("start", "--port", str(port), timeout=600)
        token = run("token", timeout=30).strip()
        yield LabelStudioServer(f"http://127.0.0.1:{port}", token, data, env)
    finally:
        subprocess.run([str(script), "stop"], env=env, capture_output=True, timeout=120)
