"""Pure pieces of "start from unlabelled text" (issue 14): the interval, the plot's bands, the first
round's wait for test labels, the results table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from sklearn.metrics import f1_score

from labelloop.flows.demo import results_table
from labelloop.tasks.evaluate import learning_curve_figure, macro_f1_interval
from labelloop.tasks.readiness import batch_readiness, with_evaluation

CLASSES = ["a", "b", "c"]


def _noisy(n: int, accuracy: float, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(CLASSES, n)
    pred = np.where(rng.random(n) < accuracy, y, rng.choice(CLASSES, n))
    proba = np.full((n, 3), 0.1)
    proba[np.arange(n), [CLASSES.index(p) for p in pred]] = 0.8
    return list(y), proba


def test_interval_brackets_the_macro_f1_and_narrows_with_more_test_items() -> None:
    widths = []
    for n in (40, 400):
        y, proba = _noisy(n, 0.5, seed=n)
        f1 = f1_score(y, [CLASSES[i] for i in proba.argmax(1)], labels=CLASSES, average="macro", zero_division=0)
        lo, hi = macro_f1_interval(y, proba, CLASSES, seed=1)
        assert lo < f1 < hi
        widths.append(hi - lo)
    assert widths[1] < 0.6 * widths[0]  # ~ 1/sqrt(10) as wide


def test_interval_is_deterministic_degenerate_and_empty_safe() -> None:
    y, proba = _noisy(60, 0.7, seed=3)
    assert macro_f1_interval(y, proba, CLASSES, seed=4) == macro_f1_interval(y, proba, CLASSES, seed=4)
    perfect = np.eye(3)[[CLASSES.index(v) for v in y]]
    assert macro_f1_interval(y, perfect, CLASSES) == (1.0, 1.0)
    lo, hi = macro_f1_interval([], np.zeros((0, 3)), CLASSES)
    assert math.isnan(lo) and math.isnan(hi)


def test_learning_curve_shows_intervals_only_when_it_has_them() -> None:
    with_ci = learning_curve_figure({"active": [(20, 0.5, 0.4, 0.6), (40, 0.7, 0.62, 0.78)],
                                     "random": [(20, 0.5, 0.41, 0.6)]})
    bands = [c for c in with_ci.axes[0].collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    assert "95% bootstrap interval" in [t.get_text() for t in with_ci.axes[0].get_legend().get_texts()]
    plain = learning_curve_figure({"active": [(20, 0.5), (40, 0.7)]})
    assert not [c for c in plain.axes[0].collections if isinstance(c, PolyCollection)]


def test_first_round_waits_for_min_test_labels_then_trains() -> None:
    seed = batch_readiness(0, ["s1", "s2"], {"s1": 3, "s2": 3}, {}, need=3, ready_share=1.0)
    assert seed.ready
    tests = [f"t{i}" for i in range(10)]
    answers = {f"t{i}": 3 for i in range(3)}
    wait = with_evaluation(seed, tests, answers, {"t3": "trusted"}, required=5)
    assert not wait.ready
    assert wait.waiting_for.startswith("waiting for annotations: 4 of 5 test items answered 3 times")
    assert with_evaluation(seed, tests, {**answers, "t4": 3}, {"t3": "trusted"}, required=5) is seed
    # capped at the test items pushed; items the backend cannot answer are named, not dropped
    assert with_evaluation(seed, tests[:4], answers, {"t3": "trusted"}, required=100).ready
    stuck = with_evaluation(seed, tests, answers, {}, required=5, unanswerable=tests[5:])
    assert not stuck.ready and "5 have no answer the backend can give yet" in stuck.waiting_for
    # the seed's own wait comes first, the test items' after it
    unanswered = batch_readiness(0, ["s1", "s2"], {}, {}, need=3, ready_share=1.0)
    both = with_evaluation(unanswered, tests, {}, {}, required=5)
    assert "seed items" in both.waiting_for and "0 of 5 test items" in both.waiting_for


def test_results_table_prints_the_interval_when_known() -> None:
    table = results_table({"active": [(30, 0.5, 0.4, 0.6)], "random": [(30, 0.45, float("nan"), float("nan"))]})
    assert "0.500 [0.400, 0.600]" in table and "F1 [95% CI]" in table
    assert "0.450 [" not in table
    assert "[" not in results_table({"active": [(30, 0.5)]})


@pytest.mark.parametrize("n_test", [0, 5])
def test_evaluation_thresholds_never_exceed_the_split(n_test: int) -> None:
    import pandas as pd

    from labelloop.flows.config import parse_config
    from labelloop.flows.stages import evaluation_thresholds
    from labelloop.flows.runtime import Campaign

    cfg = parse_config({"name": "x", "data": {"path": "p.csv"}, "labels": {"names": CLASSES}}, base_dir=Path("."))
    items = pd.DataFrame({"split": ["test"] * n_test + ["calibration"] * 70 + ["pool"] * 3})
    assert evaluation_thresholds(Campaign(cfg=cfg, ledger=None), items) == (n_test, 50)  # type: ignore[arg-type]


def _campaign(folder: Path, extra: str = "", backend: str = "replay", budget: str = "") -> Path:
    import pandas as pd

    from labelloop.tasks.demo_data import CLASSES, generate_demo_corpus

    corpus = generate_demo_corpus(300, seed=2)
    corpus[["id", "text"]].to_csv(folder / "pool.csv", index=False)
    corpus.assign(id="t-" + corpus["id"]).head(40).to_csv(folder / "test.csv", index=False)
    corpus.assign(id="c-" + corpus["id"]).tail(30).to_csv(folder / "cal.csv", index=False)
    corpus.head(5).to_csv(folder / "dup.csv", index=False)  # labelled, but the pool's own ids
    pd.DataFrame([{"item_id": "x", "annotator_id": "a", "label": CLASSES[0]}]).to_csv(folder / "ans.csv", index=False)
    names = ", ".join(f'"{c}"' for c in CLASSES)
    cfg = folder / "c.toml"
    cfg.write_text(f'name = "u"\n[data]\npath = "pool.csv"\n[labels]\nnames = [{names}]\n[splits]\ntest_size = 50\n'
                   f'calibration_size = 20\nseed_size = 10\n{extra}\n[query]\nbatch_size = 10\n[budget]\n'
                   f'max_labels = 40\n{budget}[annotation]\nbackend = "{backend}"\n'
                   '[annotation.replay]\npath = "ans.csv"\n',
                   encoding="utf-8")
    return cfg


def test_preflight_draws_evaluation_items_for_people_and_defaults_the_seed_to_kmeans(tmp_path: Path) -> None:
    from labelloop.flows.setup import people_labelled_evaluation, preflight

    _, frame = preflight(_campaign(tmp_path))
    assert frame.attrs["seed_method"] == "kmeans"
    assert frame["split"].value_counts().to_dict() == {"pool": 220, "test": 50, "calibration": 20, "seed": 10}
    assert len(people_labelled_evaluation(frame)) == 70
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ans.csv", "c.toml", "cal.csv", "dup.csv", "pool.csv",
                                                          "test.csv"]


def test_labelled_files_are_the_test_set_and_calibration_slice(tmp_path: Path) -> None:
    from labelloop.flows.setup import people_labelled_evaluation, preflight

    _, frame = preflight(_campaign(tmp_path, 'test_path = "test.csv"\ncalibration_path = "cal.csv"'))
    assert frame["split"].value_counts().to_dict() == {"pool": 290, "test": 40, "calibration": 30, "seed": 10}
    assert people_labelled_evaluation(frame).empty and frame.loc[frame["split"] == "test", "label"].notna().all()


@pytest.mark.parametrize("extra, backend, budget, message", [
    ("", "simulated", "", "the simulated annotators answer from known labels, but 80 seed/test/calibration item"),
    ("", "replay", "evaluation_labels = 30\n",
     "need 70 items labelled by people, more than [budget] evaluation_labels"),
    ('test_path = "dup.csv"', "replay", "", "is also in the data"),
])
def test_set_ups_nobody_could_answer_stop_before_writing(tmp_path: Path, extra: str, backend: str, budget: str,
                                                          message: str) -> None:
    import re

    from labelloop.flows.setup import preflight
    from labelloop.integrations.sources import InputError
    from labelloop.tasks.seed import SplitError

    with pytest.raises((SplitError, InputError), match=re.escape(message)):
        preflight(_campaign(tmp_path, extra, backend=backend, budget=budget))
    assert not (tmp_path / "ledger.db").exists()
