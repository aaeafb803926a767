"""Where a campaign stands, read from the ledger: the next round, the curves, the drift boost.

Why a module of its own, free of Prefect: the round and reopen flows use these, and so do the
read-only commands (``labelloop status``), which must answer in a second or two without
importing Prefect or scikit-learn. Moved here unchanged from flows/round.py and
flows/reopen.py, which re-export them.
"""

from __future__ import annotations

import json
from typing import Any

from flows.runtime import Campaign

BOOST_KEY = "reopen_boost"
EPISODES_KEY = "drift_episodes"


def reopen_boost(c: Campaign, round_no: int) -> dict[str, Any] | None:
    """The drift boost active for ``round_no`` (``episode``, ``share``, ``first_round``, ``rounds``), or None."""
    raw = c.ledger.get_meta(BOOST_KEY)
    if not raw:
        return None
    try:
        boost = json.loads(raw)
        first, n = int(boost["first_round"]), int(boost["rounds"])
    except (ValueError, KeyError, TypeError):
        return None
    return boost if first <= round_no < first + n else None


def effective_random_share(c: Campaign, round_no: int) -> float:
    """The random share of the active arm's batch in ``round_no``.

    ``[query] random_share`` normally; ``[drift] reopen_random_share`` (if higher)
    for the ``[drift] reopen_rounds`` rounds that follow a drift reopen.
    """
    base = float(c.cfg.query.random_share)
    boost = reopen_boost(c, round_no)
    return max(base, float(boost["share"])) if boost else base


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


def active_random_share(c: Campaign, round_no: int) -> tuple[float, str | None]:
    """The active arm's random share this round, and why it is above ``[query] random_share`` (or None).

    Two things raise it, the higher one wins:

    * a drift reopen (``[drift] reopen_random_share`` for ``reopen_rounds`` rounds,
      :func:`effective_random_share`);
    * the random-ahead guard: when last round's ``random_ahead`` health check fired (the
      parallel random arm's curve above the active arm's at its latest points), this batch
      uses ``[query] random_ahead_share``.

    Why the guard: a health check that only logs lets active learning keep hurting until
    someone reads the dashboard. Selection that trails random is usually a sampling-bias
    problem (the model keeps asking about one region), and more uniform draws are the
    direct remedy; the share falls back to normal as soon as the check clears. It needs the
    parallel random arm (``[query] random_arm``); set ``random_ahead_share`` to
    ``random_share`` to turn it off.
    """
    q = c.cfg.query
    share = effective_random_share(c, round_no)
    why = None
    if share > q.random_share:
        why = f"random share raised to {share:.2f} after drift episode {reopen_boost(c, round_no)['episode']}"
    if q.random_arm and round_no > 1 and q.random_ahead_share > share:
        prev = next((r for r in c.ledger.list_rounds(arm="active") if r.round_no == round_no - 1), None)
        if prev is not None and (prev.metrics or {}).get("health_random_ahead_fired") == 1.0:
            share = float(q.random_ahead_share)
            why = (f"random-ahead guard: the random arm was ahead in round {round_no - 1}; random share "
                   f"{share:.2f} for this batch ([query] random_ahead_share)")
    return share, why


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
    """Every arm's latest round says it stopped."""
    latest: dict[str, Any] = {}
    for r in c.ledger.list_rounds():
        latest[r.arm] = r
    return bool(latest) and all(a in latest and latest[a].status == "stopped" for a in c.cfg.arms)
