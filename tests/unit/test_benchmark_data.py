"""The benchmark's data split and label-efficiency arithmetic (benchmarks/al_benchmark.py).

Why test a benchmark script: its verdicts are only worth anything if every arm
sees a pool that is disjoint from the frozen test set, and if the efficiency
ratio is the one RESULTS.md defines.  Both are checked here on a small
hand-made file, without the peer libraries (they are imported lazily).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "al_benchmark.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    with pytest.MonkeyPatch.context() as mp:  # the script pins BLAS threads for itself; keep ours untouched
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            mp.setenv(var, "1")
        spec = importlib.util.spec_from_file_location("al_benchmark_under_test", BENCH)
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    return mod


def _write_split_file(folder: Path) -> Path:
    """40 train rows (one exact duplicate, two that also occur in test), 30 test rows, 2 balanced classes."""
    rows = []
    for i in range(40):
        lab = "a" if i % 2 == 0 else "b"
        rows.append({"id": f"tr{i}", "text": f"train text {i} about {lab}", "label": lab, "split": "train"})
    rows.append({"id": "tr-dup", "text": "train text 0 about a", "label": "a", "split": "train"})
    for i in range(30):
        lab = "a" if i % 2 == 0 else "b"
        rows.append({"id": f"te{i}", "text": f"test text {i} about {lab}", "label": lab, "split": "test"})
    rows.append({"id": "tr-leak1", "text": "test text 3 about b", "label": "b", "split": "train"})
    rows.append({"id": "tr-leak2", "text": "test text 4 about a", "label": "a", "split": "train"})
    path = folder / "tiny.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_spare_official_test_rows_join_the_pool_and_never_overlap_the_test_set(bench, tmp_path):
    path = _write_split_file(tmp_path)
    spec = bench.DatasetSpec("tiny", path.name, "hand-made")
    data = bench.load_dataset(spec, tmp_path, max_test=20)
    # 30 test rows, 20 kept for the frozen test set (10 per class), 10 spare ones join the pool
    assert data.X_test.shape[0] == 20
    assert np.bincount(data.y_test).tolist() == [10, 10]
    assert data.n_spare_test == 10
    assert data.n_dropped_duplicates == 1 and data.n_dropped_leaks == 2
    assert data.X_pool.shape[0] == 40 + 10
    df = pd.read_csv(path)
    test_texts = set(df[df["split"] == "test"]["text"]) - set(data.pool_texts)
    assert len(test_texts) == 20  # exactly the frozen test rows are missing from the pool
    assert len(set(data.pool_texts)) == len(data.pool_texts)


def test_without_spare_rows_the_pool_is_the_training_split_only(bench, tmp_path):
    path = _write_split_file(tmp_path)
    data = bench.load_dataset(bench.DatasetSpec("tiny", path.name, "hand-made"), tmp_path, max_test=20,
                              spare_test_to_pool=False)
    assert data.n_spare_test == 0
    assert data.X_pool.shape[0] == 40
    assert all(t.startswith("train text") for t in data.pool_texts)


def test_no_spare_rows_when_the_test_split_fits(bench, tmp_path):
    path = _write_split_file(tmp_path)
    data = bench.load_dataset(bench.DatasetSpec("tiny", path.name, "hand-made"), tmp_path, max_test=5000)
    assert data.n_spare_test == 0 and data.X_test.shape[0] == 30 and data.X_pool.shape[0] == 40


def test_label_efficiency_is_random_labels_over_arm_labels(bench):
    labels = [100, 200, 300, 400]
    rnd = [0.50, 0.60, 0.70, 0.80]  # reaches 0.75 at 350 labels (linear interpolation)
    arm = [0.50, 0.70, 0.80, 0.85]  # reaches 0.75 at 250 labels
    ratio, lower_bound = bench.efficiency(labels, rnd, labels, arm, 0.75)
    assert ratio == pytest.approx(350 / 250) and not lower_bound
    # random never gets there: its budget (400) is used and the ratio is a lower bound
    ratio, lower_bound = bench.efficiency(labels, [0.5, 0.55, 0.6, 0.65], labels, arm, 0.75)
    assert ratio == pytest.approx(400 / 250) and lower_bound
    # the arm never gets there: no ratio
    assert bench.efficiency(labels, rnd, labels, [0.5, 0.5, 0.5, 0.5], 0.75) == (None, False)


def _curve(scores: list[float], labels: list[int] | None = None) -> dict:
    return {"labels": labels or [100, 200, 300, 400], "macro_f1": scores}


def test_bootstrap_interval_collapses_when_every_trial_agrees(bench):
    # every trial: random reaches 0.75 at 400 labels, the arm at 200 -> 2.0 in every resample
    rnd = [_curve([0.5, 0.6, 0.7, 0.75])] * 3
    arm = [_curve([0.5, 0.75, 0.8, 0.85])] * 3
    lo, hi, missing = bench.bootstrap_efficiency(rnd, arm, 0.75, n_boot=200)
    assert (lo, hi, missing) == (pytest.approx(2.0), pytest.approx(2.0), 0.0)


def test_bootstrap_interval_spans_the_trial_spread_and_is_paired(bench):
    # trial 0: arm 200 vs random 400 (2.0x); trial 1: arm 400 vs random 400 (1.0x)
    rnd = [_curve([0.5, 0.6, 0.7, 0.75]), _curve([0.5, 0.6, 0.7, 0.75])]
    arm = [_curve([0.5, 0.75, 0.8, 0.85]), _curve([0.5, 0.6, 0.7, 0.75])]
    lo, hi, missing = bench.bootstrap_efficiency(rnd, arm, 0.75, n_boot=2000)
    # resamples are {0,0} -> 2.0, {1,1} -> 1.0 and mixed -> mean curve crosses 0.75 at 300 labels -> 1.33
    assert lo == pytest.approx(1.0) and hi == pytest.approx(2.0)
    assert missing == 0.0
    # the headline ratio on the mean curves sits inside the interval
    head, _ = bench.efficiency(*bench.mean_curve(rnd), *bench.mean_curve(arm), 0.75)
    assert lo <= head <= hi


def test_bootstrap_counts_resamples_where_the_arm_never_reaches_the_goal(bench):
    rnd = [_curve([0.5, 0.6, 0.7, 0.75])] * 2
    arm = [_curve([0.5, 0.75, 0.8, 0.85]), _curve([0.5, 0.5, 0.5, 0.5])]
    lo, hi, missing = bench.bootstrap_efficiency(rnd, arm, 0.75, n_boot=2000)
    # only the {0,0} resample (a quarter) reaches 0.75: the mixed mean curve tops out at 0.675
    assert 0.65 < missing < 0.85
    assert lo == -np.inf and hi == pytest.approx(2.0), "the low end falls among resamples that never get there"
    assert bench._fmt_ci((lo, hi, missing)) == "95 % CI n/r–2.00"
    assert bench._fmt_ci(bench.bootstrap_efficiency(rnd, [arm[1]] * 2, 0.75)) == "95 % CI: never reaches the goal"
    assert bench.bootstrap_efficiency(rnd[:1], arm[:1], 0.75) is None


def test_guarded_arm_raises_its_random_share_only_while_random_is_ahead(bench, tmp_path):
    """The benchmark's model of the campaign's random-ahead guard uses the round's own check."""
    path = _write_split_file(tmp_path)
    data = bench.load_dataset(bench.DatasetSpec("tiny", path.name, "hand-made"), tmp_path, max_test=20)
    arm = bench.GuardedLabelloopArm(data, 0, "margin")
    arm.start(np.arange(6))
    random_curve = {"labels": [6, 10, 14, 18], "macro_f1": [0.6, 0.8, 0.9, 0.95]}
    arm.observe(6, 0.65, random_curve)  # active ahead at its latest label count: no guard
    arm.query(4)
    assert arm.policy["random_share"] == pytest.approx(0.10) and arm.guard_rounds == 0
    arm.observe(10, 0.7, random_curve)  # random ahead by > 0.01 at 10 labels: the very next batch acts
    picks = arm.query(4)
    assert arm.policy["random_share"] == pytest.approx(0.5) and arm.guard_rounds == 1
    assert len(set(picks.tolist())) == 4
    arm.observe(18, 0.99, random_curve)  # active catches up: back to the configured share
    arm.query(4)
    assert arm.policy["random_share"] == pytest.approx(0.10) and arm.guard_rounds == 1


def test_adaptive_arm_sees_random_up_to_its_previous_evaluation_and_keeps_its_weights(bench, tmp_path):
    """The benchmark's adaptive arm calls the campaigns' function with a campaign's view of the curves."""
    path = _write_split_file(tmp_path)
    data = bench.load_dataset(bench.DatasetSpec("tiny", path.name, "hand-made"), tmp_path, max_test=20)
    arm = bench.AdaptiveLabelloopArm(data, 0)
    arm.start(np.arange(6))
    random_curve = {"labels": [6, 10, 14], "macro_f1": [0.6, 0.8, 0.9]}
    arm.observe(6, 0.6, random_curve)  # random's point at 6 is not seen yet: the prior
    assert arm.weights[-1] == {"margin": 0.9, "random": 0.1} and arm.policy["random_share"] == pytest.approx(0.1)
    arm.query(4)
    arm.observe(10, 0.6, random_curve)  # sees random up to 6 only: still nothing measured
    assert arm.weights[-1]["random"] == pytest.approx(0.1)
    arm.observe(14, 0.62, random_curve)  # batch 6 -> 10 measured: fell 0.2 behind random
    assert arm.weights[-1]["random"] > 0.9 and arm.policy["random_share"] == arm.weights[-1]["random"]
    assert len(arm.query(4)) == 4
