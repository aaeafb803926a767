"""Is the open batch answered well enough for a round to train? (pure)

Why a rule of its own: people answer late, in part, or never. A round that
trains on whatever happens to be there when the cron fires either crashes
(nothing to train on), or quietly burns a round number on five labels and
reports "done". The honest answer is *waiting*: the round does nothing, says
what it waits for, and the CLI exits 3 so a scheduler or a script can tell
"waiting for people" from "done" and from "broken".

The rule: a round may train once ``ready_share`` of the open batch (the items
pushed most recently, gold items aside) has the answers the campaign asked for
(``need`` = the overlap), or has been judged by the trust policy already (an
adjudicated item, or a replayed item whose recorded history holds fewer answers). Items the backend can never answer (a replayed item nobody recorded an
answer for) leave the count, so they cannot hold a campaign hostage. Extra
answers asked for by adaptive redundancy are *not* waited for: they arrive
while the next batch is being labelled and count from the round that sees them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

__all__ = ["DECIDED", "Readiness", "batch_readiness", "batch_name", "with_evaluation"]

#: trust statuses of an item whose first answers are in (the policy has judged it): it counts as
#: answered even with fewer than ``need`` answers (an adjudicated item, a replayed item whose
#: history holds only two answers) -- only ``pending`` items are still waited for.
DECIDED = frozenset({"trusted", "needs_more", "adjudication", "quarantined", "gold"})


@dataclass(frozen=True)
class Readiness:
    """The verdict and the numbers behind it (also shown by ``labelloop status``)."""

    ready: bool
    batch: int | None  # the open batch: the round its tasks were pushed in (0 = the seed)
    n_items: int  # items of the open batch (gold items aside)
    n_answered: int  # ... with ``need`` answers (or already trusted)
    n_trusted: int  # ... trusted now
    n_required: int  # answered items the rule needs
    n_unanswerable: int  # ... the backend can never answer (left out of the count)
    need: int
    waiting_for: str  # one sentence; "" when ready

    def as_dict(self) -> dict:
        return {"ready": self.ready, "batch": self.batch, "items": self.n_items, "answered": self.n_answered,
                "trusted": self.n_trusted, "required": self.n_required, "unanswerable": self.n_unanswerable,
                "need": self.need, "waiting_for": self.waiting_for}


def batch_name(batch: int | None) -> str:
    """How people call a batch: the seed, or the batch of round N."""
    return "seed" if batch == 0 else f"round-{batch} batch"


def batch_readiness(batch: int | None, items: Sequence[str], answers: Mapping[str, int],
                    status: Mapping[str, str], *, need: int, ready_share: float,
                    unanswerable: Iterable[str] = ()) -> Readiness:
    """Decide whether the open batch ``items`` lets a round train.

    Args:
        batch: the open batch's number (for the message).
        items: its item ids (gold items excluded by the caller).
        answers: item -> submitted answers counted so far.
        status: item -> the trust decision's status (any of :data:`DECIDED` counts as answered).
        need: answers each item was asked for (the campaign's overlap).
        ready_share: share of the batch that must be answered, in (0, 1].
        unanswerable: items no annotator will ever answer (left out of the count).
    """
    if not 0.0 < ready_share <= 1.0:
        raise ValueError("ready_share must be in (0, 1]")
    never = {str(i) for i in unanswerable}
    ids = [str(i) for i in items]
    counted = [i for i in ids if i not in never]
    answered = _answered(counted, answers, status, need)
    trusted = sum(1 for i in ids if status.get(i) == "trusted")
    required = math.ceil(ready_share * len(counted) - 1e-9)
    ready = len(answered) >= required
    why = ""
    if not ready:
        share = f" (a round needs {required})" if required < len(counted) else ""
        never_txt = f", {len(never & set(ids))} can never be answered" if never & set(ids) else ""
        why = (f"waiting for annotations: {len(answered)} of {len(counted)} {batch_name(batch)} items answered "
               f"{need} time{'s' if need != 1 else ''}{share}, {trusted} trusted{never_txt}")
    return Readiness(ready=ready, batch=batch, n_items=len(ids), n_answered=len(answered), n_trusted=trusted,
                     n_required=required, n_unanswerable=len(never & set(ids)), need=need, waiting_for=why)


def _answered(ids: Sequence[str], answers: Mapping[str, int], status: Mapping[str, str], need: int) -> list[str]:
    return [i for i in ids if answers.get(i, 0) >= need or status.get(i, "pending") in DECIDED]


def with_evaluation(seed: Readiness, test_items: Sequence[str], answers: Mapping[str, int],
                    status: Mapping[str, str], *, required: int, unanswerable: Iterable[str] = ()) -> Readiness:
    """The seed batch's verdict with the test set people label: also ``required`` answered test items.

    ``test_items``: the test items pushed for people to label (``required`` is capped at their
    number); ``unanswerable``: those the backend says it cannot answer, named in the message.
    """
    ids = [str(i) for i in test_items]
    never = {str(i) for i in unanswerable} & set(ids)
    required = min(required, len(ids))
    done = len(_answered(ids, answers, status, seed.need))
    if done >= required:
        return seed
    stuck = (f"; {len(never)} have no answer the backend can give yet: lower [splits] min_test_labels or name a "
             f"labelled [splits] test_path" if never else "")
    gap = (f"{done} of {required} test items answered {seed.need} time{'s' if seed.need != 1 else ''} "
           f"(min_test_labels: the first round waits until it can measure its model{stuck})")
    why = (seed.waiting_for + "; " + gap) if seed.waiting_for else f"waiting for annotations: {gap}"
    return Readiness(ready=False, batch=seed.batch, n_items=seed.n_items + len(ids),
                     n_answered=seed.n_answered + done, n_trusted=seed.n_trusted, n_required=seed.n_required + required,
                     n_unanswerable=seed.n_unanswerable + len(never), need=seed.need, waiting_for=why)
