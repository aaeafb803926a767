"""Keep Prefect's console output to one clear line for errors labelloop explains itself.

Why: when a flow fails on bad input, Prefect logs the exception with a full
traceback to the console before the CLI can print its own message. For our
own error types (bad config, bad data, a backend that is down) the message
already says what was wrong and where; the traceback only buries it. Other
exceptions keep their traceback: those are bugs and need it.
"""

from __future__ import annotations

import logging
import sys


class _EphemeralEventNoise(logging.Filter):
    """Drop Prefect's event-worker failures on the temporary API (no ``PREFECT_API_URL``).

    Why: on Prefect 3.8's temporary in-process server the events worker stops at
    start-up ("Service 'EventsWorker' failed"), and the flow-run heartbeat then logs
    "Error emitting event" with a traceback, sometimes in the middle of our own
    one-line error. Events only matter to a real server (automations, the UI), and
    the temporary one is gone when the command ends, so nothing is lost by not
    showing it. With a real server these records are kept: there they mean something.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not (msg.startswith("Service %r failed with") and "EventsWorker" in str(record.args)
                    or msg.startswith("Error emitting event: prefect.flow-run.heartbeat"))


class _KnownErrorFilter(logging.Filter):
    def __init__(self, known: tuple[type[BaseException], ...]):
        super().__init__()
        self.known = known

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and isinstance(exc, self.known):
            record.msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_known_errors(known: tuple[type[BaseException], ...]) -> None:
    """Attach the filter to every handler of Prefect's loggers (idempotent)."""
    import prefect.logging.configuration  # noqa: F401 - make sure Prefect configured its handlers

    from prefect.settings import PREFECT_API_URL

    filters: list[logging.Filter] = [_KnownErrorFilter(known)]
    if not PREFECT_API_URL.value():
        filters.append(_EphemeralEventNoise())
    names = [n for n in logging.root.manager.loggerDict if n.startswith("prefect")] + [""]
    for name in names:
        logger = logging.getLogger(name)
        for h in getattr(logger, "handlers", []):
            for flt in filters:
                if not any(type(f) is type(flt) for f in h.filters):
                    h.addFilter(flt)


def say(msg: str, end: str = "\n") -> None:
    """A line for the person at the terminal (progress, summaries), on stdout.

    Written directly, not via ``print``: inside a flow with Prefect's ``log_prints`` a print
    becomes an INFO log record, which the CLI's ``PREFECT_LOGGING_LEVEL=WARNING`` swallows.
    """
    sys.stdout.write(msg + end)
    sys.stdout.flush()
