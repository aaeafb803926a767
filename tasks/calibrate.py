"""Calibration metrics and post-hoc calibration.

Why this stage exists: uncertainty sampling ranks items by the model's class
probabilities, so if those probabilities are badly calibrated the ranking is
noise.  Each round measures top-label ECE on a random calibration slice that
active learning never touches, fits a calibrator on it, and gates the query
step: when calibrated ECE stays above the gate the round falls back to
diversity + random selection (``tasks.query.FALLBACK_STRATEGY``).

Conventions: ``proba`` is ``(n, k)`` class probabilities (e.g. from
``predict_proba``), ``y_true_idx`` the true class as a column index into it.
Calibrators are small picklable dataclasses (they travel through Prefect
results and MLflow artifacts, which closures cannot).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, log_softmax, softmax

CALIBRATION_METHODS: tuple[str, ...] = ("temperature", "platt", "isotonic")
MIN_ROWS = 10  # below this (or < 2 classes present) calibration is skipped
_MIN_ROWS = MIN_ROWS
_LOG_T_BOUNDS = (-4.0, 4.0)  # T in [0.018, 54.6]: generous, keeps the optimiser finite
_TINY = 1e-300  # floor before log: keeps log-probs finite without changing them measurably


def _check(proba: Any, y_true_idx: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(proba, dtype=float)
    y = np.asarray(y_true_idx)
    if y.size and np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
        y = y.astype(int)  # e.g. labels that went through a float pandas column
    if p.ndim != 2:
        raise ValueError(f"proba must be a 2-D (n, k) array, got shape {p.shape}")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise ValueError("y_true_idx must be 1-D and have one entry per row of proba")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError("y_true_idx must hold integer column indices into proba")
    return p, y.astype(int)


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------


class ReliabilityCurve(NamedTuple):
    """Per-bin mean confidence, accuracy and count (NaN confidence/accuracy for empty bins)."""

    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each confidence: bins ``(i/B, (i+1)/B]``, 0 goes to bin 0.

    ``searchsorted`` against the interior edges (side="left") puts a value equal
    to an edge into the lower bin, i.e. right-closed bins, without the
    ``ceil(conf * B)`` floating-point surprises.
    """
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], conf, side="left")


def _top_label(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(float)


def reliability_curve(
    proba: np.ndarray, y_true_idx: np.ndarray, n_bins: int = 15, *, adaptive: bool = False
) -> ReliabilityCurve:
    """Top-label reliability curve.

    Equal-width bins by default; ``adaptive=True`` gives equal-mass bins: rows
    sorted by confidence (stable, so ties are split by row order) and cut into
    ``n_bins`` groups whose sizes differ by at most one (fewer, non-empty bins
    when there are fewer rows than bins).
    """
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    p, y = _check(proba, y_true_idx)
    conf, correct = _top_label(p, y)
    if adaptive:
        order = np.argsort(conf, kind="stable")
        groups = [g for g in np.array_split(order, min(n_bins, max(1, conf.size))) if g.size]
    else:
        b = _bin_index(conf, n_bins)
        groups = [np.flatnonzero(b == i) for i in range(n_bins)]
    count = np.array([g.size for g in groups], dtype=int)
    with np.errstate(invalid="ignore"):
        confidence = np.array([conf[g].mean() if g.size else np.nan for g in groups])
        accuracy = np.array([correct[g].mean() if g.size else np.nan for g in groups])
    return ReliabilityCurve(confidence, accuracy, count)


def expected_calibration_error(
    proba: np.ndarray, y_true_idx: np.ndarray, n_bins: int = 15, adaptive: bool = False
) -> float:
    """Top-label ECE: ``sum_b (n_b / N) |accuracy_b - confidence_b|``.

    Equal-width bins ``(0, 1/B], (1/B, 2/B], ...`` (confidence exactly 0 in the
    first bin), or equal-mass bins with ``adaptive=True`` (less sensitive to the
    pile-up of confident predictions in the last bins).  NaN for no rows.
    """
    curve = reliability_curve(proba, y_true_idx, n_bins, adaptive=adaptive)
    n = curve.count.sum()
    if n == 0:
        return float("nan")
    nonempty = curve.count > 0
    gaps = np.abs(curve.accuracy[nonempty] - curve.confidence[nonempty])
    return float(np.sum(curve.count[nonempty] * gaps) / n)


def brier_score(proba: np.ndarray, y_true_idx: np.ndarray) -> float:
    """Multiclass Brier score: mean over rows of ``sum_k (p_k - onehot_k)^2`` (in [0, 2]).

    Note: for two classes this is twice scikit-learn's binary
    ``brier_score_loss`` (which scores only the positive column).
    """
    p, y = _check(proba, y_true_idx)
    if p.shape[0] == 0:
        return float("nan")
    onehot = np.zeros_like(p)
    onehot[np.arange(p.shape[0]), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def negative_log_likelihood(proba: np.ndarray, y_true_idx: np.ndarray) -> float:
    """Mean ``-log p_true`` (probabilities floored at 1e-300 to stay finite)."""
    p, y = _check(proba, y_true_idx)
    return float(-np.mean(np.log(np.maximum(p[np.arange(p.shape[0]), y], _TINY))))


def reliability_diagram(
    proba: np.ndarray, y_true_idx: np.ndarray, title: str = "Reliability", *, n_bins: int = 15
) -> Figure:
    """Reliability diagram (accuracy bars per confidence bin, diagonal, ECE in the title).

    Built on a bare ``Figure`` with an Agg canvas rather than pyplot, so it
    never touches a GUI backend or pyplot's global figure list (no leaks in
    long-running workers).  Save with ``fig.savefig(path)`` or log it with
    ``mlflow.log_figure``.
    """
    curve = reliability_curve(proba, y_true_idx, n_bins)
    ece = expected_calibration_error(proba, y_true_idx, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    width = 1.0 / n_bins
    fig = Figure(figsize=(5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    acc = np.nan_to_num(curve.accuracy)
    # empty bins draw nothing: zero-height accuracy and gap bars
    gap = np.where(curve.count > 0, np.nan_to_num(curve.confidence) - acc, 0.0)
    ax.bar(centres, acc, width=width, edgecolor="black", color="tab:blue", alpha=0.8, label="accuracy")
    ax.bar(
        centres,
        gap,
        bottom=acc,
        width=width,
        edgecolor="tab:red",
        color="tab:red",
        alpha=0.25,
        hatch="//",
        label="gap",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top label)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} (ECE = {ece:.3f}, n = {int(curve.count.sum())})")
    ax.legend(loc="upper left")
    return fig


# ---------------------------------------------------------------------------
# temperature scaling
# ---------------------------------------------------------------------------


def _looks_like_proba(z: np.ndarray) -> bool:
    return bool(z.size and np.all(z >= 0) and np.all(z <= 1) and np.allclose(z.sum(axis=1), 1.0, atol=1e-6))


def _log_proba(proba: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(proba, _TINY))


def fit_temperature(logits_or_proba: np.ndarray, y_true_idx: np.ndarray, *, is_proba: bool | None = None) -> float:
    """Temperature T > 0 minimising the NLL of ``softmax(z / T)`` (Guo et al., 2017).

    Accepts logits or probabilities (auto-detected: non-negative rows summing to
    1 are probabilities; force with ``is_proba``).  Probabilities are turned
    into log-probabilities, which differ from the logits only by a per-row
    constant, so ``softmax(log p / T)`` equals ``softmax(logits / T)``.
    The search is over ``log T`` in [-4, 4] (bounded Brent), which keeps T
    positive without a constraint.  Returns 1.0 when there is nothing to fit.
    """
    z = np.asarray(logits_or_proba, dtype=float)
    _, y = _check(z, y_true_idx)
    if z.shape[0] == 0 or z.shape[1] < 2:
        return 1.0
    if is_proba is None:
        is_proba = _looks_like_proba(z)
    if is_proba:
        z = _log_proba(z)
    rows = np.arange(z.shape[0])

    def nll(log_t: float) -> float:
        return float(-np.mean(log_softmax(z / np.exp(log_t), axis=1)[rows, y]))

    res = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def apply_temperature(proba: np.ndarray, T: float) -> np.ndarray:
    """``softmax(log p / T)``: T > 1 softens, T < 1 sharpens; argmax unchanged."""
    if not T > 0:
        raise ValueError(f"temperature must be > 0, got {T}")
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2:
        raise ValueError("proba must be 2-D")
    if p.shape[1] == 0 or p.shape[0] == 0:
        return p.copy()
    return softmax(_log_proba(p) / T, axis=1)


# ---------------------------------------------------------------------------
# calibrators
# ---------------------------------------------------------------------------


def _renormalise(q: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1; an all-zero row falls back to the uncalibrated row."""
    s = q.sum(axis=1, keepdims=True)
    out = np.where(s > 0, q / np.where(s > 0, s, 1.0), fallback)
    return out


@dataclass
class IdentityCalibrator:
    """Returns the probabilities unchanged (used when calibration is skipped)."""

    def __call__(self, proba: np.ndarray) -> np.ndarray:
        return np.asarray(proba, dtype=float).copy()


@dataclass
class TemperatureCalibrator:
    temperature: float

    def __call__(self, proba: np.ndarray) -> np.ndarray:
        return apply_temperature(proba, self.temperature)


def _logit(p: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    p = np.clip(p, eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def _fit_sigmoid(f: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Platt's sigmoid ``P(y=1|f) = 1 / (1 + exp(-(a f + b)))`` on feature f.

    Fitted with Platt's (1999) smoothed targets ``(N+ + 1)/(N+ + 2)`` and
    ``1/(N- + 2)``: they act as a prior, stop the fit from diverging on
    separable data, and give a sensible map even when a class is absent from
    the calibration slice (its column is driven towards a small probability).
    """
    n_pos = float(t.sum())
    n_neg = float(t.size - n_pos)
    target = np.where(t > 0, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = w[0] * f + w[1]
        # cross-entropy with soft targets, written with logaddexp for stability
        ll = target * np.logaddexp(0.0, -s) + (1.0 - target) * np.logaddexp(0.0, s)
        g = expit(s) - target
        return float(ll.sum()), np.array([np.dot(g, f), g.sum()])

    # start from the identity map (a=1, b=0 on logit(p)); the problem is convex
    res = minimize(loss, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return float(res.x[0]), float(res.x[1])


@dataclass
class PlattCalibrator:
    """One-vs-rest Platt scaling on ``logit(p_k)``, renormalised across classes.

    ``logit(p_k)`` is the natural score for a sigmoid: for a binary logistic
    model it *is* the decision function.  ``a`` and ``b`` hold one slope and
    intercept per class.
    """

    a: np.ndarray = field(default_factory=lambda: np.ones(0))
    b: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __call__(self, proba: np.ndarray) -> np.ndarray:
        p = np.asarray(proba, dtype=float)
        q = expit(self.a[None, :] * _logit(p) + self.b[None, :])
        return _renormalise(q, p)


@dataclass
class IsotonicCalibrator:
    """One-vs-rest isotonic regression of ``1[y = k]`` on ``p_k``, renormalised.

    Non-parametric, so it can fix any monotone distortion, but it needs more
    data than temperature/Platt and produces step functions (ties, exact 0s).
    """

    regressors: list[Any] = field(default_factory=list)

    def __call__(self, proba: np.ndarray) -> np.ndarray:
        p = np.asarray(proba, dtype=float)
        q = np.column_stack([r.predict(p[:, k]) for k, r in enumerate(self.regressors)]) if p.shape[0] else p.copy()
        return _renormalise(q, p)


def fit_calibrator(method: str, proba_cal: np.ndarray, y_cal_idx: np.ndarray) -> Any:
    """Fit a calibrator on a calibration slice; returns ``calibrator(proba) -> proba``.

    ``"temperature"`` (one parameter, cannot change the argmax: the safe default),
    ``"platt"`` (one-vs-rest sigmoid on logit(p_k), two parameters per class) or
    ``"isotonic"`` (one-vs-rest isotonic regression).  Multi-column maps are
    renormalised so rows sum to 1.  An empty slice gives :class:`IdentityCalibrator`
    (also the calibrator to use when :func:`calibration_report` skipped calibration).
    """
    p, y = _check(proba_cal, y_cal_idx)
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    if p.shape[0] == 0:
        return IdentityCalibrator()  # nothing to fit on
    if method == "temperature":
        return TemperatureCalibrator(fit_temperature(p, y, is_proba=True))
    if method == "platt":
        k = p.shape[1]
        F = _logit(p)
        ab = [_fit_sigmoid(F[:, j], (y == j).astype(float)) for j in range(k)]
        return PlattCalibrator(a=np.array([a for a, _ in ab]), b=np.array([b for _, b in ab]))
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        regs = [
            IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p[:, j], (y == j).astype(float))
            for j in range(p.shape[1])
        ]
        return IsotonicCalibrator(regressors=regs)
    raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")


# ---------------------------------------------------------------------------
# report + gate
# ---------------------------------------------------------------------------


def _two_folds(y: np.ndarray, seed: int) -> np.ndarray:
    """Stratified 2-fold assignment (0/1 per row): each class's rows are shuffled and alternated."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(y.shape[0], dtype=int)
    offset = 0
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        fold[rows] = (np.arange(rows.size) + offset) % 2
        offset += rows.size  # keeps the two folds' sizes within one of each other
    return fold


def cross_fitted_proba(method: str, proba_cal: np.ndarray, y_cal_idx: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Out-of-fold calibrated probabilities: fit on one half, apply to the other, and swap.

    Measuring a calibrator on the rows it was fitted on flatters it (isotonic
    regression can drive in-sample ECE to ~0); 2-fold cross-fitting gives an
    honest estimate while still using every calibration row once.
    """
    p, y = _check(proba_cal, y_cal_idx)
    fold = _two_folds(y, seed)
    out = np.empty_like(p)
    for f in (0, 1):
        fit_rows, eval_rows = fold != f, fold == f
        if not eval_rows.any():
            continue
        if not fit_rows.any():
            out[eval_rows] = p[eval_rows]
            continue
        out[eval_rows] = fit_calibrator(method, p[fit_rows], y[fit_rows])(p[eval_rows])
    return out


@dataclass(frozen=True)
class CalibrationReport:
    """Calibration of one model on the calibration slice, and the query gate's verdict.

    ``*_before`` are the model's own probabilities; ``*_after`` come from 2-fold cross-fitting
    (:func:`cross_fitted_proba`). ``temperature`` is set for ``method="temperature"`` only.
    ``judged`` is False when the round had too few trusted calibration items to judge the gate
    (``needed`` says how many): then the gate counts as passed, so no fallback is taken on an
    ECE measured on a handful of items.
    """

    method: str
    n_rows: int
    gate: float
    gate_passed: bool
    ece_before: float
    ece_after: float
    ece_adaptive_before: float = float("nan")
    ece_adaptive_after: float = float("nan")
    brier_before: float = float("nan")
    brier_after: float = float("nan")
    cross_fitted: bool = False
    note: str = ""
    temperature: float | None = None
    judged: bool = True
    needed: int | None = None

    @classmethod
    def not_judged(cls, n_rows: int, needed: int, gate: float, method: str = "temperature") -> "CalibrationReport":
        """Too few trusted calibration items to judge the gate: it passes, its ECEs are unknown (NaN)."""
        return cls(method=method, n_rows=int(n_rows), gate=float(gate), gate_passed=True, ece_before=float("nan"),
                   ece_after=float("nan"), note=f"not judged: {n_rows} of the {needed} calibration items needed",
                   judged=False, needed=int(needed))

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly, for logs and artifacts (``temperature`` only when set)."""
        out = asdict(self)
        if self.temperature is None:
            out.pop("temperature")
        return out


def calibration_report(
    proba_cal: np.ndarray,
    y_cal_idx: np.ndarray,
    method: str = "temperature",
    gate: float = 0.10,
    *,
    n_bins: int = 15,
    seed: int = 0,
) -> CalibrationReport:
    """Calibration metrics before/after and the query gate (``gate_passed``: ``ece_after <= gate``).

    The "after" numbers come from 2-fold cross-fitting
    (:func:`cross_fitted_proba`), never from evaluating a calibrator on the
    rows it was fitted on.  ``temperature`` is fitted on the whole slice: it is
    the value to apply downstream.  For platt/isotonic, get the calibrator with
    ``fit_calibrator(method, proba_cal, y_cal_idx)``.

    With fewer than 10 rows or fewer than 2 classes present, calibration is
    skipped (identity: after = before, temperature 1.0) and ``note`` says why;
    with no rows at all the ECEs are NaN and the gate fails, so the round uses
    the diversity + random fallback rather than trusting unmeasured scores.
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    p, y = _check(proba_cal, y_cal_idx)
    n, n_classes = p.shape[0], np.unique(y).size
    before = {
        "ece": expected_calibration_error(p, y, n_bins),
        "ece_adaptive": expected_calibration_error(p, y, n_bins, adaptive=True),
        "brier": brier_score(p, y),
    }
    if n < _MIN_ROWS or n_classes < 2 or p.shape[1] < 2:
        cross_fitted = False
        note = (f"calibration skipped (identity): {n} rows and {n_classes} classes present; "
                f"needs >= {_MIN_ROWS} rows and >= 2 classes")
        after = dict(before)
        temperature = 1.0
    else:
        q = cross_fitted_proba(method, p, y, seed=seed)
        after = {
            "ece": expected_calibration_error(q, y, n_bins),
            "ece_adaptive": expected_calibration_error(q, y, n_bins, adaptive=True),
            "brier": brier_score(q, y),
        }
        temperature = fit_temperature(p, y, is_proba=True) if method == "temperature" else None
        cross_fitted, note = True, "after-metrics are 2-fold cross-fitted (out-of-fold)"
    ece_after = float(after["ece"])
    return CalibrationReport(
        method=method, n_rows=int(n), gate=float(gate), gate_passed=bool(np.isfinite(ece_after) and ece_after <= gate),
        ece_before=float(before["ece"]), ece_after=ece_after,
        ece_adaptive_before=float(before["ece_adaptive"]), ece_adaptive_after=float(after["ece_adaptive"]),
        brier_before=float(before["brier"]), brier_after=float(after["brier"]), cross_fitted=cross_fitted, note=note,
        temperature=float(temperature) if method == "temperature" else None)
