"""Trusted labels end to end: a random annotator is caught and never trains the model.

A small campaign through the real round flow (real Prefect API, real MLflow
SQLite store, simulated backend): four annotators, one of whom answers at
random (accuracy = 1 / number of labels), gold items mixed into every batch.
Everything is asserted through the ledger (and the MLflow tags).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from labelloop.flows.runtime import open_campaign
from labelloop.tasks.demo_data import CLASSES, generate_demo_corpus
from tests.conftest import run_cli, write_small_campaign

pytestmark = pytest.mark.integration

RANDOM = "rand"


def _campaign(tmp_path: Path) -> Path:
    gold = generate_demo_corpus(80, seed=7, id_prefix="gold")
    gold.to_csv(tmp_path / "gold.csv", index=False)
    extra = f'''
[annotation.simulated]
seed = 0
annotators = [
  {{ name = "ann-1", accuracy = 0.95 }},
  {{ name = "ann-2", accuracy = 0.92 }},
  {{ name = "ann-3", accuracy = 0.9 }},
  {{ name = "{RANDOM}", accuracy = {1 / len(CLASSES)} }},
]
[trust]
gold_path = "gold.csv"
gold_rate = 0.4
min_gold_answers = 8
min_consensus_answers = 12
annotator_policy = "exclude"
'''
    cfg = write_small_campaign(tmp_path, n=700, budget=100, batch=25, seed_size=25, extra=extra)
    cfg.write_text(cfg.read_text().replace("[query]\n", "[query]\nrandom_arm = false\n"))  # one arm: faster
    return cfg


def test_random_annotator_is_flagged_excluded_and_never_trains(prefect_api, tmp_path: Path):
    from labelloop.flows.campaign import campaign_flow
    from labelloop.flows.trust import trust_summary

    cfg = _campaign(tmp_path)
    campaign_flow(str(cfg), max_rounds=3)
    c = open_campaign(cfg)
    led = c.ledger

    # Gold items were mixed into the batches under the pseudo-arm "gold", and answered.
    q = led.queries_frame()
    gold_q = q[q["arm"] == "gold"]
    assert len(gold_q) > 0 and set(gold_q["reason"]) == {"gold"}
    assert set(led.items_frame(splits=["gold"])["item_id"]) >= set(gold_q["item_id"])
    assert set(gold_q["item_id"]) <= set(led.tasks_frame()["item_id"]), "gold items are pushed like any item"
    # ... and never counted toward the arm's budget.
    assert set(q["arm"]) == {"active", "gold"}
    assert len(q[q["arm"] == "active"]) == 100  # seed + 3 batches: exactly the budget, gold on top

    # The random annotator is flagged, on gold once there is enough of it, and excluded.
    status = led.trust.annotator_status_frame()
    last = status[status["round_no"] == status["round_no"].max()].set_index("annotator")
    assert bool(last.loc[RANDOM, "flagged"]) and last.loc[RANDOM, "action"] == "excluded"
    assert last.loc[RANDOM, "basis"] == "gold", last.loc[RANDOM].to_dict()
    assert last.loc[RANDOM, "gold_accuracy"] < 0.45
    assert not last.drop(index=RANDOM)["flagged"].any(), last
    first = status[status["round_no"] == 1].set_index("annotator")
    assert bool(first.loc[RANDOM, "flagged"]), "caught already in round 1 (leave-one-out, before any gold)"

    # The round's notes (ledger + MLflow tags) carry the alert.
    rounds = led.list_rounds(arm="active")
    assert rounds and all(any(f"annotator alert: {RANDOM}" in n for n in r.notes) for r in rounds)
    client = MlflowClient(tracking_uri=c.cfg.tracking_uri)
    run = client.get_run(rounds[-1].mlflow_run_id)
    assert RANDOM in run.data.tags["labelloop.annotator_alerts"]
    assert "labelloop.quarantine" in run.data.tags
    assert run.data.metrics["n_trusted"] > 0 and "krippendorff_alpha" in run.data.metrics
    assert f"annotator_accuracy_{RANDOM}" in run.data.metrics

    # Trained only on trusted labels: the model of each round saw exactly the trusted items of
    # its arm, and no trusted label rests on the random annotator alone.
    ann = led.annotations_frame(submitted_only=True)
    for r in rounds:
        ti = led.trust.trust_items_frame(round_no=r.round_no).set_index("item_id")
        assert r.metrics["n_trusted"] == (ti["status"] == "trusted").sum()
        trusted = ti[ti["status"] == "trusted"]
        arm_items = set(q[(q["arm"] == "active")]["item_id"])
        assert r.n_labels == len(set(trusted.index) & arm_items), (r.round_no, r.n_labels)
        assert not (set(trusted.index) & set(gold_q["item_id"])), "gold items never train"
        by_consensus = trusted[trusted["source"] == "consensus"]
        support = ann[ann["annotator"] != RANDOM].merge(
            by_consensus[["label"]], left_on="item_id", right_index=True, suffixes=("", "_trusted"))
        supported = set(support.loc[support["label"] == support["label_trusted"], "item_id"])
        assert set(by_consensus.index) <= supported, "a trusted label came only from the random annotator"
        assert (by_consensus["n_trusted_annotations"] >= 2).all()
        assert r.metrics.get("n_trusted") is not None and r.metrics["label_set_version"] == 1.0

    # Excluding the random annotator keeps the batches above the gate (nothing quarantined),
    # though with them the raw agreement would be far lower.
    bd = led.trust.batch_decisions_frame(round_no=rounds[-1].round_no)
    assert (bd["status"] == "passed").all(), bd
    assert (bd["alpha_all_annotators"] < bd["krippendorff_alpha"]).all()

    # `labelloop status` material.
    lines = trust_summary(c)
    text = "\n".join(lines)
    assert "alpha" in text and f"{RANDOM}:" in text and "ALERT excluded" in text

    # Agreement, quarantine decisions and annotator quality as MLflow metrics and tags of every round run.
    for r in rounds:
        data = client.get_run(r.mlflow_run_id).data
        for k in ("krippendorff_alpha", "fleiss_kappa", "mean_cohen_kappa", "percent_agreement",
                  "n_quarantined_batches", "n_annotators_flagged", f"annotator_loo_accuracy_{RANDOM}"):
            assert k in data.metrics, (r.round_no, k)
        assert data.metrics["n_quarantined_batches"] == 0 and data.metrics["n_annotators_flagged"] >= 1
        assert data.tags["labelloop.quarantine"] == "none" and data.tags["labelloop.consensus"]
    assert run.data.metrics[f"annotator_accuracy_{RANDOM}"] < 0.45
    assert run.data.metrics["annotator_accuracy_ann-1"] > 0.8

    # The Data Docs page of each validation (and the trust report) is an artifact of the round's run.
    arts = {a.path for d in ("data_docs", "trust") for a in client.list_artifacts(run.info.run_id, d)}
    assert {"data_docs/annotations.html", "data_docs/training_set_active.html", "trust/report.md"} <= arts, arts
    import mlflow.artifacts

    page = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/data_docs/annotations.html")
    assert "<html" in page.lower() and "annotator" in page
    report = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/trust/report.md")
    assert f"| {RANDOM} |" in report and "excluded" in report

    # ... and in `labelloop status` (the real CLI) and its JSON form.
    res = run_cli("status", str(cfg), env={"PREFECT_API_URL": ""}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    assert f"trust (round {rounds[-1].round_no})" in out and "alpha per round: r1=" in out, out
    assert f"{RANDOM}: gold " in out and "ALERT excluded" in out and "consensus " in out, out
    assert "batches: " in out and "quarantined batches" not in out, out
    import json

    from labelloop.flows.status import status_json

    st = json.loads(status_json(str(cfg)))["trust"]
    assert st["flagged_annotators"] == [RANDOM] and st["quarantined_batches"] == []
    m_last = st["rounds"][str(rounds[-1].round_no)]["metrics"]
    assert m_last["krippendorff_alpha_trusted"] > 0.67 > m_last["krippendorff_alpha"]  # the random one drags all down


def test_quarantined_batch_never_trains(prefect_api, tmp_path: Path, capsys):
    """All annotators noisy (nobody flagged: no gold, leave-one-out threshold not met) and an
    impossible gate: every batch is quarantined, the model trains on nothing, the round says so."""
    from labelloop.flows.round import round_flow
    from labelloop.flows.setup import ensure_setup

    extra = '''
[annotation.simulated]
annotators = [
  { name = "a", accuracy = 0.7 }, { name = "b", accuracy = 0.7 }, { name = "c", accuracy = 0.7 },
]
[trust]
min_consensus_answers = 1000
'''
    cfg = write_small_campaign(tmp_path, n=600, budget=75, batch=25, seed_size=25, extra=extra)
    cfg.write_text(cfg.read_text().replace("[budget]", "[gates]\nagreement_mode = \"absolute\"\nagreement_alpha = 0.95\n[budget]"))
    c = open_campaign(cfg)
    ensure_setup(c)
    round_flow(str(cfg), 1)
    bd = c.ledger.trust.batch_decisions_frame(round_no=1)
    assert list(bd["status"]) == ["quarantined"]
    ti = c.ledger.trust.trust_items_frame(round_no=1)
    assert (ti["status"] == "quarantined").all() and len(ti) == 25
    r = c.ledger.get_round("active", 1)
    assert (r.n_labels or 0) == 0
    assert any("batch 0 quarantined" in n for n in r.notes), r.notes
    assert any("not trained" in n for n in r.notes), r.notes
    assert len(c.ledger.annotations_frame()) == 75, "quarantined answers stay in the ledger"

    # The quarantine decision reaches MLflow (metrics and tag, even though nothing trained) and status.
    run = MlflowClient(tracking_uri=c.cfg.tracking_uri).get_run(r.mlflow_run_id)
    assert run.data.metrics["n_quarantined_batches"] == 1 and run.data.metrics["n_quarantined"] == 25
    assert run.data.metrics["krippendorff_alpha"] < 0.95
    assert run.data.tags["labelloop.quarantine"].startswith("batch 0:")
    assert "test_macro_f1" not in run.data.metrics
    from labelloop.flows.status import print_status

    capsys.readouterr()
    print_status(str(cfg))
    out = capsys.readouterr().out
    assert "batches: 0 QUARANTINED" in out and "quarantined batches: batch 0 (round 1" in out, out


# --------------------------------------------------------------------------- the trust stage on a real ledger
# (no Prefect needed: flows/trust.py only reads and writes the ledger and the backend)


def _manual_setup(tmp_path: Path, extra: str = "") -> Path:
    """Campaign folder + ledger with 30 pushed and answered items (round 0), without running set-up."""
    cfg = write_small_campaign(tmp_path, n=400, budget=100, batch=25, seed_size=25, extra=extra)
    c = open_campaign(cfg)
    pool = pd.read_csv(tmp_path / "data" / "pool.csv", dtype=str)
    pool["split"] = ["test"] * 100 + ["calibration"] * 50 + ["pool"] * (len(pool) - 150)
    c.ledger.add_items(pool)
    _push_and_pull(c, pool["id"].iloc[150:180].tolist(), round_no=0)
    return cfg


def _push_and_pull(c, ids: list[str], round_no: int) -> None:
    from labelloop.integrations.backend import TaskRequest

    texts = c.ledger.items_frame().set_index("item_id")["text"]
    c.ledger.add_queries("active", round_no, [{"item_id": i, "strategy": "seed", "reason": "seed", "score": None,
                                               "model_version": None} for i in ids])
    mapping = c.backend.push([TaskRequest(i, texts[i]) for i in ids])
    c.ledger.record_tasks(c.backend.name, round_no, mapping)
    c.ledger.upsert_annotations(c.backend.pull(), backend=c.backend.name, round_no=round_no + 1)


def test_label_set_change_maps_or_relabels_and_is_never_mixed(tmp_path: Path):
    from labelloop.flows.trust import decide_trust
    from labelloop.integrations.ledger import LedgerError

    cfg = _manual_setup(tmp_path)
    c = open_campaign(cfg)
    d1 = decide_trust(c, 1)
    assert c.ledger.trust.label_versions() == {1: list(CLASSES)}
    assert d1.metrics["label_set_version"] == 1.0 and len(d1.consensus) > 0
    old_labels = d1.consensus["label"]

    # v2: "technical" renamed to "tech", "account" split into "login" / "profile"
    names = ["billing", "shipping", "tech", "login", "profile", "feedback"]
    text = cfg.read_text()
    v2 = text.replace("[labels]\nnames = [" + ", ".join(f'"{x}"' for x in CLASSES) + "]",
                      "[labels]\nversion = 2\nnames = [" + ", ".join(f'"{x}"' for x in names) + "]\n"
                      "[[labels.previous]]\nversion = 1\nnames = [" + ", ".join(f'"{x}"' for x in CLASSES) + "]\n"
                      'mapping = { technical = "tech", account = "" }')
    assert v2 != text
    cfg.write_text(v2)
    c2 = open_campaign(cfg)
    d2 = decide_trust(c2, 2)
    assert c2.ledger.trust.label_versions() == {1: list(CLASSES), 2: names}
    assert set(d2.consensus["label"]) <= set(names), "no label of the old set reaches training"
    renamed = old_labels[old_labels == "technical"].index
    assert (d2.consensus.loc[d2.consensus.index.intersection(renamed), "label"] == "tech").all()
    relabel = set(old_labels[old_labels == "account"].index)
    assert relabel and len(renamed), "the fixture data has both cases"
    # items whose answers were "account" cannot be mapped: re-labelled, never guessed
    assert not relabel & set(d2.consensus.index)
    assert d2.metrics["n_relabel"] > 0 and any("need re-labelling" in n for n in d2.notes)
    queued = set(c2.ledger.trust.adjudications_frame(status="pending")["item_id"])
    assert relabel <= queued
    assert d2.tags["labelloop.label_set_version"] == "2"

    # The same version number with another label set is refused: bump the version instead.
    cfg.write_text(v2.replace('"feedback"]\n[[labels.previous]]', '"other"]\n[[labels.previous]]', 1))
    with pytest.raises(LedgerError, match="bump labels.version"):
        decide_trust(open_campaign(cfg), 3)


def test_annotations_contract_holds_back_offenders_and_documents_them(tmp_path: Path):
    from datetime import datetime, timezone

    from labelloop.flows.trust import decide_trust, record_adjudication, trust_summary
    from labelloop.integrations.backend import PulledAnnotation

    cfg = _manual_setup(tmp_path)
    c = open_campaign(cfg)
    item = c.ledger.tasks_frame()["item_id"].iloc[0]
    now = datetime.now(timezone.utc)
    c.ledger.upsert_annotations([PulledAnnotation("x-1", "999", item, "mallory", CLASSES[0], "submitted", now, now)],
                                backend=c.backend.name, round_no=1)
    d = decide_trust(c, 1)
    assert d.tags["labelloop.contract.annotations"] == "failed"
    assert d.metrics["n_annotations_held_back"] == 1
    assert any("annotations contract" in n and "x-1" in n for n in d.notes), d.notes
    page = d.artifacts["data_docs/annotations.html"]
    assert "FAIL" in page and "x-1" in page
    assert "data_docs/training_set_active.html" in d.artifacts and "trust/report.md" in d.artifacts
    ti = c.ledger.trust.trust_items_frame(round_no=1).set_index("item_id")
    assert ti.loc[item, "n_annotations"] == 3, "mallory's answer never counted"

    # A reviewer's adjudication wins from the next decision on.
    other = [lbl for lbl in CLASSES if lbl != ti.loc[item, "label"]][0]
    record_adjudication(c, item, other, adjudicator="lead")
    d2 = decide_trust(c, 2)
    assert d2.consensus.loc[item, "label"] == other and d2.consensus.loc[item, "source"] == "adjudicated"
    assert any(line.startswith("trust (round 2)") for line in trust_summary(c))


# --------------------------------------------------------------------------- adjudication in Label Studio


@pytest.mark.label_studio
def test_label_studio_adjudication_review_tasks(label_studio, tmp_path: Path, monkeypatch):
    """Low-confidence items get a review task (text + each annotator's label) in a separate
    "(adjudication)" project; a reviewer's answer is read back by the next decision and wins."""
    import uuid

    from labelloop.flows.trust import decide_trust
    from labelloop.integrations.backend import TaskRequest
    from labelloop.integrations.label_studio import choices_result
    from labelloop.integrations.label_studio_crowd import SimAnnotator, answer_open_tasks

    url, token = label_studio
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", token)
    title = f"labelloop test adj {uuid.uuid4().hex[:8]}"
    extra = f'''
[annotation.label_studio]
url = "{url}"
project_title = "{title}"
[trust]
min_confidence = 0.99
min_consensus_answers = 1000
'''
    cfg = write_small_campaign(tmp_path, n=400, budget=100, batch=25, seed_size=25, backend="label_studio",
                               extra=extra)
    # no extra answers (max_overlap = overlap): unsure items go straight to the adjudicator here
    cfg.write_text(cfg.read_text().replace("[budget]", "[gates]\nagreement_alpha = 0.0\n[budget]")
                   .replace("overlap = 3", "overlap = 3\nmax_overlap = 3"))
    c = open_campaign(cfg)
    review = c.backend.review_backend()
    try:
        pool = pd.read_csv(tmp_path / "data" / "pool.csv", dtype=str)
        pool["split"] = ["test"] * 100 + ["calibration"] * 50 + ["pool"] * (len(pool) - 150)
        c.ledger.add_items(pool)
        ids = pool["id"].iloc[150:165].tolist()
        items = c.ledger.items_frame().set_index("item_id")
        c.ledger.add_queries("active", 0, [{"item_id": i, "strategy": "seed", "reason": "seed", "score": None,
                                            "model_version": None} for i in ids])
        c.ledger.record_tasks(c.backend.name, 0, c.backend.push([TaskRequest(i, items.at[i, "text"]) for i in ids]))
        truth = {i: items.at[i, "known_label"] for i in ids}
        crowd = [SimAnnotator(f"adj{k}", 0.75) for k in range(3)]
        answer_open_tasks(c.backend, truth, crowd, 3, seed=1)
        c.ledger.upsert_annotations(c.backend.pull(), backend=c.backend.name, round_no=1)
        n_main = len(c.backend.pull())

        d1 = decide_trust(c, 1)
        queued = set(c.ledger.trust.adjudications_frame(status="pending")["item_id"])
        assert queued and d1.metrics["n_adjudication_queue"] == len(queued)
        assert any("sent for review to Label Studio" in n for n in d1.notes), d1.notes
        tasks = review.existing_tasks()
        assert set(tasks) == queued, "one review task per queued item, nothing else"
        assert review.project_labels() == c.labels
        ann = c.ledger.annotations_frame(submitted_only=True)
        for t in review.client.tasks.list(project=review.project_id, fields="all"):
            i = t.data["item_id"]
            assert t.data["text"] == items.at[i, "text"]
            for a in ann[ann["item_id"] == i].itertuples():
                assert f"{a.annotator}: {a.label}" in t.data["votes"], t.data

        # A reviewer decides two items in Label Studio; the next decision reads them back.
        decided = sorted(queued)[:2]
        for i in decided:
            review.client.annotations.create(id=int(tasks[i]), result=choices_result(truth[i]))
        d2 = decide_trust(c, 2)
        for i in decided:
            assert d2.consensus.loc[i, "label"] == truth[i] and d2.consensus.loc[i, "source"] == "adjudicated"
        done = c.ledger.trust.adjudications_frame(status="done").set_index("item_id")
        assert set(done.index) == set(decided) and done["adjudicator"].str.startswith("label_studio:").all()
        assert set(c.ledger.trust.adjudications_frame(status="pending")["item_id"]) == queued - set(decided)
        assert review.existing_tasks() == tasks, "a re-run opens no second review task"
        assert len(c.backend.pull()) == n_main, "reviews never mix into the annotators' answers"

        # A lead decides one item outside Label Studio, and a fourth annotator answers the rest:
        # the settled item's review task is closed, the open ones show the new votes.
        from labelloop.flows.trust import record_adjudication

        open_items = sorted(queued - set(decided))
        settled, still = open_items[0], open_items[1:]
        record_adjudication(c, settled, truth[settled], adjudicator="lead")
        late_ann = SimAnnotator("late4", 0.75)
        answer_open_tasks(c.backend, truth, [*crowd, late_ann], 4, seed=1)
        c.ledger.upsert_annotations(c.backend.pull(), backend=c.backend.name, round_no=3)
        decide_trust(c, 3)
        by_item = {t.data["item_id"]: t for t in review.client.tasks.list(project=review.project_id, fields="all")}
        assert (by_item[settled].meta or {}).get("labelloop_closed") is True, by_item[settled].meta
        assert by_item[settled].is_labeled, "a settled item's review task is closed"
        late = c.ledger.annotations_frame(submitted_only=True)
        late = late[late["annotator"] == late_ann.email].set_index("item_id")["label"]
        assert set(still) <= set(late.index), "the late annotator answered every open item"
        for i in still:
            assert not (by_item[i].meta or {}).get("labelloop_closed"), "items still awaiting review stay open"
            assert f"{late_ann.email}: {late[i]}" in by_item[i].data["votes"], by_item[i].data
        for i in decided:
            assert late_ann.email not in by_item[i].data["votes"], "answered review tasks are never rewritten"

        # A round that queues nothing new still reads back an earlier review task's answer: settle the
        # tied items (a tie always queues), let every other item pass the confidence bar, answer one
        # clear-majority item's review task in Label Studio, decide again.
        c.cfg.trust.min_confidence = 0.0
        votes = c.ledger.annotations_frame(submitted_only=True)
        votes = votes[votes["item_id"].isin(still)]
        top2 = {i: sorted(g["label"].value_counts().tolist(), reverse=True)[:2] for i, g in votes.groupby("item_id")}
        clear = [i for i in still if len(top2[i]) == 1 or top2[i][0] > top2[i][1]]
        assert clear, top2
        answered_late = clear[0]
        for i in still:
            if i not in clear:
                record_adjudication(c, i, truth[i], adjudicator="lead")
        review.client.annotations.create(id=int(tasks[answered_late]), result=choices_result(truth[answered_late]))
        d4 = decide_trust(c, 4)
        assert d4.metrics["n_adjudication_queue"] == 0, d4.metrics
        done = c.ledger.trust.adjudications_frame(status="done").set_index("item_id")
        assert answered_late in done.index and done.at[answered_late, "adjudicator"].startswith("label_studio:")
    finally:
        for b in (review, c.backend):
            try:
                b.delete_project()
            except Exception:  # noqa: BLE001 - clean-up only
                pass
