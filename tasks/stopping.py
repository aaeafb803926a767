"""Stopping rules: when is another round of labelling no longer worth it?

Pure functions of the round history, so the round flow, ``labelloop simulate``
and the benchmark all stop for the same reasons and a test can pin each rule.

``history`` is the arm's rounds so far, oldest first, one dict per evaluated
model: ``{"labels": <labels the model was trained on>, "macro_f1": <frozen
test-set macro-F1>}`` (extra keys are ignored; ``metric=`` picks another
key).  Each rule returns ``(fired, reason)``; ``reason`` is one sentence for
the CLI output, the ledger and an MLflow tag, ``None`` when it did not fire.

Rules
-----
* **budget** — the labels spent reached the budget.
* **target** — the latest score reached the target (an absolute metric
  value, e.g. a macro-F1 of 0.90).
* **marginal gain** — over the last ``window`` rounds the score rose by less
  than ``min_gain_per_label`` per label spent: more labels buy (almost)
  nothing.  Measured from the round ``window`` rounds back to the latest one,
  so a single noisy round neither triggers nor blocks it.
* **stabilising predictions** (Bloodgood & Vijay-Shanker, CoNLL 2009) — the
  predictions of successive models on a fixed, *unlabelled* stop set agree
  with Cohen's kappa >= ``stability_kappa`` for ``window`` consecutive pairs.
  It needs no labels at all, which is why it is useful where the frozen test
  set is small; the paper used kappa 0.99 over a window of 3.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

Decision = tuple[bool, "str | None"]


def budget_rule(spent: int, budget: int) -> Decision:
    """Fires once ``spent >= budget``."""
    if budget is None:
        return False, None
    if spent >= budget:
        return True, f"budget spent ({spent} of {budget} labels)"
    return False, None


def target_rule(history: Sequence[dict[str, Any]], target: float | None, *, metric: str = "macro_f1") -> Decision:
    """Fires when the latest round's ``metric`` is at or above ``target``."""
    if target is None or not history:
        return False, None
    latest = history[-1].get(metric)
    if latest is None or not np.isfinite(latest):
        return False, None
    if latest >= target:
        return True, f"target reached ({metric} {latest:.3f} >= {target:.3f})"
    return False, None


def marginal_gain_rule(
    history: Sequence[dict[str, Any]],
    min_gain_per_label: float | None,
    *,
    window: int = 3,
    metric: str = "macro_f1",
) -> Decision:
    """Fires when ``(score[-1] - score[-1-window]) / (labels[-1] - labels[-1-window]) < min_gain_per_label``.

    Needs ``window + 1`` rounds.  A window in which no label was added (a
    round that only retrained) gives no evidence either way: it does not fire.
    The gain may be negative (the curve went down), which fires too.
    """
    if min_gain_per_label is None:
        return False, None
    if window < 1:
        raise ValueError("window must be >= 1")
    if len(history) < window + 1:
        return False, None
    old, new = history[-1 - window], history[-1]
    s0, s1 = old.get(metric), new.get(metric)
    if s0 is None or s1 is None:
        return False, None
    d_labels = float(new["labels"]) - float(old["labels"])
    if d_labels <= 0:
        return False, None
    gain = (float(s1) - float(s0)) / d_labels
    if gain < min_gain_per_label:
        return True, (f"gain per label {gain:.2e} < {min_gain_per_label:.2e} over the last {window} rounds "
                      f"({metric} {s0:.3f} -> {s1:.3f}, {int(d_labels)} labels)")
    return False, None


def cohen_kappa(a: Any, b: Any) -> float:
    """Cohen's kappa between two label vectors (any hashable labels).

    ``(p_o - p_e) / (1 - p_e)``; when both raters give one and the same label
    everywhere ``p_e = 1`` and agreement is perfect, so 1.0 (scikit-learn
    returns NaN there, which would stop a stopping rule from ever firing).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("predictions must be 1-D and of equal length")
    if a.size == 0:
        return float("nan")
    labels, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    ia, ib = inv[: a.size], inv[a.size:]
    k = labels.size
    p_o = float(np.mean(ia == ib))
    pa = np.bincount(ia, minlength=k) / a.size
    pb = np.bincount(ib, minlength=k) / b.size
    p_e = float(np.dot(pa, pb))
    if p_e >= 1.0:
        return 1.0 if p_o >= 1.0 else 0.0
    return (p_o - p_e) / (1.0 - p_e)


def stabilising_predictions_rule(
    stop_set_predictions: Sequence[Any] | None,
    stability_kappa: float | None,
    *,
    window: int = 3,
) -> Decision:
    """Fires when the last ``window`` pairs of successive models agree with kappa >= ``stability_kappa``.

    ``stop_set_predictions`` holds one vector of predicted labels per round
    (oldest first), always on the same stop set in the same order; needs
    ``window + 1`` of them.
    """
    if stability_kappa is None or stop_set_predictions is None:
        return False, None
    if window < 1:
        raise ValueError("window must be >= 1")
    preds = list(stop_set_predictions)
    if len(preds) < window + 1:
        return False, None
    kappas = [cohen_kappa(preds[i - 1], preds[i]) for i in range(len(preds) - window, len(preds))]
    if all(np.isfinite(k) and k >= stability_kappa for k in kappas):
        return True, (f"predictions stabilised: kappa between successive models "
                      f"{', '.join(f'{k:.3f}' for k in kappas)} >= {stability_kappa} on the stop set")
    return False, None


def should_stop(
    history: list[dict],
    *,
    budget: int,
    spent: int,
    target: float | None = None,
    min_gain_per_label: float | None = None,
    window: int = 3,
    stability_kappa: float | None = None,
    stop_set_predictions: list[np.ndarray] | None = None,
    metric: str = "macro_f1",
) -> tuple[bool, str | None]:
    """All rules in order (budget, target, marginal gain, stabilising predictions); the first that fires wins.

    Rules whose threshold is ``None`` are off.  Returns ``(stop, reason)``.
    """
    for fired, reason in (
        budget_rule(spent, budget),
        target_rule(history, target, metric=metric),
        marginal_gain_rule(history, min_gain_per_label, window=window, metric=metric),
        stabilising_predictions_rule(stop_set_predictions, stability_kappa, window=window),
    ):
        if fired:
            return True, reason
    return False, None
