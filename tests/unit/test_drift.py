"""Tests for tasks.drift: hand-computed statistics and the demo's drift property."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from labelloop.tasks.demo_data import CLASSES, generate_demo_corpus
from labelloop.tasks.drift import (
    DEFAULT_THRESHOLDS,
    default_tokenizer,
    domain_classifier_auc,
    drift_report,
    label_distribution_shift,
    oov_rate,
    population_stability_index,
)

# ---------------------------------------------------------------- PSI


def test_psi_hand_computed_two_bins() -> None:
    # Reference 1..10 -> median edge 5.5 -> e = (0.5, 0.5).
    # New [1, 2, 3, 7]: three below, one above -> a = (0.75, 0.25).
    # PSI = 0.25*ln(0.75/0.5) + (-0.25)*ln(0.25/0.5) = 0.25*ln 1.5 + 0.25*ln 2
    psi = population_stability_index(np.arange(1, 11), [1, 2, 3, 7], n_bins=2)
    assert psi == pytest.approx(0.25 * math.log(1.5) + 0.25 * math.log(2))
    assert psi == pytest.approx(0.274653, abs=1e-6)


def test_psi_zero_for_identical_distribution() -> None:
    ref = np.linspace(0, 1, 1000)
    assert population_stability_index(ref, ref.copy()) == pytest.approx(0.0, abs=1e-12)


def test_psi_empty_bin_is_floored_at_eps() -> None:
    # a = (1, 0) -> (1, eps); e = (0.5, 0.5)
    eps = 1e-4
    psi = population_stability_index(np.arange(1, 11), [1, 2], n_bins=2, eps=eps)
    expected = (1 - 0.5) * math.log(1 / 0.5) + (eps - 0.5) * math.log(eps / 0.5)
    assert psi == pytest.approx(expected)
    assert math.isfinite(psi)


def test_psi_counts_new_scores_outside_reference_range() -> None:
    # All new scores above the reference maximum land in the open top bin.
    ref = np.linspace(0.0, 1.0, 100)
    psi_far = population_stability_index(ref, np.full(50, 5.0), n_bins=4)
    # e = 0.25 everywhere, a = (eps, eps, eps, 1)
    eps = 1e-4
    expected = 3 * (eps - 0.25) * math.log(eps / 0.25) + (1 - 0.25) * math.log(1 / 0.25)
    assert psi_far == pytest.approx(expected)


def test_psi_tolerates_tied_quantiles() -> None:
    # 80 % of confidences exactly 1.0: quantile edges repeat and are merged.
    ref = np.r_[np.full(80, 1.0), np.linspace(0.4, 0.9, 20)]
    assert population_stability_index(ref, ref) == pytest.approx(0.0, abs=1e-12)
    assert population_stability_index(ref, np.linspace(0.4, 0.9, 50)) > 1.0


def test_psi_rejects_empty_input() -> None:
    with pytest.raises(ValueError):
        population_stability_index([], [0.5])


# ------------------------------------------------------- label shift


def test_label_shift_total_variation_hand_computed() -> None:
    # p = (1/2, 1/2, 0), q = (3/4, 1/4, 0) -> TV = 1/2 * (1/4 + 1/4) = 1/4
    tv = label_distribution_shift(["a", "a", "b", "b"], ["a", "a", "a", "b"], ["a", "b", "c"])
    assert tv == pytest.approx(0.25)


def test_label_shift_disjoint_is_one_and_identical_is_zero() -> None:
    assert label_distribution_shift(["a"] * 5, ["b"] * 3, ["a", "b"]) == pytest.approx(1.0)
    assert label_distribution_shift(["a", "b"], ["b", "a"], ["a", "b"]) == pytest.approx(0.0)


def test_label_shift_jensen_shannon_hand_computed() -> None:
    # p = (1/2, 1/2), q = (3/4, 1/4), m = (5/8, 3/8)
    kl_pm = 0.5 * math.log2(0.5 / 0.625) + 0.5 * math.log2(0.5 / 0.375)
    kl_qm = 0.75 * math.log2(0.75 / 0.625) + 0.25 * math.log2(0.25 / 0.375)
    js = label_distribution_shift(["a", "b"], ["a", "a", "a", "b"], ["a", "b"], method="js")
    assert js == pytest.approx(0.5 * kl_pm + 0.5 * kl_qm)
    assert js == pytest.approx(0.048795, abs=1e-6)
    assert label_distribution_shift(["a"], ["b"], ["a", "b"], method="js") == pytest.approx(1.0)


def test_label_shift_rejects_unknown_labels_and_empty_input() -> None:
    with pytest.raises(ValueError, match="outside"):
        label_distribution_shift(["a"], ["z"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        label_distribution_shift([], ["a"], ["a", "b"])


# ------------------------------------------------------------- OOV


def test_oov_rate_hand_computed_default_tokenizer() -> None:
    # Reference vocabulary {the, cat, sat, dog} ("a" is dropped: 1 char).
    # New tokens: the, cat, ran, dog ("x" dropped, "DOG" lower-cased) -> 1/4.
    assert oov_rate(["The cat sat", "a dog"], ["The cat ran!", "DOG x"]) == pytest.approx(0.25)


def test_oov_rate_counts_occurrences_not_types() -> None:
    # 'zebra' twice + 'cat' once -> 2/3
    assert oov_rate(["cat"], ["zebra cat zebra"]) == pytest.approx(2 / 3)


def test_oov_rate_custom_tokenizer() -> None:
    # str.split keeps case and punctuation: "ran!", "DOG", "x" unseen of 5.
    rate = oov_rate(["The cat sat", "a dog"], ["The cat ran!", "DOG x"], tokenizer=str.split)
    assert rate == pytest.approx(3 / 5)


def test_oov_rate_empty_new_texts_is_zero() -> None:
    assert oov_rate(["some words"], []) == 0.0
    assert oov_rate(["some words"], ["!", "?"]) == 0.0


def test_default_tokenizer_matches_sklearn() -> None:
    text = "Hello, WORLD! e-mail a b 2FA x1 ok."
    analyzer = TfidfVectorizer().build_analyzer()
    assert default_tokenizer(text) == analyzer(text)


# ------------------------------------------------------- domain AUC

_WORDS_A = [f"alpha{i}" for i in range(40)]
_WORDS_B = [f"bravo{i}" for i in range(40)]


def _random_texts(words: list[str], n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, size=8)) for _ in range(n)]


def test_domain_auc_near_half_for_same_distribution() -> None:
    auc = domain_classifier_auc(_random_texts(_WORDS_A, 300, 1), _random_texts(_WORDS_A, 300, 2))
    assert 0.4 < auc < 0.62


def test_domain_auc_near_one_for_disjoint_vocabulary() -> None:
    auc = domain_classifier_auc(_random_texts(_WORDS_A, 200, 1), _random_texts(_WORDS_B, 200, 2))
    assert auc > 0.99


def test_domain_auc_balances_unequal_sizes_and_is_deterministic() -> None:
    # 2000 vs 40 rows: without balancing, a constant "reference" guess would
    # dominate; with balancing the same-distribution AUC still sits near 0.5.
    ref = _random_texts(_WORDS_A, 2000, 3)
    new = _random_texts(_WORDS_A, 40, 4)
    a1 = domain_classifier_auc(ref, new, seed=7)
    a2 = domain_classifier_auc(ref, new, seed=7)
    assert a1 == a2
    assert 0.25 < a1 < 0.75


def test_domain_auc_subsamples_each_side_to_max_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    original = TfidfVectorizer.fit_transform

    def spy(self, raw_documents, y=None):  # type: ignore[no-untyped-def]
        seen.append(len(raw_documents))
        return original(self, raw_documents, y)

    monkeypatch.setattr(TfidfVectorizer, "fit_transform", spy)
    domain_classifier_auc(_random_texts(_WORDS_A, 500, 1), _random_texts(_WORDS_A, 90, 2), max_rows=30)
    assert seen == [60]  # 30 reference + 30 new
    seen.clear()
    domain_classifier_auc(_random_texts(_WORDS_A, 500, 1), _random_texts(_WORDS_A, 90, 2))
    assert seen == [180]  # balanced to the smaller side


def test_domain_auc_requires_two_rows_per_side() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        domain_classifier_auc(["one text"], ["a", "b", "c"])


# ------------------------------------------------------- drift_report


def test_default_thresholds_are_the_documented_ones() -> None:
    assert DEFAULT_THRESHOLDS == {
        "domain_auc": 0.75,
        "confidence_psi": 0.25,
        "label_shift": 0.2,
        "oov_rate": 0.2,
    }


def test_drift_report_fires_and_names_reasons() -> None:
    ref = _random_texts(_WORDS_A, 100, 1)
    new = _random_texts(_WORDS_B, 100, 2)
    report = drift_report(
        ref, new,
        ref_confidence=np.linspace(0.5, 1.0, 100), new_confidence=np.linspace(0.5, 1.0, 100),
        ref_pred_labels=["a"] * 50 + ["b"] * 50, new_pred_labels=["a"] * 50 + ["b"] * 50,
        labels=["a", "b"],
    )
    assert report["drifted"] is True
    # vocabulary fully new -> AUC ~1 and OOV = 1; model inputs identical -> silent
    assert report["reasons"] == ["domain_auc", "oov_rate"]
    assert report["oov_rate"] == pytest.approx(1.0)
    assert report["confidence_psi"] == pytest.approx(0.0, abs=1e-12)
    assert report["label_shift"] == pytest.approx(0.0)
    assert set(report) >= {"domain_auc", "confidence_psi", "label_shift", "oov_rate", "drifted", "reasons"}


def test_drift_report_threshold_override_and_disable() -> None:
    ref = _random_texts(_WORDS_A, 60, 1)
    new = _random_texts(_WORDS_B, 60, 2)
    report = drift_report(
        ref, new, None, None, ["a"] * 60, ["b"] * 60, ["a", "b"],
        thresholds={"domain_auc": math.inf, "oov_rate": math.inf},
    )
    assert report["reasons"] == ["label_shift"]
    assert report["confidence_psi"] is None  # no model inputs -> not computed, never fires
    assert report["thresholds"]["label_shift"] == DEFAULT_THRESHOLDS["label_shift"]
    with pytest.raises(ValueError, match="unknown drift thresholds"):
        drift_report(ref, new, None, None, None, None, ["a"], thresholds={"domain_acu": 0.9})


def test_drift_report_silent_on_same_distribution() -> None:
    report = drift_report(
        _random_texts(_WORDS_A, 200, 1), _random_texts(_WORDS_A, 200, 2),
        None, None, None, None, ["a"],
    )
    assert report["drifted"] is False and report["reasons"] == []
    assert isinstance(report["drifted"], bool)


# --------------------------------------- the demo's key drift property


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_demo_drift_fires_on_drifted_batch_and_not_on_fresh_sample(seed: int) -> None:
    reference = generate_demo_corpus(2000, seed=seed)
    drifted = generate_demo_corpus(300, seed=seed + 100, drift=True)
    fresh = generate_demo_corpus(300, seed=seed + 200)

    # A small model trained on 300 labelled reference rows; reference-side
    # confidences come from the other (unseen) reference rows.
    train, held = reference.iloc[:300], reference.iloc[300:]
    model = make_pipeline(
        TfidfVectorizer(sublinear_tf=True),
        LogisticRegression(C=10, max_iter=1000, class_weight="balanced"),
    ).fit(train["text"], train["label"])
    ref_proba = model.predict_proba(held["text"])

    def report_for(new_texts: list[str]) -> dict:
        proba = model.predict_proba(new_texts)
        return drift_report(
            held["text"].tolist(), new_texts,
            ref_proba.max(axis=1), proba.max(axis=1),
            model.classes_[ref_proba.argmax(axis=1)], model.classes_[proba.argmax(axis=1)],
            list(CLASSES), seed=seed,
        )

    on_drift = report_for(drifted["text"].tolist())
    on_fresh = report_for(fresh["text"].tolist())

    assert on_drift["drifted"] is True
    assert "domain_auc" in on_drift["reasons"] and on_drift["domain_auc"] > 0.9
    assert on_fresh["drifted"] is False, on_fresh
    assert on_fresh["domain_auc"] < 0.65
    # Every statistic moves in the right direction, not just the one that fired.
    for key in ("domain_auc", "confidence_psi", "label_shift", "oov_rate"):
        assert on_drift[key] > on_fresh[key], key
