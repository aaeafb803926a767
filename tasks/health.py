"""Per-round health checks: is active learning helping, or quietly hurting?

Active learning can fail in ways a single learning-curve number hides: it
starves a class, it trusts scores from a badly calibrated model, it falls
behind plain random sampling, or it keeps asking for the same kind of item.
Each check here is a pure function returning a :class:`HealthCheck`
(``name, fired, value, threshold, message``), so the round flow can log them
to MLflow (:func:`health_metrics`, :func:`health_tags`), print the fired ones
and store them in the ledger, and a test can pin each one.

A check without the data it needs (the first round has no previous batch, a
campaign without a random arm has no random curve) comes back with
``skipped=True`` and ``fired=False``, so every round logs the same names.

Checks
------
* ``per_class_recall`` — the spread ``max - min`` of per-class recall on the
  frozen test set is above ``max_spread``, or some class's recall fell by more
  than ``max_drop`` from its best value over the last ``window`` rounds.
* ``calibration_ece`` — ECE (after calibration: the quantity the query gate
  uses) above the gate.
* ``random_ahead`` — the random arm's curve, interpolated at the active arm's
  label counts, is above the active arm's at each of its last ``last_k``
  points (by more than ``tolerance``). A campaign runs it with ``last_k`` 1
  (:class:`HealthThresholds`) once both arms are evaluated, and the next
  round's batch acts on it (the random-ahead guard, tasks/policy.py).
* ``batch_similarity`` — mean pairwise cosine similarity of the batch's
  features is more than ``max_ratio`` times that of the pool (computed
  exactly for the whole pool in O(nnz), or on a random sample of it).
* ``neighbourhood_overlap`` — the share of this batch's k-nearest-neighbour
  neighbourhood (in the pool) that the previous batch's neighbourhood also
  covers is well above what a random batch gets: successive batches circle
  the same region.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize

_CHUNK_ELEMENTS = 1 << 22  # bound on dense similarity blocks (4M doubles = 32 MB)


@dataclass
class HealthCheck:
    name: str
    fired: bool
    value: float | None
    threshold: float | None
    message: str
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _skip(name: str, threshold: float | None, why: str) -> HealthCheck:
    return HealthCheck(name=name, fired=False, value=None, threshold=threshold, message=f"skipped: {why}",
                       skipped=True)


# ---------------------------------------------------------------------------
# per-class recall
# ---------------------------------------------------------------------------


def per_class_recall_check(
    recall_history: Sequence[Mapping[str, float]],
    *,
    max_spread: float = 0.5,
    max_drop: float = 0.15,
    window: int = 3,
) -> HealthCheck:
    """Per-class recall diverging.

    ``recall_history``: one ``{class: recall}`` mapping per round, oldest
    first, on the frozen test set (``classification_metrics`` gives the
    values as ``recall_<class>``; :func:`recalls_from_metrics` strips the
    prefix).  Fires when the latest round's ``max - min`` recall exceeds
    ``max_spread``, or when a class's recall is more than ``max_drop`` below
    its best over the previous ``window`` rounds.  ``value`` is the spread.
    """
    name = "per_class_recall"
    if not recall_history or not recall_history[-1]:
        return _skip(name, max_spread, "no per-class recall yet")
    latest = {c: float(r) for c, r in recall_history[-1].items() if r is not None and np.isfinite(r)}
    if len(latest) < 2:
        return _skip(name, max_spread, "fewer than 2 classes with a recall")
    lo = min(latest, key=latest.get)
    hi = max(latest, key=latest.get)
    spread = latest[hi] - latest[lo]
    drops = {}
    for c, r in latest.items():
        earlier = [float(h[c]) for h in recall_history[-1 - window:-1] if c in h and h[c] is not None]
        if earlier and max(earlier) - r > max_drop:
            drops[c] = max(earlier) - r
    parts = []
    if spread > max_spread:
        parts.append(f"recall spread {spread:.2f} > {max_spread:.2f} ({lo}: {latest[lo]:.2f}, {hi}: {latest[hi]:.2f})")
    if drops:
        parts.append("recall fell by more than "
                     f"{max_drop:.2f} over the last {window} rounds for "
                     + ", ".join(f"{c} (-{d:.2f}, now {latest[c]:.2f})" for c, d in sorted(drops.items())))
    if parts:
        return HealthCheck(name, True, spread, max_spread, "; ".join(parts) + ": a strategy may be starving a class; "
                           "consider a class quota")
    return HealthCheck(name, False, spread, max_spread,
                       f"recall spread {spread:.2f} <= {max_spread:.2f}; no class fell by more than {max_drop:.2f}")


def recalls_from_metrics(metrics: Mapping[str, Any], prefix: str = "recall_") -> dict[str, float]:
    """``{"test_recall_spam": 0.8, ...}`` or ``{"recall_spam": ...}`` -> ``{"spam": 0.8}``."""
    out = {}
    bare = prefix[5:] if prefix.startswith("test_") else prefix  # "test_recall_" and "recall_" mean the same
    for k, v in metrics.items():
        key = k[5:] if k.startswith("test_") else k
        if key.startswith(bare) and v is not None:
            out[key[len(bare):]] = float(v)
    return out


# ---------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------


def ece_check(ece: float | None, gate: float = 0.10) -> HealthCheck:
    """ECE above the calibration gate (pass the calibrated ECE, ``calibration_report(...).ece_after``).

    NaN (no calibration rows) fires: the scores are then unmeasured.
    """
    name = "calibration_ece"
    if ece is None:
        return _skip(name, gate, "no calibration measurement")
    if not math.isfinite(ece):
        return HealthCheck(name, True, None, gate, "ECE could not be measured (empty calibration slice)")
    if ece > gate:
        return HealthCheck(name, True, float(ece), gate,
                           f"ECE {ece:.3f} > gate {gate:.2f}: uncertainty scores are not trusted; "
                           "the round falls back to diversity + random selection")
    return HealthCheck(name, False, float(ece), gate, f"ECE {ece:.3f} <= gate {gate:.2f}")


# ---------------------------------------------------------------------------
# random arm ahead
# ---------------------------------------------------------------------------


def _as_curve(curve: Any) -> tuple[np.ndarray, np.ndarray]:
    """``[(labels, score), ...]`` or ``(labels_seq, scores_seq)`` -> sorted arrays."""
    if isinstance(curve, Mapping):
        x, y = curve["labels"], curve.get("macro_f1", curve.get("scores"))
    else:
        pts = list(curve)
        if len(pts) == 2 and all(hasattr(p, "__len__") for p in pts) and len(pts[0]) != 2:
            x, y = pts
        else:
            x = [p[0] for p in pts]
            y = [p[1] for p in pts]
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def random_ahead_check(
    active_curve: Any,
    random_curve: Any,
    *,
    last_k: int = 3,
    tolerance: float = 0.01,
) -> HealthCheck:
    """The random arm ahead of the active arm at equal labels.

    Curves are ``[(labels, score), ...]`` (what ``flows.campaign_state.learning_curves``
    returns per arm), ``(labels, scores)`` or ``{"labels": ..., "macro_f1": ...}``.
    The random curve is linearly interpolated at the active arm's last
    ``last_k`` label counts that lie within its range (no extrapolation).  Fires
    when random is ahead by more than ``tolerance`` at every one of them: one
    noisy round is not enough.  ``value`` is the mean gap (random - active).
    """
    name = "random_ahead"
    if active_curve is None or random_curve is None:
        return _skip(name, tolerance, "no random arm to compare with")
    ax, ay = _as_curve(active_curve)
    rx, ry = _as_curve(random_curve)
    if ax.size == 0 or rx.size == 0:
        return _skip(name, tolerance, "empty learning curve")
    inside = (ax >= rx[0]) & (ax <= rx[-1])
    xs, ys = ax[inside][-last_k:], ay[inside][-last_k:]
    if xs.size < last_k:
        return _skip(name, tolerance, f"fewer than {last_k} matched label counts")
    gaps = np.interp(xs, rx, ry) - ys
    mean_gap = float(gaps.mean())
    if np.all(gaps > tolerance):
        return HealthCheck(name, True, mean_gap, tolerance,
                           f"random sampling is ahead of the active arm at each of the last {last_k} label counts "
                           f"({', '.join(f'{int(x)}: +{g:.3f}' for x, g in zip(xs, gaps))}); active learning is "
                           "not paying off here: raise the random share or switch strategy")
    return HealthCheck(name, False, mean_gap, tolerance,
                       f"random not ahead at all of the last {last_k} label counts (mean gap {mean_gap:+.3f})")


# ---------------------------------------------------------------------------
# batch convergence
# ---------------------------------------------------------------------------


def _l2(X: Any) -> Any:
    if sp.issparse(X):
        return normalize(sp.csr_matrix(X, dtype=float), norm="l2")
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError("feature matrix must be 2-D")
    return normalize(X, norm="l2")


def mean_pairwise_cosine(X: Any) -> float:
    """Mean cosine similarity over all pairs ``i != j`` of rows, in O(nnz) without a pairwise matrix.

    For unit rows ``sum_{i != j} x_i . x_j = ||sum_i x_i||^2 - sum_i ||x_i||^2``.
    All-zero rows (empty texts) count as similarity 0.  NaN for fewer than 2 rows.
    """
    Xn = _l2(X)
    n = Xn.shape[0]
    if n < 2:
        return float("nan")
    s = np.asarray(Xn.sum(axis=0)).ravel()
    sq = Xn.multiply(Xn).sum() if sp.issparse(Xn) else float(np.einsum("ij,ij->", Xn, Xn))
    return float((s @ s - float(sq)) / (n * (n - 1)))


def batch_similarity_check(
    X_batch: Any,
    X_pool: Any,
    *,
    max_ratio: float = 2.0,
    min_difference: float = 0.01,
    pool_sample: int | None = None,
    rng: np.random.Generator | int | None = 0,
) -> HealthCheck:
    """The query batch more alike than the pool it came from.

    Mean pairwise cosine similarity of the batch vs that of the pool (the
    whole pool by default, exactly and cheaply; ``pool_sample`` rows drawn
    with ``rng`` otherwise).  Fires when the batch's is more than
    ``max_ratio`` times the pool's *and* exceeds it by at least
    ``min_difference`` (TF-IDF pools have tiny mean similarities, where a
    ratio alone is noisy).  ``value`` is the ratio.
    """
    name = "batch_similarity"
    if X_batch is None or X_pool is None or X_batch.shape[0] < 2 or X_pool.shape[0] < 2:
        return _skip(name, max_ratio, "batch or pool has fewer than 2 rows")
    if pool_sample is not None and pool_sample < X_pool.shape[0]:
        idx = np.random.default_rng(rng).choice(X_pool.shape[0], size=pool_sample, replace=False)
        X_pool = X_pool[np.sort(idx)]
    b = mean_pairwise_cosine(X_batch)
    p = mean_pairwise_cosine(X_pool)
    ratio = b / p if p > 0 else (math.inf if b > 0 else 1.0)
    msg = f"batch mean pairwise cosine {b:.3f} vs pool {p:.3f} (x{ratio:.1f})"
    if ratio > max_ratio and b - p >= min_difference:
        return HealthCheck(name, True, float(ratio), max_ratio,
                           msg + f" > x{max_ratio:.1f}: the batch is converging on one region of the pool")
    return HealthCheck(name, False, float(ratio), max_ratio, msg)


def _knn_sets(Xq: Any, Xr: Any, k: int, chunk_elements: int = _CHUNK_ELEMENTS) -> np.ndarray:
    """Indices (into Xr) of the k most cosine-similar reference rows of each query row: (m, k).

    Blocked over the reference rows so no block exceeds ``chunk_elements``
    entries; keeps a running top-k per query row.
    """
    m, n = Xq.shape[0], Xr.shape[0]
    k = min(k, n)
    best_s = np.full((m, 0), -np.inf)
    best_i = np.zeros((m, 0), dtype=int)
    step = max(k, chunk_elements // max(m, 1))
    for c0 in range(0, n, step):
        c1 = min(n, c0 + step)
        S = Xq @ Xr[c0:c1].T
        S = S.toarray() if sp.issparse(S) else np.asarray(S)
        cand_s = np.concatenate([best_s, S], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(c0, c1), (m, c1 - c0))], axis=1)
        if cand_s.shape[1] > k:
            top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
            best_s = np.take_along_axis(cand_s, top, axis=1)
            best_i = np.take_along_axis(cand_i, top, axis=1)
        else:
            best_s, best_i = cand_s, cand_i
    return best_i


def neighbourhood_overlap(X_batch: Any, X_prev_batch: Any, X_ref: Any, k: int = 10) -> float:
    """Share of this batch's k-NN neighbourhood (rows of ``X_ref``) that the previous batch's also holds.

    ``|N(B_t) ∩ N(B_{t-1})| / |N(B_t)|`` where ``N(B)`` is the union of the
    ``k`` nearest reference rows (cosine) of each batch row.  Pass the same
    reference set (e.g. the round's pool plus the two batches) for both.
    """
    R = _l2(X_ref)
    now = set(_knn_sets(_l2(X_batch), R, k).ravel().tolist())
    prev = set(_knn_sets(_l2(X_prev_batch), R, k).ravel().tolist())
    return len(now & prev) / len(now) if now else 0.0


def neighbourhood_overlap_check(
    X_batch: Any,
    X_prev_batch: Any,
    X_ref: Any,
    *,
    k: int = 10,
    max_ratio: float = 2.0,
    min_overlap: float = 0.25,
    rng: np.random.Generator | int | None = 0,
) -> HealthCheck:
    """Successive query batches circling the same neighbourhood of the pool.

    The overlap of :func:`neighbourhood_overlap` depends a lot on the data
    (short texts have "hub" neighbours that many rows share), so it is
    compared with a baseline measured on the spot: the overlap of a uniform
    random sample of ``X_ref`` (same size as the batch, drawn with ``rng``)
    with the previous batch's neighbourhood.  Fires when the overlap is at
    least ``max_ratio`` times the baseline *and* at least ``min_overlap``.
    ``value`` is the overlap.
    """
    name = "neighbourhood_overlap"
    if X_batch is None or X_prev_batch is None or X_ref is None:
        return _skip(name, min_overlap, "no previous batch")
    if X_batch.shape[0] == 0 or X_prev_batch.shape[0] == 0 or X_ref.shape[0] == 0:
        return _skip(name, min_overlap, "empty batch or reference set")
    R = _l2(X_ref)
    prev = set(_knn_sets(_l2(X_prev_batch), R, k).ravel().tolist())
    now = set(_knn_sets(_l2(X_batch), R, k).ravel().tolist())
    ov = len(now & prev) / len(now) if now else 0.0
    sample = np.random.default_rng(rng).choice(R.shape[0], size=min(X_batch.shape[0], R.shape[0]), replace=False)
    base_set = set(_knn_sets(R[np.sort(sample)], R, k).ravel().tolist())
    base = len(base_set & prev) / len(base_set) if base_set else 0.0
    msg = (f"{ov:.0%} of this batch's {k}-NN neighbourhood was already in the previous batch's "
           f"(a random batch: {base:.0%})")
    if ov >= min_overlap and ov >= max_ratio * base:
        return HealthCheck(name, True, ov, min_overlap,
                           msg + f"; >= {max_ratio:.1f}x random and >= {min_overlap:.0%}: batches keep querying "
                           "the same region")
    return HealthCheck(name, False, ov, min_overlap, msg)


# ---------------------------------------------------------------------------
# all of them
# ---------------------------------------------------------------------------


@dataclass
class HealthThresholds:
    recall_max_spread: float = 0.5
    recall_max_drop: float = 0.15
    recall_window: int = 3
    ece_gate: float = 0.10
    random_last_k: int = 1  # the guard acts from the round after random is ahead (README, "the round")
    random_tolerance: float = 0.01
    batch_max_ratio: float = 2.0
    batch_min_difference: float = 0.01
    knn_k: int = 10
    overlap_max_ratio: float = 2.0
    overlap_min: float = 0.25


def run_health_checks(
    *,
    recall_history: Sequence[Mapping[str, float]] | None = None,
    ece: float | None = None,
    active_curve: Any = None,
    random_curve: Any = None,
    X_batch: Any = None,
    X_pool: Any = None,
    X_prev_batch: Any = None,
    thresholds: HealthThresholds | None = None,
) -> list[HealthCheck]:
    """Every health check, in a fixed order; checks without their inputs come back ``skipped``.

    * ``recall_history`` — per round ``{class: recall}`` on the frozen test set (oldest first, this round last)
    * ``ece`` — this round's calibrated ECE (``calibration_report(...).ece_after``); gate from ``thresholds``
    * ``active_curve``, ``random_curve`` — ``[(labels, macro_f1), ...]`` per arm up to this round
    * ``X_batch`` — features of this round's batch; ``X_pool`` — features of the candidates it was chosen from
    * ``X_prev_batch`` — features of the previous round's batch (same featuriser)
    """
    t = thresholds or HealthThresholds()
    checks = [
        per_class_recall_check(recall_history or [], max_spread=t.recall_max_spread, max_drop=t.recall_max_drop,
                               window=t.recall_window),
        ece_check(ece, t.ece_gate),
        random_ahead_check(active_curve, random_curve, last_k=t.random_last_k, tolerance=t.random_tolerance),
        batch_similarity_check(X_batch, X_pool, max_ratio=t.batch_max_ratio,
                               min_difference=t.batch_min_difference),
    ]
    if X_batch is not None and X_prev_batch is not None and X_pool is not None:
        ref = sp.vstack([X_pool, X_prev_batch]) if sp.issparse(X_pool) else np.vstack([X_pool, X_prev_batch])
        checks.append(neighbourhood_overlap_check(X_batch, X_prev_batch, ref, k=t.knn_k,
                                                  max_ratio=t.overlap_max_ratio, min_overlap=t.overlap_min))
    else:
        checks.append(neighbourhood_overlap_check(None, None, None, k=t.knn_k, min_overlap=t.overlap_min))
    return checks


def health_metrics(checks: Sequence[HealthCheck], prefix: str = "health_") -> dict[str, float]:
    """MLflow metrics: ``health_<name>`` (the value) and ``health_<name>_fired`` (0/1); skipped checks omitted."""
    out: dict[str, float] = {}
    for c in checks:
        if c.skipped:
            continue
        if c.value is not None and math.isfinite(c.value):
            out[f"{prefix}{c.name}"] = float(c.value)
        out[f"{prefix}{c.name}_fired"] = float(c.fired)
    return out


def health_tags(checks: Sequence[HealthCheck], prefix: str = "labelloop.health.") -> dict[str, str]:
    """MLflow tags: ``labelloop.health.<name>`` = ``fired: <message>`` / ``ok`` / ``skipped``."""
    return {f"{prefix}{c.name}": ("skipped" if c.skipped else (f"fired: {c.message}" if c.fired else "ok"))
            for c in checks}
