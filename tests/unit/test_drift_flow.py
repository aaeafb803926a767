"""The drift flow's decision: fires on the demo's drifted batch, silent on a fresh sample (several seeds).

No Prefect API and no MLflow: the campaign is a ledger with items, and the
"current model" is trained here and handed to ``flows.drift.check``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from labelloop.flows.config import DriftConfig, example_config, parse_config
from labelloop.flows.runtime import open_campaign
from labelloop.tasks.demo_data import CLASSES, generate_demo_corpus


def _campaign(tmp_path: Path, seed: int):
    data = tomllib.loads(example_config(f"drift{seed}", list(CLASSES)))
    data["data"]["path"] = "pool.csv"
    cfg = parse_config(data, base_dir=tmp_path)
    c = open_campaign(cfg)
    pool = generate_demo_corpus(1500, seed=seed)
    pool["split"] = ["calibration" if i % 5 == 0 else "pool" for i in range(len(pool))]
    c.ledger.add_items(pool)
    return c, pool


def _model(pool, labels):
    from labelloop.tasks.train import fit_featurizer, train_model

    vec = fit_featurizer(pool["text"])
    lab = pool.sample(n=300, random_state=0)
    return train_model(vec, lab["text"].tolist(), lab["label"].tolist())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drift_check_fires_on_drifted_batch_and_stays_silent_on_fresh(tmp_path, monkeypatch, seed):
    import labelloop.flows.drift as drift

    c, pool = _campaign(tmp_path, seed)
    model = _model(pool, c.labels)
    monkeypatch.setattr(drift, "current_model", lambda _c: (model, "test-model"))

    drifted = generate_demo_corpus(300, seed=seed + 11, drift=True)
    fresh = generate_demo_corpus(300, seed=seed + 23, id_prefix="fresh")
    drifted.to_csv(tmp_path / "drifted.csv", index=False)
    fresh.to_csv(tmp_path / "fresh.csv", index=False)

    hot = drift.check(c, tmp_path / "drifted.csv")
    cold = drift.check(c, tmp_path / "fresh.csv")

    assert hot["drifted"], hot
    assert "domain_auc" in " ".join(hot["fired"])
    assert hot["episode"] and hot["episode"].startswith("ep-")
    assert not cold["drifted"], cold
    assert cold["fired"] == [] and cold["episode"] is None
    assert all(cold["scores"][k] is not None for k in drift.SCORE_KEYS)
    assert cold["scores"]["domain_auc"] < 0.7


def test_known_items_are_not_new_and_small_batches_get_no_verdict(tmp_path, monkeypatch):
    import labelloop.flows.drift as drift

    c, pool = _campaign(tmp_path, 5)
    monkeypatch.setattr(drift, "current_model", lambda _c: (None, None))
    # arrivals that are already in the ledger are not "new"
    pool.head(200).drop(columns=["split"]).to_csv(tmp_path / "old.csv", index=False)
    res = drift.check(c, tmp_path / "old.csv")
    assert res["n_arrivals"] == 200 and res["n_new"] == 0 and not res["drifted"]
    assert "no verdict" in res["status"]
    # without a model the confidence statistics are skipped, the text ones still decide
    generate_demo_corpus(120, seed=9, drift=True).drop(columns=["label"]).to_csv(tmp_path / "d.csv", index=False)
    res = drift.check(c, tmp_path / "d.csv")
    assert res["scores"]["confidence_psi"] is None and res["scores"]["label_shift"] is None
    assert res["drifted"]


def test_decide_counts_signals_and_ignores_missing_ones():
    from labelloop.flows.drift import decide

    cfg = DriftConfig()
    assert decide({"domain_auc": 0.5, "confidence_psi": None, "label_shift": float("nan"), "oov_rate": 0.01},
                  cfg) == (False, [])
    fired, why = decide({"domain_auc": 0.9, "oov_rate": 0.3}, cfg)
    assert fired and len(why) == 2
    assert decide({"domain_auc": 0.9}, DriftConfig(min_signals=2))[0] is False
    assert decide({"domain_auc": 0.75}, cfg)[0] is True  # at the threshold fires, like tasks.drift


def test_episode_id_depends_only_on_the_arrivals(tmp_path):
    from labelloop.flows.drift import episode_id

    c, _ = _campaign(tmp_path, 0)
    a = generate_demo_corpus(50, seed=1, drift=True)
    a.to_csv(tmp_path / "a.csv", index=False)
    a.sample(frac=1.0, random_state=3).to_csv(tmp_path / "shuffled.csv", index=False)
    a.head(40).to_csv(tmp_path / "fewer.csv", index=False)
    assert episode_id(c, tmp_path / "a.csv") == episode_id(c, tmp_path / "shuffled.csv")
    assert episode_id(c, tmp_path / "a.csv") != episode_id(c, tmp_path / "fewer.csv")
