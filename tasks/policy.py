"""The active-learning policy: what an arm does in its round, as pure functions over plain data.

Why one module: the campaign round (flows/round.py), ``labelloop simulate`` (flows/simulate.py)
and the benchmark's labelloop arms (benchmarks/al_benchmark.py) used to decide each of these
themselves: the random share three times, the committee + ``select_batch`` glue four times, and
``simulate`` silently left out the class quota, the configured near-duplicate threshold and
the calibration gate. So "will active learning pay off on your data?" simulated another policy
than the one a campaign ran. Now all of them ask this module, and a test
(tests/integration/test_policy_parity.py) holds a simulation and a campaign to the same items
in every round.

Nothing here knows a ``Campaign``, a ledger or Prefect: the callers read the arm's history
from wherever they keep it (the ledger, a simulated curve) and hand over plain values and
small frozen dataclasses. The batch itself is chosen by :func:`tasks.query.select_round_batch`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from labelloop.tasks import stopping
from labelloop.tasks.bandit import ADAPTIVE, ADAPTIVE_BASE, AdaptiveWeights, adaptive_weights
from labelloop.tasks.strategies import FALLBACK_STRATEGY, strategy_for_arm

ARM_STREAMS: Mapping[str, int] = {"active": 0, "random": 1}
"""The arm's number in its random stream (:func:`round_rng`)."""


@dataclass(frozen=True)
class QueryPolicy:
    """``[query]`` of a campaign: how a batch is chosen."""

    strategy: str = "margin"
    batch_size: int = 50
    random_share: float = 0.10
    random_ahead_share: float = 0.5
    class_quota: float = 0.0
    near_duplicate_threshold: float | None = 0.95
    random_arm: bool = True
    diversity: bool = True
    committee_size: int = 5

    @classmethod
    def from_config(cls, q: Any) -> "QueryPolicy":
        """From any object with ``[query]``'s fields (the campaign's pydantic section)."""
        return cls(strategy=str(q.strategy), batch_size=int(q.batch_size), random_share=float(q.random_share),
                   random_ahead_share=float(q.random_ahead_share), class_quota=float(q.class_quota),
                   near_duplicate_threshold=q.near_duplicate_threshold, random_arm=bool(q.random_arm))


@dataclass(frozen=True)
class StopPolicy:
    """``[budget]`` of a campaign: when an arm stops."""

    max_labels: int = 500
    max_rounds: int = 50
    target_macro_f1: float | None = None
    min_gain_per_label: float | None = None
    stop_window: int = 3
    stability_kappa: float | None = None

    @classmethod
    def from_config(cls, b: Any) -> "StopPolicy":
        return cls(max_labels=int(b.max_labels), max_rounds=int(b.max_rounds), target_macro_f1=b.target_macro_f1,
                   min_gain_per_label=b.min_gain_per_label, stop_window=int(b.stop_window),
                   stability_kappa=b.stability_kappa)


@dataclass(frozen=True)
class Policy:
    """The whole policy of a campaign: query, stopping, and the calibration gate (``[gates] calibration_ece``)."""

    query: QueryPolicy = QueryPolicy()
    stop: StopPolicy = StopPolicy()
    calibration_ece: float = 0.10

    @classmethod
    def from_config(cls, cfg: Any) -> "Policy":
        """From a campaign config (``cfg.query``, ``cfg.budget``, ``cfg.gates``)."""
        return cls(query=QueryPolicy.from_config(cfg.query), stop=StopPolicy.from_config(cfg.budget),
                   calibration_ece=float(cfg.gates.calibration_ece))

    def arms(self) -> list[str]:
        """The active arm, plus the random arm when the campaign measures itself against random."""
        if self.query.strategy == "random":
            return ["random"]
        return ["active", "random"] if self.query.random_arm else ["active"]


@dataclass(frozen=True)
class Calibration:
    """The round's calibration gate on the calibration slice (``judged`` False: too few items to say)."""

    judged: bool
    passed: bool
    ece_after: float = float("nan")


@dataclass(frozen=True)
class Boost:
    """A drift reopen's raised random share (``[drift] reopen_random_share`` for ``rounds`` rounds)."""

    episode: str
    share: float
    first_round: int
    rounds: int

    def covers(self, round_no: int) -> bool:
        return self.first_round <= round_no < self.first_round + self.rounds


@dataclass(frozen=True)
class ArmState:
    """What an arm's history says when its round is about to query.

    ``trained``: a model could be trained on the arm's trusted labels (else a cold start).
    ``random_ahead_fired``: the ``random_ahead`` check recorded at the end of the arm's previous
    round (the random arm ahead at its latest label count).
    ``adaptive``: the ``adaptive`` strategy's weights from the arm's history
    (:func:`arm_adaptive_weights`); None with any other strategy.
    """

    arm: str
    round_no: int
    spent: int
    trained: bool = True
    calibration: Calibration | None = None
    boost: Boost | None = None
    random_ahead_fired: bool = False
    adaptive: AdaptiveWeights | None = None


@dataclass(frozen=True)
class RoundPlan:
    """One arm's round: what to query, how much of it at random, and why."""

    arm: str
    round_no: int
    strategy: str
    batch_size: int
    random_share: float
    share_reason: str | None = None
    fallback: bool = False
    fallback_reason: str | None = None
    cold_start: bool = False
    stopped: str | None = None
    adaptive: AdaptiveWeights | None = None

    @property
    def queries(self) -> bool:
        return self.stopped is None and self.batch_size > 0


def round_rng(random_state: int, round_no: int, arm: str) -> np.random.Generator:
    """The random stream of one arm's round: ``[random_state, round_no, arm]``.

    Why per round and not one stream per arm: a round killed and run again must draw the very
    same batch without replaying the earlier rounds' draws, and a simulation that uses the same
    streams picks the same items as the campaign.
    """
    return np.random.default_rng([int(random_state), int(round_no), ARM_STREAMS.get(arm, 1)])


def random_share(policy: QueryPolicy, arm: str, round_no: int, *, boost: Boost | None = None,
                 random_ahead_fired: bool = False) -> tuple[float, str | None]:
    """The arm's random share this round, and why it is above ``[query] random_share`` (or None).

    The random arm is all random (1.0). For the active arm two things raise it, the higher wins:

    * a drift reopen (``boost``, for the rounds it covers);
    * the random-ahead guard: when the previous round's ``random_ahead`` health check fired
      (the parallel random arm's curve above the active arm's at its latest points), this
      batch uses ``random_ahead_share``.

    Why the guard: a health check that only logs lets active learning keep hurting until
    someone reads the dashboard. Selection that trails random is usually a sampling-bias
    problem (the model keeps asking about one region), and more uniform draws are the
    direct remedy; the share falls back to normal as soon as the check clears. It needs the
    parallel random arm; ``random_ahead_share`` = ``random_share`` turns it off.
    """
    if strategy_for_arm(policy.strategy, arm) == "random":
        return 1.0, None
    share, why = float(policy.random_share), None
    if boost is not None and boost.covers(round_no) and boost.share > share:
        share = float(boost.share)
        why = f"random share raised to {share:.2f} after drift episode {boost.episode}"
    if policy.random_arm and round_no > 1 and random_ahead_fired and policy.random_ahead_share > share:
        share = float(policy.random_ahead_share)
        why = (f"random-ahead guard: the random arm was ahead in round {round_no - 1}; random share "
               f"{share:.2f} for this batch ([query] random_ahead_share)")
    return share, why


def random_ahead_fired(active_curve: Sequence[tuple[int, float]], random_curve: Sequence[tuple[int, float]] | None
                       ) -> bool:
    """The random-ahead guard's check: the ``random_ahead`` health check with the guard's thresholds
    (:class:`tasks.health.HealthThresholds`: the random arm ahead by more than 0.01 macro-F1 at the
    active arm's latest label count within the random curve).

    Timing (README, "the round"): a round records this check once both arms are evaluated, on
    both curves up to that round; the next round's batch acts on it. So the guard acts from the
    round after the one in which the random arm was ahead; a simulation passes the same slices.
    """
    if not active_curve or not random_curve:
        return False
    from labelloop.tasks.health import HealthThresholds, random_ahead_check  # heavy (scikit-learn): `status` plans without it

    t = HealthThresholds()
    return random_ahead_check(list(active_curve), list(random_curve), last_k=t.random_last_k,
                              tolerance=t.random_tolerance).fired


def arm_adaptive_weights(policy: QueryPolicy, active: Sequence[tuple[int, float, float]],
                         random_curve: Sequence[tuple[int, float]] | None) -> AdaptiveWeights | None:
    """The ``adaptive`` strategy's weights for the active arm's next batch (None for other strategies).

    ``active``: ``(labels, macro-F1, random share of the batch queried after it)`` per evaluated
    round of the active arm, this round last (its share is not known yet and never used);
    ``random_curve``: the random arm's ``(labels, macro-F1)`` as far as it is evaluated. See
    :mod:`tasks.bandit`.
    """
    if policy.strategy != ADAPTIVE:
        return None
    return adaptive_weights(list(active), list(random_curve) if (random_curve and policy.random_arm) else None,
                            prior_random=policy.random_share)


def stop_reason(stop: StopPolicy, round_no: int, spent: int, history: Sequence[Mapping[str, float]], *,
                judged: bool, stop_set_predictions: list | None = None) -> str | None:
    """Why the arm stops after this round (max rounds, budget, target, marginal gain, stable predictions).

    ``history``: the arm's ``{"labels", "macro_f1"}`` per evaluated round, this one last. With
    ``judged`` False (too few trusted test items) the metric rules (target, marginal gain) are
    not applied: a target "reached" on 20 items is noise.
    """
    if round_no >= stop.max_rounds and spent < stop.max_labels:
        return f"max_rounds ({stop.max_rounds}) reached"
    stop_now, reason = stopping.should_stop(
        list(history), budget=stop.max_labels, spent=spent,
        target=stop.target_macro_f1 if judged else None,
        min_gain_per_label=stop.min_gain_per_label if judged else None, window=stop.stop_window,
        stability_kappa=stop.stability_kappa, stop_set_predictions=stop_set_predictions)
    return reason if stop_now else None


def stop_still_holds(stop: StopPolicy, reason: str, *, spent: int, round_no: int,
                     macro_f1: float | None = None) -> bool:
    """Whether an arm stopped for ``reason`` (a :func:`stop_reason` text) stays stopped under ``stop``.

    Why: the ledger keeps the stop a round decided; a user reopens a campaign by editing
    ``[budget]`` (more labels or rounds, a higher target, a rule switched off), so this is asked of
    today's config instead of running a round to find out. ``macro_f1``: the arm's last measured
    macro-F1 (for a target stop). The texts are :func:`tasks.stopping.should_stop`'s and
    :func:`stop_reason`'s.
    """
    if reason.startswith("budget spent"):
        return spent >= stop.max_labels
    if reason.startswith("max_rounds"):
        return round_no >= stop.max_rounds and spent < stop.max_labels
    if reason.startswith("target reached"):
        return stop.target_macro_f1 is not None and macro_f1 is not None and macro_f1 >= stop.target_macro_f1
    if reason.startswith("gain per label"):
        return stop.min_gain_per_label is not None
    if reason.startswith("predictions stabilised"):
        return stop.stability_kappa is not None
    return True


def plan_round(policy: Policy, state: ArmState, *, stopped: str | None = None) -> RoundPlan:
    """The arm's round: strategy, batch size, random share and why, calibration fallback, cold start.

    * **cold start** (no model): the random arm stays random, the active arm spreads its batch
      out (``diversity-random``): nothing trusted to rank by yet.
    * **calibration fallback** (active arm, the gate judged and failed): the model's scores are
      not trusted, so the batch is ``diversity-random`` too.
    * **adaptive** (``[query] strategy = "adaptive"``): the batch is :data:`tasks.bandit.ADAPTIVE_BASE`
      (margin) with the random share the weights give random (:func:`arm_adaptive_weights`), never
      below the configured share or the guard's.
    * **batch size**: ``[query] batch_size``, capped by what is left of ``[budget] max_labels``;
      0 once the arm ``stopped`` (see :func:`stop_reason`).
    """
    q = policy.query
    configured = strategy_for_arm(q.strategy, state.arm)
    adaptive = None
    if configured == ADAPTIVE:  # the base strategy, with the random share the weights give random
        configured = ADAPTIVE_BASE
        adaptive = state.adaptive or adaptive_weights([], None, prior_random=q.random_share)
    cold = not state.trained
    cal = state.calibration
    fallback = bool(not cold and configured != "random" and state.arm != "random" and cal is not None
                    and cal.judged and not cal.passed)
    strategy = FALLBACK_STRATEGY if (cold and configured != "random") or fallback else configured
    share, why = random_share(q, state.arm, state.round_no, boost=state.boost,
                              random_ahead_fired=state.random_ahead_fired)
    if adaptive is not None and adaptive.random_weight > share and not cold and not fallback:
        share = adaptive.random_weight
        why = (f"{adaptive.describe()}: random share {share:.2f} for this batch"
               + (f" (instead of: {why})" if why else ""))
    reason = (f"calibration gate: ECE after calibration {cal.ece_after:.3f} > {policy.calibration_ece:.2f}; "
              f"this batch uses diversity + random selection") if fallback and cal is not None else None
    size = 0 if stopped else max(0, min(q.batch_size, policy.stop.max_labels - state.spent))
    return RoundPlan(arm=state.arm, round_no=state.round_no, strategy=strategy, batch_size=size,
                     random_share=share, share_reason=why, fallback=fallback, fallback_reason=reason,
                     cold_start=cold, stopped=stopped, adaptive=adaptive)


def price_per_point(history: Sequence[tuple[int, float, float]], cost_per_label: float) -> dict[str, float]:
    """What an arm paid per test-accuracy point gained since its first evaluated round.

    ``history``: ``(trusted labels, labels spent, test accuracy)`` per evaluated round, oldest
    first. ``labels_per_accuracy_point`` counts trusted labelled items; ``cost_per_accuracy_point``
    (only with ``cost_per_label`` > 0) prices the annotations bought, overlap included.
    """
    from labelloop.tasks.evaluate import cost_per_accuracy_point  # heavy (matplotlib): `labelloop status` never prices

    hist = list(history)
    acc = [h[2] for h in hist]
    out: dict[str, float] = {}
    per_item = cost_per_accuracy_point([h[0] for h in hist], acc, 1.0)
    if per_item is not None:
        out["labels_per_accuracy_point"] = per_item
    if cost_per_label > 0:
        priced = cost_per_accuracy_point([h[1] for h in hist], acc, cost_per_label)
        if priced is not None:
            out["cost_per_accuracy_point"] = priced
    return out
