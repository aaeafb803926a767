"""Trust that fits real crowds (issue 12): no crash on thin data, a relative batch gate,
adaptive redundancy, and the waiting rule (tasks/readiness.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labelloop.tasks import agreement
from labelloop.tasks import trust as T
from labelloop.tasks.annotate import assign_annotators, simulated_answer
from labelloop.tasks.readiness import batch_readiness

LABELS = ["a", "b", "c"]
EMPTY = pd.DataFrame(columns=["item_id", "annotator", "label"])


def crowd(n_items: int, accuracy: dict[str, float], *, overlap: int = 3, seed: int = 0, prefix: str = "i",
          batch: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    truth = pd.Series({f"{prefix}{k:04d}": LABELS[int(rng.integers(len(LABELS)))] for k in range(n_items)})
    rows = [(item, a, simulated_answer(item, a, accuracy[a], true, LABELS, seed), batch)
            for item, true in truth.items() for a in assign_annotators(item, list(accuracy), overlap, seed)]
    return pd.DataFrame(rows, columns=["item_id", "annotator", "label", "batch"]), truth


# --------------------------------------------------------------------------- thin data never crashes


@pytest.mark.parametrize("method", list(T.CONSENSUS_METHODS))
def test_empty_and_single_answer_frames_decide_without_error(method: str) -> None:
    pol = T.TrustPolicy(consensus=method)
    r = T.decide(EMPTY, LABELS, pol)
    assert r.items.empty and r.trusted.empty and r.metrics["n_trusted"] == 0
    one = pd.DataFrame({"item_id": ["x"], "annotator": ["p"], "label": ["a"]})
    r1 = T.decide(one, LABELS, pol)
    assert r1.items.loc["x", "status"] == "pending" and r1.items.loc["x", "reason"] == "1 of 3 answers"


def test_items_answered_once_workers_with_one_answer_unanimous_and_unused_labels() -> None:
    # 30 items, each answered by 3 different one-off workers (an MTurk-like sparse crowd), all agreeing
    # on label "a" or "b"; label "c" is never used.
    rows = [(f"u{k}", f"w{3 * k + j}", "a" if k % 2 else "b") for k in range(30) for j in range(3)]
    rows += [("once", "w999", "a")]
    ann = pd.DataFrame(rows, columns=["item_id", "annotator", "label"])
    r = T.decide(ann, LABELS, T.TrustPolicy())
    unanimous = r.items.drop(index="once")
    assert (unanimous["status"] == "trusted").all(), unanimous["reason"].value_counts()
    assert (unanimous["label"] == ["a" if int(i[1:]) % 2 else "b" for i in unanimous.index]).all(), \
        "a unanimous item keeps its label"
    assert r.items.loc["once", "status"] == "pending"
    assert "c" not in set(r.trusted["label"])


def test_a_tie_asks_for_one_more_answer_then_adjudication() -> None:
    ann = pd.DataFrame({"item_id": ["t", "t"], "annotator": ["p", "q"], "label": ["a", "b"]})
    pol = T.TrustPolicy(consensus="majority", need=2, max_overlap=3)
    r = T.decide(ann, LABELS, pol)
    assert r.items.loc["t", "status"] == "needs_more" and "tie" in r.items.loc["t", "reason"]
    assert r.metrics["n_needs_more"] == 1 and r.adjudication_queue.empty
    # asked for a third answer: waiting for it is needs_more too, not pending
    asked = T.decide(ann, LABELS, pol, targets={"t": 3})
    assert asked.items.loc["t", "status"] == "needs_more" and "2 of 3 answers" in asked.items.loc["t", "reason"]
    # the third answer settles it
    third = pd.concat([ann, pd.DataFrame({"item_id": ["t"], "annotator": ["r"], "label": ["a"]})])
    settled = T.decide(third, LABELS, T.TrustPolicy(consensus="majority", need=2, max_overlap=3, min_confidence=0.6),
                       targets={"t": 3})
    assert settled.items.loc["t", ["status", "label"]].tolist() == ["trusted", "a"]
    # ... and with no annotator left (exhausted) or at max_overlap, an adjudicator decides
    stuck = T.decide(ann, LABELS, pol, exhausted=["t"])
    assert stuck.items.loc["t", "status"] == "adjudication"
    capped = T.decide(third, LABELS, T.TrustPolicy(consensus="majority", need=2, max_overlap=3, min_confidence=0.9),
                      targets={"t": 3})
    assert capped.items.loc["t", "status"] == "adjudication"


# --------------------------------------------------------------------------- the relative batch gate


def test_a_crowd_that_disagrees_evenly_is_not_quarantined_by_default() -> None:
    # Noisy but honest annotators: alpha far below 0.67 in every batch, consensus still mostly right.
    acc = {"p": 0.7, "q": 0.7, "r": 0.7}
    parts = [crowd(60, acc, seed=s, prefix=f"b{s}-", batch=s) for s in range(4)]
    ann = pd.concat([p[0] for p in parts])
    truth = pd.concat([p[1] for p in parts])
    alpha = agreement.krippendorff_alpha(ann, LABELS)
    assert alpha < 0.67
    absolute = T.decide(ann, LABELS, T.TrustPolicy(gate_mode="absolute", min_consensus_answers=10_000))
    assert (absolute.batches["status"] == "quarantined").all() and absolute.trusted.empty, "the old stall"
    r = T.decide(ann, LABELS, T.TrustPolicy(min_consensus_answers=10_000))
    assert (r.batches["status"] == "passed").all(), r.batches["reason"].tolist()
    assert len(r.trusted) > 0
    acc_trusted = (r.trusted["label"] == truth.reindex(r.trusted.index)).mean()
    majority = agreement.majority_vote(ann, LABELS)
    acc_majority = (majority["label"] == truth.reindex(majority.index)).mean()
    assert acc_trusted > max(acc_majority, 0.8), (acc_trusted, acc_majority)


def test_a_batch_far_below_the_campaign_is_quarantined_and_the_first_batch_is_not_judged() -> None:
    good = [crowd(60, {"p": 0.9, "q": 0.9, "r": 0.9}, seed=s, prefix=f"g{s}-", batch=s) for s in range(3)]
    bad = crowd(60, {"p": 0.34, "q": 0.34, "r": 0.34}, seed=9, prefix="bad-", batch=3)
    ann = pd.concat([g[0] for g in good] + [bad[0]])
    r = T.decide(ann, LABELS, T.TrustPolicy(min_consensus_answers=10_000))
    assert list(r.batches["status"]) == ["passed", "passed", "passed", "quarantined"]
    assert "below the campaign's" in r.batches.loc[3, "reason"]
    assert r.batches.loc[3, "reference_alpha"] > r.batches.loc[3, "krippendorff_alpha"] + 0.25
    assert (r.items.loc[r.items.index.str.startswith("bad-"), "status"] == "quarantined").all()
    first = T.decide(good[0][0], LABELS, T.TrustPolicy())
    assert first.batches.loc[0, "status"] == "passed" and "no other batch" in first.batches.loc[0, "reason"]


def test_an_annotator_far_below_the_others_is_flagged_although_above_the_floor() -> None:
    acc = {"p": 0.95, "q": 0.95, "r": 0.95, "s": 0.95, "slack": 0.62}
    ann, truth = crowd(300, acc, overlap=3, seed=5)
    gold = truth.iloc[:100]
    q = T.annotator_quality(ann, LABELS, gold, T.TrustPolicy(min_gold_answers=20, min_annotator_accuracy=0.5))
    assert q.loc["slack", "accuracy"] > 0.5, "above the absolute floor"
    assert bool(q.loc["slack", "flagged"]) and not q.drop(index="slack")["flagged"].any()
    lenient = T.annotator_quality(ann, LABELS, gold, T.TrustPolicy(min_gold_answers=20, min_annotator_accuracy=0.5,
                                                                   annotator_margin=1.0))
    assert not lenient["flagged"].any()


# --------------------------------------------------------------------------- waiting


def test_readiness_waits_for_the_batch_and_says_what_for() -> None:
    items = [f"s{k}" for k in range(10)]
    none = batch_readiness(0, items, {}, {}, need=3, ready_share=0.9)
    assert not none.ready
    assert none.waiting_for == ("waiting for annotations: 0 of 10 seed items answered 3 times (a round needs 9), "
                                "0 trusted")
    half = batch_readiness(0, items, {i: 3 for i in items[:5]}, {i: "trusted" for i in items[:4]}, need=3,
                           ready_share=0.9)
    assert not half.ready and half.n_answered == 5 and half.n_trusted == 4
    nine = batch_readiness(2, items, {i: 3 for i in items[:9]}, {}, need=3, ready_share=0.9)
    assert nine.ready and nine.waiting_for == ""
    # an item no annotator can answer does not hold the batch hostage
    never = batch_readiness(2, items, {i: 3 for i in items[:8]}, {}, need=3, ready_share=1.0, unanswerable=items[8:])
    assert never.ready and never.n_unanswerable == 2
    # an adjudicated (trusted) item counts as answered even with fewer answers
    adj = batch_readiness(1, ["x"], {"x": 1}, {"x": "trusted"}, need=3, ready_share=1.0)
    assert adj.ready
    assert batch_readiness(None, [], {}, {}, need=3, ready_share=1.0).ready
    with pytest.raises(ValueError):
        batch_readiness(0, items, {}, {}, need=3, ready_share=0.0)
