"""kill -9 the round process at every stage boundary and inside push, pull and logging; then `labelloop doctor`.

Real processes (the `labelloop` CLI in a subprocess), a real Label Studio, a real
Prefect API and MLflow store. A kill point is a named ``integrations.faults.checkpoint``;
``LABELLOOP_KILL_AT=<name>`` makes the process SIGKILL itself there.

To keep CI short, one small campaign (500 texts, batch 10, 3 annotators) is
reused: round 1 is killed four times at successively later points, round 2 four
more times, and each round is then completed by a plain re-run. After every kill:
no item has two Label Studio tasks, no annotation the ledger holds is missing from
(or different in) Label Studio, every ledger task exists there. After every
completed round: additionally ``labelloop doctor`` finds nothing and, after a
pull, ledger == Label Studio. A second test desynchronises the ledger, Label
Studio and MLflow on purpose and has ``labelloop doctor --repair`` put it right.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import delete

from labelloop.flows.locking import lock_holder
from labelloop.flows.runtime import open_campaign
from tests.conftest import ROOT, write_label_studio_campaign

pytestmark = [pytest.mark.integration, pytest.mark.label_studio]

# Small pages and import chunks so that "during pull pagination" and "between import chunks" exist.
PAGE_SIZE, IMPORT_CHUNK = 7, 4
_CLI = ("import sys, labelloop.integrations.label_studio as ls\n"
        "d = ls.LabelStudioBackend.__init__.__kwdefaults__\n"
        f"d['page_size'] = {PAGE_SIZE}; d['import_chunk'] = {IMPORT_CHUNK}\n"
        "from labelloop.flows.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")

ROUND_1_KILLS = ["during-pull-page", "after-pull", "after-query", "during-import"]
ROUND_2_KILLS = ["after-import-before-ledger", "after-push", "during-log", "after-log"]


def ls_campaign(tmp: Path, url: str, name: str) -> Path:
    return write_label_studio_campaign(tmp, url, name=name, n=500, budget=100, batch=10, seed_size=10)

def cli(*args: str, env: dict, timeout: float = 400) -> subprocess.CompletedProcess:
    """The real `labelloop` entry point in its own process, with small LS pages / import chunks."""
    return subprocess.run([sys.executable, "-c", _CLI, *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=timeout, cwd=ROOT)


def ls_tasks(c) -> list:
    from labelloop.flows.doctor import _LabelStudioView

    return _LabelStudioView(c.backend).tasks()


def assert_nothing_lost_or_duplicated(c, when: str) -> None:
    tasks = ls_tasks(c)
    per_item = pd.Series([t.item_id for t in tasks]).value_counts()
    assert (per_item <= 1).all(), f"{when}: duplicate Label Studio tasks for {per_item[per_item > 1].index[:5].tolist()}"
    ls_ids = {t.item_id: t.task_id for t in tasks}
    ledger = c.ledger.task_ids()
    wrong = {i: t for i, t in ledger.items() if ls_ids.get(i) != str(t)}
    assert not wrong, f"{when}: ledger tasks not in Label Studio (or another id): {list(wrong.items())[:5]}"
    queried = set(c.ledger.queries_frame()["item_id"])
    assert set(ls_ids) <= queried, f"{when}: Label Studio has tasks for items no arm queried"
    theirs = {a.backend_annotation_id: (a.label, a.status) for a in c.backend.pull()}
    ours = c.ledger.annotations_frame()
    assert ours["backend_annotation_id"].is_unique, f"{when}: an annotation is in the ledger twice"
    lost = [(r.backend_annotation_id, r.label, r.status) for r in ours.itertuples()
            if theirs.get(r.backend_annotation_id) != (r.label, r.status)]
    assert not lost, f"{when}: ledger annotations that Label Studio does not hold (or holds differently): {lost[:5]}"


def assert_ledger_equals_label_studio(c) -> None:
    from labelloop.flows.stages import pull_annotations

    pull_annotations.fn(c, None)
    cols = ["backend_annotation_id", "item_id", "annotator", "label", "status"]
    ours = c.ledger.annotations_frame()[cols].astype(str).sort_values(cols[0]).reset_index(drop=True)
    theirs = pd.DataFrame([a.__dict__ for a in c.backend.pull()])[cols].astype(str)
    pd.testing.assert_frame_equal(ours, theirs.sort_values(cols[0]).reset_index(drop=True))


def assert_doctor_consistent(c, when: str) -> None:
    from labelloop.flows.doctor import diagnose

    rep = diagnose(str(c.cfg.base_dir / "campaign.toml"))
    assert rep.consistent, f"{when}: doctor found drift:\n{rep.render()}"


@pytest.fixture(scope="module")
def campaign(prefect_api, label_studio, tmp_path_factory):
    """One Label Studio campaign, set up by a real `labelloop setup` process."""
    url, token = label_studio
    cfg = ls_campaign(tmp_path_factory.mktemp("faults"), url, "faults")
    env = {"PREFECT_API_URL": prefect_api, "LABEL_STUDIO_API_KEY": token}
    res = cli("setup", str(cfg), env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    old = os.environ.get("LABEL_STUDIO_API_KEY")
    os.environ["LABEL_STUDIO_API_KEY"] = token
    yield cfg, env
    if old is None:
        os.environ.pop("LABEL_STUDIO_API_KEY", None)
    else:
        os.environ["LABEL_STUDIO_API_KEY"] = old


def test_kill_nine_at_every_stage_then_rerun(campaign):
    cfg, env = campaign
    c = open_campaign(cfg)
    for round_no, kills in ((1, ROUND_1_KILLS), (2, ROUND_2_KILLS)):
        for point in kills:
            res = cli("round", str(cfg), env={**env, "LABELLOOP_KILL_AT": point})
            assert res.returncode == -9, f"kill at {point!r} did not happen ({res.returncode}): {res.stderr[-2000:]}"
            # the dead round's lease is still unexpired, but its process is gone: the next round goes ahead
            assert lock_holder(c) is None, f"killed at {point!r}: the dead holder still blocks the round lock"
            assert_nothing_lost_or_duplicated(c, f"round {round_no} killed at {point}")
        res = cli("round", str(cfg), env=env)
        assert res.returncode == 0, res.stderr[-3000:]
        statuses = {(r.arm, r.round_no): r.status for r in c.ledger.list_rounds()}
        assert statuses[("active", round_no)] == "done" and statuses[("random", round_no)] == "done", statuses
        assert_nothing_lost_or_duplicated(c, f"round {round_no} re-run")
        assert_doctor_consistent(c, f"round {round_no} re-run")

    # Every batch was recorded once per arm and reached Label Studio exactly once.
    q = c.ledger.queries_frame()
    assert q.groupby(["arm", "round_no"]).size().to_dict() == {
        ("active", 0): 10, ("active", 1): 10, ("active", 2): 10,
        ("random", 0): 10, ("random", 1): 10, ("random", 2): 10}
    assert set(c.ledger.task_ids()) == set(q["item_id"])
    # MLflow: one FINISHED run per round and arm, the ids the ledger remembers.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=c.cfg.tracking_uri)
    exp = client.get_experiment_by_name(c.cfg.experiment_name)
    runs = client.search_runs([exp.experiment_id], "tags.`labelloop.kind` = 'round'")
    assert sorted((r.data.tags["labelloop.arm"], r.data.tags["labelloop.round"]) for r in runs) == [
        ("active", "1"), ("active", "2"), ("random", "1"), ("random", "2")], "no orphan or duplicate round runs"
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.info.run_id for r in runs} == {r.mlflow_run_id for r in c.ledger.list_rounds()}
    assert_ledger_equals_label_studio(c)

    # The CLI agrees (and exits 0).
    res = cli("doctor", str(cfg), env=env)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    assert "consistent" in res.stdout


def test_doctor_finds_and_repairs_a_desynchronised_ledger(campaign):
    from mlflow.tracking import MlflowClient

    from labelloop.flows.stages import pull_annotations
    from labelloop.integrations.ledger.schema import annotations as ann_table
    from labelloop.integrations.ledger.schema import tasks_table

    cfg, env = campaign
    c = open_campaign(cfg)
    # a skip and an invalid answer (a label outside the set), given before a round pulls them, are not
    # drift: the skip is stored with no label, the invalid answer is rejected on purpose (the doctor
    # used to report both as lost or changed, for ever, and --repair could not clear them)
    from labelloop.integrations.label_studio import choices_result

    tid = int(sorted(c.ledger.task_ids().values(), key=int)[-1])
    c.backend.client.annotations.create(id=tid, result=[], was_cancelled=True)
    c.backend.client.annotations.create(id=tid, result=choices_result("not-a-label"))
    res = cli("round", str(cfg), env=env)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    pull_annotations.fn(c, None)
    assert_doctor_consistent(c, "before desynchronising")

    ann = c.ledger.annotations_frame()
    # Only answers created before the last round started count as "lost by a pull" (the doctor's rule:
    # later ones are new work the next round pulls), so the rows removed below are picked among those.
    last_round_start = max(pd.Timestamp(r.started_at) for r in c.ledger.list_rounds())
    last_round_start = last_round_start if last_round_start.tzinfo else last_round_start.tz_localize("UTC")
    created = pd.to_datetime(ann["created_at"])
    created = created.dt.tz_localize("UTC") if created.dt.tz is None else created
    ann = ann[created < last_round_start]
    annotated = sorted(set(ann["item_id"]))
    # 1. a task row lost from the ledger (its task and annotations are still in Label Studio)
    lost_item = annotated[0]
    lost_task = c.ledger.task_ids()[lost_item]
    # 2. an annotation row lost from the ledger
    lost_ann = ann[ann["item_id"] == annotated[1]]["backend_annotation_id"].iloc[0]
    with c.ledger.begin() as conn:
        conn.execute(delete(tasks_table).where((tasks_table.c.campaign == c.name) & (tasks_table.c.item_id == lost_item)))
        conn.execute(delete(ann_table).where((ann_table.c.campaign == c.name)
                                             & (ann_table.c.backend_annotation_id == lost_ann)))
    # 3. a second Label Studio task for an item that has one (imported by hand)
    dup_item = annotated[2]
    c.backend.client.projects.import_tasks(id=c.backend.project_id, request=[
        {"data": {"text": "duplicate", "item_id": dup_item}}], return_task_ids=True)
    # 4. a task deleted in Label Studio (the ledger still lists it)
    gone_item = annotated[3]
    gone_task = c.ledger.task_ids()[gone_item]
    c.backend.client.tasks.delete(gone_task)
    # 5. MLflow: one finished round's run failed, another's deleted
    rounds = [r for r in c.ledger.list_rounds() if r.status == "done"]
    client = MlflowClient(tracking_uri=c.cfg.tracking_uri)
    client.set_terminated(rounds[0].mlflow_run_id, status="FAILED")
    client.delete_run(rounds[1].mlflow_run_id)

    found = cli("doctor", str(cfg), env=env)
    assert found.returncode == 1, found.stdout + found.stderr[-2000:]
    for kind in ("task-not-in-ledger", "annotations-not-pulled", "duplicate-tasks", "missing-in-backend",
                 "round-run-not-finished"):
        assert kind in found.stdout, f"{kind} not reported:\n{found.stdout}"
    assert token_free(found, env)

    fixed = cli("doctor", str(cfg), "--repair", env=env)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr[-2000:]
    assert "REPAIRED" in fixed.stdout

    again = cli("doctor", str(cfg), env=env)
    assert again.returncode == 0, again.stdout + again.stderr[-2000:]
    assert "consistent" in again.stdout

    assert c.ledger.task_ids()[lost_item] == lost_task, "the lost task row was adopted with its Label Studio id"
    assert lost_ann in set(c.ledger.annotations_frame()["backend_annotation_id"]), "the lost annotation was pulled"
    per_item = pd.Series([t.item_id for t in ls_tasks(c)]).value_counts()
    assert per_item.get(dup_item) == 1, "the extra task (no annotations) was deleted"
    marked = c.ledger.tasks_frame().set_index("item_id").loc[gone_item, "missing_in_backend"]
    assert bool(marked), "the deleted task is marked missing_in_backend"
    for r in c.ledger.list_rounds():
        if r.status == "done":
            run = client.get_run(r.mlflow_run_id)
            assert run.info.status == "FINISHED" and run.info.lifecycle_stage == "active"
            assert "test_macro_f1" in run.data.metrics


def token_free(res: subprocess.CompletedProcess, env: dict) -> bool:
    token = env["LABEL_STUDIO_API_KEY"]
    return token not in res.stdout and token not in res.stderr
