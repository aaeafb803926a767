"""The campaign flow: set up, then run rounds until every arm stops.

Why rounds are subflows: each shows up as its own flow run in the Prefect UI
with its own state, so a failed round is visible and can be re-run alone
(``labelloop round CONFIG``) without repeating the ones before it.

Why it polls: with real people the next round can only train once the open
batch is answered. A round that finds too little returns ``state="waiting"``
without using up a round number; the campaign then asks the backend again
every ``poll_interval`` seconds (printing what it waits for when that
changes) until ``wait_timeout`` has passed, and then returns the waiting
summary so the CLI exits 3 ("waiting for annotations", run it again later).
"""

from __future__ import annotations

import time

from prefect import flow

from labelloop.flows.logs import say
from labelloop.flows.campaign_state import campaign_finished, next_round_no
from labelloop.flows.round import round_flow, settle
from labelloop.flows.runtime import open_campaign
from labelloop.flows.setup import ensure_setup


@flow(name="labelloop-campaign", log_prints=True)
def campaign_flow(config: str, max_rounds: int | None = None, poll_interval: float | None = None,
                  wait_timeout: float | None = None) -> list[dict]:
    """Run rounds until the budget is spent, the target is reached or ``max_rounds`` more rounds ran.

    ``poll_interval`` / ``wait_timeout`` (seconds) default to ``[run]`` in the config; a
    ``wait_timeout`` of 0 returns at the first wait.
    """
    c = open_campaign(config)
    ensure_setup(c)
    interval = c.cfg.run.poll_interval_seconds if poll_interval is None else float(poll_interval)
    timeout = c.cfg.run.wait_timeout_seconds if wait_timeout is None else float(wait_timeout)
    summaries: list[dict] = []
    limit = max_rounds if max_rounds is not None else c.cfg.budget.max_rounds
    ran = 0
    waited_since: float | None = None
    last_line = ""
    while ran < limit and not campaign_finished(c):
        summary = round_flow(config, next_round_no(c))
        if summary.get("state") != "waiting":
            summaries.append(summary)
            ran += 1
            waited_since, last_line = None, ""
            continue
        now = time.monotonic()
        waited_since = now if waited_since is None else waited_since
        left = timeout - (now - waited_since)
        if left <= 0:
            summaries.append(summary)  # the CLI reports it and exits 3
            break
        line = summary["waiting_for"]
        if line != last_line:  # progress when the count moves, not a line per poll
            say(f"{line}; checking every {interval:g} s (gives up after {timeout:g} s)")
            last_line = line
        time.sleep(min(interval, max(left, 0.0)))
    if campaign_finished(c):
        m = settle(c)  # late and extra answers of the last batch still count (export, status)
        if m:
            say(f"campaign finished: {int(m.get('n_trusted', 0))} trusted labels, {int(m.get('n_needs_more', 0))} "
                f"waiting for an extra answer, {int(m.get('n_adjudication_queue', 0))} awaiting adjudication")
    return summaries
