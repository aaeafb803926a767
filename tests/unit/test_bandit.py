"""tasks/bandit.py and the ``adaptive`` strategy in tasks/policy.py: weights from the measured gain over random."""

from __future__ import annotations

import math

import pytest

from labelloop.tasks.bandit import ADAPTIVE_BASE, MAX_LOG_ODDS, advantage_steps, adaptive_weights
from labelloop.tasks.policy import ArmState, Calibration, Policy, QueryPolicy, StopPolicy, arm_adaptive_weights, plan_round
from labelloop.tasks.strategies import STRATEGIES

ADAPTIVE = Policy(query=QueryPolicy(strategy="adaptive", batch_size=25, random_share=0.1, random_ahead_share=0.5),
                  stop=StopPolicy(max_labels=500, max_rounds=20), calibration_ece=0.1)
LABELS = [50, 100, 150, 200, 250]
RANDOM = [0.40, 0.50, 0.55, 0.60, 0.63]


def _active(f1s, share=0.1):
    return [(n, f, share) for n, f in zip(LABELS, f1s)]


def test_adaptive_is_a_configurable_strategy():
    assert "adaptive" in STRATEGIES


def test_before_any_measured_batch_the_prior_is_the_configured_random_share():
    w = adaptive_weights([], None, prior_random=0.1)
    assert w.weights == {ADAPTIVE_BASE: 0.9, "random": 0.1} and w.steps == 0 and w.advantage is None
    assert "prior" in w.describe()
    # round 1: the active arm's seed point; random's curve not evaluated yet (it queries after the active arm)
    assert adaptive_weights(_active([0.40])[:1], [], prior_random=0.1).steps == 0


def test_advantage_steps_are_the_batches_both_arms_have_measured():
    steps, latest = advantage_steps(_active([0.40, 0.55, 0.62], share=0.2), list(zip(LABELS, RANDOM))[:2])
    # matched label counts: 50 and 100 (150 is past random's curve: no extrapolation)
    assert steps == [(pytest.approx(0.05), 0.2)] and latest == pytest.approx(0.05)


def test_weight_moves_to_random_within_two_rounds_where_uncertainty_sampling_trails():
    behind = _active([0.40, 0.47, 0.50, 0.54, 0.56])  # falls further behind random every batch
    w2 = adaptive_weights(behind[:3], list(zip(LABELS, RANDOM))[:3], prior_random=0.1)
    assert w2.steps == 2 and w2.random_weight > 0.5, w2
    w4 = adaptive_weights(behind, list(zip(LABELS, RANDOM)), prior_random=0.1)
    assert w4.random_weight > w2.random_weight and "behind random by 0.070" in w4.describe()
    # the log-odds are bounded: random keeps at most 1 / (1 + e^-3) of the weight, however far behind
    far = adaptive_weights(_active([0.40, 0.30, 0.30, 0.30, 0.30]), list(zip(LABELS, RANDOM)), prior_random=0.1)
    assert far.random_weight == pytest.approx(1 / (1 + math.exp(-MAX_LOG_ODDS)), abs=1e-4)


def test_weight_stays_on_the_strategy_where_it_pays_and_comes_back_when_evidence_turns():
    ahead = _active([0.40, 0.56, 0.63, 0.68, 0.70])
    w = adaptive_weights(ahead, list(zip(LABELS, RANDOM)), prior_random=0.1)
    assert w.weights[ADAPTIVE_BASE] > 0.9 and w.advantage == pytest.approx(0.07)
    # behind for two batches, then ahead again: the weight on random rises, then falls back
    turn = [(50, 0.40, 0.1), (100, 0.46, 0.1), (150, 0.49, 0.6), (200, 0.60, 0.6), (250, 0.66, 0.3)]
    ws = [adaptive_weights(turn[:k], list(zip(LABELS, RANDOM)), prior_random=0.1).random_weight for k in (1, 3, 5)]
    assert ws[0] == pytest.approx(0.1) and ws[1] > 0.5 and ws[2] < ws[1]


def test_a_mostly_random_batch_is_credited_with_a_bounded_importance_weight():
    # the same advantage change counts twice as much after a half-random batch as after a 10 % one,
    # but no more after a 90 % random batch (1 - s floored at 0.5)
    curve = list(zip(LABELS, RANDOM))
    logit = lambda w: math.log(w.weights[ADAPTIVE_BASE] / w.weights["random"])
    base = logit(adaptive_weights([], None, prior_random=0.3))
    d = {s: logit(adaptive_weights([(50, 0.40, s), (100, 0.49, s)], curve, prior_random=0.3)) - base
         for s in (0.0, 0.5, 0.9)}
    assert d[0.5] == pytest.approx(2 * d[0.0], rel=1e-2) and d[0.9] == pytest.approx(d[0.5], rel=1e-2)


def test_plan_round_runs_margin_with_the_weights_random_share_and_says_why():
    hist = _active([0.40, 0.47, 0.50])
    w = arm_adaptive_weights(ADAPTIVE.query, hist, list(zip(LABELS, RANDOM))[:2])
    plan = plan_round(ADAPTIVE, ArmState("active", 3, spent=150, adaptive=w))
    assert plan.strategy == "margin" and plan.random_share == w.random_weight and w.random_weight > 0.1
    assert plan.adaptive is w and plan.share_reason.startswith("adaptive: weights margin")
    # never below the configured share, and the random arm / a failed calibration gate are untouched
    ahead = arm_adaptive_weights(ADAPTIVE.query, _active([0.40, 0.60]), list(zip(LABELS, RANDOM))[:2])
    assert plan_round(ADAPTIVE, ArmState("active", 2, spent=100, adaptive=ahead)).random_share == 0.1
    assert plan_round(ADAPTIVE, ArmState("random", 3, spent=150, adaptive=w)).strategy == "random"
    failed = plan_round(ADAPTIVE, ArmState("active", 3, spent=150, adaptive=w,
                                           calibration=Calibration(True, False, 0.3)))
    assert failed.strategy == "diversity-random" and failed.random_share == 0.1
    # no weights handed over (a first round): the prior
    assert plan_round(ADAPTIVE, ArmState("active", 1, spent=50)).adaptive.weights["random"] == 0.1


def test_other_strategies_and_campaigns_without_a_random_arm_get_no_weights_or_the_prior():
    margin = QueryPolicy(strategy="margin")
    assert arm_adaptive_weights(margin, _active([0.4, 0.5]), list(zip(LABELS, RANDOM))) is None
    alone = QueryPolicy(strategy="adaptive", random_share=0.1, random_arm=False)
    assert arm_adaptive_weights(alone, _active([0.4, 0.3]), list(zip(LABELS, RANDOM))).random_weight == 0.1
