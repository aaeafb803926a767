"""The command line as a user meets it: what it imports, what it prints, what it leaves behind.

Real processes throughout: the installed entry point (``python -m labelloop.flows.cli``) in a
subprocess, a real Prefect API (the session's ``prefect_api``, or the shared local server
labelloop starts itself), real ``kill -9``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, run_cli, write_small_campaign

pytestmark = pytest.mark.integration

HEAVY = ("prefect", "sklearn", "great_expectations", "mlflow")


def _modules_after(args: list[str], env: dict | None = None) -> tuple[int, set[str], str]:
    """Run ``main(args)`` in a fresh interpreter; return its exit code and which heavy libraries it imported."""
    code = ("import sys, json\nfrom labelloop.flows.cli import main\nrc = main(sys.argv[1:])\n"
            f"print('\\nMODULES=' + json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
            "sys.exit(rc)\n")
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **(env or {})}, timeout=300)
    line = [x for x in res.stdout.splitlines() if x.startswith("MODULES=")]
    assert line, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    return res.returncode, set(json.loads(line[-1][len("MODULES="):])), res.stderr


def test_read_only_commands_never_import_prefect(tmp_path: Path):
    """--help, init, status, doctor (no --repair) and setup's validation: no Prefect, no server, no sklearn/GX
    unless the command needs it (the data contract needs Great Expectations, nothing else does)."""
    env = {"PREFECT_API_URL": "", "LABELLOOP_PREFECT_HOME": str(tmp_path / "no-server")}
    rc, mods, _ = _modules_after(["--help"], env)
    assert rc == 0 and not mods & set(HEAVY), mods
    rc, mods, _ = _modules_after(["init", str(tmp_path / "new.toml"), "--labels", "a,b"], env)
    assert rc == 0 and not mods, mods
    cfg = write_small_campaign(tmp_path / "c")
    for cmd in ("status", "doctor", "export"):  # never set up: exit 2, one line, and no empty ledger left behind
        extra = ["--out", str(tmp_path / "x.csv")] if cmd == "export" else []
        rc, mods, err = _modules_after([cmd, str(cfg), *extra], env)
        assert rc == 2 and "prefect" not in mods and "run `labelloop setup` first" in err, (cmd, rc, mods, err[-2000:])
        assert not (tmp_path / "c" / "ledger.db").exists() and not (tmp_path / "x.csv").exists(), cmd
    from labelloop.flows.runtime import open_campaign

    open_campaign(cfg)  # a ledger (what a set-up leaves, minus the items): the commands read it
    rc, mods, err = _modules_after(["status", str(cfg)], env)
    assert rc == 0 and not mods, (mods, err[-2000:])
    rc, mods, err = _modules_after(["doctor", str(cfg)], env)
    assert rc == 0 and "prefect" not in mods, (mods, err[-2000:])

    bad = tmp_path / "c" / "bad.toml"
    bad.write_text(cfg.read_text().replace('strategy = "margin"', 'strategy = "nope"'))
    rc, mods, err = _modules_after(["setup", str(bad)], env)
    assert rc == 2 and not mods and "nope" in err, (rc, mods, err[-2000:])
    missing = tmp_path / "c" / "missing.toml"
    missing.write_text(cfg.read_text().replace("data/pool.csv", "data/gone.csv"))
    rc, mods, err = _modules_after(["setup", str(missing)], env)
    assert rc == 2 and not mods and "gone.csv" in err, (rc, mods, err[-2000:])

    pool = tmp_path / "c" / "data" / "pool.csv"
    pool.write_text(pool.read_text().replace("\n", "\n,,\n", 1))  # an empty id and text: the contract fails
    rc, mods, err = _modules_after(["setup", str(cfg)], env)
    assert rc == 2 and "prefect" not in mods and "great_expectations" in mods, (rc, mods, err[-2000:])
    assert not (tmp_path / "no-server").exists(), "no Prefect server was started for a read-only command"


def _error_lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.startswith("error:")]


def test_a_failing_round_prints_its_error_once_and_no_traceback(prefect_api, tmp_path: Path):
    """A failure inside the flow: Prefect's task/flow failure records stay in its run logs; the terminal shows
    the CLI's one line. With --verbose the traceback is there."""
    cfg = write_small_campaign(tmp_path)
    env = {"PREFECT_API_URL": prefect_api}
    res = run_cli("setup", str(cfg), env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "{" not in res.stdout, "no raw dict on the terminal"
    assert "Created temporary directory" not in res.stdout + res.stderr, "no Great Expectations INFO line"
    rc, mods, err = _modules_after(["doctor", str(cfg)], env)  # a set-up campaign: still no Prefect to read
    assert rc == 0 and "prefect" not in mods, (rc, mods, err[-2000:])
    (tmp_path / "models" / "featurizer.joblib").unlink()  # the round fails inside the flow

    res = run_cli("round", str(cfg), env=env, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 2, (res.returncode, out[-3000:])
    lines = _error_lines(res.stderr)
    assert len(lines) == 1 and "featuriser" in lines[0], out[-3000:]
    assert out.count("has no featuriser") == 1, out[-3000:]
    assert "Traceback" not in out and "| ERROR" not in out and "Finished in state" not in out, out[-3000:]

    res = run_cli("round", str(cfg), "--verbose", env=env, timeout=300)
    assert res.returncode == 2
    assert "Traceback" in res.stdout + res.stderr, "--verbose shows Prefect's failure logs with the traceback"


def _session_members(sid: int) -> list[int]:
    """Processes whose session id is ``sid`` (the killed command started its session: its children keep it)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state ppid pgrp session ...
            out.append(int(p.name))
    return out


def test_sigkill_of_a_round_leaves_no_process_behind(tmp_path: Path):
    """``kill -9`` of ``labelloop round`` mid-round, with no PREFECT_API_URL: nothing of the command survives.

    The one process that outlives it is, by design, the shared local Prefect server labelloop
    started (its own session, recorded in LABELLOOP_PREFECT_HOME, reused by the next command,
    stopped by ``labelloop server stop``): the test checks it is that server and stops it.
    """
    home = tmp_path / "prefect-home"
    env = {**os.environ, "PREFECT_API_URL": "", "LABELLOOP_PREFECT_HOME": str(home),
           "LABELLOOP_PREFECT_PORT": str(free_port()), "LABELLOOP_PAUSE_AT": "after-query",
           "LABELLOOP_PAUSE_DIR": str(tmp_path / "pause")}
    cfg = write_small_campaign(tmp_path / "c")
    rnd = subprocess.Popen([sys.executable, "-m", "labelloop.flows.cli", "round", str(cfg)], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while not (tmp_path / "pause" / "paused-after-query").exists():
            assert rnd.poll() is None, f"the round ended ({rnd.returncode}) before the kill point"
            assert time.monotonic() < deadline, "the round never reached the kill point"
            time.sleep(0.5)
        server_pid = int((home / "server.pid").read_text())
        assert server_pid not in _session_members(rnd.pid), "the shared server runs in its own session"
        os.kill(rnd.pid, signal.SIGKILL)
        rnd.wait(timeout=30)
        time.sleep(1)
        assert _session_members(rnd.pid) == [], "a process of the killed round is still running"
        os.kill(server_pid, 0)  # the shared server is still there, for the next command

        res = run_cli("server", "stop", env={"LABELLOOP_PREFECT_HOME": str(home)}, timeout=60)
        assert res.returncode == 0 and str(server_pid) in res.stdout, res.stdout + res.stderr
        assert _session_members(server_pid) == [], "`labelloop server stop` stops the server and its children"
    finally:
        if rnd.poll() is None:
            rnd.kill()
        subprocess.run([sys.executable, "-m", "labelloop.flows.cli", "server", "stop"], cwd=ROOT, capture_output=True,
                       env={**os.environ, "LABELLOOP_PREFECT_HOME": str(home)}, timeout=60)


def test_round_exit_code_waiting_and_run_options(monkeypatch, capsys):
    """Exit 3 when the round (or the last round of ``run``) has to wait; the reason printed once; ``run``
    passes --poll-interval/--timeout on as ``poll_interval``/``wait_timeout``."""
    import labelloop.flows.campaign
    import labelloop.flows.cli as cli
    import labelloop.flows.round

    monkeypatch.setattr(cli, "validate_campaign", lambda config: None)
    monkeypatch.setattr(cli, "orchestrate", lambda: "http://unused")
    monkeypatch.setattr(cli, "_print_curves", lambda config: None)
    waiting = {"round": 2, "state": "waiting", "waiting_for": "round 2 waits for 12 annotations"}
    monkeypatch.setattr(labelloop.flows.round, "round_flow", lambda config, round_no=None: dict(waiting))
    assert cli.main(["round", "x.toml"]) == 3
    assert capsys.readouterr().out.count("round 2 waits for 12 annotations") == 1

    seen = {}

    def campaign_flow(config, max_rounds=None, **kw):
        seen.update(kw, max_rounds=max_rounds)
        return [{"round": 1}, dict(waiting)]

    monkeypatch.setattr(labelloop.flows.campaign, "campaign_flow", campaign_flow)
    assert cli.main(["run", "x.toml", "--rounds", "4", "--poll-interval", "5", "--timeout", "60"]) == 3
    assert capsys.readouterr().out.count("round 2 waits for 12 annotations") == 1
    assert seen == {"poll_interval": 5.0, "wait_timeout": 60.0, "max_rounds": 4}
    monkeypatch.setattr(labelloop.flows.campaign, "campaign_flow", lambda config, max_rounds=None, **kw: [{"round": 1}])
    assert cli.main(["run", "x.toml"]) == 0


def test_status_asks_the_shared_server_it_finds_never_a_temporary_one(prefect_api):
    """Without PREFECT_API_URL, `status` reads the next scheduled runs from the shared local server when it
    runs (the session's real API stands in for it here) and must query that server, not let Prefect's
    client start a temporary one (it did, for ~10 s, before the client was pointed at the URL found)."""
    code = ("import json, sys\nimport labelloop.flows.prefect_server as ps\n"
            f"ps.running_url = lambda: {prefect_api!r}\n"
            "import prefect.client.orchestration as po\nfrom prefect.settings import PREFECT_API_URL\n"
            "real, seen = po.get_client, []\n"
            "po.get_client = lambda *a, **k: seen.append(PREFECT_API_URL.value()) or real(*a, **k)\n"
            "from labelloop.flows.status import next_runs\nout = next_runs('no-such-campaign')\n"
            "print(json.dumps({**out, 'client_url': seen}))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "PREFECT_API_URL": ""})
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"api": prefect_api, "runs": {}, "error": None, "client_url": [prefect_api]}, out
    assert "temporary server" not in res.stdout + res.stderr, res.stderr[-2000:]


def test_drift_alert_needs_only_the_config(prefect_api, tmp_path: Path):
    """`drift-alert` sends its event from the config alone (a monitor may run where the ledger is not):
    exit 0, the event named once, the episode taken from the arrivals, and no ledger created."""
    cfg = write_small_campaign(tmp_path / "c")
    arrivals = tmp_path / "c" / "data" / "pool.csv"
    res = run_cli("drift-alert", str(cfg), "--reason", "PSI alert", "--score", "psi=0.4", "--arrivals", str(arrivals),
                  env={"PREFECT_API_URL": prefect_api}, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    assert res.stdout.count("emitted labelloop.drift.detected") == 1 and "episode ep-" in res.stdout, res.stdout
    assert not (tmp_path / "c" / "ledger.db").exists()
