"""The whole loop through real Prefect flows, a real Prefect API and a real MLflow SQLite store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from labelloop.flows.runtime import open_campaign
from tests.conftest import run_cli, write_small_campaign

pytestmark = pytest.mark.integration

REQUIRED_METRICS = {"test_macro_f1", "test_accuracy", "calibration_ece", "n_labels"}


def _children(client: MlflowClient, c) -> tuple[str, list]:
    exp = client.get_experiment_by_name(c.cfg.experiment_name)
    parents = client.search_runs([exp.experiment_id], "tags.`labelloop.kind` = 'campaign'")
    assert len(parents) == 1, "exactly one parent run per campaign"
    pid = parents[0].info.run_id
    kids = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{pid}'")
    return pid, kids


def test_three_round_campaign_through_prefect_and_mlflow(prefect_api, tmp_path: Path):
    from labelloop.flows.campaign import campaign_flow

    cfg = write_small_campaign(tmp_path, budget=200)
    cfg.write_text(cfg.read_text().replace("[budget]\n", "[budget]\ncost_per_label = 0.25\n"))
    campaign_flow(str(cfg), max_rounds=3)

    c = open_campaign(cfg)
    assert c.cfg.budget.cost_per_label == 0.25
    client = MlflowClient(tracking_uri=c.cfg.tracking_uri)
    pid, kids = _children(client, c)
    by_arm: dict[str, list] = {}
    for r in kids:
        by_arm.setdefault(r.data.tags["labelloop.arm"], []).append(r)
    assert set(by_arm) == {"active", "random"}
    for arm, runs in by_arm.items():
        assert len(runs) == 3, f"{arm}: one nested run per round"
        runs.sort(key=lambda r: int(r.data.tags["labelloop.round"]))
        for r in runs:
            assert REQUIRED_METRICS <= set(r.data.metrics), (arm, set(r.data.metrics))
            assert 0.0 <= r.data.metrics["test_macro_f1"] <= 1.0
            assert r.info.status == "FINISHED"
            health_tags = {k for k in r.data.tags if k.startswith("labelloop.health.")}
            assert {"labelloop.health.per_class_recall", "labelloop.health.calibration_ece"} <= health_tags
            assert r.data.tags["labelloop.health.per_class_recall"] != "skipped", "the round sees its recalls"
            assert r.data.tags["labelloop.calibration_gate"] in ("passed", "failed: diversity+random fallback")
            arts = {a.path for a in client.list_artifacts(r.info.run_id, "plots")}
            assert {"plots/confusion_matrix.png", "plots/reliability_diagram.png"} <= arts
        labels = [r.data.metrics["n_labels"] for r in runs]
        assert labels == [25, 50, 75], f"{arm}: seed 25 then +25 per round, got {labels}"
        # Price of an accuracy point since the first round, recomputed from the runs' own metrics.
        m0 = runs[0].data.metrics
        for r in runs[1:]:
            m = r.data.metrics
            gain = 100 * (m["test_accuracy"] - m0["test_accuracy"])
            if gain > 0:
                assert m["labels_per_accuracy_point"] == pytest.approx((m["n_labels"] - m0["n_labels"]) / gain)
                assert m["cost_per_accuracy_point"] == pytest.approx(
                    0.25 * (m["labels_spent"] - m0["labels_spent"]) / gain)
            else:
                assert "cost_per_accuracy_point" not in m, "no gain, no price"
        assert "cost_per_accuracy_point" not in m0, "the first round has nothing to price yet"
        assert any("cost_per_accuracy_point" in r.data.metrics for r in runs), f"{arm}: never priced"
        # Metrics are stepped by label count, so MLflow draws learning curves.
        hist = client.get_metric_history(runs[-1].info.run_id, "test_macro_f1")
        assert [m.step for m in hist] == [75]
    assert "plots/learning_curve.png" in {a.path for a in client.list_artifacts(pid, "plots")}

    # Ledger: every queried item traced to a task, no item twice per arm, annotations from 3 annotators.
    q = c.ledger.queries_frame()
    assert not q.duplicated(["arm", "item_id"]).any()
    assert q.groupby("arm").size().to_dict() == {"active": 100, "random": 100}  # seed 25 + 3 batches of 25
    tasks = c.ledger.tasks_frame()
    assert set(q["item_id"]) == set(tasks["item_id"])
    assert tasks["item_id"].is_unique
    ann = c.ledger.annotations_frame()
    labelled_items = set(q[q["round_no"] < 3]["item_id"])
    assert set(ann["item_id"]) >= labelled_items
    assert (ann.groupby("item_id")["annotator"].nunique() == 3).all()
    split = c.ledger.items_frame().set_index("item_id")["split"]
    assert set(split[q["item_id"]].unique()) <= {"pool", "seed"}, "test/calibration items are never queried"


def test_bad_input_gives_clear_error_and_leaves_ledger_untouched(tmp_path: Path):
    cfg = write_small_campaign(tmp_path)
    pool = tmp_path / "data" / "pool.csv"
    df = pd.read_csv(pool)
    df.loc[5, "id"] = df.loc[4, "id"]  # duplicate id
    df.loc[7, "text"] = "   "  # whitespace-only text
    df.to_csv(pool, index=False)
    res = run_cli("setup", str(cfg), env={"PREFECT_API_URL": ""}, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    err = res.stderr
    assert "Traceback" not in err
    assert str(df.loc[4, "id"]) in err, err
    assert str(df.loc[7, "id"]) in err, err
    assert "unique" in err.lower() and "pool.csv" in err
    c = open_campaign(cfg)
    assert c.ledger.n_items() == 0
    assert c.ledger.get_meta("setup_done") is None


def test_round_killed_after_query_before_push_resumes_without_duplicates(prefect_api, tmp_path: Path):
    cfg = write_small_campaign(tmp_path, budget=200)
    env = {"PREFECT_API_URL": prefect_api}
    first = run_cli("round", str(cfg), env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    c = open_campaign(cfg)
    ann_before = c.ledger.annotations_frame()
    assert len(ann_before) == 25 * 3  # the seed, 3 annotators each
    tasks_before = c.ledger.tasks_frame()

    killed = run_cli("round", str(cfg), env={**env, "LABELLOOP_KILL_AT": "after-query"})
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    q_killed = c.ledger.queries_frame(round_no=2)
    assert len(q_killed) == 25, "the killed round had recorded its first arm's batch"
    assert len(c.ledger.tasks_frame()) == len(tasks_before), "nothing was pushed before the kill"

    again = run_cli("round", str(cfg), env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    q2 = c.ledger.queries_frame(round_no=2)
    assert q2.groupby("arm").size().to_dict() == {"active": 25, "random": 25}
    # The active arm's batch is the one recorded before the kill, not a re-draw.
    assert set(q2[q2["arm"] == "active"]["item_id"]) == set(q_killed["item_id"])
    tasks = c.ledger.tasks_frame()
    assert tasks["item_id"].is_unique and set(q2["item_id"]) <= set(tasks["item_id"])
    ann_after = c.ledger.annotations_frame()
    assert set(ann_before["backend_annotation_id"]) <= set(ann_after["backend_annotation_id"]), "no annotation lost"
    assert ann_after["backend_annotation_id"].is_unique
    rounds = {(r.arm, r.round_no): r.status for r in c.ledger.list_rounds()}
    assert rounds[("active", 2)] == "done" and rounds[("random", 2)] == "done"


def test_campaign_stops_when_the_target_is_reached(prefect_api, tmp_path: Path):
    from labelloop.flows.campaign import campaign_flow

    cfg = write_small_campaign(tmp_path, budget=200)
    text = cfg.read_text().replace("max_labels = 200", "max_labels = 200\ntarget_macro_f1 = 0.05")
    cfg.write_text(text)
    campaign_flow(str(cfg))
    c = open_campaign(cfg)
    rounds = c.ledger.list_rounds()
    assert {(r.arm, r.round_no, r.status) for r in rounds} == {("active", 1, "stopped"), ("random", 1, "stopped")}
    assert any("target" in n for n in rounds[0].notes), rounds[0].notes
    assert c.ledger.queries_frame(round_no=1).empty, "a stopped arm queries nothing"


def test_keyword_seed_through_setup(prefect_api, tmp_path: Path):
    """`seed_method = "keywords"`: the seed batch is chosen by the config's rules (labels take
    turns), pushed like any seed, and setup says how many seed items each rule matched."""
    import re

    cfg = write_small_campaign(tmp_path, n=500, budget=100, seed_size=10)
    cfg.write_text(cfg.read_text().replace("seed_size = 10\n", """seed_size = 10
seed_method = "keywords"
[splits.keywords]
shipping = ["tracking number", "parcel", "delivery"]
technical = ["error", "crashes"]
"""))
    r = run_cli("setup", str(cfg), env={"PREFECT_API_URL": prefect_api})
    assert r.returncode == 0, r.stderr[-3000:]
    m = re.search(r"seed by keywords: shipping (\d+), technical (\d+), \(random top-up\) (\d+) of 10", r.stdout)
    assert m, (r.stdout[-2000:], r.stderr[-2000:])
    c = open_campaign(cfg)
    q = c.ledger.queries_frame(arm="active", round_no=0)
    assert len(q) == 10 and set(q["strategy"]) == {"seed-keywords"}
    items = c.ledger.items_frame().set_index("item_id")
    seed_text = items.loc[q["item_id"], "text"].str.lower()
    shipping = seed_text.str.contains(r"\b(?:tracking number|parcel|delivery)\b")
    technical = seed_text.str.contains(r"\b(?:error|crashes)\b")
    assert (shipping | technical).sum() == 10, "the demo pool has enough matches: no random top-up"
    assert (int(m.group(1)), int(m.group(2)), int(m.group(3))) == (5, 5, 0), "labels take turns, no top-up"
    assert shipping.sum() >= 5 and technical.sum() >= 5
    assert set(items.loc[q["item_id"], "split"]) == {"seed"}
    c.ledger.dispose()


def test_random_ahead_guard_raises_the_next_batch_random_share(prefect_api, tmp_path: Path, capsys):
    """When last round's random_ahead check fired, the active batch draws `random_ahead_share` of its
    items at random (said in the round's notes and logged as `query_random_share`); once the
    check is clear again the share is back to `random_share`."""
    from labelloop.flows.campaign import campaign_flow

    # the calibration gate is opened wide: its fallback (half the batch random) would blur the count
    cfg = write_small_campaign(tmp_path, budget=200, extra="[gates]\ncalibration_ece = 1.0")
    cfg.write_text(cfg.read_text().replace("batch_size = 25\n", "batch_size = 25\nrandom_ahead_share = 0.4\n"))
    c = open_campaign(cfg)
    assert c.cfg.query.random_ahead_share == 0.4

    def random_picks(round_no: int) -> int:
        q = c.ledger.queries_frame(arm="active", round_no=round_no)
        assert len(q) == 25
        return int((q["reason"] == "random").sum())

    def force_random_ahead(round_no: int, fired: bool) -> None:
        rec = c.ledger.get_round("active", round_no)
        c.ledger.update_round("active", round_no, metrics={**rec.metrics, "health_random_ahead_fired": float(fired)})

    campaign_flow(str(cfg), max_rounds=1)
    assert random_picks(1) == round(25 * 0.10)  # the configured share
    assert c.ledger.get_round("active", 1).metrics["query_random_share"] == pytest.approx(0.10)

    force_random_ahead(1, True)  # as if the random arm had been ahead at round 1's latest points
    from labelloop.flows.status import print_status

    capsys.readouterr()
    print_status(str(cfg))  # `labelloop status` announces the raised share before the round runs
    assert "round 2: random-ahead guard: the random arm was ahead in round 1; random share 0.40" in \
        capsys.readouterr().out
    campaign_flow(str(cfg), max_rounds=1)
    assert random_picks(2) == round(25 * 0.4)
    r2 = c.ledger.get_round("active", 2)
    assert r2.metrics["query_random_share"] == pytest.approx(0.4)
    assert any("random-ahead guard" in n and "round 1" in n for n in r2.notes), r2.notes
    assert random_picks(2) > random_picks(1)
    q2 = c.ledger.queries_frame(arm="random", round_no=2)
    assert len(q2) == 25 and set(q2["reason"]) == {"random"}, "the random arm is untouched"

    force_random_ahead(2, False)
    campaign_flow(str(cfg), max_rounds=1)
    assert random_picks(3) == round(25 * 0.10)
    r3 = c.ledger.get_round("active", 3)
    assert r3.metrics["query_random_share"] == pytest.approx(0.10)
    assert not any("random-ahead guard" in n for n in r3.notes), r3.notes
    client = MlflowClient(tracking_uri=c.cfg.tracking_uri)
    run = client.get_run(r2.mlflow_run_id)
    assert run.data.metrics["query_random_share"] == pytest.approx(0.4)


def test_calibration_gate_fallback_is_said_on_the_cli_and_tagged(prefect_api, tmp_path: Path):
    """A gate no model can pass (ECE <= 0.001): the active batch is drawn by diversity + random
    selection, the round's CLI output says why, and the MLflow run carries the gate tag."""
    cfg = write_small_campaign(tmp_path, budget=200, extra="[gates]\ncalibration_ece = 0.001")
    r = run_cli("round", str(cfg), env={"PREFECT_API_URL": prefect_api})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "active: calibration gate: ECE after calibration" in r.stdout, r.stdout[-2000:]
    assert "this batch uses diversity + random selection" in r.stdout
    # said once, by the arm it concerns: not again as a health note, never for the random arm's random batch
    assert r.stdout.count("diversity + random") == 1 and "random: health: calibration_ece" not in r.stdout, r.stdout
    c = open_campaign(cfg)
    q = c.ledger.queries_frame(arm="active", round_no=1)
    assert len(q) == 25 and set(q["strategy"]) == {"diversity-random"}
    assert set(c.ledger.queries_frame(arm="random", round_no=1)["strategy"]) == {"random"}
    run = MlflowClient(tracking_uri=c.cfg.tracking_uri).get_run(c.ledger.get_round("active", 1).mlflow_run_id)
    assert run.data.tags["labelloop.calibration_gate"] == "failed: diversity+random fallback"
    assert "calibration gate" in run.data.tags["labelloop.notes"]
