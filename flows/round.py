"""The round flow: pull → agree → train → evaluate → query → push → log.

This module is the loop; the stages are Prefect tasks in flows/stages.py and the decisions
(strategy, batch size, random share, calibration fallback, stop rule) come from
:func:`tasks.policy.plan_round`. The
ledger records how far a round got, so a round killed anywhere and run again
resumes: its queries are reused (never re-drawn), only items without a
backend task are pushed, and the MLflow runs are the same ones.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger

from labelloop.flows.campaign_state import (campaign_finished, drift_boost, learning_curves, macro_f1_ci,
                                            next_round_no, random_ahead_fired_before)
from labelloop.flows.config import tracking_params
from labelloop.flows.locking import round_lock
from labelloop.flows.runtime import Campaign, open_campaign
from labelloop.flows.scoring import ScaleSettings
from labelloop.flows.setup import ensure_setup
from labelloop.flows.stages import (ArmResult, RoundFeatures, evaluation_thresholds, log_round, pull_annotations,
                                    push_pending, query_batch, train_and_evaluate)
from labelloop.flows.trust import (EVAL_ARM, TrustDecision, answers_for_readiness, decide_trust, label_history,
                                   queue_gold, trust_policy)
from labelloop.integrations.faults import checkpoint
from labelloop.tasks.errors import LabelloopError
from labelloop.tasks import health
from labelloop.tasks.evaluate import Evaluation, learning_curve_figure
from labelloop.tasks.policy import ArmState, Calibration, Policy, arm_adaptive_weights, plan_round, stop_reason
from labelloop.tasks.readiness import Readiness, batch_readiness, with_evaluation
from labelloop.tasks.strategies import ADAPTIVE_WEIGHT_METRIC, strategy_for_arm
from labelloop.tasks.train import TrainingError, predict_proba_aligned



# --------------------------------------------------------------------------- per arm
def _labelled_set(c: Campaign, arm: str, consensus: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The arm's trusted human labels, and the labels it spent. With ``[stream] train_on_auto`` the
    automatic labels of stream mode join every arm's training set (not its spend), except on items
    people labelled: a person's label always wins over the model's."""
    q = c.ledger.queries_frame(arm=arm)
    spent = int(len(q))
    lab = q[["item_id"]].merge(consensus[["label"]], left_on="item_id", right_index=True, how="inner")
    if c.cfg.stream.train_on_auto:
        from labelloop.flows.stream import auto_labels

        auto = auto_labels(c.ledger)
        auto = auto[~auto["item_id"].isin(set(lab["item_id"]) | set(consensus.index))]
        lab = pd.concat([lab, auto[["item_id", "label"]]], ignore_index=True)
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


# --------------------------------------------------------------------------- the flow
@flow(name="labelloop-round")
def round_flow(config: str, round_no: int | None = None, even_if_finished: bool = False) -> dict[str, Any]:
    """Run (or resume) one round of the campaign described by ``config`` for every arm.

    On a finished campaign (and no ``round_no``) it only settles late answers and says so, unless
    ``even_if_finished``: a drift reopen runs its round whatever stopped the arms before.
    """
    c = open_campaign(config)
    ensure_setup(c)
    with round_lock(c):
        nxt = next_round_no(c)
        if round_no is not None and round_no > nxt:
            # A round number ahead of the next unfinished one would skip rounds and trip max_rounds early.
            raise RoundNumberError(f"--round {round_no}: campaign {c.name!r} can run round {nxt} next; "
                                   f"rounds are never skipped")
        if round_no is not None and round_no < nxt:
            # Every round before the next unfinished one is finished for every arm: running it again would
            # pull and decide under its number and rewrite its trust record, with nothing to resume.
            raise RoundNumberError(f"--round {round_no}: round {round_no} of campaign {c.name!r} is finished for "
                                   f"every arm, nothing to resume; the next round is {nxt}")
        if round_no is None and not even_if_finished and campaign_finished(c):
            return _finished(c, nxt)
        return _run_round(c, round_no)


class RoundNumberError(LabelloopError, ValueError):
    """``--round N`` names a round that cannot run now (exit 2)."""


def _finished(c: Campaign, next_no: int) -> dict[str, Any]:
    """A round asked of a finished campaign trains and queries nothing: a schedule that keeps firing
    after the budget is spent must not log the same model again every time. It still settles late
    answers (the last round's extra answers, adjudications), as `run` does when it finishes, so a
    served campaign's export and status stay current. Says why it stopped and how to go on."""
    settled = settle(c)
    latest = {r.arm: r for r in c.ledger.list_rounds()}
    why = "; ".join(f"{arm}: {(latest[arm].notes or ['stopped'])[-1]} (round {latest[arm].round_no})"
                    for arm in c.cfg.arms if arm in latest)
    print(f"campaign {c.name!r} is finished ({why}); no round ran"
          + (f", late answers settled: {int(settled.get('n_trusted', 0))} trusted labels" if settled else "")
          + f". To go on, change what stopped it in [budget] (max_labels, max_rounds, target_macro_f1, ...) and "
            f"`labelloop run` again; `labelloop round CONFIG --round {next_no}` runs a round anyway", flush=True)
    return {"round": None, "state": "done", "pulled": {}, "pushed": 0, "seconds": 0.0, "arms": {},
            "finished": why}


def _run_round(c: Campaign, round_no: int | None) -> dict[str, Any]:
    logger = get_run_logger()
    round_no = round_no if round_no is not None else next_round_no(c)
    t0 = time.perf_counter()
    label_history(c)  # a label set changed under the same version stops the round before anything is written
    # MLflow first: a tracking store that is down fails the round before the ledger changes
    parent_id = c.tracker.parent_run(c.ledger, tracking_params(c.cfg, c.featurizer_kind))
    note = c.featurizer_note()
    if note:
        logger.warning(note)

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
    evals: dict[str, Evaluation | None] = {}
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
            res.metrics = {**ev.metrics, **trust.metrics}
            res.judged = ev.judged
            if not ev.judged:
                res.notes.append(
                    f"test set: {int(ev.metrics['test_n'])} trusted item(s), below min_test_labels "
                    f"({ev.need_test}): metrics shown with their interval, but no champion alias, health checks "
                    f"or stopping on the metric this round (querying goes on)")
            if ev.pseudo is not None:
                res.notes.append(f"self-training: {len(ev.pseudo)} pseudo-label(s) (calibrated confidence >= "
                                 f"{c.cfg.model.self_training_threshold:.2f}) trained this model; tagged pseudo, "
                                 f"never exported")
            if not ev.calibration.judged:
                res.notes.append(
                    f"calibration gate not judged: {ev.calibration.n_rows} trusted calibration item(s), "
                    f"fewer than {ev.calibration.needed} (min_calibration_labels, and at least 10 to calibrate at all)")
        except TrainingError as err:
            res.notes.append(f"not trained: {err}; this batch is chosen without a model (diversity + random)")
        cal = ev.calibration if ev is not None else None
        state = ArmState(arm=arm, round_no=round_no, spent=spent, trained=ev is not None,
                         calibration=Calibration(cal.judged, cal.gate_passed, cal.ece_after)
                         if cal is not None else None,
                         boost=drift_boost(c) if arm == "active" else None,
                         random_ahead_fired=arm == "active" and random_ahead_fired_before(c, round_no),
                         adaptive=_adaptive_weights(c, policy, arm, round_no, res, ev))
        plan = plan_round(policy, state, stopped=_stop_reason(c, policy, state, res, ev, items, feats))
        fallback = plan.fallback
        res.stopped = plan.stopped
        if res.stopped is None:
            if plan.fallback_reason:  # said only when a batch is drawn: a stopped arm draws none
                res.notes.append(plan.fallback_reason)
            if plan.share_reason:
                res.notes.append(plan.share_reason)
            if arm == "active":
                res.metrics["query_random_share"] = plan.random_share
            if plan.adaptive is not None:  # which strategy got how much weight, in the notes and in MLflow
                if not plan.share_reason:
                    res.notes.append(plan.adaptive.describe())
                res.metrics.update({f"{ADAPTIVE_WEIGHT_METRIC}{k}": float(v) for k, v in plan.adaptive.weights.items()})
                if plan.adaptive.advantage is not None:
                    res.metrics["adaptive_advantage"] = float(plan.adaptive.advantage)
            res.n_queried = query_batch(c, plan, ev.model if ev else None, items, feats, labelled, run_id)
            c.ledger.update_round(arm, round_no, status="queried")
            checkpoint("after-query")
            batch_ids = c.ledger.queries_frame(arm=arm, round_no=round_no)["item_id"].tolist()
            if ev is not None and res.judged:
                checks = _health(c, arm, round_no, res, ev, items, feats, batch_ids)
                res.metrics.update(health.health_metrics(checks))
                res.health_tags = health.health_tags(checks)
                res.notes.extend(f"health: {h.name}: {h.message}" for h in checks if _worth_saying(h, arm, round_no))
            if batch_ids and ev is not None:
                proba = feats.proba(ev.model, batch_ids, c.labels)
                for i, p in zip(batch_ids, proba):
                    if arm == "active" or i not in predictions:
                        predictions[i] = (c.labels[int(p.argmax())], float(p.max()), run_id)
        c.tracker.set_tags(run_id, {**trust.tags, "labelloop.calibration_gate":
                                    "failed: diversity+random fallback" if fallback else "passed"})
        c.tracker.log_texts(run_id, trust.artifacts)  # Data Docs of each contract + trust/report.md
        results[arm] = res
        evals[arm] = ev

    _random_ahead_after_arms(c, round_no, results)
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
                     "calibration_ece": r.metrics.get("calibration_ece"),
                     "calibration_ece_after": r.metrics.get("calibration_ece_after"), "stopped": r.stopped,
                     "notes": r.notes}
                 for a, r in results.items()},
    }
    shared = list(dict.fromkeys(trust.notes))  # the round's trust decisions: every arm carries them, said once
    for note in shared:
        print(f"    round {round_no}: {note}", flush=True)
    for a, r in summary["arms"].items():
        f1 = r["test_macro_f1"]
        ci = r["macro_f1_ci"]
        print(f"round {round_no:>2} {a:<7} labels={r['n_labels']:>4} macro-F1={'-' if f1 is None else f'{f1:.3f}'}"
              f"{f' [{ci[0]:.3f}, {ci[1]:.3f}]' if ci else ''} test_n={r['test_n']}"
              f"{_ece_text(r['calibration_ece'], r['calibration_ece_after'])}"
              f"{' STOP: ' + r['stopped'] if r['stopped'] else ''}", flush=True)
        for note in r["notes"]:  # gate fallbacks, guards, fired health checks
            if note not in shared:
                print(f"    {a}: {note}", flush=True)
    return summary


def _ece_text(before: float | None, after: float | None) -> str:
    """`` ECE=raw->calibrated`` (the gate reads the calibrated one); `` ECE=raw`` when not calibrated,
    `` ECE=n/a`` when not measured."""
    ok = [x is not None and np.isfinite(x) for x in (before, after)]
    if not ok[0]:
        return " ECE=n/a"
    return f" ECE={before:.3f}->{after:.3f}" if ok[1] else f" ECE={before:.3f}"


def count_settle_call(c: Campaign) -> int:
    """Count one more settle of the finished campaign (kept in the ledger) and return the count.

    The count restarts when a reopened campaign finishes again later (it is kept with the round
    number the settles decide under)."""
    after = next_round_no(c)
    prev_after, _, prev_calls = (c.ledger.get_meta("settle_calls") or "").partition(":")
    calls = (int(prev_calls) + 1) if prev_after == str(after) and prev_calls.isdigit() else 1
    c.ledger.set_meta("settle_calls", f"{after}:{calls}")
    return calls


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
    # every settle (a `round` or `run` on the finished campaign) ages the extra-answer requests by one round,
    # so [annotation] extra_answer_rounds gives up the last round's requests too; they all decide under
    # the same round number, which alone would never reach the deadline
    calls = count_settle_call(c)
    for _ in range(passes if passes is not None else c.cfg.annotation.max_overlap - c.cfg.annotation.overlap + 1):
        no = next_round_no(c)
        pulled = pull_annotations(c, no)
        decision = decide_trust(c, no, clock=no + calls - 1)
        last = decision.metrics
        if not (pulled.get("inserted") or pulled.get("updated")) or last.get("n_needs_more", 0) == 0:
            break  # nothing new came in (people have not answered yet), or nothing is left to settle
    return last


def open_batch_readiness(c: Campaign, trust: TrustDecision | None,
                         answers: dict[str, int] | None = None) -> Readiness:
    """Whether the open batch (the arms' items pushed most recently) is answered enough to train on.

    See :mod:`tasks.readiness` for the rule and why. Gold items are left out: they score
    annotators and never train, so a round need not wait for them. Evaluation items (test and
    calibration items people label, pushed with the seed) are not part of any batch; while the
    seed is the open batch, the round also waits for ``min_test_labels`` answered test items
    (:func:`tasks.readiness.with_evaluation`).

    ``trust`` None: the latest recorded trust decision's statuses; ``answers`` (item -> distinct
    annotators' submitted answers) given: counted from there instead of the ledger -- the batch
    trigger (flows/batch_trigger.py) asks the backend itself, before any round has pulled.
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
    if answers is None:  # an item nobody is left to answer (everyone answered or skipped it) is not waited for
        answers = answers_for_readiness(c.ledger.annotations_frame(), need)
    if trust is None:
        latest = c.ledger.trust.trust_items_frame()
        status = dict(zip(latest["item_id"].astype(str), latest["status"])) if len(latest) else {}
    else:
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


def _adaptive_weights(c: Campaign, policy: Policy, arm: str, round_no: int, res: ArmResult,
                      ev: Evaluation | None) -> Any:
    """The ``adaptive`` strategy's weights for the active arm this round, from its history in the ledger.

    The history is what the ledger already keeps per round: the active arm's ``(labels, test
    macro-F1, query_random_share)`` and the random arm's curve (up to the previous round: the
    active arm queries first). Nothing else is stored, so a resumed round recomputes the same weights.
    """
    if arm != "active" or policy.query.strategy != "adaptive":
        return None
    hist = [(int(r.n_labels or 0), float(r.metrics["test_macro_f1"]),
             float(r.metrics.get("query_random_share", policy.query.random_share)))
            for r in _judged_rounds(c, "active", round_no, ev) if r.status in ("done", "stopped")]
    if ev is not None and res.judged and "test_macro_f1" in res.metrics:
        hist.append((res.n_labels, float(res.metrics["test_macro_f1"]), float("nan")))
    random_curve = [(int(r.n_labels or 0), float(r.metrics["test_macro_f1"]))  # judged rounds only, as above
                    for r in _judged_rounds(c, "random", round_no + 1, ev) if r.status in ("done", "stopped")]
    return arm_adaptive_weights(policy.query, hist, random_curve)


def _random_ahead_after_arms(c: Campaign, round_no: int, results: dict[str, ArmResult]) -> None:
    """The ``random_ahead`` check of the active arm, once both arms are evaluated this round.

    Why here and not with the other health checks: those run as the active arm queries, before
    the random arm's round is evaluated, so a check there compared with random's curve up to the
    previous round and the guard acted two rounds after random was ahead. Run here, on both
    curves up to this round, it is recorded with the active arm's round and the next round's
    batch acts on it (:func:`flows.campaign_state.random_ahead_fired_before`): the guard acts
    from the round after the one in which random was ahead, as the README says.
    """
    act, rnd = results.get("active"), results.get("random")
    if act is None or act.stopped == "already finished" or "test_macro_f1" not in act.metrics or not act.judged:
        return
    curves = learning_curves(c)
    active_curve = curves.get("active", []) + [(act.n_labels, act.metrics["test_macro_f1"])]
    random_curve = list(curves.get("random", []))
    if rnd is not None and rnd.stopped != "already finished" and "test_macro_f1" in rnd.metrics:
        random_curve.append((rnd.n_labels, rnd.metrics["test_macro_f1"]))
    t = health.HealthThresholds(ece_gate=c.cfg.gates.calibration_ece)
    chk = health.random_ahead_check(active_curve, random_curve or None, last_k=t.random_last_k,
                                    tolerance=t.random_tolerance)
    for k in ("health_random_ahead", "health_random_ahead_fired"):
        act.metrics.pop(k, None)
    act.metrics.update(health.health_metrics([chk]))
    act.health_tags.update(health.health_tags([chk]))
    if chk.fired:
        act.notes.append(f"health: {chk.name}: {chk.message}; the next batch acts on it")


def _worth_saying(check: Any, arm: str, round_no: int) -> bool:
    """Whether a fired health check goes under the round's line (every check is a metric and a tag anyway).

    Not the ECE check: its consequence is the calibration gate's fallback, said once already. Not on
    the random arm: its batches are uniform by design, so "a strategy may be starving a class" or "the
    batch is too similar" asks its user to act on nothing. Not the per-class recall in round 1: that
    model learnt from the seed only, which no strategy chose.
    """
    if not check.fired or check.name == "calibration_ece" or arm != "active":
        return False
    return not (check.name == "per_class_recall" and round_no <= 1)


def _judged_rounds(c: Campaign, arm: str, round_no: int, ev: Evaluation | None) -> list:
    """This arm's earlier rounds whose test macro-F1 was judged (``test_n`` reached ``min_test_labels``).

    Why: a round below ``min_test_labels`` still records its F1 (with its interval, for the plot),
    but an F1 on a handful of items is noise; fed to the marginal-gain rule or the adaptive weights
    it could stop a campaign, for good, on one lucky early round. The threshold is this round's
    (``ev.need_test``); rounds logged before ``test_n`` was recorded count as judged.
    """
    if ev is None:  # no model this round: the metric rules are off anyway
        return []
    return [r for r in c.ledger.list_rounds(arm=arm)
            if r.round_no < round_no and "test_macro_f1" in r.metrics
            and float(r.metrics.get("test_n", ev.need_test)) >= ev.need_test]


def _stop_reason(c: Campaign, policy: Policy, state: ArmState, res: ArmResult, ev: Evaluation | None,
                 items: pd.DataFrame, feats: RoundFeatures | None = None) -> str | None:
    """:func:`tasks.policy.stop_reason` on this arm's history in the ledger plus this round."""
    arm, round_no = state.arm, state.round_no
    history = [{"labels": int(r.n_labels or 0), "macro_f1": float(r.metrics["test_macro_f1"])}
               for r in _judged_rounds(c, arm, round_no, ev)]
    if ev is not None and "test_macro_f1" in res.metrics:
        history.append({"labels": res.n_labels, "macro_f1": res.metrics["test_macro_f1"]})
    stop_preds = (_stop_set_predictions(c, arm, round_no, ev, items, feats) if policy.stop.stability_kappa
                  else None)
    return stop_reason(policy.stop, round_no, state.spent, history, judged=ev is not None and res.judged,
                       stop_set_predictions=stop_preds)


def _stop_set_predictions(c: Campaign, arm: str, round_no: int, ev: Evaluation | None, items: pd.DataFrame,
                          feats: RoundFeatures | None = None) -> list:
    """Predictions of this arm's successive models on one fixed unlabelled stop set, oldest first.

    The stop set is drawn once, from the pool of the first round that needs it, and its item ids
    are kept (``stop_set/items.json``): the pool grows with arrivals and a drift reopen, and a set
    drawn again each round would compare predictions on other texts (or fail on another length).
    Each round's predictions are kept with their item ids (``<arm>-<round>.npz``) and compared on
    the ids every kept round has, so the rule never compares two different texts.
    """
    folder = c.workdir / "stop_set"
    folder.mkdir(parents=True, exist_ok=True)
    if ev is not None:
        ids = _stop_set_ids(c, folder, items)
        known = items.set_index("item_id")
        ids = [i for i in ids if i in known.index]
        if ids:
            proba = (feats.proba(ev.model, ids, c.labels) if feats is not None
                     else predict_proba_aligned(ev.model, known.loc[ids, "text"].tolist(), c.labels))
            np.savez(folder / f"{arm}-{round_no:04d}.npz", ids=np.asarray(ids, dtype=str),
                     pred=proba.argmax(axis=1))
    kept = []
    for f in sorted(folder.glob(f"{arm}-*.npz")):
        if int(f.stem.split("-")[-1]) <= round_no:
            with np.load(f) as z:
                kept.append(dict(zip(z["ids"].tolist(), z["pred"].tolist())))
    common = sorted(set.intersection(*(set(k) for k in kept))) if kept else []
    return [np.asarray([k[i] for i in common]) for k in kept]


def _stop_set_ids(c: Campaign, folder: Path, items: pd.DataFrame) -> list[str]:
    """The stop set's item ids: read from ``items.json``, or drawn from the pool now and written once."""
    path = folder / "items.json"
    if path.exists():
        return [str(i) for i in json.loads(path.read_text(encoding="utf-8"))]
    pool = items[items["split"] == "pool"].sort_values("item_id")
    ids = pool.sample(n=min(c.cfg.budget.stop_set_size, len(pool)),
                      random_state=c.cfg.splits.random_state)["item_id"].astype(str).tolist()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(ids), encoding="utf-8")
    os.replace(tmp, path)  # both arms and every later round read the same set
    return ids


def _health(c: Campaign, arm: str, round_no: int, res: ArmResult, ev: Evaluation, items: pd.DataFrame,
            feats: RoundFeatures, batch_ids: list[str]) -> list:
    """This round's health checks for one arm (see tasks/health.py)."""
    prev_rounds = [r for r in c.ledger.list_rounds(arm=arm) if r.round_no < round_no and r.metrics]
    recall_history = [health.recalls_from_metrics(r.metrics, "test_recall_") for r in prev_rounds]
    recall_history.append(health.recalls_from_metrics(res.metrics, "test_recall_"))
    X_batch = feats.of(batch_ids) if batch_ids else None
    queried = set(c.ledger.queries_frame(arm=arm)["item_id"])
    pool = items[(items["split"] == "pool") & ~items["item_id"].isin(queried)]
    pool = pool.sample(n=min(2000, len(pool)), random_state=round_no) if len(pool) else pool
    X_pool = feats.of(pool["item_id"]) if len(pool) else None
    prev = c.ledger.queries_frame(arm=arm, round_no=round_no - 1)["item_id"].tolist()
    X_prev = feats.of(prev) if prev else None
    return health.run_health_checks(
        recall_history=recall_history, ece=ev.calibration.ece_after,
        active_curve=None, random_curve=None,  # random_ahead: after both arms (_random_ahead_after_arms)
        X_batch=X_batch, X_pool=X_pool, X_prev_batch=X_prev,
        thresholds=health.HealthThresholds(ece_gate=c.cfg.gates.calibration_ece),
    )
