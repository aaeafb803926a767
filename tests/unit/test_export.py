"""`labelloop export` (flows/export.py) on a hand-made ledger: status mapping, columns, formats, atomicity."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from labelloop.flows import export as E
from labelloop.integrations.backend import PulledAnnotation
from labelloop.integrations.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]


def _ann(item: str, who: str, label: str, status: str = "submitted") -> PulledAnnotation:
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return PulledAnnotation(f"{item}:{who}", f"t-{item}", item, who, label if status == "submitted" else None,
                            status, t, t)


def _campaign(tmp_path: Path) -> Path:
    cfg = tmp_path / "campaign.toml"
    cfg.write_text('name = "ex"\n[data]\npath = "pool.csv"\n[labels]\nnames = ["pos", "neg"]\nversion = 2\n'
                   '[[labels.previous]]\nversion = 1\nnames = ["good", "bad"]\n'
                   'mapping = { good = "pos", bad = "neg" }\n', encoding="utf-8")
    return cfg


def _ledger(tmp_path: Path) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", "ex")


def _fill(led: Ledger, *, decide: bool = True) -> None:
    ids = ["a", "b", "c", "d", "e", "f", "g", "h"]
    led.add_items(pd.DataFrame({"id": ids + ["unanswered"], "text": [f"text {i}" for i in ids] + ["x"],
                                "label": None, "split": "pool"}))
    led.add_queries("active", 0, [{"item_id": i, "strategy": "seed", "reason": "seed"} for i in ids[:4]])
    led.add_queries("random", 0, [{"item_id": i, "strategy": "seed", "reason": "seed"} for i in ids[:2]])
    led.add_queries("random", 2, [{"item_id": i, "strategy": "random", "reason": "random"} for i in ["e", "f"]])
    led.add_queries("active", 3, [{"item_id": "f", "strategy": "margin", "reason": "strategy"}])
    led.add_queries("gold", 1, [{"item_id": "g", "strategy": "gold", "reason": "gold"}])
    # "h": a task adopted by the doctor (no query row): its round comes from the task
    led.record_tasks("replay", 4, {"h": "t-h", "a": "t-a"})
    pulled = [_ann("a", "w1", "pos"), _ann("a", "w2", "pos"), _ann("a", "w3", "neg"), _ann("a", "w4", "pos", "skipped"),
              _ann("b", "w2", "neg"), _ann("b", "w1", "neg"), _ann("c", "w1", "pos"), _ann("d", "w1", "neg"),
              _ann("e", "w3", "pos"), _ann("f", "w2", "neg"), _ann("g", "w1", "pos"), _ann("h", "w9", "neg")]
    led.upsert_annotations(pulled, backend="replay", round_no=1)
    led.trust.record_label_version(1, ["good", "bad"], None)
    led.trust.record_label_version(2, ["pos", "neg"], {"good": "pos", "bad": "neg"})
    if not decide:
        return
    rows = {"a": ("trusted", "pos", 0.93, "consensus", "dawid_skene"),
            "b": ("trusted", "neg", 0.99, "adjudicated", "adjudicator"),
            "c": ("adjudication", "pos", 0.55, "consensus", "dawid_skene"),
            "d": ("quarantined", "neg", 0.8, "consensus", "dawid_skene"),
            "e": ("pending", None, None, None, None),
            "f": ("needs_more", "neg", 0.6, "consensus", "majority"),
            "g": ("gold", "pos", 1.0, None, None)}  # "h": answered after the decision
    items = pd.DataFrame([dict(zip(["status", "label", "confidence", "source", "method"], v), batch=0,
                               n_annotations=1, n_trusted_annotations=1, reason="")
                          for v in rows.values()], index=list(rows))
    led.trust.save_trust_round(3, items=items, batches=pd.DataFrame(), annotators=pd.DataFrame(), metrics={}, notes=[],
                         tags={})


def test_export_maps_the_latest_trust_decision(tmp_path: Path) -> None:
    led = _ledger(tmp_path)
    _fill(led)
    frame, info = E.export_frame(led, label_version=2, include_all=True)
    assert list(frame.columns) == E.COLUMNS
    got = frame.set_index("item_id")
    assert got["status"].to_dict() == {"a": "trusted", "b": "adjudicated", "c": "needs_more", "d": "quarantined",
                                       "e": "pending", "f": "needs_more", "g": "gold", "h": "pending"}
    assert "unanswered" not in got.index, "only items with answers"
    a = got.loc["a"]
    assert (a["text"], a["label"], a["confidence"], a["method"]) == ("text a", "pos", 0.93, "dawid_skene")
    assert a["n_answers"] == 3 and a["annotators"] == "w1;w2;w3", "submitted answers only; sorted, ;-joined"
    assert (a["round"], a["arm"]) == (0, "active;random") and got.loc["c", "arm"] == "active"
    assert (got.loc["f", "round"], got.loc["f", "arm"]) == (2, "active;random"), "first query round; every arm"
    assert (got.loc["g", "arm"], got.loc["h", "round"], got.loc["h", "arm"]) == ("gold", 4, "")
    assert pd.isna(got.loc["e", "label"]) and pd.isna(got.loc["h", "label"])
    assert set(got["label_schema_version"]) == {2}
    assert info == {"answered_items": 8, "decided_round": 3,
                    "all_counts": {"trusted": 1, "adjudicated": 1, "gold": 1, "pending": 2, "needs_more": 2,
                                   "quarantined": 1}, "auto_labels": 0}
    default, _ = E.export_frame(led, label_version=2)
    assert default["item_id"].tolist() == ["a", "b"] and set(default["status"]) == {"trusted", "adjudicated"}


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl", ".out"])
def test_export_dataset_writes_each_format(tmp_path: Path, suffix: str) -> None:
    cfg = _campaign(tmp_path)
    _fill(_ledger(tmp_path))
    out = tmp_path / f"labels{suffix}"
    s = E.export_dataset(cfg, out, include_all=True)
    fmt = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".out": "csv"}[suffix]
    assert (s.format, s.rows, s.counts["needs_more"]) == (fmt, 8, 2)
    back = (pd.read_parquet(out) if fmt == "parquet" else pd.read_json(out, lines=True, dtype=False)
            if fmt == "jsonl" else pd.read_csv(out, dtype={"item_id": str}))
    assert list(back.columns) == E.COLUMNS and len(back) == 8
    assert back.set_index("item_id").loc["a", "annotators"] == "w1;w2;w3"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".labels")] == [], "no temp file left"
    assert "8 row(s)" in s.line() and "trusted 1, adjudicated 1" in s.line()


def test_export_before_any_decision_writes_the_header_only(tmp_path: Path) -> None:
    cfg = _campaign(tmp_path)
    _fill(_ledger(tmp_path), decide=False)
    s = E.export_dataset(cfg, tmp_path / "out.csv")
    assert s.rows == 0 and s.decided_round is None and "no trust decision yet" in s.line()
    assert (tmp_path / "out.csv").read_text().strip() == ",".join(E.COLUMNS)
    s = E.export_dataset(cfg, tmp_path / "all.csv", include_all=True)
    assert s.rows == 8 and s.counts == {"pending": 8} and "every answered item is pending" in s.line()


def test_export_through_the_cli(tmp_path: Path) -> None:
    """`python -m labelloop.flows.cli export`: one line (or JSON), exit 0; bad input exits 2 with one line, no file."""
    cfg = _campaign(tmp_path)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "labelloop.flows.cli", "export", str(cfg), *args], capture_output=True,
                              text=True, cwd=ROOT, timeout=120)

    r = cli("--out", str(tmp_path / "x.csv"))
    assert r.returncode == 2 and "no ledger" in r.stderr and "Traceback" not in r.stderr
    _fill(_ledger(tmp_path))
    r = cli("--out", str(tmp_path / "missing" / "x.csv"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr
    r = cli("--out", str(tmp_path / "x.data"), "--format", "jsonl", "--all", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["rows"] == 8 and summary["format"] == "jsonl" and summary["counts"]["gold"] == 1
    assert len((tmp_path / "x.data").read_text().splitlines()) == 8
    r = cli("--out", str(tmp_path / "y.csv"))
    assert r.returncode == 0 and r.stdout.count("\n") == 1 and "exported 2 row(s)" in r.stdout
    assert "6 other answered item(s) not exported" in r.stdout


def test_export_does_not_import_prefect() -> None:
    code = ("import sys, labelloop.flows.export as e, labelloop.flows.cli as c; c.main(['export', '--help']); "
            "import labelloop.flows.config, labelloop.integrations.ledger; assert 'prefect' not in sys.modules, 'prefect imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr


def test_the_default_export_leaves_the_evaluation_items_out_and_all_keeps_them(tmp_path: Path) -> None:
    """Trusted test / calibration items measure the campaign's models: a training file built from the
    default export must not hold them (the README: --all includes them)."""
    import os

    cfg = _campaign(tmp_path)
    led = _ledger(tmp_path)
    _fill(led)
    led.add_items(pd.DataFrame({"id": ["t1", "k1"], "text": ["test text", "cal text"], "label": None,
                                "split": ["test", "calibration"]}))
    led.upsert_annotations([_ann("t1", "w1", "pos"), _ann("t1", "w2", "pos"), _ann("k1", "w1", "neg")],
                           backend="replay", round_no=2)
    items = pd.DataFrame([{"status": "trusted", "label": lbl, "confidence": 0.95, "source": "consensus",
                           "method": "majority", "batch": 0, "n_annotations": 2, "n_trusted_annotations": 2,
                           "reason": ""} for lbl in ("pos", "neg", "pos")], index=["t1", "k1", "a"])
    led.trust.save_trust_round(4, items=items, batches=pd.DataFrame(), annotators=pd.DataFrame(), metrics={},
                               notes=[], tags={})
    old = os.umask(0o022)
    try:
        s = E.export_dataset(cfg, tmp_path / "labels.csv")
    finally:
        os.umask(old)
    back = pd.read_csv(tmp_path / "labels.csv", dtype={"item_id": str})
    assert "t1" not in set(back["item_id"]) and "k1" not in set(back["item_id"]) and "a" in set(back["item_id"])
    assert s.evaluation_left_out == 2 and "2 trusted evaluation item(s)" in s.line()
    assert s.as_dict()["evaluation_left_out"] == 2
    assert (tmp_path / "labels.csv").stat().st_mode & 0o777 == 0o644, "readable by the team, as any file"
    s = E.export_dataset(cfg, tmp_path / "all.csv", include_all=True)
    assert {"t1", "k1"} <= set(pd.read_csv(tmp_path / "all.csv", dtype={"item_id": str})["item_id"])
    assert s.evaluation_left_out == 0 and "evaluation item" not in s.line()
