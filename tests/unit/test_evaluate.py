from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from labelloop.tasks.evaluate import (area_under_curve, bootstrap_mean_interval, classification_metrics, label_efficiency,
                            labels_to_reach)


def test_classification_metrics_match_sklearn():
    classes = ["a", "b", "c"]
    proba = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]])
    y = ["a", "b", "b", "c"]
    pred = ["a", "b", "c", "a"]
    m = classification_metrics(y, proba, classes)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred)) == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, labels=classes, average="macro", zero_division=0))
    assert m["recall_b"] == pytest.approx(0.5) and m["recall_c"] == 0.0 and m["recall_a"] == 1.0


def test_labels_to_reach_interpolates():
    # 0.6 at 100, 0.8 at 200: 0.7 is reached half-way, at 150 labels
    assert labels_to_reach([100, 200, 300], [0.6, 0.8, 0.9], 0.7) == pytest.approx(150.0)
    assert labels_to_reach([100, 200], [0.6, 0.8], 0.5) == 100.0
    assert labels_to_reach([100, 200], [0.6, 0.8], 0.95) is None


def test_label_efficiency_is_random_over_strategy():
    # random reaches 0.8 at 400 labels, the strategy at 200: 2x
    eff = label_efficiency([100, 200, 300, 400], [0.5, 0.6, 0.7, 0.8], [100, 200], [0.6, 0.8], 0.8)
    assert eff == pytest.approx(2.0)
    # the strategy never gets there
    assert label_efficiency([100, 200], [0.5, 0.9], [100, 200], [0.5, 0.6], 0.8) is None
    # random never gets there: a lower bound from random's last point (200 / 100)
    assert label_efficiency([100, 200], [0.5, 0.6], [100, 200], [0.85, 0.9], 0.8) == pytest.approx(2.0)


def test_area_under_curve_is_mean_height():
    assert area_under_curve([0, 100], [0.5, 0.7]) == pytest.approx(0.6)
    assert area_under_curve([0, 50, 100], [0.0, 1.0, 1.0]) == pytest.approx(0.75)
    assert area_under_curve([10], [0.4]) == pytest.approx(0.4)
    assert math.isnan(area_under_curve([], []))


def test_cost_per_accuracy_point_hand_computed():
    from labelloop.tasks.evaluate import cost_per_accuracy_point

    # 150 labels bought after the seed, 15 accuracy points gained, 0.5 per label: 75 / 15 = 5.0
    assert cost_per_accuracy_point([50, 100, 200], [0.60, 0.70, 0.75], 0.5) == pytest.approx(5.0)
    # cost 1 = labels per point: 150 / 15
    assert cost_per_accuracy_point([50, 100, 200], [0.60, 0.70, 0.75]) == pytest.approx(10.0)
    # no gain, or a single point: no price
    assert cost_per_accuracy_point([50, 100], [0.70, 0.70], 0.5) is None
    assert cost_per_accuracy_point([50, 100], [0.70, 0.65], 0.5) is None
    assert cost_per_accuracy_point([50], [0.70], 0.5) is None
    with pytest.raises(ValueError):
        cost_per_accuracy_point([50, 100], [0.6, 0.7], -1.0)


def test_bootstrap_interval_of_identical_values_is_a_point():
    assert bootstrap_mean_interval([1.5, 1.5, 1.5]) == (pytest.approx(1.5), pytest.approx(1.5))


def test_bootstrap_interval_of_two_values_is_their_range():
    # resampled means of [1, 2] are 1 (p=1/4), 1.5 (p=1/2) or 2 (p=1/4): the 2.5th / 97.5th percentiles are 1 and 2
    lo, hi = bootstrap_mean_interval([1.0, 2.0], n_boot=4000)
    assert (lo, hi) == (pytest.approx(1.0), pytest.approx(2.0))
    # a 40 % interval excludes both ends: its 30th / 70th percentiles are the middle mean, 1.5
    assert bootstrap_mean_interval([1.0, 2.0], n_boot=4000, level=0.4) == (pytest.approx(1.5), pytest.approx(1.5))


def test_bootstrap_interval_ignores_missing_values_and_needs_two():
    assert bootstrap_mean_interval([None, float("nan"), 2.0]) is None
    lo, hi = bootstrap_mean_interval([None, 0.8, 1.6, 1.2, float("inf")], n_boot=3000)
    assert 0.8 - 1e-9 <= lo < 1.2 < hi <= 1.6 + 1e-9
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean_interval([1.0, 2.0], level=1.0)
