"""The ``adaptive`` strategy: how much of the active arm's batch goes to uncertainty sampling and how much to
random, learnt from each round's measured gain against the parallel random arm.

Why: active learning is below random on a good share of real setups (Ghose & Nguyen, EMNLP 2024),
and the product promises "never worse than random, better where it can be". A fixed random share
cannot both stay out of the way where margin sampling pays and take over where it does not. Active
Learning by Learning (Hsu & Lin, AAAI 2015) treats the choice between strategies as a bandit; its
reward there is an importance-weighted accuracy on the queried points. A campaign has something
better: the random arm, trained on a plain uniform sample at the same label counts and measured on
the same trusted test items. So the reward here is the gain itself:

* after each batch both arms are re-evaluated; the change of the active arm's advantage over random at
  equal labels, ``dA = (f_active(n_t) - f_random(n_t)) - (f_active(n_(t-1)) - f_random(n_(t-1)))``,
  is what this batch did better than a random batch would have;
* the batch was a mixture (share ``s`` random, ``1 - s`` the base strategy), so the base strategy's
  part of it is credited ``dA / (1 - s)`` (the random part contributes random's gain, i.e. 0 advantage),
  with ``1 - s`` floored at :data:`MIN_BASE_SHARE` so a batch that was mostly random cannot swing the weights;
* both choices are observed every round (the random arm measures "random" outright), so the update is
  full-information exponential weights (Hedge) rather than EXP3's bandit estimate: it moves within a round
  or two instead of the tens of rounds EXP3 needs to explore, and a campaign has only 10-20 rounds.

The weights are a pure function of the arm's history (its learning curve with each batch's random share,
and the random arm's curve), so ``labelloop simulate``, a campaign round (which reads the history from the
ledger) and the benchmark compute the same weights at the same round, and a resumed round recomputes them
without any stored state to lose. The result is the batch's random share: ``max([query] random_share, w_random)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

ADAPTIVE = "adaptive"
ADAPTIVE_BASE = "margin"
"""The strategy the adaptive policy weighs against random (the default policy's strategy)."""

LEARNING_RATE = 50.0
"""Hedge's step per unit of advantage: an advantage change of 0.02 macro-F1 moves the log-odds by 1.
Chosen once from the size of a round's gain on any data (0.005-0.05 F1 per batch), not per data set."""

MIN_BASE_SHARE = 0.5
"""Floor of ``1 - s`` when crediting a batch's advantage change to the base strategy (bounds the
importance weight at 2)."""

MAX_LOG_ODDS = 3.0
"""The log-odds are kept within +-3 (weights 0.05-0.95): each choice keeps a share, so the weights
can come back within a round or two when the evidence turns (EXP3's exploration floor)."""


@dataclass(frozen=True)
class AdaptiveWeights:
    """The adaptive policy's weights for one round, and what they came from.

    ``weights``: ``{base strategy: w, "random": 1 - w}``; ``steps``: the batches credited so far;
    ``advantage``: the active arm's latest advantage over random at equal labels (None before the
    first matched round).
    """

    weights: Mapping[str, float]
    steps: int
    advantage: float | None

    @property
    def random_weight(self) -> float:
        return float(self.weights["random"])

    def describe(self) -> str:
        """One line for the round's notes and ``labelloop simulate``'s output."""
        parts = ", ".join(f"{k} {v:.2f}" for k, v in self.weights.items())
        if self.advantage is None:
            return f"adaptive: weights {parts} (prior: no batch measured against the random arm yet)"
        lead = "ahead of" if self.advantage > 0 else "behind" if self.advantage < 0 else "level with"
        return (f"adaptive: weights {parts} after {self.steps} measured batch(es); the active arm is "
                f"{lead} random by {abs(self.advantage):.3f} macro-F1 at equal labels")


def advantage_steps(active: Sequence[tuple[int, float, float]], random_curve: Sequence[tuple[int, float]]
                    ) -> tuple[list[tuple[float, float]], float | None]:
    """``(advantage change, random share of the batch that caused it)`` per measured batch, and the
    latest advantage.

    ``active``: ``(labels, macro-F1, random share of the batch queried after this evaluation)`` per
    round, oldest first; ``random_curve``: ``(labels, macro-F1)``. The random curve is interpolated at
    the active arm's label counts within its range (no extrapolation), as the random-ahead check does.
    """
    if not active or not random_curve:
        return [], None
    # sorted here, not with tasks.health's helper: health imports scikit-learn, and `status` reaches this module
    rx = np.asarray([p[0] for p in random_curve], dtype=float)
    ry = np.asarray([p[1] for p in random_curve], dtype=float)
    order = np.argsort(rx, kind="stable")
    rx, ry = rx[order], ry[order]
    adv: list[float | None] = [float(f) - float(np.interp(n, rx, ry)) if rx[0] <= n <= rx[-1] else None
                               for n, f, _ in active]
    steps = [(adv[j] - adv[j - 1], float(active[j - 1][2])) for j in range(1, len(active))
             if adv[j] is not None and adv[j - 1] is not None]
    latest = next((a for a in reversed(adv) if a is not None), None)
    return steps, latest


def adaptive_weights(active: Sequence[tuple[int, float, float]], random_curve: Sequence[tuple[int, float]] | None,
                     *, prior_random: float, base: str = ADAPTIVE_BASE) -> AdaptiveWeights:
    """Hedge over ``{base, "random"}`` from the arm's history (see the module docstring).

    ``prior_random``: the weight of random before any batch is measured (``[query] random_share``: the
    adaptive policy starts as the default policy). Without a random arm the prior stands.
    """
    p0 = min(max(float(prior_random), 1e-3), 1 - 1e-3)
    log_odds = math.log((1 - p0) / p0)  # base vs random
    steps, latest = advantage_steps(active, random_curve or [])
    for change, share in steps:
        log_odds += LEARNING_RATE * change / max(1.0 - share, MIN_BASE_SHARE)
        log_odds = min(max(log_odds, -MAX_LOG_ODDS), MAX_LOG_ODDS)
    w_base = 1.0 / (1.0 + math.exp(-log_odds))
    return AdaptiveWeights(weights={base: round(w_base, 4), "random": round(1 - w_base, 4)}, steps=len(steps),
                           advantage=None if latest is None else round(latest, 5))
