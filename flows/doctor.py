"""`labelloop doctor CONFIG [--repair]`: is the ledger in step with the world?

Why: the ledger is the single source of truth, but the annotation backend and
MLflow are written by other processes (and by humans: someone deletes a task
in Label Studio, imports a file by hand, or a round is killed between two
writes). Rounds are built to resume from any kill, so drift should never
appear; the doctor is the independent check that it did not, and the tool
that puts things right when someone else caused it.

Checks (each finding is one line of the report):

* **ledger, internal**: every queried item exists; no test/calibration item
  was ever queried; no backend task id is shared by two items; no annotation
  names an unknown item; a round marked done has pushed all its queries.
* **annotation backend**: every backend task the ledger knows exists
  (else ``missing_in_backend`` is set); every labelloop task in the backend
  is known to the ledger (adopted by item id when the item was queried); no
  item has two backend tasks (extras without annotations are deleted); every
  annotation in the backend is in the ledger with the same label and status
  (else it is pulled, exactly as a round pulls).
* **MLflow**: every round marked done/stopped has an MLflow run that exists
  and is FINISHED (else the round's metrics are re-logged from the ledger into
  the existing run, or into a new one, and it is finished); the campaign's
  parent run exists.

Exit code: 0 when consistent (or, with ``--repair``, when everything found was
repaired); 1 when drift was found (and, with ``--repair``, some of it remains).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from labelloop.flows.config import tracking_params
from labelloop.flows.runtime import Campaign, open_set_up_campaign

log = logging.getLogger("labelloop.doctor")


@dataclass
class Finding:
    area: str  # ledger | backend | mlflow
    kind: str  # short machine-readable name
    message: str
    drift: bool = True  # False: informational (e.g. a round waiting to be resumed)
    repaired: bool = False


@dataclass
class Report:
    campaign: str
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, Any] = field(default_factory=dict)

    def add(self, area: str, kind: str, message: str, *, drift: bool = True) -> Finding:
        f = Finding(area, kind, message, drift)
        self.findings.append(f)
        return f

    @property
    def drift(self) -> list[Finding]:
        return [f for f in self.findings if f.drift]

    @property
    def unrepaired(self) -> list[Finding]:
        return [f for f in self.drift if not f.repaired]

    @property
    def consistent(self) -> bool:
        return not self.drift

    def exit_code(self) -> int:
        return 0 if not self.unrepaired else 1

    def render(self) -> str:
        lines = [f"labelloop doctor: campaign {self.campaign!r}"]
        for k, v in self.checked.items():
            lines.append(f"  checked {k}: {v}")
        for f in self.findings:
            tag = "REPAIRED" if f.repaired else ("DRIFT" if f.drift else "info")
            lines.append(f"  [{tag}] {f.area}: {f.kind}: {f.message}")
        if not self.drift:
            lines.append("consistent: ledger, annotation backend and MLflow agree")
        elif not self.unrepaired:
            lines.append(f"repaired: {len(self.drift)} finding(s) fixed; the campaign is consistent again")
        else:
            hint = "" if any(f.repaired for f in self.findings) else " (run with --repair to fix what can be fixed)"
            lines.append(f"drift: {len(self.unrepaired)} finding(s){hint}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- backend views
@dataclass(frozen=True)
class BackendTask:
    task_id: str
    item_id: str
    n_annotations: int


class _LabelStudioView:
    """What the doctor needs from Label Studio: every task (with its annotation count) and deletes."""

    def __init__(self, backend: Any):
        self.b = backend

    def tasks(self) -> list[BackendTask]:
        def go(att: Any) -> list[BackendTask]:
            out = []
            for t in self.b._iter_tasks(att, fields="task_only"):
                item = (t.data or {}).get("item_id")
                if item is None:
                    continue
                n = int(getattr(t, "total_annotations", 0) or 0) + int(getattr(t, "cancelled_annotations", 0) or 0)
                out.append(BackendTask(str(t.id), str(item), n))
            return out

        return self.b._call(f"listing the tasks of project {self.b.project_title!r} (doctor)", go)

    def delete_task(self, task_id: str) -> None:
        def go(att: Any) -> None:
            self.b.client.tasks.delete(str(task_id), request_options=att.request_options())

        self.b._call(f"deleting duplicate task {task_id} (doctor --repair)", go)


class _SimulatedView:
    def __init__(self, backend: Any):
        self.b = backend

    def tasks(self) -> list[BackendTask]:
        state = self.b._load()
        pulled = self.b.pull()
        per_task: dict[str, int] = {}
        for a in pulled:
            per_task[a.backend_task_id] = per_task.get(a.backend_task_id, 0) + 1
        return [BackendTask(str(tid), str(t["item_id"]), per_task.get(str(tid), 0))
                for tid, t in state["tasks"].items()]

    def delete_task(self, task_id: str) -> None:
        state = self.b._load()
        state["tasks"].pop(str(task_id), None)
        self.b._save(state)


def _view(c: Campaign) -> Any:
    from labelloop.integrations.simulated import FileTaskBackend

    return _SimulatedView(c.backend) if isinstance(c.backend, FileTaskBackend) else _LabelStudioView(c.backend)


# --------------------------------------------------------------------------- checks
def check_ledger(c: Campaign, rep: Report, repair: bool) -> None:
    items = c.ledger.items_frame()
    split = items.set_index("item_id")["split"] if len(items) else pd.Series(dtype=object)
    q = c.ledger.queries_frame()
    tasks = c.ledger.tasks_frame()
    ann = c.ledger.annotations_frame()
    rep.checked["ledger"] = (f"{len(items)} items, {len(q)} queries, {len(tasks)} tasks, {len(ann)} annotations, "
                             f"{len(c.ledger.list_rounds())} round rows")

    unknown = sorted(set(q["item_id"]) - set(split.index))
    if unknown:
        rep.add("ledger", "query-of-unknown-item", f"{len(unknown)} queries name items the ledger does not hold "
                f"(first: {unknown[:5]})")
    # test/calibration items people are asked to label are queried under the pseudo-arm "evaluation" (an
    # unlabelled corpus builds its test set that way); only an arm's query of one would contaminate it
    by_arm = q[q["arm"] != "evaluation"] if "arm" in q.columns else q
    held_out = sorted(i for i in set(by_arm["item_id"]) & set(split.index) if split[i] in ("test", "calibration"))
    if held_out:
        rep.add("ledger", "held-out-item-queried", f"{len(held_out)} test/calibration items were queried "
                f"(first: {held_out[:5]}); their metrics are contaminated")
    if len(tasks):
        dup = tasks[tasks.duplicated("backend_task_id", keep=False)]
        if len(dup):
            rep.add("ledger", "task-shared-by-items", f"{dup['backend_task_id'].nunique()} backend task ids belong to "
                    f"several items (first: {sorted(dup['backend_task_id'].unique())[:5]})")
        dup_items = tasks[tasks.duplicated("item_id", keep=False)]
        if len(dup_items):
            rep.add("ledger", "item-with-two-tasks", f"{dup_items['item_id'].nunique()} items have two task rows")
    if len(ann):
        orphan = sorted(set(ann["item_id"]) - set(split.index))
        if orphan:
            rep.add("ledger", "annotation-of-unknown-item", f"{len(orphan)} annotations name unknown items "
                    f"(first: {orphan[:5]})")

    # Queries without a task: a killed round's batch waiting for its push is normal until the round is
    # resumed; a round marked done that still has unpushed queries is drift.
    pushed = set(tasks["item_id"]) if len(tasks) else set()
    waiting = q[~q["item_id"].isin(pushed)]
    if len(waiting):
        done = {(r.arm, r.round_no) for r in c.ledger.list_rounds() if r.status in ("done", "stopped")}
        done_rows = waiting[[(a, n) in done for a, n in zip(waiting["arm"], waiting["round_no"])]]
        setup_rows = waiting[waiting["round_no"] == 0] if c.ledger.get_meta("setup_done") == "1" else waiting.iloc[0:0]
        bad = pd.concat([done_rows, setup_rows]).drop_duplicates("item_id")
        if len(bad):
            f = rep.add("ledger", "finished-round-not-pushed",
                        f"{len(bad)} queried items of finished rounds have no backend task")
            if repair:
                from labelloop.flows.stages import push_pending

                push_pending.fn(c, int(bad["round_no"].max()), {})
                f.repaired = True
        rest = waiting[~waiting["item_id"].isin(bad["item_id"])]
        if len(rest):
            rep.add("ledger", "push-pending", f"{rest['item_id'].nunique()} queried items wait for their push "
                    f"(round {sorted(set(rest['round_no']))}); the next `labelloop round` resumes it", drift=False)


def check_backend(c: Campaign, rep: Report, repair: bool) -> None:
    view = _view(c)
    backend_tasks = view.tasks()
    ledger_tasks = c.ledger.tasks_frame()
    by_item: dict[str, list[BackendTask]] = {}
    for t in backend_tasks:
        by_item.setdefault(t.item_id, []).append(t)
    rep.checked["backend"] = f"{c.backend.name}: {len(backend_tasks)} tasks for {len(by_item)} items"
    ledger_map = dict(zip(ledger_tasks["item_id"], ledger_tasks["backend_task_id"].astype(str))) if len(ledger_tasks) else {}
    flagged = set(ledger_tasks.loc[ledger_tasks["missing_in_backend"].astype(bool), "backend_task_id"].astype(str)) \
        if len(ledger_tasks) else set()
    backend_ids = {t.task_id for t in backend_tasks}

    # 1. duplicate tasks for one item
    dups = {i: ts for i, ts in by_item.items() if len(ts) > 1}
    if dups:
        extra = sum(len(ts) - 1 for ts in dups.values())
        f = rep.add("backend", "duplicate-tasks", f"{len(dups)} items have several backend tasks ({extra} extra; "
                    f"first: {sorted(dups)[:5]})")
        if repair:
            stuck = []
            for item, ts in dups.items():
                keep = ledger_map.get(item)
                if keep not in {t.task_id for t in ts}:
                    keep = min(ts, key=lambda t: int(t.task_id) if t.task_id.isdigit() else 0).task_id
                for t in ts:
                    if t.task_id == keep:
                        continue
                    if t.n_annotations:
                        stuck.append(t.task_id)
                        continue
                    view.delete_task(t.task_id)
                    backend_ids.discard(t.task_id)
                by_item[item] = [t for t in ts if t.task_id == keep or t.n_annotations]
            if stuck:
                rep.add("backend", "duplicate-tasks-with-annotations",
                        f"{len(stuck)} extra tasks hold annotations and were kept (their annotations are pulled "
                        f"under the same item; close or delete them in the backend by hand: {stuck[:10]})")
            f.repaired = True

    # 2. ledger tasks missing in the backend
    gone = {i: t for i, t in ledger_map.items() if t not in backend_ids and t not in flagged}
    if gone:
        repointed = {i: by_item[i] for i in gone if i in by_item}
        f = rep.add("backend", "missing-in-backend", f"{len(gone)} ledger tasks no longer exist in the backend "
                    f"(first items: {sorted(gone)[:5]}); {len(repointed)} of those items have another task there")
        if repair:
            c.ledger.repoint_tasks({item: min(ts, key=lambda t: int(t.task_id) if t.task_id.isdigit() else 0).task_id
                                    for item, ts in repointed.items()})
            really_gone = [t for i, t in gone.items() if i not in repointed]
            c.ledger.mark_tasks_missing(really_gone)
            f.repaired = True
    if flagged:
        rep.add("backend", "known-missing", f"{len(flagged)} tasks are marked missing_in_backend (deleted there)",
                drift=False)

    # 3. backend tasks the ledger does not know
    queried = c.ledger.queries_frame()
    first_round = queried.groupby("item_id")["round_no"].min().to_dict() if len(queried) else {}
    unknown = {i: ts for i, ts in by_item.items() if i not in ledger_map}
    if unknown:
        adoptable = {i: ts for i, ts in unknown.items() if i in first_round}
        foreign = sorted(set(unknown) - set(adoptable))
        if adoptable:
            f = rep.add("backend", "task-not-in-ledger", f"{len(adoptable)} backend tasks of queried items are not "
                        f"in the ledger (a push whose ledger write was lost; first: {sorted(adoptable)[:5]})")
            if repair:
                by_round: dict[int, dict[str, str]] = {}
                for i, ts in adoptable.items():
                    tid = min(ts, key=lambda t: int(t.task_id) if t.task_id.isdigit() else 0).task_id
                    by_round.setdefault(int(first_round[i]), {})[i] = tid
                for no, mapping in by_round.items():
                    c.ledger.record_tasks(c.backend.name, no, mapping)
                f.repaired = True
        if foreign:
            rep.add("backend", "task-of-unqueried-item", f"{len(foreign)} backend tasks carry item ids no arm "
                    f"queried (imported by hand? first: {foreign[:5]}); their annotations are rejected on pull")

    # 4. annotations: backend vs ledger
    pulled = c.backend.pull()
    ours = c.ledger.annotations_frame()
    # a skipped answer's missing label reads back as NaN: compare it as None, as the backend reports it
    mine = {str(r.backend_annotation_id): (None if pd.isna(r.label) else r.label, r.status) for r in ours.itertuples()}
    task_items = set(c.ledger.task_ids())
    # answers a pull rejects on purpose (an invalid result, a label outside the set) are never stored:
    # they are not "lost" (the round reports them when it pulls)
    relevant = [a for a in pulled if (a.item_id in task_items or a.item_id in first_round)
                and (a.status == "skipped" or (a.status == "submitted" and a.label in c.labels)
                     or str(a.backend_annotation_id) in mine)]
    missing = [a for a in relevant if str(a.backend_annotation_id) not in mine]
    stored_at = {str(r.backend_annotation_id): _aware(r.updated_at) for r in ours.itertuples()}
    # an answer the backend now calls invalid without an edit is one given under an earlier label set (the
    # backend checks today's labels): the ledger keeps its label for [[labels.previous]]; not drift
    kept_label = (lambda a: a.status not in ("submitted", "skipped") and str(a.backend_annotation_id) in stored_at
                  and _aware(a.updated_at) <= stored_at[str(a.backend_annotation_id)])  # noqa: E731
    stale = [a for a in relevant if str(a.backend_annotation_id) in mine
             and mine[str(a.backend_annotation_id)] != (a.label, a.status)
             and not (mine[str(a.backend_annotation_id)][1] == "withdrawn" and a.status not in ("submitted", "skipped"))
             and not kept_label(a)]
    rep.checked["annotations"] = f"{len(pulled)} in the backend, {len(ours)} in the ledger"
    # Annotations made after the last pull are simply new work (the next round pulls them); only those
    # older than the last pull and still absent (or changed) are drift: a pull lost them.
    last_pull = _last_pull(c)
    lost = [a for a in missing if last_pull is not None and _aware(a.created_at) < last_pull]
    lost_edits = [a for a in stale if last_pull is not None and _aware(a.updated_at) < last_pull]
    new = len(missing) - len(lost) + len(stale) - len(lost_edits)
    if lost or lost_edits:
        f = rep.add("backend", "annotations-not-pulled", f"{len(lost)} backend annotations older than the last pull "
                    f"({last_pull:%Y-%m-%d %H:%M:%S}Z) are not in the ledger and {len(lost_edits)} differ from it "
                    f"(first ids: {[a.backend_annotation_id for a in (lost + lost_edits)[:5]]})")
        if repair:
            f.repaired = True
    if new:
        rep.add("backend", "annotations-since-last-pull", f"{new} annotations were made or edited after the last "
                "pull; the next round pulls them", drift=False)
    if repair and (missing or stale):
        from labelloop.flows.stages import pull_annotations  # here, not above: a read-only doctor never imports Prefect

        counts = pull_annotations.fn(c, None)
        if counts.get("problems"):
            rep.add("backend", "annotations-rejected", "; ".join(counts["problems"])[:500], drift=False)
    theirs = {str(a.backend_annotation_id) for a in pulled}
    deleted = sorted(i for i in set(mine) - theirs if mine[i][1] != "withdrawn")  # withdrawn: already handled
    if deleted:
        rep.add("backend", "annotations-deleted-in-backend", f"{len(deleted)} ledger annotations no longer exist in "
                f"the backend (kept in the ledger as history; first: {deleted[:5]})", drift=False)


def _aware(ts: Any) -> Any:
    from datetime import timezone

    ts = pd.Timestamp(ts).to_pydatetime()
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _last_pull(c: Campaign) -> Any:
    """When the last pull that reached the ledger started: a round row is written only after its pull."""
    rounds = c.ledger.list_rounds()
    return max(_aware(r.started_at) for r in rounds) if rounds else None


def check_mlflow(c: Campaign, rep: Report, repair: bool) -> None:
    from labelloop.integrations.tracking import TrackingError

    try:
        tr = c.tracker
    except TrackingError as err:
        rep.add("mlflow", "unreachable", str(err))
        return
    client = tr.client
    rounds = c.ledger.list_rounds()
    finished = [r for r in rounds if r.status in ("done", "stopped")]
    rep.checked["mlflow"] = f"{len(finished)} finished round runs at {tr.tracking_uri if '@' not in tr.tracking_uri else '<redacted>'}"
    parent = c.ledger.get_meta("mlflow_parent_run")
    parent_ok = False
    if parent:
        try:
            parent_ok = client.get_run(parent).info.lifecycle_stage != "deleted"
        except Exception:  # noqa: BLE001 - a missing run is what we look for
            pass
    if rounds and not parent_ok:
        f = rep.add("mlflow", "parent-run-missing", f"the campaign's parent run {parent or '(none recorded)'} "
                    "is not in the tracking store")
        if repair:
            c.ledger.set_meta("mlflow_parent_run", "")
            parent = tr.parent_run(c.ledger, tracking_params(c.cfg, c.featurizer_kind))
            f.repaired = True
    for r in finished:
        run = None
        if r.mlflow_run_id:
            try:
                run = client.get_run(r.mlflow_run_id)
            except Exception:  # noqa: BLE001
                run = None
        if run is not None and run.info.lifecycle_stage == "deleted":
            run = None  # a deleted run cannot be logged into; a new one replaces it
        if run is not None and run.info.status == "FINISHED":
            continue
        what = "has no MLflow run" if run is None else f"has MLflow run {r.mlflow_run_id} in state {run.info.status}"
        f = rep.add("mlflow", "round-run-not-finished", f"round {r.round_no} ({r.arm}) is {r.status} in the ledger "
                    f"but {what}")
        if repair:

            run_id = r.mlflow_run_id if run is not None else tr.round_run(parent or tr.parent_run(c.ledger, tracking_params(c.cfg, c.featurizer_kind)),
                                                                          r.arm, r.round_no, None)
            relog_round(c, r, run_id)
            if run_id != r.mlflow_run_id:
                c.ledger.update_round(r.arm, r.round_no, mlflow_run_id=run_id)
            f.repaired = True
    unfinished = [r for r in rounds if r.status not in ("done", "stopped")]
    if unfinished:
        rep.add("ledger", "round-interrupted", ", ".join(f"round {r.round_no} ({r.arm}) is {r.status}"
                                                         for r in unfinished)
                + "; the next `labelloop round` resumes it", drift=False)


def relog_round(c: Campaign, r: Any, run_id: str) -> None:
    """Log a finished round's ledger record (metrics, params, notes) into ``run_id`` and finish it."""
    tr = c.tracker
    have = tr.client.get_run(run_id).data
    tr.log_params(run_id, {"arm": r.arm, "strategy": r.strategy or "", "round": r.round_no})
    step = int(r.n_labels or 0)
    metrics = {k: v for k, v in r.metrics.items() if k not in have.metrics}
    if "n_labels" not in have.metrics:
        metrics["n_labels"] = step
    tr.log_metrics(run_id, metrics, step=step)
    tr.set_tags(run_id, {"labelloop.notes": "; ".join(map(str, r.notes)) if r.notes else "none",
                         "labelloop.relogged_by": "doctor"})
    tr.finish(run_id)


def diagnose(config: str, *, repair: bool = False, mlflow: bool = True) -> Report:
    """Run every check; with ``repair``, fix what can be fixed (under the campaign's round lock)."""
    c = open_set_up_campaign(config)  # a never set-up campaign: exit 2, and no empty ledger left behind
    rep = Report(c.name)
    if c.ledger.get_meta("setup_done") != "1" and c.ledger.n_items() == 0:
        rep.add("ledger", "not-set-up", "the campaign is not set up yet (`labelloop setup`); nothing to check",
                drift=False)
        return rep

    def run() -> None:
        check_ledger(c, rep, repair)
        check_backend(c, rep, repair)
        if mlflow:
            check_mlflow(c, rep, repair)

    if repair:
        from labelloop.flows.locking import round_lock

        with round_lock(c):
            run()
    else:
        run()
    return rep


def doctor_main(config: str, repair: bool = False) -> int:
    rep = diagnose(config, repair=repair)
    print(rep.render())
    return rep.exit_code()
