"""The import contracts in .importlinter hold (issue 15): layers, pure tasks, no loops, SQL in integrations/.

Why a test: `make test` is what CI runs, so a layer violation or an import loop fails the build
instead of waiting for a reviewer to draw the imports again. The second test injects a loop
into a copy of the code, so a contract file that checks nothing would fail it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("flows", "tasks", "integrations")


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), "--config", str(cwd / ".importlinter"), "--no-cache"], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env={"PATH": "", "PYTHONPATH": str(cwd)})


def test_the_code_keeps_every_import_contract():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_a_loop_and_a_layer_violation_break_the_contracts(tmp_path: Path):
    for pkg in PACKAGES:
        # laid out as installed: labelloop/<pkg> (labelloop is a namespace package)
        shutil.copytree(ROOT / pkg, tmp_path / "labelloop" / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    policy = tmp_path / "labelloop" / "tasks" / "policy.py"
    policy.write_text(policy.read_text() + "\nimport labelloop.flows.round  # noqa\n")  # tasks -> flows: layer + purity
    sources = tmp_path / "labelloop" / "integrations" / "sources.py"
    sources.write_text(sources.read_text() + "\nimport labelloop.integrations.expectations  # noqa\n")  # a loop again
    r = _lint(tmp_path)
    assert r.returncode != 0
    out = r.stdout
    assert "labelloop.tasks.policy -> labelloop.flows.round" in out
    assert "No import cycles among the modules of flows, tasks and integrations BROKEN" in " ".join(out.split())
