"""Any label a user can type works end to end (issue 13).

A campaign whose labels are ``a/b``, ``R&D <x>``, ``café ☕``, ``../x``, ``a;b`` and one
200-character label runs two rounds with the simulated backend and a real MLflow
*server* (which checks metric names: ``../x`` used to fail every round at
``test_recall_../x``). The exact labels must survive in the ledger, in MLflow (the
``labels`` param, and ``metric_names.json`` mapping each safe metric name back to the
exact one) and, once ``labelloop export`` is merged, in the export.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import free_port, run_cli, start_mlflow_server, stop_group

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

LONG = ("long-label-" * 20)[:200]
LABELS = ["a/b", "R&D <x>", "café ☕", "../x", "a;b", LONG]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """One real `mlflow server` for this module (no session-scoped one exists in tests/conftest.py)."""
    port = free_port()
    proc = start_mlflow_server(tmp_path_factory.mktemp("mlflow-any-label"), port)
    yield f"http://127.0.0.1:{port}"
    stop_group(proc)


def _campaign(folder: Path, tracking_uri: str) -> Path:
    from labelloop.tasks.demo_data import CLASSES, write_demo_files

    pool = pd.read_csv(write_demo_files(folder / "data", n=600, seed=1)["pool"], dtype=str, keep_default_na=False)
    mapping = dict(zip(CLASSES, LABELS))
    pool["label"] = [LABELS[5] if lab == CLASSES[-1] and i % 2 else mapping[lab]
                     for i, lab in enumerate(pool["label"])]
    pool.to_csv(folder / "data" / "pool.csv", index=False)
    cfg = folder / "campaign.toml"
    cfg.write_text(f'''
name = "any-label"
[data]
path = "data/pool.csv"
[labels]
names = [{", ".join(json.dumps(x, ensure_ascii=False) for x in LABELS)}]
[splits]
test_size = 120
calibration_size = 60
seed_size = 24
[query]
batch_size = 24
[budget]
max_labels = 96
[annotation]
backend = "simulated"
overlap = 3
[annotation.simulated]   # perfect annotators: this test is about names, not about trust
annotators = [{{ name = "ann-1", accuracy = 1.0 }}, {{ name = "ann-2", accuracy = 1.0 }}, {{ name = "ann-3", accuracy = 1.0 }}]
[mlflow]
tracking_uri = "{tracking_uri}"
''', encoding="utf-8")
    return cfg


def assert_export_gives_back_labels(cfg: Path, out: Path) -> None:
    """`labelloop export CONFIG --out FILE --format jsonl --all` gives back every exact label, unmangled."""
    res = run_cli("export", str(cfg), "--out", str(out), "--format", "jsonl", "--all", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]
    exported = {r["label"] for r in rows if r["label"] is not None}
    assert exported == set(LABELS), (exported ^ set(LABELS))


def test_awkward_labels_survive_two_rounds_ledger_and_mlflow_server(prefect_api, mlflow_server, tmp_path: Path):
    from labelloop.integrations.tracking import METRIC_NAMES_ARTIFACT, safe_metric_name

    cfg = _campaign(tmp_path, mlflow_server)
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    res = run_cli("setup", str(cfg), env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_cli("run", str(cfg), "--rounds", "2", env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stdout + res.stderr

    from labelloop.flows.runtime import open_campaign

    c = open_campaign(cfg)
    try:
        done = [r for r in c.ledger.list_rounds() if r.status == "done"]
        assert {(r.arm, r.round_no) for r in done} >= {("active", 1), ("active", 2), ("random", 1), ("random", 2)}
        items = c.ledger.items_frame()
        assert set(items["known_label"].dropna()) == set(LABELS), "the ledger keeps each label exactly"
        answers = set(c.ledger.annotations_frame()["label"].dropna())
        assert answers and answers <= set(LABELS)
        # the ledger's metrics keep the exact names (health checks read them back per class)
        r2 = next(r for r in done if r.arm == "active" and r.round_no == 2)
        assert r2.n_labels and "test_macro_f1" in r2.metrics, r2.notes  # a model was trained and evaluated
        assert {f"test_recall_{lab}" for lab in LABELS} <= set(r2.metrics)
        run_id = r2.mlflow_run_id
    finally:
        c.ledger.dispose()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(run_id)
    for lab in LABELS:
        assert safe_metric_name(f"test_recall_{lab}") in run.data.metrics, lab
    with open(client.download_artifacts(run_id, METRIC_NAMES_ARTIFACT, str(tmp_path)), encoding="utf-8") as fh:
        names = json.load(fh)
    renamed = {lab for lab in LABELS if safe_metric_name(f"test_recall_{lab}") != f"test_recall_{lab}"}
    assert renamed == set(LABELS[:5]), "all but the long plain label need a safe stand-in"
    assert {names[safe_metric_name(f"test_recall_{lab}")] for lab in renamed} == {f"test_recall_{lab}"
                                                                                for lab in renamed}
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.params["labels"] == ",".join(LABELS)

    assert_export_gives_back_labels(cfg, tmp_path / "export.jsonl")


@pytest.mark.label_studio
def test_label_studio_keeps_each_exact_label(label_studio):
    """The same labels through a real Label Studio: project config, pre-annotation and the answers
    pulled back are the exact strings (200 characters, ``<``/``&``, emoji, ``../x`` included)."""
    import uuid

    from labelloop.integrations.backend import TaskRequest
    from labelloop.integrations.label_studio import LabelStudioBackend
    from labelloop.integrations.label_studio_crowd import SimAnnotator, answer_open_tasks

    url, token = label_studio
    b = LabelStudioBackend(url, token, f"test-any-label-{uuid.uuid4().hex[:8]}", LABELS, 1)
    try:
        assert b.project_labels() == LABELS
        b.push([TaskRequest(item_id=f"item-{i}", text=f"text {i}", predicted_label=lab, confidence=0.6,
                            model_version="run-1", is_gold=False) for i, lab in enumerate(LABELS)])
        truth = {f"item-{i}": lab for i, lab in enumerate(LABELS)}
        assert answer_open_tasks(b, truth, [SimAnnotator("annotator1", 1.0)], overlap=1, seed=0) == len(LABELS)
        assert {a.item_id: a.label for a in b.pull()} == truth
    finally:
        b.delete_project()
