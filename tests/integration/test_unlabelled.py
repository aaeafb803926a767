"""Start from unlabelled text (issue 14): people label the frozen test set and the calibration slice too.

A pool file with no label column; the labels exist only in a hidden truth file that the test turns
into people's answers, a few at a time: through the replay backend (a growing answers file) and
through a real Label Studio whose users answer via its API. Everything runs through the real CLI
against the session's Prefect API.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration

ANNOTATORS = (("ann-1", 0.95), ("ann-2", 0.9), ("ann-3", 0.85))


def _corpus(folder: Path, n: int) -> pd.Series:
    """Write ``pool.csv`` (id, text: no label column) and return the hidden truth (id -> label)."""
    from labelloop.tasks.demo_data import generate_demo_corpus

    corpus = generate_demo_corpus(n, seed=5)
    folder.mkdir(parents=True, exist_ok=True)
    corpus[["id", "text"]].to_csv(folder / "pool.csv", index=False)
    return corpus.set_index("id")["label"].astype(str)


def _config(folder: Path, name: str, annotation: str, *, test: int = 150, cal: int = 60, seed: int = 20,
            min_test: int = 40, min_cal: int = 30, batch: int = 20, budget: int = 60) -> Path:
    from labelloop.tasks.demo_data import CLASSES

    cfg = folder / "campaign.toml"
    cfg.write_text(f'''
name = "{name}"
[data]
path = "pool.csv"
[labels]
names = [{", ".join(f'"{c}"' for c in CLASSES)}]
[splits]
test_size = {test}
calibration_size = {cal}
seed_size = {seed}
min_test_labels = {min_test}
min_calibration_labels = {min_cal}
[query]
batch_size = {batch}
[budget]
max_labels = {budget}
evaluation_labels = {test + cal}
{annotation}
''', encoding="utf-8")
    return cfg


def _answers(truth: pd.Series, ids, k: int = 3) -> list[dict]:
    """What the first ``k`` simulated people answer on ``ids`` (deterministic, from the hidden truth)."""
    from labelloop.tasks.annotate import simulated_answer

    labels = sorted(set(truth))
    return [{"item_id": i, "annotator_id": name, "label": simulated_answer(i, name, acc, truth[i], labels, 0)}
            for i in ids for name, acc in ANNOTATORS[:k]]


def _splits(cfg: Path) -> dict[str, list[str]]:
    from labelloop.flows.runtime import open_campaign

    items = open_campaign(str(cfg)).ledger.items_frame()
    return {s: sorted(items.loc[items["split"] == s, "item_id"]) for s in ("seed", "test", "calibration", "pool")}


def _status(cfg: Path, env: dict | None = None) -> dict:
    proc = run_cli("status", str(cfg), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _by_round(st: dict) -> dict[int, dict[str, dict]]:
    out: dict[int, dict[str, dict]] = {}
    for r in st["rounds"]:
        out.setdefault(r["round"], {})[r["arm"]] = r
    return out


def test_unlabelled_text_through_replay(tmp_path: Path, prefect_api: str) -> None:
    truth = _corpus(tmp_path, 700)
    answers_file = tmp_path / "answers.csv"
    pd.DataFrame([{"item_id": "nobody-yet", "annotator_id": "ann-1", "label": "billing"}]).to_csv(answers_file,
                                                                                               index=False)
    cfg = _config(tmp_path, f"unl-replay-{tmp_path.name[-10:]}",
                  '[annotation]\nbackend = "replay"\noverlap = 3\n[annotation.replay]\npath = "answers.csv"',
                  seed=40, budget=80)

    proc = run_cli("setup", str(cfg))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "210 test/calibration items have no known label: pushed with the seed" in proc.stdout, proc.stdout
    assert "seed by kmeans" in proc.stdout, proc.stdout
    sp = _splits(cfg)
    assert (len(sp["seed"]), len(sp["test"]), len(sp["calibration"])) == (40, 150, 60)
    from labelloop.flows.runtime import open_campaign

    c = open_campaign(str(cfg))
    tasked = set(c.ledger.task_ids())
    assert set(sp["seed"]) | set(sp["test"]) | set(sp["calibration"]) == tasked, "seed + evaluation items pushed"
    assert len(json.loads((tmp_path / "replay_backend.json").read_text())["tasks"]) == len(tasked)
    q = c.ledger.queries_frame()
    assert set(q.loc[q["arm"] == "evaluation", "item_id"]) == set(sp["test"]) | set(sp["calibration"])
    assert not set(q.loc[q["arm"].isin(["active", "random"]), "item_id"]) & (set(sp["test"]) | set(sp["calibration"]))

    # People answered the seed and 10 test items: the first round waits (exit 3) for min_test_labels.
    pd.DataFrame(_answers(truth, sp["seed"] + sp["test"][:10])).to_csv(answers_file, index=False)
    proc = run_cli("round", str(cfg))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "10 of 40 test items answered" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    st = _status(cfg)
    assert st["state"] == "waiting" and "test items" in st["waiting_for"] and st["rounds"] == []

    # 30 test items fully answered, 15 with one answer only (they count as answered, cannot be trusted),
    # the pool answered, no calibration item yet: round 1 trains, below min_test_labels, gate not judged.
    rows = _answers(truth, sp["seed"] + sp["test"][:30] + sp["pool"]) + _answers(truth, sp["test"][30:45], k=1)
    pd.DataFrame(rows).to_csv(answers_file, index=False)
    proc = run_cli("round", str(cfg))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "below min_test_labels (40)" in out and "calibration gate not judged" in out, out
    r1 = _by_round(_status(cfg))[1]
    assert r1["active"]["test_n"] == r1["random"]["test_n"], "both arms measured on the same trusted test items"
    assert 0 < r1["active"]["test_n"] <= 30, r1["active"]
    assert f"test_n={r1['active']['test_n']}" in out

    # Everyone has answered everything: round 2 evaluates on (nearly) the whole test set, interval narrower.
    pd.DataFrame(_answers(truth, list(truth.index))).to_csv(answers_file, index=False)
    proc = run_cli("round", str(cfg))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = _status(cfg)
    by = _by_round(st)
    r2 = by[2]
    assert r2["active"]["test_n"] == r2["random"]["test_n"] >= 140, r2["active"]
    assert "below min_test_labels" not in r2["active"]["warnings"]
    for arm in ("active", "random"):
        lo1, hi1 = r1[arm]["macro_f1_ci"]
        lo2, hi2 = r2[arm]["macro_f1_ci"]
        assert lo1 <= r1[arm]["macro_f1"] <= hi1 and lo2 <= r2[arm]["macro_f1"] <= hi2
        assert hi2 - lo2 < hi1 - lo1, (arm, r1[arm]["macro_f1_ci"], r2[arm]["macro_f1_ci"])
    ev = st["evaluation"]
    assert ev["labelled_by_people"] == 210 and ev["budget"] == 210
    assert ev["trusted_test"] >= 140 and ev["trusted_calibration"] >= 55, ev
    # the arms' labels are their own: evaluation items never count toward them
    assert r2["active"]["labels"] <= 60 and r2["random"]["labels"] <= 60

    # MLflow: each round run carries test_n and the interval; the parent has the learning curve
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(f"labelloop-unl-replay-{tmp_path.name[-10:]}")
    runs = client.search_runs([exp.experiment_id])
    round_runs = [r for r in runs if "test_n" in r.data.metrics]
    assert len(round_runs) == 4
    for r in round_runs:
        m = r.data.metrics
        assert m["test_macro_f1_ci_low"] <= m["test_macro_f1"] <= m["test_macro_f1_ci_high"]
    parents = [r for r in runs if "test_n" not in r.data.metrics]
    assert any(a.path == "plots" for p in parents for a in client.list_artifacts(p.info.run_id))

    # the evaluation items pushed with the seed are not "held-out items an arm queried" for the doctor
    proc = run_cli("doctor", str(cfg))
    assert "held-out-item-queried" not in proc.stdout + proc.stderr, proc.stdout


@pytest.mark.label_studio
def test_unlabelled_text_through_label_studio(tmp_path: Path, prefect_api: str, label_studio, monkeypatch) -> None:
    """The same path against a real Label Studio: its users (the tests' simulated people) answer through
    its API, from the hidden truth, the seed first, then part of the test set, then the rest."""
    from labelloop.flows.runtime import open_campaign
    from labelloop.integrations.label_studio_crowd import SimAnnotator, answer_open_tasks

    url, token = label_studio
    truth = _corpus(tmp_path, 400)
    name = f"unl-ls-{tmp_path.name[-10:]}"
    cfg = _config(tmp_path, name, f'[annotation]\nbackend = "label_studio"\noverlap = 3\n'
                  f'[annotation.label_studio]\nurl = "{url}"\nproject_title = "labelloop test {name}"\n',
                  test=50, cal=25, seed=30, min_test=20, min_cal=20, batch=15, budget=60)
    env = {"LABEL_STUDIO_API_KEY": token}
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", token)  # this process answers through the API too

    proc = run_cli("setup", str(cfg), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sp = _splits(cfg)
    c = open_campaign(str(cfg))
    in_ls = set(c.backend.task_overlaps())
    assert in_ls == set(sp["seed"]) | set(sp["test"]) | set(sp["calibration"]), "one unmarked project, 105 tasks"
    crowd = [SimAnnotator(n, a) for n, a in ANNOTATORS]

    answer_open_tasks(c.backend, {i: truth[i] for i in sp["seed"] + sp["test"][:8]}, crowd, overlap=3, seed=0)
    proc = run_cli("round", str(cfg), env=env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "8 of 20 test items answered 3 times" in proc.stdout, proc.stdout
    assert _status(cfg, env)["rounds"] == []

    answer_open_tasks(c.backend, {i: truth[i] for i in sp["test"][:30]}, crowd, overlap=3, seed=0)
    proc = run_cli("round", str(cfg), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "calibration gate not judged" in proc.stdout, proc.stdout
    r1 = _by_round(_status(cfg, env))[1]
    assert r1["active"]["test_n"] == r1["random"]["test_n"] and 20 <= r1["active"]["test_n"] <= 30, r1

    # the rest of the evaluation items and round 1's batch are answered: test_n grows, the interval narrows
    c = open_campaign(str(cfg))
    answer_open_tasks(c.backend, dict(truth), crowd, overlap=3, seed=0)
    proc = run_cli("round", str(cfg), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r2 = _by_round(_status(cfg, env))[2]
    assert r2["active"]["test_n"] == r2["random"]["test_n"] > r1["active"]["test_n"], (r1, r2)
    a1, a2 = r1["active"]["macro_f1_ci"], r2["active"]["macro_f1_ci"]
    assert a2[1] - a2[0] < a1[1] - a1[0], (a1, a2)
