"""tasks/policy.py: each decision of an arm's round, on plain data (no campaign, no Prefect)."""

from __future__ import annotations

import numpy as np
import pytest

from labelloop.tasks.policy import (ArmState, Boost, Calibration, Policy, QueryPolicy, StopPolicy, plan_round, price_per_point,
                          random_share, round_rng, stop_reason)

POLICY = Policy(query=QueryPolicy(strategy="margin", batch_size=25, random_share=0.1, random_ahead_share=0.5),
                stop=StopPolicy(max_labels=100, max_rounds=4), calibration_ece=0.1)


def test_a_trained_active_arm_runs_its_strategy_and_the_random_arm_stays_random():
    active = plan_round(POLICY, ArmState("active", 2, spent=50))
    assert (active.strategy, active.batch_size, active.random_share, active.fallback) == ("margin", 25, 0.1, False)
    rnd = plan_round(POLICY, ArmState("random", 2, spent=50, calibration=Calibration(True, False, 0.3)))
    assert (rnd.strategy, rnd.random_share, rnd.fallback) == ("random", 1.0, False), "no gate on the random arm"


def test_cold_start_and_a_failed_calibration_gate_fall_back_to_diversity_random():
    cold = plan_round(POLICY, ArmState("active", 1, spent=25, trained=False))
    assert cold.cold_start and cold.strategy == "diversity-random" and not cold.fallback
    assert plan_round(POLICY, ArmState("random", 1, spent=25, trained=False)).strategy == "random"
    failed = plan_round(POLICY, ArmState("active", 3, spent=75, calibration=Calibration(True, False, 0.234)))
    assert failed.fallback and failed.strategy == "diversity-random"
    assert "0.234 > 0.10" in failed.fallback_reason
    unjudged = plan_round(POLICY, ArmState("active", 3, spent=75, calibration=Calibration(False, False)))
    assert not unjudged.fallback and unjudged.strategy == "margin", "too few calibration items: no fallback"


def test_the_batch_is_capped_by_the_budget_and_empty_once_stopped():
    assert plan_round(POLICY, ArmState("active", 2, spent=90)).batch_size == 10
    stopped = plan_round(POLICY, ArmState("active", 2, spent=100), stopped="budget spent")
    assert stopped.batch_size == 0 and not stopped.queries


def test_random_share_rises_for_a_drift_boost_and_the_random_ahead_guard():
    q = POLICY.query
    boost = Boost(episode="e1", share=0.3, first_round=3, rounds=2)
    assert random_share(q, "active", 3, boost=boost) == (0.3, "random share raised to 0.30 after drift episode e1")
    assert random_share(q, "active", 5, boost=boost) == (0.1, None), "the boost covers rounds 3 and 4 only"
    share, why = random_share(q, "active", 4, boost=boost, random_ahead_fired=True)
    assert share == 0.5 and why.startswith("random-ahead guard")
    assert random_share(q, "active", 1, random_ahead_fired=True) == (0.1, None), "no previous round in round 1"
    no_random_arm = QueryPolicy(strategy="margin", random_share=0.1, random_arm=False)
    assert random_share(no_random_arm, "active", 4, random_ahead_fired=True)[0] == 0.1


def test_stop_reasons_in_order_and_metric_rules_only_when_judged():
    hist = [{"labels": 25, "macro_f1": 0.5}, {"labels": 50, "macro_f1": 0.95}]
    assert stop_reason(POLICY.stop, 4, 75, hist, judged=True) == "max_rounds (4) reached"
    assert stop_reason(POLICY.stop, 2, 100, hist, judged=True).startswith("budget spent")
    target = StopPolicy(max_labels=100, target_macro_f1=0.9)
    assert stop_reason(target, 2, 50, hist, judged=True).startswith("target reached")
    assert stop_reason(target, 2, 50, hist, judged=False) is None


def test_round_streams_and_the_price_of_a_point():
    a, b = round_rng(0, 2, "active").random(3), round_rng(0, 2, "active").random(3)
    assert np.array_equal(a, b) and not np.array_equal(a, round_rng(0, 2, "random").random(3))
    assert not np.array_equal(a, round_rng(0, 3, "active").random(3))
    price = price_per_point([(25, 25.0, 0.5), (75, 150.0, 0.6)], cost_per_label=2.0)
    assert price == pytest.approx({"labels_per_accuracy_point": 5.0, "cost_per_accuracy_point": 25.0})
    assert price_per_point([(25, 25.0, 0.5)], cost_per_label=0.0) == {}


def test_a_stop_holds_until_the_config_raises_what_caused_it():
    from labelloop.tasks.policy import StopPolicy, stop_reason, stop_still_holds

    stop = StopPolicy(max_labels=100, max_rounds=4)
    spent = stop_reason(stop, 3, 100, [], judged=False)
    capped = stop_reason(stop, 4, 60, [], judged=False)
    assert spent.startswith("budget spent") and capped.startswith("max_rounds")  # the texts it reads
    assert stop_still_holds(stop, spent, spent=100, round_no=3)
    assert not stop_still_holds(StopPolicy(max_labels=150, max_rounds=4), spent, spent=100, round_no=3)
    assert stop_still_holds(stop, capped, spent=60, round_no=4)
    assert not stop_still_holds(StopPolicy(max_labels=100, max_rounds=6), capped, spent=60, round_no=4)
    reached = "target reached (macro_f1 0.900 >= 0.800)"
    assert stop_still_holds(StopPolicy(target_macro_f1=0.8), reached, spent=60, round_no=4, macro_f1=0.9)
    assert not stop_still_holds(StopPolicy(target_macro_f1=0.95), reached, spent=60, round_no=4, macro_f1=0.9)
    assert not stop_still_holds(StopPolicy(), reached, spent=60, round_no=4, macro_f1=0.9)  # target removed
    assert stop_still_holds(StopPolicy(min_gain_per_label=1e-4), "gain per label 1e-05 < ...", spent=60, round_no=4)
    assert not stop_still_holds(StopPolicy(), "gain per label 1e-05 < ...", spent=60, round_no=4)
