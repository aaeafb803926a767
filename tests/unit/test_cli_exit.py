"""What a finished command does at exit (issue 18: the interpreter's teardown collections took ~2 s a round)."""

from __future__ import annotations

import subprocess
import sys

PROBE = r"""
import atexit, gc, sys
# registered before main(): runs after labelloop's own exit hook (atexit is last in, first out)
atexit.register(lambda: print(f"gc enabled={gc.isenabled()} frozen={gc.get_freeze_count() > 0}", flush=True))
from labelloop.flows.cli import main
code = main(sys.argv[1:])
print(f"exit code {code}", flush=True)
sys.exit(code)
"""


def test_a_finished_command_turns_the_collector_off_as_its_last_exit_step(tmp_path):
    res = subprocess.run([sys.executable, "-c", PROBE, "status", str(tmp_path / "missing.toml")],
                         capture_output=True, text=True, timeout=120)
    lines = res.stdout.strip().splitlines()
    assert res.returncode == 2 and lines[0] == "exit code 2", res.stdout + res.stderr
    assert lines[-1] == "gc enabled=False frozen=True", res.stdout
    assert res.stderr.count("error:") == 1  # the error line still reaches the terminal, once


def test_the_exit_hook_is_registered_once_however_often_main_runs(monkeypatch):
    import atexit

    from labelloop.flows import cli

    registered = []
    monkeypatch.setattr(atexit, "register", lambda fn, *a, **k: registered.append(fn))
    monkeypatch.setitem(cli._STATE, "exit_hook", False)
    for _ in range(3):
        cli.main(["--help"])
    assert registered == [cli._skip_final_collections]
