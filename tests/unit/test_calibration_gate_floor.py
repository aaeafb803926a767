"""The round's calibration gate is judged on a calibrated ECE only.

A real campaign reviewed with 8 trusted calibration items and ``min_calibration_labels = 5``: the
gate was judged on the raw ECE of those 8 (nothing is calibrated below ``calibrate.MIN_ROWS``), the
round line read ``ECE=0.158->0.158`` as if calibration had run, and the round fell back to
diversity + random selection on that noise.
"""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from labelloop.flows.stages import train_and_evaluate
from labelloop.tasks import calibrate
from labelloop.tasks.train import make_featurizer

LABELS = ["neg", "pos"]


def _items(n_cal: int) -> tuple[pd.DataFrame, pd.Series]:
    rows = []
    for i in range(40):
        rows.append((f"p{i}", ("good great fine" if i % 2 else "bad awful poor") + f" w{i}", "pool"))
    for i in range(20):
        rows.append((f"t{i}", ("good nice" if i % 2 else "bad sad") + f" t{i}", "test"))
    for i in range(n_cal):
        rows.append((f"c{i}", ("great" if i % 2 else "awful") + f" c{i}", "calibration"))
    items = pd.DataFrame(rows, columns=["item_id", "text", "split"])
    labels = pd.Series(["pos" if int(i[1:]) % 2 else "neg" for i in items["item_id"]], index=items["item_id"])
    return items, labels


def _evaluate(n_cal: int, min_cal: int, self_training: bool = False):
    items, labels = _items(n_cal)
    cfg = SimpleNamespace(model=SimpleNamespace(C=1.0, self_training=self_training, self_training_threshold=0.95),
                          splits=SimpleNamespace(random_state=0, min_test_labels=10, min_calibration_labels=min_cal),
                          gates=SimpleNamespace(calibration_ece=0.10))
    c = SimpleNamespace(cfg=cfg, labels=LABELS)
    pool = items[items["split"] == "pool"]
    labelled = pd.DataFrame({"item_id": pool["item_id"], "label": labels.reindex(pool["item_id"]).to_numpy()})
    vec = make_featurizer("tfidf", items["text"].tolist())
    evaluation = labels[items.set_index("item_id")["split"].reindex(labels.index) != "pool"]
    return train_and_evaluate.fn(c, "active", labelled, items, vec, evaluation)


def test_below_the_calibration_floor_the_gate_is_not_judged_whatever_min_calibration_labels_says():
    ev = _evaluate(n_cal=8, min_cal=5)
    assert calibrate.MIN_ROWS == 10
    assert not ev.calibration.judged and ev.calibration.needed == 10 and ev.calibration.gate_passed
    assert "calibration_ece" not in ev.metrics


def test_from_the_floor_up_the_gate_is_judged_on_a_calibrated_ece():
    ev = _evaluate(n_cal=12, min_cal=5)
    assert ev.calibration.judged and ev.calibration.cross_fitted
    assert ev.metrics["calibration_n"] == 12
