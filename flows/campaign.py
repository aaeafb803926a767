"""The campaign flow: set up, then run rounds until every arm stops.

Why rounds are subflows: each shows up as its own flow run in the Prefect UI
with its own state, so a failed round is visible and can be re-run alone
(``labelloop round CONFIG``) without repeating the ones before it.
"""

from __future__ import annotations

from prefect import flow

from flows.round import campaign_finished, next_round_no, round_flow
from flows.runtime import open_campaign
from flows.setup import ensure_setup


@flow(name="labelloop-campaign", log_prints=True)
def campaign_flow(config: str, max_rounds: int | None = None) -> list[dict]:
    """Run rounds until the budget is spent, the target is reached or ``max_rounds`` more rounds ran."""
    c = open_campaign(config)
    ensure_setup(c)
    summaries: list[dict] = []
    limit = max_rounds if max_rounds is not None else c.cfg.budget.max_rounds
    for _ in range(limit):
        if campaign_finished(c):
            break
        no = next_round_no(c)
        summaries.append(round_flow(config, no))
    return summaries
