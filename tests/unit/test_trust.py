"""The trust policy (tasks/trust.py): gate, annotator alerts, exclusion, adjudication, gold, contracts."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labelloop.tasks import agreement
from labelloop.tasks import trust as T
from labelloop.tasks.annotate import assign_annotators, simulated_answer

LABELS = ["a", "b", "c", "d"]
BAD = Path(__file__).resolve().parents[1] / "data" / "bad_inputs"


def crowd(n_items: int, annotators: dict[str, float], *, overlap: int = 3, seed: int = 0,
          batch_size: int | None = None, prefix: str = "i") -> tuple[pd.DataFrame, pd.Series]:
    """Deterministic simulated answers (the same generator the simulated backend uses)."""
    rng = np.random.default_rng(seed)
    truth = pd.Series({f"{prefix}{k:04d}": LABELS[int(rng.integers(len(LABELS)))] for k in range(n_items)})
    rows = []
    for k, (item, true) in enumerate(truth.items()):
        for a in assign_annotators(item, list(annotators), overlap, seed):
            rows.append((item, a, simulated_answer(item, a, annotators[a], true, LABELS, seed),
                         k // batch_size if batch_size else 0))
    return pd.DataFrame(rows, columns=["item_id", "annotator", "label", "batch"]), truth


def frame(rows: list[tuple[str, str, str]], batch: int = 0) -> pd.DataFrame:
    return pd.DataFrame([(i, a, lbl, batch) for i, a, lbl in rows], columns=["item_id", "annotator", "label", "batch"])


GOOD = {"g1": 0.95, "g2": 0.92, "g3": 0.9}


# --------------------------------------------------------------------------- batch gate / quarantine


def test_quarantine_fires_below_the_gate_and_not_above() -> None:
    good, _ = crowd(60, GOOD, seed=1)
    noisy, _ = crowd(60, {"n1": 0.45, "n2": 0.45, "n3": 0.45}, seed=2, prefix="j")
    ann = pd.concat([good.assign(batch=0), noisy.assign(batch=1)])
    alpha_good = agreement.krippendorff_alpha(good, LABELS)
    alpha_noisy = agreement.krippendorff_alpha(noisy, LABELS)
    assert alpha_good > 0.67 > alpha_noisy

    pol = T.TrustPolicy(min_consensus_answers=10_000, gate_mode="absolute")  # nobody flagged: the gate decides
    r = T.decide(ann, LABELS, pol)
    assert r.batches.loc[0, "status"] == "passed" and r.batches.loc[1, "status"] == "quarantined"
    assert r.batches.loc[0, "krippendorff_alpha"] == pytest.approx(alpha_good)
    assert r.batches.loc[1, "krippendorff_alpha"] == pytest.approx(alpha_noisy)
    st = r.items["status"]
    assert (st[st.index.str.startswith("j")] == "quarantined").all()
    assert not st[st.index.str.startswith("i")].eq("quarantined").any()
    assert not r.trusted.index.str.startswith("j").any(), "quarantined labels never train"
    assert r.metrics["n_quarantined"] == 60 and r.metrics["n_quarantined_batches"] == 1
    assert "batch 1" in r.tags["labelloop.quarantine"] and any("batch 1 quarantined" in n for n in r.notes)

    # The same batch passes a gate below its alpha.
    lenient = T.decide(ann, LABELS, T.TrustPolicy(min_consensus_answers=10_000, gate_mode="absolute",
                                                  alpha_gate=alpha_noisy - 0.01))
    assert (lenient.batches["status"] == "passed").all() and lenient.tags["labelloop.quarantine"] == "none"


def test_gate_is_exactly_at_the_threshold_and_undefined_alpha_is_explicit() -> None:
    ann, _ = crowd(40, GOOD, seed=3)
    alpha = agreement.krippendorff_alpha(ann, LABELS)
    at = T.batch_gate(ann, pd.Series(0, index=ann["item_id"].unique()), LABELS, gate=alpha)
    assert at.loc[0, "status"] == "passed"  # alpha >= gate passes
    same = frame([(f"x{k}", a, "a") for k in range(5) for a in ("p", "q")])  # perfect agreement on one label
    gate = T.batch_gate(same, pd.Series(0, index=same["item_id"].unique()), LABELS, 0.67)
    assert math.isnan(gate.loc[0, "krippendorff_alpha"]) and gate.loc[0, "status"] == "undefined"
    strict = T.batch_gate(same, pd.Series(0, index=same["item_id"].unique()), LABELS, 0.67, quarantine_undefined=True)
    assert strict.loc[0, "status"] == "quarantined"


# --------------------------------------------------------------------------- annotator quality


def test_random_annotator_is_flagged_with_enough_gold_and_not_before() -> None:
    ann, truth = crowd(200, {**GOOD, "rand": 1 / len(LABELS)}, seed=4)
    gold = truth.iloc[:60]
    pol = T.TrustPolicy(min_gold_answers=20, min_consensus_answers=10_000)
    q = T.annotator_quality(ann, LABELS, gold, pol)
    assert q.loc["rand", "n_gold"] >= 20 and q.loc["rand", "basis"] == "gold"
    assert q.loc["rand", "gold_accuracy"] < 0.4 and bool(q.loc["rand", "flagged"])
    assert not q.drop(index="rand")["flagged"].any()
    # ground truth: gold accuracy is the plain share of correct gold answers
    on_gold = ann[ann["item_id"].isin(gold.index) & (ann["annotator"] == "rand")]
    assert q.loc["rand", "gold_accuracy"] == pytest.approx((on_gold["label"].to_numpy()
                                                            == gold[on_gold["item_id"]].to_numpy()).mean())

    few = T.annotator_quality(ann, LABELS, truth.iloc[:5], pol)
    assert few.loc["rand", "basis"] == "insufficient" and not few["flagged"].any(), "never condemned on 3 answers"

    r = T.decide(ann, LABELS, pol, gold=gold)
    assert "rand" in r.tags["labelloop.annotator_alerts"] and r.metrics["n_annotators_flagged"] == 1
    assert r.metrics["annotator_accuracy_rand"] == pytest.approx(q.loc["rand", "gold_accuracy"])
    assert any(n.startswith("annotator alert: rand: gold accuracy") for n in r.notes)


def test_leave_one_out_flags_without_gold() -> None:
    ann, _ = crowd(120, {**GOOD, "rand": 0.25}, seed=5)
    q = T.annotator_quality(ann, LABELS, None, T.TrustPolicy(min_consensus_answers=30))
    assert q.loc["rand", "basis"] == "consensus" and bool(q.loc["rand", "flagged"])
    assert not q.drop(index="rand")["flagged"].any()


def test_leave_one_out_reference_by_hand() -> None:
    ann = frame([("x", "p", "a"), ("x", "q", "a"), ("x", "r", "b"),  # r's others agree on a; p's others split
                 ("y", "p", "a"), ("y", "q", "b")])  # only one other each: no reference
    ref = T.leave_one_out_reference(ann, LABELS).set_index(["item_id", "annotator"])["ref"]
    assert ref[("x", "r")] == "a"
    assert pd.isna(ref[("x", "p")]) and pd.isna(ref[("x", "q")])
    assert pd.isna(ref[("y", "p")])


def test_exclusion_recomputes_consensus_without_the_flagged_annotator() -> None:
    # Items where two bad annotators outvote one good annotator; the bad ones are caught on gold.
    rows = []
    for k in range(30):
        rows += [(f"x{k}", "good", "a"), (f"x{k}", "good2", "a"), (f"x{k}", "bad1", "b"), (f"x{k}", "bad2", "b"),
                 (f"x{k}", "bad3", "b")]
    gold_rows = []
    for k in range(20):
        gold_rows += [(f"g{k}", "good", "c"), (f"g{k}", "good2", "c"), (f"g{k}", "bad1", "d"), (f"g{k}", "bad2", "d"),
                      (f"g{k}", "bad3", "d")]
    ann = frame(rows + gold_rows)
    gold = pd.Series({f"g{k}": "c" for k in range(20)})
    pol = T.TrustPolicy(consensus="majority", need=5, min_gold_answers=10)
    assert (agreement.majority_vote(ann, LABELS).loc[[f"x{k}" for k in range(30)], "label"] == "b").all()
    r = T.decide(ann, LABELS, pol, gold=gold)
    assert set(r.annotators.index[r.annotators["flagged"]]) == {"bad1", "bad2", "bad3"}
    assert (r.annotators.loc[["bad1", "bad2", "bad3"], "action"] == "excluded").all()
    t = r.trusted
    assert len(t) == 30 and (t["label"] == "a").all(), "consensus recomputed on the good annotators only"
    assert (r.items.loc[t.index, "n_trusted_annotations"] == 2).all()
    assert (r.items.loc[gold.index, "status"] == "gold").all(), "gold items score annotators, never train"

    # Down-weighting instead: three bad votes at 0.25 (0.75) lose against two good ones (2.0).
    dw = T.decide(ann, LABELS, T.TrustPolicy(consensus="majority", need=5, min_gold_answers=10,
                                               annotator_policy="downweight", downweight=0.25), gold=gold)
    assert (dw.trusted["label"] == "a").all()
    assert dw.trusted["confidence"].iloc[0] == pytest.approx(2.0 / 2.75)
    assert (dw.annotators.loc[["bad1"], "action"] == "weight 0.25").all()


def test_items_without_enough_trusted_answers_go_to_adjudication() -> None:
    ann, truth = crowd(80, {**GOOD, "rand": 0.25}, seed=6)
    pol = T.TrustPolicy(min_gold_answers=10, min_consensus_answers=10_000, consensus="majority")
    r = T.decide(ann, LABELS, pol, gold=truth.iloc[:40])
    # With exclusion, every item keeps >= 2 answers (3 of 4 annotators per item), so none is starved...
    assert not r.items["reason"].str.startswith("only").any()
    # ...but two flagged annotators leave some items with one trusted answer.
    ann2, truth2 = crowd(80, {"g1": 0.95, "g2": 0.95, "r1": 0.25, "r2": 0.25}, seed=7)
    r2 = T.decide(ann2, LABELS, pol, gold=truth2.iloc[:40])
    starved = r2.items[r2.items["reason"].str.startswith("only 1 trusted")]
    assert len(starved) and (starved["status"] == "adjudication").all()


# --------------------------------------------------------------------------- consensus and adjudication


def test_ties_low_confidence_and_pending_items() -> None:
    ann = frame([("tie", "p", "a"), ("tie", "q", "b"),
                 ("low", "p", "a"), ("low", "q", "a"), ("low", "r", "b"),
                 ("ok", "p", "c"), ("ok", "q", "c"), ("ok", "r", "c"),
                 ("wait", "p", "a")])
    pol = T.TrustPolicy(consensus="majority", need=2, min_confidence=0.7, min_consensus_answers=10_000, alpha_gate=-1)
    r = T.decide(ann, LABELS, pol)
    st = r.items["status"]
    assert st["tie"] == "adjudication" and "tie" in r.items.loc["tie", "reason"]
    assert st["low"] == "adjudication" and "confidence 0.67" in r.items.loc["low", "reason"]
    assert st["ok"] == "trusted" and st["wait"] == "pending"
    assert list(r.adjudication_queue.index) == ["low", "tie"]
    assert r.metrics["n_adjudication_queue"] == 2 and r.metrics["n_pending"] == 1


def test_adjudicated_label_wins() -> None:
    ann = frame([("x", "p", "a"), ("x", "q", "b"), ("y", "p", "c"), ("y", "q", "c")])
    pol = T.TrustPolicy(consensus="majority", need=2, min_consensus_answers=10_000, alpha_gate=-1)
    r = T.decide(ann, LABELS, pol)
    assert r.items.loc["x", "status"] == "adjudication"
    done = T.apply_adjudications(r, {"x": "d"}, LABELS, ann, pol)
    assert done.items.loc["x", ["status", "label", "source"]].tolist() == ["trusted", "d", "adjudicated"]
    assert done.metrics["n_adjudication_queue"] == 0 and done.metrics["n_trusted"] == 2
    # From then on the adjudicated label wins even over a confident consensus.
    again = T.decide(ann, LABELS, pol, adjudicated={"y": "a"})
    assert again.trusted.loc["y", "label"] == "a" and again.trusted.loc["y", "source"] == "adjudicated"
    with pytest.raises(ValueError, match="not in the label set"):
        T.apply_adjudications(r, {"x": "zzz"}, LABELS, ann, pol)
    # A review answered after the consensus became confident (y is trusted as "c" now) wins in the
    # round that reads it, as decide ranks it next round: not a round later.
    late = T.apply_adjudications(r, {"y": "a"}, LABELS, ann, pol)
    assert late.items.loc["y", ["status", "label", "source"]].tolist() == ["trusted", "a", "adjudicated"]


def test_consensus_label_nobody_gave_is_not_trusted() -> None:
    # Dawid-Skene on thin data can land on a label no annotator chose; such an item is adjudicated.
    ann, _ = crowd(25, {"g1": 0.95, "g2": 0.9, "g3": 0.85, "r": 0.25}, seed=0)
    pol = T.TrustPolicy(ds_min_items=10, min_consensus_answers=10_000, min_confidence=0.0)
    r = T.decide(ann, LABELS, pol)
    given = set(zip(ann["item_id"], ann["label"]))
    for item, row in r.trusted.iterrows():
        assert (item, row["label"]) in given
    # an explicit Dawid-Skene waits for enough overlapping items (5 x K^2 = 80 for 4 labels) ...
    ds = T.decide(ann, LABELS, T.TrustPolicy(consensus="dawid_skene", min_consensus_answers=10_000))
    assert ds.method == "majority" and "need 80" in ds.fallback_reason
    # ... while the default picks the model the crowd's shape supports (Dawid-Skene, whose confusions
    # start from each annotator's one-coin matrix, so few answers do not overfit) and says why
    auto = T.decide(ann, LABELS, T.TrustPolicy(min_consensus_answers=10_000))
    assert auto.method == "dawid_skene" and auto.metrics["consensus_dawid_skene"] == 1.0
    assert auto.method_reason and auto.tags["labelloop.consensus_reason"] == auto.method_reason


def test_dawid_skene_is_chosen_by_default_with_enough_data() -> None:
    ann, truth = crowd(150, {"g1": 0.9, "g2": 0.8, "g3": 0.7, "g4": 0.6}, seed=8)
    r = T.decide(ann, LABELS, T.TrustPolicy(min_consensus_answers=10_000, min_confidence=0.0, alpha_gate=-1))
    assert r.method == "dawid_skene" and r.metrics["consensus_dawid_skene"] == 1.0
    assert (r.trusted["label"] == truth[r.trusted.index]).mean() > 0.85


def test_weighted_dawid_skene_with_unit_weights_is_dawid_skene() -> None:
    ann, _ = crowd(120, {"g1": 0.9, "g2": 0.7, "g3": 0.6, "g4": 0.5}, seed=9)
    ref = agreement.dawid_skene(ann, LABELS).consensus
    got = T.weighted_dawid_skene(ann, LABELS, {})
    pd.testing.assert_series_equal(got["label"], ref["label"])
    np.testing.assert_allclose(got["confidence"], ref["confidence"], atol=1e-9)
    down = T.weighted_dawid_skene(ann, LABELS, {"g4": 0.0001})
    no_g4 = agreement.dawid_skene(ann[ann["annotator"] != "g4"], LABELS).consensus
    common = no_g4.index
    assert (down.loc[common, "label"] == no_g4["label"]).mean() > 0.97  # ~weight 0 = left out


def test_weighted_majority_by_hand() -> None:
    ann = frame([("x", "p", "a"), ("x", "q", "b"), ("x", "r", "b")])
    out = T.weighted_majority(ann, LABELS, {"q": 0.25, "r": 0.25})
    assert out.loc["x", "label"] == "a" and out.loc["x", "confidence"] == pytest.approx(1 / 1.5)


# --------------------------------------------------------------------------- health check


def test_agreement_on_al_items_vs_random_items() -> None:
    easy, _ = crowd(40, GOOD, seed=10, prefix="r")
    hard, _ = crowd(40, {"g1": 0.6, "g2": 0.6, "g3": 0.6}, seed=11, prefix="s")
    ann = pd.concat([easy, hard])
    reasons = pd.DataFrame({"item_id": list(easy["item_id"].unique()) + list(hard["item_id"].unique()),
                            "reason": ["random"] * 40 + ["strategy"] * 40})
    h = T.agreement_by_selection(ann, reasons, min_items=10)
    assert h["agreement_al"] == pytest.approx(agreement.percent_agreement(hard))
    assert h["agreement_random"] == pytest.approx(agreement.percent_agreement(easy))
    assert h["agreement_al_minus_random"] < -0.2
    r = T.decide(ann, LABELS, T.TrustPolicy(min_consensus_answers=10_000, alpha_gate=-1), reasons=reasons)
    assert r.metrics["agreement_al_minus_random"] == pytest.approx(h["agreement_al_minus_random"])
    assert any(n.startswith("health: agreement on AL-selected items") for n in r.notes)
    few = T.agreement_by_selection(ann, reasons.iloc[:5], min_items=10)
    assert math.isnan(few["agreement_al_minus_random"])


# --------------------------------------------------------------------------- gold selection


def test_gold_count_is_a_share_of_the_pushed_batch() -> None:
    assert T.gold_count(0.0, 50) == 0 and T.gold_count(0.1, 0) == 0
    assert T.gold_count(0.1, 45) == 5  # 5 of 50 pushed
    assert T.gold_count(0.2, 40) == 10
    assert T.gold_count(0.4, 25) == 17  # ceil(16.67)


def test_select_gold_is_stable_and_never_reuses() -> None:
    cands = [f"g{k}" for k in range(30)]
    first = T.select_gold(cands, [], 5, seed=1)
    assert first == T.select_gold(list(reversed(cands)), [], 5, seed=1)
    second = T.select_gold(cands, first, 5, seed=1)
    assert not set(first) & set(second) and len(second) == 5
    assert set(T.select_gold(cands, cands[:28], 5)) == {"g28", "g29"}  # fewer left than asked: what is left
    assert T.select_gold(cands, cands, 3) == []


# --------------------------------------------------------------------------- contract enforcement


def test_contract_offenders_match_the_great_expectations_verdict() -> None:
    from labelloop.integrations.expectations import DataContractError, validate_annotations

    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    cases = {
        "annotations_unknown_items_annotators.csv": ({"103": "unknown item", "104": "unknown annotator"}),
        "annotations_two_live.csv": ({"201": "superseded by a later answer of the same annotator"}),
        "annotations_bad_timestamps.csv": ({"302": "created_at missing or out of range",
                                            "303": "created_at missing or out of range",
                                            "304": "created_at missing or out of range"}),
    }
    for name, expected in cases.items():
        df = pd.read_csv(BAD / name, dtype=str)
        why = T.contract_offenders(df, known_items=["r1", "r2", "r3", "r4"], known_annotators=["alice", "bob"],
                                   labels=["pos", "neg"], now=now)
        got = {i: w for i, w in zip(df["backend_annotation_id"], why) if w}
        assert got == expected, name
        with pytest.raises(DataContractError) as err:  # GX agrees the frame is bad...
            validate_annotations(df, known_items=["r1", "r2", "r3", "r4"], known_annotators=["alice", "bob"],
                                 label_set=["pos", "neg"], now=now)
        flagged = {i for f in err.value.failures for i in f.sample_ids}
        assert set(expected) <= flagged, name  # ...and names (at least) the rows held back
        clean = df[[not w for w in why]]
        if name != "annotations_two_live.csv":  # GX counts both live answers; we keep the latest
            validate_annotations(clean, known_items=["r1", "r2", "r3", "r4"], known_annotators=["alice", "bob"],
                                 label_set=["pos", "neg"], now=now)


def test_labels_outside_the_set_are_held_back() -> None:
    df = pd.DataFrame({"item_id": ["r1", "r1"], "annotator": ["a", "b"], "label": ["pos", "maybe"],
                       "status": ["submitted", "submitted"]})
    why = T.contract_offenders(df, known_items=["r1"], known_annotators=None, labels=["pos", "neg"])
    assert list(why) == ["", "label not in the label set"]


def test_metric_names_are_mlflow_safe() -> None:
    assert T.metric_name("annotator_accuracy_", "ann-1") == "annotator_accuracy_ann-1"
    assert T.metric_name("annotator_accuracy_", "a b@x.org") == "annotator_accuracy_a_b_x.org"


def test_policy_rejects_unknown_choices() -> None:
    with pytest.raises(ValueError, match="consensus"):
        T.TrustPolicy(consensus="vote")
    with pytest.raises(ValueError, match="annotator_policy"):
        T.TrustPolicy(annotator_policy="ban")
def test_vectorised_bootstrap_alpha_matches_the_krippendorff_package_draw_by_draw():
    """The batch gate's upper bound: every resample's alpha equals the package's, NaN where undefined."""
    from labelloop.tasks.trust import _alpha_from_counts, _alpha_of_resamples, _alpha_upper_bound

    rng = np.random.default_rng(7)
    for trial in range(25):
        n_items, n_labels = int(rng.integers(3, 60)), int(rng.integers(2, 6))
        counts = np.zeros((n_items, n_labels), dtype=int)
        for i in range(n_items):
            for _ in range(int(rng.integers(2, 6))):
                counts[i, rng.choice(n_labels, p=rng.dirichlet(np.ones(n_labels) * 0.3))] += 1
        idx = rng.integers(0, n_items, (20, n_items))
        fast = _alpha_of_resamples(counts, idx)
        for b in range(len(idx)):
            slow = _alpha_from_counts(counts[idx[b]])
            assert (math.isnan(slow) and math.isnan(fast[b])) or abs(slow - fast[b]) < 1e-9, (trial, b, slow, fast[b])
    perfect = np.array([[3, 0], [0, 3]] * 10)
    assert _alpha_upper_bound(perfect, batch=1) == 1.0
    split = np.array([[2, 1], [1, 2]] * 10)
    assert _alpha_upper_bound(split, batch=1) < 0.2


# --------------------------------------------------------------------------- extra answers that never come


def test_an_extra_answer_not_given_within_the_wait_is_given_up():
    targets = {"a": 4, "b": 4, "c": 5, "d": 4}
    asked = {"a": 1, "b": 2, "c": 1, "d": 1}
    answers = {"a": 3, "b": 3, "c": 5, "d": 3}
    # round 3, wait 2: a (asked in 1, 3 of 4) and d are given up; b was asked only last round; c got its answer
    assert T.expired_requests(targets, asked, answers, 3, 2) == {"a": 3, "d": 3}
    assert T.expired_requests(targets, asked, answers, 2, 2) == {}
    assert T.expired_requests(targets, asked, answers, 4, 2) == {"a": 3, "b": 3, "d": 3}
    with pytest.raises(ValueError):
        T.expired_requests(targets, asked, answers, 3, 0)


def test_a_team_no_larger_than_the_overlap_gets_its_unsure_item_adjudicated(tmp_path):
    """The review's case: three annotators, overlap 3, a 2-1 split. Label Studio takes the request for
    a fourth answer, nobody gives it; after extra_answer_rounds the item goes to adjudication instead
    of waiting as needs_more for ever."""
    from types import SimpleNamespace

    from labelloop.flows.trust import _give_up_late_requests, ask_for_more
    from labelloop.integrations.ledger import Ledger

    class TaskOverlaps:  # Label Studio's request_more: the task's overlap up by one, whoever is left
        name = "label_studio"

        def __init__(self):
            self.overlap, self.withdrawn = {}, []

        def request_more(self, items, max_overlap):
            for i in items:
                self.overlap[i] = min(self.overlap.get(i, 3) + 1, max_overlap)
            return {i: self.overlap[i] for i in items}

        def withdraw_requests(self, answers):
            self.withdrawn.append(dict(answers))
            return len(answers)

    led = Ledger(f"sqlite:///{tmp_path}/l.db", "c")
    c = SimpleNamespace(ledger=led, backend=TaskOverlaps(),
                        cfg=SimpleNamespace(annotation=SimpleNamespace(extra_answer_rounds=2)))
    pol = T.TrustPolicy(consensus="majority", need=3, max_overlap=5, gate_mode="absolute", alpha_gate=-1.0)
    ann = pd.DataFrame([("X", "a1", "pos"), ("X", "a2", "pos"), ("X", "a3", "neg"),
                        ("Y", "a1", "pos"), ("Y", "a2", "pos"), ("Y", "a3", "pos")],
                       columns=["item_id", "annotator", "label"])
    seen = []
    for rnd in range(1, 5):
        targets, exhausted = led.trust.answer_targets()
        targets, exhausted, note = _give_up_late_requests(c, ann, targets, exhausted, rnd)
        r = T.decide(ann, ["pos", "neg"], pol, batch_of={"X": 1, "Y": 1}, targets=targets, exhausted=exhausted)
        ask_for_more(c, r, targets, exhausted, pol, rnd)
        seen.append((r.items.loc["X", "status"], note is not None))
    assert seen[:2] == [("needs_more", False), ("needs_more", False)]
    assert seen[2] == ("adjudication", True) and seen[3] == ("adjudication", False)
    assert c.backend.withdrawn == [{"X": 3}]


def test_down_weighted_answers_alone_never_make_an_item_trusted():
    """Two annotators caught on gold (0 % right) are the only ones to answer X: under "downweight"
    their weights cancel in the vote share (confidence 1.0), so the count of answers must carry the
    weight, or a caught spammer's labels would train the model. Y, answered by the good two, stays."""
    rows, gold = [], {}
    for k in range(12):
        gold[f"gold{k}"] = "pos"
        rows += [(f"gold{k}", "g1", "pos"), (f"gold{k}", "g2", "pos"), (f"gold{k}", "b1", "neg"),
                 (f"gold{k}", "b2", "neg")]
    rows += [("X", "b1", "neg"), ("X", "b2", "neg"), ("Y", "g1", "pos"), ("Y", "g2", "pos"),
             ("Z", "g1", "pos"), ("Z", "b1", "neg"), ("Z", "b2", "pos"), ("Z", "g2", "pos")]
    ann = pd.DataFrame(rows, columns=["item_id", "annotator", "label"])
    batch_of = {"X": 1, "Y": 1, "Z": 1, **{g: 1 for g in gold}}
    for policy in ("downweight", "exclude"):
        p = T.TrustPolicy(consensus="majority", need=2, min_answers=2, annotator_policy=policy, min_gold_answers=10,
                        gate_mode="absolute", alpha_gate=-1.0, downweight=0.25)
        r = T.decide(ann, ["pos", "neg"], p, gold=gold, batch_of=batch_of)
        assert set(r.annotators.index[r.annotators["flagged"].astype(bool)]) == {"b1", "b2"}
        assert r.items.loc["X", "status"] != "trusted", (policy, r.items.loc["X"].to_dict())
        assert r.items.loc["Y", "status"] == "trusted" and r.items.loc["Z", "label"] == "pos"
    # Z under downweight: two full answers and two quarter answers count as 2
    assert r.items.loc["Z", "status"] == "trusted"


def test_an_item_every_annotator_answered_or_skipped_waits_no_longer(tmp_path):
    """Label Studio, overlap 3, a team of three: carol skips X, so nobody is left to give its third
    answer. X is decided on its two answers (it used to stay pending, holding the round); Y, which
    nobody skipped, still waits. With a fourth annotator in the team, X waits for them (Label Studio
    offers a skipped task to the others), and the round's readiness agrees."""
    from types import SimpleNamespace

    from labelloop.flows.trust import _with_skips, answers_for_readiness
    from labelloop.integrations.backend import PulledAnnotation
    from labelloop.integrations.ledger import Ledger

    t = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def a(item, who, status="submitted"):
        return PulledAnnotation(f"{item}-{who}", f"t-{item}", item, who, "pos" if status == "submitted" else None,
                                status, t, t)

    three = [a("X", "alice"), a("X", "bob"), a("X", "carol", "skipped"), a("Y", "alice"), a("Y", "bob"),
             a("Z", "alice"), a("Z", "bob"), a("Z", "carol")]
    led = Ledger(f"sqlite:///{tmp_path}/three.db", "c")
    led.upsert_annotations(three, backend="label_studio", round_no=1)
    c = SimpleNamespace(ledger=led)
    targets, exhausted = _with_skips(c, {"Z": 4}, set(), need=3)
    assert targets == {"X": 2, "Z": 4} and exhausted == {"X"}
    assert answers_for_readiness(led.annotations_frame(), 3) == {"X": 3, "Y": 2, "Z": 3}
    pol = T.TrustPolicy(consensus="majority", need=3, min_answers=2, gate_mode="absolute", alpha_gate=-1.0)
    ann = led.annotations_frame(submitted_only=True)[["item_id", "annotator", "label"]]
    r = T.decide(ann, ["pos", "neg"], pol, batch_of={"X": 1, "Y": 1, "Z": 1}, targets=targets, exhausted=exhausted)
    assert r.items.loc["X", "status"] == "trusted" and r.items.loc["Y", "status"] == "pending"

    four = Ledger(f"sqlite:///{tmp_path}/four.db", "c")
    four.upsert_annotations(three + [a("Y", "dave")], backend="label_studio", round_no=1)
    assert _with_skips(SimpleNamespace(ledger=four), {}, set(), need=3) == ({}, set())
    assert answers_for_readiness(four.annotations_frame(), 3)["X"] == 2, "dave may still answer X"
