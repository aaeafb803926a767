"""A whole campaign through a real Label Studio: 3 rounds, 3 annotators per item, kills and edits."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from labelloop.flows.runtime import open_campaign
from tests.conftest import run_cli, write_label_studio_campaign

pytestmark = [pytest.mark.integration, pytest.mark.label_studio]


def _ls_campaign(tmp_path: Path, url: str, name: str) -> Path:
    return write_label_studio_campaign(tmp_path, url, name=name, n=700, budget=60, batch=15, seed_size=15)

def _ledger_vs_label_studio(c) -> tuple[pd.DataFrame, pd.DataFrame]:
    cols = ["backend_annotation_id", "item_id", "annotator", "label", "status"]
    ours = c.ledger.annotations_frame()[cols].astype(str).sort_values(cols[0]).reset_index(drop=True)
    theirs = pd.DataFrame([a.__dict__ for a in c.backend.pull()])[cols].astype(str)
    return ours, theirs.sort_values(cols[0]).reset_index(drop=True)


def test_campaign_through_label_studio(prefect_api, label_studio, tmp_path: Path, monkeypatch):
    from labelloop.flows.campaign import campaign_flow
    from labelloop.flows.stages import pull_annotations, push_pending
    from labelloop.flows.trust import decide_trust

    url, token = label_studio
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", token)
    cfg = _ls_campaign(tmp_path, url, "campaign")
    campaign_flow(str(cfg), max_rounds=3)

    c = open_campaign(cfg)
    rounds = [r for r in c.ledger.list_rounds() if r.status == "done"]
    assert {(r.arm, r.round_no) for r in rounds} >= {(a, n) for a in ("active", "random") for n in (1, 2, 3)}
    assert rounds[-1].metrics["test_macro_f1"] > 0

    # The annotators' side (issue 17): Label Studio's own lead_time of every answer is in the ledger
    # (the simulated users submitted simulated_lead_time), and the round runs carry the time per label
    # and per annotator.
    from labelloop.tasks.annotate import simulated_lead_time

    ann = c.ledger.annotations_frame()
    sent = [simulated_lead_time(i, a.split("@")[0], c.cfg.annotation.simulated.seed)
            for i, a in zip(ann["item_id"], ann["annotator"])]
    assert ann["lead_time"].notna().all() and ann["lead_time"].tolist() == pytest.approx(sent)
    for r in rounds:
        m = c.tracker.client.get_run(r.mlflow_run_id).data.metrics
        q = c.ledger.queries_frame(arm=r.arm)
        asked = q.loc[q["round_no"] <= r.round_no, "item_id"]  # the arm's items as of that round
        mine = ann[(ann["pulled_in_round"] == r.round_no) & ann["item_id"].isin(asked)]
        if mine.empty:
            continue
        labels = (mine["status"] == "submitted").sum()
        assert m["annotation_seconds_per_label"] == pytest.approx(mine["lead_time"].sum() / labels)
        assert m["annotation_hours"] == pytest.approx(mine["lead_time"].sum() / 3600)
        so_far = ann[ann["pulled_in_round"] <= r.round_no]  # every item's answers pulled up to this round
        for who in ("ann-1", "ann-2", "ann-3"):
            key = f"annotator_median_seconds_{who}_labelloop.local"
            assert m[key] == pytest.approx(so_far.loc[so_far["annotator"] == f"{who}@labelloop.local",
                                                      "lead_time"].median())
            assert f"annotator_answers_{who}_labelloop.local" in m
            assert f"annotator_consensus_agreement_{who}_labelloop.local" in m
    last = c.tracker.client.get_run(rounds[-1].mlflow_run_id).data.metrics
    assert "labels_per_accuracy_point" not in last or "hours_per_accuracy_point" in last
    users = {u.email: u for u in c.backend.client.users.list()}
    names = {(users[f"ann-{k}@labelloop.local"].first_name, users[f"ann-{k}@labelloop.local"].last_name)
             for k in (1, 2, 3)}
    assert len({f[0] + la[0] for f, la in names}) == 3, f"readable, distinct initials: {names}"

    # Every queried item has exactly one Label Studio task, and the ledger knows them all.
    ls_tasks = c.backend.existing_tasks()
    assert set(ls_tasks) == set(c.ledger.task_ids())
    assert set(c.ledger.queries_frame()["item_id"]) == set(ls_tasks)

    # A re-run of the push creates nothing new.
    n_before = len(ls_tasks)
    push_pending.fn(c, 3, {})
    assert len(c.backend.existing_tasks()) == n_before

    # Pull everything, then: ledger == Label Studio, count and content, 3 distinct annotators per item.
    pull_annotations.fn(c, 4)
    ours, theirs = _ledger_vs_label_studio(c)
    assert len(ours) == len(theirs) > 0
    pd.testing.assert_frame_equal(ours, theirs)
    per_item = c.ledger.annotations_frame(submitted_only=True).groupby("item_id")["annotator"].nunique()
    assert (per_item == 3).all()

    # An annotation edited in Label Studio after a pull is updated on the next pull (same id).
    from labelloop.integrations.label_studio import choices_result

    ann = c.ledger.annotations_frame(submitted_only=True).iloc[0]
    new_label = next(lbl for lbl in c.labels if lbl != ann["label"])
    c.backend.client.annotations.update(int(ann["backend_annotation_id"]), result=choices_result(new_label))
    counts = pull_annotations.fn(c, 5)
    assert counts["updated"] == 1 and counts["inserted"] == 0
    row = c.ledger.annotations_frame().set_index("backend_annotation_id").loc[ann["backend_annotation_id"]]
    assert row["label"] == new_label

    # A skipped (cancelled) annotation is recorded as such and never becomes a training label.
    task_id = int(ls_tasks[sorted(ls_tasks)[0]])
    c.backend.client.annotations.create(id=task_id, result=[], was_cancelled=True)
    pull_annotations.fn(c, 6)
    skipped = c.ledger.annotations_frame().query("status == 'skipped'")
    assert len(skipped) == 1 and skipped["label"].isna().all()
    trusted = decide_trust(c, 6).consensus
    item = skipped["item_id"].iloc[0]
    if item in trusted.index:
        assert trusted.loc[item, "n_annotations"] == 3, "the skip is not counted as an answer"


def test_kill_between_import_and_ledger_commit_leaves_one_task_per_item(prefect_api, label_studio, tmp_path: Path):
    url, token = label_studio
    cfg = _ls_campaign(tmp_path, url, "killpush")
    env = {"PREFECT_API_URL": prefect_api, "LABEL_STUDIO_API_KEY": token}
    killed = run_cli("setup", str(cfg), env={**env, "LABELLOOP_KILL_AT": "after-import-before-ledger"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    import os

    os.environ["LABEL_STUDIO_API_KEY"] = token
    try:
        c = open_campaign(cfg)
        assert len(c.ledger.task_ids()) == 0 and len(c.backend.existing_tasks()) == 15, \
            "the seed reached Label Studio but not the ledger"
        again = run_cli("round", str(cfg), env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        ls_tasks = c.backend.existing_tasks()
        ledger_tasks = c.ledger.task_ids()
        assert ledger_tasks == {k: str(v) for k, v in ls_tasks.items()}
        assert len(ls_tasks) == len(set(c.ledger.queries_frame()["item_id"])), "one task per queried item"
    finally:
        os.environ.pop("LABEL_STUDIO_API_KEY", None)


def test_a_second_campaign_with_the_same_name_does_not_adopt_the_first_ones_project(prefect_api, label_studio,
                                                                                     tmp_path: Path):
    """A copied config (same `name`, so the same Label Studio project): the first campaign's seed tasks
    would become the copy's seed, "pushed" though nothing was, with answers nobody gave it. Set-up
    refuses before writing anything; the first campaign is left as it was."""
    import uuid

    url, token = label_studio
    env = {"PREFECT_API_URL": prefect_api, "LABEL_STUDIO_API_KEY": token}
    name = f"twin-{uuid.uuid4().hex[:6]}"
    first = write_label_studio_campaign(tmp_path / "first", url, name=name, n=400, budget=20, batch=10, seed_size=10)
    proc = run_cli("setup", str(first), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    copy = write_label_studio_campaign(tmp_path / "copy", url, name=name, n=400, budget=20, batch=10, seed_size=10)
    proc = run_cli("setup", str(copy), env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "already holds" in proc.stderr and "another `name`" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "copy" / "ledger.db").exists() and not (tmp_path / "copy" / ".labelloop-setup.json").exists()
    again = run_cli("setup", str(first), env=env)  # the owner's set-up is not affected
    assert again.returncode == 0, again.stdout + again.stderr
