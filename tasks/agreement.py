"""Inter-annotator agreement and consensus labels for one annotation batch.

Why this module exists: a round must decide which human labels are trusted
before they train the model.  Two questions are answered here, from the same
long table of annotations:

* *How much do annotators agree?*  (percent agreement, pairwise Cohen's kappa,
  Fleiss' kappa, Krippendorff's alpha).  These gate the batch: a batch whose
  agreement is too low is quarantined by the round flow.
* *What is the label of each item?*  (majority vote, a one-coin model, or
  Dawid–Skene, chosen by the crowd's shape: see :func:`consensus`).

Input shape, shared by every function: a long ``pandas.DataFrame`` with columns
``item_id``, ``annotator`` and ``label`` (one row per submitted annotation).
Skipped annotations are simply absent (rows whose label is null are dropped,
so a backend's "skipped" records can be passed through unchanged).  Not every
annotator labels every item; every function handles that sparsity directly
instead of assuming a complete items × annotators matrix.

If the same annotator labelled the same item more than once (a re-submitted
task), only the *last* row is kept: the ledger returns annotations in time
order and a revised label replaces the earlier one rather than adding a vote.

Undefined statistics are returned as ``nan`` rather than raising, because the
round logs them to MLflow and a batch with, say, a single annotator must still
complete its round.  ``nan`` always means "not enough information", never
"bad agreement"; the gate in the round flow has to treat it explicitly.

This module is pure: numpy / pandas / scikit-learn / ``krippendorff`` only, no
I/O, no Prefect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "DawidSkeneResult",
    "majority_vote",
    "dawid_skene",
    "one_coin",
    "consensus",
    "crowd_shape",
    "choose_method",
    "CONSENSUS_METHODS",
    "percent_agreement",
    "pairwise_cohen_kappa",
    "mean_cohen_kappa",
    "fleiss_kappa",
    "krippendorff_alpha",
    "annotator_accuracy",
    "agreement_report",
]

REQUIRED_COLUMNS = ("item_id", "annotator", "label")
CONSENSUS_COLUMNS = ["label", "confidence", "n_annotations", "tie"]


# --------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------


def _prepare(ann: pd.DataFrame, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Return a clean copy of ``ann``: three str columns, no nulls, no duplicates.

    Why here and not in each function: every metric must see exactly the same
    annotations, otherwise the report could mix, e.g., a kappa computed with a
    duplicate vote and an alpha computed without it.

    Raises ``ValueError`` for missing columns, for a malformed label set and for
    labels outside ``labels`` (a label the campaign does not know is a data bug
    upstream; silently dropping it would hide it).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in ann.columns]
    if missing:
        raise ValueError(f"annotations are missing column(s) {missing}; need {list(REQUIRED_COLUMNS)}")
    df = ann.loc[:, list(REQUIRED_COLUMNS)]
    df = df[df["label"].notna() & df["item_id"].notna() & df["annotator"].notna()]
    df = df.astype({"item_id": str, "annotator": str, "label": str})
    df = df.drop_duplicates(subset=["item_id", "annotator"], keep="last").reset_index(drop=True)
    if labels is not None:
        _check_labels(labels)
        unknown = sorted(set(df["label"].unique()) - set(labels))
        if unknown:
            raise ValueError(f"labels {unknown} are not in the campaign label set {list(labels)}")
    return df


def _check_labels(labels: Sequence[str]) -> None:
    if isinstance(labels, str):
        raise ValueError("labels must be a sequence of label names, not a single string")
    if len(labels) == 0:
        raise ValueError("labels must not be empty")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {list(labels)}")


@dataclass(frozen=True)
class _Encoded:
    """Integer-coded annotations: one entry per annotation in ``ii``/``jj``/``kk``."""

    items: pd.Index  # item ids, sorted
    annotators: pd.Index  # annotator ids, sorted
    labels: list[str]
    ii: np.ndarray  # item index per annotation
    jj: np.ndarray  # annotator index per annotation
    kk: np.ndarray  # label index per annotation

    @property
    def counts(self) -> np.ndarray:
        """items × labels matrix n_ij: how many annotators gave item i label j."""
        n_i, n_k = len(self.items), len(self.labels)
        flat = np.bincount(self.ii * n_k + self.kk, minlength=n_i * n_k)
        return flat.reshape(n_i, n_k).astype(float)


def _encode(df: pd.DataFrame, labels: Sequence[str]) -> _Encoded:
    """Integer-code a prepared frame.  Items and annotators are sorted so results
    do not depend on the order in which the backend returned annotations."""
    ii, items = pd.factorize(df["item_id"], sort=True)
    jj, annotators = pd.factorize(df["annotator"], sort=True)
    label_pos = {lab: k for k, lab in enumerate(labels)}
    kk = df["label"].map(label_pos).to_numpy(dtype=np.int64)
    return _Encoded(
        items=pd.Index(items, name="item_id"),
        annotators=pd.Index(annotators, name="annotator"),
        labels=list(labels),
        ii=np.asarray(ii, dtype=np.int64),
        jj=np.asarray(jj, dtype=np.int64),
        kk=kk,
    )


def _labels_from_data(df: pd.DataFrame) -> list[str]:
    """Label set when the caller gives none: the labels used, sorted."""
    return sorted(df["label"].unique())


def _consensus_frame(
    items: pd.Index, labels: Sequence[str], scores: np.ndarray, n_annotations: np.ndarray, normalise: bool
) -> pd.DataFrame:
    """Build the consensus table from an items × labels score matrix.

    ``np.argmax`` returns the first maximum, so ties go to the label that comes
    first in the campaign's ``labels`` order: deterministic, and the campaign
    owner controls it (e.g. list the "safe" label first).
    """
    if len(items) == 0:
        out = pd.DataFrame(
            {
                "label": pd.Series(dtype=object),
                "confidence": pd.Series(dtype=float),
                "n_annotations": pd.Series(dtype=np.int64),
                "tie": pd.Series(dtype=bool),
            }
        )
        out.index = pd.Index([], name="item_id", dtype=object)
        return out
    top = scores.max(axis=1)
    at_top = np.isclose(scores, top[:, None], rtol=0.0, atol=1e-9)
    win = at_top.argmax(axis=1)  # first label (campaign order) among those tied at the top
    n_top = at_top.sum(axis=1)
    if normalise:  # an item whose voters all weigh 0 has no confidence at all, not 0/0
        total = scores.sum(axis=1)
        conf = np.divide(top, total, out=np.zeros_like(top, dtype=float), where=total > 0)
    else:
        conf = top
    return pd.DataFrame(
        {
            "label": np.asarray(labels, dtype=object)[win],
            "confidence": conf.astype(float),
            "n_annotations": n_annotations.astype(np.int64),
            "tie": n_top > 1,
        },
        index=items,
    )


# --------------------------------------------------------------------------
# consensus
# --------------------------------------------------------------------------


def majority_vote(ann: pd.DataFrame, labels: Sequence[str],
                  weights: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Plurality label per item (annotator ``a`` casts ``weights.get(a, 1)`` votes).

    Returns a frame indexed by ``item_id`` (sorted) with columns

    * ``label`` – the most voted label.  **Ties are broken by the order of
      ``labels``**: the tied label listed first wins.  This is deterministic
      (a rerun of a round gives the same labels) and ``tie`` flags the item so
      the round can send it to adjudication instead of trusting the coin.
    * ``confidence`` – share of the item's votes that went to the winner.
    * ``n_annotations`` – number of (deduplicated) annotations of the item.
    * ``tie`` – True when two or more labels share the top vote count.

    Items with no annotations do not appear. With ``weights`` the
    confidence is the winner's share of the item's total weight, while
    ``n_annotations`` still counts answers.
    """
    df = _prepare(ann, labels)
    enc = _encode(df, labels)
    if weights is None:
        counts = enc.counts
        return _consensus_frame(enc.items, labels, counts, counts.sum(axis=1), normalise=True)
    n_i, n_k = len(enc.items), len(labels)
    scores = np.bincount(enc.ii * n_k + enc.kk, weights=_annotation_weights(enc, weights),
                         minlength=n_i * n_k).reshape(n_i, n_k)
    return _consensus_frame(enc.items, labels, scores, np.bincount(enc.ii, minlength=n_i), normalise=True)


def _annotation_weights(enc: _Encoded, weights: Mapping[str, float] | None) -> np.ndarray:
    """Per-annotation weight from per-annotator ``weights`` (missing annotators weigh 1).

    A negative or non-finite weight is a caller bug (it would turn a vote into
    a counter-vote), so it raises instead of being clipped silently.
    """
    if weights is None:
        return np.ones(len(enc.jj))
    per_annotator = np.array([float(weights.get(a, 1.0)) for a in enc.annotators], dtype=float)
    if len(per_annotator) and (~np.isfinite(per_annotator) | (per_annotator < 0)).any():
        raise ValueError("annotator weights must be finite and >= 0")
    return per_annotator[enc.jj]


# Defaults of the EM models, shared by dawid_skene, one_coin and consensus.
DEFAULT_MAX_ITER = 200
DEFAULT_TOL = 1e-6  # every replay condition in AGREEMENT.md converges within 170 iterations
#: Dirichlet / Beta pseudo-answers that pull each annotator toward the crowd:
#: per confusion row for Dawid–Skene, per annotator for the one-coin model.
DEFAULT_PRIOR_STRENGTH = 4.0
#: Accuracy behind the crowd's pooled accuracy (one pseudo-answer): it only
#: matters before anybody has been credited with a right answer.
_TEMPLATE_ACCURACY = 0.7


@dataclass
class DawidSkeneResult:
    """Output of :func:`dawid_skene` and :func:`one_coin`.

    ``confusion[a][t, g]`` is the estimated probability that annotator ``a``
    gives label ``labels[g]`` to an item whose true label is ``labels[t]``
    (rows true, columns given; each row sums to 1).  For the one-coin model
    the matrix has the annotator's accuracy on the diagonal and the rest
    spread evenly.  ``model`` names which of the two produced it.
    ``n_unanimous_kept`` counts unanimous items whose EM label differed from
    their one answered label and was overridden (see :func:`dawid_skene`).
    """

    consensus: pd.DataFrame
    posteriors: pd.DataFrame
    confusion: dict[str, np.ndarray]
    priors: pd.Series
    n_iter: int
    converged: bool
    labels: list[str] = field(default_factory=list)
    log_likelihood: float = float("nan")
    model: str = "dawid_skene"
    n_unanimous_kept: int = 0


def _check_em_args(max_iter: int, tol: float, smoothing: float, prior_strength: float) -> None:
    if max_iter < 1:
        raise ValueError("max_iter must be >= 1")
    if tol < 0:
        raise ValueError("tol must be >= 0")
    if smoothing < 0:
        raise ValueError("smoothing must be >= 0")
    if prior_strength < 0:
        raise ValueError("prior_strength must be >= 0")


def _template_confusion(n_k: int) -> np.ndarray:
    """Diagonal-heavy K x K confusion (rows sum to 1): the crowd before any data."""
    if n_k == 1:
        return np.ones((1, 1))
    off = (1.0 - _TEMPLATE_ACCURACY) / (n_k - 1)
    return np.full((n_k, n_k), off) + np.eye(n_k) * (_TEMPLATE_ACCURACY - off)


def _em(
    enc: _Encoded,
    wa: np.ndarray,
    model: Literal["dawid_skene", "one_coin"],
    max_iter: int,
    tol: float,
    smoothing: float,
    prior_strength: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, bool, float]:
    """MAP-EM for Dawid–Skene (full confusion) or the one-coin model.

    Returns (posteriors, confusions n_annotators x K x K, class priors,
    iterations, converged, log-likelihood of the answers).

    Vectorised over answers: K ``bincount`` calls per step, never a dense
    items x annotators array, so tens of thousands of answers cost
    milliseconds per iteration.

    Priors (why MAP and not plain ML): with maximum likelihood an annotator
    with one answer gets a confusion fitted to that one answer -- a minority
    vote for a rare class then reads as "this annotator is always right about
    that class" and the item's posterior jumps to ~0.97.  Here the prior is
    hierarchical: each annotator's accuracy has a Beta prior of
    ``prior_strength`` pseudo-answers toward the crowd's pooled accuracy (the
    one-coin model), and each row of a Dawid–Skene confusion has Dirichlet
    pseudo-counts, ``prior_strength`` per row, toward that annotator's
    one-coin matrix (diagonal-heavy).  An annotator with a handful of answers
    behaves like an average member of this crowd; with more answers they earn
    an accuracy, and row by row a full confusion, of their own.  Class priors
    get one pseudo-item per class.
    """
    n_items, n_ann, n_k = len(enc.items), len(enc.annotators), len(enc.labels)
    ii, jj, kk = enc.ii, enc.jj, enc.kk
    n_ans = len(ii)
    rows = np.arange(n_ans)
    start = np.bincount(ii * n_k + kk, weights=wa, minlength=n_items * n_k).reshape(n_items, n_k)
    tot = start.sum(axis=1, keepdims=True)
    post = np.divide(start, tot, out=np.full(start.shape, 1.0 / n_k), where=tot > 0)
    jk = jj * n_k + kk
    priors = np.full(n_k, 1.0 / n_k)
    converged, n_iter, loglik = False, 0, float("nan")
    total_j = np.bincount(jj, weights=wa, minlength=n_ann)
    for n_iter in range(1, max_iter + 1):
        # ---- M-step
        priors = (post.sum(axis=0) + 1.0) / (n_items + n_k)
        resp = post[ii] * wa[:, None]  # (answers, K): weight of "true class t" for each answer
        # one-coin accuracies (the model itself, or the prior of the full confusions): Beta prior of
        # prior_strength pseudo-answers toward the crowd's pooled accuracy
        correct_j = np.bincount(jj, weights=resp[rows, kk], minlength=n_ann)
        pooled_acc = (correct_j.sum() + _TEMPLATE_ACCURACY) / (total_j.sum() + 1.0)
        acc = (correct_j + prior_strength * pooled_acc + smoothing) / (total_j + prior_strength + 2 * smoothing)
        acc = np.where(np.isfinite(acc), acc, pooled_acc)
        acc = np.clip(acc, 1e-9, 1 - 1e-9) if n_k > 1 else np.ones(n_ann)
        off = (1.0 - acc) / max(n_k - 1, 1)
        coin = off[:, None, None] * np.ones((1, n_k, n_k)) + (acc - off)[:, None, None] * np.eye(n_k)[None]
        if model == "dawid_skene":
            counts = np.empty((n_ann, n_k, n_k))
            for t in range(n_k):
                counts[:, t, :] = np.bincount(jk, weights=resp[:, t], minlength=n_ann * n_k).reshape(n_ann, n_k)
            # prior_strength pseudo-answers in every row, spread like the annotator's one-coin
            # matrix: a row with little evidence (a rare class, a newcomer) stays near "right with
            # the annotator's overall accuracy", and a full confusion is earned row by row
            conf = counts + prior_strength * coin + smoothing
            sums = conf.sum(axis=2, keepdims=True)
            conf = np.divide(conf, sums, out=np.full_like(conf, 1.0 / n_k), where=sums > 0)
        else:
            conf = coin
        # ---- E-step
        with np.errstate(divide="ignore"):
            contrib = np.log(conf[jj, :, kk]) * wa[:, None]  # (answers, K): w * log P(given | true=t)
            log_post = np.log(priors)[None, :].repeat(n_items, axis=0)
        for t in range(n_k):
            log_post[:, t] += np.bincount(ii, weights=contrib[:, t], minlength=n_items)
        top = log_post.max(axis=1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        expd = np.exp(log_post - top)
        norm = expd.sum(axis=1, keepdims=True)
        new_post = expd / norm
        loglik = float((top + np.log(norm)).sum())
        delta = float(np.abs(new_post - post).max()) if n_items else 0.0
        post = new_post
        if delta < tol:
            converged = True
            break
    return post, conf, priors, n_iter, converged, loglik


def _fit(
    ann: pd.DataFrame,
    labels: Sequence[str],
    model: Literal["dawid_skene", "one_coin"],
    max_iter: int,
    tol: float,
    smoothing: float,
    prior_strength: float,
    weights: Mapping[str, float] | None,
) -> DawidSkeneResult:
    """Shared body of :func:`dawid_skene` and :func:`one_coin` (input handling, guard, result)."""
    _check_em_args(max_iter, tol, smoothing, prior_strength)
    df = _prepare(ann, labels)
    enc = _encode(df, labels)
    n_items, n_k = len(enc.items), len(enc.labels)
    counts = enc.counts
    if n_items == 0:
        return DawidSkeneResult(
            consensus=_consensus_frame(enc.items, labels, np.zeros((0, n_k)), np.zeros(0), normalise=False),
            posteriors=pd.DataFrame(columns=list(labels), index=enc.items, dtype=float),
            confusion={},
            priors=pd.Series(np.full(n_k, 1.0 / n_k), index=list(labels)),
            n_iter=0,
            converged=True,
            labels=list(labels),
            model=model,
        )
    wa = _annotation_weights(enc, weights)
    # EM runs on the labels somebody used.  A class no answer ever names is not
    # identifiable (its "items" would be ones every worker calls something
    # else), and left in, EM splits a used class into it -- a label nobody gave
    # would then win whole groups of items.  It gets prior and posterior 0.
    used = np.unique(enc.kk)
    sub = _Encoded(items=enc.items, annotators=enc.annotators, labels=[enc.labels[u] for u in used],
                   ii=enc.ii, jj=enc.jj, kk=np.searchsorted(used, enc.kk))
    post_u, conf_u, priors_u, n_iter, converged, loglik = _em(sub, wa, model, max_iter, tol, smoothing,
                                                             prior_strength)
    post = np.zeros((n_items, n_k))
    post[:, used] = post_u
    priors = np.zeros(n_k)
    priors[used] = priors_u
    conf = np.broadcast_to(_template_confusion(n_k), (len(enc.annotators), n_k, n_k)).copy()
    conf[:, used, :] = 0.0
    conf[np.ix_(np.arange(len(enc.annotators)), used, used)] = conf_u
    cons = _consensus_frame(enc.items, labels, post, counts.sum(axis=1), normalise=False)
    # Guard: an item whose (counted) answers all say the same label keeps that
    # label.  EM can only move it elsewhere by believing every one of its
    # annotators inverts labels -- on thin data that belief is an artefact,
    # and a consensus no answer gave cannot be defended to the people who
    # answered.  The confidence stays the model's posterior of the kept label,
    # so a doubtful unanimous item still goes to adjudication.
    voted = np.bincount(enc.ii * n_k + enc.kk, weights=(wa > 0).astype(float),
                        minlength=n_items * n_k).reshape(n_items, n_k) > 0
    unanimous = voted.sum(axis=1) == 1
    only = voted.argmax(axis=1)
    win = post.argmax(axis=1)
    override = unanimous & (win != only)
    if override.any():
        idx = np.flatnonzero(override)
        cons.iloc[idx, cons.columns.get_loc("label")] = np.asarray(labels, dtype=object)[only[idx]]
        cons.iloc[idx, cons.columns.get_loc("confidence")] = post[idx, only[idx]]
        cons.iloc[idx, cons.columns.get_loc("tie")] = False
    return DawidSkeneResult(
        consensus=cons,
        posteriors=pd.DataFrame(post, index=enc.items, columns=list(labels)),
        confusion={str(a): conf[j].copy() for j, a in enumerate(enc.annotators)},
        priors=pd.Series(priors, index=list(labels)),
        n_iter=n_iter,
        converged=converged,
        labels=list(labels),
        log_likelihood=loglik,
        model=model,
        n_unanimous_kept=int(override.sum()),
    )


def dawid_skene(
    ann: pd.DataFrame,
    labels: Sequence[str],
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    init: Literal["majority"] = "majority",
    smoothing: float = 0.01,
    weights: Mapping[str, float] | None = None,
    prior_strength: float = DEFAULT_PRIOR_STRENGTH,
) -> DawidSkeneResult:
    """Dawid & Skene (1979) estimate of true labels and annotator confusions (MAP-EM).

    Why: majority vote treats a careless or adversarial annotator like a
    careful one.  Dawid–Skene learns one K x K confusion matrix per annotator
    from the items they share with others and weights their votes
    accordingly.  A K x K confusion needs answers -- roughly a handful per
    cell -- which a sparse crowd does not have, hence the hierarchical prior
    below: with few answers an annotator's confusion is their one-coin
    matrix (:func:`one_coin`), with many it is their own.

    * init: posteriors = each item's (weighted) vote shares, the "soft
      majority" start of the original paper.
    * M-step: class priors (one pseudo-item per class) and per-annotator
      confusion rows with Dirichlet pseudo-counts, ``prior_strength`` per
      row, toward the annotator's one-coin matrix, whose accuracy is itself
      shrunk toward the crowd's: an annotator with one or two answers stays
      near the crowd instead of becoming an oracle for the class they
      happened to pick (details in ``_em``).  ``smoothing`` is added on top of every
      cell (kept for callers that set it; the prior makes it unnecessary).
      Labels that no answer uses are left out of EM: prior and posterior 0
      (a class nobody names cannot be estimated, and EM would otherwise
      split a used class into it).
    * E-step: log posterior = log prior + sum over the item's answers of
      ``weight * log confusion[annotator, true, given]``, normalised.
    * stop when no posterior moves by more than ``tol`` (``converged=True``)
      or after ``max_iter`` iterations (``converged=False``; ``n_iter`` says
      how many ran).

    Unanimous items keep their label: when every counted answer of an item
    says ``x``, the consensus label is ``x`` even if EM's posterior prefers
    another class (``confidence`` is then the posterior of ``x``, so it is
    low and the item is not trusted blindly).  Ties in the posterior go to
    the label listed first in ``labels``, as in :func:`majority_vote`.

    ``weights`` (per annotator, default 1) temper an annotator: each of their
    answers counts ``w`` times in the start, the M-step and the E-step, so a
    down-weighted annotator moves the posterior ``w`` times as far (the trust
    policy's "down-weight"); weight 0 removes their evidence.
    """
    if init != "majority":
        raise ValueError(f"unknown init {init!r}; only 'majority' is supported")
    return _fit(ann, labels, "dawid_skene", max_iter, tol, smoothing, prior_strength, weights)


def one_coin(
    ann: pd.DataFrame,
    labels: Sequence[str],
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    smoothing: float = 0.01,
    weights: Mapping[str, float] | None = None,
    prior_strength: float = DEFAULT_PRIOR_STRENGTH,
) -> DawidSkeneResult:
    """One-coin Dawid–Skene: one accuracy per annotator, errors spread evenly.

    Why: a sparse crowd (many annotators with a handful of answers, as on
    MTurk) cannot support K x K parameters per annotator, but one number per
    annotator -- "how often are they right" -- is estimable from a few
    answers and still lets reliable annotators outvote unreliable ones.
    Same EM, priors (a Beta prior of ``prior_strength`` pseudo-answers toward
    the crowd's pooled accuracy), weights and unanimous-item guard as
    :func:`dawid_skene`; ``confusion`` holds the implied matrices.
    """
    return _fit(ann, labels, "one_coin", max_iter, tol, smoothing, prior_strength, weights)


ConsensusMethod = Literal["auto", "dawid_skene", "one_coin", "majority"]
CONSENSUS_METHODS = ("auto", "dawid_skene", "one_coin", "majority")


def crowd_shape(ann: pd.DataFrame, min_overlap_for_ds: int = 2) -> dict[str, float]:
    """What the crowd looks like, as far as the choice of consensus model goes.

    Keys: ``n_items``, ``n_answers``, ``n_annotators``,
    ``median_answers_per_worker`` (median over annotators of their answer
    count), ``median_answers_per_item`` and ``n_overlap_items`` (items with
    at least ``min_overlap_for_ds`` answers).  Plain floats, for logging.
    """
    df = _prepare(ann)
    per_worker = df.groupby("annotator").size()
    per_item = df.groupby("item_id").size()
    return {
        "n_items": float(len(per_item)),
        "n_answers": float(len(df)),
        "n_annotators": float(len(per_worker)),
        "median_answers_per_worker": float(per_worker.median()) if len(per_worker) else 0.0,
        "median_answers_per_item": float(per_item.median()) if len(per_item) else 0.0,
        "n_overlap_items": float((per_item >= min_overlap_for_ds).sum()),
    }


def choose_method(
    shape: Mapping[str, float],
    n_labels: int,
    method: ConsensusMethod = "auto",
    min_overlap_for_ds: int = 2,
    min_overlapping_items: int = 10,
    min_answers_per_class: int = 1,
    min_answers_per_worker: int = 4,
) -> tuple[str, str]:
    """Pick the consensus model for a crowd of this shape; returns (method, reason).

    * majority vote when there is nothing to learn annotator quality from:
      fewer than two annotators, or fewer than ``min_overlapping_items`` items
      with ``min_overlap_for_ds`` answers (EM on such data only echoes the
      votes, with confidences it has not earned), or when the median
      annotator has fewer than ``min_answers_per_worker`` answers (an MTurk
      crowd thinly spread over a small campaign: what EM would learn about a
      worker from two or three answers is the prior, and its overrides of the
      majority only add noise -- measured on a 524-item MD-Agreement replay
      campaign with a median of ~2 answers per worker, where Dawid-Skene's
      labels agreed 0.6 point less often than majority vote with held-out
      workers);
    * the one-coin model when the median annotator has fewer than
      ``min_answers_per_class * K`` answers (not even one per class: nothing
      class-specific to learn);
    * Dawid–Skene otherwise.  Its confusions are shrunk toward each
      annotator's one-coin matrix, so a worker with a handful of answers is
      effectively one-coin and earns a full K x K confusion only with
      evidence.  Why not one-coin up to ~5·K² answers per worker, as planned:
      on the MTurk replays (benchmarks/AGREEMENT.md, medians of 4–11 answers
      per worker) the shrunk Dawid–Skene beat the one-coin model on gold and
      on the fair check in 3 of 4 conditions (MD-Agreement workers have
      class-specific biases one accuracy cannot express) and tied the fourth.

    An explicit ``method`` is honoured except where it is impossible (no
    overlap): then majority vote, and the reason says why.
    """
    n_ann = int(shape.get("n_annotators", 0))
    n_overlap = int(shape.get("n_overlap_items", 0))
    if method == "majority":
        return "majority", "majority vote requested"
    if n_ann < 2:
        return "majority", f"only {n_ann} annotator(s): nothing to compare, majority vote"
    if n_overlap < min_overlapping_items:
        return "majority", (f"only {n_overlap} item(s) have >= {min_overlap_for_ds} annotations "
                            f"(need {min_overlapping_items}) to estimate annotator quality: majority vote")
    if method in ("dawid_skene", "one_coin"):
        return method, f"{method} requested; {n_overlap} items with >= {min_overlap_for_ds} annotations"
    need = min_answers_per_class * n_labels
    med = shape.get("median_answers_per_worker", 0.0)
    if med < min_answers_per_worker:
        return "majority", (f"median {med:g} answers per worker < {min_answers_per_worker}: too few to learn how "
                            "reliable each one is, majority vote")
    if med >= need:
        return "dawid_skene", (f"median {med:g} answers per worker >= {need} (one per class): Dawid-Skene, "
                               f"each {n_labels}x{n_labels} confusion shrunk toward the worker's one-coin "
                               "accuracy until their answers fill it")
    return "one_coin", f"median {med:g} answers per worker < {need} (one per class): one-coin"


def consensus(
    ann: pd.DataFrame,
    labels: Sequence[str],
    method: ConsensusMethod = "auto",
    weights: Mapping[str, float] | None = None,
    min_overlap_for_ds: int = 2,
    min_overlapping_items: int = 10,
    min_answers_per_class: int = 1,
    **em_kwargs: object,
) -> pd.DataFrame:
    """Consensus label per item, with the model the crowd's shape supports.

    ``method="auto"`` (default) picks by :func:`choose_method`: majority vote
    when items overlap too little for any EM, the one-coin model when the
    median annotator has fewer answers than there are classes, Dawid–Skene
    (with confusions shrunk toward one-coin) otherwise.
    ``"dawid_skene"``, ``"one_coin"`` and ``"majority"`` force a model
    (the EM ones still fall back to majority vote without overlap).
    ``weights`` (annotator -> weight, default 1) temper annotators in every
    model.  ``em_kwargs`` go to :func:`dawid_skene` / :func:`one_coin`
    (``max_iter``, ``tol``, ``smoothing``, ``prior_strength``).

    Returns the :func:`majority_vote` columns (``label``, ``confidence``,
    ``n_annotations``, ``tie``; index ``item_id``) plus ``method`` per row,
    and in ``attrs``: ``method`` (model used), ``reason`` (one sentence,
    why), ``fallback_reason`` (why a requested EM model was *not* used, else
    ``None``), ``converged`` and ``iterations`` (``True``/0 for majority
    vote), ``shape`` (:func:`crowd_shape`) -- so the round can log what it
    did and why.
    """
    if method not in CONSENSUS_METHODS:
        raise ValueError(f"unknown consensus method {method!r}; use one of {list(CONSENSUS_METHODS)}")
    df = _prepare(ann, labels)
    shape = crowd_shape(df, min_overlap_for_ds)
    used, reason = choose_method(shape, len(labels), method, min_overlap_for_ds, min_overlapping_items,
                                 min_answers_per_class)
    converged, iterations = True, 0
    if used in ("dawid_skene", "one_coin"):
        fit = dawid_skene if used == "dawid_skene" else one_coin
        res = fit(df, labels, weights=weights, **em_kwargs)  # type: ignore[arg-type]
        result = res.consensus.copy()
        converged, iterations = res.converged, res.n_iter
    else:
        result = majority_vote(df, labels, weights=weights).copy()
    result["method"] = used
    result.attrs["method"] = used
    result.attrs["reason"] = reason
    result.attrs["fallback_reason"] = reason if method in ("dawid_skene", "one_coin") and used != method else None
    result.attrs["converged"] = bool(converged)
    result.attrs["iterations"] = int(iterations)
    result.attrs["shape"] = shape
    return result


# --------------------------------------------------------------------------
# agreement statistics
# --------------------------------------------------------------------------


def percent_agreement(ann: pd.DataFrame) -> float:
    """Mean over items (with ≥ 2 annotations) of the share of agreeing pairs.

    For an item with n annotations of which n_k carry label k, the share of
    agreeing unordered annotator pairs is Σ n_k (n_k − 1) / (n (n − 1)).  This
    is the "observed agreement" that kappa and alpha correct for chance; it is
    reported because it is the number annotators and stakeholders understand.
    ``nan`` when no item has two annotations.
    """
    df = _prepare(ann)
    if df.empty:
        return float("nan")
    return percent_agreement_from_counts(_encode(df, _labels_from_data(df)).counts)


def percent_agreement_from_counts(counts: np.ndarray) -> float:
    """:func:`percent_agreement` from an items × labels vote-count matrix (items with < 2 votes ignored)."""
    n = counts.sum(axis=1)
    keep = n >= 2
    if not keep.any():
        return float("nan")
    c, n = counts[keep], n[keep]
    return float(np.mean((c * (c - 1)).sum(axis=1) / (n * (n - 1))))


def pairwise_cohen_kappa(ann: pd.DataFrame, min_shared: int = 5) -> pd.DataFrame:
    """Cohen's kappa for every annotator pair sharing ≥ ``min_shared`` items.

    Computed on the items both annotators labelled (missing annotations simply
    reduce ``n_shared``).  Vectorised over pairs with one self-join on
    ``item_id`` so large crowds stay cheap; the value per pair equals
    ``sklearn.metrics.cohen_kappa_score`` on the shared items.

    Columns: ``a``, ``b`` (``a < b``), ``n_shared``, ``kappa``.  ``kappa`` is
    ``nan`` when chance agreement is 1 (both annotators used one and the same
    label on every shared item): kappa is 0/0 there, as in scikit-learn.
    Pairs below ``min_shared`` are omitted because kappa on 2–3 items is noise.
    """
    cols = ["a", "b", "n_shared", "kappa"]
    df = _prepare(ann)
    if df.empty:
        return pd.DataFrame(columns=cols).astype({"n_shared": np.int64, "kappa": float})
    left = df.rename(columns={"annotator": "a", "label": "la"})
    right = df.rename(columns={"annotator": "b", "label": "lb"})
    pairs = left.merge(right, on="item_id")
    pairs = pairs[pairs["a"] < pairs["b"]]
    n_shared = pairs.groupby(["a", "b"]).size().rename("n_shared")
    n_shared = n_shared[n_shared >= min_shared]
    if n_shared.empty:
        return pd.DataFrame(columns=cols).astype({"n_shared": np.int64, "kappa": float})
    pairs = pairs.join(n_shared, on=["a", "b"], how="inner")
    p_obs = (pairs["la"] == pairs["lb"]).groupby([pairs["a"], pairs["b"]]).mean()
    # chance agreement: Σ_k p_a(k) p_b(k) with each annotator's marginals on the shared items
    ma = pairs.groupby(["a", "b", "la"]).size().rename("ca")
    mb = pairs.groupby(["a", "b", "lb"]).size().rename("cb")
    ma.index = ma.index.set_names("lab", level=2)
    mb.index = mb.index.set_names("lab", level=2)
    both = pd.concat([ma, mb], axis=1).fillna(0.0)
    p_exp = (both["ca"] * both["cb"]).groupby(level=[0, 1]).sum()
    p_exp = p_exp / n_shared.reindex(p_exp.index).astype(float) ** 2
    out = pd.DataFrame({"n_shared": n_shared, "p_obs": p_obs, "p_exp": p_exp.reindex(n_shared.index)})
    denom = 1.0 - out["p_exp"]
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(np.isclose(denom, 0.0, atol=1e-12), np.nan, (out["p_obs"] - out["p_exp"]) / denom)
    out["kappa"] = kappa.astype(float)
    out = out.reset_index()[cols]
    out["n_shared"] = out["n_shared"].astype(np.int64)
    return out.sort_values(["a", "b"]).reset_index(drop=True)


def mean_cohen_kappa(ann: pd.DataFrame, min_shared: int = 5) -> float:
    """Unweighted mean of pairwise Cohen's kappas (Light's kappa, sparse-data form).

    Why unweighted: every qualifying pair counts once, so a pair of prolific
    annotators cannot mask a poor pair.  Pairs whose kappa is undefined are
    ignored; ``nan`` when no pair qualifies (e.g. a single annotator).
    """
    pk = pairwise_cohen_kappa(ann, min_shared=min_shared)
    vals = pk["kappa"].dropna()
    return float(vals.mean()) if len(vals) else float("nan")


def fleiss_kappa(ann: pd.DataFrame, labels: Sequence[str]) -> float:
    """Fleiss' kappa, generalised to a varying number of annotators per item.

    Standard Fleiss assumes every item has the same number of raters.  Sparse
    campaigns do not, so each item keeps the annotations it has:

    * P_i = (Σ_j n_ij² − n_i) / (n_i (n_i − 1)) per item (items with n_i < 2
      are dropped: they carry no agreement information);
    * P̄ = mean of P_i; p_j = Σ_i n_ij / Σ_i n_i; P_e = Σ_j p_j²;
    * κ = (P̄ − P_e) / (1 − P_e).

    With equal n_i this is exactly the textbook statistic (and equals
    ``statsmodels.stats.inter_rater.fleiss_kappa``).  ``nan`` when no item has
    two annotations or when P_e = 1 (a single label used throughout).
    """
    df = _prepare(ann, labels)
    if df.empty:
        return float("nan")
    counts = _encode(df, labels).counts
    n = counts.sum(axis=1)
    keep = n >= 2
    if not keep.any():
        return float("nan")
    c, n = counts[keep], n[keep]
    p_i = ((c**2).sum(axis=1) - n) / (n * (n - 1))
    p_bar = p_i.mean()
    p_j = c.sum(axis=0) / n.sum()
    p_e = float((p_j**2).sum())
    if np.isclose(p_e, 1.0, rtol=0.0, atol=1e-12):
        return float("nan")
    return float((p_bar - p_e) / (1.0 - p_e))


def krippendorff_alpha(ann: pd.DataFrame, labels: Sequence[str]) -> float:
    """Krippendorff's alpha, nominal, computed by the ``krippendorff`` package.

    Alpha handles missing annotations natively: only "pairable" values (items
    with ≥ 2 annotations) enter the coincidence matrix.  We hand the package its
    ``value_counts`` form (items × labels counts), which is what it builds
    internally from ``reliability_data`` (annotators × items, nan for missing);
    the two are identical, but the counts form avoids a dense annotators × items
    array that is mostly nan for large crowds (819 × 10,751 on MD-Agreement).

    ``nan`` (instead of the package's error or a 0/0) when alpha is undefined:
    no item has two annotations, or all pairable values carry the same label,
    so expected disagreement D_e = 0.  Perfect agreement *on a single label* is
    therefore ``nan``, not 1: alpha cannot tell agreement from a task where
    annotators had no choice to make.
    """
    import krippendorff  # local import: only this metric needs the package

    df = _prepare(ann, labels)
    if df.empty:
        return float("nan")
    counts = _encode(df, labels).counts
    pairable = counts[counts.sum(axis=1) >= 2]
    if len(pairable) == 0 or (pairable.sum(axis=0) > 0).sum() < 2:
        return float("nan")
    return float(krippendorff.alpha(value_counts=pairable, level_of_measurement="nominal"))


def annotator_accuracy(ann: pd.DataFrame, reference: pd.Series | pd.DataFrame) -> pd.DataFrame:
    """Per-annotator accuracy against a reference label per item.

    ``reference`` maps ``item_id`` -> label: gold labels for gold items, or a
    consensus (a :func:`majority_vote` / :func:`consensus` frame is accepted
    too; its ``label`` column is used).  Only annotations of items with a
    non-null reference count.  Note that accuracy against a consensus the
    annotator voted in is biased upwards (their own vote helped make the
    reference), most for items with few annotations; use gold when available.

    Returns a frame indexed by ``annotator`` (every annotator in ``ann``) with
    ``n`` (annotations scored), ``n_correct`` and ``accuracy`` (``nan`` when
    ``n`` is 0, so an annotator who saw no gold item is not reported as bad).
    """
    df = _prepare(ann)
    if isinstance(reference, pd.DataFrame):
        if "label" not in reference.columns:
            raise ValueError("a reference DataFrame must have a 'label' column")
        reference = reference["label"]
    ref = reference.dropna()
    ref = pd.Series(ref.astype(str).to_numpy(), index=ref.index.astype(str))
    ref = ref[~ref.index.duplicated(keep="last")]
    annotators = pd.Index(sorted(df["annotator"].unique()), name="annotator")
    scored = df.assign(ref=df["item_id"].map(ref)).dropna(subset=["ref"])
    correct = (scored["label"] == scored["ref"]).groupby(scored["annotator"])
    n = correct.size().reindex(annotators, fill_value=0).astype(np.int64)
    n_correct = correct.sum().reindex(annotators, fill_value=0).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(n > 0, n_correct / n.where(n > 0, 1), np.nan)
    return pd.DataFrame({"n": n, "n_correct": n_correct, "accuracy": acc.astype(float)}, index=annotators)


def agreement_report(ann: pd.DataFrame, labels: Sequence[str]) -> dict[str, float]:
    """The batch's agreement summary, as logged to MLflow by the round.

    Keys: ``n_items``, ``n_annotations``, ``percent_agreement``,
    ``mean_cohen_kappa``, ``fleiss_kappa``, ``krippendorff_alpha``.  All values
    are plain Python floats; undefined statistics are ``nan`` (never an
    exception), so a degenerate batch still produces a complete report.
    """
    df = _prepare(ann, labels)
    return {
        "n_items": float(df["item_id"].nunique()),
        "n_annotations": float(len(df)),
        "percent_agreement": percent_agreement(df),
        "mean_cohen_kappa": mean_cohen_kappa(df),
        "fleiss_kappa": fleiss_kappa(df, labels),
        "krippendorff_alpha": krippendorff_alpha(df, labels),
    }
