"""The round's stages as Prefect tasks: pull, train and evaluate, query, push, log.

Why a module of their own: the round flow (flows/round.py) reads as the loop and wires these;
set-up and ``doctor`` push and pull through the same tasks, without importing the round flow
(which imported set-up back: an import loop). The decisions are in tasks/ (the policy in
tasks/policy.py, the batch in tasks/query.py); a stage reads the campaign's ledger, calls
them and writes the result back. The ones that talk to the outside retry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from labelloop.flows.runtime import Campaign
from labelloop.flows.scoring import select_from_pool, transform_with_progress
from labelloop.integrations.backend import BackendError, TaskRequest
from labelloop.integrations.faults import checkpoint
from labelloop.integrations.label_studio_crowd import SimAnnotator, answer_open_tasks
from labelloop.tasks import calibrate, query
from labelloop.tasks.annotate import screen_annotations
from labelloop.tasks.annotation_cost import annotator_metrics, annotator_table, effort, hours_per_accuracy_point, items_of
from labelloop.tasks.batch_order import order_for_people
from labelloop.tasks.evaluate import Evaluation, classification_metrics, confusion_figure, macro_f1_interval
from labelloop.tasks.policy import RoundPlan, price_per_point, round_rng
from labelloop.tasks.train import predict_proba_aligned, train_model
from labelloop.tasks.trust import metric_name

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
def _not_after_backend_retries(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition for the backend tasks: retry anything but a :class:`BackendError`.

    Why: the backend adapter already retried that call with backoff within its own budget (Label
    Studio: ~25 s) before giving up; Prefect retrying it twice more tripled the wait (about a minute
    for an outage) and said the same failure three times. A 401 or 404 will not fix itself either.
    Other failures (a locked SQLite ledger, say) still get Prefect's retries.
    """
    return not isinstance(getattr(state, "data", None), BackendError)


@task(name="pull-annotations", retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE,
      retry_condition_fn=_not_after_backend_retries)
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
    counts["withdrawn"] = _withdraw_gone_answers(c, frame, keep)
    if counts["withdrawn"]:
        problems.append(f"{counts['withdrawn']} answer(s) stored earlier are no longer answers in the backend "
                        "(deleted there, or edited into no valid choice): they stop counting as labels")
    return counts


def _withdraw_gone_answers(c: Campaign, frame: pd.DataFrame, keep: set) -> int:
    """Answers the ledger holds that the backend has taken back: they stop counting as labels.

    Two ways, both seen with people: an annotation edited into something that is not an answer (the
    choice cleared, two choices) comes back rejected; an annotation deleted in Label Studio (a
    manager removing a spammer's work) no longer comes back at all. The second is only known for a
    backend that says which tasks its pull covered (``pulled_task_ids``: Label Studio), and only on
    those tasks, so a task deleted by hand, a closed simulated task or another project never
    withdraws anything.

    A rejected answer is withdrawn only when it was *edited* since it was stored (a later
    ``updated_at``): an answer given under an earlier label set comes back "invalid" from a backend
    that checks today's labels, unchanged, and must keep its stored label for the
    ``[[labels.previous]]`` mapping.
    """
    mine = c.ledger.annotations_with_versions()
    if mine.empty:
        return 0
    mine = mine[(mine["backend"] == c.backend.name) & (mine["status"] != "withdrawn")]
    stored_at = dict(zip(mine["backend_annotation_id"].astype(str), pd.to_datetime(mine["updated_at"], utc=True)))
    gone: set[str] = set()
    if len(frame):
        rejected = frame[~frame["backend_annotation_id"].astype(str).isin({str(k) for k in keep})]
        for ann_id, when in zip(rejected["backend_annotation_id"].astype(str),
                                pd.to_datetime(rejected["updated_at"], utc=True)):
            if ann_id in stored_at and pd.notna(when) and when > stored_at[ann_id]:
                gone.add(ann_id)
    covered = getattr(c.backend, "pulled_task_ids", None)
    if covered is not None:
        seen = set(frame["backend_annotation_id"].astype(str)) if len(frame) else set()
        on_covered = mine[mine["backend_task_id"].astype(str).isin(covered)]
        gone |= set(on_covered["backend_annotation_id"].astype(str)) - seen
    return c.ledger.withdraw_annotations(c.backend.name, gone) if gone else 0


# --------------------------------------------------------------------------- train / evaluate / query
def evaluation_thresholds(c: Campaign, items: pd.DataFrame) -> tuple[int, int]:
    """Trusted test and calibration items a round needs before it judges the model / the calibration gate:
    ``[splits] min_test_labels`` / ``min_calibration_labels``, or the whole split when it is smaller."""
    s = c.cfg.splits
    return (min(s.min_test_labels, int((items["split"] == "test").sum())),
            min(s.min_calibration_labels, int((items["split"] == "calibration").sum())))


@stage
def train_and_evaluate(c: Campaign, arm: str, labelled: pd.DataFrame, items: pd.DataFrame, vec: Any,
                       eval_labels: pd.Series | None = None) -> Evaluation:
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
    pseudo = None
    if cfg.model.self_training and len(cal) >= max(need_cal, calibrate.MIN_ROWS):  # a temperature from fewer is noise
        model, pseudo = _self_train(c, model, vec, items, labelled, texts, cal, eval_labels)
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
    # the gate is judged on a calibrated ECE only: below calibrate.MIN_ROWS nothing is calibrated, and a
    # gate on the raw ECE of a handful of items would send the round to the fallback on noise
    need_cal = max(need_cal, calibrate.MIN_ROWS)
    if len(cal) >= need_cal:
        report = calibrate.calibration_report(p_cal, y_cal, method="temperature", gate=cfg.gates.calibration_ece)
        metrics["calibration_ece"] = report.ece_before
        metrics["calibration_ece_after"] = report.ece_after
        metrics["calibration_brier"] = report.brier_before
    else:  # too few to judge: no fallback on an ECE measured on a handful of items
        report = calibrate.CalibrationReport.not_judged(len(cal), need_cal, cfg.gates.calibration_ece)
    if pseudo is not None:
        metrics["pseudo_labels"] = float(len(pseudo))
    return Evaluation(model=model, metrics=metrics, p_test=p_test, y_test=y_test, p_cal=p_cal, y_cal=y_cal,
                      calibration=report, judged=len(test) >= max(need_test, 1), need_test=need_test, pseudo=pseudo)


def _self_train(c: Campaign, model: Any, vec: Any, items: pd.DataFrame, labelled: pd.DataFrame, texts: list[str],
                cal: pd.DataFrame, eval_labels: pd.Series) -> tuple[Any, pd.DataFrame]:
    """``[model] self_training``: refit on the arm's trusted labels plus pseudo-labels
    (:func:`tasks.self_training.pseudo_labels` on the calibration slice's trusted labels).

    The pseudo-labels exist only in the model and in what the round logs about them (the
    ``pseudo_labels`` count in the ledger's round metrics and MLflow, the rows as MLflow's
    ``pseudo_labels.json`` tagged ``labelloop.pseudo_labels``): nothing is written where answers or
    trust decisions live, so ``labelloop export`` never returns them as human labels.
    """
    from labelloop.tasks.self_training import pseudo_labels

    cfg = c.cfg
    idx = {lbl: i for i, lbl in enumerate(c.labels)}
    pool = items[(items["split"] == "pool") & ~items["item_id"].isin(labelled["item_id"])]
    if pool.empty:
        return model, pool[["item_id"]].assign(label=[], confidence=[])
    p_cal = predict_proba_aligned(model, cal["text"], c.labels)
    y_cal = np.array([idx[y] for y in eval_labels.reindex(cal["item_id"])], dtype=int)
    ps = pseudo_labels(predict_proba_aligned(model, pool["text"], c.labels), p_cal, y_cal, len(labelled),
                       threshold=cfg.model.self_training_threshold)
    rows = pool.iloc[ps.rows]
    frame = pd.DataFrame({"item_id": rows["item_id"].to_numpy(), "label": [c.labels[i] for i in ps.labels],
                          "confidence": ps.confidence, "source": "pseudo"})
    if len(frame):
        model = train_model(vec, texts + rows["text"].tolist(), labelled["label"].tolist() + frame["label"].tolist(),
                            C=cfg.model.C, random_state=cfg.splits.random_state)
    return model, frame


@stage
def query_batch(c: Campaign, plan: RoundPlan, model: Any, items: pd.DataFrame, feats: RoundFeatures,
                labelled: pd.DataFrame, model_version: str) -> int:
    """Select and record the batch ``plan`` asks for (:func:`tasks.policy.plan_round`); a re-run returns
    the recorded one. The selection itself is :func:`tasks.query.select_round_batch`, as in ``simulate``.

    A pool larger than one ``[scale] partition_size`` goes through the bounded path instead
    (:func:`flows.scoring.select_from_pool`: each partition keeps its short list, the batch is
    ``select_round_batch`` on the merged short lists). Why: scoring the whole pool densely assembled
    its feature matrix and probabilities in one process (1.7 GiB at 1M texts) and cost 1.55x the bare
    fit + score (benchmarks/RESULTS.md, issue 16). The strategy share is what the dense path picks
    for per-item strategies; the random share is a hash draw per row seeded from the round's stream,
    so a re-run of the round draws the same items."""
    arm, round_no, n = plan.arm, plan.round_no, plan.batch_size
    existing = c.ledger.queries_frame(arm=arm, round_no=round_no)
    if len(existing):
        return len(existing)
    queried = set(c.ledger.queries_frame(arm=arm)["item_id"])
    cand = items[(items["split"] == "pool") & ~items["item_id"].isin(queried)].reset_index(drop=True)
    if cand.empty or n <= 0:
        return 0
    rng = round_rng(c.cfg.splits.random_state, round_no, arm)
    q = c.cfg.query
    if model is not None and not feats.whole:  # a pool larger than one partition: the bounded path
        picks = select_from_pool(
            model, feats.vec, cand["text"].tolist(), c.labels, n, plan.strategy, int(rng.integers(2**31)),
            random_share=plan.random_share, X_labelled=feats.of(labelled["item_id"]) if len(labelled) else None,
            y_labelled=labelled["label"].tolist(), class_quota=q.class_quota,
            near_duplicate_threshold=q.near_duplicate_threshold, scale=c.cfg.scale)
        return _record_picks(c, plan, cand, picks, model_version)
    if model is None:  # cold start: nothing trusted to train on yet, so spread the batch out instead
        X_pool, proba = feats.of(cand["item_id"]), None
    else:  # = score_pool's in-process branch, on rows transformed once this round
        X_pool = feats.of(cand["item_id"])
        proba = predict_proba_aligned(model, X_pool, c.labels, features=True)
    picks = query.select_round_batch(
        plan.strategy, n, rng, proba=proba, X_pool=X_pool,
        X_labelled=feats.of(labelled["item_id"]) if len(labelled) else None,
        y_labelled=labelled["label"].to_numpy(), estimator=model.named_steps["clf"] if model is not None else None,
        classes=c.labels, random_share=plan.random_share, class_quota=q.class_quota,
        near_duplicate_threshold=q.near_duplicate_threshold)
    return _record_picks(c, plan, cand, picks, model_version)


def _record_picks(c: Campaign, plan: RoundPlan, cand: pd.DataFrame, picks: list, model_version: str) -> int:
    rows = [{"item_id": cand.loc[p.index, "item_id"], "strategy": plan.strategy, "reason": p.reason,
             "score": float(p.score), "model_version": model_version} for p in picks]
    return c.ledger.add_queries(plan.arm, plan.round_no, rows)


# --------------------------------------------------------------------------- push
@task(name="push-batch", retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE,
      retry_condition_fn=_not_after_backend_retries)
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
    # people see a mix of hard and easier items, not a wall of the hardest (tasks/batch_order.py)
    order = {i: k for k, i in enumerate(order_for_people([t.item_id for t in reqs],
                                                         {t.item_id: t.confidence for t in reqs}))}
    reqs.sort(key=lambda t: order[t.item_id])
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
    known = c.ledger.items_frame()
    truth = {r.item_id: r.known_label for r in known.itertuples() if r.known_label is not None}
    answer_open_tasks(c.backend, truth,
                      [SimAnnotator(a.name, a.accuracy) for a in c.cfg.annotation.simulated.annotators],
                      overlap=c.cfg.annotation.overlap, seed=c.cfg.annotation.simulated.seed)


# --------------------------------------------------------------------------- log
@stage
def log_round(c: Campaign, res: ArmResult, ev: Evaluation | None, parent_id: str, batch: pd.DataFrame) -> None:
    tr = c.tracker
    run_id = res.run_id
    tr.log_params(run_id, {"arm": res.arm, "strategy": res.strategy, "round": res.round_no})
    metrics = dict(res.metrics)
    metrics.update({"n_labels": res.n_labels, "labels_spent": res.labels_spent, "n_queried": res.n_queried,
                    "cost": res.labels_spent * c.cfg.budget.cost_per_label})
    people = annotators_side(c, res)
    metrics.update(people["metrics"])
    price = _price_per_point(c, res, metrics, people["arm_answers"])
    metrics.update(price)
    res.metrics.update({"labels_spent": float(res.labels_spent), **price})  # the ledger keeps them for later rounds
    checkpoint("during-log")
    version = None
    if ev is not None:
        # The model before this round's metrics: MLflow 3's log_model reads the history of every metric
        # already on the run (one query each, ~1 s a round) to link those logged at its step (0; ours are
        # at n_labels, so none ever matched). Same model, same metrics, nothing linked either way.
        register = c.cfg.mlflow.register_model and res.arm == "active" or (
            c.cfg.mlflow.register_model and c.cfg.arms == ["random"])
        version = tr.log_model(run_id, ev.model, register=register)
    tr.log_metrics(run_id, metrics, step=res.n_labels)
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
    if version is not None and "test_macro_f1" in metrics and res.judged:  # no champion on a handful of items
        promoted = tr.maybe_promote(version, metrics["test_macro_f1"])
        tags.update({"labelloop.model_version": version, "labelloop.champion": str(promoted).lower()})
    tr.set_tags(run_id, tags)
    if ev is not None:
        if len(ev.y_test):
            tr.log_figure(run_id, confusion_figure(ev.y_test, ev.p_test, c.labels,
                                                   title=f"{res.arm} round {res.round_no} (test n={len(ev.y_test)})"),
                          "plots/confusion_matrix.png")
        if len(ev.y_cal):
            tr.log_figure(run_id, calibrate.reliability_diagram(ev.p_cal, ev.y_cal,
                                                                f"{res.arm} round {res.round_no} (calibration slice)"),
                          "plots/reliability_diagram.png")
    if len(batch):
        tr.log_table(run_id, batch, "queried_batch.json")
    if ev is not None and ev.pseudo is not None:  # self-training: the model's own labels, tagged, never exported
        tr.set_tags(run_id, {"labelloop.pseudo_labels": f"{len(ev.pseudo)} pseudo-label(s) trained the model; "
                                                         "never exported as human labels"})
        if len(ev.pseudo):
            tr.log_table(run_id, ev.pseudo, "pseudo_labels.json")
    if len(people["annotators"]):
        tr.log_table(run_id, people["annotators"].reset_index(), "annotators.json")
    tr.finish(run_id)


def annotators_side(c: Campaign, res: ArmResult) -> dict[str, Any]:
    """The people's side of this round for one arm (see :mod:`tasks.annotation_cost`).

    ``metrics``: the arm's answers pulled this round (``annotation_seconds_per_label``,
    ``annotation_hours``, ...), everyone's hours this round on any item
    (``annotation_hours_all_items``: evaluation and gold items included) and per annotator
    ``annotator_{answers,median_seconds,seconds_per_label,consensus_agreement,gold_accuracy}_<name>``;
    ``annotators``: the per-annotator table; ``arm_answers``: the arm's answers to date.
    """
    ann = c.ledger.annotations_frame()
    arm_ann = items_of(ann, c.ledger.queries_frame(arm=res.arm)["item_id"])
    this_round = arm_ann[arm_ann["pulled_in_round"] == res.round_no] if len(arm_ann) else arm_ann
    metrics = {k: v for k, v in effort(this_round).items()
               if k in ("annotation_seconds_per_label", "annotation_hours", "annotation_answers", "annotation_timed")}
    everyone = effort(ann[ann["pulled_in_round"] == res.round_no] if len(ann) else ann)
    metrics["annotation_hours_all_items"] = everyone["annotation_hours"]
    metrics["annotation_hours_total"] = effort(arm_ann)["annotation_hours"]
    table = annotator_table(ann, res.round_no, c.ledger.trust.annotator_status_frame(round_no=res.round_no))
    metrics.update(annotator_metrics(table, metric_name))
    return {"metrics": metrics, "annotators": table, "arm_answers": arm_ann}


def _price_per_point(c: Campaign, res: ArmResult, metrics: dict, arm_answers: pd.DataFrame | None = None
                     ) -> dict[str, float]:
    """:func:`tasks.policy.price_per_point` of this arm (its earlier evaluated rounds from the ledger, then
    this one), plus ``hours_per_accuracy_point``: the annotators' hours (Label Studio's ``lead_time`` of
    the arm's answers, :func:`tasks.annotation_cost.hours_per_accuracy_point`)."""
    if "test_accuracy" not in metrics:
        return {}
    hist = sorted((int(r.n_labels or 0), float(r.metrics.get("labels_spent", r.n_labels or 0)),
                   float(r.metrics["test_accuracy"]), r.round_no) for r in c.ledger.list_rounds()
                  if r.arm == res.arm and r.round_no < res.round_no and r.status in ("done", "stopped")
                  and "test_accuracy" in r.metrics)
    hist.append((int(res.n_labels), float(res.labels_spent), float(metrics["test_accuracy"]), res.round_no))
    out = price_per_point([h[:3] for h in hist], c.cfg.budget.cost_per_label)
    if arm_answers is not None:
        hours = hours_per_accuracy_point(arm_answers, sorted((h[3], h[2]) for h in hist))
        if hours is not None:
            out["hours_per_accuracy_point"] = hours
    return out
