"""Query strategies and the batch policy.

Everything here is a pure function of its inputs (class probabilities, feature
matrices and a numpy ``Generator``), so a round can be re-run after a crash and
pick exactly the same batch: the ledger relies on that for idempotency.

Conventions
-----------
* ``proba`` is an ``(n, k)`` array of class probabilities for the *candidates*
  (the unlabelled pool, or one partition of it).  Scores follow the rule
  "higher = more informative", whatever the strategy.
* ``X_pool`` / ``X_labelled`` are feature matrices (scipy sparse TF-IDF or dense
  embeddings), one row per item, aligned with ``proba``.  Nothing in this module
  densifies a whole matrix: similarities are computed as sparse mat-vecs or in
  row/column blocks bounded by ``_CHUNK_ELEMENTS`` entries.
* Similarity is cosine similarity, i.e. the dot product of L2-normalised rows.
  That is the natural geometry of TF-IDF and of most sentence embeddings, and
  euclidean distance on L2-normalised rows is a monotone function of it
  (``||a - b||^2 = 2 - 2 cos``), so the greedy choices are identical.

The batch policy (:func:`select_batch`) layers the safeguards the design asks
for on top of a strategy: a uniform random share (the unbiased arm the health
checks compare against), cluster-based de-correlation of the strategy's top
candidates, per-predicted-class quotas, and a hard rule that two near-duplicate
texts never land in the same batch (annotating the same text twice wastes
budget and inflates agreement).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np
import scipy.sparse as sp
from scipy.special import entr, rel_entr
from sklearn.base import clone
from sklearn.preprocessing import normalize

Matrix = Union[np.ndarray, sp.spmatrix, sp.sparray]

from labelloop.tasks.strategies import FALLBACK_STRATEGY, STRATEGIES, get_strategy  # noqa: E402 - re-exported (the registry)

CANDIDATE_SHARE = 0.25
"""Diversity picks among the ``candidate_factor x batch`` most uncertain rows, but never among more than
this share of the unlabelled rows. Why: with a small pool and a large batch, "the top 10x" is most of
the pool, and clustering it spreads the batch over everything instead of over the uncertain region
(on the 1,920-row hurricane pool with batch 200 the policy fell to 0.98x random). 0.25 was chosen on
held-out data (Banking77 and MD-Agreement cut to 2,000-row pools), not on the benchmark datasets;
see benchmarks/RESULTS.md. On AG News (10.6k rows, batches up to 200, 3,000 labels) it never binds."""

REASONS: tuple[str, ...] = ("strategy", "random", "quota", "diversity")

# Upper bound on the number of entries of any dense similarity block we build.
_CHUNK_ELEMENTS = 1 << 22  # 4M doubles = 32 MB


@dataclass
class Pick:
    """One selected candidate.

    ``reason`` says which part of the policy chose it, so the ledger and the
    health checks can compare e.g. agreement on strategy picks vs random picks.
    """

    index: int  # row index into the candidate arrays
    score: float  # strategy score (random picks: the random draw)
    reason: str  # "strategy", "random", "quota", "diversity"


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """Accept a Generator (used as is, so the caller's stream advances) or a seed."""
    return np.random.default_rng(rng)


def _check_proba(proba: Any) -> np.ndarray:
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2:
        raise ValueError(f"proba must be a 2-D (n, k) array, got shape {p.shape}")
    if p.shape[1] == 0:
        raise ValueError("proba has no class columns")
    return p


def _n_rows(X: Any) -> int:
    return X.shape[0] if hasattr(X, "shape") else len(X)


def _take_rows(X: Any, idx: np.ndarray) -> Any:
    """Row subset of a numpy/scipy matrix, a DataFrame or a plain list of texts."""
    if hasattr(X, "iloc"):
        return X.iloc[idx]
    if isinstance(X, (list, tuple)):
        return [X[i] for i in idx]
    return X[idx]


def _dense(block: Any) -> np.ndarray:
    return block.toarray() if sp.issparse(block) else np.asarray(block)


def _l2_rows(X: Matrix) -> np.ndarray | sp.csr_matrix:
    """L2-normalised copy of X (sparse stays sparse; all-zero rows stay zero)."""
    if sp.issparse(X):
        return normalize(sp.csr_matrix(X), norm="l2", copy=True)
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"feature matrix must be 2-D, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(float)
    return normalize(X, norm="l2", copy=True)


def _prepare(X: Matrix, metric: str) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray]:
    """Matrix ready for distance computations, plus squared row norms."""
    if metric == "cosine":
        M = _l2_rows(X)
        return M, np.ones(M.shape[0])
    if metric == "euclidean":
        if sp.issparse(X):
            M = sp.csr_matrix(X, dtype=float)
            sq = np.asarray(M.multiply(M).sum(axis=1)).ravel()
        else:
            M = np.asarray(X, dtype=float)
            sq = np.einsum("ij,ij->i", M, M)
        return M, sq
    raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")


def _row_dot(M: np.ndarray | sp.csr_matrix, i: int) -> np.ndarray:
    """``M @ M[i]`` as a dense vector: one sparse mat-vec, never an n x n matrix."""
    if sp.issparse(M):
        return _dense(M @ M[i].T).ravel()
    return M @ M[i]


def _dist_to_row(M: np.ndarray | sp.csr_matrix, i: int, metric: str, sq: np.ndarray) -> np.ndarray:
    g = _row_dot(M, i)
    if metric == "cosine":
        return 1.0 - g
    return np.sqrt(np.maximum(sq + sq[i] - 2.0 * g, 0.0))


def _min_distance(
    A: np.ndarray | sp.csr_matrix,
    B: np.ndarray | sp.csr_matrix,
    metric: str,
    a_sq: np.ndarray,
    b_sq: np.ndarray,
    chunk_elements: int = _CHUNK_ELEMENTS,
) -> np.ndarray:
    """For each row of A, the distance to its nearest row of B.

    Blocked over both A's and B's rows so no block exceeds ``chunk_elements``
    entries: a 100k-row pool against a 10k-row labelled set never materialises
    the 10^9-entry similarity matrix.
    """
    n_a, n_b = A.shape[0], B.shape[0]
    best = np.full(n_a, np.inf)
    if n_a == 0 or n_b == 0:
        return best
    col_step = max(1, min(n_b, chunk_elements))
    row_step = max(1, chunk_elements // col_step)
    for c0 in range(0, n_b, col_step):
        c1 = min(n_b, c0 + col_step)
        Bt = B[c0:c1].T
        for r0 in range(0, n_a, row_step):
            r1 = min(n_a, r0 + row_step)
            G = _dense(A[r0:r1] @ Bt)
            if metric == "cosine":
                d = 1.0 - G.max(axis=1)
            else:
                d2 = a_sq[r0:r1, None] + b_sq[None, c0:c1] - 2.0 * G
                d = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
            np.minimum(best[r0:r1], d, out=best[r0:r1])
    return best


def _rank(scores: np.ndarray, candidates: np.ndarray | None = None, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Candidate indices ordered by score (desc), then tiebreak (desc), then index (asc).

    Deterministic ordering matters: a retried round must reproduce its batch.
    """
    idx = np.arange(scores.shape[0]) if candidates is None else np.asarray(candidates)
    if tiebreak is None:
        return idx[np.argsort(-scores[idx], kind="stable")]
    return idx[np.lexsort((idx, -tiebreak[idx], -scores[idx]))]


# ---------------------------------------------------------------------------
# uncertainty scores
# ---------------------------------------------------------------------------


def least_confidence(proba: np.ndarray) -> np.ndarray:
    """``1 - max_k p_k``: how far the model is from being sure of its top class."""
    p = _check_proba(proba)
    return 1.0 - p.max(axis=1)


def margin(proba: np.ndarray) -> np.ndarray:
    """``1 - (p_top1 - p_top2)``: small gaps between the two best classes score high.

    With a single class column (a model that has only ever seen one class) the
    runner-up probability is taken as 0, so the score is ``1 - p``.
    """
    p = _check_proba(proba)
    k = p.shape[1]
    if k == 1:
        return 1.0 - p[:, 0]
    part = np.partition(p, k - 2, axis=1)
    return 1.0 - (part[:, k - 1] - part[:, k - 2])


def entropy(proba: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats, with ``0 * log 0 = 0`` (scipy's ``entr``)."""
    p = np.clip(_check_proba(proba), 0.0, None)  # absorb -1e-17 rounding noise
    return entr(p).sum(axis=1)


def _check_committee(committee_proba: Any) -> np.ndarray:
    c = np.asarray(committee_proba, dtype=float)
    if c.ndim != 3:
        raise ValueError(f"committee_proba must be (members, n, k), got shape {c.shape}")
    if c.shape[0] == 0 or c.shape[2] == 0:
        raise ValueError("committee_proba needs at least one member and one class")
    return c


def vote_entropy(committee_proba: np.ndarray) -> np.ndarray:
    """Entropy (nats) of the members' hard votes: ``-sum_y V(y)/m log(V(y)/m)``.

    Dagan & Engelson's disagreement measure; members that agree give 0 whatever
    their confidence, which is what makes QBC complementary to margin sampling.
    """
    c = _check_committee(committee_proba)
    m, n, k = c.shape
    counts = np.zeros((n, k))
    rows = np.arange(n)
    for member in c:  # O(n k) memory instead of an (m, n, k) one-hot tensor
        counts[rows, member.argmax(axis=1)] += 1.0
    return entr(counts / m).sum(axis=1)


def mean_kl_divergence(committee_proba: np.ndarray) -> np.ndarray:
    """Mean over members of ``KL(p_member || p_consensus)`` (McCallum & Nigam).

    Unlike vote entropy it sees soft disagreement.  ``rel_entr`` gives
    ``0 log(0/q) = 0``; ``q > 0`` wherever some member has ``p > 0``, so the
    divergence is always finite.
    """
    c = _check_committee(committee_proba)
    consensus = c.mean(axis=0)
    total = np.zeros(c.shape[1])
    for member in c:
        total += rel_entr(member, consensus).sum(axis=1)
    return total / c.shape[0]


def _new_model(make_model: Any, rng: np.random.Generator) -> Any:
    """Fresh estimator from a prototype (cloned) or a factory (called).

    Each member gets its own ``random_state`` (drawn from ``rng``) when the
    estimator has one left at ``None``, so the committee is reproducible.
    """
    model = clone(make_model) if hasattr(make_model, "fit") else make_model()
    seed = int(rng.integers(0, 2**31 - 1))
    try:
        params = model.get_params(deep=False)
    except AttributeError:  # not a scikit-learn estimator: leave it alone
        return model
    if "random_state" in params and params["random_state"] is None:
        model.set_params(random_state=seed)
    return model


def _bootstrap_indices(y: np.ndarray, present: np.ndarray, rng: np.random.Generator, max_resamples: int) -> np.ndarray:
    """A bootstrap resample that contains every class of ``y``.

    Plain bootstrap first (it keeps the natural class balance and variance);
    after ``max_resamples`` misses (rare classes with 1-2 labels), a stratified
    bootstrap that resamples each class within itself, which always succeeds.
    """
    n = y.shape[0]
    for _ in range(max_resamples):
        idx = rng.integers(0, n, size=n)
        if np.unique(y[idx]).size == present.size:
            return idx
    parts = [rng.choice(np.flatnonzero(y == c), size=int(np.sum(y == c)), replace=True) for c in present]
    idx = np.concatenate(parts)
    rng.shuffle(idx)
    return idx


def bootstrap_committee_proba(
    make_model: Any,
    X_lab: Any,
    y_lab: Any,
    X_pool: Any,
    n_members: int,
    rng: np.random.Generator | int | None,
    *,
    classes: Any = None,
    max_resamples: int = 20,
) -> np.ndarray:
    """Class probabilities of a bootstrap committee on the pool: shape ``(m, n, k)``.

    ``make_model`` is a scikit-learn estimator (cloned per member) or a
    zero-argument factory.  Every member is trained on a bootstrap resample
    that contains every labelled class (see :func:`_bootstrap_indices`), and its
    ``predict_proba`` columns are re-ordered onto ``classes`` (default: the
    sorted labels of ``y_lab``; pass the campaign's full label set to get
    zero columns for classes nobody has labelled yet).  Estimators without
    ``predict_proba`` contribute one-hot votes.

    With a single labelled class no classifier can be fitted; every member then
    predicts that class with probability 1 (the committee agrees, QBC scores 0).
    """
    rng = _as_rng(rng)
    if n_members < 1:
        raise ValueError("n_members must be >= 1")
    y = np.asarray(y_lab)
    if y.ndim != 1 or y.shape[0] != _n_rows(X_lab):
        raise ValueError("y_lab must be 1-D and aligned with X_lab")
    if y.shape[0] == 0:
        raise ValueError("cannot train a committee without labelled rows")
    present = np.unique(y)
    cls = present if classes is None else np.asarray(classes)
    col_of = {c: j for j, c in enumerate(cls.tolist())}
    missing = [c for c in present.tolist() if c not in col_of]
    if missing:
        raise ValueError(f"labels {missing} are not in classes")
    n_pool = _n_rows(X_pool)
    out = np.zeros((n_members, n_pool, len(cls)))
    if present.size == 1:
        out[:, :, col_of[present.tolist()[0]]] = 1.0
        return out
    for m in range(n_members):
        idx = _bootstrap_indices(y, present, rng, max_resamples)
        model = _new_model(make_model, rng)
        model.fit(_take_rows(X_lab, idx), y[idx])
        model_classes = np.asarray(model.classes_).tolist()
        if hasattr(model, "predict_proba"):
            P = np.asarray(model.predict_proba(X_pool), dtype=float)
            for j, c in enumerate(model_classes):
                out[m, :, col_of[c]] = P[:, j]
        else:
            pred = np.asarray(model.predict(X_pool)).tolist()
            out[m, np.arange(n_pool), [col_of[c] for c in pred]] = 1.0
    return out


# ---------------------------------------------------------------------------
# diversity / representativeness
# ---------------------------------------------------------------------------


def _kcenter_select(
    M: np.ndarray | sp.csr_matrix,
    sq: np.ndarray,
    min_dist: np.ndarray,
    n_pick: int,
    metric: str,
    rng: np.random.Generator,
    accept: Callable[[int], bool] | None = None,
) -> list[tuple[int, float]]:
    """Greedy k-center (Sener & Savarese's core-set) on rows of M.

    ``min_dist`` holds each row's distance to the current centres (``+inf``
    when there are none, ``-inf`` for rows that may not be picked).  Each step
    takes the farthest row and updates distances with a single mat-vec, so the
    cost is O(batch * nnz) and memory O(n).  Rows rejected by ``accept`` are
    excluded and the next farthest is tried.  Returns ``(row, distance)``.
    """
    d = np.array(min_dist, dtype=float, copy=True)
    picks: list[tuple[int, float]] = []
    while len(picks) < n_pick:
        i = int(np.argmax(d)) if d.size else -1
        if i < 0 or d[i] == -np.inf:
            break  # nothing pickable left
        score = float(d[i])
        if score == np.inf:
            # No centre yet: start from a random row (the classic initialisation);
            # report 1.0, the cosine distance of an orthogonal row, to keep scores finite.
            i = int(rng.choice(np.flatnonzero(d == np.inf)))
            score = 1.0
        if accept is not None and not accept(i):
            d[i] = -np.inf
            continue
        picks.append((i, score))
        np.minimum(d, _dist_to_row(M, i, metric, sq), out=d)
        d[i] = -np.inf
    return picks


def kcenter_greedy(
    X_pool: Matrix,
    X_labelled: Matrix | None,
    batch_size: int,
    rng: np.random.Generator | int | None,
    *,
    metric: str = "cosine",
) -> list[int]:
    """Core-set selection: repeatedly add the pool row farthest from all centres.

    Centres start as the labelled rows (so the batch covers what the labelled set
    does not) plus each pick.  ``metric="cosine"`` (default) works on
    L2-normalised rows (equivalently euclidean distance between them);
    ``metric="euclidean"`` uses raw euclidean distance for embeddings whose norm
    carries meaning.  Works on dense and scipy sparse input without an n x n
    matrix.  ``rng`` only chooses the first centre when there is no labelled set.
    """
    rng = _as_rng(rng)
    M, sq = _prepare(X_pool, metric)
    n = M.shape[0]
    if batch_size <= 0 or n == 0:
        return []
    if X_labelled is not None and _n_rows(X_labelled) > 0:
        L, l_sq = _prepare(X_labelled, metric)
        if L.shape[1] != M.shape[1]:
            raise ValueError("X_pool and X_labelled have different numbers of features")
        init = _min_distance(M, L, metric, sq, l_sq)
    else:
        init = np.full(n, np.inf)
    return [i for i, _ in _kcenter_select(M, sq, init, min(batch_size, n), metric, rng)]


def _embed_for_clustering(X: np.ndarray | sp.csr_matrix, seed: int, n_components: int = 64) -> np.ndarray:
    """Low-dimensional (LSA) embedding of the candidate rows for k-means.

    k-means centroids on a 50k-term vocabulary would be dense
    ``n_clusters x 50k`` arrays, so sparse or wide inputs are projected onto
    their top singular directions first and re-normalised (LSA space clusters
    text at least as well).  Up to 2000 rows this is an exact eigendecomposition
    of the m x m Gram matrix (``X V = U S``), which is cheaper and more
    predictable than randomized SVD at that size; beyond it, TruncatedSVD.
    """
    m, d = X.shape
    if not sp.issparse(X) and d <= 128:
        return np.asarray(X, dtype=float)
    n_comp = min(n_components, m - 1, d - 1)
    if n_comp < 1:
        return _dense(X).astype(float)
    if m <= 2000:
        from scipy.linalg import eigh

        G = _dense(X @ X.T).astype(float)
        w, v = eigh(G, subset_by_index=[m - n_comp, m - 1])
        Z = v * np.sqrt(np.maximum(w, 0.0))
    else:
        from sklearn.decomposition import TruncatedSVD

        Z = TruncatedSVD(n_components=n_comp, algorithm="randomized", n_iter=3, random_state=seed).fit_transform(X)
    return normalize(Z)


def _kmeans_labels(X: np.ndarray | sp.csr_matrix, n_clusters: int, seed: int) -> np.ndarray:
    """k-means cluster labels for the (few) candidate rows, in the LSA embedding.

    One k-means++ initialisation (the clusters only spread a batch, they need
    not be optimal); full KMeans up to 5000 rows, MiniBatchKMeans beyond.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning

    m = X.shape[0]
    if n_clusters <= 1:
        return np.zeros(m, dtype=int)
    if n_clusters >= m:
        return np.arange(m)
    # Rounded for the same reason as the near-duplicate guard: last-bit differences in the
    # projection must not move a point across a k-means boundary from one process to the next.
    Z = np.round(_embed_for_clustering(X, seed), 10)
    with warnings.catch_warnings():
        # duplicate rows can yield fewer distinct clusters than asked: harmless here
        warnings.simplefilter("ignore", ConvergenceWarning)
        if m <= 5000:
            km: Any = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed)
        else:
            km = MiniBatchKMeans(n_clusters=n_clusters, n_init=1, batch_size=2048, random_state=seed)
        return np.asarray(km.fit_predict(Z))


def _cluster_round_robin(
    scores: np.ndarray,
    Xn: np.ndarray | sp.csr_matrix,
    allowed: np.ndarray,
    n_pick: int,
    rng: np.random.Generator,
    *,
    n_clusters: int | None = None,
    candidate_factor: int = 10,
    candidate_share: float = CANDIDATE_SHARE,
    max_candidates: int | None = None,
    tiebreak: np.ndarray | None = None,
) -> np.ndarray:
    """Order the top candidates so consecutive picks come from different clusters.

    Takes the ``candidate_factor * n_pick`` best-scored allowed rows (never more
    than ``candidate_share`` of the allowed rows, nor ``max_candidates``; never fewer
    than ``n_pick``), clusters
    them (default ``n_pick`` clusters), orders clusters by their best member's
    score and returns members round-robin (best first within each cluster).
    This is the Cluster-Margin recipe (Citovsky et al., 2021), usable with any
    per-item score.  Only the top candidates are returned; callers append the
    rest in score order if they need more.
    """
    ranked = _rank(scores, allowed, tiebreak)
    n_cand = min(ranked.size, max(n_pick, candidate_factor * n_pick),
                 max(n_pick, int(np.ceil(candidate_share * ranked.size))))
    if max_candidates is not None:  # the share of a pool the caller sees only a short list of
        n_cand = min(n_cand, max(n_pick, max_candidates))
    cand = ranked[:n_cand]
    k = max(1, min(n_pick if n_clusters is None else n_clusters, n_cand))
    seed = int(rng.integers(0, 2**31 - 1))
    if n_cand == 0:
        return cand
    labels = _kmeans_labels(Xn[cand], k, seed)
    groups: dict[int, list[int]] = {}
    for row, lab in zip(cand.tolist(), labels.tolist()):  # cand is in score order
        groups.setdefault(lab, []).append(row)
    # dicts keep insertion order = order of each cluster's best member
    queues = list(groups.values())
    order: list[int] = []
    depth = 0
    while len(order) < n_cand:
        for q in queues:
            if depth < len(q):
                order.append(q[depth])
        depth += 1
    return np.asarray(order, dtype=int)


def cluster_margin(
    proba: np.ndarray,
    X_pool: Matrix,
    batch_size: int,
    rng: np.random.Generator | int | None,
    n_clusters: int | None = None,
    *,
    candidate_factor: int = 10,
    candidate_share: float = CANDIDATE_SHARE,
) -> list[int]:
    """Cluster-Margin: cluster the lowest-margin candidates, pick round-robin.

    Margin alone tends to fill a batch with near-identical borderline items;
    clustering the top ``candidate_factor * batch_size`` (at most ``candidate_share``
    of the pool) and cycling through clusters spreads the batch.  ``n_clusters`` defaults to ``batch_size`` so
    every cluster contributes its most uncertain item before any contributes two.
    """
    rng = _as_rng(rng)
    scores = margin(proba)
    Xn = _l2_rows(X_pool)
    if Xn.shape[0] != scores.shape[0]:
        raise ValueError("proba and X_pool have different numbers of rows")
    if batch_size <= 0 or scores.size == 0:
        return []
    n_pick = min(batch_size, scores.size)
    order = _cluster_round_robin(
        scores, Xn, np.arange(scores.size), n_pick, rng, n_clusters=n_clusters, candidate_factor=candidate_factor,
        candidate_share=candidate_share
    )
    return [int(i) for i in order[:n_pick]]


def pool_mean_vector(X_pool: Matrix) -> np.ndarray:
    """Mean of the L2-normalised rows.

    ``x_i . mean`` is the average cosine similarity of row i to the pool, so a
    partitioned pool can compute this once (or as a size-weighted mean of the
    partitions' vectors) and score every partition consistently.
    """
    return _mean_row(_l2_rows(X_pool))


def _mean_row(Xn: np.ndarray | sp.csr_matrix) -> np.ndarray:
    if Xn.shape[0] == 0:
        return np.zeros(Xn.shape[1])
    return np.asarray(Xn.mean(axis=0)).ravel()


_BASE_SCORES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "entropy": entropy,
    "margin": margin,
    "least-confidence": least_confidence,
}


def information_density(
    proba: np.ndarray,
    X_pool: Matrix,
    beta: float = 1.0,
    base: str = "entropy",
    *,
    pool_mean: np.ndarray | None = None,
) -> np.ndarray:
    """Uncertainty x (mean cosine similarity to the pool) ** beta (Settles & Craven, 2008).

    Down-weights uncertain outliers (garbage, other languages) that pure
    uncertainty sampling loves.  For L2-normalised rows the mean similarity to
    the pool is one dot product with the pool's mean vector (self-similarity
    included, as in the original formula): O(nnz) and no pairwise matrix.
    Densities are clipped at 0 so signed embeddings cannot flip the sign of
    a score (or make a fractional power NaN).  ``pool_mean`` lets partitioned
    scoring use the whole pool's mean vector (:func:`pool_mean_vector`).
    """
    if base not in _BASE_SCORES:
        raise ValueError(f"base must be one of {sorted(_BASE_SCORES)}, got {base!r}")
    u = _BASE_SCORES[base](proba)
    Xn = _l2_rows(X_pool)
    if Xn.shape[0] != u.shape[0]:
        raise ValueError("proba and X_pool have different numbers of rows")
    mean_vec = _mean_row(Xn) if pool_mean is None else np.asarray(pool_mean, dtype=float).ravel()
    if mean_vec.shape[0] != Xn.shape[1]:
        raise ValueError("pool_mean has the wrong number of features")
    dens = np.clip(np.asarray(Xn @ mean_vec).ravel(), 0.0, 1.0)
    return u * dens**beta


def strategy_scores(
    strategy: str,
    proba: np.ndarray | None,
    *,
    X_pool: Matrix | None = None,
    committee_proba: np.ndarray | None = None,
    beta: float = 1.0,
) -> np.ndarray | None:
    """Per-item scores of a strategy (for logging, the ledger and ranking).

    ``None`` for set-based strategies (coreset, random, diversity-random), whose
    value depends on the rest of the batch.  cluster-margin ranks by margin.
    """
    if strategy == "least-confidence":
        return least_confidence(proba)
    if strategy in ("margin", "cluster-margin", "adaptive"):  # adaptive: margin with a learnt random share
        return margin(proba)
    if strategy == "entropy":
        return entropy(proba)
    if strategy in ("qbc", "qbc-kl"):
        if committee_proba is None:
            raise ValueError(f"strategy {strategy!r} needs committee_proba (see bootstrap_committee_proba)")
        return vote_entropy(committee_proba) if strategy == "qbc" else mean_kl_divergence(committee_proba)
    if strategy == "density":
        if X_pool is None:
            raise ValueError("strategy 'density' needs X_pool")
        return information_density(proba, X_pool, beta=beta)
    if strategy in ("coreset", "random", FALLBACK_STRATEGY):
        return None
    raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


# ---------------------------------------------------------------------------
# batch policy
# ---------------------------------------------------------------------------


SIMILARITY_DECIMALS = 12
"""Cosine similarities are compared with thresholds after rounding to this many decimals (see the guard)."""


def too_similar(sims: np.ndarray, threshold: float) -> np.ndarray:
    """Where cosine similarities exceed the near-duplicate threshold (the one rule for every path).

    Clipped to 1 so ``threshold=1.0`` disables the rule even for exact duplicates whose
    normalised dot product rounds to 1 + 1e-16; rounded to :data:`SIMILARITY_DECIMALS` because
    BLAS may sum in a different order from one process to the next (memory alignment picks the
    kernel), and a pair sitting on the threshold must not be a duplicate in one run and not in
    the next.
    """
    return np.round(np.minimum(sims, 1.0), SIMILARITY_DECIMALS) > threshold


class _NearDuplicateGuard:
    """Refuses a row whose cosine similarity to an already chosen row exceeds the threshold.

    Similarities are clipped to 1 so ``threshold=1.0`` disables the guard even
    for exact duplicates whose normalised dot product rounds to 1 + 1e-16.
    The chosen rows are re-stacked lazily (once per change), so a check costs a
    sparse (1 x d) @ (d x batch) product.
    """

    def __init__(self, Xn: np.ndarray | sp.csr_matrix | None, threshold: float | None) -> None:
        self.Xn = Xn
        self.threshold = threshold
        self.enabled = Xn is not None and threshold is not None
        self.rows: list[int] = []
        self._stack: Any = None

    def accepts(self, i: int) -> bool:
        if not self.enabled or not self.rows:
            return True
        if self._stack is None:
            self._stack = self.Xn[np.asarray(self.rows)]
        x = self.Xn[i]
        sims = _dense(self._stack @ x.T).ravel() if sp.issparse(x) else self._stack @ x
        return not bool(too_similar(sims, self.threshold).any())

    def add(self, i: int) -> None:
        self.rows.append(i)
        self._stack = None

    def remove(self, i: int) -> None:
        self.rows.remove(i)
        self._stack = None


def select_batch(
    proba: np.ndarray | None,
    batch_size: int,
    strategy: str,
    rng: np.random.Generator | int | None,
    *,
    random_share: float = 0.10,
    X_pool: Matrix | None = None,
    X_labelled: Matrix | None = None,
    committee_proba: np.ndarray | None = None,
    class_quota: float = 0.0,
    near_duplicate_threshold: float | None = 0.95,
    diversity: bool = True,
    candidate_factor: int = 10,
    candidate_share: float = CANDIDATE_SHARE,
    max_candidates: int | None = None,
    beta: float = 1.0,
) -> list[Pick]:
    """Choose one annotation batch from the candidates.

    Order of construction (each step skips rows already taken and rows that are
    near-duplicates of a taken row):

    1. **random** — ``round(batch * random_share)`` rows drawn uniformly from
       *all* candidates (Python ``round``, half to even), first, so the random
       arm is a genuinely uniform sample that the strategy cannot bias.  The
       pick's score is its uniform draw.  ``strategy="random"``: the whole batch.
    2. **strategy** — the rest.  Per-item strategies rank by score; with
       ``diversity=True`` and ``X_pool`` the top ``candidate_factor x`` rows (at
       most ``candidate_share`` of the free rows, :data:`CANDIDATE_SHARE`, or
       ``max_candidates``) are clustered and taken round-robin (see :func:`_cluster_round_robin`), then
       the remaining rows in score order.  ``coreset`` runs k-center with the
       labelled rows and the step-1 picks as centres; ``cluster-margin`` always
       clusters.  ``"diversity-random"`` (:data:`FALLBACK_STRATEGY`, used when
       the calibration gate fails) is half k-center spread (reason
       ``"diversity"``) and ``batch // 2`` random rows.
    3. **quota** — with ``class_quota > 0``, every predicted class (argmax
       column) must hold at least ``floor(class_quota * batch / k)`` rows of the
       batch (random rows count).  Short classes get their most uncertain
       predicted members (reason ``"quota"``), replacing the latest strategy /
       diversity picks of classes that are above their quota; random picks are
       never displaced, so the quota is capped by what the strategy share can
       give up.

    Invariants: no index twice; when ``X_pool`` is given, no two rows with
    cosine similarity above ``near_duplicate_threshold`` (``None`` disables)
    are both selected, whatever their reason — this wins over the batch size,
    so a pool full of duplicates yields a short batch.  If there are fewer
    candidates than ``batch_size``, all (non-duplicate) candidates are returned.
    Deterministic for a given ``rng`` seed.  Sparse ``X_pool`` is never
    densified (mat-vecs and bounded blocks only; clustering sees only the top
    candidates, reduced with TruncatedSVD).

    ``proba`` may be ``None`` for ``random``, ``coreset`` and
    ``diversity-random`` without quotas.  ``beta`` is the density exponent.
    """
    rng = _as_rng(rng)
    get_strategy(strategy)  # ValueError naming the choices
    if not 0.0 <= random_share <= 1.0:
        raise ValueError("random_share must be in [0, 1]")
    if not 0.0 <= class_quota < 1.0:
        raise ValueError("class_quota must be in [0, 1)")
    if batch_size < 0:
        raise ValueError("batch_size must be >= 0")

    p = _check_proba(proba) if proba is not None else None
    sizes = {}
    if p is not None:
        sizes["proba"] = p.shape[0]
    if X_pool is not None:
        sizes["X_pool"] = X_pool.shape[0]
    if committee_proba is not None:
        sizes["committee_proba"] = np.shape(committee_proba)[1]
    if not sizes:
        raise ValueError("need proba or X_pool to know the candidates")
    if len(set(sizes.values())) > 1:
        raise ValueError(f"candidate arrays disagree on the number of rows: {sizes}")
    n = next(iter(sizes.values()))
    if p is None and (strategy not in ("random", "coreset", FALLBACK_STRATEGY) or class_quota > 0):
        raise ValueError(f"strategy {strategy!r} (or a class quota) needs proba")
    if strategy in ("coreset", "cluster-margin", "density") and X_pool is None:
        raise ValueError(f"strategy {strategy!r} needs X_pool")
    if batch_size == 0 or n == 0:
        return []
    batch = min(batch_size, n)

    Xn = _l2_rows(X_pool) if X_pool is not None else None
    guard = _NearDuplicateGuard(Xn, near_duplicate_threshold)
    taken = np.zeros(n, dtype=bool)
    picks: list[Pick] = []

    def take(i: int, score: float, reason: str) -> bool:
        if taken[i] or not guard.accepts(i):
            return False
        taken[i] = True
        guard.add(i)
        picks.append(Pick(index=int(i), score=float(score), reason=reason))
        return True

    # 1. uniform random share ------------------------------------------------
    n_random = random_count(strategy, batch, random_share, spread=Xn is not None)
    if n_random > 0:
        draws = rng.random(n)
        got = 0
        for i in np.argsort(draws, kind="stable"):
            if got >= n_random:
                break
            got += take(int(i), draws[i], "random")

    # 2. strategy share --------------------------------------------------------
    scores = strategy_scores(strategy, p, X_pool=X_pool, committee_proba=committee_proba, beta=beta)
    need = batch - len(picks)
    if need > 0 and strategy in ("coreset", FALLBACK_STRATEGY) and Xn is not None:
        if X_labelled is not None and _n_rows(X_labelled) > 0:
            L = _l2_rows(X_labelled)
            if L.shape[1] != Xn.shape[1]:
                raise ValueError("X_pool and X_labelled have different numbers of features")
            init = _min_distance(Xn, L, "cosine", np.ones(n), np.ones(L.shape[0]))
        else:
            init = np.full(n, np.inf)
        for q in picks:  # the random picks are centres too
            np.minimum(init, _dist_to_row(Xn, q.index, "cosine", np.ones(n)), out=init)
        init[taken] = -np.inf
        reason = "strategy" if strategy == "coreset" else "diversity"
        for i, d in _kcenter_select(Xn, np.ones(n), init, need, "cosine", rng, accept=guard.accepts):
            take(i, d, reason)
    elif need > 0 and scores is not None:
        # vote entropy takes few distinct values: break its ties by consensus entropy
        tiebreak = entropy(np.asarray(committee_proba, float).mean(axis=0)) if strategy in ("qbc", "qbc-kl") else None
        free = np.flatnonzero(~taken)
        order = _rank(scores, free, tiebreak)
        if Xn is not None and (strategy == "cluster-margin" or (diversity and need > 1)):
            spread = _cluster_round_robin(
                scores, Xn, free, need, rng, candidate_factor=candidate_factor, candidate_share=candidate_share,
                max_candidates=max_candidates, tiebreak=tiebreak
            )
            in_spread = np.zeros(n, dtype=bool)
            in_spread[spread] = True
            order = np.concatenate([spread, order[~in_spread[order]]])
        got = 0
        for i in order:
            if got >= need:
                break
            got += take(int(i), scores[i], "strategy")

    # 3. class quotas ------------------------------------------------------------
    if class_quota > 0 and p is not None and p.shape[1] >= 2:
        _apply_quota(picks, p, scores, batch, class_quota, taken, guard)
    return picks


def random_count(strategy: str, batch: int, random_share: float, *, spread: bool = True) -> int:
    """Rows of a batch of ``batch`` drawn uniformly at random (step 1 of :func:`select_batch`).

    ``random``: all of them; the fallback (``diversity-random``): half (all without features to
    spread over, ``spread`` False); else ``round(batch * random_share)`` (Python ``round``).
    """
    if strategy == "random":
        return batch
    if strategy == FALLBACK_STRATEGY:
        return batch // 2 if spread else batch
    return min(batch, int(round(batch * random_share)))


def select_round_batch(
    strategy: str,
    batch_size: int,
    rng: np.random.Generator,
    *,
    proba: np.ndarray | None,
    X_pool: Matrix | None,
    X_labelled: Matrix | None = None,
    y_labelled: Any = None,
    estimator: Any = None,
    classes: Any = None,
    random_share: float = 0.10,
    class_quota: float = 0.0,
    near_duplicate_threshold: float | None = 0.95,
    diversity: bool = True,
    committee_size: int = 5,
    **select_kwargs: Any,
) -> list[Pick]:
    """An arm's batch for its round: the committee (for committee strategies) and :func:`select_batch`.

    The one place the campaign round, ``labelloop simulate``, the large-pool short list
    (flows/scoring.py) and the benchmark's labelloop arms choose a batch, so they cannot drift
    apart. ``estimator``: the round model's classifier (cloned per committee member, trained on
    ``X_labelled`` / ``y_labelled``); ``classes``: the committee's columns, aligned with
    ``proba``. The random arm takes no class quota (its batch is a uniform sample), nor does a
    cold start (``proba`` None: no predicted classes to count).
    ``select_kwargs``: :func:`select_batch`'s candidate knobs (``candidate_factor``, ...).
    """
    committee = None
    if get_strategy(strategy).committee and batch_size > 0:
        if estimator is None or X_labelled is None or y_labelled is None:
            raise ValueError(f"strategy {strategy!r} needs estimator, X_labelled and y_labelled")
        committee = bootstrap_committee_proba(estimator, X_labelled, np.asarray(y_labelled), X_pool, committee_size,
                                              rng, classes=classes)
    if strategy == "random" or proba is None:  # a uniform sample, or no predictions to count classes by
        class_quota = 0.0
    return select_batch(proba, batch_size, strategy, rng, random_share=random_share, X_pool=X_pool,
                        X_labelled=X_labelled, committee_proba=committee, class_quota=class_quota,
                        near_duplicate_threshold=near_duplicate_threshold, diversity=diversity, **select_kwargs)


def _apply_quota(
    picks: list[Pick],
    p: np.ndarray,
    scores: np.ndarray | None,
    batch: int,
    class_quota: float,
    taken: np.ndarray,
    guard: _NearDuplicateGuard,
) -> None:
    """Top up predicted classes below ``floor(class_quota * batch / k)`` (in place).

    The point of a quota is to keep rare predicted classes in front of the
    annotators (new classes and minority recall are found there); it is a top-up
    rather than an up-front reservation so that ``"quota"`` in the ledger means
    "the strategy would not have picked this".  Uncertainty for ranking the
    class members: the strategy score when it has one, else margin.
    """
    k = p.shape[1]
    per_class = math.floor(class_quota * batch / k)
    if per_class <= 0:
        return
    unc = scores if scores is not None else margin(p)
    pred = p.argmax(axis=1)
    counts = np.bincount(pred[[q.index for q in picks]], minlength=k) if picks else np.zeros(k, dtype=int)
    # rarest predicted classes first: they are the ones the quota exists for
    class_order = np.argsort(np.bincount(pred, minlength=k), kind="stable")
    for c in class_order:
        members = _rank(unc, np.flatnonzero(pred == c))
        pos = 0
        while counts[c] < per_class and pos < members.size:
            room = len(picks) < batch
            victim = None
            if not room:
                for j in range(len(picks) - 1, -1, -1):
                    q = picks[j]
                    if q.reason in ("strategy", "diversity") and counts[pred[q.index]] > per_class:
                        victim = j
                        break
                if victim is None:
                    return  # nothing can be displaced: quota capped
                v = picks[victim]
                guard.remove(v.index)
            added = False
            while pos < members.size:
                i = int(members[pos])
                pos += 1
                if not taken[i] and guard.accepts(i):
                    if victim is not None:
                        v = picks.pop(victim)
                        taken[v.index] = False
                        counts[pred[v.index]] -= 1
                    taken[i] = True
                    guard.add(i)
                    picks.append(Pick(index=i, score=float(unc[i]), reason="quota"))
                    counts[c] += 1
                    added = True
                    break
            if not added and victim is not None:
                guard.add(picks[victim].index)  # restore: no member of c fits


def fallback_batch(
    proba: np.ndarray | None,
    batch_size: int,
    rng: np.random.Generator | int | None,
    **kwargs: Any,
) -> list[Pick]:
    """The selection a round uses when the calibration gate fails.

    Poorly calibrated scores make uncertainty rankings unreliable, so the batch
    ignores them: ``select_batch(..., strategy="diversity-random")``.
    """
    return select_batch(proba, batch_size, FALLBACK_STRATEGY, rng, **kwargs)
