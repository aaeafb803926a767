"""The round flow: pull → agree → train → evaluate → query → push → log.

Every stage is a Prefect task; the ones that talk to the outside retry. The
ledger records how far a round got, so a round killed anywhere and run again
resumes: its queries are reused (never re-drawn), only items without a
backend task are pushed, and the MLflow runs are the same ones.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.config import CampaignConfig
from flows.faults import checkpoint
from flows.campaign_state import (active_random_share, campaign_finished, drift_boost,  # noqa: F401
                                  learning_curves, macro_f1_ci, next_round_no,  # re-exported: `labelloop status`
                                  random_ahead_fired_before)
from flows.logs import say
from flows.trust import EVAL_ARM, TrustDecision, decide_trust, queue_gold, trust_policy
from flows.runtime import Campaign, open_campaign
from flows.scoring import ScaleSettings, score_pool, transform_with_progress
from integrations.backend import TaskRequest
from tasks import calibrate, health, query
from tasks.readiness import Readiness, batch_readiness, with_evaluation
from tasks.annotate import screen_annotations
from tasks.evaluate import classification_metrics, confusion_figure, learning_curve_figure, macro_f1_interval
from tasks.policy import (ArmState, Calibration, Policy, RoundPlan, plan_round, price_per_point, round_rng,
                          stop_reason)
from tasks.strategies import strategy_for_arm
from tasks.train import TrainingError, predict_proba_aligned, train_model

stage = task(cache_policy=NO_CACHE)  # inputs are live objects (ledger, backend): never hash or cache them


@dataclass
class ArmResult:
    arm: str
    round_no: int
    strategy: str
    n_labels: int = 0
    labels_spent: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    n_queried: int = 0
    stopped: str | None = None  # reason the arm stopped, if it did
    run_id: str | None = None
    health_tags: dict[str, str] = field(default_factory=dict)
    judged: bool = True  # enough trusted test items to judge the model (champion, health, stopping on the metric)


class RoundFeatures:
    """The featuriser's rows for the campaign's items, transformed at most once per round.

    Why: a round used to transform the same texts again and again (the pool once per arm in
    scoring, a pool sample per arm in the health checks, the stop set per arm, the queried
    batch for its predictions): about 25,000 transforms for a 10,000-text campaign, several
    seconds of repeated work (issue 18). The featuriser is frozen and transforms each text on
    its own (TF-IDF rows, per-text embeddings), so a row taken from the whole matrix equals the
    row of a transform of that text alone. Campaigns larger than one scoring partition keep
    transforming on demand (the whole matrix would not be one piece of memory).
    """

    def __init__(self, vec: Any, items: pd.DataFrame, limit: int) -> None:
        self.vec = vec
        self._texts = items.set_index("item_id")["text"]
        self._rows = pd.Series(np.arange(len(items)), index=items["item_id"].to_numpy())
        self._limit = limit
        self._X: Any = None

    @property
    def whole(self) -> bool:
        """Whether rows come from one matrix of all items (small enough to hold)."""
        return len(self._rows) <= self._limit

    def of(self, item_ids: Sequence[str]) -> Any:
        """Feature rows of ``item_ids``, in that order."""
        ids = list(item_ids)
        if not self.whole:
            return self.vec.transform(self._texts.loc[ids].tolist())
        if self._X is None:
            self._X = transform_with_progress(self.vec, self._texts.tolist(), "featurising the pool")
        return self._X[self._rows.loc[ids].to_numpy()]

    def proba(self, model: Any, item_ids: Sequence[str], classes: Sequence[str]) -> np.ndarray:
        """``predict_proba_aligned`` of ``model`` on these items, from their feature rows."""
        return predict_proba_aligned(model, self.of(item_ids), classes, features=True)


# --------------------------------------------------------------------------- pull / agreement
@task(name="pull-annotations", retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def pull_annotations(c: Campaign, round_no: int) -> dict[str, Any]:
    """Pull everything the backend has, screen it, store it (idempotently by backend annotation id)."""
    pulled = c.backend.pull()
    frame = pd.DataFrame([a.__dict__ for a in pulled]) if pulled else pd.DataFrame(
        columns=["backend_annotation_id", "backend_task_id", "item_id", "annotator", "label", "status"])
    known = c.ledger.task_ids()
    good, problems = screen_annotations(frame, known_items=set(known), labels=c.labels)
    keep = set(good["backend_annotation_id"]) if len(good) else set()
    counts = c.ledger.upsert_annotations([a for a in pulled if a.backend_annotation_id in keep],
                                         backend=c.backend.name, round_no=round_no)
    counts["rejected"] = len(frame) - len(good)
    counts["problems"] = problems
    return counts


# --------------------------------------------------------------------------- per arm
def _labelled_set(c: Campaign, arm: str, consensus: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    q = c.ledger.queries_frame(arm=arm)
    spent = int(len(q))
    lab = q[["item_id"]].merge(consensus[["label"]], left_on="item_id", right_index=True, how="inner")
    return lab, spent


def evaluation_labels(items: pd.DataFrame, trust: TrustDecision, labels: list[str]) -> pd.Series:
    """item_id -> the label each test / calibration item is evaluated against this round.

    A known label (from the data or a ``[splits] test_path`` file) where there is one, else the
    trusted consensus of the people who labelled it so far. Both arms read this one Series, so
    they are measured on the very same items. Labels outside the current label set are left out.
    """
    ev = items[items["split"].isin(["test", "calibration"])].set_index("item_id")["known_label"]
    trusted = trust.evaluation["label"] if len(trust.evaluation) else pd.Series(dtype=object)
    out = ev.where(ev.notna(), trusted.reindex(ev.index))
    return out[out.isin(labels)]


def evaluation_thresholds(c: Campaign, items: pd.DataFrame) -> tuple[int, int]:
    """Trusted test and calibration items a round needs before it judges the model / the calibration gate:
    ``[splits] min_test_labels`` / ``min_calibration_labels``, or the whole split when it is smaller."""
    s = c.cfg.splits
    return (min(s.min_test_labels, int((items["split"] == "test").sum())),
            min(s.min_calibration_labels, int((items["split"] == "calibration").sum())))


@stage
def train_and_evaluate(c: Campaign, arm: str, labelled: pd.DataFrame, items: pd.DataFrame, vec: Any,
                       eval_labels: pd.Series | None = None) -> dict:
    """Train on the arm's trusted labels; evaluate on the test items labelled so far (with a 95 % bootstrap
    interval) and check calibration on the calibration items labelled so far."""
    cfg = c.cfg
    if eval_labels is None:  # callers without a trust decision: the known labels only
        ev = items[items["split"].isin(["test", "calibration"])].set_index("item_id")["known_label"]
        eval_labels = ev[ev.isin(c.labels)]
    texts = items.set_index("item_id").loc[labelled["item_id"], "text"].tolist()
    model = train_model(vec, texts, labelled["label"].tolist(), C=cfg.model.C, random_state=cfg.splits.random_state)
    test = items[(items["split"] == "test") & items["item_id"].isin(eval_labels.index)]
    cal = items[(items["split"] == "calibration") & items["item_id"].isin(eval_labels.index)]
    need_test, need_cal = evaluation_thresholds(c, items)
    y_test = eval_labels.reindex(test["item_id"]).tolist()
    p_test = predict_proba_aligned(model, test["text"], c.labels) if len(test) else np.zeros((0, len(c.labels)))
    metrics: dict[str, float] = {"test_n": float(len(test)), "calibration_n": float(len(cal))}
    if len(test):
        metrics.update({f"test_{k}": v for k, v in classification_metrics(y_test, p_test, c.labels).items()})
        lo, hi = macro_f1_interval(y_test, p_test, c.labels, seed=cfg.splits.random_state)
        metrics["test_macro_f1_ci_low"], metrics["test_macro_f1_ci_high"] = lo, hi
    idx = {lbl: i for i, lbl in enumerate(c.labels)}
    p_cal = predict_proba_aligned(model, cal["text"], c.labels) if len(cal) else np.zeros((0, len(c.labels)))
    y_cal = np.array([idx[y] for y in eval_labels.reindex(cal["item_id"])], dtype=int)
    if len(cal) >= max(need_cal, 1):
        report = calibrate.calibration_report(p_cal, y_cal, method="temperature", gate=cfg.gates.calibration_ece)
        report["judged"] = True
        metrics["calibration_ece"] = report["ece_before"]
        metrics["calibration_ece_after"] = report["ece_after"]
        metrics["calibration_brier"] = report["brier_before"]
    else:  # too few to judge: no fallback on an ECE measured on a handful of items
        report = {"judged": False, "gate_passed": True, "ece_before": float("nan"), "ece_after": float("nan"),
                  "n_rows": len(cal), "needed": need_cal}
    return {"model": model, "metrics": metrics, "p_test": p_test, "y_test": y_test,
            "p_cal": p_cal, "y_cal": y_cal, "calibration": report, "judged": len(test) >= max(need_test, 1),
            "need_test": need_test}


@stage
def query_batch(c: Campaign, plan: RoundPlan, model: Any, items: pd.DataFrame, feats: RoundFeatures,
                labelled: pd.DataFrame, model_version: str) -> int:
    """Select and record the batch ``plan`` asks for (:func:`tasks.policy.plan_round`); a re-run returns
    the recorded one. The selection itself is :func:`tasks.query.select_round_batch`, as in ``simulate``."""
    arm, round_no, n = plan.arm, plan.round_no, plan.batch_size
    existing = c.ledger.queries_frame(arm=arm, round_no=round_no)
    if len(existing):
        return len(existing)
    queried = set(c.ledger.queries_frame(arm=arm)["item_id"])
    cand = items[(items["split"] == "pool") & ~items["item_id"].isin(queried)].reset_index(drop=True)
    if cand.empty or n <= 0:
        return 0
    rng = round_rng(c.cfg.splits.random_state, round_no, arm)
    if model is None:  # cold start: nothing trusted to train on yet, so spread the batch out instead
        X_pool, proba = feats.of(cand["item_id"]), None
    elif feats.whole:  # = score_pool's in-process branch, on rows transformed once this round
        X_pool = feats.of(cand["item_id"])
        proba = predict_proba_aligned(model, X_pool, c.labels, features=True)
    else:
        X_pool, proba = score_pool(model, feats.vec, cand["text"].tolist(), c.labels, scale=c.cfg.scale)
    q = c.cfg.query
    picks = query.select_round_batch(
        plan.strategy, n, rng, proba=proba, X_pool=X_pool,
        X_labelled=feats.of(labelled["item_id"]) if len(labelled) else None,
        y_labelled=labelled["label"].to_numpy(), estimator=model.named_steps["clf"] if model is not None else None,
        classes=c.labels, random_share=plan.random_share, class_quota=q.class_quota,
        near_duplicate_threshold=q.near_duplicate_threshold)
    rows = [{"item_id": cand.loc[p.index, "item_id"], "strategy": plan.strategy, "reason": p.reason,
             "score": float(p.score), "model_version": model_version} for p in picks]
    return c.ledger.add_queries(arm, round_no, rows)


# --------------------------------------------------------------------------- push
@task(name="push-batch", retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def push_pending(c: Campaign, round_no: int, predictions: dict[str, tuple[str, float, str]]) -> int:
    """Push every queried item that has no backend task yet (this round's and any a crash left behind)."""
    q = c.ledger.queries_frame()
    have = c.ledger.task_ids()
    todo = q[~q["item_id"].isin(have)].drop_duplicates("item_id")
    if todo.empty:
        return 0
    texts = c.ledger.items_frame().set_index("item_id")["text"]
    reqs = []
    for r in todo.itertuples():
        pred = predictions.get(r.item_id)
        reqs.append(TaskRequest(item_id=r.item_id, text=texts[r.item_id],
                                predicted_label=pred[0] if pred else None,
                                confidence=pred[1] if pred else None,
                                model_version=pred[2] if pred else r.model_version))
    mapping = c.backend.push(reqs)
    checkpoint("after-import-before-ledger")
    c.ledger.record_tasks(c.backend.name, round_no, mapping)
    _after_push(c)
    return len(reqs)


def _after_push(c: Campaign) -> None:
    """Demo / tests: simulated annotators answer through real Label Studio users."""
    ls = c.cfg.annotation.label_studio
    if c.cfg.annotation.backend != "label_studio" or not ls.simulate_annotators:
        return
    from integrations.label_studio_crowd import SimAnnotator, answer_open_tasks

    known = c.ledger.items_frame()
    truth = {r.item_id: r.known_label for r in known.itertuples() if r.known_label is not None}
    answer_open_tasks(c.backend, truth,
                      [SimAnnotator(a.name, a.accuracy) for a in c.cfg.annotation.simulated.annotators],
                      overlap=c.cfg.annotation.overlap, seed=c.cfg.annotation.simulated.seed)


# --------------------------------------------------------------------------- log
def _params(cfg: CampaignConfig) -> dict[str, Any]:
    """Campaign params for MLflow: choices only, never URLs or secrets."""
    return {
        "strategy": cfg.query.strategy, "batch_size": cfg.query.batch_size, "random_share": cfg.query.random_share,
        "class_quota": cfg.query.class_quota, "budget": cfg.budget.max_labels, "seed_size": cfg.splits.seed_size,
        "seed_method": cfg.splits.seed_method, "test_size": cfg.splits.test_size,
        "calibration_size": cfg.splits.calibration_size, "featurizer": cfg.model.featurizer,
        "min_test_labels": cfg.splits.min_test_labels, "min_calibration_labels": cfg.splits.min_calibration_labels,
        "evaluation_labels": cfg.budget.evaluation_labels if cfg.budget.evaluation_labels is not None else "splits",
        "classifier": cfg.model.classifier, "C": cfg.model.C, "backend": cfg.annotation.backend,
        "overlap": cfg.annotation.overlap, "labels": ",".join(cfg.labels.names),
        "label_set_version": cfg.labels.version, "ece_gate": cfg.gates.calibration_ece,
    }


@stage
def log_round(c: Campaign, res: ArmResult, ev: dict | None, parent_id: str, batch: pd.DataFrame) -> None:
    tr = c.tracker
    run_id = res.run_id
    tr.log_params(run_id, {"arm": res.arm, "strategy": res.strategy, "round": res.round_no})
    metrics = dict(res.metrics)
    metrics.update({"n_labels": res.n_labels, "labels_spent": res.labels_spent, "n_queried": res.n_queried,
                    "cost": res.labels_spent * c.cfg.budget.cost_per_label})
    price = _price_per_point(c, res, metrics)
    metrics.update(price)
    res.metrics.update({"labels_spent": float(res.labels_spent), **price})  # the ledger keeps them for later rounds
    tr.log_metrics(run_id, metrics, step=res.n_labels)
    checkpoint("during-log")
    # The parent run carries each arm's curve too, so one chart compares the arms.
    tr.log_metrics(parent_id, {f"{res.arm}_test_macro_f1": metrics.get("test_macro_f1"),
                               f"{res.arm}_test_accuracy": metrics.get("test_accuracy"),
                               f"{res.arm}_test_n": metrics.get("test_n"),
                               f"{res.arm}_test_macro_f1_ci_low": metrics.get("test_macro_f1_ci_low"),
                               f"{res.arm}_test_macro_f1_ci_high": metrics.get("test_macro_f1_ci_high")},
                   step=res.n_labels)
    tags = {"labelloop.notes": "; ".join(res.notes) if res.notes else "none", **res.health_tags}
    if res.stopped:
        tags["labelloop.stopped"] = res.stopped
    tr.set_tags(run_id, tags)
    if ev is not None:
        if len(ev["y_test"]):
            tr.log_figure(run_id, confusion_figure(ev["y_test"], ev["p_test"], c.labels,
                                                   title=f"{res.arm} round {res.round_no} (test n={len(ev['y_test'])})"),
                          "plots/confusion_matrix.png")
        if len(ev["y_cal"]):
            tr.log_figure(run_id, calibrate.reliability_diagram(ev["p_cal"], ev["y_cal"],
                                                                f"{res.arm} round {res.round_no} (calibration slice)"),
                          "plots/reliability_diagram.png")
        register = c.cfg.mlflow.register_model and res.arm == "active" or (
            c.cfg.mlflow.register_model and c.cfg.arms == ["random"])
        version = tr.log_model(run_id, ev["model"], register=register)
        if version is not None and "test_macro_f1" in metrics and res.judged:  # no champion on a handful of items
            promoted = tr.maybe_promote(version, metrics["test_macro_f1"])
            tr.set_tags(run_id, {"labelloop.model_version": version, "labelloop.champion": str(promoted).lower()})
    if len(batch):
        tr.log_table(run_id, batch, "queried_batch.json")
    tr.finish(run_id)


def _price_per_point(c: Campaign, res: ArmResult, metrics: dict) -> dict[str, float]:
    """:func:`tasks.policy.price_per_point` of this arm: its earlier evaluated rounds from the ledger, then this one."""
    if "test_accuracy" not in metrics:
        return {}
    hist = sorted((int(r.n_labels or 0), float(r.metrics.get("labels_spent", r.n_labels or 0)),
                   float(r.metrics["test_accuracy"])) for r in c.ledger.list_rounds()
                  if r.arm == res.arm and r.round_no < res.round_no and r.status in ("done", "stopped")
                  and "test_accuracy" in r.metrics)
    hist.append((int(res.n_labels), float(res.labels_spent), float(metrics["test_accuracy"])))
    return price_per_point(hist, c.cfg.budget.cost_per_label)


# --------------------------------------------------------------------------- the flow
@flow(name="labelloop-round")
def round_flow(config: str, round_no: int | None = None) -> dict[str, Any]:
    """Run (or resume) one round of the campaign described by ``config`` for every arm."""
    from flows.setup import ensure_setup

    from flows.locking import round_lock

    c = open_campaign(config)
    ensure_setup(c)
    with round_lock(c):
        return _run_round(c, round_no)


def _run_round(c: Campaign, round_no: int | None) -> dict[str, Any]:
    logger = get_run_logger()
    round_no = round_no if round_no is not None else next_round_no(c)
    t0 = time.perf_counter()
    # MLflow first: a tracking store that is down fails the round before the ledger changes
    parent_id = c.tracker.parent_run(c.ledger, _params(c.cfg))

    pulled = pull_annotations(c, round_no)
    checkpoint("after-pull")
    if pulled["problems"]:
        logger.warning("annotations rejected: %s", "; ".join(pulled["problems"]))
    trust = decide_trust(c, round_no)
    if not c.ledger.list_rounds(round_no=round_no):  # a resumed round already passed this check
        ready = open_batch_readiness(c, trust)
        if not ready.ready:
            return _waiting(c, round_no, ready, pulled)
    c.ledger.set_meta("waiting", "")
    gold_ids = queue_gold(c, round_no)
    trust.metrics["n_gold_queued"] = float(len(gold_ids))
    if gold_ids:
        trust.notes.append(f"{len(gold_ids)} gold item(s) mixed into this round's batch")
    consensus = trust.consensus
    items = c.ledger.items_frame()
    vec = c.featurizer()
    eval_labels = evaluation_labels(items, trust, c.labels)  # the same trusted test items for every arm
    policy = Policy.from_config(c.cfg)
    feats = RoundFeatures(vec, items, ScaleSettings.from_config(c.cfg.scale).partition_size)

    results: dict[str, ArmResult] = {}
    evals: dict[str, dict | None] = {}
    predictions: dict[str, tuple[str, float, str]] = {}
    for arm in c.cfg.arms:
        prev = c.ledger.get_round(arm, round_no)
        if prev is not None and prev.status in ("done", "stopped"):
            results[arm] = ArmResult(arm, round_no, prev.strategy or "", n_labels=prev.n_labels or 0,
                                     metrics=prev.metrics, stopped="already finished")
            continue
        strategy = strategy_for_arm(policy.query.strategy, arm)
        rec = c.ledger.start_round(arm, round_no, strategy)
        run_id = c.tracker.round_run(parent_id, arm, round_no, rec.mlflow_run_id)
        c.ledger.update_round(arm, round_no, mlflow_run_id=run_id, model_version=run_id)
        labelled, spent = _labelled_set(c, arm, consensus)
        res = ArmResult(arm, round_no, strategy, n_labels=len(labelled), labels_spent=spent, run_id=run_id)
        res.notes.extend(trust.notes)
        res.metrics = dict(trust.metrics)  # logged even when the arm cannot train (e.g. all quarantined)
        ev = None
        try:
            ev = train_and_evaluate(c, arm, labelled, items, vec, eval_labels)
            res.metrics = {**ev["metrics"], **trust.metrics}
            res.judged = ev["judged"]
            if not ev["judged"]:
                res.notes.append(
                    f"test set: {int(ev['metrics']['test_n'])} trusted item(s), below min_test_labels "
                    f"({ev['need_test']}): metrics shown with their interval, but no champion alias, health checks "
                    f"or stopping on the metric this round (querying goes on)")
            if not ev["calibration"]["judged"]:
                res.notes.append(
                    f"calibration gate not judged: {ev['calibration']['n_rows']} trusted calibration item(s), "
                    f"fewer than {ev['calibration']['needed']} (min_calibration_labels)")
        except TrainingError as err:
            res.notes.append(f"not trained: {err}; this batch is chosen without a model (diversity + random)")
        cal = ev["calibration"] if ev is not None else None
        state = ArmState(arm=arm, round_no=round_no, spent=spent, trained=ev is not None,
                         calibration=Calibration(bool(cal["judged"]), bool(cal["gate_passed"]), float(cal["ece_after"]))
                         if cal is not None else None,
                         boost=drift_boost(c) if arm == "active" else None,
                         random_ahead_fired=arm == "active" and random_ahead_fired_before(c, round_no))
        plan = plan_round(policy, state, stopped=_stop_reason(c, policy, state, res, ev, items, feats))
        fallback = plan.fallback
        if plan.fallback_reason:
            res.notes.append(plan.fallback_reason)
        res.stopped = plan.stopped
        if res.stopped is None:
            if plan.share_reason:
                res.notes.append(plan.share_reason)
            if arm == "active":
                res.metrics["query_random_share"] = plan.random_share
            res.n_queried = query_batch(c, plan, ev["model"] if ev else None, items, feats, labelled, run_id)
            c.ledger.update_round(arm, round_no, status="queried")
            checkpoint("after-query")
            batch_ids = c.ledger.queries_frame(arm=arm, round_no=round_no)["item_id"].tolist()
            if ev is not None and res.judged:
                checks = _health(c, arm, round_no, res, ev, items, feats, batch_ids)
                res.metrics.update(health.health_metrics(checks))
                res.health_tags = health.health_tags(checks)
                res.notes.extend(f"health: {h.name}: {h.message}" for h in checks if h.fired)
            if batch_ids and ev is not None:
                proba = feats.proba(ev["model"], batch_ids, c.labels)
                for i, p in zip(batch_ids, proba):
                    if arm == "active" or i not in predictions:
                        predictions[i] = (c.labels[int(p.argmax())], float(p.max()), run_id)
        c.tracker.set_tags(run_id, {**trust.tags, "labelloop.calibration_gate":
                                    "failed: diversity+random fallback" if fallback else "passed"})
        c.tracker.log_texts(run_id, trust.artifacts)  # Data Docs of each contract + trust/report.md
        results[arm] = res
        evals[arm] = ev

    pushed = push_pending(c, round_no, predictions)
    checkpoint("after-push")

    for arm, res in results.items():
        if res.stopped == "already finished":
            continue
        batch = c.ledger.queries_frame(arm=arm, round_no=round_no)
        log_round(c, res, evals.get(arm), parent_id, batch)
        checkpoint("after-log")
        c.ledger.update_round(arm, round_no, status="stopped" if res.stopped else "done", n_labels=res.n_labels,
                              metrics=res.metrics, notes=res.notes + ([res.stopped] if res.stopped else []))
    curves = learning_curves(c, with_ci=True)
    if curves:  # on the parent (the campaign's view) and on this round's runs (the curve as of that round)
        round_runs = [r.run_id for r in results.values() if r.run_id and r.stopped != "already finished"]
        c.tracker.log_figure([parent_id, *round_runs],
                             learning_curve_figure(curves, title=f"{c.name}: active vs random"),
                             "plots/learning_curve.png")
    summary = {
        "round": round_no, "state": "done" if campaign_finished(c) else "ready",
        "pulled": {k: v for k, v in pulled.items() if k != "problems"}, "pushed": pushed,
        "seconds": round(time.perf_counter() - t0, 2),
        "arms": {a: {"n_labels": r.n_labels, "labels_spent": r.labels_spent, "queried": r.n_queried,
                     "test_macro_f1": r.metrics.get("test_macro_f1"), "test_accuracy": r.metrics.get("test_accuracy"),
                     "test_n": int(r.metrics.get("test_n", 0)), "macro_f1_ci": macro_f1_ci(r.metrics),
                     "calibration_ece": r.metrics.get("calibration_ece"), "stopped": r.stopped, "notes": r.notes}
                 for a, r in results.items()},
    }
    for a, r in summary["arms"].items():
        f1 = r["test_macro_f1"]
        ci = r["macro_f1_ci"]
        print(f"round {round_no:>2} {a:<7} labels={r['n_labels']:>4} macro-F1={f1 if f1 is None else round(f1, 3)}"
              f"{f' [{ci[0]:.3f}, {ci[1]:.3f}]' if ci else ''} test_n={r['test_n']}"
              f" ECE={r['calibration_ece'] if r['calibration_ece'] is None else round(r['calibration_ece'], 3)}"
              f"{' STOP: ' + r['stopped'] if r['stopped'] else ''}", flush=True)
        for note in r["notes"]:  # gate fallbacks, guards, fired health checks, trust decisions
            print(f"    {a}: {note}", flush=True)
    return summary


def settle(c: Campaign, passes: int | None = None) -> dict[str, float]:
    """After the last round: pull and decide again, so late and extra answers still count.

    Why: the last round asks for extra answers on its unsure items (adaptive redundancy) and
    then every arm stops; without this those answers would never be read and the items would
    stay ``needs_more`` in ``labelloop export``. Each pass pulls, decides (asking for one more
    answer where still unsure) and stops when nothing moves; backends that answer at once
    (simulated, replay) settle fully, and with Label Studio a later ``labelloop run`` on the
    finished campaign collects what people added since. No model is trained, nothing is queried.
    """
    last: dict[str, float] = {}
    for _ in range(passes if passes is not None else c.cfg.annotation.max_overlap - c.cfg.annotation.overlap + 1):
        no = next_round_no(c)
        pulled = pull_annotations(c, no)
        decision = decide_trust(c, no)
        last = decision.metrics
        if not (pulled.get("inserted") or pulled.get("updated")) or last.get("n_needs_more", 0) == 0:
            break  # nothing new came in (people have not answered yet), or nothing is left to settle
    return last


def open_batch_readiness(c: Campaign, trust: TrustDecision) -> Readiness:
    """Whether the open batch (the arms' items pushed most recently) is answered enough to train on.

    See :mod:`tasks.readiness` for the rule and why. Gold items are left out: they score
    annotators and never train, so a round need not wait for them. Evaluation items (test and
    calibration items people label, pushed with the seed) are not part of any batch; while the
    seed is the open batch, the round also waits for ``min_test_labels`` answered test items
    (:func:`tasks.readiness.with_evaluation`).
    """
    q = c.ledger.queries_frame()
    tasks = c.ledger.tasks_frame()
    arm_items = set(q.loc[q["arm"].isin(c.cfg.arms), "item_id"]) if len(q) else set()
    open_tasks = tasks[tasks["item_id"].isin(arm_items)] if len(tasks) else tasks
    need = trust_need(c)
    if open_tasks.empty:
        return batch_readiness(None, [], {}, {}, need=need, ready_share=c.cfg.run.batch_ready_share)
    batch = int(open_tasks["round_no"].max())
    ids = sorted(set(open_tasks.loc[open_tasks["round_no"] == batch, "item_id"].astype(str)))
    ann = c.ledger.annotations_frame(submitted_only=True)
    answers = ann.drop_duplicates(["item_id", "annotator"]).groupby("item_id").size().to_dict() if len(ann) else {}
    status = trust.items["status"].to_dict() if len(trust.items) else {}
    never = getattr(c.backend, "unanswerable", None)
    ready = batch_readiness(batch, ids, answers, status, need=need, ready_share=c.cfg.run.batch_ready_share,
                            unanswerable=never(ids) if callable(never) else ())
    eval_q = q[q["arm"] == EVAL_ARM] if len(q) else q
    if batch != 0 or eval_q.empty:
        return ready
    test_ids = sorted(eval_q.loc[eval_q["strategy"] == "evaluation-test", "item_id"].astype(str))
    items = c.ledger.items_frame(splits=["test"])
    required, _ = evaluation_thresholds(c, items)
    return with_evaluation(ready, test_ids, answers, status, required=required,
                           unanswerable=never(test_ids) if callable(never) else ())


def trust_need(c: Campaign) -> int:
    """Answers each item is first asked for (the overlap; the simulated crowd may be smaller)."""
    return trust_policy(c).need


def _waiting(c: Campaign, round_no: int, ready: Readiness, pulled: dict) -> dict[str, Any]:
    """Record that the campaign waits for people (for ``status``) and return the waiting summary.

    Nothing else is written: no round record, no round run in MLflow (the campaign's parent run
    exists from the first attempt on), no query, so the round number is not used up and the next
    attempt is the same round.
    """
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        since = json.loads(c.ledger.get_meta("waiting") or "{}").get("since", now)
    except ValueError:
        since = now
    c.ledger.set_meta("waiting", json.dumps({"round": round_no, "since": since, "checked_at": now,
                                             **ready.as_dict()}))
    return {"round": round_no, "state": "waiting", "waiting_for": ready.waiting_for,
            "pulled": {k: v for k, v in pulled.items() if k != "problems"}, "readiness": ready.as_dict()}


def _stop_reason(c: Campaign, policy: Policy, state: ArmState, res: ArmResult, ev: dict | None,
                 items: pd.DataFrame, feats: RoundFeatures | None = None) -> str | None:
    """:func:`tasks.policy.stop_reason` on this arm's history in the ledger plus this round."""
    arm, round_no = state.arm, state.round_no
    history = [{"labels": int(r.n_labels or 0), "macro_f1": float(r.metrics["test_macro_f1"])}
               for r in c.ledger.list_rounds(arm=arm) if r.round_no < round_no and "test_macro_f1" in r.metrics]
    if ev is not None and "test_macro_f1" in res.metrics:
        history.append({"labels": res.n_labels, "macro_f1": res.metrics["test_macro_f1"]})
    stop_preds = (_stop_set_predictions(c, arm, round_no, ev, items, feats) if policy.stop.stability_kappa
                  else None)
    return stop_reason(policy.stop, round_no, state.spent, history, judged=ev is not None and res.judged,
                       stop_set_predictions=stop_preds)


def _stop_set_predictions(c: Campaign, arm: str, round_no: int, ev: dict | None, items: pd.DataFrame,
                          feats: RoundFeatures | None = None) -> list:
    """Predictions of this arm's successive models on a fixed unlabelled stop set (kept as .npy per round)."""
    folder = c.workdir / "stop_set"
    folder.mkdir(parents=True, exist_ok=True)
    if ev is not None:
        pool = items[items["split"] == "pool"].sort_values("item_id")
        sample = pool.sample(n=min(c.cfg.budget.stop_set_size, len(pool)), random_state=c.cfg.splits.random_state)
        proba = (feats.proba(ev["model"], sample["item_id"], c.labels) if feats is not None
                 else predict_proba_aligned(ev["model"], sample["text"].tolist(), c.labels))
        pred = proba.argmax(axis=1)
        np.save(folder / f"{arm}-{round_no:04d}.npy", pred)
    files = sorted(folder.glob(f"{arm}-*.npy"))
    return [np.load(f) for f in files if int(f.stem.split("-")[-1]) <= round_no]


def _health(c: Campaign, arm: str, round_no: int, res: ArmResult, ev: dict, items: pd.DataFrame,
            feats: RoundFeatures, batch_ids: list[str]) -> list:
    """This round's health checks for one arm (see tasks/health.py)."""
    prev_rounds = [r for r in c.ledger.list_rounds(arm=arm) if r.round_no < round_no and r.metrics]
    recall_history = [health.recalls_from_metrics(r.metrics, "test_recall_") for r in prev_rounds]
    recall_history.append(health.recalls_from_metrics(res.metrics, "test_recall_"))
    curves = learning_curves(c)
    active_curve = curves.get("active", []) + ([(res.n_labels, res.metrics["test_macro_f1"])] if arm == "active" else [])
    X_batch = feats.of(batch_ids) if batch_ids else None
    queried = set(c.ledger.queries_frame(arm=arm)["item_id"])
    pool = items[(items["split"] == "pool") & ~items["item_id"].isin(queried)]
    pool = pool.sample(n=min(2000, len(pool)), random_state=round_no) if len(pool) else pool
    X_pool = feats.of(pool["item_id"]) if len(pool) else None
    prev = c.ledger.queries_frame(arm=arm, round_no=round_no - 1)["item_id"].tolist()
    X_prev = feats.of(prev) if prev else None
    return health.run_health_checks(
        recall_history=recall_history, ece=ev["calibration"]["ece_after"],
        active_curve=active_curve if arm == "active" else None,
        random_curve=curves.get("random") if arm == "active" else None,
        X_batch=X_batch, X_pool=X_pool, X_prev_batch=X_prev,
        thresholds=health.HealthThresholds(ece_gate=c.cfg.gates.calibration_ece),
    )
