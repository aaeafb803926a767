"""Where a campaign stands, read from the ledger: the next round, the curves, the drift boost.

Why a module of its own, free of Prefect: the round and reopen flows use these, and so do the
read-only commands (``labelloop status``), which must answer in a second or two without
importing Prefect or scikit-learn. The decisions themselves are tasks/policy.py; this module
reads what they need from the ledger (the drift boost, last round's random-ahead check).
"""

from __future__ import annotations

import json
from typing import Any

from labelloop.flows.runtime import Campaign
from labelloop.tasks.policy import Boost, QueryPolicy, StopPolicy, random_share, stop_still_holds

BOOST_KEY = "reopen_boost"
EPISODES_KEY = "drift_episodes"


def reopen_boost(c: Campaign, round_no: int) -> dict[str, Any] | None:
    """The drift boost active for ``round_no`` (``episode``, ``share``, ``first_round``, ``rounds``), or None."""
    boost = drift_boost(c)
    return boost.__dict__.copy() if boost is not None and boost.covers(round_no) else None


def drift_boost(c: Campaign) -> Boost | None:
    """The latest drift reopen's boost as stored in the ledger (whatever rounds it covers), or None."""
    raw = c.ledger.get_meta(BOOST_KEY)
    if not raw:
        return None
    try:
        b = json.loads(raw)
        return Boost(episode=str(b["episode"]), share=float(b["share"]), first_round=int(b["first_round"]),
                     rounds=int(b["rounds"]))
    except (ValueError, KeyError, TypeError):
        return None


def effective_random_share(c: Campaign, round_no: int) -> float:
    """The random share of the active arm's batch in ``round_no`` from ``[query] random_share`` and a
    drift reopen alone (``[drift] reopen_random_share`` for ``reopen_rounds`` rounds), without the guard."""
    return random_share(QueryPolicy.from_config(c.cfg.query), "active", round_no, boost=drift_boost(c))[0]


def episodes(c: Campaign) -> list[dict[str, Any]]:
    raw = c.ledger.get_meta(EPISODES_KEY)
    try:
        return list(json.loads(raw)) if raw else []
    except ValueError:
        return []


def macro_f1_ci(metrics: dict) -> list[float] | None:
    """``[low, high]`` of a round's test macro-F1 95 % bootstrap interval, or None when not measured."""
    lo, hi = metrics.get("test_macro_f1_ci_low"), metrics.get("test_macro_f1_ci_high")
    if lo is None or hi is None or lo != lo or hi != hi:
        return None
    return [round(float(lo), 4), round(float(hi), 4)]


def learning_curves(c: Campaign, *, with_ci: bool = False) -> dict[str, list[tuple]]:
    """Each arm's ``(labels, test macro-F1)`` per finished round; ``with_ci`` appends the 95 % interval
    (NaN for rounds logged before intervals existed) for the plot and the results table."""
    curves: dict[str, list[tuple]] = {}
    for r in c.ledger.list_rounds():
        if r.status in ("done", "stopped") and "test_macro_f1" in r.metrics:
            pt: tuple = (int(r.n_labels or 0), float(r.metrics["test_macro_f1"]))
            if with_ci:
                pt += (float(r.metrics.get("test_macro_f1_ci_low", float("nan"))),
                       float(r.metrics.get("test_macro_f1_ci_high", float("nan"))))
            curves.setdefault(r.arm, []).append(pt)
    return curves


def random_ahead_fired_before(c: Campaign, round_no: int) -> bool:
    """Whether the active arm's previous round recorded its ``random_ahead`` health check as fired."""
    prev = next((r for r in c.ledger.list_rounds(arm="active") if r.round_no == round_no - 1), None)
    return prev is not None and (prev.metrics or {}).get("health_random_ahead_fired") == 1.0


def active_random_share(c: Campaign, round_no: int) -> tuple[float, str | None]:
    """The active arm's random share this round, and why it is above ``[query] random_share`` (or None):
    :func:`tasks.policy.random_share` on the drift boost and last round's health check in the ledger."""
    return random_share(QueryPolicy.from_config(c.cfg.query), "active", round_no, boost=drift_boost(c),
                        random_ahead_fired=random_ahead_fired_before(c, round_no))


def next_round_no(c: Campaign) -> int:
    """The first round some arm has not finished (a killed round is resumed, not skipped)."""
    rounds = c.ledger.list_rounds()
    if not rounds:
        return 1
    by_no: dict[int, list[str]] = {}
    for r in rounds:
        by_no.setdefault(r.round_no, []).append(r.status)
    for no in sorted(by_no):
        if len(by_no[no]) < len(c.cfg.arms) or any(s not in ("done", "stopped") for s in by_no[no]):
            return no
    return max(by_no) + 1


def campaign_finished(c: Campaign) -> bool:
    """Every arm's latest round says it stopped, for a reason that still holds under today's config
    (:func:`tasks.policy.stop_still_holds`: a raised budget, round cap or target reopens the campaign
    for `run`, `round` and the schedule alike)."""
    latest: dict[str, Any] = {}
    for r in c.ledger.list_rounds():
        latest[r.arm] = r
    if not latest or not all(a in latest and latest[a].status == "stopped" for a in c.cfg.arms):
        return False
    stop = StopPolicy.from_config(c.cfg.budget)
    return all(stop_still_holds(stop, (latest[a].notes or [""])[-1], round_no=latest[a].round_no,
                                spent=len(c.ledger.queries_frame(arm=a)),
                                macro_f1=latest[a].metrics.get("test_macro_f1")) for a in c.cfg.arms)
