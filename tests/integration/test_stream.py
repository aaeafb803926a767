"""Stream mode end to end (issue 17, "Done when": a stream test).

A small simulated campaign is set up and runs one round through the CLI on the session's real Prefect
API (its champion is then registered in the campaign's MLflow store); `labelloop stream` then labels a
folder of arrivals. Checked: a bad file stops it with one line and writes nothing; arrivals split into
auto-labelled, audited, routed and held items as configured; a rerun ingests nothing twice; the audit
precision logged to MLflow is the one the ledger's answers give; `labelloop export` leaves every
automatic label out unless --include-auto.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_cli, write_small_campaign

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

STREAM = '''
[stream]
threshold = 0.5
audit_share = 0.3
daily_budget = 60
min_precision = 0.5
min_audits = 5
'''


def _rows(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _stream(cfg: Path, arrivals: Path, env: dict) -> dict:
    res = run_cli("stream", str(cfg), "--arrivals", str(arrivals), "--json", env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return json.loads(res.stdout)


def test_stream_splits_arrivals_logs_audit_precision_and_keeps_auto_labels_out_of_export(prefect_api, tmp_path):
    env = {"PREFECT_API_URL": prefect_api}
    cfg = write_small_campaign(tmp_path, name="stream", extra=STREAM)
    db = tmp_path / "ledger.db"
    for cmd in (("setup", str(cfg)), ("round", str(cfg))):
        res = run_cli(*cmd, env=env, timeout=600)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]

    fresh = pd.read_csv(tmp_path / "data" / "arrivals_fresh.csv")
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    arrivals = fresh.iloc[:150]
    arrivals.to_csv(incoming / "a1.csv", index=False)

    # a bad file: one line naming it and its row, exit 2, nothing written
    bad = fresh.iloc[150:160].copy()
    bad.loc[bad.index[3], "text"] = ""
    bad.to_csv(incoming / "a2.csv", index=False)
    before = _rows(db, "SELECT count(*) FROM items")
    res = run_cli("stream", str(cfg), "--arrivals", str(incoming), env=env, timeout=300)
    errors = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1, res.stderr[-3000:]
    assert "a2.csv" in errors[0] and "Traceback" not in res.stderr, errors
    assert _rows(db, "SELECT count(*) FROM items") == before
    assert _rows(db, "SELECT count(*) FROM stream_items") == [(0,)]
    assert _rows(db, "SELECT count(*) FROM stream_files") == [(0,)]
    (incoming / "a2.csv").unlink()
    res = run_cli("stream", str(cfg), "--arrivals", str(tmp_path / "nowhere"), env=env, timeout=300)
    assert res.returncode == 2 and "nowhere" in res.stderr and "Traceback" not in res.stderr, res.stderr[-2000:]

    # first run: every arrival decided as configured
    first = _stream(cfg, incoming, env)
    assert first["ingested"] == {"files": 1, "rows": 150, "added": 150}
    counts = {k: first[k] for k in ("auto", "audit", "routed", "held")}
    assert sum(counts.values()) == first["decided"] == 150, counts
    assert counts["auto"] > 0 and counts["audit"] > 0 and counts["routed"] > 0 and counts["held"] > 0, counts
    assert counts["audit"] + counts["routed"] == 60, "people got exactly the daily budget"
    decided = pd.DataFrame(_rows(db, "SELECT item_id, route, label, source, confidence, model_version, threshold "
                                     "FROM stream_items"),
                           columns=["item_id", "route", "label", "source", "confidence", "model_version", "threshold"])
    assert Counter(decided["route"]) == Counter({k: v for k, v in counts.items() if v})
    sure = decided[decided["route"].isin(["auto", "audit"])]
    assert (sure["confidence"] >= 0.5).all() and (sure["source"] == "auto").all() and sure["label"].notna().all()
    assert sure["model_version"].str.match(r"^v\d+$").all(), "labelled by the registry's champion version"
    unsure = decided[decided["route"].isin(["routed", "held"])]
    assert (unsure["confidence"] < 0.5).all() and unsure["label"].isna().all() and unsure["source"].isna().all()
    share = counts["audit"] / (counts["audit"] + counts["auto"])
    assert 0.1 < share < 0.5, f"audit share {share:.2f} for a configured 0.3"
    pushed = set(r[0] for r in _rows(db, "SELECT item_id FROM tasks"))
    to_people = set(decided.loc[decided["route"].isin(["routed", "audit"]), "item_id"])
    assert to_people <= pushed, "routed and audited items are tasks for people"
    assert not set(decided.loc[decided["route"].isin(["auto", "held"]), "item_id"]) & pushed
    assert _rows(db, "SELECT count(*) FROM items WHERE split = 'stream'") == [(150,)]

    # rerun: the file was consumed (nothing ingested twice); the day's budget is spent, so held items wait
    n_tasks = _rows(db, "SELECT count(*) FROM tasks")
    second = _stream(cfg, incoming, env)
    assert second["ingested"] == {"files": 0, "rows": 0, "added": 0}
    assert second["held"] == counts["held"] and second["routed"] == second["audit"] == 0
    assert _rows(db, "SELECT count(*) FROM stream_items") == [(150,)]
    assert _rows(db, "SELECT count(*) FROM tasks") == n_tasks, "no task pushed twice"
    assert _rows(db, "SELECT count(*) FROM stream_files") == [(1,)]

    st = run_cli("status", str(cfg), "--json", env={"PREFECT_API_URL": ""}, timeout=120)
    assert st.returncode == 0, st.stderr[-2000:]
    shown = json.loads(st.stdout)
    assert shown["stream"] == {"arrivals": 150, **counts, "threshold": 0.5, "stopped": False}
    assert shown["round_triggers"]["batch_trigger"] is False, "simulated backend: `labelloop run` goes on"
    text = run_cli("status", str(cfg), env={"PREFECT_API_URL": ""}, timeout=120).stdout
    assert f"stream: 150 arrivals: {counts['auto']} auto-labelled" in text and "rounds: not batch-triggered" in text

    # the audit precision: the audited items' automatic labels against people's majority, as in the ledger
    ann = pd.DataFrame(_rows(db, "SELECT item_id, annotator, label FROM annotations WHERE status = 'submitted'"),
                       columns=["item_id", "annotator", "label"])
    audits = decided[decided["route"] == "audit"].set_index("item_id")["label"]
    right = n = 0
    for item, grp in ann[ann["item_id"].isin(audits.index)].groupby("item_id"):
        top, k = Counter(grp["label"]).most_common(1)[0]
        if len(grp) >= 2 and 2 * k > len(grp):
            n += 1
            right += int(top == audits[item])
    assert n == counts["audit"], "the simulated annotators answered every audit"
    assert second["audit_precision_n"] == n and second["audit_precision"] == pytest.approx(right / n)
    print(f"stream: {counts}; audit precision {right}/{n} = {right / n:.3f} "
          f"(95% low {second['audit_precision_low']:.3f}); threshold {second['threshold']}")

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("labelloop-stream")
    runs = client.search_runs([exp.experiment_id], "tags.`labelloop.kind` = 'stream'",
                              order_by=["attributes.start_time ASC"])
    assert len(runs) == 2  # (a third run follows below)
    m = runs[-1].data.metrics
    assert m["stream_audit_precision"] == pytest.approx(right / n) and m["stream_audit_precision_n"] == n
    assert 0 < m["stream_audit_precision_low"] <= m["stream_audit_precision"]
    assert runs[0].data.metrics["stream_auto"] == counts["auto"] and runs[0].data.metrics["stream_held"] == counts["held"]

    # the gate: the same audits against a bar they do not clear (95% low < 0.95) raise the threshold or stop
    # automatic labelling; the next arrivals are decided under it
    cfg.write_text(cfg.read_text().replace("min_precision = 0.5", "min_precision = 0.95"))
    fresh.iloc[160:200].to_csv(incoming / "a3.csv", index=False)
    third = _stream(cfg, incoming, env)
    assert third["ingested"]["added"] == 40
    assert third["threshold"] is None or third["threshold"] > 0.5, third["gate"]
    assert ("stopped" in third["gate"]) == (third["threshold"] is None) and "< 0.95" in third["gate"]
    new = pd.DataFrame(_rows(db, "SELECT route, confidence, threshold FROM stream_items WHERE item_id IN "
                                 f"({','.join(repr(i) for i in fresh.iloc[160:200]['id'])})"),
                       columns=["route", "confidence", "threshold"])
    if third["threshold"] is None:
        assert not new["route"].isin(["auto", "audit"]).any() and new["threshold"].isna().all()
    else:
        assert (new.loc[new["route"].isin(["auto", "audit"]), "confidence"] >= third["threshold"]).all()
        assert (new["threshold"] == third["threshold"]).all()
    print(f"gate at min_precision 0.95: {third['gate']}")

    # export: automatic labels never appear as human labels; --include-auto adds them, marked
    out = tmp_path / "all.csv"
    res = run_cli("export", str(cfg), "--out", str(out), "--all", "--json", env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout)
    exported = pd.read_csv(out)
    auto_only = set(r[0] for r in _rows(db, "SELECT item_id FROM stream_items WHERE route = 'auto'"))
    assert not auto_only & set(exported["item_id"]) and "auto" not in set(exported["status"])
    assert summary["auto_left_out"] == len(auto_only), "the rows --include-auto would add"
    with_auto = tmp_path / "with_auto.csv"
    res = run_cli("export", str(cfg), "--out", str(with_auto), "--all", "--include-auto", env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    both = pd.read_csv(with_auto)
    marked = both[both["status"] == "auto"]
    assert set(marked["item_id"]) == auto_only, "audited items carry people's answers: exported as theirs"
    assert (marked["method"] == "auto").all() and marked["annotators"].str.startswith("model:v").all()
    assert len(both) == len(exported) + len(auto_only)
