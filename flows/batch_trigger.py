"""A round as soon as the open batch is answered: Label Studio webhooks, a polling check, a Prefect event.

Why: annotation teams work in bursts. With rounds on a cron, a batch answered at 10:00 waits
for tomorrow's 06:00 round and the team sits idle. ``labelloop serve`` therefore watches each
campaign's open batch and, the moment it is answered (every item has its overlap, or
``[run] batch_ready_share`` of them: the same rule a round applies, :mod:`tasks.readiness`),
emits the Prefect event ``labelloop.batch.completed`` for the campaign. The round deployment
has an automation on that event (declared here for ``serve`` / ``deploy`` and in
``prefect.yaml``), so Prefect starts the round; the round's own lock and the deployment's
concurrency limit keep it one round at a time, and the round checks readiness again itself.

A check runs when serving starts (a batch answered meanwhile is found at once), then two
ways, per campaign (a :class:`BatchWatcher` thread):

* **webhook**: Label Studio calls the receiver (:mod:`integrations.webhook_receiver`) after
  every annotation, with the campaign's shared secret in a header (calls without it get 401);
  the check runs a second later (calls in a burst are checked once).
* **poll**: every ``[schedule] batch_poll_seconds`` anyway -- the fallback when Label
  Studio cannot reach the receiver (another machine, SSRF protection, a firewall).

A check reads Label Studio's answers (not the ledger: no round has pulled them yet) and the
latest trust decision; it writes nothing. An event is emitted once per open batch (again
after ``retry_seconds`` if no round has picked it up, e.g. the round failed); nothing is
emitted while the round that trains on the batch is already in the ledger, or once the
campaign has finished.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from labelloop.flows.config import CampaignConfig, batch_trigger_enabled, load_config
from labelloop.flows.drift import resource_id
from labelloop.tasks.readiness import Readiness, batch_name

log = logging.getLogger(__name__)

BATCH_EVENT = "labelloop.batch.completed"


def trigger_enabled(cfg: CampaignConfig) -> bool:
    """Whether ``serve`` starts rounds on a completed batch (unset: with the Label Studio backend only)."""
    return batch_trigger_enabled(cfg)


def backend_answers(c: Any) -> dict[str, int]:
    """item -> the answers readiness counts, as the backend has them now: distinct annotators' submitted
    answers, and enough for an item nobody is left to answer (everyone answered or skipped it), as the
    round counts them (:func:`flows.trust.answers_for_readiness`), so the trigger fires when the round would run."""
    import pandas as pd

    from labelloop.flows.round import trust_need
    from labelloop.flows.trust import answers_for_readiness

    rows = pd.DataFrame([(str(a.item_id), a.annotator, a.status) for a in c.backend.pull()],
                        columns=["item_id", "annotator", "status"])
    return answers_for_readiness(rows, trust_need(c))


def check_open_batch(c: Any) -> Readiness | None:
    """The open batch's readiness from the backend's answers now; None when there is nothing to
    trigger (not set up, finished, or the round for this batch already started)."""
    from labelloop.flows.campaign_state import campaign_finished
    from labelloop.flows.round import open_batch_readiness

    if c.ledger.get_meta("setup_done") != "1" or campaign_finished(c):
        return None
    ready = open_batch_readiness(c, None, answers=backend_answers(c))
    if ready.batch is None or c.ledger.list_rounds(round_no=ready.batch + 1):
        return None  # nothing pushed yet, or the round that trains on this batch is already running / done
    return ready


def emit_batch_completed(campaign: str, ready: Readiness, source: str) -> Any:
    """Emit ``labelloop.batch.completed`` for ``campaign`` (the round deployment's trigger)."""
    from prefect.events import emit_event

    return emit_event(event=BATCH_EVENT,
                      resource={"prefect.resource.id": resource_id(campaign), "prefect.resource.name": campaign,
                                "labelloop.campaign": campaign},
                      payload={"campaign": campaign, "batch": ready.batch, "source": source,
                               "answered": ready.n_answered, "items": ready.n_items, "required": ready.n_required})


class BatchWatcher:
    """Checks one campaign's open batch on a webhook call (:meth:`poke`) and every ``poll_seconds``."""

    def __init__(self, config: str | Path, *, poll_seconds: float | None = None, retry_seconds: float = 300.0,
                 debounce_seconds: float = 1.0,
                 emit: Callable[[str, Readiness, str], Any] = emit_batch_completed) -> None:
        self.config = str(config)
        self.cfg = load_config(self.config)
        self.name = self.cfg.name
        self.poll_seconds = float(poll_seconds or self.cfg.schedule.batch_poll_seconds)
        self.retry_seconds = retry_seconds
        self.debounce_seconds = debounce_seconds
        self.emit = emit
        self.emitted: dict[int, float] = {}  # batch -> when its event went out (monotonic)
        self.webhook_calls = 0
        self._campaign: Any = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"labelloop-batch-{self.name}", daemon=True)

    def poke(self, action: str = "") -> None:
        """A webhook call: check soon."""
        self.webhook_calls += 1
        self._wake.set()

    def start(self) -> "BatchWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        source = "start"  # a batch answered while nothing was serving is found at once
        while not self._stop.is_set():
            if source != "start":
                woken = self._wake.wait(timeout=self.poll_seconds)
                if self._stop.is_set():
                    return
                if woken:
                    time.sleep(self.debounce_seconds)  # a burst of calls (bulk answers) is checked once
                source = "webhook" if woken else "poll"
            self._wake.clear()
            try:
                self.check(source)
            except Exception as err:  # noqa: BLE001 - Label Studio down, ledger busy: the next check retries
                log.warning("campaign %s: batch check failed (%s: %s); retrying in %.0f s",
                            self.name, type(err).__name__, str(err)[:300], self.poll_seconds)
            source = "poll"

    def check(self, source: str) -> Readiness | None:
        """Check now; emit the event when the open batch is answered. Returns the verdict (None: nothing to do)."""
        if self._campaign is None:
            from labelloop.flows.runtime import open_campaign

            self._campaign = open_campaign(self.cfg)
        ready = check_open_batch(self._campaign)
        if ready is None or not ready.ready or ready.batch is None:
            return ready
        sent = self.emitted.get(ready.batch)
        if sent is not None and time.monotonic() - sent < self.retry_seconds:
            return ready
        self.emit(self.name, ready, source)
        self.emitted[ready.batch] = time.monotonic()
        print(f"campaign {self.name}: {batch_name(ready.batch)} answered ({ready.n_answered} of {ready.n_items} "
              f"items, found by {source}): {BATCH_EVENT} emitted, a round follows", flush=True)
        return ready


def start_batch_triggers(configs: list[str]) -> Callable[[], None]:
    """Start a watcher per campaign that wants one, the webhook receivers they need, and register
    the Label Studio webhooks. Returns a function that stops them all."""
    from labelloop.integrations.backend import BackendError
    from labelloop.integrations.webhook_receiver import SECRET_HEADER, WebhookReceiver, campaign_path, webhook_secret

    watchers = [BatchWatcher(p) for p in configs if trigger_enabled(load_config(p))]
    receivers: list[WebhookReceiver] = []
    by_address: dict[tuple[str, int], list[BatchWatcher]] = {}
    for w in watchers:
        s = w.cfg.schedule
        if s.webhooks and w.cfg.annotation.backend == "label_studio":
            by_address.setdefault((s.webhook_host, s.webhook_port), []).append(w)
    for (host, port), group in by_address.items():
        named = {w.name: w for w in group}
        secret = {w.name: webhook_secret(w.cfg.workdir_path, w.cfg.schedule.webhook_secret_env) for w in group}
        receiver = WebhookReceiver(host, port, secret,
                                   lambda campaign, action: named[campaign].poke(action)).start()
        receivers.append(receiver)
        for w in group:
            base = (w.cfg.schedule.webhook_url or receiver.base_url).rstrip("/")
            url = base + campaign_path(w.name)
            try:
                from labelloop.flows.runtime import open_campaign

                open_campaign(w.cfg).backend.ensure_webhook(url, stale_suffix=campaign_path(w.name),
                                                            headers={SECRET_HEADER: secret[w.name]})
                print(f"campaign {w.name}: Label Studio calls {url} after each annotation; "
                      f"also checked every {w.poll_seconds:.0f} s", flush=True)
            except BackendError as err:
                print(f"campaign {w.name}: no Label Studio webhook ({err}); the open batch is checked every "
                      f"{w.poll_seconds:.0f} s instead", flush=True)
    for w in watchers:
        if w.name not in {x.name for g in by_address.values() for x in g}:
            print(f"campaign {w.name}: the open batch is checked every {w.poll_seconds:.0f} s", flush=True)
        w.start()

    def stop() -> None:
        for w in watchers:
            w.stop()
        for r in receivers:
            r.stop()

    return stop


__all__ = ["BATCH_EVENT", "BatchWatcher", "backend_answers", "check_open_batch", "emit_batch_completed",
           "start_batch_triggers", "trigger_enabled"]
