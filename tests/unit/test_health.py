"""Health checks: each has a case that fires and a case that does not."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics.pairwise import cosine_similarity

from labelloop.tasks import health as h

# ---------------------------------------------------------------------------
# per-class recall
# ---------------------------------------------------------------------------


def test_recall_spread_fires():
    c = h.per_class_recall_check([{"ham": 0.98, "spam": 0.30}], max_spread=0.5)
    assert c.fired and c.value == pytest.approx(0.68) and "spam: 0.30" in c.message


def test_recall_drop_fires_even_with_small_spread():
    hist = [{"a": 0.80, "b": 0.80}, {"a": 0.85, "b": 0.82}, {"a": 0.65, "b": 0.82}]
    c = h.per_class_recall_check(hist, max_spread=0.5, max_drop=0.15, window=3)
    assert c.fired and "a (-0.20" in c.message


def test_recall_balanced_and_stable_does_not_fire():
    hist = [{"a": 0.70, "b": 0.65}, {"a": 0.75, "b": 0.70}, {"a": 0.78, "b": 0.74}]
    c = h.per_class_recall_check(hist)
    assert not c.fired and not c.skipped and c.value == pytest.approx(0.04)


def test_recall_skipped_without_data_and_prefix_helper():
    assert h.per_class_recall_check([]).skipped
    m = {"test_macro_f1": 0.5, "test_recall_ham": 0.9, "test_recall_spam": 0.4}
    assert h.recalls_from_metrics(m) == {"ham": 0.9, "spam": 0.4}
    # the round passes its metric prefix in full: it used to find nothing, so the check was always skipped
    assert h.recalls_from_metrics(m, "test_recall_") == {"ham": 0.9, "spam": 0.4}


# ---------------------------------------------------------------------------
# ECE
# ---------------------------------------------------------------------------


def test_ece_check():
    fired = h.ece_check(0.14, 0.10)
    assert fired.fired and fired.value == 0.14 and fired.threshold == 0.10
    ok = h.ece_check(0.06, 0.10)
    assert not ok.fired and "0.060" in ok.message
    assert h.ece_check(float("nan")).fired  # unmeasured scores are not trusted
    assert h.ece_check(None).skipped


# ---------------------------------------------------------------------------
# random ahead
# ---------------------------------------------------------------------------


def test_random_ahead_fires_at_matched_label_counts():
    # active is measured at 125/175/225, random at 100/150/200/250: compare by interpolation
    active = [(75, 0.40), (125, 0.50), (175, 0.55), (225, 0.58)]
    random = [(100, 0.50), (150, 0.58), (200, 0.63), (250, 0.66)]
    c = h.random_ahead_check(active, random, last_k=3, tolerance=0.01)
    # random at 125 = 0.54, 175 = 0.605, 225 = 0.645 -> gaps 0.04, 0.055, 0.065
    assert c.fired
    assert c.value == pytest.approx((0.04 + 0.055 + 0.065) / 3)


def test_random_ahead_does_not_fire_when_active_leads_or_ties_once():
    random = [(100, 0.50), (150, 0.58), (200, 0.63), (250, 0.66)]
    leading = [(100, 0.55), (150, 0.62), (200, 0.68), (250, 0.70)]
    assert not h.random_ahead_check(leading, random).fired
    once = [(100, 0.45), (150, 0.50), (200, 0.64), (250, 0.60)]  # behind, then level at 200
    assert not h.random_ahead_check(once, random, last_k=3).fired


def test_random_ahead_accepts_other_curve_shapes_and_skips():
    a = {"labels": [100, 150, 200], "macro_f1": [0.4, 0.45, 0.5]}
    r = ([100, 150, 200], [0.5, 0.55, 0.6])
    assert h.random_ahead_check(a, r).fired
    assert h.random_ahead_check(a, None).skipped
    # no extrapolation: random measured only up to 150
    assert h.random_ahead_check(a, ([100, 150], [0.5, 0.55]), last_k=3).skipped


# ---------------------------------------------------------------------------
# batch convergence
# ---------------------------------------------------------------------------


def _clustered(n_clusters=20, per=50, dim=200, seed=0, sparse=True):
    rng = np.random.default_rng(seed)
    centres = rng.random((n_clusters, dim)) ** 8  # spiky, TF-IDF-like non-negative centres
    X = np.vstack([np.clip(c + 0.05 * rng.standard_normal((per, dim)), 0, None) for c in centres])
    labels = np.repeat(np.arange(n_clusters), per)
    return (sp.csr_matrix(X) if sparse else X), labels


def test_mean_pairwise_cosine_matches_brute_force():
    X, _ = _clustered(n_clusters=3, per=7)
    S = cosine_similarity(X)
    n = S.shape[0]
    assert h.mean_pairwise_cosine(X) == pytest.approx((S.sum() - np.trace(S)) / (n * (n - 1)))
    assert h.mean_pairwise_cosine(X.toarray()) == pytest.approx(h.mean_pairwise_cosine(X))
    assert math.isnan(h.mean_pairwise_cosine(X[:1]))


def test_batch_similarity_fires_for_a_one_cluster_batch():
    X, lab = _clustered()
    c = h.batch_similarity_check(X[np.flatnonzero(lab == 3)[:25]], X)
    assert c.fired and c.value > 2


def test_batch_similarity_does_not_fire_for_a_random_batch():
    X, _ = _clustered()
    idx = np.random.default_rng(1).choice(X.shape[0], 25, replace=False)
    c = h.batch_similarity_check(X[idx], X)
    assert not c.fired and 0.5 < c.value < 1.5
    # the sampled-pool variant agrees closely with the exact one
    c2 = h.batch_similarity_check(X[idx], X, pool_sample=400, rng=0)
    assert c2.value == pytest.approx(c.value, rel=0.2)
    assert h.batch_similarity_check(X[:1], X).skipped


def test_knn_sets_match_brute_force_with_small_chunks():
    X, _ = _clustered(n_clusters=5, per=20)
    Xn = h._l2(X)
    got = h._knn_sets(Xn[:7], Xn, 4, chunk_elements=30)
    S = cosine_similarity(X[:7], X)
    for row, s in zip(got, S):
        assert sorted(row.tolist()) == sorted(np.argsort(-s, kind="stable")[:4].tolist()) or \
            np.allclose(sorted(s[row]), sorted(np.sort(s)[-4:]))


def test_neighbourhood_overlap_fires_when_batches_stay_in_one_cluster():
    X, lab = _clustered()
    members = np.flatnonzero(lab == 5)
    prev, now = members[:10], members[10:20]
    c = h.neighbourhood_overlap_check(X[now], X[prev], X, k=10)
    assert c.fired and c.value > 0.5


def test_neighbourhood_overlap_does_not_fire_for_batches_in_different_regions():
    X, lab = _clustered()
    prev = np.flatnonzero(lab == 5)[:10]
    now = np.concatenate([np.flatnonzero(lab == c)[:1] for c in range(10, 20)])
    c = h.neighbourhood_overlap_check(X[now], X[prev], X, k=10)
    assert not c.fired and c.value < 0.1
    assert h.neighbourhood_overlap_check(X[now], None, X).skipped


# ---------------------------------------------------------------------------
# all together
# ---------------------------------------------------------------------------


def test_run_health_checks_order_skips_and_logging_helpers():
    X, lab = _clustered()
    checks = h.run_health_checks(
        recall_history=[{"a": 0.9, "b": 0.2}],
        ece=0.05,
        active_curve=[(100, 0.5), (150, 0.6), (200, 0.7)],
        random_curve=[(100, 0.5), (150, 0.55), (200, 0.6)],
        X_batch=X[np.flatnonzero(lab == 2)[:20]],
        X_pool=X,
        X_prev_batch=None,
    )
    assert [c.name for c in checks] == ["per_class_recall", "calibration_ece", "random_ahead", "batch_similarity",
                                        "neighbourhood_overlap"]
    fired = {c.name for c in checks if c.fired}
    assert fired == {"per_class_recall", "batch_similarity"}
    assert checks[-1].skipped
    m = h.health_metrics(checks)
    assert m["health_per_class_recall_fired"] == 1.0 and m["health_calibration_ece"] == 0.05
    assert "health_neighbourhood_overlap_fired" not in m
    tags = h.health_tags(checks)
    assert tags["labelloop.health.neighbourhood_overlap"] == "skipped"
    assert tags["labelloop.health.calibration_ece"] == "ok"
    assert tags["labelloop.health.batch_similarity"].startswith("fired: ")
    assert checks[0].to_dict()["fired"] is True


def test_run_health_checks_with_nothing_skips_everything():
    checks = h.run_health_checks()
    assert len(checks) == 5 and all(c.skipped and not c.fired for c in checks)


def test_the_guard_fires_only_with_the_check_and_never_lowers_the_share():
    from labelloop.tasks.policy import QueryPolicy, random_ahead_fired, random_share

    active = [(100, 0.50), (150, 0.55), (200, 0.60)]
    ahead = [(100, 0.60), (150, 0.65), (200, 0.70), (250, 0.99)]
    assert random_ahead_fired(active, ahead)
    # the guard looks at the latest matched label count only: ahead there fires, whatever came before
    assert random_ahead_fired(active, [(100, 0.40), (150, 0.50), (200, 0.62)])
    assert not random_ahead_fired(active, [(100, 0.60), (150, 0.65), (200, 0.605)]), "within the tolerance"
    assert random_ahead_fired(active[:1], ahead), "one matched point is enough"
    assert not random_ahead_fired([], ahead) and not random_ahead_fired(active, None)
    # the health check's own default still asks for 3 points (the simulate summary's mean-curve check)
    assert not h.random_ahead_check(active[:2], ahead).fired
    low = QueryPolicy(random_share=0.1, random_ahead_share=0.05)
    assert random_share(low, "active", 4, random_ahead_fired=True) == (0.1, None), "never below the configured share"
