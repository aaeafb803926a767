"""`labelloop serve` (WarmServer) claims runs on Prefect's events and honours a cancel from the Prefect UI,
against a real Prefect API.

The UI's "Cancel" sets a run Cancelling. A run cancelled after the server claimed it but before
it started must not run; one cancelled while it runs in the serve process must stop and end
Cancelled (the poller raises RunCancelled in the thread running it), and the server goes on.
A small sleeping flow stands in for a round, so the test takes seconds, not a round's minute.
"""

from __future__ import annotations

import contextvars
import threading
import time
import uuid

import pytest
from prefect import flow

pytestmark = [pytest.mark.integration]

STARTED: list[str] = []
FINISHED: list[str] = []


@flow(name="labelloop-test-sleeper")
def sleeper(tag: str, seconds: float = 60.0) -> str:
    STARTED.append(tag)
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # Python steps: a cancel lands within 0.1 s
        time.sleep(0.1)
    FINISHED.append(tag)
    return tag


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_warm_server_skips_a_cancelled_claimed_run_and_stops_a_running_one(prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling, Pending
    from prefect.utilities.engine import propose_state_sync

    from labelloop.flows.deploy import WarmServer

    tag = uuid.uuid4().hex[:6]  # the Prefect server may be shared between test runs
    server = WarmServer([sleeper.to_deployment(name=f"cancel-{tag}")], flows=[sleeper])
    (dep_id,) = server.register()
    with get_client(sync_client=True) as client:
        try:
            # 1. claimed (Pending, as the poller leaves it), then cancelled before it starts: never run
            a = client.create_flow_run_from_deployment(dep_id, parameters={"tag": f"a-{tag}", "seconds": 0.1})
            propose_state_sync(client, Pending(), flow_run_id=a.id)
            propose_state_sync(client, Cancelling(message="cancelled in the UI"), flow_run_id=a.id, force=True)
            server._run_here(client.read_flow_run(a.id))
            assert f"a-{tag}" not in STARTED
            assert client.read_flow_run(a.id).state.is_cancelled()

            # 2. cancelled while it runs in this process: stopped, Cancelled, and the server still serves
            # threads get this context: the fixture's API URL is a context-local Prefect setting
            poller = threading.Thread(target=contextvars.copy_context().run, args=(server._poll, 0.5), daemon=True)
            poller.start()
            b = client.create_flow_run_from_deployment(dep_id, parameters={"tag": f"b-{tag}", "seconds": 60})
            claimed = server._here.get(timeout=60)  # the poller claimed it, as `serve` does
            assert claimed.id == b.id

            def cancel_once_started() -> None:
                _wait(lambda: f"b-{tag}" in STARTED, 60, "the run to start")
                with get_client(sync_client=True) as other:
                    propose_state_sync(other, Cancelling(message="cancelled in the UI"), flow_run_id=b.id,
                                       force=True)

            canceller = threading.Thread(target=contextvars.copy_context().run, args=(cancel_once_started,),
                                         daemon=True)
            canceller.start()
            t0 = time.monotonic()
            server._run_here(claimed)
            took = time.monotonic() - t0
            canceller.join(10)
            assert f"b-{tag}" in STARTED and f"b-{tag}" not in FINISHED
            assert took < 45, f"the cancelled run went on for {took:.0f} s"
            assert client.read_flow_run(b.id).state.is_cancelled(), client.read_flow_run(b.id).state

            c = client.create_flow_run_from_deployment(dep_id, parameters={"tag": f"c-{tag}", "seconds": 0.1})
            server._run_here(server._here.get(timeout=60))
            assert f"c-{tag}" in FINISHED and client.read_flow_run(c.id).state.is_completed()
        finally:
            server._stop.set()
            client.delete_deployment(dep_id)


def test_warm_server_claims_a_new_run_on_its_event_not_at_the_next_poll(prefect_api):
    """With a 300 s poll interval, only the event stream can get a new run claimed within seconds.

    (How many polls ran is not asserted: any flow run scheduled on the test session's Prefect server
    wakes the poller, and other tests schedule runs there too.)"""
    from prefect.client.orchestration import get_client

    from labelloop.flows.deploy import WarmServer

    tag = uuid.uuid4().hex[:6]
    server = WarmServer([sleeper.to_deployment(name=f"events-{tag}")], flows=[sleeper])
    (dep_id,) = server.register()
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(fn, 300.0), daemon=True)
               for fn in (server._poll, server._listen)]
    for t in threads:
        t.start()
    with get_client(sync_client=True) as client:
        try:
            assert server.listening.wait(60), "never connected to the Prefect event stream"
            _wait(lambda: server.polls >= 1, 60, "the poller's first (immediate) poll")  # then it sleeps 300 s
            t0 = time.monotonic()
            run = client.create_flow_run_from_deployment(dep_id, parameters={"tag": f"e-{tag}", "seconds": 0.1})
            claimed = server._here.get(timeout=30)
            took = time.monotonic() - t0
            assert claimed.id == run.id
            assert took < 30, took
            assert client.read_flow_run(run.id).state.is_pending(), "claimed as the runner does (Pending)"
        finally:
            server.stop()
            for t in threads:
                t.join(15)
            assert not any(t.is_alive() for t in threads), "the poller and listener stop when serving stops"
            client.delete_deployment(dep_id)
