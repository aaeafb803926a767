"""Evaluation on the frozen test set, and the plots a person looks at.

Why macro-F1 first: campaigns are usually imbalanced (the interesting class is
rare), and accuracy rewards a model that ignores it. Per-class recall shows
which class a strategy starves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score  # noqa: E402

from labelloop.tasks.calibrate import CalibrationReport  # noqa: E402


@dataclass
class Evaluation:
    """One arm's model after a round: trained on its trusted labels, scored on the test and calibration
    items labelled so far (flows/round.py ``train_and_evaluate``).

    ``metrics`` is the flat name -> value map logged to MLflow and the ledger (``test_macro_f1``,
    ``test_recall_<class>``, ``calibration_ece`` ...; per-class keys make it a mapping, not fields).
    ``judged``: the test set had the ``need_test`` trusted items a verdict needs (champion alias,
    health checks, early stop); below that the metrics are shown with their interval only.
    """

    model: Any  # the fitted scikit-learn Pipeline (tasks.train.train_model)
    metrics: dict[str, float]
    p_test: np.ndarray
    y_test: list[str]
    p_cal: np.ndarray
    y_cal: np.ndarray
    calibration: CalibrationReport
    judged: bool
    need_test: int
    pseudo: Any = None  # self-training's pseudo-labels (item_id, label, confidence), or None: model only


def classification_metrics(y_true: Sequence[str], proba: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """accuracy, macro_f1 and recall_<class> for predictions argmax(proba)."""
    classes = list(classes)
    y_pred = [classes[i] for i in np.asarray(proba).argmax(axis=1)]
    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
    }
    recalls = recall_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    for c, r in zip(classes, recalls):
        out[f"recall_{c}"] = float(r)
    return out


def macro_f1_interval(y_true: Sequence[str], proba: np.ndarray, classes: Sequence[str], *, level: float = 0.95,
                      n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval for macro-F1 over the test items (resampled with their predictions).

    Why: a test set that people are still labelling may hold 40 items one round and 400 a few
    rounds later; a macro-F1 without its uncertainty invites reading noise as progress. The
    statistic is vectorised over resamples (confusion counts per class), so 1,000 resamples of
    a few hundred items take milliseconds. NaNs for an empty test set.
    """
    from scipy.stats import bootstrap

    classes = list(classes)
    idx = {c: i for i, c in enumerate(classes)}
    yt = np.array([idx[y] for y in y_true], dtype=np.int64)
    if yt.size == 0:
        return float("nan"), float("nan")
    yp = np.asarray(proba).argmax(axis=1).astype(np.int64)
    if yt.size == 1:
        f1 = float((yt == yp).all())
        return f1, f1
    k = np.arange(len(classes))[:, None, None]

    def macro_f1(t: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
        t, p = np.atleast_2d(t), np.atleast_2d(p)  # (resamples, n)
        tp = ((t == k) & (p == k)).sum(axis=-1)  # (classes, resamples)
        fp = ((t != k) & (p == k)).sum(axis=-1)
        fn = ((t == k) & (p != k)).sum(axis=-1)
        denom = 2 * tp + fp + fn
        f1 = np.divide(2 * tp, denom, out=np.zeros(denom.shape, dtype=float), where=denom > 0)
        return f1.mean(axis=0)  # sklearn's macro average over the label set, zero_division=0

    res = bootstrap((yt, yp), macro_f1, paired=True, vectorized=True, n_resamples=n_resamples,
                    confidence_level=level, method="percentile", random_state=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return lo, hi


def confusion_figure(y_true: Sequence[str], proba: np.ndarray, classes: Sequence[str], title: str = "") -> Figure:
    classes = list(classes)
    y_pred = [classes[i] for i in np.asarray(proba).argmax(axis=1)]
    cm = confusion_matrix(y_true, y_pred, labels=classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(classes), 1.0 + 0.6 * len(classes)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=8)
    ax.set_title(title or "confusion matrix (frozen test set)")
    fig.tight_layout()
    return fig


def learning_curve_figure(curves: Mapping[str, Sequence[tuple]], metric: str = "macro-F1",
                          title: str = "") -> Figure:
    """One line per arm: labels spent (x) vs the test metric (y).

    Points are ``(labels, score)`` or ``(labels, score, ci_low, ci_high)``; with an interval the
    arm's line gets a shaded 95 % band (a test set people are still labelling is small, and the
    band shows how much of a gap between arms is noise).
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    banded = False
    for arm, pts in curves.items():
        if not pts:
            continue
        pts = sorted(pts)
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        line, = ax.plot(xs, ys, marker="o", label=arm, linestyle="--" if "random" in arm else "-")
        band = [(p[0], p[2], p[3]) for p in pts if len(p) >= 4 and p[2] == p[2] and p[3] == p[3]]
        if band:
            bx, lo, hi = zip(*band)
            ax.fill_between(bx, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
            banded = True
    if banded:
        ax.plot([], [], color="grey", alpha=0.3, linewidth=8, label="95% bootstrap interval")
    ax.set_xlabel("labels")
    ax.set_ylabel(f"test {metric}")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or f"learning curve ({metric})")
    fig.tight_layout()
    return fig


def labels_to_reach(labels: Sequence[int], scores: Sequence[float], goal: float) -> float | None:
    """Labels at which a learning curve first reaches ``goal`` (linear interpolation between points).

    None when it never does within the curve.
    """
    prev_n, prev_s = None, None
    for n, s in zip(labels, scores):
        if s >= goal:
            if prev_n is None or prev_s is None or s == prev_s:
                return float(n)
            return float(prev_n + (goal - prev_s) * (n - prev_n) / (s - prev_s))
        prev_n, prev_s = n, s
    return None


def label_efficiency(random_labels: Sequence[int], random_scores: Sequence[float], labels: Sequence[int],
                     scores: Sequence[float], goal: float) -> float | None:
    """Labels random needs / labels the strategy needs to reach ``goal`` (same run, same test set).

    > 1 means the strategy saves labels. When random never reaches the goal
    but the strategy does, random's last label count is used: the ratio is
    then a lower bound. None when the strategy never reaches the goal.
    """
    mine = labels_to_reach(labels, scores, goal)
    if mine is None:
        return None
    theirs = labels_to_reach(random_labels, random_scores, goal)
    if theirs is None:
        theirs = float(random_labels[-1]) if len(random_labels) else None
    return None if theirs is None else float(theirs) / float(mine)


def area_under_curve(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Normalised area under the learning curve (trapezoids; mean score over the label range)."""
    x = np.asarray(labels, dtype=float)
    y = np.asarray(scores, dtype=float)
    if len(x) < 2 or x[-1] == x[0]:
        return float(y.mean()) if len(y) else float("nan")
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def bootstrap_mean_interval(values: Sequence[float], *, n_boot: int = 2000, level: float = 0.95,
                            seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (e.g. per-seed label efficiencies).

    Why: with the usual 3-5 seeds a mean label-efficiency ratio can sit above
    1.0 while one seed is well below it. Reporting the interval next to the mean
    tells a team whether "active beats random" survives the seed-to-seed noise
    before they trust it. Percentile intervals from so few values are rough (they
    never reach beyond the smallest and largest value), which is the honest
    reading too. Non-finite values are ignored; None with fewer than two left.
    Deterministic for a given ``seed`` so reruns report the same interval.
    """
    if not 0 < level < 1:
        raise ValueError("level must be between 0 and 1")
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if x.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def cost_per_accuracy_point(labels: Sequence[int], accuracies: Sequence[float], cost_per_label: float = 1.0
                            ) -> float | None:
    """What each point of test accuracy gained since the first point of the curve cost.

    ``cost_per_label * (labels[-1] - labels[0]) / (100 * (accuracies[-1] - accuracies[0]))``.
    Why this figure: a team pays annotators per label, and "how much did the last accuracy
    point cost" compares arms (the active arm should buy its points cheaper than random)
    and says when further rounds stop being worth the money. With ``cost_per_label=1`` it
    is labels per accuracy point. The first point is the seed model, so the seed's own
    labels are not charged. None with fewer than two points or no gain (a model that did
    not improve has no price per point).
    """
    if cost_per_label < 0:
        raise ValueError("cost_per_label must be >= 0")
    if len(labels) != len(accuracies):
        raise ValueError("labels and accuracies must have the same length")
    if len(labels) < 2:
        return None
    gain = 100.0 * (float(accuracies[-1]) - float(accuracies[0]))
    if not gain > 0:
        return None
    return float(cost_per_label) * (float(labels[-1]) - float(labels[0])) / gain
