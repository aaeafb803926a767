"""The replay backend (integrations/replay.py): real recorded annotators answer pushed items."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from integrations.backend import AnnotationBackend, BackendError, TaskRequest
from integrations.replay import ReplayBackend, load_replay
from tasks import agreement
from tasks import trust as T

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
RTE = SHARED / "rte_mturk_annotations.csv"
needs_rte = pytest.mark.skipif(not RTE.is_file(), reason=f"shared dataset {RTE} not present (see MANIFEST.md)")


def _small(tmp_path: Path) -> Path:
    rows = [("x1", "text one", "w1", "pos", "pos"), ("x1", "text one", "w2", "neg", "pos"),
            ("x1", "text one", "w3", "pos", "pos"), ("x2", "text two", "w1", "neg", "neg"),
            ("x2", "text two", "w3", "neg", "neg")]
    p = tmp_path / "ann.csv"
    pd.DataFrame(rows, columns=["item_id", "text", "annotator_id", "label", "gold"]).to_csv(p, index=False)
    return p


def test_replays_exactly_the_recorded_answers(tmp_path: Path) -> None:
    data = load_replay(_small(tmp_path))
    assert data.items.to_dict("records") == [{"id": "x1", "text": "text one", "label": "pos"},
                                             {"id": "x2", "text": "text two", "label": "neg"}]
    b = ReplayBackend(tmp_path / "state.json", data.annotations)
    assert isinstance(b, AnnotationBackend) and b.annotator_names == ["w1", "w2", "w3"]
    ids = b.push([TaskRequest("x1", "text one")])
    assert ids == {"x1": "1"} and b.push([TaskRequest("x1", "text one"), TaskRequest("x2", "t")]) == {"x1": "1", "x2": "2"}
    pulled = b.pull()
    got = sorted((a.item_id, a.annotator, a.label) for a in pulled)
    assert got == [("x1", "w1", "pos"), ("x1", "w2", "neg"), ("x1", "w3", "pos"), ("x2", "w1", "neg"), ("x2", "w3", "neg")]
    assert [a.backend_annotation_id for a in pulled] == [a.backend_annotation_id for a in b.pull()], "stable ids"
    # The state outlives the object (a re-run process sees the same tasks).
    again = ReplayBackend(tmp_path / "state.json", data.annotations)
    assert again.push([TaskRequest("x2", "t")]) == {"x2": "2"}
    again.close_tasks(["1"])
    assert {a.item_id for a in again.pull()} == {"x2"}


def test_max_per_item_keeps_a_stable_subset(tmp_path: Path) -> None:
    data = load_replay(_small(tmp_path))
    b = ReplayBackend(tmp_path / "s.json", data.annotations, max_per_item=2, seed=3)
    first = b.answers("x1")
    assert len(first) == 2 and first == ReplayBackend(tmp_path / "t.json", data.annotations, max_per_item=2,
                                                       seed=3).answers("x1")
    assert len(b.answers("x2")) == 2


def test_unknown_items_and_bad_files_are_clear_errors(tmp_path: Path) -> None:
    data = load_replay(_small(tmp_path))
    b = ReplayBackend(tmp_path / "s.json", data.annotations)
    with pytest.raises(BackendError, match="cannot answer"):
        b.push([TaskRequest("nope", "t")])
    with pytest.raises(BackendError, match="not found"):
        load_replay(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("item_id,label\nx,y\n")
    with pytest.raises(BackendError, match="annotator_id"):
        load_replay(tmp_path / "bad.csv")


@needs_rte
def test_rte_replay_through_the_backend_and_the_trust_policy(tmp_path: Path) -> None:
    """800 RTE items x 10 MTurk workers: pushed, pulled back, decided by the trust policy.
    Dawid-Skene beats majority vote and a single worker (the AGREEMENT.md figures)."""
    data = load_replay(RTE)
    labels = ["entailment", "no_entailment"]
    b = ReplayBackend(tmp_path / "s.json", data.annotations)
    b.push([TaskRequest(i, t) for i, t in zip(data.items["id"], data.items["text"])])
    pulled = pd.DataFrame([a.__dict__ for a in b.pull()])
    assert len(pulled) == 8000 and pulled["annotator"].nunique() == 164
    gold = data.items.set_index("id")["label"]
    pol = dict(min_consensus_answers=10_000, min_confidence=0.0, alpha_gate=-1.0, need=10)
    ds = T.decide(pulled, labels, T.TrustPolicy(consensus="dawid_skene", **pol))
    mv = agreement.majority_vote(pulled, labels)
    assert ds.method == "dawid_skene"
    acc_ds = (ds.trusted["label"] == gold[ds.trusted.index]).mean()
    acc_single = (pulled["label"].to_numpy() == gold[pulled["item_id"]].to_numpy()).mean()
    acc_mv = (mv["label"] == gold[mv.index]).mean()
    assert acc_ds > acc_mv > acc_single
    assert ds.metrics["krippendorff_alpha"] == pytest.approx(0.241, abs=0.001)
