"""Drift statistics: has the incoming data moved away from the reference?

Pure functions over texts, scores and labels; the drift-watch flow decides
what "new" and "reference" are and emits the Prefect event.

Four complementary views, because each one alone misses a kind of drift:

* :func:`domain_classifier_auc` — *can a model tell the batches apart?*
  The most general test (any change in wording shows up), reported as a
  cross-validated ROC-AUC so it is ≈ 0.5 under no drift whatever the data.
* :func:`population_stability_index` of the model's confidence — *does the
  current model still feel at home?* Catches drift that matters to the
  model even when the words look familiar.
* :func:`label_distribution_shift` of predicted labels — *did the class mix
  move?* (prior shift), which changes which classes need labels.
* :func:`oov_rate` — *how many words has the vocabulary never seen?* The
  TF-IDF features are frozen, so unseen words are invisible to the model.

:func:`drift_report` combines them with thresholds (:data:`DEFAULT_THRESHOLDS`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Callable, Hashable, Iterable, Literal, Mapping, Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

__all__ = [
    "DEFAULT_THRESHOLDS",
    "default_tokenizer",
    "domain_classifier_auc",
    "drift_report",
    "label_distribution_shift",
    "oov_rate",
    "population_stability_index",
]

#: A statistic fires when its value is ``>=`` the threshold.
#:
#: * ``domain_auc`` 0.75 — 0.5 means indistinguishable; 0.7–0.8 is the usual
#:   "acceptable discrimination" band (Hosmer & Lemeshow). Cross-validated AUC
#:   on a few hundred rows per side wobbles by about ±0.05 around 0.5 under no
#:   drift, so 0.75 is far outside noise yet well below what a genuine topic or
#:   style shift produces (> 0.9 on the demo's drifted batch).
#: * ``confidence_psi`` 0.25 — the standard credit-scoring convention:
#:   PSI < 0.1 stable, 0.1–0.25 moderate, ≥ 0.25 significant shift.
#: * ``label_shift`` 0.2 — total-variation distance: 20 % of the predicted
#:   probability mass moved to other classes. Sampling noise for 300 rows and
#:   five classes is ≈ 0.05, and a 0.2 move changes which classes the query
#:   quotas should favour.
#: * ``oov_rate`` 0.2 — one token in five was never seen by the frozen
#:   vectoriser. Typos and rare names keep in-distribution batches at a few
#:   percent; at 20 % a large part of each text is invisible to the model.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "domain_auc": 0.75,
    "confidence_psi": 0.25,
    "label_shift": 0.2,
    "oov_rate": 0.2,
}

# sklearn's default ``token_pattern`` with its default lower-casing, so the
# OOV rate speaks about the same tokens the TF-IDF features see.
_TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")


def default_tokenizer(text: str) -> list[str]:
    """Lower-cased word tokens of 2+ characters (sklearn's default token_pattern)."""
    return _TOKEN_RE.findall(text.lower())


def _subsample(texts: Sequence[str], k: int, rng: np.random.Generator) -> list[str]:
    items = list(texts)
    if len(items) <= k:
        return items
    idx = rng.choice(len(items), size=k, replace=False)
    return [items[i] for i in sorted(idx)]


def domain_classifier_auc(
    reference_texts: Sequence[str],
    new_texts: Sequence[str],
    seed: int = 0,
    cv: int = 5,
    max_rows: int = 5000,
) -> float:
    """Cross-validated ROC-AUC of a classifier predicting "new" vs "reference".

    Both sides are subsampled to the same size ``min(len(ref), len(new),
    max_rows)``: balancing keeps the AUC comparable between a 300-row batch
    and a 30 000-row pool, and ``max_rows`` bounds the cost. TF-IDF is fitted
    on the union (it sees no labels, so nothing leaks into the folds);
    logistic regression is scored with stratified ``cv``-fold ROC-AUC and the
    fold mean is returned. ≈ 0.5 when both samples come from one
    distribution, → 1.0 as they separate.

    Raises:
        ValueError: when either side has fewer than 2 texts (no meaningful CV).
    """
    if len(reference_texts) < 2 or len(new_texts) < 2:
        raise ValueError(
            f"need at least 2 texts per side, got {len(reference_texts)} reference "
            f"and {len(new_texts)} new"
        )
    if cv < 2:
        raise ValueError("cv must be >= 2")
    rng = np.random.default_rng(seed)
    k = min(len(reference_texts), len(new_texts), max_rows)
    ref = _subsample(reference_texts, k, rng)
    new = _subsample(new_texts, k, rng)
    texts = ref + new
    y = np.r_[np.zeros(len(ref), dtype=int), np.ones(len(new), dtype=int)]
    X = TfidfVectorizer(sublinear_tf=True, min_df=1).fit_transform(texts)
    folds = StratifiedKFold(n_splits=min(cv, k), shuffle=True, random_state=seed)
    aucs = []
    for train_idx, test_idx in folds.split(X, y):
        clf = LogisticRegression(max_iter=1000, random_state=seed)
        clf.fit(X[train_idx], y[train_idx])
        aucs.append(roc_auc_score(y[test_idx], clf.predict_proba(X[test_idx])[:, 1]))
    return float(np.mean(aucs))


def population_stability_index(
    reference_scores: Sequence[float] | np.ndarray,
    new_scores: Sequence[float] | np.ndarray,
    n_bins: int = 10,
    eps: float = 1e-4,
) -> float:
    """PSI = Σ_bins (a − e) · ln(a / e).

    ``e`` is the share of reference scores in a bin, ``a`` the share of new
    scores. Bin edges are the reference's quantiles, so every bin holds
    ≈ 1/n_bins of the reference and the statistic weighs all parts of the
    distribution equally. Repeated quantiles (e.g. many confidences of
    exactly 1.0) are merged, so fewer bins may be used. A value equal to an
    edge falls in the upper bin; the outer bins are open-ended so new scores
    outside the reference range still count. Empty bins are floored at
    ``eps`` to keep the log finite (no renormalisation).

    Raises:
        ValueError: on empty inputs or ``n_bins < 1``.
    """
    ref = np.asarray(reference_scores, dtype=float).ravel()
    new = np.asarray(new_scores, dtype=float).ravel()
    if ref.size == 0 or new.size == 0:
        raise ValueError("population_stability_index needs non-empty score arrays")
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    inner = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))
    n_edges = len(inner) + 1
    e = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=n_edges) / ref.size
    a = np.bincount(np.searchsorted(inner, new, side="right"), minlength=n_edges) / new.size
    e = np.maximum(e, eps)
    a = np.maximum(a, eps)
    return float(np.sum((a - e) * np.log(a / e)))


def _distribution(values: Iterable[Hashable], labels: Sequence[Hashable], name: str) -> np.ndarray:
    counts = Counter(values)
    unknown = set(counts) - set(labels)
    if unknown:
        raise ValueError(f"{name} contains labels outside `labels`: {sorted(map(str, unknown))}")
    total = sum(counts.values())
    if total == 0:
        raise ValueError(f"{name} is empty")
    return np.array([counts.get(lab, 0) / total for lab in labels], dtype=float)


def label_distribution_shift(
    reference_labels: Iterable[Hashable],
    new_labels: Iterable[Hashable],
    labels: Sequence[Hashable],
    method: Literal["tv", "js"] = "tv",
) -> float:
    """Distance between two label distributions over ``labels``, in [0, 1].

    * ``"tv"`` (default) — total variation, ½ Σ |p − q|: the share of
      probability mass that has to move, which reads directly as "20 % of the
      tickets changed class".
    * ``"js"`` — Jensen–Shannon divergence with log base 2 (bounded by 1),
      ½ KL(p‖m) + ½ KL(q‖m) with m = (p + q)/2; smoother for small shifts.

    Raises:
        ValueError: on empty inputs or labels not listed in ``labels``.
    """
    p = _distribution(reference_labels, labels, "reference_labels")
    q = _distribution(new_labels, labels, "new_labels")
    if method == "tv":
        return float(0.5 * np.abs(p - q).sum())
    if method == "js":
        m = 0.5 * (p + q)

        def kl(x: np.ndarray) -> float:
            mask = x > 0
            return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

        return 0.5 * kl(p) + 0.5 * kl(q)
    raise ValueError(f"unknown method {method!r}; use 'tv' or 'js'")


def oov_rate(
    reference_texts: Iterable[str],
    new_texts: Iterable[str],
    tokenizer: Callable[[str], list[str]] | None = None,
) -> float:
    """Share of token occurrences in ``new_texts`` absent from the reference vocabulary.

    Counts occurrences, not distinct words: one unseen name repeated in every
    ticket matters more than one stray typo. The default tokenizer matches
    sklearn's ``TfidfVectorizer`` defaults (lower-case, ``\\b\\w\\w+\\b``).
    Returns 0.0 when the new texts contain no tokens at all (nothing is
    unseen; the other statistics cover empty batches).
    """
    tok = tokenizer or default_tokenizer
    vocab: set[str] = set()
    for text in reference_texts:
        vocab.update(tok(text))
    total = unseen = 0
    for text in new_texts:
        for token in tok(text):
            total += 1
            unseen += token not in vocab
    return unseen / total if total else 0.0


def drift_report(
    reference_texts: Sequence[str],
    new_texts: Sequence[str],
    ref_confidence: Sequence[float] | np.ndarray | None,
    new_confidence: Sequence[float] | np.ndarray | None,
    ref_pred_labels: Sequence[Hashable] | None,
    new_pred_labels: Sequence[Hashable] | None,
    labels: Sequence[Hashable],
    thresholds: Mapping[str, float] | None = None,
    *,
    seed: int = 0,
) -> dict:
    """All four statistics, and whether any crossed its threshold.

    ``ref_confidence`` / ``ref_pred_labels`` must come from reference rows
    the model was **not** trained on (e.g. the unlabelled pool or the
    calibration slice): training rows get inflated confidence, which would
    make every new batch look drifted. Pass ``None`` for the model-based
    inputs when no model exists yet; those statistics are then reported as
    ``None`` and never fire.

    ``thresholds`` overrides :data:`DEFAULT_THRESHOLDS` key by key (unknown
    keys are an error — a typo would otherwise silently disable a check);
    use ``math.inf`` to switch a check off.

    Returns a JSON-serialisable dict: ``domain_auc``, ``confidence_psi``,
    ``label_shift``, ``oov_rate`` (float or ``None``), ``drifted`` (bool),
    ``reasons`` (names of the statistics that fired, e.g.
    ``["domain_auc", "oov_rate"]``) and ``thresholds`` (the ones applied).
    """
    merged = dict(DEFAULT_THRESHOLDS)
    if thresholds:
        unknown = set(thresholds) - set(DEFAULT_THRESHOLDS)
        if unknown:
            raise ValueError(
                f"unknown drift thresholds {sorted(unknown)}; known: {sorted(DEFAULT_THRESHOLDS)}"
            )
        merged.update({k: float(v) for k, v in thresholds.items()})

    values: dict[str, float | None] = {
        "domain_auc": domain_classifier_auc(reference_texts, new_texts, seed=seed),
        "confidence_psi": None,
        "label_shift": None,
        "oov_rate": oov_rate(reference_texts, new_texts),
    }
    if ref_confidence is not None and new_confidence is not None:
        values["confidence_psi"] = population_stability_index(ref_confidence, new_confidence)
    if ref_pred_labels is not None and new_pred_labels is not None:
        values["label_shift"] = label_distribution_shift(ref_pred_labels, new_pred_labels, labels)

    reasons = [
        name
        for name, value in values.items()
        if value is not None and not math.isnan(value) and value >= merged[name]
    ]
    return {
        **values,
        "drifted": bool(reasons),
        "reasons": reasons,
        "thresholds": merged,
    }
