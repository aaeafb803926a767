"""Deployments of a campaign: scheduled rounds, the drift check, the drift-triggered reopen.

Two ways to run them, same three deployments (named after the campaign):

* ``labelloop serve CONFIG [CONFIG ...]`` — one long-running process on one
  machine (``prefect.serve``): it registers the deployments with the Prefect
  API and runs their flow runs as subprocesses. Nothing else to install.
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

import shlex
from datetime import timedelta
from pathlib import Path
from typing import Any

from flows.config import CampaignConfig, load_config
from flows.drift import DRIFT_EVENT, resource_id

ROUND_FLOW, DRIFT_FLOW, REOPEN_FLOW = "labelloop-round", "labelloop-drift-check", "labelloop-reopen"
REPO_ROOT = Path(__file__).resolve().parents[1]


def deployment_names(campaign: str) -> dict[str, str]:
    return {"round": f"{ROUND_FLOW}/{campaign}", "drift": f"{DRIFT_FLOW}/{campaign}",
            "reopen": f"{REOPEN_FLOW}/{campaign}"}


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
    """The three RunnerDeployments of one campaign (for ``serve`` or ``apply``)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.events import DeploymentEventTrigger

    from flows.drift import drift_check_flow
    from flows.reopen import reopen_flow
    from flows.round import round_flow

    config_path = str(Path(config).resolve())
    cfg = cfg or load_config(config_path)
    s = cfg.schedule
    one_enqueued = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    one_cancel = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
    common: dict[str, Any] = {"name": cfg.name, "entrypoint_type": EntrypointType.MODULE_PATH,
                              "tags": ["labelloop", f"campaign:{cfg.name}"]}
    if work_pool:
        common["work_pool_name"] = work_pool
    from flows.batch_trigger import BATCH_EVENT

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
    ]


def describe(cfg: CampaignConfig) -> str:
    s = cfg.schedule
    rnd = f"every {s.round_interval_seconds}s" if s.round_interval_seconds else (
        f"cron '{s.round_cron}' ({s.timezone})" if s.round_cron else "no schedule")
    drf = f"every {s.drift_interval_seconds}s" if s.drift_interval_seconds else (
        f"cron '{s.drift_cron}' ({s.timezone})" if s.drift_cron else "no schedule")
    n = deployment_names(cfg.name)
    from flows.batch_trigger import BATCH_EVENT

    rnd += f"; on event {BATCH_EVENT}"
    return (f"  {n['round']:<40} {rnd}\n  {n['drift']:<40} {drf}\n"
            f"  {n['reopen']:<40} on event {DRIFT_EVENT} (resource {resource_id(cfg.name)})")


def serve_campaigns(configs: list[str], *, limit: int | None = None) -> None:
    """Serve every deployment of the given campaigns from this process (blocks until interrupted)."""
    from flows.locking import ensure_prefect_limit, prefect_limit_name

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
    from flows.batch_trigger import start_batch_triggers

    stops: list[Any] = []
    try:  # webhooks + polling -> labelloop.batch.completed, once the deployments (and automations) exist
        _serve_until_signal(deployments, limit=limit, on_registered=lambda: stops.append(start_batch_triggers(configs)))
    finally:
        for stop in stops:
            stop()


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

    from flows.locking import ensure_prefect_limit, prefect_limit_name

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
    }
