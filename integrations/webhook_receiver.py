"""A small HTTP receiver for Label Studio's webhooks.

Why a receiver of our own: Label Studio can call a URL after every annotation; that is how
"the batch is answered" becomes known within seconds instead of at the next cron tick. The
receiver does nothing but note *which campaign* changed and wake the caller's checker; the
check itself (is the open batch complete?) reads Label Studio and the ledger, so a lost, late,
duplicated or forged call can at worst cause one extra check, never a wrong round.

Label Studio posts JSON to ``<base>/label-studio/<campaign>``; the receiver wakes the
campaign's checker (``on_call`` must not block) and answers 204 at once (Label Studio waits
for the answer inside the annotator's request, one second at most).
``GET /health`` answers 200. Any other path is 404; a body is never parsed beyond JSON
(unknown campaigns are 404 too). Standard library only (``http.server``), one daemon thread.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable
from urllib.parse import quote, unquote

log = logging.getLogger(__name__)

PATH_PREFIX = "/label-studio/"
MAX_BODY = 5_000_000  # a bulk ANNOTATIONS_CREATED payload can be large; beyond this it is not read


def campaign_path(campaign: str) -> str:
    """The path Label Studio calls for ``campaign``."""
    return PATH_PREFIX + quote(campaign, safe="")


class WebhookReceiver:
    """Listen on ``host:port`` (0: a free port) and call ``on_call(campaign, action)`` per accepted call."""

    def __init__(self, host: str, port: int, campaigns: Iterable[str],
                 on_call: Callable[[str, str], None]) -> None:
        self.campaigns = set(campaigns)
        self.on_call = on_call
        self.calls = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:  # quiet: one debug line per call
                log.debug("webhook receiver: " + fmt, *args)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._answer(200 if self.path == "/health" else 404)

            def do_POST(self) -> None:  # noqa: N802
                campaign = unquote(self.path[len(PATH_PREFIX):]).rstrip("/") if self.path.startswith(PATH_PREFIX) else None
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if 0 < length <= MAX_BODY else b""
                if campaign not in receiver.campaigns:
                    self._answer(404)
                    return
                try:
                    action = str(json.loads(body or b"{}").get("action", "?"))
                except (ValueError, AttributeError):
                    action = "?"
                receiver.calls += 1
                try:  # the callback only wakes a checker (no I/O), so Label Studio is answered at once
                    receiver.on_call(campaign, action)
                except Exception:  # noqa: BLE001 - a failing callback must not break the receiver
                    log.exception("webhook callback for campaign %s failed", campaign)
                self._answer(204)

            def _answer(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name="labelloop-webhooks", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


__all__ = ["PATH_PREFIX", "WebhookReceiver", "campaign_path"]
