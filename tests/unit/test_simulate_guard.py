"""`labelloop simulate` runs the campaigns' random-ahead guard (flows/simulate.run_arm, tasks/policy.py).

Why here: simulate is how a team decides whether active learning pays on their data,
so its active arm must follow the same policy a campaign would, guard included.
"""

from __future__ import annotations

import pandas as pd
import pytest

from labelloop.flows.simulate import run_arm
from labelloop.tasks.demo_data import generate_demo_corpus
from labelloop.tasks.seed import carve_splits
from labelloop.tasks.train import fit_featurizer


@pytest.fixture(scope="module")
def setting():
    frame = generate_demo_corpus(600, seed=3)[["text", "label"]].reset_index(drop=True)
    frame["split"] = carve_splits(frame, test_size=150, calibration_size=1, seed_size=25,
                                  seed_method="stratified", random_state=0)
    frame.loc[frame["split"] == "calibration", "split"] = "pool"
    vec = fit_featurizer(frame.loc[frame["split"] != "test", "text"].tolist())
    return frame, sorted(frame["label"].unique()), vec, vec.transform(frame["text"].tolist())


def _run(setting, random_curve, **kw):
    frame, classes, vec, X = setting
    return run_arm(frame, classes, vec, X, "margin", seed=0, budget=175, batch_size=25, random_share=0.1,
                   random_curve=random_curve, **kw)


def test_guard_fires_while_random_is_ahead_and_changes_the_batches(setting):
    plain = _run(setting, None)
    assert "guard_rounds" not in plain
    ahead = {"labels": plain["labels"], "macro_f1": [1.0] * len(plain["labels"])}  # random far ahead throughout
    guarded = _run(setting, ahead)
    # as in a campaign: round r's check runs once both arms are evaluated (both curves up to r) and
    # raises the share of round r + 1: random is ahead from round 1, so every batch from round 2 on
    n_queries = len(guarded["labels"]) - 1
    assert n_queries == 6
    assert guarded["guard_rounds"] == n_queries - 1
    assert guarded["random_share"] == [0.1] + [0.5] * (n_queries - 1)
    assert guarded["queried"][:1] == plain["queried"][:1], "identical until the guard first acts"
    assert guarded["queried"][1] != plain["queried"][1], "the raised random share picked other items"
    assert guarded["macro_f1"] != plain["macro_f1"], "the raised random share picked other items"


def test_guard_acts_in_the_round_after_the_one_in_which_random_was_ahead(setting):
    """The README's timing: random ahead at round 3's evaluation -> round 4's batch, and only that one."""
    plain = _run(setting, None)
    f1 = [0.0] * len(plain["labels"])
    f1[2] = 1.0  # random ahead at round 3's label count only
    once = _run(setting, {"labels": plain["labels"], "macro_f1": f1})
    assert once["random_share"] == [0.1, 0.1, 0.1, 0.5, 0.1, 0.1]
    assert once["guard_rounds"] == 1 and once["queried"][:3] == plain["queried"][:3]


def test_guard_stays_off_while_active_is_ahead_or_when_disabled(setting):
    plain = _run(setting, None)
    behind = {"labels": plain["labels"], "macro_f1": [0.0] * len(plain["labels"])}
    quiet = _run(setting, behind)
    assert quiet["guard_rounds"] == 0 and quiet["queried"] == plain["queried"]
    ahead = {"labels": plain["labels"], "macro_f1": [1.0] * len(plain["labels"])}
    off = _run(setting, ahead, random_ahead_share=0.1)  # = random_share: the guard changes nothing
    assert off["queried"] == plain["queried"]


def test_simulate_seed_keeps_the_callers_arm_order(setting):
    from labelloop.flows.simulate import simulate_seed

    frame, classes, _, _ = setting
    out = simulate_seed.fn(frame[["text", "label"]], classes, ["margin", "random"], 0, 100, 25, 25, 150, 0.1, 10.0)
    assert list(out["arms"]) == ["margin", "random"]
    assert "guard_rounds" in out["arms"]["margin"] and "guard_rounds" not in out["arms"]["random"]
    assert isinstance(out["full_data_macro_f1"], float) and pd.notna(out["full_data_macro_f1"])
