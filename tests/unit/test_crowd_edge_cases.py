"""Edge cases of real crowds and real servers that a review of the fixes for them found.

Each test failed on the first version of those fixes: the doctor on answers kept from an earlier
label set, the batch trigger and the round disagreeing about a skip, a Label Studio withdrawal
that failed once and was never tried again, self-training on a temperature fitted on two items,
and an unreadable ledger mistaken for another campaign's project.
"""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from labelloop.integrations.backend import BackendError, PulledAnnotation
from labelloop.integrations.ledger import Ledger, LedgerError

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _ann(item: str, who: str, label: str | None = "pos", status: str = "submitted", tid: str | None = None):
    return PulledAnnotation(f"{item}-{who}", tid or f"t-{item}", item, who, label if status == "submitted" else None,
                            status, T0, T0)


def _one_task_ledger(tmp_path) -> Ledger:
    led = Ledger(f"sqlite:///{tmp_path}/l.db", "c")
    led.add_items(pd.DataFrame({"id": ["X"], "text": ["x"], "label": [None], "split": ["pool"]}))
    led.add_queries("active", 1, [{"item_id": "X", "strategy": "margin", "reason": "strategy", "score": None,
                                   "model_version": None}])
    led.record_tasks("label_studio", 1, {"X": "7"})
    return led


def test_doctor_does_not_call_answers_kept_from_an_earlier_label_set_drift(tmp_path, monkeypatch):
    """Label Studio reports an answer given under label set v1 as invalid (it checks today's labels),
    unchanged since it was stored: the ledger keeps its label for [[labels.previous]], and the doctor
    must not report it as lost for ever."""
    import labelloop.flows.doctor as D

    led = _one_task_ledger(tmp_path)
    old = _ann("X", "alice", "billing", tid="7")
    led.upsert_annotations([old], backend="label_studio", round_no=1)
    led.start_round("active", 2, "margin")  # the last pull came after the answer
    now = PulledAnnotation(old.backend_annotation_id, "7", "X", "alice", None, "invalid", T0, T0)
    monkeypatch.setattr(D, "_view", lambda c: SimpleNamespace(tasks=lambda: [D.BackendTask("7", "X", 1)]))
    c = SimpleNamespace(ledger=led, backend=SimpleNamespace(name="label_studio", pull=lambda: [now]),
                        labels=["payments", "tech"])
    rep = D.Report("c")
    D.check_backend(c, rep, repair=False)
    assert not rep.drift, rep.render()


def test_the_batch_trigger_counts_a_skip_as_the_round_does(tmp_path, monkeypatch):
    """A team of three, overlap 3, carol skipped X: the round does not wait for X, so `labelloop serve`'s
    trigger must not either (it used to count submitted answers only and never fired)."""
    import labelloop.flows.round as R
    from labelloop.flows.batch_trigger import backend_answers

    led = _one_task_ledger(tmp_path)
    pulled = [_ann("X", "alice"), _ann("X", "bob"), _ann("X", "carol", status="skipped")]
    led.upsert_annotations(pulled, backend="label_studio", round_no=1)
    c = SimpleNamespace(ledger=led, backend=SimpleNamespace(name="label_studio", pull=lambda: pulled),
                        cfg=SimpleNamespace(arms=["active"], run=SimpleNamespace(batch_ready_share=1.0)))
    monkeypatch.setattr(R, "trust_need", lambda c: 3)
    assert R.open_batch_readiness(c, None).ready
    assert R.open_batch_readiness(c, None, answers=backend_answers(c)).ready


def test_a_withdrawal_that_failed_is_tried_again(tmp_path):
    """Giving up an extra answer first takes the request back in Label Studio, then records it: a
    failure there (the round exits) leaves the item open, so the re-run gives it up and withdraws."""
    from labelloop.flows.trust import _give_up_late_requests

    calls = []

    class FlakyLabelStudio:
        name = "label_studio"

        def withdraw_requests(self, answers):
            calls.append(dict(answers))
            if len(calls) == 1:
                raise BackendError("Label Studio at http://127.0.0.1:1 did not answer")
            return len(answers)

    led = Ledger(f"sqlite:///{tmp_path}/l.db", "c")
    c = SimpleNamespace(ledger=led, backend=FlakyLabelStudio(),
                        cfg=SimpleNamespace(annotation=SimpleNamespace(extra_answer_rounds=2)))
    led.trust.set_answer_targets({"X": 4}, [], 1)
    frame = pd.DataFrame({"item_id": ["X"] * 3, "annotator": ["a", "b", "c"], "label": ["p", "p", "n"]})
    with pytest.raises(BackendError):
        _give_up_late_requests(c, frame, *led.trust.answer_targets(), 3)
    assert not led.trust.answer_targets()[1], "nothing recorded while Label Studio still offers the task"
    _, exhausted, note = _give_up_late_requests(c, frame, *led.trust.answer_targets(), 3)
    assert exhausted == {"X"} and note is not None and calls == [{"X": 3}, {"X": 3}]


def test_self_training_needs_the_calibration_floor_too():
    """Two calibration answers drive the temperature to its bound and make an uninformed model look
    sure of everything; train_and_evaluate now asks for calibrate.MIN_ROWS items before self-training."""
    from labelloop.tasks import calibrate
    from labelloop.tasks.self_training import pseudo_labels

    rng = np.random.default_rng(0)
    pool = rng.dirichlet([1, 1, 1], size=200)  # an uninformed model
    two = pseudo_labels(pool, np.array([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3]]), np.array([0, 1]), n_labelled=100,
                        threshold=0.9)
    assert two.temperature < 0.05 and len(two.rows) == 100, "why the floor: two items make anything confident"
    from tests.unit.test_calibration_gate_floor import _evaluate

    ev = _evaluate(n_cal=8, min_cal=2, self_training=True)
    assert ev.pseudo is None and "pseudo_labels" not in ev.metrics and calibrate.MIN_ROWS == 10


def test_an_unreadable_ledger_is_reported_as_such_not_as_another_campaigns_project(tmp_path):
    from labelloop.flows.setup import _refuse_someone_elses_project

    bad = tmp_path / "ledger.db"
    bad.write_bytes(b"not a database at all" * 100)
    cfg = SimpleNamespace(ledger_url=f"sqlite:///{bad}", name="c")
    with pytest.raises(LedgerError, match="cannot open the ledger"):
        _refuse_someone_elses_project(cfg, "labelloop c", {"X": "7"})
    empty = SimpleNamespace(ledger_url=f"sqlite:///{tmp_path / 'new.db'}", name="c")  # a new campaign
    from labelloop.flows.config import ConfigError

    with pytest.raises(ConfigError, match="another campaign uses this project"):
        _refuse_someone_elses_project(empty, "labelloop c", {"X": "7"})
