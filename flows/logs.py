"""Keep Prefect's console output to one clear line for errors labelloop explains itself.

Why: when a flow fails on bad input, Prefect logs the exception with a full
traceback to the console before the CLI can print its own message. For our
own error types (bad config, bad data, a backend that is down) the message
already says what was wrong and where; the traceback only buries it. Other
exceptions keep their traceback: those are bugs and need it.
"""

from __future__ import annotations

import logging


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

    flt = _KnownErrorFilter(known)
    names = [n for n in logging.root.manager.loggerDict if n.startswith("prefect")] + [""]
    for name in names:
        logger = logging.getLogger(name)
        for h in getattr(logger, "handlers", []):
            if not any(isinstance(f, _KnownErrorFilter) for f in h.filters):
                h.addFilter(flt)
