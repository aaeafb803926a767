"""Consensus on sparse and degenerate crowds: Dawid–Skene with priors, one-coin, auto choice.

Why a file of its own: ``test_agreement.py`` checks the statistics and the EM
against known confusions on dense data; these tests pin down what broke on
real MTurk-shaped crowds (issue 12) -- a one-answer worker's minority vote,
unanimous items, convergence -- and every degenerate input the round can
hand over (empty batch, single answers, labels nobody used, ties).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labelloop.tasks.agreement import (
    CONSENSUS_METHODS,
    choose_method,
    consensus,
    crowd_shape,
    dawid_skene,
    majority_vote,
    one_coin,
)

AB = ["a", "b"]
ABC = ["a", "b", "c"]
COLUMNS = ["label", "confidence", "n_annotations", "tie"]
ATTRS = {"method", "reason", "fallback_reason", "converged", "iterations", "shape"}


def long(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item_id", "annotator", "label"])


def core_crowd(seed: int, n_items: int = 200, n_workers: int = 5, acc: float = 0.85,
               p_rare: float = 0.15) -> tuple[pd.DataFrame, pd.Series]:
    """Dense crowd: ``n_workers`` workers answer every item, class "b" is rare."""
    rng = np.random.default_rng(seed)
    truth = np.where(rng.random(n_items) < p_rare, 1, 0)
    ids = np.array([f"c{i:04d}" for i in range(n_items)])
    rows = []
    for w in range(n_workers):
        right = rng.random(n_items) < acc
        given = np.where(right, truth, 1 - truth)
        rows.append(pd.DataFrame({"item_id": ids, "annotator": f"core{w}", "label": np.array(AB)[given]}))
    return pd.concat(rows, ignore_index=True), pd.Series(np.array(AB)[truth], index=ids)


def sparse_crowd(seed: int, n_items: int = 600, per_item: int = 3, p_rare: float = 0.2) -> tuple[pd.DataFrame, pd.Series]:
    """MTurk-shaped crowd: a few prolific workers and a long tail with 1-3 answers each.

    Worker accuracies vary (0.55-0.95); every item gets ``per_item`` distinct workers.
    """
    rng = np.random.default_rng(seed)
    truth = np.where(rng.random(n_items) < p_rare, 1, 0)
    n_workers = 250
    activity = rng.pareto(1.2, n_workers) + 0.05  # heavy tail: most workers answer a handful of items
    acc = rng.uniform(0.55, 0.95, n_workers)
    rows = []
    p = activity / activity.sum()
    for i in range(n_items):
        ws = rng.choice(n_workers, size=per_item, replace=False, p=p)
        for w in ws:
            lab = truth[i] if rng.random() < acc[w] else 1 - truth[i]
            rows.append((f"s{i:04d}", f"w{w:03d}", AB[lab]))
    ids = [f"s{i:04d}" for i in range(n_items)]
    return long(rows), pd.Series(np.array(AB)[truth], index=ids)


def accuracy(frame: pd.DataFrame, truth: pd.Series) -> float:
    return float((frame["label"] == truth.reindex(frame.index)).mean())


# ------------------------------------------------------------------ degenerate inputs, every method


@pytest.mark.parametrize("method", CONSENSUS_METHODS)
def test_empty_frame_gives_empty_consensus(method: str) -> None:
    out = consensus(long([]), AB, method=method)  # type: ignore[arg-type]
    assert len(out) == 0
    assert list(out.columns) == COLUMNS + ["method"]
    assert ATTRS <= set(out.attrs)
    assert out.attrs["method"] == "majority"  # nothing to learn from
    assert out.attrs["reason"]


@pytest.mark.parametrize("fit", [dawid_skene, one_coin])
def test_em_on_empty_frame(fit) -> None:
    res = fit(long([]), AB)
    assert len(res.consensus) == 0 and res.converged and res.n_iter == 0


@pytest.mark.parametrize("method", CONSENSUS_METHODS)
def test_single_answer(method: str) -> None:
    out = consensus(long([("i1", "A", "b")]), AB, method=method)  # type: ignore[arg-type]
    assert out.loc["i1", "label"] == "b"
    assert out.loc["i1", "n_annotations"] == 1
    assert not out.loc["i1", "tie"]


@pytest.mark.parametrize("fit", [dawid_skene, one_coin])
def test_em_on_single_answer_echoes_it(fit) -> None:
    res = fit(long([("i1", "A", "b")]), AB)
    assert res.consensus.loc["i1", "label"] == "b"
    assert res.consensus.loc["i1", "confidence"] > 0.5


@pytest.mark.parametrize("method", ["auto", "dawid_skene", "one_coin"])
def test_items_answered_once_keep_their_answer(method: str) -> None:
    ann, _ = core_crowd(0, n_items=60)
    singles = long([(f"one{i}", f"core{i % 5}", AB[i % 2]) for i in range(20)])
    out = consensus(pd.concat([ann, singles], ignore_index=True), AB, method=method)  # type: ignore[arg-type]
    assert out.attrs["method"] != "majority"
    got = out.loc[singles["item_id"]]
    assert (got["label"].to_numpy() == singles["label"].to_numpy()).all()
    assert (got["n_annotations"] == 1).all()
    assert np.isfinite(got["confidence"]).all()


def test_workers_with_one_answer_each() -> None:
    # 40 items x 3 answers, 120 distinct workers: no worker can be told apart from another
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 40)
    rows = [(f"i{i:02d}", f"w{i}_{j}", AB[truth[i] if j < 2 or i % 4 else 1 - truth[i]])
            for i in range(40) for j in range(3)]
    ann = long(rows)
    out = consensus(ann, AB)
    assert out.attrs["method"] == "majority"
    assert out.attrs["reason"] == ("median 1 answers per worker < 4: too few to learn how reliable each one is, "
                                   "majority vote")
    mv = majority_vote(ann, AB)
    # every worker looks alike, so the EM models, forced, can only agree with the majority
    assert out["label"].tolist() == mv["label"].tolist()
    assert ((out["confidence"] > 0.5) & (out["confidence"] <= 1.0)).all()
    for fit in (dawid_skene, one_coin):
        assert fit(ann, AB).consensus["label"].tolist() == mv["label"].tolist()


@pytest.mark.parametrize("method", CONSENSUS_METHODS)
def test_label_never_used(method: str) -> None:
    ann, _ = core_crowd(1, n_items=80)
    out = consensus(ann, ABC, method=method)  # type: ignore[arg-type]
    assert set(out["label"]) <= {"a", "b"}
    assert np.isfinite(out["confidence"]).all()
    res = dawid_skene(ann, ABC)
    assert list(res.posteriors.columns) == ABC
    assert (res.posteriors["c"] == 0).all() and res.priors["c"] == 0
    assert np.allclose(res.posteriors.sum(axis=1), 1.0)
    assert all(np.allclose(c.sum(axis=1), 1.0) for c in res.confusion.values())


@pytest.mark.parametrize("fit", [dawid_skene, one_coin])
def test_symmetric_disagreement_is_a_flagged_tie(fit) -> None:
    # A and B agree on 10 "a" and 10 "b" items and disagree once each way: the data are
    # symmetric under swapping the labels, so the two disputed items are exact ties.
    rows = [(f"x{i}", w, "a" if i < 10 else "b") for i in range(20) for w in "AB"]
    rows += [("t1", "A", "a"), ("t1", "B", "b"), ("t2", "A", "b"), ("t2", "B", "a")]
    res = fit(long(rows), AB)
    assert res.consensus.loc[["t1", "t2"], "tie"].all()
    assert (res.consensus.loc[["t1", "t2"], "label"] == "a").all()  # first label in the campaign's order
    assert res.consensus.loc["t1", "confidence"] == pytest.approx(0.5)
    assert not res.consensus.drop(index=["t1", "t2"])["tie"].any()


def test_majority_tie_is_flagged_in_consensus() -> None:
    out = consensus(long([("i1", "A", "a"), ("i1", "B", "b")]), AB, method="majority")
    assert out.loc["i1", "tie"] and out.loc["i1", "label"] == "a"


# ------------------------------------------------------------------ the sparse-crowd failure


@pytest.mark.parametrize("fit", [dawid_skene, one_coin])
def test_one_answer_workers_minority_vote_does_not_flip_an_item(fit) -> None:
    ann, truth = core_crowd(2)
    common = truth.index[truth == "a"][:6]
    extra = []
    # near-unanimous: two core workers' answers say "a", a newcomer with one answer says rare "b"
    near = ann[ann["item_id"].isin(common) & ann["annotator"].isin(["core0", "core1"])].assign(label="a")
    for n, item in enumerate(common):
        extra.append((item, f"newcomer{n}", "b"))
    data = pd.concat([ann[~ann["item_id"].isin(common)], near, long(extra)], ignore_index=True)
    res = fit(data, AB)
    got = res.consensus.loc[common]
    assert (got["label"] == "a").all()
    assert (res.posteriors.loc[common, "b"] < 0.5).all()
    # and the newcomers stay near the crowd instead of becoming oracles for "b"
    for n in range(len(common)):
        conf = res.confusion[f"newcomer{n}"]
        assert conf[0, 1] < 0.5, conf  # P(says b | truly a) stays a minority


@pytest.mark.parametrize("fit", [dawid_skene, one_coin])
def test_unanimous_item_never_gets_another_class(fit) -> None:
    # an inverter who is wrong on every shared item: EM learns to flip their votes,
    # but an item that only they answered keeps the label they gave.
    ann, truth = core_crowd(4, n_items=150)
    inverted = ann[ann["annotator"] == "core0"].assign(annotator="inverter")
    inverted["label"] = np.where(inverted["label"] == "a", "b", "a")
    alone = long([("solo1", "inverter", "a"), ("solo2", "inverter", "b")])
    data = pd.concat([ann, inverted, alone], ignore_index=True)
    res = fit(data, AB)
    assert res.consensus.loc["solo1", "label"] == "a"
    assert res.consensus.loc["solo2", "label"] == "b"
    counts = data.groupby("item_id")["label"].nunique()
    unanimous = counts.index[counts == 1]
    first = data.groupby("item_id")["label"].first()
    assert (res.consensus.loc[unanimous, "label"] == first.loc[unanimous]).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_em_beats_or_matches_majority_on_a_sparse_crowd(seed: int) -> None:
    ann, truth = sparse_crowd(seed)
    mv = accuracy(majority_vote(ann, AB), truth)
    for method in ("auto", "dawid_skene", "one_coin"):
        out = consensus(ann, AB, method=method)  # type: ignore[arg-type]
        assert out.attrs["converged"], method
        assert accuracy(out, truth) >= mv, (method, accuracy(out, truth), mv)


def test_old_failure_no_confident_rare_label_from_thin_evidence() -> None:
    # the sparse crowd of the issue: with plain ML-EM a single minority vote from a worker with
    # one answer became a ~0.97 posterior for the rare class.
    ann, truth = sparse_crowd(7)
    res = dawid_skene(ann, AB)
    per_item = ann.groupby("item_id")["label"].agg(lambda s: (s == "b").sum())
    one_b = per_item.index[per_item == 1]
    assert len(one_b) > 20
    assert (res.posteriors.loc[one_b, "b"] < 0.9).all()


# ------------------------------------------------------------------ the automatic choice and what it reports


def test_auto_uses_dawid_skene_when_workers_have_enough_answers() -> None:
    ann, truth = core_crowd(5)
    out = consensus(ann, AB)
    assert out.attrs["method"] == "dawid_skene"
    assert out.attrs["reason"].startswith("median 200 answers per worker >= 2 (one per class): Dawid-Skene")
    assert out.attrs["fallback_reason"] is None
    assert out.attrs["converged"] and 0 < out.attrs["iterations"] < 200
    assert (out["method"] == "dawid_skene").all()
    assert out.attrs["shape"]["median_answers_per_worker"] == 200


def test_auto_uses_dawid_skene_on_a_sparse_crowd_too() -> None:
    # the shrunk Dawid-Skene is one-coin for workers with few answers (see choose_method)
    ann, _ = sparse_crowd(0)
    med = crowd_shape(ann)["median_answers_per_worker"]
    assert 2 <= med < 20
    out = consensus(ann, AB)
    assert out.attrs["method"] == "dawid_skene"
    assert out.attrs["reason"].startswith(f"median {med:g} answers per worker >= 2 (one per class)")


def test_auto_uses_majority_without_overlap() -> None:
    ann = long([(f"i{i}", f"ann{i % 4}", AB[i % 2]) for i in range(40)])
    out = consensus(ann, AB)
    assert out.attrs["method"] == "majority" and out.attrs["iterations"] == 0
    assert "have >= 2 annotations" in out.attrs["reason"]
    assert out.attrs["fallback_reason"] is None  # nothing was requested that could not be done


def test_min_overlapping_items_keyword_is_honoured() -> None:
    ann, _ = core_crowd(6, n_items=30)
    assert consensus(ann, AB, min_overlapping_items=31).attrs["method"] == "majority"
    assert consensus(ann, AB, min_overlapping_items=30).attrs["method"] == "dawid_skene"


def test_more_labels_need_more_answers_for_dawid_skene() -> None:
    shape = {"n_annotators": 10, "n_overlap_items": 100, "median_answers_per_worker": 5}
    assert choose_method(shape, 2)[0] == "dawid_skene"
    method, reason = choose_method(shape, 6)
    assert method == "one_coin" and reason == "median 5 answers per worker < 6 (one per class): one-coin"
    assert choose_method(shape, 2, min_answers_per_class=5)[0] == "one_coin"
    # a crowd spread so thin that each worker gave two answers: majority vote, and why
    thin = {**shape, "median_answers_per_worker": 2}
    method, reason = choose_method(thin, 2)
    assert method == "majority" and reason.startswith("median 2 answers per worker < 4")
    assert choose_method(thin, 2, min_answers_per_worker=2)[0] == "dawid_skene"


def test_explicit_methods_are_honoured() -> None:
    ann, _ = sparse_crowd(1)
    assert consensus(ann, AB, method="dawid_skene").attrs["method"] == "dawid_skene"
    assert consensus(ann, AB, method="majority").attrs["method"] == "majority"
    ann2, _ = core_crowd(1)
    assert consensus(ann2, AB, method="one_coin").attrs["method"] == "one_coin"


def test_convergence_is_reported() -> None:
    ann, _ = core_crowd(8)
    out = consensus(ann, AB, method="dawid_skene", max_iter=2, tol=0.0)
    assert out.attrs["converged"] is False and out.attrs["iterations"] == 2
    res = one_coin(ann, AB)
    assert res.converged and res.n_iter < 200


# ------------------------------------------------------------------ weights (tasks/trust.py down-weights flagged annotators)


@pytest.mark.parametrize("method", ["dawid_skene", "one_coin", "majority"])
def test_zero_weight_equals_leaving_the_annotator_out(method: str) -> None:
    ann, _ = core_crowd(9)
    spammer = ann[ann["annotator"] == "core0"].assign(annotator="spam", label="b")
    data = pd.concat([ann, spammer], ignore_index=True)
    weighted = consensus(data, AB, method=method, weights={"spam": 0.0})  # type: ignore[arg-type]
    without = consensus(ann, AB, method=method)  # type: ignore[arg-type]
    assert weighted["label"].tolist() == without["label"].tolist()
    assert weighted["confidence"].to_numpy() == pytest.approx(without["confidence"].to_numpy(), abs=1e-6)


@pytest.mark.parametrize("fit", [dawid_skene, one_coin])
def test_down_weight_tempers_an_annotator(fit) -> None:
    ann, _ = core_crowd(10)
    rows = [("d", "core0", "b"), ("d", "core1", "a")]
    data = pd.concat([ann, long(rows)], ignore_index=True)
    full = fit(data, AB).posteriors.loc["d", "b"]
    tempered = fit(data, AB, weights={"core0": 0.3}).posteriors.loc["d", "b"]
    assert tempered < full


def test_negative_weight_is_an_error() -> None:
    with pytest.raises(ValueError, match="weights"):
        dawid_skene(long([("i1", "A", "a")]), AB, weights={"A": -1.0})
