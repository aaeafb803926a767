"""Unit tests for tasks.query: hand-computed scores, reference checks and batch-policy invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import entropy as scipy_entropy
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics.pairwise import cosine_distances, cosine_similarity, euclidean_distances

from labelloop.tasks import query as q

# ---------------------------------------------------------------------------
# scores
# ---------------------------------------------------------------------------


def test_uncertainty_scores_hand_computed():
    p = np.array([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0], [0.4, 0.4, 0.2]])
    np.testing.assert_allclose(q.least_confidence(p), [0.5, 0.0, 0.6])
    np.testing.assert_allclose(q.margin(p), [0.8, 0.0, 1.0])
    h = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    h3 = -(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2))
    np.testing.assert_allclose(q.entropy(p), [h, 0.0, h3])  # 0 log 0 = 0, no NaN
    np.testing.assert_allclose(q.entropy(p), scipy_entropy(p, axis=1))


def test_margin_binary_and_single_column():
    np.testing.assert_allclose(q.margin(np.array([[0.6, 0.4], [0.1, 0.9]])), [0.8, 0.2])
    # one class column: runner-up is 0 -> 1 - p
    np.testing.assert_allclose(q.margin(np.array([[1.0], [0.7]])), [0.0, 0.3])
    with pytest.raises(ValueError):
        q.margin(np.array([0.5, 0.5]))  # 1-D is ambiguous


def test_vote_entropy_hand_computed():
    # 3 members, 2 items, 2 classes; item 0 votes (A, A, B), item 1 unanimous
    c = np.array(
        [
            [[0.9, 0.1], [0.6, 0.4]],
            [[0.6, 0.4], [0.9, 0.1]],
            [[0.2, 0.8], [0.55, 0.45]],
        ]
    )
    expected0 = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    np.testing.assert_allclose(q.vote_entropy(c), [expected0, 0.0])


def test_mean_kl_hand_computed():
    c = np.array([[[1.0, 0.0]], [[0.5, 0.5]]])  # 2 members, 1 item; consensus [0.75, 0.25]
    kl1 = math.log(1 / 0.75)
    kl2 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    np.testing.assert_allclose(q.mean_kl_divergence(c), [(kl1 + kl2) / 2])
    # against scipy.stats.entropy(p, q) == KL(p || q) on random committees
    rng = np.random.default_rng(0)
    c = rng.dirichlet(np.ones(4), size=(5, 7))
    cons = c.mean(axis=0)
    ref = np.mean([scipy_entropy(c[m], cons, axis=1) for m in range(5)], axis=0)
    np.testing.assert_allclose(q.mean_kl_divergence(c), ref)
    # identical members -> no disagreement
    np.testing.assert_allclose(q.mean_kl_divergence(np.repeat(c[:1], 3, axis=0)), 0.0, atol=1e-12)


def _toy_labelled(seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.array([[3.0, 0.0], [0.0, 3.0], [-3.0, -3.0]])
    y = np.array(["a"] * 15 + ["b"] * 14 + ["c"] * 1)  # "c" is very rare
    X = centres[np.searchsorted(["a", "b", "c"], y)] + rng.normal(0, 0.5, size=(30, 2))
    X_pool = rng.normal(0, 2, size=(12, 2))
    return X, y, X_pool


def test_bootstrap_committee_every_member_sees_every_class():
    X, y, X_pool = _toy_labelled()
    c = q.bootstrap_committee_proba(LogisticRegression(), X, y, X_pool, 6, np.random.default_rng(1))
    assert c.shape == (6, 12, 3)
    np.testing.assert_allclose(c.sum(axis=2), 1.0)
    # a member that missed class "c" would output an all-zero "c" column
    assert np.all(c[:, :, 2] > 0)
    # members differ (bootstrap), and the committee is reproducible per seed
    assert not np.allclose(c[0], c[1])
    c_again = q.bootstrap_committee_proba(LogisticRegression(), X, y, X_pool, 6, np.random.default_rng(1))
    np.testing.assert_array_equal(c, c_again)


def test_bootstrap_committee_aligns_to_full_class_list_and_factory():
    X, y, X_pool = _toy_labelled()
    c = q.bootstrap_committee_proba(lambda: LogisticRegression(), X, y, X_pool, 3, 0, classes=["d", "c", "b", "a"])
    assert c.shape == (3, 12, 4)
    np.testing.assert_array_equal(c[:, :, 0], 0.0)  # nobody has labelled "d"
    ref = LogisticRegression().fit(X, y).predict_proba(X_pool)  # columns a, b, c
    # column order follows `classes`: the committee's column 3 is "a"
    assert np.corrcoef(c.mean(axis=0)[:, 3], ref[:, 0])[0, 1] > 0.9


def test_bootstrap_stratified_fallback_keeps_class_counts():
    y = np.array([0] * 38 + [1, 2])
    idx = q._bootstrap_indices(y, np.unique(y), np.random.default_rng(0), max_resamples=0)
    np.testing.assert_array_equal(np.bincount(y[idx]), [38, 1, 1])


def test_bootstrap_single_class_is_unanimous():
    X = np.zeros((4, 2))
    c = q.bootstrap_committee_proba(LogisticRegression(), X, ["x"] * 4, np.ones((3, 2)), 2, 0, classes=["x", "y"])
    np.testing.assert_array_equal(c[:, :, 0], 1.0)
    np.testing.assert_array_equal(q.vote_entropy(c), 0.0)


# ---------------------------------------------------------------------------
# k-center, cluster-margin, density
# ---------------------------------------------------------------------------


def test_kcenter_euclidean_hand_example():
    X_lab = np.array([[0.0, 0.0]])
    X_pool = np.array([[1.0, 0.0], [5.0, 0.0], [0.0, 2.0]])
    # distances to (0,0): 1, 5, 2 -> pick (5,0); then min(1,4)=1 vs min(2, sqrt 29)=2 -> pick (0,2)
    assert q.kcenter_greedy(X_pool, X_lab, 2, 0, metric="euclidean") == [1, 2]
    assert q.kcenter_greedy(X_pool, X_lab, 3, 0, metric="euclidean") == [1, 2, 0]


def test_kcenter_without_labelled_set_starts_at_random_then_goes_far():
    X = np.array([[0.0], [1.0], [2.0], [10.0]])
    for seed in range(4):
        first, second = q.kcenter_greedy(X, None, 2, seed, metric="euclidean")
        assert second == int(np.argmax(np.abs(X[:, 0] - X[first, 0])))
    firsts = {q.kcenter_greedy(X, None, 1, seed, metric="euclidean")[0] for seed in range(20)}
    assert len(firsts) > 1  # the first centre really is drawn from rng
    assert q.kcenter_greedy(X, None, 3, 5) == q.kcenter_greedy(X, None, 3, 5)


def test_kcenter_cosine_dense_and_sparse_agree():
    X_lab = np.array([[1.0, 0.0]])
    X_pool = np.array([[1.0, 0.1], [0.0, 1.0], [1.0, 1.0]])
    # cosine distances to (1,0): 0.005, 1, 0.293 -> (0,1); then (1,1) at 0.293 beats (1,0.1) at 0.005
    assert q.kcenter_greedy(X_pool, X_lab, 2, 0) == [1, 2]
    assert q.kcenter_greedy(sp.csr_matrix(X_pool), sp.csr_matrix(X_lab), 2, 0) == [1, 2]


def test_kcenter_matches_brute_force_greedy():
    rng = np.random.default_rng(5)
    X = sp.random(300, 40, density=0.1, format="csr", random_state=6)
    L = sp.random(20, 40, density=0.1, format="csr", random_state=7)
    D = cosine_distances(X)
    d = cosine_distances(X, L).min(axis=1)
    expected = []
    for _ in range(10):
        i = int(np.argmax(d))
        expected.append(i)
        d = np.minimum(d, D[i])
    assert q.kcenter_greedy(X, L, 10, rng) == expected


def test_min_distance_chunked_equals_full():
    rng = np.random.default_rng(2)
    A, B = rng.normal(size=(57, 6)), rng.normal(size=(23, 6))
    a_sq, b_sq = (A**2).sum(1), (B**2).sum(1)
    full = euclidean_distances(A, B).min(axis=1)
    tiny_blocks = q._min_distance(A, B, "euclidean", a_sq, b_sq, chunk_elements=5)
    np.testing.assert_allclose(tiny_blocks, full, atol=1e-9)
    An, Bn = q._l2_rows(sp.csr_matrix(A)), q._l2_rows(sp.csr_matrix(B))
    cos = q._min_distance(An, Bn, "cosine", None, None, chunk_elements=7)
    np.testing.assert_allclose(cos, cosine_distances(A, B).min(axis=1), atol=1e-9)


def _three_direction_blobs(seed: int = 0, per: int = 20):
    """Rows pointing in three well separated directions (so cosine k-means finds them)."""
    rng = np.random.default_rng(seed)
    angles = np.concatenate([np.full(per, a) for a in (0.0, 2 * np.pi / 3, 4 * np.pi / 3)])
    angles = angles + rng.normal(0, 0.05, size=angles.size)
    X = np.column_stack([np.cos(angles), np.sin(angles), np.full(angles.size, 0.1)])
    blob = np.repeat([0, 1, 2], per)
    return X, blob


def test_cluster_margin_covers_every_cluster():
    X, blob = _three_direction_blobs()
    # blob 0 holds the 20 most uncertain items: plain margin would take all 3 from it
    top1 = np.where(blob == 0, 0.5, 0.9) + np.linspace(0, 0.05, blob.size)
    proba = np.column_stack([top1, 1 - top1])
    assert set(blob[np.argsort(-q.margin(proba))[:3]]) == {0}
    # candidate_factor 20, no share cap: all 60 rows are candidates, so the 3 clusters are the 3 blobs
    picks = q.cluster_margin(proba, X, 3, np.random.default_rng(0), n_clusters=3, candidate_factor=20,
                             candidate_share=1.0)
    assert len(picks) == 3 and set(blob[picks]) == {0, 1, 2}
    # 10x candidates uncapped (top 30 = blob 0 + 10 of blob 1): every k-means cluster of the
    # candidates still contributes before any contributes twice: picks hit 3 distinct clusters
    wide = q.cluster_margin(proba, X, 3, np.random.default_rng(0), n_clusters=3, candidate_share=1.0)
    assert len(set(wide)) == 3 and set(blob[wide]) <= {0, 1}
    # the default cap (a quarter of this 60-row pool = the 15 most uncertain rows, all in blob 0)
    # keeps the batch in the uncertain region
    default = q.cluster_margin(proba, X, 3, np.random.default_rng(0), n_clusters=3)
    assert len(set(default)) == 3 and set(blob[default]) == {0}
    # each pick is the most uncertain member of its cluster
    m = q.margin(proba)
    for i in picks:
        members = np.flatnonzero(blob == blob[i])
        assert m[i] == m[members].max()


def test_information_density_hand_computed():
    X = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    # normalised rows (1,0),(1,0),(0,1): mean similarities 2/3, 2/3, 1/3
    proba = np.full((3, 2), 0.5)
    dens = np.array([2 / 3, 2 / 3, 1 / 3])
    np.testing.assert_allclose(cosine_similarity(X).mean(axis=1), dens)  # reference
    np.testing.assert_allclose(q.information_density(proba, X), math.log(2) * dens)
    np.testing.assert_allclose(q.information_density(proba, sp.csr_matrix(X), beta=2.0), math.log(2) * dens**2)
    np.testing.assert_allclose(q.information_density(proba, X, base="margin"), 1.0 * dens)
    # a partition scored against the whole pool's mean vector
    part = q.information_density(proba[:1], X[:1], pool_mean=q.pool_mean_vector(X))
    np.testing.assert_allclose(part, math.log(2) * dens[:1])


# ---------------------------------------------------------------------------
# select_batch
# ---------------------------------------------------------------------------


def _pool(n: int = 200, k: int = 3, d: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(k), size=n)
    X = sp.random(n, d, density=0.03, format="csr", random_state=seed) + sp.eye(n, d, format="csr") * 0.01
    return proba, sp.csr_matrix(X)


def _max_pair_cosine(X, idx):
    S = cosine_similarity(X[idx])
    np.fill_diagonal(S, -1)
    return S.max()


@pytest.mark.parametrize("strategy", ["margin", "entropy", "least-confidence", "density", "cluster-margin", "coreset"])
def test_select_batch_size_unique_and_random_share(strategy):
    proba, X = _pool()
    picks = q.select_batch(proba, 20, strategy, np.random.default_rng(3), random_share=0.10, X_pool=X)
    idx = [p.index for p in picks]
    assert len(picks) == 20 and len(set(idx)) == 20
    reasons = [p.reason for p in picks]
    assert reasons.count("random") == round(20 * 0.10) and reasons.count("strategy") == 18
    assert all(0 <= i < 200 for i in idx)


def test_select_batch_margin_without_features_takes_top_scores():
    proba, _ = _pool()
    picks = q.select_batch(proba, 10, "margin", 0, random_share=0.0)
    expected = np.argsort(-q.margin(proba), kind="stable")[:10]
    assert [p.index for p in picks] == expected.tolist()
    np.testing.assert_allclose([p.score for p in picks], q.margin(proba)[expected])


def test_select_batch_random_share_rounding_and_random_strategy():
    proba, X = _pool()
    picks = q.select_batch(proba, 25, "entropy", 1, random_share=0.15, X_pool=X)
    assert sum(p.reason == "random" for p in picks) == round(25 * 0.15)  # 3.75 -> 4
    allr = q.select_batch(proba, 12, "random", 1, X_pool=X)
    assert len(allr) == 12 and all(p.reason == "random" for p in allr)
    assert all(0.0 <= p.score < 1.0 for p in allr)


def test_select_batch_fewer_candidates_than_batch_returns_all():
    proba, X = _pool(n=7)
    picks = q.select_batch(proba, 50, "margin", 0, X_pool=X)
    assert sorted(p.index for p in picks) == list(range(7))
    assert q.select_batch(proba, 0, "margin", 0) == []


def test_select_batch_deterministic_per_seed():
    proba, X = _pool()
    kw = dict(X_pool=X, random_share=0.2, class_quota=0.3)
    a = q.select_batch(proba, 20, "margin", np.random.default_rng(11), **kw)
    b = q.select_batch(proba, 20, "margin", np.random.default_rng(11), **kw)
    c = q.select_batch(proba, 20, "margin", np.random.default_rng(12), **kw)
    assert a == b
    assert [p.index for p in a if p.reason == "random"] != [p.index for p in c if p.reason == "random"]


def test_select_batch_class_quota_fires_for_rare_predicted_class():
    rng = np.random.default_rng(0)
    n = 100
    proba = rng.dirichlet([5, 5, 0.5], size=n)
    proba[:, 2] = 0.0
    proba = proba / proba.sum(1, keepdims=True)
    rare = np.arange(5)  # five confident class-2 predictions: margin never picks them
    proba[rare] = np.array(
        [[0.02, 0.03, 0.95], [0.05, 0.05, 0.9], [0.1, 0.05, 0.85], [0.01, 0.01, 0.98], [0.04, 0.04, 0.92]]
    )
    pred = proba.argmax(1)
    no_quota = q.select_batch(proba, 20, "margin", 0, random_share=0.0)
    assert not any(pred[p.index] == 2 for p in no_quota)
    picks = q.select_batch(proba, 20, "margin", 0, random_share=0.0, class_quota=0.3)
    # floor(0.3 * 20 / 3) = 2 per class; class 2 gets its two most uncertain members: rows 2 (0.85) and 1 (0.9)
    quota = [p for p in picks if p.reason == "quota"]
    assert sorted(p.index for p in quota) == [1, 2]
    assert len(picks) == 20 and len({p.index for p in picks}) == 20
    counts = np.bincount(pred[[p.index for p in picks]], minlength=3)
    assert counts.min() >= 2
    # the displaced picks were the lowest-ranked strategy picks
    kept = {p.index for p in picks if p.reason == "strategy"}
    assert kept == {p.index for p in no_quota[:18]}


def _near_duplicate_corpus():
    base = [
        "the invoice total is wrong please refund me",
        "my parcel never arrived and tracking is stuck",
        "great service friendly staff would recommend",
        "the app crashes every single time when I open the settings page on my phone today",
        "how do I reset my password for the portal",
        "delivery was late but the driver was polite",
        "charged twice for the same order this month",
        "love the new update the dark mode looks nice",
        "cannot log in after changing my email address",
        "the product arrived damaged and the box was wet",
    ]
    texts = base * 1 + [
        "the invoice total is wrong please refund me!!",  # 10: duplicate of 0
        "The invoice total is WRONG, please refund me",  # 11: duplicate of 0
        "the app crashes every single time when I open the settings page on my phone",  # 12: near dup of 3
    ]
    vocab = (
        "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
        "quebec romeo sierra tango uniform victor whiskey xray yankee zulu amber cobalt indigo maroon olive "
        "salmon teal violet azure beige coral ivory khaki lemon"
    ).split()
    rng = np.random.default_rng(0)
    texts += [" ".join(rng.choice(vocab, size=5, replace=False)) for _ in range(40)]
    X = TfidfVectorizer().fit_transform(texts)
    return texts, X


def test_near_duplicates_never_both_selected_even_when_top_scored():
    _, X = _near_duplicate_corpus()
    n = X.shape[0]
    S = cosine_similarity(X)
    np.fill_diagonal(S, 0)
    # exactly these pairs are near-duplicates: {0, 10, 11} and {3, 12}
    assert {tuple(p) for p in np.argwhere(np.triu(S) > 0.95)} == {(0, 10), (0, 11), (10, 11), (3, 12)}
    proba = np.tile([0.95, 0.05], (n, 1))
    proba[[0, 10, 11, 3, 12]] = [0.5, 0.5]  # the duplicates are the five most uncertain items
    picks = q.select_batch(proba, 6, "margin", 0, random_share=0.0, X_pool=X, diversity=False)
    idx = [p.index for p in picks]
    assert len(idx) == 6
    assert len({0, 10, 11} & set(idx)) == 1 and len({3, 12} & set(idx)) == 1
    assert _max_pair_cosine(X, idx) <= 0.95
    # without the features the policy cannot know, and takes all five
    blind = q.select_batch(proba, 6, "margin", 0, random_share=0.0)
    assert {0, 10, 11, 3, 12} <= {p.index for p in blind}


@pytest.mark.parametrize("strategy", ["random", "margin", "coreset", "cluster-margin", "diversity-random"])
def test_near_duplicates_never_together_for_any_reason(strategy):
    texts, X = _near_duplicate_corpus()
    # a pool where every text appears three times: all random/strategy picks face duplicates
    X3 = sp.vstack([X, X, X]).tocsr()
    proba = np.random.default_rng(0).dirichlet([1, 1], size=X3.shape[0])
    for seed in range(3):
        picks = q.select_batch(proba, 30, strategy, seed, random_share=0.5, X_pool=X3, class_quota=0.2)
        idx = [p.index for p in picks]
        assert len(set(idx)) == len(idx) == 30
        assert _max_pair_cosine(X3, idx) <= 0.95


def test_pool_of_duplicates_yields_short_batch():
    X = sp.csr_matrix(np.tile([[1.0, 2.0, 0.0]], (10, 1)))
    proba = np.full((10, 2), 0.5)
    picks = q.select_batch(proba, 5, "margin", 0, X_pool=X)
    assert len(picks) == 1
    # threshold 1.0 disables the rule (similarities are clipped at 1)
    assert len(q.select_batch(proba, 5, "margin", 0, X_pool=X, near_duplicate_threshold=1.0)) == 5


def test_select_batch_qbc_uses_committee():
    rng = np.random.default_rng(4)
    committee = rng.dirichlet([1, 1, 1], size=(5, 50))
    proba = committee.mean(axis=0)
    picks = q.select_batch(proba, 5, "qbc-kl", 0, random_share=0.0, committee_proba=committee)
    expected = np.argsort(-q.mean_kl_divergence(committee), kind="stable")[:5]
    assert [p.index for p in picks] == expected.tolist()
    ve = q.select_batch(proba, 5, "qbc", 0, random_share=0.0, committee_proba=committee)
    top = q.vote_entropy(committee).max()
    assert all(p.score == pytest.approx(top) for p in ve)
    with pytest.raises(ValueError):
        q.select_batch(proba, 5, "qbc", 0)


def test_select_batch_diversity_spreads_over_clusters():
    X, blob = _three_direction_blobs(per=30)
    top1 = np.where(blob == 0, 0.5, 0.9) + np.linspace(0, 0.05, blob.size)
    proba = np.column_stack([top1, 1 - top1])
    # rows inside a blob are near-duplicates (cos > 0.95): switch that rule off to isolate diversity
    kw = dict(random_share=0.0, X_pool=X, near_duplicate_threshold=None, candidate_factor=15, candidate_share=1.0)
    plain = q.select_batch(proba, 6, "margin", 0, diversity=False, **kw)
    assert set(blob[[p.index for p in plain]]) == {0}
    spread = q.select_batch(proba, 6, "margin", 0, diversity=True, **kw)
    assert set(blob[[p.index for p in spread]]) == {0, 1, 2}
    # with the default share cap the candidates are this 90-row pool's 23 most uncertain rows (blob 0)
    capped = q.select_batch(proba, 6, "margin", 0, diversity=True, **{**kw, "candidate_share": q.CANDIDATE_SHARE})
    assert set(blob[[p.index for p in capped]]) == {0}
    # the most uncertain item overall is always kept
    assert int(np.argmax(q.margin(proba))) in {p.index for p in spread}


def test_fallback_is_half_diversity_half_random():
    proba, X = _pool()
    picks = q.fallback_batch(proba, 11, np.random.default_rng(0), X_pool=X, X_labelled=X[:5])
    reasons = [p.reason for p in picks]
    assert len(picks) == 11 and reasons.count("random") == 5 and reasons.count("diversity") == 6
    assert q.FALLBACK_STRATEGY not in q.STRATEGIES and set(q.STRATEGIES) >= {"margin", "random", "coreset"}


def _sparse_rows(n: int, d: int, per_row: int, seed: int) -> sp.csr_matrix:
    """Random sparse matrix built straight from CSR arrays (sp.random is slow at n*d = 1e8)."""
    rng = np.random.default_rng(seed)
    cols = rng.integers(0, d, size=n * per_row)
    indptr = np.arange(0, n * per_row + 1, per_row)
    X = sp.csr_matrix((rng.uniform(0.1, 1.0, size=n * per_row), cols, indptr), shape=(n, d))
    X.sum_duplicates()
    return X


def test_select_batch_sparse_pool_is_never_densified(monkeypatch):
    n, d = 20_000, 5_000
    X = _sparse_rows(n, d, 10, seed=0)
    proba = np.random.default_rng(0).dirichlet([1, 1, 1, 1], size=n)
    biggest = [0]
    real_toarray = sp.csr_matrix.toarray

    def guarded_toarray(self, *args, **kwargs):
        biggest[0] = max(biggest[0], self.shape[0] * self.shape[1])
        assert self.shape[0] * self.shape[1] <= q._CHUNK_ELEMENTS, f"densified a {self.shape} block"
        return real_toarray(self, *args, **kwargs)

    monkeypatch.setattr(sp.csr_matrix, "toarray", guarded_toarray)
    for strategy in ("margin", "coreset"):
        picks = q.select_batch(proba, 30, strategy, 0, X_pool=X, X_labelled=X[:50], class_quota=0.2)
        assert len({p.index for p in picks}) == 30
    assert 0 < biggest[0] <= q._CHUNK_ELEMENTS


def test_near_duplicate_guard_is_stable_to_last_bit_differences():
    """A pair sitting on the threshold gets the same verdict whatever the last bit of its
    dot product: BLAS may sum in another order in another process, and the batch must not
    change with it."""
    u = np.array([[1.0, 0.0]])
    verdicts = set()
    for steps in (-2, -1, 0, 1, 2):  # cosine 0.95 give or take two units in the last place
        c = 0.95
        for _ in range(abs(steps)):
            c = np.nextafter(c, 2.0 if steps > 0 else 0.0)
        rows = np.vstack([u, [[c, np.sqrt(1.0 - 0.95**2)]]])
        guard = q._NearDuplicateGuard(rows, 0.95)
        guard.add(0)
        verdicts.add(guard.accepts(1))
    assert verdicts == {True}, "the verdict flipped on a last-bit difference"
    # a clear duplicate is still refused
    guard = q._NearDuplicateGuard(np.vstack([u, [[0.951, np.sqrt(1.0 - 0.951**2)]]]), 0.95)
    guard.add(0)
    assert guard.accepts(1) is False


def test_diversity_candidates_are_capped_at_a_share_of_the_unlabelled_rows():
    """With a small pool and a large batch, "the top 10x candidates" would be most of the pool and
    diversity would pick from everything; ``candidate_share`` keeps the candidates the uncertain few."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 8))
    scores = np.linspace(1.0, 0.0, 100)  # row 0 most uncertain
    Xn = q._l2_rows(X)
    allowed = np.arange(100)
    full = q._cluster_round_robin(scores, Xn, allowed, 10, np.random.default_rng(1), candidate_factor=10,
                                  candidate_share=1.0)
    assert len(full) == 100  # uncapped, 10 x 10 = the whole pool
    default = q._cluster_round_robin(scores, Xn, allowed, 10, np.random.default_rng(1))
    assert len(default) == int(q.CANDIDATE_SHARE * 100), "capped by default"
    capped = q._cluster_round_robin(scores, Xn, allowed, 10, np.random.default_rng(1), candidate_factor=10,
                                    candidate_share=0.25)
    assert len(capped) == 25 and set(capped) == set(range(25)), "only the 25 most uncertain rows"
    # never fewer candidates than picks
    tiny = q._cluster_round_robin(scores, Xn, allowed, 10, np.random.default_rng(1), candidate_share=0.01)
    assert len(tiny) == 10 and set(tiny) == set(range(10))
    # select_batch passes it through: every strategy pick comes from the top quarter
    proba = np.column_stack([0.5 + 0.5 * (1 - scores), 0.5 - 0.5 * (1 - scores)])  # margin follows `scores`
    picks = q.select_batch(proba, 10, "margin", 0, random_share=0.0, X_pool=X, candidate_share=0.25)
    assert len(picks) == 10 and all(p.index < 25 for p in picks)
