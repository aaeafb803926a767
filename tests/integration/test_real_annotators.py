"""Real annotators (issue 12): rounds that wait for people, and defaults that never stall.

Everything here goes through the real CLI (``python -m labelloop.flows.cli``) against a real Prefect
API, MLflow store and, for the waiting test, a real Label Studio whose annotations arrive
through its API in part, then in full, as people's answers do.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import run_cli, write_label_studio_campaign

pytestmark = pytest.mark.integration


def _status(cfg: Path) -> dict:
    proc = run_cli("status", str(cfg), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_init_defaults_run_a_whole_campaign(tmp_path: Path, prefect_api: str) -> None:
    """`labelloop init` with only the data path and the labels changed runs to the budget."""
    from labelloop.tasks.demo_data import CLASSES, write_demo_files

    files = write_demo_files(tmp_path / "data", n=2200, seed=3)
    cfg = tmp_path / "campaign.toml"
    proc = run_cli("init", str(cfg), "--name", "defaults", "--labels", ",".join(CLASSES))
    assert proc.returncode == 0, proc.stderr
    text = cfg.read_text(encoding="utf-8")
    text = text.replace('path = "pool.csv"', f'path = "data/{files["pool"].name}"')
    cfg.write_text(text, encoding="utf-8")

    proc = run_cli("run", str(cfg), timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    st = _status(cfg)
    assert st["state"] == "done", st.get("waiting_for")
    rounds = st["rounds"]
    by_arm: dict[str, list[dict]] = {}
    for r in rounds:
        by_arm.setdefault(r["arm"], []).append(r)
    assert set(by_arm) == {"active", "random"}
    for arm, rs in by_arm.items():
        labels = [r["labels"] for r in rs]
        assert labels == sorted(labels) and labels[-1] >= 400, (arm, labels)  # trusted labels grow to the budget
        assert rs[-1]["status"] == "stopped" and "budget" in rs[-1]["warnings"], rs[-1]
        assert all(r["macro_f1"] is not None for r in rs), "every round trained"
    numbers = [r["round"] for r in rounds]
    assert sorted(set(numbers)) == list(range(1, max(numbers) + 1)), "no round number skipped or burnt"


@pytest.mark.label_studio
def test_a_round_waits_for_people_then_trains(tmp_path: Path, prefect_api: str, label_studio, monkeypatch) -> None:
    """Label Studio, nobody has answered: exit 3 and one line; part answered: still waiting with the
    count; the rest answered: the round trains."""
    from labelloop.flows.runtime import open_campaign
    from labelloop.integrations.label_studio_crowd import SimAnnotator, answer_open_tasks

    url, token = label_studio
    cfg = write_label_studio_campaign(tmp_path, url, name=f"wait-{tmp_path.name[-12:]}", n=700, budget=60,
                                      batch=20, seed_size=20)
    text = cfg.read_text(encoding="utf-8").replace("simulate_annotators = true", "simulate_annotators = false")
    text += "\n[run]\nbatch_ready_share = 1.0\n"
    cfg.write_text(text, encoding="utf-8")
    env = {"LABEL_STUDIO_API_KEY": token}
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", token)  # this process answers through the API too

    proc = run_cli("setup", str(cfg), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    proc = run_cli("round", str(cfg), env=env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    waiting = [ln for ln in lines if ln.startswith("waiting for annotations")]
    assert len(waiting) == 1, lines
    assert re.search(r"0 of 20 seed items answered 3 times.*0 trusted", waiting[0]), waiting[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    st = _status(cfg)
    assert st["state"] == "waiting" and st["waiting_for"].startswith("waiting for annotations")
    assert st["rounds"] == [], "a waiting round uses no round number"

    c = open_campaign(str(cfg))
    truth = {r.item_id: r.known_label for r in c.ledger.items_frame().itertuples()}
    seed = c.ledger.queries_frame(round_no=0)["item_id"].drop_duplicates().tolist()
    crowd = [SimAnnotator("ann-1", 0.95), SimAnnotator("ann-2", 0.9), SimAnnotator("ann-3", 0.85)]
    backend = c.backend
    half = {i: truth[i] for i in seed[:8]}  # answers arrive for part of the seed only
    assert answer_open_tasks(backend, half, crowd, overlap=3, seed=0) == 24

    proc = run_cli("round", str(cfg), env=env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert re.search(r"waiting for annotations: 8 of 20 seed items answered 3 times", proc.stdout), proc.stdout
    assert _status(cfg)["rounds"] == []

    answer_open_tasks(backend, {i: truth[i] for i in seed}, crowd, overlap=3, seed=0)  # the rest arrive
    proc = run_cli("round", str(cfg), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = _status(cfg)
    assert st["state"] == "ready" and st["waiting_for"] == ""
    r1 = [r for r in st["rounds"] if r["round"] == 1]
    assert {r["arm"] for r in r1} == {"active", "random"}
    assert all(r["labels"] >= 10 and r["macro_f1"] is not None for r in r1), r1

    # adaptive redundancy through Label Studio's own task overlap: unsure seed items (2-1 splits)
    # ask for a fourth answer, and the crowd's fourth member gets them
    c = open_campaign(str(cfg))
    targets, exhausted = c.ledger.trust.answer_targets()
    unsure = c.ledger.trust.trust_items_frame(round_no=1)
    unsure = set(unsure.loc[unsure["status"] == "needs_more", "item_id"])
    assert unsure and set(targets) == unsure and not exhausted, (targets, unsure)
    overlaps = c.backend.task_overlaps()
    assert {i: overlaps[i][1] for i in unsure} == {i: 4 for i in unsure}
    assert all(overlaps[i][1] == 3 for i in seed if i not in unsure)
    four = [*crowd, SimAnnotator("ann-4", 0.9)]
    assert answer_open_tasks(c.backend, {i: truth[i] for i in unsure}, four, overlap=3, seed=0) == len(unsure)

    # the next round waits for the batch round 1 pushed (the extra answers are not waited for)
    proc = run_cli("round", str(cfg), env=env)
    assert proc.returncode == 3 and "round-1 batch items" in proc.stdout, proc.stdout + proc.stderr
    st = _status(cfg)
    assert st["trust"]["rounds"]["2"]["metrics"]["n_needs_more"] < len(unsure), "the fourth answers settled items"
