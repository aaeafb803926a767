"""The ledger's idempotency: re-running any step never duplicates rows or loses edits."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from sqlalchemy import update

from labelloop.integrations.backend import PulledAnnotation
from labelloop.integrations.ledger import Ledger, LedgerError, redact_url
from labelloop.integrations.ledger.schema import meta


@pytest.fixture
def ledger(tmp_path):
    return Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", "c1")


def _items(n=5):
    return pd.DataFrame({"id": [f"i{k}" for k in range(n)], "text": [f"text {k}" for k in range(n)],
                         "label": ["a", "b", None, "a", "b"][:n], "split": ["pool"] * n})


def _ann(aid, item, label, status="submitted", minutes=0):
    t = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=minutes)
    return PulledAnnotation(str(aid), "t1", item, "alice", label, status, t, t)


def test_add_items_twice_inserts_once(ledger):
    assert ledger.add_items(_items()) == 5
    assert ledger.add_items(_items()) == 0
    df = ledger.items_frame()
    assert len(df) == 5 and df["item_id"].is_unique
    assert pd.isna(df.set_index("item_id").loc["i2", "known_label"])


def test_queries_are_unique_per_arm_and_item(ledger):
    ledger.add_items(_items())
    picks = [{"item_id": "i0", "strategy": "margin", "reason": "strategy", "score": 0.9, "model_version": "m1"},
             {"item_id": "i1", "strategy": "margin", "reason": "random", "score": 0.1, "model_version": "m1"}]
    assert ledger.add_queries("active", 1, picks) == 2
    assert ledger.add_queries("active", 1, picks) == 0  # a re-run
    assert ledger.add_queries("active", 2, picks[:1]) == 0  # never the same item twice in one arm
    assert ledger.add_queries("random", 1, picks[:1]) == 1  # another arm may ask for it
    q = ledger.queries_frame()
    assert sorted(map(tuple, q[["arm", "item_id"]].values.tolist())) == [("active", "i0"), ("active", "i1"),
                                                                         ("random", "i0")]


def test_tasks_recorded_once_per_item(ledger):
    assert ledger.record_tasks("sim", 1, {"i0": "10", "i1": "11"}) == 2
    assert ledger.record_tasks("sim", 2, {"i0": "99"}) == 0
    assert ledger.task_ids() == {"i0": "10", "i1": "11"}


def test_annotations_upsert_by_backend_id_and_track_edits(ledger):
    ledger.record_tasks("sim", 1, {"i0": "t1"}, model_version="run-abc")
    first = [_ann(1, "i0", "a"), _ann(2, "i0", None, status="skipped")]
    assert ledger.upsert_annotations(first, "sim", 1) == {"inserted": 2, "updated": 0, "unchanged": 0}
    assert ledger.upsert_annotations(first, "sim", 2) == {"inserted": 0, "updated": 0, "unchanged": 2}
    edited = [_ann(1, "i0", "b", minutes=5), _ann(2, "i0", None, status="skipped")]
    assert ledger.upsert_annotations(edited, "sim", 3) == {"inserted": 0, "updated": 1, "unchanged": 1}
    df = ledger.annotations_frame()
    assert len(df) == 2
    row = df.set_index("backend_annotation_id").loc["1"]
    assert row["label"] == "b" and row["pulled_in_round"] == 1 and row["model_version"] == "run-abc"
    assert len(ledger.annotations_frame(submitted_only=True)) == 1


def test_rounds_resume_instead_of_duplicating(ledger):
    r1 = ledger.start_round("active", 1, "margin")
    ledger.update_round("active", 1, status="queried", metrics={"x": 1.0})
    r1b = ledger.start_round("active", 1, "margin")
    assert r1b.id == r1.id and r1b.status == "queried" and r1b.metrics == {"x": 1.0}
    ledger.update_round("active", 1, status="done")
    assert ledger.get_round("active", 1).finished_at is not None


def test_failed_batch_writes_nothing(ledger):
    bad = _items()
    bad.loc[3, "split"] = None  # NOT NULL violation in the middle of the batch
    with pytest.raises(Exception):
        ledger.add_items(bad)
    assert ledger.n_items() == 0


def test_newer_schema_version_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    lg = Ledger(url, "c1")
    with lg.engine.begin() as conn:
        conn.execute(update(meta).where(meta.c.key == "schema_version").values(value="99"))
    with pytest.raises(LedgerError, match="schema version 99"):
        Ledger(url, "c1")


def test_campaigns_share_a_database_without_mixing(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    a, b = Ledger(url, "a"), Ledger(url, "b")
    a.add_items(_items(3))
    assert a.n_items() == 3 and b.n_items() == 0
    a.set_meta("k", "1")
    assert b.get_meta("k") is None and a.get_meta("k") == "1"


def test_redact_url_hides_password():
    assert "s3cret" not in redact_url("postgresql+psycopg://bob:s3cret@db:5432/ll")
    assert "***" in redact_url("postgresql+psycopg://bob:s3cret@db:5432/ll")


def test_items_frame_cache_sees_writes_of_another_ledger_object_and_is_never_mutated_by_callers(tmp_path):
    """items_frame is cached per items version: a write through another connection (another process in
    practice: a stream ingest, a reopen) must show at once, and a caller's new column must not stick."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    reader, writer = Ledger(url, "c1"), Ledger(url, "c1")
    writer.add_items(_items(3))
    first = reader.items_frame()
    assert list(first["item_id"]) == ["i0", "i1", "i2"]
    first["extra"] = 1  # a caller adding a column
    assert "extra" not in reader.items_frame().columns
    writer.add_items(_items(5))  # two new items
    assert list(reader.items_frame()["item_id"]) == ["i0", "i1", "i2", "i3", "i4"]
    assert writer.move_items_to_split(["i4"], "gold") == 1
    assert list(reader.items_frame(splits=["gold"])["item_id"]) == ["i4"]
    assert list(reader.items_frame(splits=["pool"])["item_id"]) == ["i0", "i1", "i2", "i3"]
