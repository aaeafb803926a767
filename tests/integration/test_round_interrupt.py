"""Two rounds at once, and Ctrl-C (issue 13): real subprocesses, real signals.

Round A is held at the ``after-query`` fault point (it holds the campaign's round lock
and has recorded its batch). Round B, started meanwhile, must say on the terminal
``waiting for the round lock held by <A> since <time>``. Then A gets SIGINT (what
Ctrl-C sends): one line, exit 130, no traceback, the lock released on the way out.
B then takes the lock and resumes the round A left — with A's recorded batch, not a
new draw — and finishes it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli, write_small_campaign

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _wait_for(predicate, what: str, timeout: float = 300, procs: tuple[subprocess.Popen, ...] = ()) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"process ended (exit {p.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def _like_a_foreground_process() -> None:
    """The child starts as a command typed at a terminal does: SIGINT at its default and not blocked.
    A signal disposition of SIG_IGN and a blocked signal mask are inherited through fork and exec, so a
    pytest worker that some library left in either state would hand it to the round, which would then
    (correctly, as a background job) never see the Ctrl-C this test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _signal_state(pid: int) -> str:
    """The kernel's view of a process's signals (hex masks), for a failure message."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "(no /proc)"
    return " ".join(ln.replace("\t", "") for ln in lines if ln.startswith(("SigBlk", "SigIgn", "SigCgt")))


def test_waiting_round_names_the_holder_and_sigint_stops_a_round_that_the_next_run_resumes(prefect_api, tmp_path):
    cfg = write_small_campaign(tmp_path, name="interrupt", n=500, budget=75)
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    assert run_cli("setup", str(cfg), env=env).returncode == 0
    pause = tmp_path / "pause"
    logs = {name: (open(tmp_path / f"{name}.out", "w+"), open(tmp_path / f"{name}.err", "w+")) for name in "AB"}

    def start(name: str, extra: dict) -> subprocess.Popen:
        out, err = logs[name]
        return subprocess.Popen([sys.executable, "-m", "labelloop.flows.cli", "round", str(cfg)], cwd=ROOT,
                                env={**env, **extra}, stdout=out, stderr=err, text=True,
                                preexec_fn=_like_a_foreground_process)

    def read(name: str, stream: int) -> str:
        return (tmp_path / f"{name}.{'out' if stream == 1 else 'err'}").read_text()

    a = start("A", {"LABELLOOP_PAUSE_AT": "after-query", "LABELLOOP_PAUSE_DIR": str(pause)})
    b = None
    try:
        _wait_for(lambda: (pause / "paused-after-query").exists(), "round A holding at after-query", procs=(a,))
        b = start("B", {})
        _wait_for(lambda: "waiting for the round lock" in read("B", 1), "round B's waiting line", procs=(a, b))
        line = next(ln for ln in read("B", 1).splitlines() if "waiting for the round lock" in ln)
        assert re.search(rf"waiting for the round lock held by \S*pid{a.pid}\S* since "
                         r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line), line
        assert b.poll() is None, "B waits; it neither fails nor runs beside A"

        a.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
        try:  # the crash report to the Prefect API and the lock release can take a while on a loaded machine
            a.wait(timeout=300)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"round A still running 300 s after SIGINT ({_signal_state(a.pid)}; this "
                                 f"worker: SIGINT handler {signal.getsignal(signal.SIGINT)}, blocked "
                                 f"{signal.pthread_sigmask(signal.SIG_BLOCK, [])}); its stderr:\n{read('A', 2)[-3000:]}"
                                 f"\nstdout:\n{read('A', 1)[-2000:]}") from None
        a_out, a_err = read("A", 1), read("A", 2)
        assert a.returncode == 130, (a.returncode, a_err[-3000:])
        assert "Traceback" not in a_out + a_err, a_err[-3000:]
        err_lines = [ln for ln in a_err.splitlines() if ln.strip()]
        assert len(err_lines) == 1 and err_lines[0].startswith("interrupted"), a_err[-3000:]
        assert "re-run" in err_lines[0]

        from labelloop.flows.runtime import open_campaign

        c = open_campaign(cfg)
        r1 = c.ledger.get_round("active", 1)
        assert r1 is not None and r1.status == "queried", "A stopped after recording its batch"
        batch = set(c.ledger.queries_frame(arm="active", round_no=1)["item_id"])
        c.ledger.dispose()

        b.wait(timeout=600)
        b_out, b_err = read("B", 1), read("B", 2)
        assert b.returncode == 0, (b.returncode, b_err[-3000:])
        assert "round lock acquired" in b_out
        c = open_campaign(cfg)
        r1 = c.ledger.get_round("active", 1)
        assert r1 is not None and r1.status == "done", "the next run resumed and finished round 1"
        assert set(c.ledger.queries_frame(arm="active", round_no=1)["item_id"]) == batch, "A's batch, not a re-draw"
        assert c.ledger.get_round("active", 2) is None, "B finished A's round instead of starting another"
        c.ledger.dispose()
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
        for out, err in logs.values():
            out.close()
            err.close()
