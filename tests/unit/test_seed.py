from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from tasks.seed import SplitError, carve_splits, kmeans_representatives, stratified_sample


def _frame(n=400, rare_every=10):
    labels = ["rare" if i % rare_every == 0 else ("x" if i % 2 else "y") for i in range(n)]
    return pd.DataFrame({"id": [f"i{i}" for i in range(n)], "text": [f"word{i % 37} thing {lbl}" for i, lbl in
                                                                      enumerate(labels)], "label": labels})


def test_stratified_sample_keeps_shares_and_every_class():
    s = pd.Series(["a"] * 90 + ["b"] * 9 + ["c"] * 1)
    pick = stratified_sample(s, 10, np.random.default_rng(0))
    counts = s[pick].value_counts().to_dict()
    assert len(pick) == 10 and len(set(pick)) == 10
    assert counts["c"] == 1 and counts["b"] >= 1 and counts["a"] >= 7


def test_splits_are_disjoint_stratified_and_deterministic():
    f = _frame()
    a = carve_splits(f, test_size=100, calibration_size=50, seed_size=20, random_state=3)
    b = carve_splits(f, test_size=100, calibration_size=50, seed_size=20, random_state=3)
    assert a.equals(b)
    assert a.value_counts().to_dict() == {"pool": 230, "test": 100, "calibration": 50, "seed": 20}
    test_share = (f.loc[a == "test", "label"] == "rare").mean()
    assert test_share == pytest.approx(0.1, abs=0.02)
    assert set(f.loc[a == "seed", "label"]) == {"rare", "x", "y"}


def test_too_few_labelled_rows_is_a_clear_error():
    f = _frame(100)
    f.loc[f.index[20:], "label"] = None
    with pytest.raises(SplitError, match="need 30 rows with known labels, but the data has 20"):
        carve_splits(f, test_size=20, calibration_size=10, seed_size=5)


def test_kmeans_seed_takes_one_representative_per_cluster():
    texts = ["apple banana"] * 5 + ["car engine"] * 5 + ["river lake"] * 5
    X = TfidfVectorizer().fit_transform(texts)
    reps = kmeans_representatives(X, 3, random_state=0)
    assert len(set(reps)) == 3
    assert {r // 5 for r in reps} == {0, 1, 2}, "one representative from each topic"
