"""The campaign round lock (ledger backend): serialises, exits on request, re-enters, expires."""

from __future__ import annotations

import threading
import time
import tomllib
from pathlib import Path

from labelloop.flows.config import example_config, parse_config
from labelloop.flows.locking import LedgerLock, RoundBusyError, lock_holder, round_lock
from labelloop.flows.runtime import open_campaign
from labelloop.integrations.ledger import LedgerError


def _campaign(tmp_path: Path, **lock):
    data = tomllib.loads(example_config("lk"))
    data["lock"] = {**data.get("lock", {}), **lock}
    return open_campaign(parse_config(data, base_dir=tmp_path))


def test_second_round_waits_until_the_first_releases(tmp_path):
    spans: list[tuple[str, float, float]] = []

    def body(name: str) -> None:
        c = _campaign(tmp_path)  # own engine, like another process
        with round_lock(c):
            t0 = time.monotonic()
            time.sleep(0.6)
            spans.append((name, t0, time.monotonic()))

    _campaign(tmp_path)  # create the ledger first (concurrent first opens race in create_all)
    threads = [threading.Thread(target=body, args=(n,)) for n in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(spans) == 3
    spans.sort(key=lambda s: s[1])
    for (_, _, end), (_, start, _) in zip(spans, spans[1:]):
        assert start >= end, spans
    assert lock_holder(_campaign(tmp_path)) is None


def test_exit_mode_raises_a_clear_error(tmp_path):
    holder = _campaign(tmp_path)
    other = _campaign(tmp_path, on_busy="exit")
    errors: list[BaseException] = []

    def second() -> None:  # another thread = another round (re-entry is per flow context)
        try:
            with round_lock(other):
                pass
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    with round_lock(holder):
        t = threading.Thread(target=second)
        t.start()
        t.join(20)
    assert len(errors) == 1 and isinstance(errors[0], RoundBusyError)
    err = type("E", (), {"value": errors[0]})
    msg = str(err.value)
    assert "another round is running" in msg and "'lk'" in msg and "on_busy" in msg
    assert isinstance(err.value, LedgerError)  # the CLI prints LedgerErrors as one line
    with round_lock(other):  # free again
        pass


def test_lock_is_reentrant_in_one_flow(tmp_path):
    c = _campaign(tmp_path, on_busy="exit")
    with round_lock(c):
        with round_lock(c):
            assert lock_holder(c) is not None
        assert lock_holder(c) is not None
    assert lock_holder(c) is None


def test_an_abandoned_lock_expires(tmp_path):
    c = _campaign(tmp_path)
    dead = LedgerLock(c.ledger, lease_seconds=0.5)
    assert dead.try_acquire() is None  # a round that was killed -9: nobody releases
    assert LedgerLock(c.ledger).try_acquire() is not None
    time.sleep(0.7)
    late = LedgerLock(c.ledger)
    assert late.try_acquire() is None
    assert not dead.renew()  # the old owner lost it
    late.release()


_HOLD = """
import os, signal, sys, time, tomllib
from pathlib import Path
from labelloop.flows.config import example_config, parse_config
from labelloop.flows.locking import LedgerLock
from labelloop.flows.runtime import open_campaign
data = tomllib.loads(example_config("lk"))
c = open_campaign(parse_config(data, base_dir=Path(sys.argv[1])))
assert LedgerLock(c.ledger, lease_seconds=600).try_acquire() is None
print("held", flush=True)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(60)
"""


def test_a_killed_holder_on_this_host_is_taken_over_at_once(tmp_path):
    """kill -9 leaves a 600 s lease; the next round must not sit it out when the holder is gone."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    c = _campaign(tmp_path)
    live = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path), "sleep"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline().strip() == "held"
        holder = LedgerLock(c.ledger).try_acquire()  # a live holder keeps its lock
        assert holder is not None and holder["pid"] == live.pid
        assert lock_holder(c) is not None
    finally:
        live.kill()
        live.wait()
    # the same holder, now dead (reaped): its unexpired lease no longer blocks
    assert lock_holder(c) is None
    mine = LedgerLock(c.ledger)
    assert mine.try_acquire() is None
    mine.release()

    killed = subprocess.run([sys.executable, "-c", _HOLD, str(tmp_path), "kill"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9 and "held" in killed.stdout, killed.stderr[-2000:]
    t0 = time.monotonic()
    with round_lock(c):
        pass
    assert time.monotonic() - t0 < 5


def test_wait_timeout(tmp_path):
    holder = _campaign(tmp_path)
    waiting = _campaign(tmp_path, timeout_seconds=1.5)
    out: list[object] = []

    def second() -> None:
        t0 = time.monotonic()
        try:
            with round_lock(waiting):
                out.append("acquired")
        except RoundBusyError as e:
            out.append((str(e), time.monotonic() - t0))

    with round_lock(holder):
        t = threading.Thread(target=second)
        t.start()
        t.join(20)
    msg, waited = out[0]
    assert "gave up after waiting" in msg and waited >= 1.4
