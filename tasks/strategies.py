"""The registry of query strategies: every strategy by name, with what it needs, without the code.

Why its own module: the campaign config validates ``[query] strategy`` against these names,
and loading a config (``labelloop status``, ``init``, a config error) must not import
scikit-learn. The scoring code is in :mod:`tasks.query`; everything that asks "what kind of
strategy is this?" (does it need a committee, features, a short list of uncertain rows?)
asks :func:`get_strategy` here, so adding a strategy is one entry below plus its scores.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Strategy:
    """One query strategy.

    ``kind``: ``per-item`` (a score per row from the class probabilities alone), ``committee``
    (a score per row from a bootstrap committee's probabilities), ``pool`` (a score per row
    that depends on the whole pool), ``set`` (no per-row score: the batch is built as a set),
    ``random``. ``adaptive`` is margin with a learnt random share (:mod:`tasks.bandit`); its
    per-row score is margin's.
    """

    name: str
    kind: str
    needs_features: bool = False
    description: str = ""

    @property
    def committee(self) -> bool:
        return self.kind == "committee"


FALLBACK_STRATEGY = "diversity-random"
"""Used when the calibration gate fails or no model exists yet: the model's scores are not
trusted, so half the batch is spread over the pool by k-center and half is uniform random."""

_REGISTRY: dict[str, Strategy] = {s.name: s for s in (
    Strategy("least-confidence", "per-item", description="1 - the top class probability"),
    Strategy("margin", "per-item", description="smallest gap between the two top classes"),
    Strategy("entropy", "per-item", description="entropy of the class probabilities"),
    Strategy("qbc", "committee", description="vote entropy of a 5-member bootstrap committee"),
    Strategy("qbc-kl", "committee", description="mean KL divergence of the committee members from their consensus"),
    Strategy("coreset", "set", needs_features=True, description="k-center greedy over the pool"),
    Strategy("cluster-margin", "per-item", needs_features=True,
             description="margin, taken round-robin over clusters of the most uncertain rows"),
    Strategy("density", "pool", needs_features=True, description="entropy x similarity to the pool"),
    Strategy("random", "random", description="uniform random"),
    Strategy("adaptive", "per-item",
             description="margin and random, weighted each round by the measured gain over the random arm "
                         "(tasks/bandit.py)"),
    Strategy(FALLBACK_STRATEGY, "set", description="half k-center spread, half uniform random (never configured)"),
)}

STRATEGIES: tuple[str, ...] = tuple(n for n in _REGISTRY if n != FALLBACK_STRATEGY)
"""Strategy names the CLI and the campaign config accept."""

ADAPTIVE_WEIGHT_METRIC = "adaptive_weight_"
"""Prefix of the round metrics (ledger, MLflow) that carry the adaptive strategy's weights,
``adaptive_weight_margin`` and ``adaptive_weight_random``: the round writes them, ``status`` reads them."""


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name`` (the configurable ones and the fallback); ValueError naming the choices."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}") from None


def strategy_for_arm(configured: str, arm: str) -> str:
    """The strategy an arm runs: the random arm is random, every other arm the configured strategy."""
    return "random" if arm == "random" else configured
