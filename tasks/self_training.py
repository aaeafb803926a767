"""Self-training on the unlabelled pool: pseudo-labels where the *calibrated* confidence clears a threshold.

Why calibrated: a logistic regression trained on a few hundred labels is over- or under-confident
depending on the data and on C; a raw "0.95" means different things on different data sets, so one
threshold for every data set (issue 16: no per-data-set tuning) only makes sense on probabilities
rescaled on the labelled calibration slice (temperature scaling, :mod:`tasks.calibrate`).

Why capped: pseudo-labels are the model's own guesses; letting them outnumber the human labels lets
the model's mistakes train the model. At most ``max_ratio`` x the human labels are added, the most
confident first.

Pseudo-labels never leave the model: callers tag them ``pseudo`` (a count and the rows in MLflow, the
count in the round's metrics) and never write them where human answers live, so ``labelloop export``
cannot return them. This is an ablation, off by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labelloop.tasks.calibrate import apply_temperature, fit_temperature

DEFAULT_THRESHOLD = 0.95
DEFAULT_MAX_RATIO = 1.0


@dataclass(frozen=True)
class PseudoLabels:
    """``rows``: positions in the pool; ``labels``: class indices; ``confidence``: calibrated top probability."""

    rows: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray
    temperature: float

    def __len__(self) -> int:
        return int(self.rows.size)


def pseudo_labels(proba_pool: np.ndarray, proba_cal: np.ndarray, y_cal: np.ndarray, n_labelled: int, *,
                  threshold: float = DEFAULT_THRESHOLD, max_ratio: float = DEFAULT_MAX_RATIO) -> PseudoLabels:
    """Pool rows whose temperature-calibrated top probability is at least ``threshold``.

    ``proba_cal`` / ``y_cal``: the model's probabilities on the labelled calibration slice and its
    labels (class indices); with fewer than 2 calibration rows nothing is pseudo-labelled (no
    calibration, no trust). At most ``max_ratio * n_labelled`` rows, most confident first (ties:
    lower row first).
    """
    empty = PseudoLabels(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0), float("nan"))
    proba_pool = np.asarray(proba_pool, dtype=float)
    if proba_pool.size == 0 or len(y_cal) < 2:
        return empty
    T = fit_temperature(np.asarray(proba_cal, dtype=float), np.asarray(y_cal, dtype=int), is_proba=True)
    cal = apply_temperature(proba_pool, T)
    conf = cal.max(axis=1)
    rows = np.flatnonzero(conf >= threshold)
    cap = int(max(0.0, max_ratio) * max(0, n_labelled))
    if rows.size > cap:
        order = np.lexsort((rows, -conf[rows]))[:cap]
        rows = np.sort(rows[order])
    return PseudoLabels(rows.astype(np.int64), cal[rows].argmax(axis=1).astype(np.int64), conf[rows], float(T))
