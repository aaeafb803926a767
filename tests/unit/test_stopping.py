"""Stopping rules: each rule has a case that fires and one that does not."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from labelloop.tasks import stopping as st


def hist(*pairs):
    return [{"labels": n, "macro_f1": f} for n, f in pairs]


def test_budget_rule():
    assert st.budget_rule(500, 500)[0] is True
    assert "500 of 500" in st.budget_rule(500, 500)[1]
    assert st.budget_rule(499, 500) == (False, None)


def test_target_rule():
    h = hist((50, 0.70), (100, 0.91))
    fired, why = st.target_rule(h, 0.90)
    assert fired and "0.910" in why
    assert st.target_rule(h, 0.95) == (False, None)
    assert st.target_rule([], 0.5) == (False, None)
    assert st.target_rule(h, None) == (False, None)


def test_marginal_gain_fires_on_a_plateau():
    # 0.800 -> 0.803 over 150 labels: 2e-5 per label < 1e-4
    h = hist((100, 0.60), (150, 0.800), (200, 0.801), (250, 0.802), (300, 0.803))
    fired, why = st.marginal_gain_rule(h, 1e-4, window=3)
    assert fired and "150 labels" in why


def test_marginal_gain_does_not_fire_while_learning():
    h = hist((100, 0.60), (150, 0.65), (200, 0.70), (250, 0.74))
    assert st.marginal_gain_rule(h, 1e-4, window=3) == (False, None)  # 0.14 / 150 = 9e-4 per label


def test_marginal_gain_needs_a_full_window_and_labels():
    assert st.marginal_gain_rule(hist((100, 0.8), (150, 0.8)), 1e-4, window=3) == (False, None)
    # no labels added in the window: no evidence
    assert st.marginal_gain_rule(hist((100, 0.8), (100, 0.8)), 1e-4, window=1) == (False, None)
    with pytest.raises(ValueError):
        st.marginal_gain_rule(hist((1, 0.1), (2, 0.2)), 1e-4, window=0)


def test_marginal_gain_fires_when_the_curve_drops():
    assert st.marginal_gain_rule(hist((100, 0.8), (150, 0.7)), 0.0, window=1)[0] is True


def test_cohen_kappa_matches_sklearn_and_degenerate_case():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, 200)
    b = np.where(rng.random(200) < 0.8, a, rng.integers(0, 3, 200))
    assert st.cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    # hand-computed: p_o = 0.75, p_e = 0.5*0.5 + 0.5*0.5 = 0.5 -> kappa 0.5
    assert st.cohen_kappa(["x", "x", "y", "y"], ["x", "y", "y", "y"]) == pytest.approx((0.75 - 0.5) / 0.5)
    assert st.cohen_kappa(["a"] * 5, ["a"] * 5) == 1.0  # sklearn gives NaN here


def test_stabilising_predictions_fires_when_successive_models_agree():
    base = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0] * 10)
    preds = [np.roll(base, 3), base.copy(), base.copy(), base.copy(), base.copy()]
    fired, why = st.stabilising_predictions_rule(preds, 0.99, window=3)
    assert fired and "stabilised" in why


def test_stabilising_predictions_does_not_fire_while_models_change():
    base = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0] * 10)
    changed = base.copy()
    changed[:10] = (changed[:10] + 1) % 3  # 10 % of the stop set flips in the last round
    preds = [base, base, base, changed]
    assert st.stabilising_predictions_rule(preds, 0.99, window=3) == (False, None)
    assert st.stabilising_predictions_rule(preds[:2], 0.5, window=3) == (False, None)  # too few rounds
    assert st.stabilising_predictions_rule(None, 0.99) == (False, None)


def test_should_stop_combines_rules_in_order():
    h = hist((100, 0.60), (150, 0.800), (200, 0.801), (250, 0.802), (300, 0.803))
    assert st.should_stop(h, budget=1000, spent=300) == (False, None)  # only the budget rule is on
    stop, why = st.should_stop(h, budget=300, spent=300, target=0.5, min_gain_per_label=1e-4)
    assert stop and why.startswith("budget")  # budget is checked first
    stop, why = st.should_stop(h, budget=1000, spent=300, target=0.8)
    assert stop and why.startswith("target")
    stop, why = st.should_stop(h, budget=1000, spent=300, target=0.9, min_gain_per_label=1e-4)
    assert stop and why.startswith("gain per label")
    same = [np.arange(20) % 2] * 4
    stop, why = st.should_stop(h, budget=1000, spent=300, stability_kappa=0.99, stop_set_predictions=same)
    assert stop and "stabilised" in why
    assert st.should_stop(h, budget=1000, spent=300, target=0.9, min_gain_per_label=1e-5) == (False, None)
