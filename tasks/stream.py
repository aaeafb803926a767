"""Stream mode's decisions: which arriving text is labelled by the model, which by people (issue 17).

Pure functions over plain data; ``flows/stream.py`` wires them to the ledger, the champion model,
the annotation backend and MLflow.

Why this shape:

* **Calibrated confidence, not the raw probability.** A logistic regression trained on a few
  hundred labels is over-confident; a threshold of 0.9 on its raw top probability labels far
  more items than are 90 % right. The champion's probabilities are temperature-scaled on the
  campaign's calibration slice (:func:`calibrated_confidence`) before the threshold is applied.
* **Audits are drawn by a hash of the item id** (:func:`is_audit`): the same item is an audit on
  every run (a rerun after a crash routes exactly the same items), and which items are audited
  is independent of their confidence, so audited precision estimates the precision of *all*
  automatic labels.
* **The gate uses the lower bound of a Wilson interval** (:func:`gate_threshold`): 9 correct
  audits out of 10 is not evidence of 90 % precision. When the lower bound on the audits above
  the configured threshold falls below ``min_precision``, the threshold rises to the lowest
  confidence at which the audits above it still clear the bar; when no threshold does, automatic
  labelling stops (everything goes to people) until audits say otherwise.
* **The daily budget caps people's work, audits first** (:func:`route`): without answered audits
  the gate is blind, so audits are never starved by a flood of uncertain items. Items over the
  budget are *held* and offered again the next day, oldest first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from labelloop.tasks.calibrate import apply_temperature, fit_temperature

AUTO, AUDIT, ROUTED, HELD = "auto", "audit", "routed", "held"
ROUTES = (AUTO, AUDIT, ROUTED, HELD)
AUTO_SOURCE = "auto"  # the ledger's source of an automatic label (never a human label)


def calibrated_confidence(proba_new: np.ndarray, proba_cal: np.ndarray | None = None,
                          y_cal_idx: np.ndarray | None = None) -> tuple[np.ndarray, float | None]:
    """The top-class probability of each new row after temperature scaling fitted on the calibration
    slice, and the temperature (None: no calibration rows, the confidences are raw).

    Temperature scaling cannot change the predicted label (argmax), only how sure the model says it is.
    """
    p = np.asarray(proba_new, dtype=float)
    if p.size == 0:
        return np.zeros(0), None
    if proba_cal is None or y_cal_idx is None or len(y_cal_idx) == 0:
        return p.max(axis=1), None
    t = fit_temperature(np.asarray(proba_cal, dtype=float), np.asarray(y_cal_idx, dtype=int), is_proba=True)
    return apply_temperature(p, t).max(axis=1), t


def is_audit(item_id: str, share: float, seed: int = 0) -> bool:
    """Whether an automatically labelled item also goes to people: a stable hash of (seed, id) below
    ``share``. The same item gives the same answer on every run and in every process."""
    if share <= 0:
        return False
    h = int.from_bytes(hashlib.sha256(f"{seed}:{item_id}".encode("utf-8")).digest()[:8], "big")
    return h / 2**64 < share


@dataclass(frozen=True)
class Decision:
    item_id: str
    route: str  # auto | audit | routed | held
    label: str | None  # the automatic label (auto / audit), None when people label it
    confidence: float


@dataclass
class Routing:
    decisions: list[Decision] = field(default_factory=list)

    def ids(self, route: str) -> list[str]:
        return [d.item_id for d in self.decisions if d.route == route]

    def counts(self) -> dict[str, int]:
        return {r: sum(d.route == r for d in self.decisions) for r in ROUTES}


def route(item_ids: Sequence[str], predicted: Sequence[str], confidence: Sequence[float], *,
          threshold: float | None, audit_share: float, budget_left: int, seed: int = 0) -> Routing:
    """Decide each arrival (in arrival order; held items from earlier days first, as the caller orders them).

    ``threshold`` None: automatic labelling is off (the gate stopped it, or no model): every item is
    for people. An item at or above the threshold is labelled automatically; a stable
    ``audit_share`` of those also goes to people (``audit``). The rest (``routed``) go to people
    while ``budget_left`` lasts -- audits are served first -- and are ``held`` beyond it. An audit
    over the budget stays an automatic label (``auto``): it is never held, since the label is made.
    """
    if not (len(item_ids) == len(predicted) == len(confidence)):
        raise ValueError("item_ids, predicted and confidence must have the same length")
    auto = [threshold is not None and float(c) >= threshold for c in confidence]
    audit = [a and is_audit(i, audit_share, seed) for i, a in zip(item_ids, auto)]
    left = max(0, int(budget_left))
    audit_ok: set[int] = set()
    for k, a in enumerate(audit):
        if a and left > 0:
            audit_ok.add(k)
            left -= 1
    out = Routing()
    for k, (i, lbl, c) in enumerate(zip(item_ids, predicted, confidence)):
        if auto[k]:
            out.decisions.append(Decision(str(i), AUDIT if k in audit_ok else AUTO, str(lbl), float(c)))
        elif left > 0:
            out.decisions.append(Decision(str(i), ROUTED, None, float(c)))
            left -= 1
        else:
            out.decisions.append(Decision(str(i), HELD, None, float(c)))
    return out


def budget_left(daily_budget: int, sent_today: int) -> int:
    """Items people may still get today (``[stream] daily_budget`` minus what went out today, UTC)."""
    return max(0, int(daily_budget) - int(sent_today))


def human_label(answers: Iterable[str], min_answers: int) -> str | None:
    """The people's label of an item: a strict majority of at least ``min_answers`` answers (None: not yet)."""
    votes = [a for a in answers if a is not None]
    if len(votes) < max(1, min_answers):
        return None
    values, counts = np.unique(np.asarray(votes, dtype=object), return_counts=True)
    best = int(counts.argmax())
    return str(values[best]) if counts[best] * 2 > len(votes) else None


def wilson_low(correct: int, n: int, level: float = 0.95) -> float | None:
    """Lower end of the Wilson score interval of ``correct / n`` (None when n = 0)."""
    if n <= 0:
        return None
    from scipy.stats import binomtest

    return float(binomtest(int(correct), int(n)).proportion_ci(confidence_level=level, method="wilson").low)


@dataclass(frozen=True)
class AuditPrecision:
    n: int
    correct: int
    precision: float | None
    low: float | None  # Wilson 95 % lower bound


def audit_precision(audits: Sequence[tuple[float, bool]], at_least: float | None = None) -> AuditPrecision:
    """Precision of the automatic labels on answered audits (``(confidence, auto label == people's label)``),
    optionally only those with confidence >= ``at_least``."""
    rows = [ok for c, ok in audits if at_least is None or c >= at_least]
    n, k = len(rows), int(sum(rows))
    return AuditPrecision(n, k, (k / n) if n else None, wilson_low(k, n))


@dataclass(frozen=True)
class Gate:
    threshold: float | None  # the threshold to apply now; None: automatic labelling stopped
    reason: str
    precision: AuditPrecision


def gate_threshold(audits: Sequence[tuple[float, bool]], *, threshold: float, min_precision: float,
                   min_audits: int) -> Gate:
    """The threshold the audits allow (see the module docstring).

    Fewer than ``min_audits`` answered audits: the configured threshold stands (no evidence either
    way). Otherwise, when the Wilson lower bound of the precision of audits at or above ``threshold``
    reaches ``min_precision`` it stands; else the lowest audited confidence above it whose audits at or
    above it (still at least ``min_audits`` of them) clear the bar becomes the threshold; if none does,
    automatic labelling stops.
    """
    overall = audit_precision(audits, at_least=threshold)
    if overall.n < min_audits:
        return Gate(threshold, f"{overall.n} answered audit(s) at or above {threshold:.3f}, fewer than "
                               f"{min_audits}: threshold kept", overall)
    if overall.low is not None and overall.low >= min_precision:
        return Gate(threshold, f"audited precision {overall.precision:.3f} (95% low {overall.low:.3f}, "
                               f"n={overall.n}) >= {min_precision}: threshold kept", overall)
    for t in sorted({float(c) for c, _ in audits if c > threshold}):
        p = audit_precision(audits, at_least=t)
        if p.n < min_audits:
            break
        if p.low is not None and p.low >= min_precision:
            return Gate(t, f"audited precision {overall.precision:.3f} (95% low {overall.low:.3f}, n={overall.n}) "
                           f"< {min_precision}: threshold raised to {t:.3f} (95% low {p.low:.3f}, n={p.n})", p)
    return Gate(None, f"audited precision {overall.precision:.3f} (95% low {overall.low:.3f}, n={overall.n}) < "
                      f"{min_precision} and no higher threshold clears it: automatic labelling stopped "
                      "(every arrival goes to people)", overall)


def audit_outcomes(audited: Mapping[str, tuple[str, float]], people: Mapping[str, str]) -> list[tuple[float, bool]]:
    """``(confidence, correct)`` of each audit people have answered: ``audited`` item -> (auto label,
    confidence); ``people`` item -> the people's label."""
    return [(conf, lbl == people[i]) for i, (lbl, conf) in audited.items() if i in people]
