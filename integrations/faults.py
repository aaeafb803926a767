"""Named fault points for fault-injection tests.

Why in the product code: "a round can be killed anywhere and re-run" is a
claim only a real ``kill -9`` at a real stage boundary can test. When the
environment variable ``LABELLOOP_KILL_AT`` names a checkpoint, the process
SIGKILLs itself there: no cleanup, no ``finally``, exactly like a crash.

``LABELLOOP_PAUSE_AT`` (with ``LABELLOOP_PAUSE_DIR``) holds the process at a
checkpoint instead: it writes ``<dir>/paused-<name>`` and waits until
``<dir>/resume`` exists, so a test can restart a service (Label Studio in the
middle of a paged pull) while the round is between two requests.

Unset (always, in normal use) a checkpoint costs two dictionary lookups.

Why in integrations/: the adapters (Label Studio's paged pull and chunked import) and the
flows both mark checkpoints, and an adapter must not import a flow module.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

PAUSE_LIMIT_SECONDS = 600.0


def checkpoint(name: str) -> None:
    if os.environ.get("LABELLOOP_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("LABELLOOP_PAUSE_AT") == name:
        _pause(name, Path(os.environ["LABELLOOP_PAUSE_DIR"]))


def _pause(name: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"paused-{name}").write_text(str(os.getpid()), encoding="utf-8")
    deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
    while not (folder / "resume").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"fault point {name!r}: nobody resumed within {PAUSE_LIMIT_SECONDS:.0f}s")
        time.sleep(0.2)
    os.environ.pop("LABELLOOP_PAUSE_AT", None)  # once: later pages run through
