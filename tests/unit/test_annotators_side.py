"""The annotators' side (issue 17): lead_time in the ledger, time and cost per round and
annotator, batch order for people, readable names for simulated users."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from labelloop.integrations.backend import PulledAnnotation
from labelloop.integrations.ledger import Ledger
from labelloop.tasks.annotate import person_name, simulated_lead_time
from labelloop.tasks.annotation_cost import annotator_metrics, annotator_table, effort, hours_per_accuracy_point
from labelloop.tasks.batch_order import order_for_people
from labelloop.tasks.trust import metric_name

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _pulled(aid, item, who, label="a", status="submitted", lead=None):
    return PulledAnnotation(str(aid), f"t-{item}", item, who, label, status, T0, T0, lead_time=lead)


# --------------------------------------------------------------------------- ledger


def test_lead_time_is_stored_and_an_edit_updates_it(tmp_path):
    led = Ledger(f"sqlite:///{tmp_path / 'l.db'}", "c")
    led.record_tasks("ls", 1, {"i0": "t-i0", "i1": "t-i1"})
    assert led.upsert_annotations([_pulled(1, "i0", "ann", lead=12.5), _pulled(2, "i1", "ann")], "ls", 1)[
        "inserted"] == 2
    ann = led.annotations_frame().set_index("backend_annotation_id")
    assert ann.loc["1", "lead_time"] == 12.5
    assert pd.isna(ann.loc["2", "lead_time"]), "a backend that does not time answers leaves it NULL"
    # Label Studio sums an edit's time into lead_time: same label, longer time -> updated
    counts = led.upsert_annotations([_pulled(1, "i0", "ann", lead=20.0), _pulled(2, "i1", "ann")], "ls", 2)
    assert counts == {"inserted": 0, "updated": 1, "unchanged": 1}
    assert led.annotations_frame().set_index("backend_annotation_id").loc["1", "lead_time"] == 20.0


def test_a_ledger_from_before_lead_time_still_opens_and_gains_the_column(tmp_path):
    path = tmp_path / "old.db"
    led = Ledger(f"sqlite:///{path}", "c")
    led.record_tasks("ls", 1, {"i0": "t-i0"})
    led.upsert_annotations([_pulled(1, "i0", "ann")], "ls", 1)
    led.dispose()
    with sqlite3.connect(path) as con:  # what an earlier labelloop created: no lead_time column, no migrations
        con.execute("ALTER TABLE annotations DROP COLUMN lead_time")
        con.execute("DROP TABLE alembic_version")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        assert "lead_time" not in {r[1] for r in con.execute("PRAGMA table_info(annotations)")}

    ro = Ledger(f"sqlite:///{path}", "c", create=False)  # export opens read-only: nothing altered
    assert ro.annotations_frame()["lead_time"].isna().all()
    ro.dispose()
    with sqlite3.connect(path) as con:
        assert "lead_time" not in {r[1] for r in con.execute("PRAGMA table_info(annotations)")}

    rw = Ledger(f"sqlite:///{path}", "c")
    rw.upsert_annotations([_pulled(1, "i0", "ann", lead=7.0)], "ls", 2)
    frame = rw.annotations_frame()
    assert len(frame) == 1 and frame.loc[0, "lead_time"] == 7.0 and frame.loc[0, "label"] == "a"
    Ledger(f"sqlite:///{path}", "c").dispose()  # opening again (column present) is a no-op


# --------------------------------------------------------------------------- cost


def _answers():
    rows = [  # (annotator, item, status, lead_time, pulled_in_round)
        ("ann-1", "a", "submitted", 10.0, 1), ("ann-2", "a", "submitted", 30.0, 1),
        ("ann-1", "b", "submitted", 20.0, 1), ("ann-2", "b", "skipped", 6.0, 1),
        ("ann-1", "c", "submitted", 40.0, 2), ("ann-2", "c", "submitted", None, 2),
        ("ann-3", "d", "submitted", 8.0, 2),
    ]
    return pd.DataFrame(rows, columns=["annotator", "item_id", "status", "lead_time", "pulled_in_round"])


def test_effort_counts_skips_as_time_but_not_as_labels():
    e = effort(_answers().query("pulled_in_round == 1"))
    assert e["annotation_seconds"] == 66.0 and e["annotation_labels"] == 3
    assert e["annotation_seconds_per_label"] == pytest.approx(22.0)
    assert e["annotation_hours"] == pytest.approx(66 / 3600)
    none = effort(_answers().assign(lead_time=None))
    assert np.isnan(none["annotation_hours"]) and none["annotation_timed"] == 0


def test_hours_per_accuracy_point_charges_hours_after_the_first_evaluated_round():
    ann = _answers()  # round 1: 66 s, round 2: 48 s more
    assert hours_per_accuracy_point(ann, [(1, 0.60), (2, 0.70)]) == pytest.approx((48 / 3600) / 10)
    assert hours_per_accuracy_point(ann, [(1, 0.70), (2, 0.60)]) is None, "no gain, no price"
    assert hours_per_accuracy_point(ann, [(2, 0.7)]) is None


def test_annotator_table_and_metrics():
    quality = pd.DataFrame({"annotator": ["ann-1", "ann-2", "ann-3"], "consensus_accuracy": [0.9, 0.5, None],
                            "n_consensus": [3, 2, 0], "gold_accuracy": [1.0, None, None], "n_gold": [2, 0, 0]})
    t = annotator_table(_answers(), 2, quality)
    assert t.loc["ann-1", "answers"] == 3 and t.loc["ann-2", "answers"] == 3 and t.loc["ann-2", "labels"] == 2
    assert t.loc["ann-1", "median_seconds"] == 20.0
    assert t.loc["ann-1", "round_seconds_per_label"] == 40.0
    assert np.isnan(t.loc["ann-2", "round_seconds_per_label"]), "no timed answer this round"
    assert t.loc["ann-1", "consensus_agreement"] == 0.9 and t.loc["ann-1", "gold_accuracy"] == 1.0
    m = annotator_metrics(t, metric_name)
    assert m["annotator_answers_ann-1"] == 3 and m["annotator_median_seconds_ann-3"] == 8.0
    assert m["annotator_consensus_agreement_ann-2"] == 0.5 and "annotator_gold_accuracy_ann-2" not in m
    assert all(v == v for v in m.values())


# --------------------------------------------------------------------------- order


def test_batch_order_mixes_hard_items_between_easier_ones():
    conf = {f"i{k}": k / 10 for k in range(10)}  # i0 hardest ... i9 easiest
    out = order_for_people(list(conf), conf)
    assert sorted(out) == sorted(conf), "same items, only the order changes"
    hard = {"i0", "i1", "i2"}  # 10 // 3 hardest
    assert out[0] not in hard, "the batch starts with an easier item"
    assert not any(a in hard and b in hard for a, b in zip(out, out[1:])), "never two hard items in a row"
    assert [i for i in out if i in hard] == ["i0", "i1", "i2"], "hard ones hardest first"
    assert order_for_people(list(conf), conf) == out, "deterministic"
    cold = order_for_people(["b", "a", "c", "d"], {})  # no model: median difficulty for all, id order
    assert sorted(cold) == ["a", "b", "c", "d"]
    with pytest.raises(ValueError):
        order_for_people(["a"], {}, easy_per_hard=0)


# --------------------------------------------------------------------------- simulated people


def test_simulated_users_get_distinct_readable_names():
    names = [person_name(f"ann-{k}") for k in range(1, 11)]
    initials = {f[0] + last[0] for f, last in names}
    assert len(initials) == 10, names
    assert all(f.isalpha() and last.isalpha() for f, last in names)
    assert person_name("ann-1@labelloop.local") == person_name("ann-1")
    assert person_name("ann-1") != person_name("ann-2")


def test_simulated_lead_time_is_stable_and_plausible():
    t = simulated_lead_time("item-1", "ann-1", 0)
    assert t == simulated_lead_time("item-1", "ann-1", 0) and 2.0 <= t <= 20.0
