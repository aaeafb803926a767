"""Tests for tasks.demo_data: the synthetic corpus has the properties the demo relies on."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.metrics.pairwise import cosine_similarity
from sklearn.model_selection import train_test_split

from labelloop.tasks.demo_data import (
    CLASS_SHARES,
    CLASSES,
    DRIFT_CLASS_SHARES,
    generate_demo_corpus,
    write_demo_files,
)
from labelloop.tasks.drift import domain_classifier_auc


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    return generate_demo_corpus(3000, seed=0, with_meta=True)


def test_columns_and_types(corpus: pd.DataFrame) -> None:
    plain = generate_demo_corpus(50, seed=0)
    assert list(plain.columns) == ["id", "text", "label"]
    assert all(isinstance(t, str) and t.strip() for t in corpus["text"])
    assert set(corpus["label"]) == set(CLASSES)


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    a = generate_demo_corpus(400, seed=3)
    b = generate_demo_corpus(400, seed=3)
    pd.testing.assert_frame_equal(a, b)
    c = generate_demo_corpus(400, seed=4)
    assert (a["text"] != c["text"]).mean() > 0.9
    d = generate_demo_corpus(400, seed=3, drift=True)
    assert (a["text"] != d["text"]).mean() > 0.9


def test_ids_unique_stable_and_prefixed(corpus: pd.DataFrame) -> None:
    assert corpus["id"].is_unique
    assert corpus["id"].iloc[123] == "demo-000123"
    assert generate_demo_corpus(5, seed=1, drift=True)["id"].tolist()[0] == "drift-000000"
    assert generate_demo_corpus(5, seed=1, id_prefix="fresh")["id"].iloc[4] == "fresh-000004"
    assert generate_demo_corpus(0).empty


def test_class_shares_follow_the_imbalance(corpus: pd.DataFrame) -> None:
    shares = corpus["true_label"].value_counts(normalize=True)
    for cls, expected in CLASS_SHARES.items():
        assert shares[cls] == pytest.approx(expected, abs=0.03), cls
    # the observed (noisy) labels keep the order billing > ... > feedback
    observed = corpus["label"].value_counts()
    assert observed.idxmax() == "billing" and observed.idxmin() == "feedback"


def test_drifted_batch_has_shifted_class_mix() -> None:
    shares = generate_demo_corpus(3000, seed=0, drift=True, with_meta=True)["true_label"].value_counts(
        normalize=True
    )
    assert shares["technical"] == pytest.approx(DRIFT_CLASS_SHARES["technical"], abs=0.03)
    assert shares["technical"] > CLASS_SHARES["technical"] + 0.08


def test_label_noise_rate_and_only_wrong_labels(corpus: pd.DataFrame) -> None:
    noisy = corpus["noisy"]
    assert noisy.mean() == pytest.approx(0.03, abs=0.012)
    assert (corpus.loc[noisy, "label"] != corpus.loc[noisy, "true_label"]).all()
    assert (corpus.loc[~noisy, "label"] == corpus.loc[~noisy, "true_label"]).all()


def test_ambiguous_rows_mix_two_classes_vocabulary(corpus: pd.DataFrame) -> None:
    assert corpus["ambiguous"].mean() == pytest.approx(0.10, abs=0.03)
    # A classifier's confidence is what marks them: compare with clean rows.
    vec = TfidfVectorizer(sublinear_tf=True).fit(corpus["text"])
    clean = corpus[~corpus["ambiguous"] & ~corpus["noisy"]]
    model = LogisticRegression(C=10, max_iter=1000).fit(vec.transform(clean["text"]), clean["true_label"])
    amb = corpus[corpus["ambiguous"]]
    conf_amb = model.predict_proba(vec.transform(amb["text"])).max(axis=1).mean()
    conf_clean = model.predict_proba(vec.transform(clean["text"].iloc[:500])).max(axis=1).mean()
    assert conf_amb < conf_clean - 0.1


def test_near_duplicates_are_rephrasings(corpus: pd.DataFrame) -> None:
    dups = corpus[corpus["near_dup_of"].notna()]
    assert 0.02 < len(dups) / len(corpus) < 0.09
    source = corpus.set_index("id").loc[dups["near_dup_of"]]
    assert (source["true_label"].to_numpy() == dups["true_label"].to_numpy()).all()
    vec = TfidfVectorizer().fit(corpus["text"])
    sim = cosine_similarity(vec.transform(dups["text"]), vec.transform(source["text"])).diagonal()
    # far more similar than two random tickets, mostly not verbatim copies
    rand_sim = cosine_similarity(
        vec.transform(corpus["text"].iloc[:200]), vec.transform(corpus["text"].iloc[200:400])
    ).diagonal()
    assert np.median(sim) > 0.75
    assert np.median(rand_sim) < 0.2
    assert (dups["text"].to_numpy() != source["text"].to_numpy()).mean() > 0.6


def test_fast_enough() -> None:
    start = time.perf_counter()
    generate_demo_corpus(3000, seed=5)
    # < 1 s on a developer machine (≈ 0.2 s); slack for shared CI cores.
    assert time.perf_counter() - start < 2.0


def test_learnable_but_not_trivial(corpus: pd.DataFrame) -> None:
    """50 labels give clearly lower macro-F1 than 1000: room for active learning."""
    pool, test = train_test_split(corpus, test_size=1000, stratify=corpus["label"], random_state=0)
    vec = TfidfVectorizer(sublinear_tf=True).fit(pool["text"])
    X_pool, X_test = vec.transform(pool["text"]), vec.transform(test["text"])

    def macro_f1(n: int) -> float:
        idx, _ = train_test_split(
            np.arange(len(pool)), train_size=n, stratify=pool["label"], random_state=1
        )
        clf = LogisticRegression(C=10, max_iter=1000, class_weight="balanced")
        clf.fit(X_pool[idx], pool["label"].to_numpy()[idx])
        return float(f1_score(test["label"], clf.predict(X_test), average="macro"))

    f1_50, f1_1000 = macro_f1(50), macro_f1(1000)
    assert f1_50 > 0.4, "50 labels should already be well above chance (0.2)"
    assert f1_1000 > 0.85
    assert f1_1000 - f1_50 > 0.15
    # noise + ambiguity cap what any amount of labels can reach
    assert f1_1000 < 0.97


def test_drifted_batch_distinguishable_fresh_batch_not() -> None:
    reference = generate_demo_corpus(1500, seed=0)["text"].tolist()
    drifted = generate_demo_corpus(300, seed=11, drift=True)["text"].tolist()
    fresh = generate_demo_corpus(300, seed=12)["text"].tolist()
    assert domain_classifier_auc(reference, drifted) > 0.9
    assert domain_classifier_auc(reference, fresh) < 0.65


def test_write_demo_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    paths = write_demo_files(tmp_path / "demo", n=400, seed=2)
    assert set(paths) == {"pool", "arrivals_drift", "arrivals_fresh"}
    frames = {name: pd.read_csv(path, dtype=str, keep_default_na=False) for name, path in paths.items()}
    assert len(frames["pool"]) == 400
    assert len(frames["arrivals_drift"]) == len(frames["arrivals_fresh"]) == 300
    for df in frames.values():
        assert list(df.columns) == ["id", "text", "label"]
        assert set(df["label"]) <= set(CLASSES)
    all_ids = pd.concat([df["id"] for df in frames.values()])
    assert all_ids.is_unique  # arrivals can be appended to the pool
    # round-trips exactly (texts with commas/quotes survive CSV)
    pd.testing.assert_frame_equal(frames["pool"], generate_demo_corpus(400, seed=2))
