"""Issue 16 in a real campaign (real Prefect API, MLflow store, simulated annotators): the ``adaptive``
strategy says and logs its weights each round, and ``[model] self_training`` trains on pseudo-labels
that are tagged in MLflow and the ledger and never exported as human labels."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from labelloop.flows.runtime import open_campaign
from tests.conftest import write_small_campaign

pytestmark = pytest.mark.integration


def test_adaptive_weights_and_pseudo_labels_are_logged_and_pseudo_labels_never_exported(prefect_api, tmp_path: Path):
    from labelloop.flows.campaign import campaign_flow
    from labelloop.flows.export import export_dataset

    cfg = write_small_campaign(tmp_path, budget=100)
    text = cfg.read_text().replace('strategy = "margin"', 'strategy = "adaptive"')
    cfg.write_text(text + "\n[model]\nself_training = true\nself_training_threshold = 0.6\n")
    campaign_flow(str(cfg), max_rounds=3)

    c = open_campaign(cfg)
    notes = [n for r in c.ledger.list_rounds(arm="active") for n in r.notes]  # what the round prints under its line
    assert any(n.startswith("adaptive: weights margin") for n in notes), notes
    assert any(n.startswith("self-training: ") and "pseudo-label(s)" in n for n in notes), notes
    assert c.cfg.query.strategy == "adaptive" and c.cfg.model.self_training
    client = MlflowClient(tracking_uri=c.cfg.tracking_uri)
    pseudo_ids: set[str] = set()
    for r in sorted(c.ledger.list_rounds(arm="active"), key=lambda r: r.round_no):
        if r.status != "done":
            continue
        run = client.get_run(r.mlflow_run_id)
        m = run.data.metrics
        assert m["adaptive_weight_margin"] + m["adaptive_weight_random"] == pytest.approx(1.0, abs=1e-3)
        assert m["query_random_share"] == pytest.approx(max(0.1, m["adaptive_weight_random"]), abs=1e-4)
        assert r.metrics["adaptive_weight_random"] == m["adaptive_weight_random"], "the ledger keeps it too"
        assert r.metrics["pseudo_labels"] == m["pseudo_labels"] > 0
        assert "never exported" in run.data.tags["labelloop.pseudo_labels"]
        path = client.download_artifacts(run.info.run_id, "pseudo_labels.json", str(tmp_path / f"dl{r.round_no}"))
        table = pd.read_json(path, orient="split") if '"columns"' in Path(path).read_text()[:200] else \
            pd.DataFrame(json.loads(Path(path).read_text()))
        assert len(table) == int(m["pseudo_labels"]) and set(table["source"]) == {"pseudo"}
        pseudo_ids |= set(table["item_id"].astype(str))
    # from round 3 on a batch has been measured against the random arm, and the note says so
    assert any("measured batch" in n for n in notes), notes
    # `status` shows the weights in force: the active arm's latest round's
    from labelloop.flows.status import status_json

    last = max((r for r in c.ledger.list_rounds(arm="active") if r.status in ("done", "stopped")),
               key=lambda r: r.round_no)
    shown = json.loads(status_json(str(cfg)))["adaptive"]
    assert shown["round"] == last.round_no, shown
    assert shown["weights"] == {"margin": last.metrics["adaptive_weight_margin"],
                                "random": last.metrics["adaptive_weight_random"]}, shown
    assert shown["random_share"] == last.metrics["query_random_share"], shown

    asked = set(c.ledger.queries_frame()["item_id"].astype(str))
    exported = tmp_path / "labels.csv"
    export_dataset(cfg, exported, include_all=True)
    ids = set(pd.read_csv(exported)["item_id"].astype(str))
    never_asked = pseudo_ids - asked
    assert never_asked, "some pseudo-labelled items were never sent to people"
    assert not (ids & never_asked), "pseudo-labels must never be exported as human labels"
