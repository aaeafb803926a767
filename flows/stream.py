"""Stream mode: texts keep arriving; the champion labels the ones it is sure of, people the rest (issue 17).

``labelloop stream CONFIG --arrivals DIR`` (or the served deployment ``labelloop-stream/<campaign>``,
every ``[stream] interval_seconds``) runs :func:`stream_flow`, under the campaign's round lock:

1. **Ingest** the files in DIR that were not consumed before (the ledger's ``stream_files``, by
   content hash: a rerun or a file copied twice adds nothing). Every new file is read and checked by
   the pool's data contract *before* anything is written; a bad file stops the run with one line
   naming it and its row (exit 2) and nothing written. Arrivals become items of split ``stream``:
   never queried by an arm, never in the test or calibration set.
2. **Pull** the annotation backend's answers (audits answered since the last run count now).
3. **Gate**: the precision of automatic labels on answered audits (people's label: the latest trust
   decision's trusted label, else a strict majority of ``[trust] min_answers`` answers) sets the
   threshold in force (:func:`tasks.stream.gate_threshold`).
4. **Decide** each new (and each held) arrival with the champion model (``models:/labelloop-<name>@champion``;
   without one, the latest round's model), its probabilities temperature-scaled on the calibration
   slice: auto / audit / routed / held (:func:`tasks.stream.route`). Without a calibration slice
   labelled enough (``[splits] min_calibration_labels``) or without a model, nothing is labelled
   automatically: the confidence would not mean what the threshold says.
5. **Record** the decisions in the ledger (``stream_items``: automatic labels with source ``auto`` and
   the model version) and the items for people as queries of the pseudo-arm ``stream``, then **push**
   them (a rerun pushes only what has no task yet).
6. **Log** an MLflow run (``labelloop.kind = stream``): counts, threshold, and
   ``stream_audit_precision`` with ``stream_audit_precision_n`` and its 95 % lower bound.

Automatic labels are not human labels: ``labelloop export`` leaves them out unless
``--include-auto``, and the arms never train on them unless ``[stream] train_on_auto = true``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger

from labelloop.flows.campaign_state import next_round_no
from labelloop.flows.config import tracking_params
from labelloop.flows.drift import current_model, load_arrivals
from labelloop.flows.locking import round_lock
from labelloop.flows.runtime import Campaign, open_campaign
from labelloop.flows.setup import ensure_setup
from labelloop.flows.stages import push_pending, pull_annotations
from labelloop.flows.trust import label_history
from labelloop.integrations.expectations import validate_pool
from labelloop.integrations.faults import checkpoint
from labelloop.integrations.sources import SUPPORTED_EXTENSIONS, InputError
from labelloop.tasks import stream as policy
from labelloop.tasks.train import predict_proba_aligned

STREAM_SPLIT = "stream"
STREAM_ARM = "stream"  # the pseudo-arm of items sent to people by stream mode (like gold / evaluation)
REASONS = {policy.ROUTED: "stream-uncertain", policy.AUDIT: "stream-audit"}


# --------------------------------------------------------------------------- 1. ingest
def arrival_files(path: Path) -> list[Path]:
    """The data files in the arrivals folder (or the file itself), by name. Hidden files and other
    types are left alone: a drop folder sees files being written (write ``.name.tmp``, then rename)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{path}: no such arrivals folder or file", path=path)
    return [p for p in sorted(path.iterdir())
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SUPPORTED_EXTENSIONS]


def other_files(path: Path | None) -> list[str]:
    """Visible files in the arrivals folder that are not data files: left alone, but named in the run's
    summary, so a `notes.txt` (or an `.xlsx` someone meant as arrivals) is not ignored unseen."""
    if path is None or not path.is_dir():
        return []
    return [p.name for p in sorted(path.iterdir())
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in SUPPORTED_EXTENSIONS]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def new_arrivals(c: Campaign, path: Path) -> list[tuple[Path, str, pd.DataFrame]]:
    """Every arrival file not consumed yet, read and checked by the pool's data contract. Raises (one line
    naming the file and row) on the first bad one, before anything is written."""
    seen = c.ledger.stream_files_seen()
    answers_from_labels = _answers_need_labels(c)
    out: list[tuple[Path, str, pd.DataFrame]] = []
    texts: dict[str, tuple[str, Path]] = {}  # id -> (text, file) over this run's new files
    for f in arrival_files(path):
        digest = file_digest(f)
        if digest in seen or digest in {d for _, d, _ in out}:
            continue
        frame = load_arrivals(c, f)
        validate_pool(frame, label_set=c.labels, max_text_length=c.cfg.data.max_text_length, source=str(f))
        for r in frame.itertuples():
            first = texts.setdefault(str(r.id), (r.text, f))
            if first[0] != r.text:  # two files, one id, two texts: one of them would be dropped silently
                raise InputError(f"{f}: row {r.source_row}: id {r.id!r} is also in {first[1]} with a different "
                                 f"text; give one of them a new id", path=f, line=int(r.source_row), field="id")
            if answers_from_labels and r.label is None:
                raise InputError(f"{f}: row {r.source_row}: no label, and the {c.cfg.annotation.backend} annotators "
                                 f"answer only texts with a known label ([data] label_column); use Label Studio "
                                 f"for unlabelled arrivals", path=f, line=int(r.source_row),
                                 field=c.cfg.data.label_column or "label")
        out.append((f, digest, frame))
    return out


def _answers_need_labels(c: Campaign) -> bool:
    """The simulated annotators answer from a known label: an arrival without one could never be
    answered, and finding out at push time would leave it ingested but never asked (checked first)."""
    return c.cfg.annotation.backend == "simulated"


def ingest(c: Campaign, files: list[tuple[Path, str, pd.DataFrame]]) -> tuple[dict[str, int], dict[str, str]]:
    """Add the checked files' arrivals (one transaction per file). Returns counts and item -> file."""
    rows = added = 0
    files_of: dict[str, str] = {}
    for f, digest, frame in files:
        added += c.ledger.consume_stream_file(frame, sha256=digest, path=str(f))
        rows += len(frame)
        files_of.update({str(i): str(f) for i in frame["id"]})
    return {"files": len(files), "rows": rows, "added": added}, files_of


# --------------------------------------------------------------------------- 3. the gate
def people_labels(c: Campaign, item_ids: set[str]) -> dict[str, str]:
    """item -> the people's label: the latest trust decision's trusted label, else a strict majority of
    ``[trust] min_answers`` submitted answers (one per annotator, the latest)."""
    if not item_ids:
        return {}
    out: dict[str, str] = {}
    trust = c.ledger.trust.trust_items_frame()
    if len(trust):
        ok = trust[trust["item_id"].isin(item_ids) & (trust["status"] == "trusted") & trust["label"].notna()]
        out.update(dict(zip(ok["item_id"].astype(str), ok["label"].astype(str))))
    ann = c.ledger.annotations_frame(submitted_only=True)
    ann = ann[ann["item_id"].isin(item_ids - set(out))]
    if len(ann):
        latest = ann.sort_values("updated_at").drop_duplicates(["item_id", "annotator"], keep="last")
        for item, grp in latest.groupby("item_id"):
            lbl = policy.human_label(grp["label"].tolist(), c.cfg.trust.min_answers)
            if lbl is not None:
                out[str(item)] = lbl
    return out


def current_gate(c: Campaign, decided: pd.DataFrame) -> policy.Gate:
    s = c.cfg.stream
    audits = decided[decided["route"] == policy.AUDIT] if len(decided) else decided
    audited = {str(r.item_id): (str(r.label), float(r.confidence)) for r in audits.itertuples()}
    outcomes = policy.audit_outcomes(audited, people_labels(c, set(audited)))
    return policy.gate_threshold(outcomes, threshold=s.threshold, min_precision=s.min_precision,
                                 min_audits=s.min_audits)


# --------------------------------------------------------------------------- 4. decide
def calibration_rows(c: Campaign, model: Any, items: pd.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The model's probabilities on the calibration items with a label (known, else trusted by people) and
    those labels as column indices; (None, None) below ``[splits] min_calibration_labels``."""
    cal = items[items["split"] == "calibration"].set_index("item_id")
    labels = cal["known_label"]
    trust = c.ledger.trust.trust_items_frame()
    if len(trust):
        trusted = trust[trust["status"] == "trusted"].set_index("item_id")["label"]
        labels = labels.where(labels.notna(), trusted.reindex(labels.index))
    labels = labels[labels.isin(c.labels)]
    need = min(c.cfg.splits.min_calibration_labels, len(cal))
    if len(labels) < max(need, 1):
        return None, None
    proba = predict_proba_aligned(model, cal.loc[labels.index, "text"].tolist(), c.labels)
    idx = {lbl: i for i, lbl in enumerate(c.labels)}
    return proba, np.array([idx[y] for y in labels], dtype=int)


def decide(c: Campaign, gate: policy.Gate, now: datetime, files_of: dict[str, str] | None = None) -> dict[str, Any]:
    """Decide every arrival not decided yet (held ones first, then new ones by arrival) and record it."""
    items = c.ledger.items_frame()
    stream = items[items["split"] == STREAM_SPLIT]
    decided = c.ledger.stream_frame()
    final = set(decided.loc[decided["route"] != policy.HELD, "item_id"]) if len(decided) else set()
    held = decided.loc[decided["route"] == policy.HELD, "item_id"].tolist() if len(decided) else []
    held_set, in_stream = set(held), set(stream["item_id"])
    fresh = [i for i in stream["item_id"] if i not in final and i not in held_set]
    todo = [i for i in held if i in in_stream] + fresh
    info: dict[str, Any] = {"decided": 0, "model_version": None, "temperature": None, "threshold": gate.threshold,
                            "note": None, **{r: 0 for r in policy.ROUTES}}
    if not todo:
        return info
    model, version = current_model(c)
    texts = stream.set_index("item_id").loc[todo, "text"].tolist()
    threshold = gate.threshold
    if model is None:
        pred, raw, conf = [None] * len(todo), [float("nan")] * len(todo), [0.0] * len(todo)
        threshold, info["note"] = None, "no model yet (no round has trained one): every arrival goes to people"
    else:
        proba = predict_proba_aligned(model, texts, c.labels)
        p_cal, y_cal = calibration_rows(c, model, items)
        conf_arr, temp = policy.calibrated_confidence(proba, p_cal, y_cal)
        pred = [c.labels[int(k)] for k in proba.argmax(axis=1)]
        raw, conf = proba.max(axis=1).tolist(), conf_arr.tolist()
        info["temperature"] = temp
        if temp is None:
            threshold = None
            info["note"] = ("too few labelled calibration items to calibrate the model's confidence "
                            f"([splits] min_calibration_labels): every arrival goes to people")
    today = now.date().isoformat()
    sent_today = int(((decided["day"] == today) & decided["sent_at"].notna()).sum()) if len(decided) else 0
    routing = policy.route(todo, [p or "" for p in pred], conf, threshold=threshold,
                           audit_share=c.cfg.stream.audit_share,
                           budget_left=policy.budget_left(c.cfg.stream.daily_budget, sent_today),
                           seed=c.cfg.splits.random_state)
    source_of = {**dict(zip(decided["item_id"], decided["arrival_file"])), **(files_of or {})} if len(decided) \
        else dict(files_of or {})
    rows = []
    for d, p, r in zip(routing.decisions, pred, raw):
        to_people = d.route in (policy.ROUTED, policy.AUDIT)
        rows.append({"item_id": d.item_id, "arrival_file": source_of.get(d.item_id), "route": d.route,
                     "label": d.label, "source": policy.AUTO_SOURCE if d.label is not None else None,
                     "confidence": d.confidence, "raw_confidence": None if r != r else float(r),
                     "predicted_label": p, "model_version": version, "threshold": threshold, "day": today,
                     "decided_at": now, "sent_at": now if to_people else None})
    # people's items: queries of the pseudo-arm first (a crash after this pushes them on the next run)
    batch = max(next_round_no(c) - 1, 0)
    c.ledger.add_queries(STREAM_ARM, batch, [
        {"item_id": d.item_id, "strategy": "stream", "reason": REASONS[d.route], "score": d.confidence,
         "model_version": version} for d in routing.decisions if d.route in REASONS])
    c.ledger.record_stream_decisions(rows)
    info.update(routing.counts())
    info.update(decided=len(rows), model_version=version, threshold=threshold,
                predictions={d.item_id: (p, d.confidence, version) for d, p in zip(routing.decisions, pred)
                             if d.route in REASONS and p})
    return info


# --------------------------------------------------------------------------- 6. log
def log_stream_run(c: Campaign, result: dict[str, Any], gate: policy.Gate, totals: dict[str, int]) -> str:
    tr = c.tracker
    parent = tr.parent_run(c.ledger, tracking_params(c.cfg, c.featurizer_kind))
    run = tr.client.create_run(tr.experiment_id, run_name=f"stream-{result['at'].replace(':', '')}",
                               tags={"mlflow.parentRunId": parent, "labelloop.campaign": c.name,
                                     "labelloop.kind": "stream", "labelloop.stream.gate": gate.reason[:4000],
                                     "labelloop.stream.model_version": str(result.get("model_version") or "none")})
    rid = run.info.run_id
    s = c.cfg.stream
    tr.log_params(rid, {"threshold": s.threshold, "audit_share": s.audit_share, "daily_budget": s.daily_budget,
                        "min_precision": s.min_precision, "min_audits": s.min_audits,
                        "train_on_auto": s.train_on_auto})
    p = gate.precision
    metrics = {f"stream_{k}": float(result[k]) for k in ("auto", "audit", "routed", "held", "decided")}
    metrics.update({f"stream_total_{k}": float(v) for k, v in totals.items()})
    metrics.update({"stream_files": float(result["ingested"]["files"]),
                    "stream_arrivals_added": float(result["ingested"]["added"]),
                    "stream_auto_labelling": 0.0 if result["threshold"] is None else 1.0,
                    "stream_threshold": result["threshold"], "stream_temperature": result.get("temperature"),
                    "stream_audit_precision": p.precision, "stream_audit_precision_n": float(p.n),
                    "stream_audit_precision_low": p.low, "stream_audit_correct": float(p.correct)})
    step = int(sum(totals.values()))
    tr.log_metrics(rid, metrics, step=step)
    tr.log_metrics(parent, {k: metrics[k] for k in ("stream_audit_precision", "stream_audit_precision_n",
                                                    "stream_audit_precision_low", "stream_threshold")},
                   step=step)
    tr.log_text(rid, json.dumps({k: v for k, v in result.items() if k != "predictions"}, indent=2, default=str),
                "stream_report.json")
    tr.finish(rid)
    return rid


# --------------------------------------------------------------------------- the flow
def stream_once(c: Campaign, arrivals: Path | None, *, now: datetime | None = None) -> dict[str, Any]:
    """Steps 1-6 (see the module docstring). Validation comes first: a bad file writes nothing."""
    now = now or datetime.now(timezone.utc)
    files = new_arrivals(c, arrivals) if arrivals is not None else []
    with round_lock(c):
        ensure_setup(c)
        label_history(c)  # a label set changed under the same version stops here, before anything is written
        ingested, files_of = ingest(c, files)
        pull_annotations(c, next_round_no(c))  # answered audits count now (attributed to the next round)
        before = c.ledger.stream_frame()
        gate = current_gate(c, before)
        info = decide(c, gate, now, files_of)
        predictions = info.pop("predictions", {})
        checkpoint("stream-after-decide")
        # always: items a failed push left queried but without a task go out now (push_pending skips the rest)
        pushed = push_pending(c, max(next_round_no(c) - 1, 0), predictions)
    after = c.ledger.stream_frame()
    totals = {r: int((after["route"] == r).sum()) if len(after) else 0 for r in policy.ROUTES}
    result = {"campaign": c.name, "at": now.isoformat(timespec="seconds"), "arrivals": str(arrivals or ""),
              "other_files": other_files(arrivals),
              "ingested": ingested, "pushed": pushed, "gate": gate.reason, "totals": totals,
              "audit_precision": gate.precision.precision, "audit_precision_n": gate.precision.n,
              "audit_precision_low": gate.precision.low, **info}
    result["mlflow_run_id"] = log_stream_run(c, result, gate, totals)
    return result


def describe(result: dict[str, Any]) -> str:
    """One paragraph for the terminal."""
    ing = result["ingested"]
    thr = result["threshold"]
    p = result["audit_precision"]
    lines = [f"campaign {result['campaign']!r}: {ing['added']} new arrival(s) from {ing['files']} file(s); "
             f"decided {result['decided']}: {result['auto']} auto-labelled, {result['audit']} audited, "
             f"{result['routed']} to people, {result['held']} held (daily budget)",
             f"  threshold {'off (automatic labelling stopped)' if thr is None else f'{thr:.3f}'}; "
             f"audited precision " + ("n/a" if p is None else f"{p:.3f} (95% low {result['audit_precision_low']:.3f}, "
                                                              f"n={result['audit_precision_n']})") + f"; {result['gate']}"]
    if result.get("note"):
        lines.append(f"  note: {result['note']}")
    if result.get("other_files"):
        names = result["other_files"]
        lines.append(f"  left alone: {len(names)} file(s) that are not CSV, Parquet or JSON Lines "
                     f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    return "\n".join(lines)


@flow(name="labelloop-stream", log_prints=True)
def stream_flow(config: str, arrivals: str | None = None) -> dict[str, Any]:
    """Label what the champion is sure of, send the rest (and an audit share) to people; log audit precision."""
    c = open_campaign(config)
    path = Path(arrivals) if arrivals else c.cfg.stream_arrivals_path
    if path is not None and not path.is_absolute():
        path = (Path.cwd() / path).resolve()
    if path is None:
        get_run_logger().info("campaign %s: no arrivals folder ([stream] arrivals or --arrivals): only held items "
                              "are decided", c.name)
    result = stream_once(c, path)
    print(describe(result))
    return result


def auto_labels(ledger: Any) -> pd.DataFrame:
    """``item_id, label, confidence, model_version`` of every automatic label (auto and audited)."""
    frame = ledger.stream_frame()
    if frame.empty:
        return pd.DataFrame(columns=["item_id", "label", "confidence", "model_version"])
    frame = frame[(frame["source"] == policy.AUTO_SOURCE) & frame["label"].notna()]
    return frame[["item_id", "label", "confidence", "model_version"]].reset_index(drop=True)
