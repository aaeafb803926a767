"""What the round's stop rules read from the ledger: judged rounds only, and one fixed stop set.

Both were found by a review replaying real campaign histories: a lucky F1 on a handful of test
items stopped a campaign for good (marginal gain), and a pool that grew between rounds (arrivals,
a drift reopen) made the stability rule fail every re-run of the round, or compare other texts.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from labelloop.flows.round import _stop_reason, _stop_set_predictions
from labelloop.integrations.ledger import Ledger
from labelloop.tasks.policy import ArmState, Policy, StopPolicy, stop_reason
from labelloop.tasks.train import make_featurizer, train_model


def _ledger(tmp_path: Path, rounds: list[tuple[int, int, float, int]]) -> Ledger:
    led = Ledger(f"sqlite:///{tmp_path}/ledger.db", "c")
    for r, labels, f1, test_n in rounds:
        led.start_round("active", r, "margin")
        led.update_round("active", r, status="done", n_labels=labels,
                         metrics={"test_macro_f1": f1, "test_n": float(test_n)})
    return led


def _gain_stop(led: Ledger, need_test: int) -> str | None:
    policy = Policy(stop=StopPolicy(max_labels=1000, max_rounds=50, min_gain_per_label=5e-4, stop_window=3))
    res = SimpleNamespace(n_labels=100, metrics={"test_macro_f1": 0.78, "test_n": 80.0}, judged=True)
    return _stop_reason(SimpleNamespace(ledger=led), policy, ArmState(arm="active", round_no=4, spent=100), res,
                        ev=SimpleNamespace(need_test=need_test), items=None)


def test_a_lucky_f1_on_a_handful_of_test_items_does_not_stop_the_campaign(tmp_path):
    # round 1 had 6 trusted test items (below min_test_labels 30): F1 1.0 there is noise
    led = _ledger(tmp_path, [(1, 25, 1.00, 6), (2, 50, 0.70, 40), (3, 75, 0.74, 60)])
    assert _gain_stop(led, need_test=30) is None  # judged curve: +0.08 over 50 labels, 1.6e-3 a label


def test_the_marginal_gain_rule_still_fires_on_judged_rounds(tmp_path):
    # the same curve with every round judged: 1.00 -> 0.78 over 75 labels is a loss, so it stops
    led = _ledger(tmp_path, [(1, 25, 1.00, 40), (2, 50, 0.70, 40), (3, 75, 0.74, 60)])
    assert "gain per label" in (_gain_stop(led, need_test=30) or "")


def _items(n: int) -> pd.DataFrame:
    return pd.DataFrame({"item_id": [f"x{i:04d}" for i in range(n)],
                         "text": [("good great" if i % 2 else "bad awful") + f" w{i}" for i in range(n)],
                         "split": "pool"})


@pytest.mark.parametrize("start, grown, set_size", [(300, 400, 500), (600, 700, 500)])
def test_the_stop_set_stays_the_same_texts_when_the_pool_grows(tmp_path, start, grown, set_size):
    c = SimpleNamespace(workdir=tmp_path, labels=["neg", "pos"],
                        cfg=SimpleNamespace(budget=SimpleNamespace(stop_set_size=set_size),
                                            splits=SimpleNamespace(random_state=0)))
    items = _items(start)
    model = train_model(make_featurizer("tfidf", items["text"].tolist()), ["good", "bad"], ["pos", "neg"])
    ev = SimpleNamespace(model=model)
    stop = StopPolicy(max_labels=10_000, max_rounds=50, stability_kappa=0.99, stop_window=3)
    for r in (1, 2, 3):
        _stop_set_predictions(c, "active", r, ev, items)
    first = set(pd.read_json(tmp_path / "stop_set" / "items.json", typ="series"))
    items = _items(grown)  # arrivals joined the pool
    for _ in range(2):  # the round and a re-run of it
        preds = _stop_set_predictions(c, "active", 4, ev, items)
        assert [len(p) for p in preds] == [min(start, set_size)] * 4
        assert "predictions stabilised" in (stop_reason(stop, 4, 0, [], judged=True, stop_set_predictions=preds)
                                            or "")
    assert set(pd.read_json(tmp_path / "stop_set" / "items.json", typ="series")) == first


def test_each_settle_of_a_finished_campaign_ages_extra_answer_requests(tmp_path):
    """The settles after a campaign's last round all decide under one round number; without their own
    count an extra answer asked for in the last round was never given up (extra_answer_rounds)."""
    from labelloop.flows.round import count_settle_call
    from labelloop.flows.trust import _give_up_late_requests

    led = _ledger(tmp_path, [(1, 25, 0.7, 40), (2, 50, 0.72, 40)])
    c = SimpleNamespace(ledger=led, backend=SimpleNamespace(name="label_studio"),
                        cfg=SimpleNamespace(annotation=SimpleNamespace(extra_answer_rounds=2), arms=["active"]))
    led.trust.set_answer_targets({"X": 4}, [], 2)  # raised in the last round
    frame = pd.DataFrame({"item_id": ["X"] * 3, "annotator": ["a", "b", "c"], "label": ["p", "p", "n"]})
    given_up = []
    for _ in range(3):  # `labelloop round` on the finished campaign, three times: each settles
        calls = count_settle_call(c)
        targets, exhausted = led.trust.answer_targets()
        _, ex, _ = _give_up_late_requests(c, frame, targets, exhausted, 3 + calls - 1)
        given_up.append("X" in ex)
    assert given_up == [False, True, True]
    led.start_round("active", 3, "margin")  # reopened: round 3 ran, the count starts again
    led.update_round("active", 3, status="done", n_labels=75, metrics={"test_macro_f1": 0.75, "test_n": 40.0})
    assert count_settle_call(c) == 1


def test_health_notes_are_said_for_the_active_arm_where_a_strategy_can_act():
    from labelloop.flows.round import _worth_saying

    def check(name, fired=True):
        return SimpleNamespace(name=name, fired=fired)

    assert _worth_saying(check("per_class_recall"), "active", 2)
    assert not _worth_saying(check("per_class_recall"), "active", 1), "round 1's model learnt from the seed only"
    assert not _worth_saying(check("per_class_recall"), "random", 2), "a random batch starves nothing"
    assert not _worth_saying(check("batch_similarity"), "random", 3)
    assert _worth_saying(check("batch_similarity"), "active", 1)
    assert not _worth_saying(check("calibration_ece"), "active", 3), "said once, as the gate's fallback"
    assert not _worth_saying(check("per_class_recall", fired=False), "active", 3)
