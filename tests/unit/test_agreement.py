"""Tests for tasks.agreement.

Every statistic is checked twice: against a value worked out by hand in the
comments (so a shared misunderstanding with a library cannot hide), and
against the reference implementation (scikit-learn, statsmodels,
krippendorff) on random sparse data.
"""

from __future__ import annotations

import math
import warnings
from itertools import combinations

import krippendorff
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from labelloop.tasks.agreement import (
    DawidSkeneResult,
    agreement_report,
    annotator_accuracy,
    consensus,
    dawid_skene,
    fleiss_kappa,
    krippendorff_alpha,
    majority_vote,
    mean_cohen_kappa,
    pairwise_cohen_kappa,
    percent_agreement,
)

AB = ["a", "b"]
REPORT_KEYS = {
    "n_items",
    "n_annotations",
    "percent_agreement",
    "mean_cohen_kappa",
    "fleiss_kappa",
    "krippendorff_alpha",
}


def long(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item_id", "annotator", "label"])


@pytest.fixture
def hand() -> pd.DataFrame:
    """Small sparse batch with every kind of item; values below are by hand.

    item  A  B  C
    i1    a  a  .
    i2    a  b  .      <- a 1-1 tie
    i3    b  b  .
    i4    b  b  .
    i5    a  .  .      <- single annotation: unpairable
    i6    a  a  b      <- three annotators
    """
    return long(
        [
            ("i1", "A", "a"), ("i1", "B", "a"),
            ("i2", "A", "a"), ("i2", "B", "b"),
            ("i3", "A", "b"), ("i3", "B", "b"),
            ("i4", "A", "b"), ("i4", "B", "b"),
            ("i5", "A", "a"),
            ("i6", "A", "a"), ("i6", "B", "a"), ("i6", "C", "b"),
        ]
    )  # fmt: skip


def random_sparse(seed: int, n_items: int, n_annotators: int, labels: list[str], p_missing: float) -> pd.DataFrame:
    """Uniformly random labels with annotations missing at random (chance agreement)."""
    rng = np.random.default_rng(seed)
    rows = [
        (f"it{i:05d}", f"ann{j}", labels[rng.integers(len(labels))])
        for i in range(n_items)
        for j in range(n_annotators)
        if rng.random() >= p_missing
    ]
    return long(rows)


def perfect(n_items: int = 30, n_annotators: int = 3, labels: list[str] = ["a", "b", "c"]) -> pd.DataFrame:
    return long([(f"it{i}", f"ann{j}", labels[i % len(labels)]) for i in range(n_items) for j in range(n_annotators)])


# --------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------


def test_missing_column_is_an_error() -> None:
    with pytest.raises(ValueError, match="annotator"):
        majority_vote(pd.DataFrame({"item_id": ["x"], "label": ["a"]}), AB)


def test_label_outside_label_set_is_an_error() -> None:
    with pytest.raises(ValueError, match="zzz"):
        fleiss_kappa(long([("i1", "A", "a"), ("i1", "B", "zzz")]), AB)


def test_duplicate_label_set_is_an_error() -> None:
    with pytest.raises(ValueError, match="unique"):
        majority_vote(long([("i1", "A", "a")]), ["a", "a"])


def test_resubmitted_annotation_replaces_the_earlier_one() -> None:
    # A first said "a", then revised to "b": one vote for b, not a 1-1 tie.
    ann = long([("i1", "A", "a"), ("i1", "B", "b"), ("i1", "A", "b")])
    mv = majority_vote(ann, AB)
    assert mv.loc["i1", "label"] == "b"
    assert mv.loc["i1", "n_annotations"] == 2
    assert mv.loc["i1", "confidence"] == 1.0
    assert percent_agreement(ann) == 1.0


def test_skipped_rows_with_null_label_are_ignored() -> None:
    ann = long([("i1", "A", "a"), ("i1", "B", "a")])
    ann.loc[len(ann)] = ["i1", "C", None]
    assert majority_vote(ann, AB).loc["i1", "n_annotations"] == 2
    assert percent_agreement(ann) == 1.0


# --------------------------------------------------------------------------
# majority vote
# --------------------------------------------------------------------------


def test_majority_vote_hand(hand: pd.DataFrame) -> None:
    mv = majority_vote(hand, AB)
    assert list(mv.columns) == ["label", "confidence", "n_annotations", "tie"]
    assert list(mv.index) == ["i1", "i2", "i3", "i4", "i5", "i6"]
    assert mv.index.name == "item_id"
    assert list(mv["label"]) == ["a", "a", "b", "b", "a", "a"]
    assert mv["confidence"].tolist() == pytest.approx([1, 0.5, 1, 1, 1, 2 / 3])
    assert mv["n_annotations"].tolist() == [2, 2, 2, 2, 1, 3]
    assert mv["tie"].tolist() == [False, True, False, False, False, False]


def test_majority_vote_ties_follow_label_set_order(hand: pd.DataFrame) -> None:
    # i2 is a 1-1 tie: the label listed first in the campaign's label set wins.
    assert majority_vote(hand, ["a", "b"]).loc["i2", "label"] == "a"
    assert majority_vote(hand, ["b", "a"]).loc["i2", "label"] == "b"
    # non-tied items do not depend on the order
    rev = majority_vote(hand, ["b", "a"]).drop(index="i2")
    assert rev["label"].tolist() == majority_vote(hand, AB).drop(index="i2")["label"].tolist()


def test_majority_vote_three_way_tie_and_unused_label() -> None:
    ann = long([("i1", "A", "c"), ("i1", "B", "b"), ("i1", "C", "a")])
    mv = majority_vote(ann, ["b", "c", "a", "d"])
    assert mv.loc["i1", "label"] == "b"
    assert mv.loc["i1", "tie"]
    assert mv.loc["i1", "confidence"] == pytest.approx(1 / 3)


def test_majority_vote_does_not_depend_on_row_order(hand: pd.DataFrame) -> None:
    shuffled = hand.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(majority_vote(shuffled, AB), majority_vote(hand, AB))


def test_majority_vote_empty() -> None:
    mv = majority_vote(long([]), AB)
    assert mv.empty
    assert list(mv.columns) == ["label", "confidence", "n_annotations", "tie"]


# --------------------------------------------------------------------------
# percent agreement
# --------------------------------------------------------------------------


def test_percent_agreement_hand(hand: pd.DataFrame) -> None:
    # i1 1, i2 0, i3 1, i4 1, i6: 1 agreeing pair (A,B) of 3 -> 1/3; i5 dropped
    assert percent_agreement(hand) == pytest.approx((1 + 0 + 1 + 1 + 1 / 3) / 5)


def test_percent_agreement_matches_bruteforce_pairs() -> None:
    ann = random_sparse(seed=1, n_items=60, n_annotators=5, labels=["x", "y", "z"], p_missing=0.4)
    shares = []
    for _, g in ann.groupby("item_id"):
        labs = g["label"].tolist()
        if len(labs) >= 2:
            pairs = list(combinations(labs, 2))
            shares.append(sum(p == q for p, q in pairs) / len(pairs))
    assert percent_agreement(ann) == pytest.approx(np.mean(shares), abs=1e-12)


# --------------------------------------------------------------------------
# Cohen's kappa
# --------------------------------------------------------------------------


def test_pairwise_cohen_kappa_hand(hand: pd.DataFrame) -> None:
    # A vs B share i1,i2,i3,i4,i6: A=a,a,b,b,a  B=a,b,b,b,a
    # p_o = 4/5; marginals A (3a,2b), B (2a,3b) -> p_e = (6+6)/25 = 12/25
    # kappa = (0.8 - 0.48) / 0.52 = 8/13.  (A,C) and (B,C) share one item only.
    pk = pairwise_cohen_kappa(hand)
    assert list(pk.columns) == ["a", "b", "n_shared", "kappa"]
    assert len(pk) == 1
    row = pk.iloc[0]
    assert (row["a"], row["b"], row["n_shared"]) == ("A", "B", 5)
    assert row["kappa"] == pytest.approx(8 / 13)
    assert mean_cohen_kappa(hand) == pytest.approx(8 / 13)


def test_pairwise_cohen_kappa_min_shared(hand: pd.DataFrame) -> None:
    pk = pairwise_cohen_kappa(hand, min_shared=1)
    assert set(zip(pk["a"], pk["b"])) == {("A", "B"), ("A", "C"), ("B", "C")}
    assert pk.set_index(["a", "b"]).loc[("A", "C"), "n_shared"] == 1
    assert pairwise_cohen_kappa(hand, min_shared=6).empty
    assert math.isnan(mean_cohen_kappa(hand, min_shared=6))


def test_pairwise_cohen_kappa_matches_sklearn_on_sparse_data() -> None:
    ann = random_sparse(seed=7, n_items=80, n_annotators=5, labels=["x", "y", "z"], p_missing=0.35)
    # make it non-trivial: annotators 0 and 1 copy each other's truth more often
    rng = np.random.default_rng(0)
    ann.loc[ann["annotator"].isin(["ann0", "ann1"]), "label"] = np.where(
        rng.random((ann["annotator"].isin(["ann0", "ann1"])).sum()) < 0.7,
        ann.loc[ann["annotator"].isin(["ann0", "ann1"]), "item_id"].str[-1].map(lambda d: "xyz"[int(d) % 3]),
        ann.loc[ann["annotator"].isin(["ann0", "ann1"]), "label"],
    )
    pk = pairwise_cohen_kappa(ann, min_shared=5).set_index(["a", "b"])
    wide = ann.pivot(index="item_id", columns="annotator", values="label")
    expected = {}
    for a, b in combinations(sorted(wide.columns), 2):
        both = wide[[a, b]].dropna()
        if len(both) >= 5:
            expected[(a, b)] = (len(both), cohen_kappa_score(both[a], both[b]))
    assert set(pk.index) == set(expected)
    for key, (n, k) in expected.items():
        assert pk.loc[key, "n_shared"] == n
        assert pk.loc[key, "kappa"] == pytest.approx(k, abs=1e-12)
    assert pk.loc[("ann0", "ann1"), "kappa"] > 0.3  # the planted agreement is visible
    assert mean_cohen_kappa(ann) == pytest.approx(np.mean([k for _, k in expected.values()]))


def test_cohen_kappa_is_nan_when_both_use_one_label() -> None:
    ann = long([(f"i{i}", ann_, "a") for i in range(6) for ann_ in ("A", "B")])
    pk = pairwise_cohen_kappa(ann)
    assert len(pk) == 1 and math.isnan(pk.loc[0, "kappa"])
    with warnings.catch_warnings():  # sklearn agrees it is 0/0 (and warns)
        warnings.simplefilter("ignore")
        assert math.isnan(cohen_kappa_score(["a"] * 6, ["a"] * 6))
    assert math.isnan(mean_cohen_kappa(ann))


# --------------------------------------------------------------------------
# Fleiss' kappa
# --------------------------------------------------------------------------


def test_fleiss_kappa_varying_raters_hand(hand: pd.DataFrame) -> None:
    # P_i: i1 1, i2 0, i3 1, i4 1, i6 (4+1-3)/(3*2) = 1/3 -> P_bar = 2/3 (i5 dropped)
    # p_a = 5/11, p_b = 6/11 -> P_e = 61/121
    # kappa = (2/3 - 61/121) / (60/121) = 59/180
    assert fleiss_kappa(hand, AB) == pytest.approx(59 / 180)


@pytest.mark.parametrize("seed, n_raters, labels", [(0, 3, ["x", "y"]), (1, 5, ["x", "y", "z", "w"])])
def test_fleiss_kappa_equals_statsmodels_with_equal_raters(seed: int, n_raters: int, labels: list[str]) -> None:
    rng = np.random.default_rng(seed)
    n_items = 50
    # correlated raters so kappa is far from 0
    truth = rng.integers(len(labels), size=n_items)
    codes = np.where(
        rng.random((n_items, n_raters)) < 0.6, truth[:, None], rng.integers(len(labels), size=(n_items, n_raters))
    )
    ann = long([(f"i{i}", f"r{j}", labels[codes[i, j]]) for i in range(n_items) for j in range(n_raters)])
    table, _ = aggregate_raters(codes, n_cat=len(labels))
    expected = sm_fleiss_kappa(table, method="fleiss")
    assert expected > 0.2
    assert fleiss_kappa(ann, labels) == pytest.approx(expected, abs=1e-12)


def test_fleiss_kappa_textbook_table() -> None:
    # Fleiss (1971) / Wikipedia worked example: 10 subjects, 14 raters, 5 categories, kappa = 0.210
    table = np.array(
        [
            [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
        ]
    )  # fmt: skip
    cats = ["c1", "c2", "c3", "c4", "c5"]
    rows = []
    for i, counts in enumerate(table):
        r = 0
        for k, c in enumerate(counts):
            for _ in range(c):
                rows.append((f"s{i}", f"r{r}", cats[k]))
                r += 1
    ann = long(rows)
    assert fleiss_kappa(ann, cats) == pytest.approx(0.2099, abs=1e-4)
    assert fleiss_kappa(ann, cats) == pytest.approx(sm_fleiss_kappa(table), abs=1e-12)


# --------------------------------------------------------------------------
# Krippendorff's alpha
# --------------------------------------------------------------------------


def test_krippendorff_alpha_hand(hand: pd.DataFrame) -> None:
    # Coincidences (pairable items only, each pair weighted 1/(m_u - 1)):
    #   i1 o_aa+=2; i2 o_ab+=1,o_ba+=1; i3,i4 o_bb+=2 each;
    #   i6 (a,a,b): o_aa += 2/2, o_ab += 2/2, o_ba += 2/2
    #   -> o_aa=3, o_ab=o_ba=2, o_bb=4; n_a=5, n_b=6, n=11
    # D_o = 4/11, D_e = 2*5*6/(11*10) = 6/11  -> alpha = 1 - (4/11)/(6/11) = 1/3
    assert krippendorff_alpha(hand, AB) == pytest.approx(1 / 3)


def test_krippendorff_alpha_published_example() -> None:
    # Krippendorff (2011) "Computing Krippendorff's alpha-reliability", 4 observers x 12
    # units with missing values; nominal alpha = 0.743.
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    rows = [(f"u{u}", f"o{o}", str(v)) for o, obs in enumerate(data) for u, v in enumerate(obs) if v is not None]
    assert krippendorff_alpha(long(rows), ["1", "2", "3", "4", "5"]) == pytest.approx(0.743, abs=5e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_krippendorff_alpha_equals_package_on_reliability_data(seed: int) -> None:
    labels = ["x", "y", "z"]
    rng = np.random.default_rng(seed)
    ann = random_sparse(seed=seed, n_items=70, n_annotators=6, labels=labels, p_missing=0.5)
    # plant some agreement so alpha is not ~0
    agree = rng.random(len(ann)) < 0.5
    ann.loc[agree, "label"] = ann.loc[agree, "item_id"].map(lambda s: labels[int(s[-2:]) % 3])
    # the brief's reference form: annotators x items, nan for missing
    wide = ann.pivot(index="annotator", columns="item_id", values="label")
    codes = wide.apply(lambda col: col.map({lab: k for k, lab in enumerate(labels)})).to_numpy(dtype=float)
    expected = krippendorff.alpha(reliability_data=codes, level_of_measurement="nominal")
    assert krippendorff_alpha(ann, labels) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------
# edge cases for all agreement statistics
# --------------------------------------------------------------------------


def test_perfect_agreement_gives_one() -> None:
    ann = perfect()
    labels = ["a", "b", "c"]
    assert percent_agreement(ann) == 1.0
    assert fleiss_kappa(ann, labels) == pytest.approx(1.0)
    assert krippendorff_alpha(ann, labels) == pytest.approx(1.0)
    assert mean_cohen_kappa(ann) == pytest.approx(1.0)
    pk = pairwise_cohen_kappa(ann)
    assert len(pk) == 3 and np.allclose(pk["kappa"], 1.0)


def test_perfect_agreement_with_missing_annotations_gives_one() -> None:
    ann = perfect(n_items=40, n_annotators=4)
    ann = ann.drop(index=ann.sample(frac=0.3, random_state=0).index)
    labels = ["a", "b", "c"]
    assert fleiss_kappa(ann, labels) == pytest.approx(1.0)
    assert krippendorff_alpha(ann, labels) == pytest.approx(1.0)
    assert mean_cohen_kappa(ann) == pytest.approx(1.0)


def test_chance_level_agreement_is_near_zero() -> None:
    labels = ["x", "y", "z"]
    ann = random_sparse(seed=42, n_items=2000, n_annotators=4, labels=labels, p_missing=0.25)
    assert percent_agreement(ann) == pytest.approx(1 / 3, abs=0.02)
    for value in (fleiss_kappa(ann, labels), krippendorff_alpha(ann, labels), mean_cohen_kappa(ann)):
        assert abs(value) < 0.03


def test_systematic_disagreement_is_negative() -> None:
    # two annotators who always pick opposite labels on 10 items (5 a/b, 5 b/a):
    # Cohen: p_o = 0, p_e = 0.5 -> -1.  Fleiss: P_bar = 0, P_e = 0.5 -> -1.
    # Alpha: o_ab = o_ba = 10, n = 20, D_o = 1, D_e = 2*10*10/(20*19) = 10/19 -> 1 - 19/10 = -0.9
    # (alpha's small-sample correction keeps it above -1).
    ann = long([(f"i{i}", ann_, lab) for i in range(10) for ann_, lab in (("A", "ab"[i % 2]), ("B", "ba"[i % 2]))])
    assert percent_agreement(ann) == 0.0
    assert mean_cohen_kappa(ann) == pytest.approx(-1.0)
    assert fleiss_kappa(ann, AB) == pytest.approx(-1.0)
    assert krippendorff_alpha(ann, AB) == pytest.approx(-0.9)


def test_single_annotator_gives_nan_not_error() -> None:
    ann = long([(f"i{i}", "solo", "ab"[i % 2]) for i in range(20)])
    assert math.isnan(percent_agreement(ann))
    assert math.isnan(mean_cohen_kappa(ann))
    assert pairwise_cohen_kappa(ann).empty
    assert math.isnan(fleiss_kappa(ann, AB))
    assert math.isnan(krippendorff_alpha(ann, AB))
    report = agreement_report(ann, AB)
    assert report["n_items"] == 20.0 and report["n_annotations"] == 20.0
    assert all(math.isnan(report[k]) for k in REPORT_KEYS - {"n_items", "n_annotations"})


def test_everyone_using_one_label_gives_nan_alpha_and_kappa() -> None:
    # Agreement is perfect, but chance agreement is also 1: alpha and kappa are 0/0.
    ann = long([(f"i{i}", a, "a") for i in range(10) for a in ("A", "B", "C")])
    assert percent_agreement(ann) == 1.0
    assert math.isnan(krippendorff_alpha(ann, AB))
    assert math.isnan(fleiss_kappa(ann, AB))
    assert math.isnan(mean_cohen_kappa(ann))
    with pytest.raises(ValueError):  # what the package does on its own
        krippendorff.alpha(reliability_data=np.zeros((3, 10)), level_of_measurement="nominal")


def test_empty_annotations_give_nan_report() -> None:
    report = agreement_report(long([]), AB)
    assert report["n_items"] == 0.0 and report["n_annotations"] == 0.0
    assert all(math.isnan(report[k]) for k in REPORT_KEYS - {"n_items", "n_annotations"})


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------


def test_agreement_report_hand(hand: pd.DataFrame) -> None:
    report = agreement_report(hand, AB)
    assert set(report) == REPORT_KEYS
    assert all(type(v) is float for v in report.values())
    assert report == pytest.approx(
        {
            "n_items": 6.0,
            "n_annotations": 12.0,
            "percent_agreement": 2 / 3,
            "mean_cohen_kappa": 8 / 13,
            "fleiss_kappa": 59 / 180,
            "krippendorff_alpha": 1 / 3,
        }
    )


# --------------------------------------------------------------------------
# annotator accuracy
# --------------------------------------------------------------------------


def test_annotator_accuracy_against_gold(hand: pd.DataFrame) -> None:
    ann = pd.concat([hand, long([("i3", "D", "b")])], ignore_index=True)
    gold = pd.Series({"i1": "a", "i2": "b", "i6": "b", "i99": "a", "i4": None})
    acc = annotator_accuracy(ann, gold)
    assert list(acc.index) == ["A", "B", "C", "D"]
    # A: i1 right, i2 wrong, i6 wrong; B: i1, i2 right, i6 wrong; C: i6 right; D saw no gold
    assert acc["n"].tolist() == [3, 3, 1, 0]
    assert acc["n_correct"].tolist() == [1, 2, 1, 0]
    assert acc["accuracy"].iloc[:3].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert math.isnan(acc.loc["D", "accuracy"])


def test_annotator_accuracy_against_consensus_frame(hand: pd.DataFrame) -> None:
    mv = majority_vote(hand, AB)
    acc = annotator_accuracy(hand, mv)
    # consensus a,a,b,b,a,a: A agrees on all 6; B wrong on i2; C wrong on i6
    assert acc["accuracy"].tolist() == pytest.approx([1.0, 4 / 5, 0.0])
    assert acc.equals(annotator_accuracy(hand, mv["label"]))


# --------------------------------------------------------------------------
# Dawid-Skene
# --------------------------------------------------------------------------

DS_LABELS = ["a", "b", "c"]


def _true_confusions() -> dict[str, np.ndarray]:
    def symmetric(p: float) -> np.ndarray:
        return np.full((3, 3), (1 - p) / 2) + np.eye(3) * (p - (1 - p) / 2)

    return {
        "good": symmetric(0.9),
        "fair": symmetric(0.8),
        # asymmetric: confuses a->b and c->b, never a<->c
        "biased": np.array([[0.7, 0.3, 0.0], [0.1, 0.8, 0.1], [0.0, 0.3, 0.7]]),
        "random": np.full((3, 3), 1 / 3),
        # adversarial: systematically answers the "next" label
        "adversarial": np.array([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]]),
    }


def _simulate(seed: int, n_items: int, p_observed: float = 0.9) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    truth = rng.choice(3, size=n_items, p=[0.4, 0.35, 0.25])
    ids = np.array([f"it{i:05d}" for i in range(n_items)])
    frames = []
    for name, conf in _true_confusions().items():
        cum = conf[truth].cumsum(axis=1)
        given = np.minimum((rng.random(n_items)[:, None] > cum).sum(axis=1), 2)  # guard cum[-1] < 1 by rounding
        seen = rng.random(n_items) < p_observed  # missing annotations
        frames.append(
            pd.DataFrame({"item_id": ids[seen], "annotator": name, "label": np.array(DS_LABELS)[given[seen]]})
        )
    return pd.concat(frames, ignore_index=True), pd.Series(np.array(DS_LABELS)[truth], index=ids)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dawid_skene_recovers_known_confusions(seed: int) -> None:
    # 2,000 items: with 400 the *sampling* noise of a 1/3 cell of the random
    # annotator alone (~0.045 sd on ~100 items per row, 45 cells) exceeds 0.1
    # in about half of all seeds, whatever the estimator.
    ann, truth = _simulate(seed, n_items=2000)
    res = dawid_skene(ann, DS_LABELS)
    assert isinstance(res, DawidSkeneResult)
    assert res.converged and res.n_iter < 100
    true_conf = _true_confusions()
    assert set(res.confusion) == set(true_conf)
    gold_of_ann = truth.reindex(ann["item_id"]).to_numpy()
    for name, conf in true_conf.items():
        est = res.confusion[name]
        assert est.shape == (3, 3)
        assert np.allclose(est.sum(axis=1), 1.0)
        assert np.abs(est - conf).max() < 0.1, name
        # and close to what the annotator actually did on this sample
        mine = (ann["annotator"] == name).to_numpy()
        empirical = pd.crosstab(
            pd.Categorical(gold_of_ann[mine], DS_LABELS),
            pd.Categorical(ann.loc[mine, "label"], DS_LABELS),
            normalize="index",
            dropna=False,
        ).to_numpy()
        assert np.abs(est - empirical).max() < 0.05, name
    assert res.priors.to_numpy() == pytest.approx([0.4, 0.35, 0.25], abs=0.04)

    mv = majority_vote(ann, DS_LABELS)
    acc_ds = (res.consensus["label"] == truth.reindex(res.consensus.index)).mean()
    acc_mv = (mv["label"] == truth.reindex(mv.index)).mean()
    assert acc_ds >= acc_mv + 0.05  # it learns to discount "random" and invert "adversarial"
    assert acc_ds > 0.9


def test_dawid_skene_output_shapes_and_probabilities() -> None:
    ann, _ = _simulate(5, n_items=300)
    res = dawid_skene(ann, DS_LABELS)
    assert list(res.posteriors.columns) == DS_LABELS
    assert res.posteriors.index.equals(res.consensus.index)
    assert np.allclose(res.posteriors.sum(axis=1), 1.0)
    assert (res.posteriors.to_numpy() >= 0).all()
    # confidence is the posterior of the returned label (the posterior's maximum, except where the
    # unanimous-item guard kept the one answered label)
    post_of_label = [res.posteriors.loc[i, lab] for i, lab in res.consensus["label"].items()]
    assert res.consensus["confidence"].to_numpy() == pytest.approx(np.array(post_of_label))
    kept = res.consensus["confidence"].to_numpy() < res.posteriors.max(axis=1).to_numpy() - 1e-9
    assert kept.sum() == res.n_unanimous_kept
    assert list(res.consensus.columns) == ["label", "confidence", "n_annotations", "tie"]
    assert res.consensus["n_annotations"].sum() == len(ann)
    assert res.priors.sum() == pytest.approx(1.0)
    assert list(res.priors.index) == DS_LABELS
    assert np.isfinite(res.log_likelihood)


def test_dawid_skene_with_perfect_agreement_matches_majority() -> None:
    ann = perfect(n_items=30, n_annotators=3)
    res = dawid_skene(ann, ["a", "b", "c"])
    mv = majority_vote(ann, ["a", "b", "c"])
    assert res.consensus["label"].tolist() == mv["label"].tolist()
    assert (res.consensus["confidence"] > 0.99).all()
    assert not res.consensus["tie"].any()


def test_dawid_skene_uses_class_prior_on_split_votes() -> None:
    # 100 items, 80 % "a"; A, B, C each wrong on a different 10 % of them.
    # Then 20 items seen only by A and B, who disagree.  With equal reliability
    # (~0.9) the posterior is prior-driven: a: 0.8*0.9*0.1 vs b: 0.2*0.1*0.9 -> "a",
    # whereas majority vote has a 1-1 tie and (labels order b, a) says "b".
    rows = []
    for i in range(100):
        truth = "a" if i < 80 else "b"
        for j, name in enumerate("ABC"):
            wrong = i % 10 == j
            rows.append((f"i{i:03d}", name, ({"a", "b"} - {truth}).pop() if wrong else truth))
    for t in range(20):
        a_says, b_says = ("a", "b") if t < 10 else ("b", "a")
        rows += [(f"t{t:02d}", "A", a_says), (f"t{t:02d}", "B", b_says)]
    ann = long(rows)
    labels = ["b", "a"]
    res = dawid_skene(ann, labels)
    split = [f"t{t:02d}" for t in range(20)]
    assert (res.consensus.loc[split, "label"] == "a").all()
    assert not res.consensus.loc[split, "tie"].any()
    assert res.priors["a"] == pytest.approx(0.8, abs=0.05)
    mv = majority_vote(ann, labels)
    assert (mv.loc[split, "label"] == "b").all() and mv.loc[split, "tie"].all()


def test_dawid_skene_is_deterministic_and_order_independent() -> None:
    ann, _ = _simulate(9, n_items=200)
    a = dawid_skene(ann, DS_LABELS)
    b = dawid_skene(ann.sample(frac=1.0, random_state=1), DS_LABELS)
    pd.testing.assert_frame_equal(a.posteriors, b.posteriors, atol=1e-12)
    assert a.n_iter == b.n_iter


def test_dawid_skene_single_annotator_does_not_crash() -> None:
    ann = long([(f"i{i}", "solo", "ab"[i % 3 == 0]) for i in range(12)])
    res = dawid_skene(ann, AB)
    # with nobody to compare against, DS can only echo the annotator
    assert res.consensus["label"].to_dict() == ann.set_index("item_id")["label"].to_dict()
    assert set(res.confusion) == {"solo"}


def test_dawid_skene_stops_at_max_iter() -> None:
    ann, _ = _simulate(3, n_items=200)
    res = dawid_skene(ann, DS_LABELS, max_iter=2, tol=0.0)
    assert res.n_iter == 2 and not res.converged


def test_dawid_skene_rejects_unknown_init() -> None:
    with pytest.raises(ValueError, match="init"):
        dawid_skene(long([("i1", "A", "a")]), AB, init="random")  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# consensus dispatch
# --------------------------------------------------------------------------


def test_consensus_majority_is_majority_vote(hand: pd.DataFrame) -> None:
    out = consensus(hand, AB, method="majority")
    assert (out["method"] == "majority").all()
    pd.testing.assert_frame_equal(out.drop(columns="method"), majority_vote(hand, AB))
    assert out.attrs["fallback_reason"] is None


def test_consensus_uses_dawid_skene_with_enough_overlap() -> None:
    ann, _ = _simulate(4, n_items=200)
    out = consensus(ann, DS_LABELS, method="dawid_skene")
    assert (out["method"] == "dawid_skene").all()
    assert out.attrs["method"] == "dawid_skene" and out.attrs["fallback_reason"] is None
    ds = dawid_skene(ann, DS_LABELS).consensus
    assert out["label"].tolist() == ds["label"].tolist()


def test_consensus_falls_back_without_overlap() -> None:
    # every item labelled once, by different annotators: no overlap to learn from
    ann = long([(f"i{i}", f"ann{i % 4}", "ab"[i % 2]) for i in range(40)])
    out = consensus(ann, AB, method="dawid_skene")
    assert (out["method"] == "majority").all()
    assert out.attrs["method"] == "majority"
    assert "annotations" in out.attrs["fallback_reason"]
    assert out["label"].to_dict() == ann.set_index("item_id")["label"].to_dict()


def test_consensus_falls_back_with_single_annotator() -> None:
    ann = long([(f"i{i}", "solo", "a") for i in range(20)])
    out = consensus(ann, AB, method="dawid_skene")
    assert (out["method"] == "majority").all()
    assert "annotator" in out.attrs["fallback_reason"]


def test_consensus_rejects_unknown_method(hand: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="method"):
        consensus(hand, AB, method="mace")  # type: ignore[arg-type]
