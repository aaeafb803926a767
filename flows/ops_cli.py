"""CLI subcommands for operations (serve, deploy, drift checks, alerts).

Kept apart from flows/cli.py so the operations work can grow without touching
the core commands. ``register`` adds its subparsers to the main parser.

    labelloop serve CONFIG [CONFIG ...]      scheduled rounds + drift check + reopen trigger, one process
    labelloop deploy CONFIG --pool NAME      the same deployments for a work pool (team set-up)
    labelloop drift-check CONFIG [--arrivals PATH]
    labelloop drift-alert CONFIG --reason TEXT [--arrivals PATH] [--score NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def cmd_serve(a: argparse.Namespace) -> int:
    from flows.deploy import serve_campaigns

    url = _api_url()
    if not url:
        print("warning: PREFECT_API_URL is not set, so this serves against a temporary local API that lives only "
              "as long as this process; `labelloop drift-alert` from another process cannot reach it. For a "
              "lasting set-up: infra/prefect_server.sh start, then export PREFECT_API_URL=http://127.0.0.1:4200/api",
              file=sys.stderr)
    else:
        print(f"serving on the Prefect API at {url} (Ctrl-C stops; the schedules pause until the next serve)")
    serve_campaigns([str(Path(c).resolve()) for c in a.config], limit=a.limit)
    return 0


def cmd_deploy(a: argparse.Namespace) -> int:
    from flows.config import load_config
    from flows.deploy import deploy_campaign, deployment_names, describe, prefect_yaml_env

    if a.print_env:
        for k, v in prefect_yaml_env(a.config).items():
            print(f"export {k}={json.dumps(v)}")
        return 0
    if not a.pool:
        print("error: --pool NAME is required (or --print-env for prefect.yaml)", file=sys.stderr)
        return 2
    if not _api_url():
        print("error: `labelloop deploy` registers deployments on a Prefect server: set PREFECT_API_URL "
              "(e.g. http://127.0.0.1:4200/api after infra/prefect_server.sh start)", file=sys.stderr)
        return 2
    cfg = load_config(a.config)
    deploy_campaign(a.config, pool=a.pool, image=a.image)
    names = deployment_names(cfg.name)
    print(f"registered the deployments of campaign {cfg.name} for work pool {a.pool!r}:\n{describe(cfg)}")
    print(f"start a worker where labelloop is installed:  prefect worker start --pool {a.pool}")
    print(f"run a round now:                             prefect deployment run '{names['round']}'")
    return 0


def cmd_drift_check(a: argparse.Namespace) -> int:
    from flows.drift import drain_events, drift_check_flow

    arrivals = str(Path(a.arrivals).resolve()) if a.arrivals else None
    result = drift_check_flow(str(Path(a.config).resolve()), arrivals)
    drain_events()
    if a.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    sc = ", ".join(f"{k}={v:.3f}" for k, v in (result.get("scores") or {}).items() if v is not None)
    if result.get("drifted"):
        print(f"DRIFT: {'; '.join(result['fired'])}; emitted labelloop.drift.detected "
              f"(episode {result['episode']}, {result['n_new']} new items)")
    else:
        print(f"no drift: {result.get('status')}" + (f" ({sc})" if sc else ""))
    if result.get("mlflow_run_id"):
        print(f"MLflow run {result['mlflow_run_id']} (tag labelloop.kind = drift)")
    return 0


def cmd_drift_alert(a: argparse.Namespace) -> int:
    from flows.drift import DRIFT_EVENT, drain_events, emit_drift_event, episode_id, resource_id
    from flows.runtime import open_campaign

    if not _api_url():
        print("error: drift-alert sends a Prefect event to the server your deployments run on: set "
              "PREFECT_API_URL (the same one `labelloop serve` uses)", file=sys.stderr)
        return 2
    scores: dict[str, float] = {}
    for item in a.score or []:
        name, sep, value = item.partition("=")
        try:
            scores[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            print(f"error: --score takes NAME=NUMBER, got {item!r}", file=sys.stderr)
            return 2
    c = open_campaign(a.config)
    path = Path(a.arrivals).resolve() if a.arrivals else c.cfg.arrivals_path
    episode = episode_id(c, path) if path is not None else None
    ev = emit_drift_event(c.name, arrivals=str(path) if path else None, scores=scores, episode=episode,
                          reason=a.reason, source="drift-alert")
    drain_events()
    print(f"emitted {DRIFT_EVENT} for {resource_id(c.name)} (event {getattr(ev, 'id', '?')}; "
          f"episode {episode or 'from the event id'}; arrivals {path or 'none'})")
    return 0


def register(sub: "argparse._SubParsersAction") -> None:
    s = sub.add_parser("serve", help="serve a campaign's deployments: scheduled rounds, drift check, reopen on drift")
    s.add_argument("config", nargs="+", help="one or more campaign configs")
    s.add_argument("--limit", type=int, default=None, help="at most this many flow runs at once")
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("deploy", help="register a campaign's deployments for a Prefect work pool")
    s.add_argument("config")
    s.add_argument("--pool", help="work pool name (create it first: prefect work-pool create NAME --type process)")
    s.add_argument("--image", default=None, help="container image for Docker/Kubernetes work pools")
    s.add_argument("--print-env", action="store_true",
                   help="print the variables prefect.yaml reads (for `prefect deploy --all`) and exit")
    s.set_defaults(fn=cmd_deploy)

    s = sub.add_parser("drift-check", help="compare new arrivals with the reference data; emit an event on drift")
    s.add_argument("config")
    s.add_argument("--arrivals", default=None, help="file or folder (default: [drift] arrivals)")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.set_defaults(fn=cmd_drift_check)

    s = sub.add_parser("drift-alert", help="emit labelloop.drift.detected from outside (external monitoring)")
    s.add_argument("config")
    s.add_argument("--reason", required=True, help="why (kept in the event and the reopen's record)")
    s.add_argument("--arrivals", default=None, help="file or folder of new data (default: [drift] arrivals)")
    s.add_argument("--score", action="append", metavar="NAME=VALUE", help="a score to include (repeatable)")
    s.set_defaults(fn=cmd_drift_alert)

