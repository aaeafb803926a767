"""Deployments of a campaign: scheduled rounds, the drift check, the drift-triggered reopen.

Two ways to run them, same four deployments (named after the campaign):

* ``labelloop serve CONFIG [CONFIG ...]`` — one long-running process on one
  machine: it registers the deployments with the Prefect API and runs their flow
  runs *in that process* (:class:`WarmServer`): a served round pays no Python,
  Prefect, MLflow, scikit-learn or Great Expectations start-up, and finds the
  featuriser and the Great Expectations context already loaded. A run that arrives while
  another one runs here goes to a subprocess (as ``prefect.serve`` runs every
  run), so two deployments of a campaign still run side by side.
  A run cancelled in the Prefect UI is not started, or is stopped, as with Prefect's runner.
  ``labelloop serve --isolated`` is Prefect's own runner: every run in a
  subprocess. Nothing else to install.
* ``labelloop deploy CONFIG --pool NAME`` — registers the same deployments for
  a work pool; workers (``prefect worker start --pool NAME``) run them.
  ``prefect.yaml`` at the repository root describes the same deployments for
  ``prefect deploy --all`` (``labelloop deploy CONFIG --print-env`` prints the
  variables it reads).

=====================================  ==========================================================
``labelloop-round/<campaign>``          ``[schedule] round_cron`` (or ``round_interval_seconds``), and
                                        event trigger ``labelloop.batch.completed`` (the open batch is
                                        answered: ``flows/batch_trigger.py``, started by ``serve``)
``labelloop-drift-check/<campaign>``    ``[schedule] drift_cron`` (or ``drift_interval_seconds``)
``labelloop-reopen/<campaign>``         event trigger: ``labelloop.drift.detected`` with resource
                                        ``labelloop.campaign.<campaign>``
``labelloop-stream/<campaign>``         every ``[stream] interval_seconds`` when ``[stream] arrivals`` is
                                        set (stream mode, ``flows/stream.py``); else run by hand
=====================================  ==========================================================

The round and reopen deployments have ``concurrency_limit = 1`` with
``ENQUEUE`` (a second run of the same deployment waits); the drift check uses
``CANCEL_NEW`` (a check still running makes the next one pointless). Across
deployments, the campaign's round lock (``flows/locking.py``) keeps a
scheduled round and a reopen round from querying at the same time.

Parameters are the absolute config path (and, for the reopen, fields of the
event payload) — never secrets: tokens and database passwords stay in the
environment of the process that runs the flow.
"""

from __future__ import annotations

import queue
import shlex
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from labelloop.flows.config import CampaignConfig, load_config
from labelloop.flows.drift import DRIFT_EVENT, resource_id
from labelloop.flows.logs import say

ROUND_FLOW, DRIFT_FLOW, REOPEN_FLOW = "labelloop-round", "labelloop-drift-check", "labelloop-reopen"
STREAM_FLOW = "labelloop-stream"
REPO_ROOT = Path(__file__).resolve().parents[1]


def deployment_names(campaign: str) -> dict[str, str]:
    return {"round": f"{ROUND_FLOW}/{campaign}", "drift": f"{DRIFT_FLOW}/{campaign}",
            "reopen": f"{REOPEN_FLOW}/{campaign}", "stream": f"{STREAM_FLOW}/{campaign}"}


def reopen_trigger_parameters(config_path: str) -> dict[str, Any]:
    """Flow parameters of the reopen run, filled from the event (Jinja, rendered by Prefect's automation)."""
    return {
        "config": config_path,
        "arrivals": "{{ event.payload.arrivals }}",
        "episode": "{{ event.payload.episode }}",
        "reason": "{{ event.payload.reason }}",
        "event_id": "{{ event.id | string }}",  # a bare UUID breaks the server's JSON rendering
    }


def _schedules(cron: str | None, interval: int | None, tz: str) -> list[Any]:
    from prefect.schedules import Cron, Interval

    if interval:
        return [Interval(timedelta(seconds=interval), timezone=tz)]
    if cron:
        return [Cron(cron, timezone=tz)]
    return []


def build_deployments(config: str | Path, cfg: CampaignConfig | None = None, *,
                      work_pool: str | None = None) -> list[Any]:
    """The four RunnerDeployments of one campaign (for ``serve`` or ``apply``)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.events import DeploymentEventTrigger

    from labelloop.flows.drift import drift_check_flow
    from labelloop.flows.reopen import reopen_flow
    from labelloop.flows.round import round_flow
    from labelloop.flows.stream import stream_flow

    config_path = str(Path(config).resolve())
    cfg = cfg or load_config(config_path)
    s = cfg.schedule
    one_enqueued = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    one_cancel = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
    common: dict[str, Any] = {"name": cfg.name, "entrypoint_type": EntrypointType.MODULE_PATH,
                              "tags": ["labelloop", f"campaign:{cfg.name}"]}
    if work_pool:
        common["work_pool_name"] = work_pool
    from labelloop.flows.batch_trigger import BATCH_EVENT

    batch_done = DeploymentEventTrigger(  # flows/batch_trigger.py emits it when the open batch is answered
        name=f"labelloop {cfg.name}: batch completed",
        expect={BATCH_EVENT},
        match={"prefect.resource.id": resource_id(cfg.name)},
        parameters={"config": config_path},
    )
    trigger = DeploymentEventTrigger(
        name=f"labelloop {cfg.name}: drift detected",
        expect={DRIFT_EVENT},
        match={"prefect.resource.id": resource_id(cfg.name)},
        parameters=reopen_trigger_parameters(config_path),
    )
    return [
        round_flow.to_deployment(
            schedules=_schedules(s.round_cron, s.round_interval_seconds, s.timezone),
            triggers=[batch_done], parameters={"config": config_path}, concurrency_limit=one_enqueued,
            description=f"Active-learning rounds of campaign {cfg.name}: on schedule and when a batch "
                        "is answered", **common),
        drift_check_flow.to_deployment(
            schedules=_schedules(s.drift_cron, s.drift_interval_seconds, s.timezone),
            parameters={"config": config_path}, concurrency_limit=one_cancel,
            description=f"Drift check of new arrivals for campaign {cfg.name}", **common),
        reopen_flow.to_deployment(
            triggers=[trigger], parameters={"config": config_path}, concurrency_limit=one_enqueued,
            description=f"Re-open the query pool of campaign {cfg.name} when {DRIFT_EVENT} fires", **common),
        stream_flow.to_deployment(
            schedules=_schedules(None, stream_interval(cfg), s.timezone), parameters={"config": config_path},
            concurrency_limit=one_cancel,
            description=f"Stream mode of campaign {cfg.name}: label arrivals automatically or by people", **common),
    ]


def stream_interval(cfg: CampaignConfig) -> int | None:
    """Seconds between served stream runs: ``[stream] interval_seconds`` when ``[stream] arrivals`` names a
    folder to watch (without one a stream run only re-decides held items: run it by hand)."""
    return cfg.stream.interval_seconds if cfg.stream.arrivals else None


def describe(cfg: CampaignConfig) -> str:
    s = cfg.schedule
    rnd = f"every {s.round_interval_seconds}s" if s.round_interval_seconds else (
        f"cron '{s.round_cron}' ({s.timezone})" if s.round_cron else "no schedule")
    drf = f"every {s.drift_interval_seconds}s" if s.drift_interval_seconds else (
        f"cron '{s.drift_cron}' ({s.timezone})" if s.drift_cron else "no schedule")
    n = deployment_names(cfg.name)
    from labelloop.flows.batch_trigger import BATCH_EVENT

    rnd += f"; on event {BATCH_EVENT}"
    stm = (f"every {stream_interval(cfg)}s on {cfg.stream_arrivals_path}" if stream_interval(cfg)
           else "by hand (set [stream] arrivals to watch a folder)")
    return (f"  {n['round']:<40} {rnd}\n  {n['drift']:<40} {drf}\n"
            f"  {n['reopen']:<40} on event {DRIFT_EVENT} (resource {resource_id(cfg.name)})\n"
            f"  {n['stream']:<40} {stm}")


def serve_campaigns(configs: list[str], *, limit: int | None = None, isolated: bool = False) -> None:
    """Serve every deployment of the given campaigns from this process (blocks until interrupted).

    ``isolated``: Prefect's runner (each flow run in its own subprocess); else :class:`WarmServer`.
    """
    from labelloop.flows.locking import ensure_prefect_limit, prefect_limit_name

    deployments: list[Any] = []
    seen: set[str] = set()
    for path in configs:
        cfg = load_config(path)
        if cfg.name in seen:
            raise ValueError(f"two configs name the same campaign {cfg.name!r}")
        seen.add(cfg.name)
        if cfg.lock.backend in ("prefect", "both"):
            ensure_prefect_limit(prefect_limit_name(cfg.name))
        deployments.extend(build_deployments(path, cfg))
        print(f"campaign {cfg.name}:\n{describe(cfg)}", flush=True)
    from labelloop.flows.batch_trigger import start_batch_triggers

    stops: list[Any] = []

    def on_registered() -> None:  # webhooks + polling -> labelloop.batch.completed, once the deployments exist
        stops.append(start_batch_triggers(configs))

    try:
        if isolated:
            _serve_until_signal(deployments, limit=limit, on_registered=on_registered)
        else:
            WarmServer(deployments, limit=limit).serve(on_registered=on_registered)
    finally:
        for stop in stops:
            stop()


class RunCancelled(BaseException):
    """Raised in the thread running a flow run that was cancelled from the Prefect UI (see WarmServer).

    A BaseException, so user code's ``except Exception`` does not swallow it (as with Ctrl-C)."""


class WarmServer:
    """Serve deployments with their flow runs in this process: what keeps a served round warm.

    Why not Prefect's runner: in Prefect 3.8 it starts every flow run of a served deployment
    with ``run_flow_in_subprocess``, a *spawned* Python process, so each scheduled round
    imports Prefect, MLflow, scikit-learn and Great Expectations again and loads the
    featuriser again (10-20 s on two cores before any work, issue 18). Here:

    * a poller thread asks the API for the deployments' scheduled runs (the call Prefect's
      runner makes, which also marks the deployments ready) as soon as Prefect's event stream
      says a flow run was scheduled or set to Cancelling, and at the latest every
      ``PREFECT_RUNNER_POLL_FREQUENCY`` seconds (10 by default; the only clock when the event
      stream is unreachable), claims each run by proposing Pending (the server's deployment
      concurrency limits apply there, as for the runner) and
    * hands it to the main thread, which runs it with ``prefect.flow_engine.run_flow`` (the
      engine the subprocess would run: states, logs and results go to the API the same way);
    * a run that comes while the main thread is busy starts in a subprocess instead
      (``run_flow_in_subprocess``, exactly as ``prefect.serve`` would), up to ``limit`` runs
      at once, so a reopen round waiting on the campaign's round lock never holds back a round
      of another deployment.

    Ctrl-C or SIGTERM: a run in this process is interrupted (the engine marks it Crashed, and
    the ledger resumes the round next time, as after a killed ``labelloop round``), runs in
    subprocesses get SIGTERM, and the schedules are paused (as ``prefect.serve`` does).

    Cancelled from the Prefect UI (or ``prefect flow-run cancel``), as Prefect's runner does it:
    a run cancelled while Scheduled is never claimed (the poller asks for Scheduled runs only);
    one cancelled after it was claimed but before it started is not started; one running is
    stopped. The poller watches the runs it started for the Cancelling state: a subprocess gets
    SIGTERM (what the runner sends), the run in this process gets :class:`RunCancelled` raised
    in the thread that runs it (at its next Python instruction: a model fit in C finishes
    first); either way the run ends Cancelled, and the ledger resumes the round next time.
    """

    def __init__(self, deployments: list[Any], *, limit: int | None = None, flows: list[Any] = ()) -> None:
        """``flows``: flow objects besides labelloop's own that ``deployments`` may name (tests)."""
        from labelloop.flows.drift import drift_check_flow
        from labelloop.flows.reopen import reopen_flow
        from labelloop.flows.round import round_flow
        from labelloop.flows.stream import stream_flow

        self._by_name = {f.name: f for f in (round_flow, drift_check_flow, reopen_flow, stream_flow, *flows)}
        self._deployments = deployments
        self._flows: dict[Any, Any] = {}  # deployment id -> flow object
        self._limit = max(1, limit or 5)  # Prefect's runner default (PREFECT_RUNNER_PROCESS_LIMIT)
        self._here: "queue.Queue[Any]" = queue.Queue()
        self._busy = False  # the main thread has (or is about to get) a run
        self._procs: dict[Any, Any] = {}  # flow run id -> spawned process
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by the event listener, a freed main thread or stop: poll now
        self.listening = threading.Event()  # connected to the event stream (tests wait on it)
        self.polls = 0  # polls done (tests)
        self._listener: tuple[Any, Any] | None = None  # the event listener's (asyncio loop, task), to stop it
        self._current: tuple[Any, int] | None = None  # (flow run id, thread ident) of the run in this process
        self._cancelled: set[Any] = set()  # runs this server stopped because they were cancelled

    def register(self) -> list[Any]:
        """Register the deployments (with their trigger automations) with the API; their ids."""
        for d in self._deployments:
            self._flows[d.apply()] = self._by_name[d.flow_name]
        return list(self._flows)

    def serve(self, on_registered: Any = None) -> None:
        """Register the deployments (then call ``on_registered``), run their flow runs until Ctrl-C or SIGTERM."""
        import signal

        from prefect.exceptions import TerminationSignal
        from prefect.settings import get_current_settings

        self.register()
        if on_registered is not None:
            on_registered()
        poll = float(get_current_settings().runner.poll_frequency)

        def interrupt(signum: int, frame: Any) -> None:
            # The flag, not only the exception: Prefect's engine swallows a KeyboardInterrupt that lands
            # after a run's final state is reported (its teardown), and serving must stop anyway.
            self._stop.set()
            raise KeyboardInterrupt

        previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
        poller = threading.Thread(target=self._poll, args=(poll,), name="labelloop-serve-poller", daemon=True)
        poller.start()
        listener = threading.Thread(target=self._listen, args=(poll,), name="labelloop-serve-events", daemon=True)
        listener.start()
        try:
            while not self._stop.is_set():
                try:
                    self._run_here(self._here.get(timeout=0.5))
                except queue.Empty:
                    continue
                except RunCancelled:  # landed just as the run ended on its own: nothing left to stop
                    self._current = None
                    with self._lock:
                        self._busy = False
        except (KeyboardInterrupt, TerminationSignal):
            pass
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)
            poller.join(timeout=30)
            listener.join(timeout=10)
            self._shutdown()

    def stop(self) -> None:
        """Ask the poller and the event listener to end (serve() returns once the run in hand ends)."""
        self._stop.set()
        self._wake.set()
        listening = self._listener
        if listening is not None:
            listening[0].call_soon_threadsafe(listening[1].cancel)

    # ------------------------------------------------------------------ main thread
    def _run_here(self, flow_run: Any) -> None:
        """Run one claimed flow run in this thread, unless it was cancelled since the poller claimed it."""
        from prefect.client.orchestration import get_client
        from prefect.flow_engine import run_flow

        name = f"flow run {flow_run.name} ({self._flows[flow_run.deployment_id].name})"
        try:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(flow_run.id).state
                if state is not None and (state.is_cancelling() or state.is_cancelled()):
                    say(f"{name}: cancelled before it started; not run")
                    self._mark_cancelled(client, flow_run.id, state)
                    return
            say(f"{name}: in this process")
            self._current = (flow_run.id, threading.get_ident())
            try:
                run_flow(self._flows[flow_run.deployment_id], flow_run=flow_run, return_type="state")
            finally:
                self._current = None  # from here on the poller raises nothing in this thread
        except RunCancelled:
            pass  # the engine recorded a crash on its way out; the state is set to Cancelled below
        except Exception:  # noqa: BLE001 - the engine has recorded the failure in the run's state and logs
            pass
        finally:
            self._current = None
            with self._lock:
                self._busy = False
                stopped = flow_run.id in self._cancelled
                self._cancelled.discard(flow_run.id)
            self._wake.set()  # a run created during this one's teardown waited for this thread: claim it now
            if stopped:
                say(f"{name}: cancelled while running; stopped")
                with get_client(sync_client=True) as client:
                    self._mark_cancelled(client, flow_run.id)

    @staticmethod
    def _mark_cancelled(client: Any, flow_run_id: Any, state: Any = None) -> None:
        """Finish a run that was cancelled (Cancelling -> Cancelled, as Prefect's runner does)."""
        from prefect.states import Cancelled
        from prefect.utilities.engine import propose_state_sync

        if state is not None and state.is_cancelled():
            return
        propose_state_sync(client, Cancelled(message="cancelled; stopped by labelloop serve"),
                           flow_run_id=flow_run_id, force=True)

    # ------------------------------------------------------------------ poller thread
    def _poll(self, poll: float) -> None:
        import datetime as dt

        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            while not self._stop.is_set():
                self._wake.clear()  # before the poll: an event that lands during it makes the wait below return at once
                try:
                    self._watch_cancellations(client)
                    self._reap(client)
                    runs = client.get_scheduled_flow_runs_for_deployments(
                        deployment_ids=list(self._flows),
                        scheduled_before=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=10))
                    for flow_run in sorted(runs, key=lambda r: (r.next_scheduled_start_time is None,
                                                                r.next_scheduled_start_time)):
                        if self._stop.is_set() or not self._submit(client, flow_run):
                            break
                except Exception as err:  # noqa: BLE001 - the API restarting: try again next poll
                    say(f"serve: polling the Prefect API failed ({type(err).__name__}: {err}); retrying")
                self.polls += 1
                self._wake.wait(poll)

    def _listen(self, poll: float) -> None:
        """Wake the poller whenever Prefect's event stream reports a flow run Scheduled or Cancelling.

        Why: polling alone makes every run wait up to a poll interval before it is claimed (10 s at
        Prefect's default; a shorter interval costs API calls around the clock). The websocket
        ``/events/out`` delivers the state change within milliseconds; the poller still does the
        claiming, so an event that is lost, or a stream that is down, only means the next regular
        poll. Any flow run's event wakes it (the poll asks for this server's deployments only).
        """
        import asyncio

        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        names = ["prefect.flow-run.Scheduled", "prefect.flow-run.Cancelling"]

        async def listen() -> None:
            warned = False
            while not self._stop.is_set():
                try:
                    async with get_events_subscriber(filter=EventFilter(event=EventNameFilter(name=names))) as events:
                        self.listening.set()
                        async for _event in events:
                            self._wake.set()
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # noqa: BLE001 - no event stream (e.g. an old server): poll only
                    if not warned:
                        say(f"serve: Prefect's event stream is unavailable ({type(err).__name__}); "
                            f"polling every {poll:g} s instead")
                        warned = True
                    await asyncio.sleep(poll)

        loop = asyncio.new_event_loop()
        task = loop.create_task(listen())
        self._listener = (loop, task)
        if self._stop.is_set():  # serve() stopped before this thread got here
            task.cancel()
        try:
            loop.run_until_complete(task)
        except asyncio.CancelledError:
            pass  # serve() is stopping
        finally:
            self._listener = None
            loop.close()

    def _submit(self, client: Any, flow_run: Any) -> bool:
        """Claim and start one run; False when at the limit (the run stays scheduled for the next poll)."""
        from prefect.exceptions import Abort
        from prefect.flow_engine import run_flow_in_subprocess
        from prefect.states import Pending
        from prefect.utilities.engine import propose_state_sync

        with self._lock:
            if int(self._busy) + sum(p.is_alive() for p in self._procs.values()) >= self._limit:
                return False
        if self._busy and not self._running_here(client):
            return False  # this process is about to be free (its run is final, in teardown): next poll, warm
        try:
            if not propose_state_sync(client, Pending(), flow_run_id=flow_run.id).is_pending():
                return True  # e.g. the deployment's concurrency slot is taken: the server keeps it waiting
        except Abort:
            return True  # someone else claimed it
        with self._lock:
            here = not self._busy
            self._busy = self._busy or here
        if here:
            self._here.put(flow_run)
        else:
            say(f"flow run {flow_run.name} ({self._flows[flow_run.deployment_id].name}): in a subprocess "
                "(another run is in this process)")
            proc = run_flow_in_subprocess(self._flows[flow_run.deployment_id], flow_run=flow_run)
            with self._lock:
                self._procs[flow_run.id] = proc
        return True

    def _running_here(self, client: Any) -> bool:
        """Whether the run in this process is still running (not starting, not in its teardown).

        Why: the engine reports a run's final state, then tears down (heartbeat thread, log and event
        flush: a second or more on a busy machine). A run created meanwhile (``run_deployment`` right
        after the previous one finished, a schedule) would otherwise go to a cold subprocess that
        imports everything again (~15 s); waiting one poll runs it here, warm.
        """
        current = self._current
        if current is None:
            return False  # claimed but not started yet, or run_flow has returned: free in a moment
        state = client.read_flow_run(current[0]).state
        return state is not None and not state.is_final()

    def _watch_cancellations(self, client: Any) -> None:
        """Stop the runs this server started that were set to Cancelling (the UI's "Cancel")."""
        import ctypes

        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterState, \
            FlowRunFilterStateType
        from prefect.client.schemas.objects import StateType

        current = self._current
        with self._lock:
            ids = list(self._procs) + ([current[0]] if current is not None else [])
        if not ids:
            return
        cancelling = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=ids), state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.CANCELLING]))))
        for flow_run in cancelling:
            with self._lock:
                current = self._current  # the runner thread clears it without the lock
                if flow_run.id in self._cancelled:
                    continue
                if current is not None and current[0] == flow_run.id:
                    self._cancelled.add(flow_run.id)
                    # The exception is raised in the thread that runs the flow, at its next Python
                    # instruction; the engine treats it as any BaseException (the run crashes out).
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(current[1]),
                                                               ctypes.py_object(RunCancelled))
                elif flow_run.id in self._procs:
                    self._cancelled.add(flow_run.id)
                    self._procs[flow_run.id].terminate()  # SIGTERM, as Prefect's runner sends
                else:
                    continue
            say(f"flow run {flow_run.name}: cancelled; stopping it")

    def _reap(self, client: Any) -> None:
        """Forget finished subprocesses; a run whose process died before reporting a final state is Crashed
        (Cancelled when this server stopped it because it was cancelled)."""
        from prefect.states import Crashed
        from prefect.utilities.engine import propose_state_sync

        with self._lock:
            done = {k: p for k, p in self._procs.items() if not p.is_alive()}
            for k in done:
                del self._procs[k]
            stopped = {k for k in done if k in self._cancelled}
            self._cancelled -= stopped
        for run_id, proc in done.items():
            if run_id in stopped:
                self._mark_cancelled(client, run_id)
                continue
            if proc.exitcode == 0:
                continue
            state = client.read_flow_run(run_id).state
            if state is not None and not state.is_final():
                propose_state_sync(client, Crashed(message=f"flow run process exited with {proc.exitcode}"),
                                   flow_run_id=run_id, force=True)

    # ------------------------------------------------------------------ shutdown
    def _shutdown(self) -> None:
        from prefect.client.orchestration import get_client
        from prefect.states import Scheduled
        from prefect.utilities.engine import propose_state_sync

        procs = list(self._procs.values())
        for p in procs:
            p.terminate()  # SIGTERM: the engine in the child marks its run Crashed
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        with get_client(sync_client=True) as client:
            self._reap(client)
            while not self._here.empty():  # claimed but never started: back to the schedule
                propose_state_sync(client, Scheduled(), flow_run_id=self._here.get().id, force=True)
            for dep_id in self._flows:
                client.pause_deployment(dep_id)


def _serve_until_signal(deployments: list[Any], *, limit: int | None, on_registered: Any = None) -> None:
    """Prefect's ``serve``, stopped cleanly by Ctrl-C or SIGTERM.

    Why not ``prefect.serve``: in 3.8 its runner swallowed Ctrl-C and on SIGTERM called the
    async ``astop`` from a signal handler without awaiting it. Here both signals set an event
    in the runner's own loop; the runner is then stopped and awaited (schedules paused, as
    ``serve`` does on shutdown).
    """
    import asyncio
    import signal

    from prefect.runner import Runner

    runner = Runner(pause_on_shutdown=True, limit=limit)
    for d in deployments:
        runner.add_deployment(d)  # registers it (and its trigger automations) with the API now
    if on_registered is not None:
        on_registered()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        runner.handle_sigterm = lambda *_: loop.call_soon_threadsafe(stop.set)  # type: ignore[method-assign]
        loop.add_signal_handler(signal.SIGINT, stop.set)
        serving = asyncio.ensure_future(runner.start())
        waiting = asyncio.ensure_future(stop.wait())
        await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if not serving.done():
            if runner.started:
                await runner.astop()
            try:
                await asyncio.wait_for(serving, timeout=30)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                serving.cancel()
        waiting.cancel()
        serving.result() if serving.done() and not serving.cancelled() else None

    asyncio.run(main())


def deploy_campaign(config: str, *, pool: str, image: str | None = None) -> list[str]:
    """Register the campaign's deployments for work pool ``pool``. Returns their ids."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from labelloop.flows.locking import ensure_prefect_limit, prefect_limit_name

    cfg = load_config(config)
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            raise ValueError(f"work pool {pool!r} does not exist on {client.api_url}; create it first: "
                             f"prefect work-pool create {shlex.quote(pool)} --type process") from None
    if cfg.lock.backend in ("prefect", "both"):
        ensure_prefect_limit(prefect_limit_name(cfg.name))
    ids = [str(d.apply(work_pool_name=pool, image=image)) for d in build_deployments(config, cfg, work_pool=pool)]
    return ids


def prefect_yaml_env(config: str) -> dict[str, str]:
    """The environment variables ``prefect.yaml`` reads, for ``prefect deploy --all``."""
    cfg = load_config(config)
    s = cfg.schedule
    if s.round_interval_seconds or s.drift_interval_seconds:
        raise ValueError("prefect.yaml takes cron schedules only; use `labelloop deploy` for *_interval_seconds")
    return {
        "LABELLOOP_CAMPAIGN": cfg.name,
        "LABELLOOP_CONFIG": str(Path(config).resolve()),
        "LABELLOOP_ROUND_CRON": s.round_cron or "0 0 1 1 *",
        "LABELLOOP_ROUND_SCHEDULE_ACTIVE": "true" if s.round_cron else "false",
        "LABELLOOP_DRIFT_CRON": s.drift_cron or "0 0 1 1 *",
        "LABELLOOP_DRIFT_SCHEDULE_ACTIVE": "true" if s.drift_cron else "false",
        "LABELLOOP_TIMEZONE": s.timezone,
        "LABELLOOP_STREAM_CRON": stream_cron(cfg.stream.interval_seconds or 300),
        "LABELLOOP_STREAM_SCHEDULE_ACTIVE": "true" if stream_interval(cfg) else "false",
    }


def stream_cron(seconds: int) -> str:
    """``[stream] interval_seconds`` as the nearest cron schedule, for ``prefect.yaml`` (whose schedules can
    only take a templated cron string: an interval is validated before the variables are filled in).
    Rounded to whole minutes (at least one), or whole hours from an hour on."""
    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        return f"*/{minutes} * * * *"
    hours = round(minutes / 60)
    return f"0 */{hours} * * *" if hours < 24 else "0 0 * * *"
