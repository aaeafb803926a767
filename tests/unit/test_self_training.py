"""tasks/self_training.py: pseudo-labels only where the calibrated confidence clears the threshold, capped."""

from __future__ import annotations

import numpy as np

from labelloop.tasks.self_training import pseudo_labels


def _cal(n=200, acc=0.9, conf=0.9, seed=0):
    """A calibration slice on which the model says ``conf`` and is right ``acc`` of the time."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < acc, y, 1 - y)
    p = np.where(pred[:, None] == np.arange(2)[None, :], conf, 1 - conf)
    return p, y


def test_only_rows_above_the_calibrated_threshold_become_pseudo_labels():
    p_cal, y_cal = _cal(acc=0.9, conf=0.9)  # well calibrated: temperature about 1
    pool = np.array([[0.99, 0.01], [0.6, 0.4], [0.02, 0.98], [0.5, 0.5]])
    ps = pseudo_labels(pool, p_cal, y_cal, n_labelled=100, threshold=0.95)
    assert ps.rows.tolist() == [0, 2] and ps.labels.tolist() == [0, 1]
    assert 0.8 < ps.temperature < 1.25 and (ps.confidence >= 0.95).all()


def test_an_overconfident_model_is_trusted_less_after_calibration():
    p_cal, y_cal = _cal(acc=0.7, conf=0.99)  # says 0.99, right 70 % of the time: temperature well above 1
    pool = np.array([[0.99, 0.01], [0.995, 0.005]])
    assert len(pseudo_labels(pool, p_cal, y_cal, n_labelled=100, threshold=0.95)) == 0
    assert len(pseudo_labels(pool, p_cal, y_cal, n_labelled=100, threshold=0.5)) == 2


def test_capped_at_the_human_labels_most_confident_first_and_nothing_without_calibration():
    p_cal, y_cal = _cal()
    pool = np.array([[0.97, 0.03], [0.999, 0.001], [0.98, 0.02], [0.001, 0.999]])
    ps = pseudo_labels(pool, p_cal, y_cal, n_labelled=2, threshold=0.95)
    assert ps.rows.tolist() == [1, 3], "the two most confident, in pool order"
    assert len(pseudo_labels(pool, p_cal[:1], y_cal[:1], n_labelled=10)) == 0
    assert len(pseudo_labels(np.zeros((0, 2)), p_cal, y_cal, n_labelled=10)) == 0
