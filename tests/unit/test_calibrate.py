"""Unit tests for tasks.calibrate: hand-computed metric values and reference-library checks."""

from __future__ import annotations

import io
import math
import pickle

import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy.special import softmax
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss

from labelloop.tasks import calibrate as cal

# Four rows worked out by hand (top-label confidence / correct?):
#   r0 [0.9, 0.1] y=0 -> 0.9, correct      r1 [0.8, 0.2] y=1 -> 0.8, wrong
#   r2 [0.3, 0.7] y=1 -> 0.7, correct      r3 [0.6, 0.4] y=0 -> 0.6, correct
HAND_P = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
HAND_Y = np.array([0, 1, 1, 0])


def _synthetic(n: int = 3000, k: int = 3, scale: float = 3.0, seed: int = 0):
    """Labels drawn from softmax(z): a perfectly calibrated model; softmax(scale * z) is over-confident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, size=(n, k))
    p_true = softmax(z, axis=1)
    y = np.array([rng.choice(k, p=row) for row in p_true])
    return z, p_true, softmax(scale * z, axis=1), y


def test_ece_hand_computed_equal_width_bins():
    # 5 bins (0,.2],(.2,.4],(.4,.6],(.6,.8],(.8,1]; 0.8 sits on an edge -> the lower bin.
    # bin (.4,.6]: {0.6 ok}          |1 - 0.6|  * 1/4 = 0.100
    # bin (.6,.8]: {0.7 ok, 0.8 bad} |0.5 - .75| * 2/4 = 0.125
    # bin (.8,1]:  {0.9 ok}          |1 - 0.9|  * 1/4 = 0.025
    assert cal.expected_calibration_error(HAND_P, HAND_Y, n_bins=5) == pytest.approx(0.25)
    curve = cal.reliability_curve(HAND_P, HAND_Y, n_bins=5)
    np.testing.assert_array_equal(curve.count, [0, 0, 1, 2, 1])
    np.testing.assert_allclose(curve.confidence[2:], [0.6, 0.75, 0.9])
    np.testing.assert_allclose(curve.accuracy[2:], [1.0, 0.5, 1.0])
    assert np.isnan(curve.confidence[0]) and np.isnan(curve.accuracy[1])
    # Two bins: all four rows in (0.5, 1]: mean confidence 0.75 = accuracy 0.75 -> ECE 0.
    assert cal.expected_calibration_error(HAND_P, HAND_Y, n_bins=2) == pytest.approx(0.0)


def test_ece_default_15_bins_hand_case():
    # conf 0.95 right + 0.95 wrong -> bin (14/15, 1]: |0.5 - 0.95| = 0.45 over half the rows;
    # conf 0.55 right -> bin (8/15, 9/15]: |1 - 0.55| = 0.45; 0.5 wrong -> bin (7/15, 8/15]: 0.5.
    p = np.array([[0.95, 0.05], [0.95, 0.05], [0.45, 0.55], [0.5, 0.5]])
    y = np.array([0, 1, 1, 1])
    expected = (2 * 0.45 + 1 * 0.45 + 1 * 0.5) / 4
    assert cal.expected_calibration_error(p, y) == pytest.approx(expected)


def test_ece_bin_edges_right_closed_and_zero_in_first_bin():
    # confidence exactly 0.5 with two bins belongs to (0, 0.5], not (0.5, 1]
    curve = cal.reliability_curve(np.array([[0.5, 0.5]]), np.array([0]), n_bins=2)
    np.testing.assert_array_equal(curve.count, [1, 0])
    # a degenerate all-zero row has confidence 0: first bin
    curve = cal.reliability_curve(np.array([[0.0, 0.0]]), np.array([0]), n_bins=15)
    assert curve.count[0] == 1 and curve.count.sum() == 1
    # argmax of the zero row is class 0 -> "correct", confidence 0 -> ECE 1
    assert cal.expected_calibration_error(np.array([[0.0, 0.0]]), np.array([0])) == pytest.approx(1.0)


def test_adaptive_ece_hand_computed():
    # equal-mass, 2 bins: sorted confidences {0.6 ok, 0.7 ok} | {0.8 bad, 0.9 ok}
    # |1 - 0.65| * 1/2 + |0.5 - 0.85| * 1/2 = 0.35
    assert cal.expected_calibration_error(HAND_P, HAND_Y, n_bins=2, adaptive=True) == pytest.approx(0.35)
    curve = cal.reliability_curve(HAND_P, HAND_Y, n_bins=2, adaptive=True)
    np.testing.assert_array_equal(curve.count, [2, 2])
    # more bins than rows: one row per bin -> mean |correct - conf| = (0.4 + 0.3 + 0.8 + 0.1) / 4
    assert cal.expected_calibration_error(HAND_P, HAND_Y, n_bins=15, adaptive=True) == pytest.approx(0.4)


def test_ece_empty_is_nan():
    assert math.isnan(cal.expected_calibration_error(np.zeros((0, 3)), np.zeros(0, dtype=int)))


def test_brier_hand_and_against_sklearn():
    # (0.5-1)^2 + 0.3^2 + 0.2^2 = 0.38
    assert cal.brier_score(np.array([[0.5, 0.3, 0.2]]), np.array([0])) == pytest.approx(0.38)
    rng = np.random.default_rng(1)
    p1 = rng.uniform(size=200)
    y = (rng.uniform(size=200) < p1).astype(int)
    P = np.column_stack([1 - p1, p1])
    # the multiclass definition counts both columns: twice sklearn's binary Brier score
    assert cal.brier_score(P, y) == pytest.approx(2 * brier_score_loss(y, p1))
    P3 = softmax(rng.normal(size=(200, 3)), axis=1)
    y3 = rng.integers(0, 3, size=200)
    ref = brier_score_loss(y3, P3, labels=[0, 1, 2], scale_by_half=False)
    assert cal.brier_score(P3, y3) == pytest.approx(ref)


def test_apply_temperature_hand_case_and_invariants():
    # T=2 on [0.8, 0.2]: sqrt(0.8)/sqrt(0.2) = 2 -> [2/3, 1/3]
    np.testing.assert_allclose(cal.apply_temperature(np.array([[0.8, 0.2]]), 2.0), [[2 / 3, 1 / 3]])
    _, _, p_over, _ = _synthetic(n=200)
    np.testing.assert_allclose(cal.apply_temperature(p_over, 1.0), p_over, atol=1e-12)
    q = cal.apply_temperature(p_over, 2.5)
    np.testing.assert_allclose(q.sum(axis=1), 1.0)
    np.testing.assert_array_equal(q.argmax(axis=1), p_over.argmax(axis=1))
    with pytest.raises(ValueError):
        cal.apply_temperature(p_over, 0.0)


def test_temperature_recovers_overconfidence_and_reduces_ece():
    z, _, p_over, y = _synthetic()
    T = cal.fit_temperature(p_over, y)
    assert 2.5 < T < 3.5  # the model's logits were multiplied by 3
    # logits and their softmax give the same temperature (log p differs from z by a row constant)
    assert cal.fit_temperature(3 * z, y) == pytest.approx(T, rel=1e-3)
    # T is a minimum of the NLL (checked with sklearn's log_loss)
    nll = lambda t: log_loss(y, cal.apply_temperature(p_over, t), labels=[0, 1, 2])  # noqa: E731
    assert nll(T) <= nll(T * 1.05) and nll(T) <= nll(T / 1.05)
    before = cal.expected_calibration_error(p_over, y)
    after = cal.expected_calibration_error(cal.apply_temperature(p_over, T), y)
    assert before > 0.1 and after < before / 3


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_calibrators_return_valid_probabilities_and_help(method):
    _, _, p_over, y = _synthetic(n=2000, seed=2)
    p_fit, y_fit, p_eval, y_eval = p_over[:1000], y[:1000], p_over[1000:], y[1000:]
    calibrator = cal.fit_calibrator(method, p_fit, y_fit)
    q = calibrator(p_eval)
    assert q.shape == p_eval.shape
    assert np.all(q >= 0) and np.all(q <= 1)
    np.testing.assert_allclose(q.sum(axis=1), 1.0)
    assert cal.expected_calibration_error(q, y_eval) < cal.expected_calibration_error(p_eval, y_eval)
    # calibrators travel through Prefect results / MLflow artifacts: they must pickle
    np.testing.assert_allclose(pickle.loads(pickle.dumps(calibrator))(p_eval), q)


def test_platt_matches_unregularised_logistic_regression_on_logits():
    # Platt's smoothed targets only differ from hard targets by O(1/n): with n=4000 the
    # one-vs-rest sigmoid must match sklearn's (effectively unpenalised) logistic regression.
    rng = np.random.default_rng(3)
    p1 = np.clip(rng.uniform(size=4000), 1e-3, 1 - 1e-3)
    y = (rng.uniform(size=4000) < p1**2).astype(int)  # miscalibrated on purpose
    P = np.column_stack([1 - p1, p1])
    platt = cal.fit_calibrator("platt", P, y)
    f = np.log(p1 / (1 - p1)).reshape(-1, 1)
    lr = LogisticRegression(C=1e12, max_iter=1000).fit(f, y)
    assert platt.a[1] == pytest.approx(lr.coef_[0, 0], abs=0.02)
    assert platt.b[1] == pytest.approx(lr.intercept_[0], abs=0.02)


def test_cross_fitted_proba_is_out_of_fold():
    _, _, p_over, y = _synthetic(n=400, seed=4)
    q = cal.cross_fitted_proba("temperature", p_over, y, seed=7)
    fold = cal._two_folds(y, 7)
    assert abs(int(fold.sum()) - 200) <= 1
    for f in (0, 1):
        T_other = cal.fit_temperature(p_over[fold != f], y[fold != f], is_proba=True)
        np.testing.assert_allclose(q[fold == f], cal.apply_temperature(p_over[fold == f], T_other))


def test_calibration_report_overconfident_model_passes_gate():
    _, _, p_over, y = _synthetic(n=2000, seed=5)
    rep = cal.calibration_report(p_over, y, method="temperature", gate=0.10)
    assert isinstance(rep, cal.CalibrationReport) and rep.judged
    for key in ("ece_before", "ece_after", "ece_adaptive_before", "ece_adaptive_after", "brier_before", "brier_after",
                "temperature", "gate", "gate_passed", "note"):
        assert key in rep.as_dict()
    assert rep.ece_before == pytest.approx(cal.expected_calibration_error(p_over, y))
    assert rep.ece_after < rep.ece_before and rep.brier_after < rep.brier_before
    assert rep.gate_passed is (rep.ece_after <= 0.10) and rep.gate_passed
    assert rep.temperature == pytest.approx(cal.fit_temperature(p_over, y))
    assert rep.cross_fitted is True
    strict = cal.calibration_report(p_over, y, gate=rep.ece_after / 2)
    assert strict.gate_passed is False


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_report_other_methods(method):
    _, _, p_over, y = _synthetic(n=1000, seed=6)
    rep = cal.calibration_report(p_over, y, method=method)
    assert rep.temperature is None and "temperature" not in rep.as_dict()
    assert rep.ece_after < rep.ece_before


def test_calibration_report_skips_tiny_or_single_class_slices():
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    rep = cal.calibration_report(p, np.array([0, 1, 0]))
    assert "skipped" in rep.note and rep.cross_fitted is False
    assert rep.ece_after == rep.ece_before == pytest.approx(cal.expected_calibration_error(p, [0, 1, 0]))
    assert rep.temperature == 1.0
    p12 = np.tile([[0.7, 0.3]], (12, 1))
    one_class = cal.calibration_report(p12, np.zeros(12, dtype=int))
    assert "skipped" in one_class.note
    # ECE = |1 - 0.7| = 0.3 > gate
    assert one_class.ece_after == pytest.approx(0.3) and one_class.gate_passed is False
    empty = cal.calibration_report(np.zeros((0, 2)), np.zeros(0, dtype=int))
    assert math.isnan(empty.ece_after) and empty.gate_passed is False


def test_reliability_diagram_figure():
    fig = cal.reliability_diagram(HAND_P, HAND_Y, "round 3", n_bins=5)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert "round 3" in ax.get_title() and "ECE = 0.250" in ax.get_title()
    diag = ax.lines[0]
    np.testing.assert_allclose(diag.get_xdata(), [0, 1])
    np.testing.assert_allclose(diag.get_ydata(), [0, 1])
    heights = [patch.get_height() for patch in ax.patches[:5]]
    np.testing.assert_allclose(heights, [0, 0, 1.0, 0.5, 1.0])  # per-bin accuracy bars
    gaps = [patch.get_height() for patch in ax.patches[5:10]]
    np.testing.assert_allclose(gaps, [0, 0, 0.6 - 1.0, 0.75 - 0.5, 0.9 - 1.0])  # confidence - accuracy
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
