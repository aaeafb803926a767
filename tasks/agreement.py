"""Inter-annotator agreement and consensus labels for one annotation batch.

Why this module exists: a round must decide which human labels are trusted
before they train the model.  Two questions are answered here, from the same
long table of annotations:

* *How much do annotators agree?*  (percent agreement, pairwise Cohen's kappa,
  Fleiss' kappa, Krippendorff's alpha).  These gate the batch: a batch whose
  agreement is too low is quarantined by the round flow.
* *What is the label of each item?*  (majority vote, or Dawid–Skene when items
  overlap enough to estimate each annotator's confusion matrix).

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
    "consensus",
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
    win = scores.argmax(axis=1)
    top = scores[np.arange(len(items)), win]
    n_top = np.isclose(scores, top[:, None], rtol=0.0, atol=1e-9).sum(axis=1)
    conf = top / scores.sum(axis=1) if normalise else top
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
    """Per-annotation weight from per-annotator ``weights`` (missing annotators weigh 1)."""
    if weights is None:
        return np.ones(len(enc.jj))
    return np.array([float(weights.get(a, 1.0)) for a in enc.annotators])[enc.jj]


@dataclass
class DawidSkeneResult:
    """Output of :func:`dawid_skene`.

    ``confusion[a][t, g]`` is the estimated probability that annotator ``a``
    gives label ``labels[g]`` to an item whose true label is ``labels[t]``
    (rows true, columns given; each row sums to 1).
    """

    consensus: pd.DataFrame
    posteriors: pd.DataFrame
    confusion: dict[str, np.ndarray]
    priors: pd.Series
    n_iter: int
    converged: bool
    labels: list[str] = field(default_factory=list)
    log_likelihood: float = float("nan")


def dawid_skene(
    ann: pd.DataFrame,
    labels: Sequence[str],
    max_iter: int = 100,
    tol: float = 1e-6,
    init: Literal["majority"] = "majority",
    smoothing: float = 0.01,
    weights: Mapping[str, float] | None = None,
) -> DawidSkeneResult:
    """Dawid & Skene (1979) EM estimate of true labels and annotator confusions.

    Why: majority vote treats a careless or adversarial annotator like a
    careful one.  Dawid–Skene learns one confusion matrix per annotator from
    the items they share with others and weights their votes accordingly, so
    it can outvote a bad majority and even *invert* a systematically wrong
    annotator.  It needs overlap: an annotator who never shares an item with
    anyone is effectively trusted as-is (their confusion is fitted to their own
    labels).  :func:`consensus` falls back to majority vote when overlap is too
    thin.

    Algorithm (plain EM, vectorised over annotations, never materialising a
    dense items × annotators array):

    * init: posteriors = each item's vote shares (``init="majority"``, the
      "soft majority" start of the original paper; a uniform start would be a
      fixed point of EM and learn nothing).
    * M-step: class priors and per-annotator confusion rows from the current
      posteriors, with ``smoothing`` added to every count (Laplace / additive
      smoothing) so an unseen (true, given) pair never gets probability 0,
      which would otherwise let one vote veto a class forever.
    * E-step: log posterior ∝ log prior + Σ over the item's annotations of
      log confusion[annotator, true, given]; normalised with log-sum-exp.
    * stop when no posterior moves by more than ``tol`` or after ``max_iter``.

    Ties in the final posterior go to the label listed first in ``labels``,
    as in :func:`majority_vote`; ``confidence`` is the winner's posterior.

    ``weights`` (per annotator, default 1) temper an annotator: each of their
    annotations counts ``w`` times in the start, the M-step and the E-step's
    log-likelihood, so a down-weighted annotator moves the posterior ``w``
    times as far (the trust policy's "down-weight" for a flagged annotator).
    """
    if init != "majority":
        raise ValueError(f"unknown init {init!r}; only 'majority' is supported")
    if smoothing < 0:
        raise ValueError("smoothing must be >= 0")
    if max_iter < 1:
        raise ValueError("max_iter must be >= 1")
    df = _prepare(ann, labels)
    enc = _encode(df, labels)
    n_items, n_ann, n_k = len(enc.items), len(enc.annotators), len(enc.labels)
    ii, jj, kk = enc.ii, enc.jj, enc.kk
    counts = enc.counts
    n_per_item = counts.sum(axis=1)

    if n_items == 0:
        empty_post = pd.DataFrame(columns=list(labels), index=enc.items, dtype=float)
        return DawidSkeneResult(
            consensus=_consensus_frame(enc.items, labels, np.zeros((0, n_k)), np.zeros(0), normalise=False),
            posteriors=empty_post,
            confusion={},
            priors=pd.Series(np.full(n_k, 1.0 / n_k), index=list(labels)),
            n_iter=0,
            converged=True,
            labels=list(labels),
        )

    wa = _annotation_weights(enc, weights)
    start = counts if weights is None else np.bincount(
        ii * n_k + kk, weights=wa, minlength=n_items * n_k).reshape(n_items, n_k)
    tot = start.sum(axis=1, keepdims=True)
    post = np.divide(start, tot, out=np.full(start.shape, 1.0 / n_k), where=tot > 0)
    jk = jj * n_k + kk  # flat (annotator, given label) index per annotation
    converged = False
    n_iter = 0
    loglik = float("nan")
    conf = np.empty((n_ann, n_k, n_k))
    priors = np.full(n_k, 1.0 / n_k)
    for n_iter in range(1, max_iter + 1):
        # M-step
        priors = (post.sum(axis=0) + smoothing) / (n_items + n_k * smoothing)
        w = post[ii] * wa[:, None]  # (n_annotations, K): posterior of the annotated item, weighted
        for t in range(n_k):
            conf[:, t, :] = np.bincount(jk, weights=w[:, t], minlength=n_ann * n_k).reshape(n_ann, n_k)
        conf += smoothing
        row_sums = conf.sum(axis=2, keepdims=True)
        # a row with no mass at all (smoothing=0 and class never seen) -> uniform
        conf = np.divide(conf, row_sums, out=np.full_like(conf, 1.0 / n_k), where=row_sums > 0)
        # E-step
        with np.errstate(divide="ignore"):
            log_conf = np.log(conf)
            log_prior = np.log(priors)
        contrib = log_conf[jj, :, kk] * wa[:, None]  # (n_annotations, K): w * log P(given | true=t)
        log_post = np.empty((n_items, n_k))
        for t in range(n_k):
            log_post[:, t] = np.bincount(ii, weights=contrib[:, t], minlength=n_items)
        log_post += log_prior
        top = log_post.max(axis=1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        expd = np.exp(log_post - top)
        norm = expd.sum(axis=1, keepdims=True)
        new_post = expd / norm
        loglik = float((top + np.log(norm)).sum())
        delta = float(np.abs(new_post - post).max())
        post = new_post
        if delta < tol:
            converged = True
            break

    posteriors = pd.DataFrame(post, index=enc.items, columns=list(labels))
    cons = _consensus_frame(enc.items, labels, post, n_per_item, normalise=False)
    confusion = {str(a): conf[j].copy() for j, a in enumerate(enc.annotators)}
    return DawidSkeneResult(
        consensus=cons,
        posteriors=posteriors,
        confusion=confusion,
        priors=pd.Series(priors, index=list(labels)),
        n_iter=n_iter,
        converged=converged,
        labels=list(labels),
        log_likelihood=loglik,
    )


def consensus(
    ann: pd.DataFrame,
    labels: Sequence[str],
    method: Literal["majority", "dawid_skene"] = "majority",
    min_overlap_for_ds: int = 2,
    min_overlapping_items: int = 10,
    **ds_kwargs: object,
) -> pd.DataFrame:
    """Consensus label per item with the requested method, falling back safely.

    Dawid–Skene learns annotator quality only from items that several
    annotators labelled.  It is used when at least ``min_overlapping_items``
    items have ``min_overlap_for_ds`` or more annotations *and* there are at
    least two annotators; otherwise the function falls back to majority vote
    (which, with one annotation per item, is simply that annotation).

    Returns the :func:`majority_vote` columns plus ``method`` (the method
    actually used: ``"majority"`` or ``"dawid_skene"``).  The same value and a
    human-readable reason are in ``result.attrs["method"]`` and
    ``result.attrs["fallback_reason"]`` (``None`` when no fallback happened),
    so the round can log why DS was not used.
    """
    if method not in ("majority", "dawid_skene"):
        raise ValueError(f"unknown consensus method {method!r}; use 'majority' or 'dawid_skene'")
    df = _prepare(ann, labels)
    used = method
    reason: str | None = None
    if method == "dawid_skene":
        n_per_item = df.groupby("item_id").size()
        n_overlap = int((n_per_item >= min_overlap_for_ds).sum())
        n_annotators = df["annotator"].nunique()
        if n_annotators < 2:
            used, reason = "majority", f"only {n_annotators} annotator(s); Dawid-Skene needs at least 2"
        elif n_overlap < min_overlapping_items:
            used = "majority"
            reason = (
                f"only {n_overlap} item(s) have >= {min_overlap_for_ds} annotations "
                f"(need {min_overlapping_items}) to estimate annotator confusions"
            )
    if used == "dawid_skene":
        result = dawid_skene(df, labels, **ds_kwargs).consensus.copy()  # type: ignore[arg-type]
    else:
        result = majority_vote(df, labels).copy()
    result["method"] = used
    result.attrs["method"] = used
    result.attrs["fallback_reason"] = reason
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
