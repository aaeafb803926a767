"""Simulated annotators: deterministic, with the configured accuracy, and a backend that survives re-runs."""

from __future__ import annotations

import pandas as pd
import pytest

from labelloop.integrations.backend import TaskRequest
from labelloop.integrations.simulated import SimulatedBackend
from labelloop.tasks.annotate import assign_annotators, screen_annotations, simulated_answer, stable_uniform

LABELS = ["a", "b", "c"]


def test_answers_are_deterministic_and_match_accuracy():
    items = [f"i{k}" for k in range(4000)]
    answers = [simulated_answer(i, "ann", 0.8, "a", LABELS, seed=1) for i in items]
    assert answers == [simulated_answer(i, "ann", 0.8, "a", LABELS, seed=1) for i in items]
    share = sum(x == "a" for x in answers) / len(answers)
    assert share == pytest.approx(0.8, abs=0.02)
    wrong = [x for x in answers if x != "a"]
    assert set(wrong) == {"b", "c"} and abs(wrong.count("b") - wrong.count("c")) < 0.2 * len(wrong)
    assert simulated_answer("i1", "ann", 1.0, "c", LABELS) == "c"


def test_assignment_is_stable_distinct_and_spread():
    names = ["p", "q", "r", "s"]
    picks = [assign_annotators(f"i{k}", names, 2, seed=0) for k in range(400)]
    assert all(len(set(p)) == 2 for p in picks)
    assert picks[7] == assign_annotators("i7", names, 2, seed=0)
    load = pd.Series([n for p in picks for n in p]).value_counts()
    assert load.min() > 150, "every annotator gets a fair share of the items"
    assert 0.0 <= stable_uniform("x") < 1.0


def test_simulated_backend_push_is_idempotent_and_pull_is_stable(tmp_path):
    be = SimulatedBackend(tmp_path / "s.json", true_labels={"i1": "a", "i2": "b"},
                          annotators=[("p", 1.0), ("q", 1.0), ("r", 0.0)], labels=LABELS, overlap=2)
    m1 = be.push([TaskRequest("i1", "t1"), TaskRequest("i2", "t2")])
    m2 = SimulatedBackend(tmp_path / "s.json", true_labels={"i1": "a", "i2": "b"},
                          annotators=[("p", 1.0), ("q", 1.0), ("r", 0.0)], labels=LABELS,
                          overlap=2).push([TaskRequest("i1", "t1")])
    assert m2 == {"i1": m1["i1"]}, "a second process sees the first one's tasks"
    pulled = be.pull()
    assert len(pulled) == 4 and len({p.backend_annotation_id for p in pulled}) == 4
    assert [p.label for p in pulled] == [p.label for p in be.pull()]


def test_screen_annotations_rejects_unknown_items_and_labels_but_keeps_the_rest():
    f = pd.DataFrame({"backend_annotation_id": ["1", "2", "3", "4"], "item_id": ["i1", "zz", "i1", "i2"],
                      "label": ["a", "a", "nope", None], "status": ["submitted", "submitted", "submitted", "skipped"]})
    good, problems = screen_annotations(f, known_items={"i1", "i2"}, labels=LABELS)
    assert good["backend_annotation_id"].tolist() == ["1", "4"]
    assert any("never pushed" in p and "'2'" in p for p in problems)
    assert any("outside the label set" in p and "nope" in p for p in problems)
