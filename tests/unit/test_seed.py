from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from labelloop.tasks.seed import SplitError, carve_splits, default_seed_method, kmeans_representatives, stratified_sample


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


def test_too_few_labelled_rows_draws_evaluation_sets_at_random_for_people():
    f = _frame(100)
    f.loc[f.index[20:], "label"] = None
    split = carve_splits(f, test_size=20, calibration_size=10, seed_size=5, seed_method="kmeans",
                         features=TfidfVectorizer().fit_transform(f["text"]))
    assert split.attrs["by_people"] is True
    assert split.value_counts().to_dict() == {"pool": 65, "test": 20, "calibration": 10, "seed": 5}
    # uniform over all rows, not only the 20 labelled ones
    assert f.loc[split.isin(["test", "calibration"]), "label"].isna().sum() > 10


def test_too_few_rows_is_a_clear_error():
    with pytest.raises(SplitError, match="need more than 35 rows, but the data has 30"):
        carve_splits(_frame(30), test_size=20, calibration_size=10, seed_size=5)


def test_zero_sized_splits_come_from_files():
    split = carve_splits(_frame(100), test_size=0, calibration_size=0, seed_size=5)
    assert split.attrs["by_people"] is False
    assert split.value_counts().to_dict() == {"pool": 95, "seed": 5}


def test_default_seed_method_needs_no_labels_when_the_data_has_none():
    assert default_seed_method("stratified", False, 0, 100, False) == "kmeans"
    assert default_seed_method("stratified", False, 0, 100, True) == "keywords"
    assert default_seed_method("stratified", True, 0, 100, False) == "kmeans"  # `init` writes it: no label at all
    assert default_seed_method("stratified", True, 30, 100, False) == "stratified"  # asked for: setup says why not
    assert default_seed_method("stratified", False, 30, 100, False) == "kmeans"
    assert default_seed_method("stratified", False, 100, 100, False) == "stratified"


def test_kmeans_seed_takes_one_representative_per_cluster():
    texts = ["apple banana"] * 5 + ["car engine"] * 5 + ["river lake"] * 5
    X = TfidfVectorizer().fit_transform(texts)
    reps = kmeans_representatives(X, 3, random_state=0)
    assert len(set(reps)) == 3
    assert {r // 5 for r in reps} == {0, 1, 2}, "one representative from each topic"


# --------------------------------------------------------------------------- keyword rules


def _keyword_texts() -> pd.Series:
    return pd.Series({
        "a1": "I was charged twice for my invoice",
        "a2": "Where is my refund?",
        "a3": "Refund and also the app crashes",   # matches billing and tech
        "t1": "The app crashes on start",
        "t2": "Login error after the update",
        "n1": "Nice category of products",         # 'cat' must not match 'category'
        "n2": "What a lovely day",
        "c1": "My cat ate the charger",            # the one pet item
    })


RULES = {"billing": ["refund", "charged twice", "invoice"], "tech": ["crash", "crashes", "error"], "pets": ["cat"]}


def test_keyword_patterns_are_whole_word_case_insensitive_and_literal():
    from labelloop.tasks.seed import keyword_patterns

    pats = keyword_patterns({"x": ["cat", "c++", "charged twice"]})
    assert pats["x"].search("My CAT") and pats["x"].search("I was Charged Twice")
    assert not pats["x"].search("category") and not pats["x"].search("concatenate")
    assert pats["x"].search("I write c++ daily")  # taken literally, not as a regex
    with pytest.raises(SplitError, match="no keywords"):
        keyword_patterns({"x": ["  "]})


def test_keyword_seed_takes_turns_prefers_clear_matches_and_tops_up():
    from labelloop.tasks.seed import keyword_seed

    texts = _keyword_texts()
    chosen, counts = keyword_seed(texts, RULES, 3, np.random.default_rng(0))
    # one per label: the rare 'pets' class is in the seed; billing's pick is a clear match, never a3
    assert counts == {"billing": 1, "tech": 1, "pets": 1, "(random top-up)": 0}
    assert "c1" in chosen and "a3" not in chosen
    assert set(chosen) & {"a1", "a2"} and set(chosen) & {"t1", "t2"}

    chosen, counts = keyword_seed(texts, RULES, 7, np.random.default_rng(1))
    # billing: a1, a2 (clear) then a3 (mixed); tech: t1, t2 (a3 already taken); pets: c1; one random top-up
    assert counts == {"billing": 3, "tech": 2, "pets": 1, "(random top-up)": 1}
    assert set(chosen[:6]) == {"a1", "a2", "a3", "t1", "t2", "c1"}
    assert chosen[6] in {"n1", "n2"} and len(set(chosen)) == 7
    # deterministic for a given rng seed
    assert keyword_seed(texts, RULES, 7, np.random.default_rng(1))[0] == chosen


def test_carve_splits_with_keyword_seed_only_takes_pool_rows():
    texts = [f"invoice question {i}" for i in range(30)] + [f"app crash report {i}" for i in range(30)] + \
            [f"other text {i}" for i in range(40)]
    labels = ["billing"] * 30 + ["tech"] * 30 + ["other"] * 40
    frame = pd.DataFrame({"id": [str(i) for i in range(100)], "text": texts, "label": labels})
    split = carve_splits(frame, test_size=20, calibration_size=10, seed_size=10, seed_method="keywords",
                         keywords={"billing": ["invoice"], "tech": ["crash"]})
    seed = frame[split == "seed"]
    assert len(seed) == 10
    assert (seed["label"] == "billing").sum() == 5 and (seed["label"] == "tech").sum() == 5
    with pytest.raises(SplitError, match="needs keyword rules"):
        carve_splits(frame, test_size=20, calibration_size=10, seed_size=10, seed_method="keywords")
