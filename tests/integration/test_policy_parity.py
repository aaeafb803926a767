"""`labelloop simulate` and a campaign run one policy: the same items in every round (issue 15).

Why: simulate answers "will active learning pay off on *your* data?"; it is only worth asking
if it simulates the policy a campaign would run. Both go through tasks/policy.py and
tasks/query.select_round_batch, so with the same data, seed and policy (class quota and
near-duplicate threshold set, the calibration gate and the random-ahead guard on) and one
perfect annotator, the campaign's arms must query exactly the items simulate's arms query.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration

SIZES = {"test": 150, "calibration": 60, "seed": 25, "batch": 25, "budget": 125}
QUOTA, NEAR_DUP = 0.3, 0.9
ECE_GATE = 0.15  # on this data the gate passes in some rounds and fails in others: both paths are compared


def _data(folder: Path) -> Path:
    from labelloop.tasks.demo_data import write_demo_files

    pool = pd.read_csv(write_demo_files(folder, n=600, seed=1)["pool"])
    path = folder / "labelled.csv"
    pool.drop_duplicates("text").to_csv(path, index=False)  # simulate keeps one of identical texts
    return path


def _campaign(folder: Path, data: Path, labels: list[str], strategy: str = "margin") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "campaign.toml"
    cfg.write_text(f'''
name = "parity"
[data]
path = "{data}"
[labels]
names = [{", ".join(f'"{c}"' for c in labels)}]
[splits]
test_size = {SIZES["test"]}
calibration_size = {SIZES["calibration"]}
seed_size = {SIZES["seed"]}
[query]
strategy = "{strategy}"
batch_size = {SIZES["batch"]}
class_quota = {QUOTA}
near_duplicate_threshold = {NEAR_DUP}
[budget]
max_labels = {SIZES["budget"]}
[gates]
calibration_ece = {ECE_GATE}
[annotation]
backend = "simulated"
overlap = 1
max_overlap = 1
[annotation.simulated]
annotators = [{{ name = "oracle", accuracy = 1.0 }}]
[trust]
min_answers = 1
''', encoding="utf-8")
    return cfg


@pytest.mark.parametrize("strategy", ["margin", "adaptive"])
def test_simulate_and_a_campaign_query_the_same_items_in_every_round(prefect_api, tmp_path: Path, strategy: str):
    from labelloop.flows.campaign import campaign_flow
    from labelloop.flows.runtime import open_campaign
    from labelloop.tasks.demo_data import CLASSES

    data = _data(tmp_path)
    labels = sorted(CLASSES)  # simulate orders the classes by name; the campaign by [labels] names
    out = tmp_path / "sim"
    sim = run_cli("simulate", "--data", str(data), "--id-col", "id", "--strategy", strategy, "--seeds", "1",
                  "--budget", str(SIZES["budget"]), "--batch-size", str(SIZES["batch"]),
                  "--seed-size", str(SIZES["seed"]), "--test-size", str(SIZES["test"]),
                  "--calibration-size", str(SIZES["calibration"]), "--class-quota", str(QUOTA),
                  "--near-duplicate-threshold", str(NEAR_DUP), "--ece-gate", str(ECE_GATE), "--out", str(out),
                  env={"PREFECT_API_URL": prefect_api}, timeout=600)
    assert sim.returncode == 0, sim.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["class_quota"] == QUOTA and res["near_duplicate_threshold"] == NEAR_DUP

    cfg = _campaign(tmp_path / "campaign", data, labels, strategy)
    campaign_flow(str(cfg), max_rounds=10)
    c = open_campaign(cfg)
    q = c.ledger.queries_frame()
    rounds = c.ledger.list_rounds()
    assert all(r.status in ("done", "stopped") for r in rounds), [(r.arm, r.round_no, r.status) for r in rounds]

    n_batches = (SIZES["budget"] - SIZES["seed"]) // SIZES["batch"]
    for arm, name in (("active", strategy), ("random", "random")):
        simulated = res["arms"][name]["seeds"]["0"]["queried"]
        campaign = [q.loc[(q["arm"] == arm) & (q["round_no"] == r), "item_id"].astype(str).tolist()
                    for r in range(1, n_batches + 1)]
        assert len(simulated) == n_batches and all(len(b) == SIZES["batch"] for b in campaign), (arm, campaign)
        for r, (got, want) in enumerate(zip(campaign, simulated), start=1):
            assert got == want, f"{arm} round {r}: the campaign queried other items than simulate"
        assert q.loc[(q["arm"] == arm) & (q["round_no"] > n_batches)].empty, f"{arm} queried past its budget"
    # the active batches ran the whole policy: margin picks, the random share, class-quota top-ups, and
    # the calibration gate's fallback in the rounds where it failed
    active = q[(q["arm"] == "active") & (q["round_no"] >= 1)]
    assert set(active["reason"]) >= {"strategy", "random", "quota", "diversity"}, set(active["reason"])
    assert set(active["strategy"]) == {"margin", "diversity-random"}
    if strategy == "adaptive":  # the same weights from the same history, logged with the round
        sim_w = [w["random"] for w in res["arms"]["adaptive"]["seeds"]["0"]["adaptive_weights"]]
        camp_w = [c.ledger.get_round("active", r).metrics["adaptive_weight_random"] for r in range(1, n_batches + 1)]
        assert camp_w == pytest.approx(sim_w, abs=1e-3)
        assert len(set(sim_w)) > 1, "the weights moved with the measured gains"
