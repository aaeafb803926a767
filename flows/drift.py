"""The drift check: do the new arrivals still look like the data the model was trained on?

Compares the arrivals that are not in the ledger yet (a file or a folder,
``[drift] arrivals`` or ``--arrivals``) with a reference sample of the
campaign's items, using ``tasks/drift.drift_report``: a domain classifier's
cross-validated ROC-AUC (reference vs new), the population stability index of
the model's confidence, the shift of the predicted label mix and the
out-of-vocabulary rate. Thresholds come from ``[drift]``; drift is called
when at least ``min_signals`` of them fire.

Every check is an MLflow run (tag ``labelloop.kind = drift``, nested under
the campaign's parent run) with the scores as metrics and a small Markdown
report. On drift the flow emits the Prefect event ``labelloop.drift.detected``
(resource ``labelloop.campaign.<name>``; payload: scores, arrivals path,
episode id), which triggers the reopen deployment. ``labelloop drift-alert``
emits the same event for an external monitoring system.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger

from labelloop.flows.config import tracking_params
from labelloop.flows.locking import round_lock
from labelloop.flows.runtime import Campaign, open_campaign
from labelloop.flows.setup import ensure_setup
from labelloop.integrations.artifacts import load_pickled
from labelloop.integrations.sources import InputError, load_table

DRIFT_EVENT = "labelloop.drift.detected"
SCORE_KEYS = ("domain_auc", "confidence_psi", "label_shift", "oov_rate")


def resource_id(campaign: str) -> str:
    return f"labelloop.campaign.{campaign}"


# --------------------------------------------------------------------------- arrivals
def load_arrivals(c: Campaign, path: str | Path) -> pd.DataFrame:
    """Read arrivals with the campaign's column names; a missing label column is fine (new data is unlabelled)."""
    d = c.cfg.data
    how = {"encoding": d.encoding, "delimiter": d.delimiter, "skip_unsupported": d.skip_unsupported_files}
    try:
        return load_table(path, id_col=d.id_column, text_col=d.text_column, label_col=d.label_column, **how)
    except InputError as err:
        if d.label_column and err.field == d.label_column:
            return load_table(path, id_col=d.id_column, text_col=d.text_column, label_col=None, **how)
        raise


def episode_id(c: Campaign, path: str | Path) -> str:
    """A drift episode id that depends only on which items arrived: the same arrivals give the same id."""
    frame = load_arrivals(c, path)
    ids = sorted(str(i) for i in frame["id"].dropna())
    return "ep-" + hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()[:12]


def arrivals_path(c: Campaign, arrivals: str | None) -> Path | None:
    if arrivals:
        p = Path(arrivals)
        return p if p.is_absolute() else (Path.cwd() / p).resolve()
    return c.cfg.arrivals_path


# --------------------------------------------------------------------------- the decision
def decide(scores: Mapping[str, float | None], cfg: Any) -> tuple[bool, list[str]]:
    """Drift when at least ``cfg.min_signals`` statistics reach their thresholds (``cfg`` is ``[drift]``).

    A statistic that could not be computed (None / NaN, e.g. no model yet for
    the confidence PSI) neither fires nor counts against.
    """
    fired = []
    for key, limit in thresholds(cfg).items():
        v = scores.get(key)
        if v is None or not math.isfinite(float(v)):
            continue
        if float(v) >= float(limit):
            fired.append(f"{key} {float(v):.3f} >= {float(limit):.3f}")
    return len(fired) >= cfg.min_signals, fired


# --------------------------------------------------------------------------- statistics (tasks/drift)
def thresholds(cfg: Any) -> dict[str, float]:
    """``[drift]`` thresholds in the shape ``tasks.drift.drift_report`` takes."""
    return {"domain_auc": cfg.domain_auc, "confidence_psi": cfg.confidence_psi,
            "label_shift": cfg.label_shift, "oov_rate": cfg.oov_rate}


def compute_report(reference_texts: list[str], new_texts: list[str], *, proba_reference: np.ndarray | None,
                   proba_new: np.ndarray | None, labels: list[str], cfg: Any, seed: int = 0) -> dict[str, Any]:
    """``tasks.drift.drift_report`` on texts and (when a model exists) its probabilities."""
    from labelloop.tasks.drift import drift_report  # heavy (scipy, scikit-learn): `labelloop drift emit` never needs it

    have_model = proba_reference is not None and proba_new is not None
    return drift_report(
        reference_texts, new_texts,
        proba_reference.max(axis=1) if have_model else None, proba_new.max(axis=1) if have_model else None,
        [labels[i] for i in proba_reference.argmax(axis=1)] if have_model else None,
        [labels[i] for i in proba_new.argmax(axis=1)] if have_model else None,
        labels, thresholds(cfg), seed=seed)


def current_model(c: Campaign) -> tuple[Any, str | None]:
    """The ``champion`` model from the registry, else the latest active round's model, else (None, None)."""
    tr = c.tracker
    try:
        mv = tr.client.get_model_version_by_alias(tr.registered_model_name, "champion")
        uri = f"models:/{tr.registered_model_name}@champion"
        return load_pickled(lambda: tr.mlflow.sklearn.load_model(uri)), f"v{mv.version}"
    except Exception:  # noqa: BLE001 - no registry / no champion yet
        pass
    for r in reversed(c.ledger.list_rounds()):
        if r.arm in ("active", "random") and r.mlflow_run_id and r.status in ("done", "stopped"):
            try:
                uri = f"runs:/{r.mlflow_run_id}/model"
                return load_pickled(lambda: tr.mlflow.sklearn.load_model(uri)), r.mlflow_run_id
            except Exception:  # noqa: BLE001 - that round logged no model
                continue
    return None, None


def _report_markdown(c: Campaign, result: dict[str, Any]) -> str:
    d = c.cfg.drift
    limits = thresholds(d)
    lines = [f"# Drift check: campaign {c.name}", "",
             f"- checked at: {result['checked_at']}", f"- arrivals: `{result['arrivals']}`",
             f"- new items: {result['n_new']} (reference sample: {result['n_reference']})",
             f"- model: {result.get('model') or 'none yet (confidence statistics skipped)'}",
             f"- verdict: **{'DRIFT' if result['drifted'] else 'no drift'}**"
             + (f" ({'; '.join(result['fired'])})" if result["fired"] else ""), "",
             "| statistic | value | threshold | fires |", "|---|---|---|---|"]
    for k in SCORE_KEYS:
        v = result["scores"].get(k)
        val = "n/a" if v is None or not math.isfinite(v) else f"{v:.4f}"
        fires = "yes" if any(f.startswith(k + " ") for f in result["fired"]) else "no"
        lines.append(f"| {k} | {val} | {limits[k]} | {fires} |")
    if result.get("episode"):
        lines += ["", f"Drift episode: `{result['episode']}`"]
    return "\n".join(lines) + "\n"


def check(c: Campaign, arrivals: Path) -> dict[str, Any]:
    """Compute the drift verdict for the arrivals not yet in the ledger (no MLflow, no event)."""
    from labelloop.tasks.train import predict_proba_aligned  # heavy (scikit-learn): only the check needs it

    d = c.cfg.drift
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    frame = load_arrivals(c, arrivals)
    known = set(c.ledger.items_frame()["item_id"])
    new = frame[~frame["id"].astype(str).isin(known)]
    new = new[new["text"].notna() & (new["text"].astype(str).str.strip() != "")]
    result: dict[str, Any] = {"campaign": c.name, "arrivals": str(arrivals), "checked_at": now,
                              "n_arrivals": int(len(frame)), "n_new": int(len(new)), "n_reference": 0,
                              "scores": {k: None for k in SCORE_KEYS}, "fired": [], "drifted": False,
                              "episode": None, "model": None, "status": "checked"}
    if len(new) < d.min_new_items:
        result["status"] = (f"{len(new)} new arrivals (fewer than [drift] min_new_items = {d.min_new_items}): "
                            "no verdict")
        return result
    # Reference: rows the model was not trained on (the unqueried pool and the calibration slice), so the
    # model's confidence on them is honest; training rows would make every new batch look drifted.
    ref = c.ledger.items_frame(splits=["pool", "calibration"])
    ref = ref[~ref["item_id"].isin(set(c.ledger.queries_frame()["item_id"]))]
    if len(ref) > d.reference_size:
        ref = ref.sample(n=d.reference_size, random_state=c.cfg.splits.random_state)
    model, model_ref = current_model(c)
    ref_texts, new_texts = ref["text"].astype(str).tolist(), new["text"].astype(str).tolist()
    p_ref = p_new = None
    if model is not None:
        p_ref = predict_proba_aligned(model, ref_texts, c.labels)
        p_new = predict_proba_aligned(model, new_texts, c.labels)
    report = compute_report(ref_texts, new_texts, proba_reference=p_ref, proba_new=p_new, labels=c.labels, cfg=d,
                            seed=c.cfg.splits.random_state)
    scores = {k: report.get(k) for k in SCORE_KEYS}
    drifted, fired = decide(scores, d)
    result.update({"n_reference": int(len(ref)), "scores": scores, "fired": fired, "drifted": drifted,
                   "model": model_ref, "report": _jsonable(report)})
    if drifted:
        result["episode"] = episode_id(c, arrivals)
    return result


def _jsonable(obj: Any) -> Any:
    try:
        return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    except (TypeError, ValueError):
        return str(obj)


def log_drift_run(c: Campaign, result: dict[str, Any]) -> str:
    tr = c.tracker
    parent = tr.parent_run(c.ledger, tracking_params(c.cfg, c.featurizer_kind))
    run = tr.client.create_run(
        tr.experiment_id, run_name=f"drift-{result['checked_at'].replace(':', '')}",
        tags={"mlflow.parentRunId": parent, "labelloop.campaign": c.name, "labelloop.kind": "drift",
              "labelloop.drift": "detected" if result["drifted"] else "none",
              "labelloop.drift.fired": "; ".join(result["fired"]) or "none",
              "labelloop.drift.arrivals": result["arrivals"], "labelloop.drift.status": result["status"][:250],
              **({"labelloop.drift.episode": result["episode"]} if result["episode"] else {})})
    rid = run.info.run_id
    step = len(c.ledger.queries_frame(arm="active")) if "active" in c.cfg.arms else 0
    metrics = {f"drift_{k}": v for k, v in result["scores"].items() if v is not None}
    metrics.update({"drift_n_new": result["n_new"], "drift_n_reference": result["n_reference"],
                    "drift_detected": 1.0 if result["drifted"] else 0.0})
    tr.log_metrics(rid, metrics, step=step)
    d = c.cfg.drift
    tr.log_params(rid, {"domain_auc_threshold": d.domain_auc, "confidence_psi_threshold": d.confidence_psi,
                        "label_shift_threshold": d.label_shift, "oov_rate_threshold": d.oov_rate,
                        "min_signals": d.min_signals, "reference_size": d.reference_size})
    tr.log_text(rid, _report_markdown(c, result), "drift_report.md")
    tr.log_text(rid, json.dumps(_jsonable(result), indent=2), "drift_report.json")
    tr.finish(rid)
    return rid


def emit_drift_event(campaign: str, *, arrivals: str | None, scores: Mapping[str, Any] | None = None,
                     episode: str | None = None, reason: str | None = None, source: str = "drift-check",
                     extra: Mapping[str, Any] | None = None) -> Any:
    """Emit ``labelloop.drift.detected`` for ``campaign`` (the reopen deployment's trigger)."""
    from prefect.events import emit_event

    payload = {"campaign": campaign, "arrivals": arrivals or "", "episode": episode or "",
               "reason": reason or "", "source": source,
               "scores": {k: v for k, v in (scores or {}).items() if v is not None}, **(extra or {})}
    return emit_event(event=DRIFT_EVENT,
                      resource={"prefect.resource.id": resource_id(campaign), "prefect.resource.name": campaign,
                                "labelloop.campaign": campaign},
                      payload=payload)


def drain_events(timeout: float = 30.0) -> None:
    """Flush queued events before a short-lived process exits."""
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=timeout)


@flow(name="labelloop-drift-check", log_prints=True)
def drift_check_flow(config: str, arrivals: str | None = None) -> dict[str, Any]:
    """Compare new arrivals with the reference data; log an MLflow drift run; on drift, emit the event."""
    logger = get_run_logger()
    c = open_campaign(config)
    path = arrivals_path(c, arrivals)
    if path is None:
        msg = "no arrivals configured ([drift] arrivals) and none given: nothing to check"
        logger.info("campaign %s: %s", c.name, msg)
        return {"campaign": c.name, "status": msg, "drifted": False}
    if c.ledger.get_meta("setup_done") != "1":
        with round_lock(c):
            ensure_setup(c)
    result = check(c, path)
    result["mlflow_run_id"] = log_drift_run(c, result)
    if result["drifted"]:
        ev = emit_drift_event(c.name, arrivals=str(path), scores=result["scores"], episode=result["episode"],
                              reason="drift check: " + "; ".join(result["fired"]),
                              extra={"mlflow_run_id": result["mlflow_run_id"], "n_new": result["n_new"]})
        result["event_id"] = str(ev.id) if ev is not None else None
        print(f"campaign {c.name!r}: DRIFT in {result['n_new']} new arrivals ({'; '.join(result['fired'])}); "
              f"emitted {DRIFT_EVENT} (episode {result['episode']})")
    else:
        sc = ", ".join(f"{k}={v:.3f}" for k, v in result["scores"].items() if v is not None) or "-"
        print(f"campaign {c.name!r}: no drift ({result['status']}; {sc})")
    result.pop("report", None)
    return result
