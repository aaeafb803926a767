"""What reaches the terminal: each message once, tracebacks only behind ``--verbose``.

Why: when a flow fails, Prefect logs the failure of the task, then of the flow (each with
a traceback), and then the CLI prints its own line: the same error three or four times.
By default the terminal shows the CLI's one line; Prefect's task and flow failure records
(and every INFO record) still reach Prefect's run logs (the API handler sits on the run
loggers, before the console handler), where the UI shows them. ``--verbose`` shows
everything Prefect would. ``print`` inside a flow with ``log_prints`` becomes a log
record; those are echoed as plain lines, so progress printed by flows is seen once,
without Prefect's prefix.

This module imports nothing heavy: :func:`configure_prefect_console` imports Prefect, and
only the commands that orchestrate call it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from typing import Any, Iterator

_PREFECT_DIR = ["\0"]  # set when Prefect is configured; records from code outside it are labelloop's
_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.flow_engine", "prefect.task_engine",
                "prefect.engine")


def _ephemeral_event_noise(record: logging.LogRecord) -> bool:
    """Prefect 3.8's event-worker failures on a temporary API (they mean nothing there), and its
    "Still processing items" while the event queue drains at exit (the events are sent all the same)."""
    msg = str(record.msg)
    return (msg.startswith("Service %r failed with") and "EventsWorker" in str(record.args)
            or msg.startswith("Error emitting event: prefect.flow-run.heartbeat")
            or record.name.endswith("Worker") and msg.startswith("Still processing items"))


class _Terse(logging.Filter):
    """Console filter for the default (not ``--verbose``) mode; see the module docstring."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.name.startswith(_RUN_LOGGERS) \
                and not record.pathname.startswith(_PREFECT_DIR[0]):
            # labelloop's own run-logger lines and print() in a flow with log_prints (Prefect logs those
            # with the caller's frame): shown plainly, once, without Prefect's prefix
            say(record.getMessage())
            return False
        if record.levelno < logging.WARNING or _ephemeral_event_noise(record):
            return False
        if record.levelno >= logging.ERROR and record.name.startswith(_RUN_LOGGERS):
            return False  # task/flow failure: kept in the run logs; the CLI prints the error once
        if record.exc_info:
            record.exc_info, record.exc_text = None, None  # the API handler (earlier in the chain) has it
        return True


def configure_prefect_console(verbose: bool) -> None:
    """Attach the console filter to Prefect's console handlers (idempotent). Imports Prefect."""
    import prefect.main  # noqa: F401 - Prefect configures its logging handlers here

    import prefect

    _PREFECT_DIR[0] = os.path.dirname(prefect.__file__)
    if verbose:
        return
    for name in ("prefect.flow_runs", "prefect.task_runs"):  # INFO reaches the run logs and the filter below
        logging.getLogger(name).setLevel(logging.INFO)
    names = [n for n in logging.root.manager.loggerDict if n.startswith("prefect")] + [""]
    for name in names:
        for h in getattr(logging.getLogger(name), "handlers", []):
            if h.__class__.__name__ in ("PrefectConsoleHandler", "_SafeStreamHandler", "StreamHandler") \
                    and not any(isinstance(f, _Terse) for f in h.filters):
                h.addFilter(_Terse())


class _WarningsUp(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


_NOISY = ("great_expectations", "great_expectations.data_context.types.base", "mlflow", "alembic", "urllib3",
          "httpx")


def quiet_third_party() -> None:
    """No INFO lines from libraries (Great Expectations, MLflow, alembic) on the terminal.

    A filter on the logger, not only a level: Great Expectations sets its docs-site logger to
    INFO when imported ("Created temporary directory ... for ephemeral docs site"), after us.
    """
    for name in _NOISY:
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        if not any(isinstance(f, _WarningsUp) for f in logger.filters):
            logger.addFilter(_WarningsUp())


_LAST_OUTPUT = [time.monotonic()]


@contextlib.contextmanager
def heartbeat(what: str, every: float = 10.0) -> Iterator[None]:
    """While the block runs, write ``... <what> (N s)`` to stdout whenever nothing was said for ``every`` s.

    Why: a round, a set-up on a large pool or the demo can be silent for a minute (fitting,
    scoring, MLflow writes); the person at the terminal should see it is alive at least every
    ten seconds. On stdout with the other progress lines, so stderr keeps only the error (one
    line); ``simulate --json`` sends its progress to stderr for the duration.
    """
    done = threading.Event()
    t0 = time.monotonic()

    def beat() -> None:
        while not done.wait(1.0):
            if time.monotonic() - _LAST_OUTPUT[0] >= every - 1.0:
                sys.stdout.write(f"... {what} ({time.monotonic() - t0:.0f}s)\n")
                sys.stdout.flush()
                _LAST_OUTPUT[0] = time.monotonic()

    thread = threading.Thread(target=beat, name="labelloop-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=2)


class Progress:
    """Progress of one long piece of work: a Rich bar on a terminal, plain lines otherwise.

    Why this shape (issue 18, "progress on long work"): ingest, embedding and pool scoring on
    a large campaign, and ``simulate``, run for minutes. On a terminal (stderr is a TTY) a
    Rich bar on stderr shows it (Rich's console leaves colour out under ``NO_COLOR``); in a
    log or a pipe a bar's redraws would be noise, so a plain ``... <what>: done/total`` line
    goes out through :func:`say` at most every ``every`` seconds. Nothing at all is shown for
    work that ends within ``after`` seconds, so quick commands print no extra line.
    """

    def __init__(self, what: str, total: int, unit: str = "", *, after: float = 2.0, every: float = 10.0) -> None:
        self.what, self.total, self.unit = what, max(int(total), 0), unit
        self.done = 0
        self._after, self._every = after, every
        self._t0 = self._last = time.monotonic()
        self._bar: Any = None
        self._task: Any = None
        self._tty = _stderr_is_tty()

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units done; draws or writes only when the work has lasted long enough."""
        self.done = min(self.done + int(n), self.total) if self.total else self.done + int(n)
        now = time.monotonic()
        if now - self._t0 < self._after:
            return
        if self._tty:
            if self._bar is None:
                self._start_bar()
            self._bar.update(self._task, completed=self.done)
        elif now - self._last >= self._every or (self._last == self._t0 and self.done < self.total):
            self._last = now
            say(self.line(now))

    def line(self, now: float | None = None) -> str:
        """The plain progress line (also what a test reads)."""
        elapsed = (now if now is not None else time.monotonic()) - self._t0
        of = f"/{self.total:,}" if self.total else ""
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        unit = f" {self.unit}" if self.unit else ""
        return f"... {self.what}: {self.done:,}{of}{unit}{pct}, {elapsed:.0f}s"

    def _start_bar(self) -> None:
        # One Rich display for the process: progress inside progress (the MiniLM featuriser embedding
        # while the pool is scored) is a second line of the same display; Rich allows one live display.
        with _BAR_LOCK:
            if _BAR["display"] is None:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
                    TimeElapsedColumn

                _BAR["display"] = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                               TimeElapsedColumn(), console=Console(stderr=True), transient=True)
                _BAR["display"].start()
            _BAR["users"] += 1
            self._bar = _BAR["display"]
            self._task = self._bar.add_task(self.what, total=self.total or None, completed=self.done)

    def close(self) -> None:
        if self._bar is None:
            return
        with _BAR_LOCK:
            self._bar.remove_task(self._task)
            _BAR["users"] -= 1
            if _BAR["users"] <= 0:
                self._bar.stop()
                _BAR.update(display=None, users=0)
            self._bar = None


_BAR: dict[str, Any] = {"display": None, "users": 0}  # the process's Rich progress display, while one is shown
_BAR_LOCK = threading.Lock()


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def progress(what: str, total: int, unit: str = "", *, after: float = 2.0, every: float = 10.0) -> Iterator[Progress]:
    """``with progress("scoring the pool", n, "texts") as p: ... p.advance(k)`` (see :class:`Progress`)."""
    p = Progress(what, total, unit, after=after, every=every)
    try:
        yield p
    finally:
        p.close()


def say(msg: str, end: str = "\n") -> None:
    """A line for the person at the terminal (progress, summaries), on stdout.

    Written directly, not via ``print``: inside a flow with Prefect's ``log_prints`` a print
    becomes a log record.
    """
    sys.stdout.write(msg + end)
    sys.stdout.flush()
    _LAST_OUTPUT[0] = time.monotonic()
