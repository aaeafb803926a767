"""Replay campaigns on real crowds through the CLI (issue 12, parts 4 and 5).

`labelloop setup` + `labelloop run` with ``[annotation] backend = "replay"``: the recorded MTurk workers
answer every pushed item (3 of them per item, more on request), the trust policy decides, and
`labelloop export --all` hands back the labelled dataset. Checked against the expert gold (RTE) or the
distributed majority label (MD-Agreement): the share of answered items that end up trusted or adjudicated,
and the accuracy of the trusted labels against majority vote over the very same answers.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import SHARED_DATASETS, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.datasets]

RTE = SHARED_DATASETS / "rte_mturk_annotations.csv"
MDA = SHARED_DATASETS / "md_agreement_annotations.csv"


def _need(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"real datasets not available: {path} is absent (see ../shared/datasets/MANIFEST.md)")


def _campaign(folder: Path, answers: Path, items: pd.DataFrame, labels: list[str], *, test: int, calibration: int,
              budget: int, extra: str = "") -> Path:
    """Pool = the items with their gold label; the replay file = the recorded answers (untouched)."""
    folder.mkdir(parents=True, exist_ok=True)
    items[["item_id", "text", "gold"]].rename(columns={"gold": "label"}).to_csv(folder / "pool.csv", index=False)
    names = ", ".join(f'"{x}"' for x in labels)
    cfg = folder / "campaign.toml"
    cfg.write_text(f'''
name = "replay-{folder.name}"
[data]
path = "pool.csv"
id_column = "item_id"
[labels]
names = [{names}]
[splits]
test_size = {test}
calibration_size = {calibration}
[budget]
max_labels = {budget}
max_rounds = 15   # the budget needs 6 rounds (seed + 5 batches of 50): a stalled campaign fails fast
[annotation]
backend = "replay"
overlap = 3
[annotation.replay]
path = "{answers}"
{extra}
''', encoding="utf-8")
    return cfg


def _run_and_export(cfg: Path, prefect_api: str) -> tuple[pd.DataFrame, str]:
    env = {"PREFECT_API_URL": prefect_api}
    r = run_cli("setup", str(cfg), env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("run", str(cfg), env=env, timeout=1500)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr
    out = cfg.parent / "labels.csv"
    r = run_cli("export", str(cfg), "--out", str(out), "--all", env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("exported ") and r.stdout.count("\n") == 1
    return pd.read_csv(out, dtype={"item_id": str}, keep_default_na=False), r.stdout


def _majority_accuracy(exported: pd.DataFrame, answers: pd.DataFrame, gold: pd.Series) -> float:
    """Majority vote over the same answers as the export lists (its ``annotators``), a tie scoring 0.5
    (the expected accuracy of a coin flip)."""
    by = answers.set_index(["item_id", "annotator_id"])["label"]
    scores = []
    for item, who in zip(exported["item_id"], exported["annotators"]):
        votes = pd.Series([by[(item, a)] for a in who.split(";")]).value_counts()
        top = votes[votes == votes.max()].index
        scores.append(float(gold[item] in top) / len(top))
    return sum(scores) / len(scores)


def _fair_check(trusted: pd.DataFrame, answers: pd.DataFrame) -> tuple[float, float, int]:
    """Agreement with the recorded workers the campaign did *not* use (held out), for the trusted labels
    and for majority vote over the answers it did use (ties score 0.5): the fair check where the data
    set's gold is itself a majority of the same workers. Returns (trusted, majority, held-out answers)."""
    by_item = {i: g for i, g in answers.groupby("item_id")}
    hits_t, hits_m, n = 0.0, 0.0, 0
    for item, label, who in zip(trusted["item_id"], trusted["label"], trusted["annotators"]):
        rec = by_item[item]
        used = set(who.split(";"))
        votes = rec[rec["annotator_id"].isin(used)]["label"].value_counts()
        top = list(votes[votes == votes.max()].index)
        for held in rec.loc[~rec["annotator_id"].isin(used), "label"]:
            hits_t += float(held == label)
            hits_m += (held in top) / len(top)
            n += 1
    return (hits_t / n, hits_m / n, n) if n else (float("nan"), float("nan"), 0)


def _check(exported: pd.DataFrame, answers: pd.DataFrame, gold: pd.Series, budget: int, line: str,
           gold_is_majority: bool = False) -> dict:
    answered = exported[exported["status"] != "gold"]
    assert len(answered) > 0 and set(exported["status"]) <= {"trusted", "adjudicated", "gold", "pending",
                                                             "needs_more", "quarantined"}
    # every round up to the budget ran: both arms queried (and got answers for) their whole budget
    arms = answered["arm"].str.split(";").explode().value_counts()
    for arm in ("active", "random"):
        assert arms.get(arm, 0) >= budget * 0.9, (arm, arms.to_dict(), line)
    assert (answered["n_answers"] >= 3).mean() > 0.95, "overlap 3: three recorded workers per item"
    assert answered["annotators"].str.split(";").map(len).eq(answered["n_answers"]).all()
    good = answered["status"].isin(["trusted", "adjudicated"])
    share = float(good.mean())
    trusted = answered[answered["status"] == "trusted"]
    acc_trusted = float((trusted["label"] == gold[trusted["item_id"]].to_numpy()).mean()) if len(trusted) else 0.0
    acc_mv = _majority_accuracy(trusted, answers, gold) if len(trusted) else 1.0
    measured = {"answered": len(answered), "trusted_or_adjudicated": share, "n_trusted": len(trusted),
                "trusted_accuracy": acc_trusted, "majority_accuracy_same_answers": acc_mv,
                "status_counts": answered["status"].value_counts().to_dict()}
    fair_t, fair_m, n_held = _fair_check(trusted, answers)
    measured.update({"fair_check_trusted": fair_t, "fair_check_majority": fair_m, "held_out_answers": n_held})
    print(f"measured: {measured}")  # shown with -rP / on failure: the figures the issue asks for
    assert share >= 0.85, measured
    if gold_is_majority:
        # MD-Agreement's `gold` is the majority of the same five workers, so majority vote over a subset
        # of them is favoured against it by construction (benchmarks/AGREEMENT.md): judge on held-out
        # workers instead, and require the gold agreement to stay high.
        assert n_held > 100 and fair_t >= fair_m, measured
        assert acc_trusted >= 0.85, measured
    else:
        assert acc_trusted >= acc_mv, measured
    return measured


def test_replay_campaign_on_rte(prefect_api, tmp_path: Path) -> None:
    """800 RTE items, 10 MTurk workers each (alpha 0.24; a single answer 72.9 % right)."""
    _need(RTE)
    answers = pd.read_csv(RTE, dtype=str, keep_default_na=False)
    items = answers.drop_duplicates("item_id")
    cfg = _campaign(tmp_path / "rte", RTE, items, ["entailment", "no_entailment"], test=100, calibration=60,
                    budget=300)
    exported, line = _run_and_export(cfg, prefect_api)
    _check(exported, answers, items.set_index("item_id")["gold"], 300, line)


def test_replay_campaign_on_md_agreement(prefect_api, tmp_path: Path) -> None:
    """MD-Agreement (5 MTurk workers per tweet, a third of the items split 3-2), 2,000 items sampled."""
    _need(MDA)
    answers = pd.read_csv(MDA, dtype=str, keep_default_na=False)
    items = answers.drop_duplicates("item_id").sample(n=2000, random_state=0)
    cfg = _campaign(tmp_path / "mda", MDA, items, ["not_offensive", "offensive"], test=200, calibration=150,
                    budget=300)
    exported, line = _run_and_export(cfg, prefect_api)
    _check(exported, answers, items.set_index("item_id")["gold"], 300, line, gold_is_majority=True)
