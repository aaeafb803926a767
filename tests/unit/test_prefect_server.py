"""Which Prefect API labelloop uses, decided without importing Prefect (flows/prefect_server.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from labelloop.flows import prefect_server


def test_api_url_environment_then_profile(tmp_path: Path, monkeypatch):
    profiles = tmp_path / "profiles.toml"
    profiles.write_text('active = "team"\n[profiles.team]\nPREFECT_API_URL = "http://prefect.example:4200/api"\n'
                        '[profiles.ephemeral]\n')
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(profiles))
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert prefect_server.api_url() == "http://127.0.0.1:9/api"
    monkeypatch.setenv("PREFECT_API_URL", "")  # set but empty: "not configured", as in Prefect
    assert prefect_server.api_url() is None
    monkeypatch.delenv("PREFECT_API_URL")
    assert prefect_server.api_url() == "http://prefect.example:4200/api"
    monkeypatch.setenv("PREFECT_PROFILE", "ephemeral")
    assert prefect_server.api_url() is None


def test_no_server_recorded_means_not_running_and_stop_is_harmless(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("LABELLOOP_PREFECT_HOME", str(tmp_path / "home"))
    assert prefect_server.home() == tmp_path / "home"
    assert prefect_server.running_url() is None
    assert prefect_server.stop() is None
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "server.pid").write_text("999999999")  # a pid that cannot exist
    assert prefect_server.running_url() is None
    assert prefect_server.stop() is None and not (tmp_path / "home" / "server.pid").exists()


def test_the_module_does_not_import_prefect():
    code = "import sys, labelloop.flows.prefect_server as p; p.api_url(); p.running_url(); print('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PREFECT_API_URL": ""}, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"
