"""Which labels are trusted enough to train on.

The round flow calls :func:`decide_trust` once per round, after pulling; only
the labels it returns (``TrustDecision.consensus``) ever reach a model. This
module only wires: it reads the ledger, runs the data contracts (Great
Expectations), calls the pure policy in ``tasks/trust.py``, lets the
adjudicator answer, stores the decision in the ledger and schedules the next
batch's gold items. See ``tasks/trust.py`` for the policy itself.

Per round, in order:

1. label-set versions: the configured version (and its history) is recorded;
   every new annotation is stamped with the version in force; answers given
   under an older version are mapped or flagged for re-labelling.
2. the annotations contract (validate_annotations) runs on everything pulled
   so far; offending rows are held back, the Data Docs page is returned.
3. the trust decision: annotator quality (gold, leave-one-out), exclusion or
   down-weighting, consensus, per-batch alpha gate / quarantine, adjudication
   queue, AL-vs-random agreement.
4. adjudication: the simulated backends answer the queue at once with a
   better-than-annotator adjudicator; Label Studio gets review tasks in a
   separate "(adjudication)" project, read back from the next round on (see
   :func:`request_review_tasks`); an adjudicated label wins.
5. the training-set contract (validate_training_set) per arm.
6. the decision is stored (``trust_items``, ``batch_decisions``,
   ``annotator_status``, ``trust_rounds``) and gold items are queued for the
   batch this round pushes (queries under the pseudo-arm ``gold``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from labelloop.flows.runtime import Campaign
from labelloop.integrations.expectations import (DataContractError, validate_annotations, validate_pool,
                                       validate_training_set)
from labelloop.integrations.sources import load_table
from labelloop.tasks.annotate import simulated_answer
from labelloop.tasks import trust as policy_mod
from labelloop.tasks.labels import LabelHistory, history_from_config, migrate_labels

GOLD_ARM = "gold"  # pseudo-arm of gold queries: not in cfg.arms, so it never trains and spends no budget
EVAL_ARM = "evaluation"  # pseudo-arm of test/calibration items people label: never trains, own budget
ADJUDICATOR = "adjudicator"


@dataclass
class TrustDecision:
    consensus: pd.DataFrame  # index item_id; columns label, confidence, n_annotations, source (trusted items only)
    metrics: dict[str, float] = field(default_factory=dict)  # logged to every arm's round run
    notes: list[str] = field(default_factory=list)  # gate decisions / alerts, shown in CLI and MLflow tags
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # run-relative path -> text (Data Docs pages, report)
    items: pd.DataFrame = field(default_factory=pd.DataFrame)  # every item's decision (tasks.trust.TrustResult.items)
    # trusted labels of test / calibration items that people labelled (index item_id; label, confidence, ...):
    # what rounds evaluate on, never what they train on
    evaluation: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["label"]))


# --------------------------------------------------------------------------- configuration


def trust_policy(c: Campaign) -> policy_mod.TrustPolicy:
    """The pure policy's knobs from the campaign config."""
    t, g = c.cfg.trust, c.cfg.gates
    need = c.cfg.annotation.overlap
    most = max(c.cfg.annotation.max_overlap, need)
    if c.cfg.annotation.backend == "simulated":
        need = min(need, len(c.cfg.annotation.simulated.annotators))
        most = min(most, len(c.cfg.annotation.simulated.annotators))
    return policy_mod.TrustPolicy(
        consensus=t.consensus, min_confidence=t.min_confidence, min_answers=t.min_answers,
        gate_mode=g.agreement_mode, alpha_gate=g.agreement_alpha, alpha_drop=g.agreement_drop,
        min_batch_items=g.agreement_min_items, max_overlap=most, annotator_margin=t.annotator_margin,
        min_annotator_accuracy=t.min_annotator_accuracy, min_gold_answers=t.min_gold_answers,
        min_consensus_answers=t.min_consensus_answers, annotator_policy=t.annotator_policy,
        downweight=t.downweight, need=need, al_agreement_margin=t.al_agreement_margin,
        quarantine_undefined=t.quarantine_undefined_alpha, adjudicated_as_gold=t.adjudicated_as_gold,
        ds_min_items=t.ds_min_items,
    )


def label_history(c: Campaign, *, record: bool = True) -> LabelHistory:
    """The label-set history from ``[labels]``; recorded in the ledger (``label_versions``).

    Raises ``LedgerError`` when a version number is reused for a different
    label set: a changed set must get a new version, or old and new answers
    would be mixed.
    """
    lab = c.cfg.labels
    history = history_from_config(lab.names, lab.version, [p.model_dump() for p in lab.previous])
    if record:
        for v in sorted(history.schemas):
            m = history.migrations.get(v)
            c.ledger.trust.record_label_version(v, list(history.schemas[v].names), None if m is None else dict(m.mapping))
    return history


def known_annotators(c: Campaign) -> list[str] | None:
    """Annotators the annotations contract accepts (None: the backend does not say)."""
    if c.cfg.annotation.backend == "simulated":
        names = getattr(c.backend, "annotator_names", None)
        return list(names) if names is not None else [a.name for a in c.cfg.annotation.simulated.annotators]
    names = getattr(c.backend, "annotator_names", None)
    return list(names) if names is not None else None


# --------------------------------------------------------------------------- gold items


def ensure_gold(c: Campaign) -> list[str]:
    """Bring the gold file's items into the ledger (idempotent; re-read only when the file changes).

    New ids become items of split ``gold``; ids of never-queried pool items are
    moved to ``gold`` (so no arm can query and train on them); ids that are
    seed/test/calibration items or already queried are skipped with a note.
    Returns notes. Safe to call from set-up as well.
    """

    path = c.cfg.gold_file
    if path is None:
        return []
    if not path.is_file():
        raise FileNotFoundError(f"trust.gold_path {path} does not exist")
    st = path.stat()
    sig = f"{path}:{st.st_size}:{st.st_mtime_ns}"
    if c.ledger.get_meta("gold_file") == sig:
        return []
    d = c.cfg.data
    frame = load_table(path, id_col=d.id_column, text_col=d.text_column, label_col=d.label_column,
                       encoding=d.encoding, delimiter=d.delimiter, skip_unsupported=d.skip_unsupported_files)
    validate_pool(frame, label_set=c.labels, max_text_length=d.max_text_length, source=str(path))
    unlabelled = frame[frame["label"].isna()]["id"].tolist() if "label" in frame.columns else frame["id"].tolist()
    if unlabelled:
        raise ValueError(f"gold file {path}: {len(unlabelled)} row(s) without a label, e.g. {unlabelled[:5]}")
    items = c.ledger.items_frame().set_index("item_id")
    queried = set(c.ledger.queries_frame()["item_id"])
    new = frame[~frame["id"].isin(items.index)]
    old = frame[frame["id"].isin(items.index)]
    movable = [i for i in old["id"] if items.at[i, "split"] in ("pool", "gold") and i not in queried]
    skipped = sorted(set(old["id"]) - set(movable))
    notes = []
    if len(new):
        c.ledger.add_items(new.assign(split="gold")[["id", "text", "label", "split", "source_file"]])
        if c._backend is not None and c.cfg.annotation.backend == "simulated":
            c._backend = None  # the simulated annotators read known labels when built: rebuild with the gold items
    c.ledger.move_items_to_split(movable, "gold")
    accepted = frame[frame["id"].isin(list(new["id"]) + movable)]
    c.ledger.trust.add_gold_labels(dict(zip(accepted["id"], accepted["label"])), source="file")
    if skipped:
        notes.append(f"gold file: {len(skipped)} id(s) are seed/test/calibration or already queried items and "
                     f"were not used as gold, e.g. {skipped[:5]}")
    c.ledger.set_meta("gold_file", sig)
    return notes


def gold_items_for_round(c: Campaign, round_no: int, batch_size: int) -> list[str]:
    """The gold items to mix into a batch of ``batch_size`` AL/random items pushed in ``round_no``.

    Pure selection (nothing is written): ``trust.gold_rate`` of the pushed batch,
    unused gold items in a fixed pseudo-random order. Gold items already queued
    for this round are returned as they are (a re-run does not draw again).
    """
    q = c.ledger.queries_frame(arm=GOLD_ARM)
    this_round = q[q["round_no"] == round_no]["item_id"].tolist()
    if this_round:
        return this_round
    n = policy_mod.gold_count(c.cfg.trust.gold_rate, batch_size)
    if n == 0:
        return []
    gold = c.ledger.trust.gold_labels()
    gold_split = set(c.ledger.items_frame(splits=["gold"])["item_id"])
    used = set(q["item_id"]) | set(c.ledger.task_ids())
    return policy_mod.select_gold([i for i in gold.index if i in gold_split], used, n,
                                  seed=c.cfg.splits.random_state)


def expected_batch_items(c: Campaign, round_no: int) -> int:
    """How many AL/random items this round will push (0 when every arm stops)."""
    if round_no >= c.cfg.budget.max_rounds:
        return 0
    total = 0
    for arm in c.cfg.arms:
        spent = len(c.ledger.queries_frame(arm=arm))
        total += max(0, min(c.cfg.query.batch_size, c.cfg.budget.max_labels - spent))
    return total


def queue_gold(c: Campaign, round_no: int) -> list[str]:
    """Record this round's gold queries (arm ``gold``, reason ``gold``): ``push_pending`` then pushes
    them with the round's batch, unmarked. They never count toward an arm's budget."""
    ids = gold_items_for_round(c, round_no, expected_batch_items(c, round_no))
    if ids:
        c.ledger.add_queries(GOLD_ARM, round_no, [{"item_id": i, "strategy": "gold", "reason": "gold",
                                                   "score": None, "model_version": None} for i in ids])
    return ids


# --------------------------------------------------------------------------- adaptive redundancy


def _with_backend_capacity(c: Campaign, targets: dict[str, int], exhausted: set[str],
                           need: int) -> tuple[dict[str, int], set[str]]:
    """Lower the answers awaited for items the backend can never answer ``need`` times.

    Why: a replayed history may hold two answers for an item where the campaign asks for three (or
    one, for a team's single-annotator history). Waiting for the third would stall the campaign
    for ever; such items are decided on what they have and, if still unsure, go to adjudication.
    Backends that know how many answers they will give (the file-based ones) say so through
    ``answer_targets``; people in Label Studio can always answer, so nothing changes there.
    """
    capacity = getattr(c.backend, "answer_targets", None)
    if not callable(capacity):
        return targets, exhausted
    short = {str(i): int(n) for i, n in capacity().items() if 0 < int(n) < need}
    if not short:
        return targets, exhausted
    return {**targets, **short}, exhausted | set(short)


def answers_for_readiness(ann: pd.DataFrame, need: int) -> dict[str, int]:
    """item -> answers a batch-readiness check counts: distinct submitted answers, and ``need`` for an item
    nobody is left to answer (:func:`tasks.trust.responses`), so a round never waits for it."""
    counts, nobody = policy_mod.responses(ann)
    return {**counts, **{i: max(counts.get(i, 0), need) for i in nobody}}


def _with_skips(c: Campaign, targets: dict[str, int], exhausted: set[str],
                need: int) -> tuple[dict[str, int], set[str]]:
    """An item every known annotator answered or skipped waits no longer (:func:`tasks.trust.responses`).

    Why: Label Studio does not offer a task again to the one who skipped it; once everyone has
    answered or skipped it nobody is left to give the missing answer, and the item stayed
    ``pending`` ("2 of 3 answers") for ever, holding the round that waits for its batch. It is
    decided on the answers it has (adjudication if still unsure), as one the backend cannot answer
    more often is. With a larger team a skip only waits for someone else.
    """
    ann = c.ledger.annotations_frame()
    if ann.empty or not (ann["status"] == "skipped").any():
        return targets, exhausted
    counts, nobody = policy_mod.responses(ann)
    short = {i: counts.get(i, 0) for i in nobody
             if i not in exhausted and targets.get(i, need) > counts.get(i, 0)}
    if not short:
        return targets, exhausted
    return {**targets, **short}, exhausted | set(short)


def _give_up_late_requests(c: Campaign, frame: pd.DataFrame, targets: dict[str, int], exhausted: set[str],
                           round_no: int) -> tuple[dict[str, int], set[str], str | None]:
    """Give up extra answers that have not come within ``[annotation] extra_answer_rounds`` rounds.

    :func:`tasks.trust.expired_requests` decides which; they are recorded as exhausted (so the
    decision sends what is still unsure to adjudication) with their target lowered to the answers
    they have, and a backend that can withdraw the request (Label Studio: the task's overlap back
    down, marked labelled) stops offering the task to annotators. An answer that comes later
    anyway is still used.
    """
    counts = frame.groupby("item_id").size().to_dict() if len(frame) else {}
    open_targets = {i: t for i, t in targets.items() if i not in exhausted}
    late = policy_mod.expired_requests(open_targets, c.ledger.trust.answer_target_rounds(), counts, round_no,
                                       c.cfg.annotation.extra_answer_rounds)
    if not late:
        return targets, exhausted, None
    withdraw = getattr(c.backend, "withdraw_requests", None)
    if callable(withdraw):  # first: if the backend fails, the next run gives them up (and withdraws) again
        withdraw(late)
    c.ledger.trust.set_answer_targets(late, late, round_no)
    wait = c.cfg.annotation.extra_answer_rounds
    return ({**targets, **late}, exhausted | set(late),
            f"{len(late)} item(s) waited {wait} round(s) for an extra answer that did not come: decided on the "
            "answers they have, adjudication settles what is still unsure ([annotation] extra_answer_rounds)")


def ask_for_more(c: Campaign, result: policy_mod.TrustResult, targets: dict[str, int], exhausted: set[str],
                 pol: policy_mod.TrustPolicy, round_no: int) -> tuple[list[str], set[str]]:
    """Ask the backend for one more answer on every answered item the policy could not trust yet.

    Why: an unsure consensus (a 2-1 split, a tie, a low posterior) is usually settled by one
    more cheap answer; an adjudicator is the expensive last resort. Items at ``max_overlap``,
    or that the backend cannot give another annotator (every recorded or simulated annotator
    has answered), come back as *exhausted* and go to adjudication. Returns (notes, newly
    exhausted items); targets are stored in the ledger so the next round knows what it waits for.
    """
    items = result.items
    if items.empty:
        return [], set()
    need = pd.Series(targets, dtype="int64").reindex(items.index).fillna(pol.need).clip(lower=pol.need)
    ask = items.index[(items["status"] == "needs_more") & (items["n_annotations"] >= need)].tolist()
    if not ask:
        return [], set()
    request = getattr(c.backend, "request_more", None)
    if request is None:
        c.ledger.trust.set_answer_targets({}, ask, round_no)
        return [f"the {c.backend.name} backend cannot ask for more answers: {len(ask)} unsure item(s) go to "
                "adjudication instead"], set(ask)
    now = {str(k): int(v) for k, v in request(ask, pol.max_overlap).items()}
    before = {i: int(need[i]) for i in ask}
    raised = {i: now[i] for i in ask if now.get(i, 0) > before[i]}
    stuck = set(ask) - set(raised)
    c.ledger.trust.set_answer_targets(raised, stuck, round_no)
    notes = []
    if raised:
        notes.append(f"asked for one more answer on {len(raised)} unsure item(s) (adaptive redundancy, at most "
                     f"{pol.max_overlap} answers per item)")
    if stuck:
        notes.append(f"{len(stuck)} unsure item(s) can get no further answer from the {c.backend.name} backend: "
                     "adjudication decides them")
    return notes, stuck


# --------------------------------------------------------------------------- adjudication


def simulated_adjudicate(c: Campaign, item_ids: list[str]) -> dict[str, str]:
    """The simulated adjudicator: ``tasks.annotate.simulated_answer`` as annotator "adjudicator"
    with ``trust.adjudicator_accuracy`` (deterministic; items whose known label is missing or not in
    the current label set stay queued)."""

    if not item_ids:
        return {}
    known = c.ledger.items_frame().set_index("item_id")["known_label"]
    acc = c.cfg.trust.adjudicator_accuracy
    seed = c.cfg.annotation.simulated.seed
    return {i: simulated_answer(i, ADJUDICATOR, acc, known[i], c.labels, seed)
            for i in item_ids if i in known.index and known[i] in c.labels}  # an old-set label: stays queued


def request_review_tasks(c: Campaign, queue: pd.DataFrame, votes: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Label Studio adjudication: a review task per queued item, answers read back.

    The review tasks live in a second project, the campaign's title + " (adjudication)"
    (:meth:`LabelStudioBackend.review_backend`), so reviewers' answers never mix with the
    annotators'. Each task shows the item's text and every annotator's label (``votes``:
    ``"ann-1: billing | ann-2: tech"``); the choices are the current label set. First the
    review project is pulled: a submitted review of an item still awaiting adjudication
    (queued now or earlier) is returned as ``item_id -> (label, "label_studio:<reviewer>")``,
    the latest review winning. Then review tasks are opened for the queued items without an
    answer (idempotent: an item never gets a second review task). Answers given between
    rounds are thus picked up by the next round's decision. Last, the still-open review tasks
    are synced (:meth:`LabelStudioReviewBackend.sync_reviews`): their ``votes`` text follows
    answers that arrived after the task opened, and tasks of items no longer awaiting
    adjudication (decided with :func:`record_adjudication`) are closed.

    A backend without review support (no ``review_backend``) leaves the items queued in the
    ledger (``adjudications``, status ``pending``) for :func:`record_adjudication` and logs so.
    """
    log = logging.getLogger("labelloop.trust")
    make = getattr(c.backend, "review_backend", None)
    if make is None:
        log.warning("%d item(s) await adjudication; backend %s has no review tasks: decide them with "
                    "labelloop.flows.trust.record_adjudication", len(queue), getattr(c.backend, "name", "?"))
        return {}
    review = make()
    waiting = set(queue.index) | set(c.ledger.trust.adjudications_frame(status="pending")["item_id"])
    answers: dict[str, tuple[str, str]] = {}
    latest: dict[str, Any] = {}
    for a in review.pull():
        if a.status != "submitted" or a.item_id not in waiting or a.label not in c.labels:
            continue
        if a.item_id not in latest or a.updated_at >= latest[a.item_id]:
            latest[a.item_id] = a.updated_at
            answers[a.item_id] = (a.label, f"label_studio:{a.annotator}")
    still_open = waiting - set(answers)
    v = votes[votes["item_id"].isin(still_open)].sort_values(["item_id", "annotator"])
    by_item = {i: " | ".join(f"{a}: {lbl}" for a, lbl in zip(g["annotator"], g["label"]))
               for i, g in v.groupby("item_id")}
    todo = [i for i in queue.index if i not in answers]
    if todo:
        texts = c.ledger.items_frame().set_index("item_id")["text"]
        review.push_reviews([(i, str(texts[i]), by_item.get(i, "(no usable answers)")) for i in todo])
        log.info("%d item(s) queued for adjudication in Label Studio project %r", len(todo), review.project_title)
    # open tasks show today's votes; tasks of items settled elsewhere are closed
    review.sync_reviews({i: by_item.get(i, "(no usable answers)") for i in still_open})
    return answers


def record_adjudication(c: Campaign, item_id: str, label: str, adjudicator: str = "reviewer",
                        round_no: int | None = None) -> None:
    """Store a human adjudicator's label; it wins over the consensus from the next round on."""
    if label not in c.labels:
        raise ValueError(f"label {label!r} is not in the label set {c.labels}")
    c.ledger.trust.record_adjudication(item_id, label, adjudicator=adjudicator, round_no=round_no,
                                 label_version=c.cfg.labels.version)


def _adjudicated_labels(c: Campaign, history: LabelHistory) -> tuple[pd.Series, set[str]]:
    """Done adjudications mapped to the current label set; ones a label-set change invalidated
    are sent back to the queue and returned as items to re-label."""
    adj = c.ledger.trust.adjudications_frame(status="done")
    if adj.empty:
        return pd.Series(dtype=object), set()
    frame = adj[["item_id", "label", "label_version"]]
    mapped = migrate_labels(frame, history)
    redo = mapped[mapped["needs_relabel"]]["item_id"].tolist()
    if redo:
        c.ledger.trust.reopen_adjudications(redo, "label set changed: adjudicated label no longer exists")
    ok = mapped[~mapped["needs_relabel"]]
    return pd.Series(ok["label"].to_numpy(), index=ok["item_id"].to_numpy(), dtype=object), set(redo)


# --------------------------------------------------------------------------- contracts


def _validate(fn: Any, frame: pd.DataFrame, **kw: Any) -> tuple[Any, list[Any]]:
    """Run a contract; returns (summary or None, failures). Never raises a DataContractError."""

    try:
        return fn(frame, **kw), []
    except DataContractError as err:
        return err.summary, err.failures


def _annotation_frame(c: Campaign, history: LabelHistory) -> tuple[pd.DataFrame, set[str], int, int]:
    """All pulled annotations with labels mapped to the current label set.

    Returns (frame, items to re-label, answers that need re-labelling, answers stamped with a
    version the config does not know — dropped, never mixed in). Rows whose label is not in
    the version they were stamped with keep their label, so the contract reports them."""
    ann = c.ledger.annotations_with_versions()
    if ann.empty:
        return ann, set(), 0, 0
    current = history.current.version
    ann["label_version"] = ann["label_version"].fillna(current).astype(int)
    unknown = ~ann["label_version"].isin(list(history.schemas))
    n_unknown = int(unknown.sum())
    ann = ann[~unknown]
    sub = ann["status"] == "submitted"
    fits = pd.Series(False, index=ann.index)
    for v, schema in history.schemas.items():
        fits |= (ann["label_version"] == v) & ann["label"].isin(list(schema.names))
    to_map = sub & fits & (ann["label_version"] != current)
    relabel_items: set[str] = set()
    n_relabel = 0
    if to_map.any():
        mapped = migrate_labels(ann[to_map], history)
        ann.loc[to_map, "label"] = mapped["label"]
        flagged = mapped["needs_relabel"]
        n_relabel = int(flagged.sum())
        relabel_items = set(mapped.loc[flagged, "item_id"])
        ann = ann.drop(index=mapped.index[flagged])
    return ann, relabel_items, n_relabel, n_unknown


# --------------------------------------------------------------------------- the decision


def decide_trust(c: Campaign, round_no: int, *, clock: int | None = None) -> TrustDecision:
    """Decide which labels are trusted this round (see the module docstring).

    ``consensus`` holds the trusted items only: items with enough answers
    from annotators who pass the quality check, in a batch that passed the
    agreement gate, whose consensus is confident or was adjudicated. Gold
    items never appear there.
    """

    cfg = c.cfg
    pol = trust_policy(c)
    notes: list[str] = []
    tags: dict[str, str] = {}
    artifacts: dict[str, str] = {}

    history = label_history(c)
    notes.extend(ensure_gold(c))
    c.ledger.trust.stamp_label_version(history.current.version)
    ann, relabel_items, n_relabel, n_unknown_version = _annotation_frame(c, history)
    if n_unknown_version:
        notes.append(f"{n_unknown_version} answer(s) carry a label-set version missing from [labels] / "
                     "[[labels.previous]]; they are left out (describe that version to map them)")
    if n_relabel:
        notes.append(f"label set version {history.current.version}: {n_relabel} earlier answer(s) on "
                     f"{len(relabel_items)} item(s) cannot be mapped (split/removed labels) and need re-labelling")

    items = c.ledger.items_frame()
    forbidden = set(items.loc[items["split"].isin(["test", "calibration"]), "item_id"])
    tasks = c.ledger.tasks_frame()
    batch_of = pd.Series(tasks["round_no"].to_numpy(), index=tasks["item_id"].to_numpy()) if len(tasks) else pd.Series(dtype=object)

    # --- annotations contract: documented by GX, enforced row by row
    held_back = 0
    if len(ann):
        cols = ["backend_annotation_id", "item_id", "annotator", "label", "status", "created_at", "updated_at"]
        frame = ann[cols].reset_index(drop=True)
        known = set(tasks["item_id"]) if len(tasks) else set()
        names = known_annotators(c)
        summary, failures = _validate(validate_annotations, frame, known_items=known, known_annotators=names,
                                      label_set=c.labels, source=f"ledger annotations (round {round_no})")
        if summary is not None:
            artifacts["data_docs/annotations.html"] = summary.to_html()
        why = policy_mod.contract_offenders(frame, known_items=known, known_annotators=names, labels=c.labels)
        bad = why != ""
        held_back = int((bad & (frame["status"] == "submitted")).sum())
        for f in failures[:5]:
            notes.append("annotations contract: " + f.describe())
        if failures:
            notes.append(f"annotations contract failed: {held_back} answer(s) held back from consensus")
        tags["labelloop.contract.annotations"] = "failed" if failures else "passed"
        frame = frame[~bad & (frame["status"] == "submitted")]
        # Answers on test / calibration items go through the same trust decision (overlap, gold, gates),
        # and their trusted labels become evaluation labels below; they never reach a training set.
    else:
        frame = pd.DataFrame(columns=["item_id", "annotator", "label"])

    # --- the decision
    gold = c.ledger.trust.gold_labels()
    adjudicated, reopened = _adjudicated_labels(c, history)
    relabel_items |= reopened
    q = c.ledger.queries_frame()
    reasons = q[["item_id", "reason"]] if len(q) else None
    targets, exhausted = c.ledger.trust.answer_targets()
    targets, exhausted = _with_backend_capacity(c, targets, exhausted, pol.need)
    targets, exhausted = _with_skips(c, targets, exhausted, pol.need)
    # ``clock``: how many rounds have passed for an extra-answer request's deadline; the settle passes after
    # a campaign's last round all decide under the same round number, so they bring their own count
    targets, exhausted, expiry_note = _give_up_late_requests(c, frame, targets, exhausted,
                                                             round_no if clock is None else clock)
    if expiry_note:
        notes.append(expiry_note)
    decide = lambda: policy_mod.decide(  # noqa: E731 - decided again when redundancy hits its limit
        frame[["item_id", "annotator", "label"]], c.labels, pol, batch_of=batch_of, gold=gold,
        adjudicated=adjudicated, reasons=reasons, relabel=relabel_items, targets=targets, exhausted=exhausted)
    result = decide()

    # --- adaptive redundancy: an answered item that is not trusted yet gets one more annotator
    more_notes, newly_exhausted = ask_for_more(c, result, targets, exhausted, pol, round_no)
    notes.extend(more_notes)
    if newly_exhausted:  # the backend has no further annotator for them: adjudication decides
        exhausted = exhausted | newly_exhausted
        result = decide()

    # --- adjudication
    queue = result.adjudication_queue
    # With Label Studio, earlier review tasks are read back (and kept current) even in a round
    # that queues nothing new: a reviewer's answer must not wait for the next low-confidence item.
    pending_reviews = (cfg.annotation.backend == "label_studio" and cfg.trust.adjudication
                       and len(c.ledger.trust.adjudications_frame(status="pending")) > 0)
    if (len(queue) or pending_reviews) and cfg.trust.adjudication:
        if len(queue):
            c.ledger.trust.request_adjudications(round_no, queue)
        who: dict[str, str] = {}
        if cfg.annotation.backend == "label_studio":
            reviewed = request_review_tasks(c, queue, frame)
            answers = {i: lbl for i, (lbl, _) in reviewed.items()}
            who = {i: by for i, (_, by) in reviewed.items()}
            n_open = len(set(queue.index) - set(answers))
            if n_open and hasattr(c.backend, "review_backend"):
                title = getattr(c.backend, "project_title", "?")
                notes.append(f"{n_open} item(s) sent for review to Label Studio project '{title} (adjudication)'")
        else:
            answers = simulated_adjudicate(c, list(queue.index))
        for item, label in answers.items():
            c.ledger.trust.record_adjudication(item, label, adjudicator=who.get(item, ADJUDICATOR), round_no=round_no,
                                         label_version=history.current.version)
        if answers:
            result = policy_mod.apply_adjudications(result, answers, c.labels, frame, pol)
            notes.append(f"adjudicator decided {len(answers)} item(s) (their label wins)")

    trusted = result.trusted
    evaluation = trusted[trusted.index.isin(forbidden)]
    trusted = trusted[~trusted.index.isin(forbidden)]  # evaluation items never train

    # --- training-set contract, per arm (what each model is about to see)
    test_cal = forbidden
    for arm in cfg.arms:
        aq = c.ledger.queries_frame(arm=arm)
        lab = aq[["item_id"]].merge(trusted[["label"]], left_on="item_id", right_index=True, how="inner")
        train = lab.rename(columns={"item_id": "id"})[["id", "label"]]
        summary, failures = _validate(validate_training_set, train, forbidden_ids=test_cal,
                                      min_per_class=cfg.trust.min_per_class, label_set=c.labels,
                                      source=f"{arm} arm, round {round_no}")
        if summary is not None:
            artifacts[f"data_docs/training_set_{arm}.html"] = summary.to_html()
        tags[f"labelloop.contract.training_set_{arm}"] = "failed" if failures else "passed"
        for f in failures[:5]:
            notes.append(f"training-set contract ({arm}): " + f.describe())

    # --- metrics, persistence, next batch's gold
    metrics = dict(result.metrics)
    metrics["label_set_version"] = float(history.current.version)
    metrics["n_relabel"] = float(n_relabel)
    metrics["n_annotations_held_back"] = float(held_back)
    metrics["n_trusted"] = float(len(trusted))
    split_of = items.set_index("item_id")["split"]
    eval_split = split_of.reindex(evaluation.index)
    metrics["n_trusted_test"] = float((eval_split == "test").sum())
    metrics["n_trusted_calibration"] = float((eval_split == "calibration").sum())
    eval_q = q[q["arm"] == EVAL_ARM] if len(q) else q
    metrics["evaluation_items"] = float(len(eval_q))  # the evaluation budget spent (reported apart from the arms')
    metrics["evaluation_answers"] = float(frame["item_id"].isin(set(eval_q["item_id"])).sum()) if len(eval_q) else 0.0
    notes = notes + result.notes
    tags.update(result.tags)
    tags["labelloop.label_set_version"] = str(history.current.version)
    c.ledger.trust.save_trust_round(round_no, items=result.items, batches=result.batches, annotators=result.annotators,
                              metrics=metrics, notes=notes, tags=tags)
    artifacts["trust/report.md"] = trust_report_markdown(round_no, result, metrics, notes)
    consensus = trusted[["label", "confidence", "n_annotations", "source"]]
    return TrustDecision(consensus, metrics=metrics, notes=notes, tags=tags, artifacts=artifacts, items=result.items,
                         evaluation=evaluation[["label", "confidence", "n_annotations", "source"]])


# --------------------------------------------------------------------------- reporting


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.0f}%" if pct else f"{v:.2f}"


def trust_report_markdown(round_no: int, result: policy_mod.TrustResult, metrics: dict, notes: list[str]) -> str:
    """The round's trust decision as a Markdown page (logged as ``trust/report.md``)."""
    lines = [f"# Trust decision, round {round_no}", "",
             f"consensus: {result.method}" + (f" (fell back: {result.fallback_reason})" if result.fallback_reason else "")
             + (f" -- {result.method_reason}" if result.method_reason else ""),
             "", "| metric | value |", "|---|---|"]
    for k in ("krippendorff_alpha", "krippendorff_alpha_trusted", "fleiss_kappa", "mean_cohen_kappa",
              "percent_agreement", "n_trusted", "n_quarantined", "n_adjudication_queue", "n_adjudicated",
              "n_pending", "n_gold_items", "agreement_al", "agreement_random", "agreement_al_minus_random"):
        lines.append(f"| {k} | {_fmt(metrics.get(k)) if not k.startswith('n_') else int(metrics.get(k, 0))} |")
    lines += ["", "## Batches", "", "| batch | items | alpha (trusted) | alpha (all) | status |", "|---|---|---|---|---|"]
    for b, r in result.batches.iterrows():
        lines.append(f"| {b} | {r['n_items']} | {_fmt(r['krippendorff_alpha'])} | {_fmt(r['alpha_all_annotators'])} "
                     f"| {r['status']} |")
    lines += ["", "## Annotators", "", "| annotator | gold acc (n) | leave-one-out acc (n) | basis | flagged | action |",
              "|---|---|---|---|---|---|"]
    for a, r in result.annotators.iterrows():
        lines.append(f"| {a} | {_fmt(r['gold_accuracy'])} ({r['n_gold']}) | {_fmt(r['loo_accuracy'])} ({r['n_loo']}) "
                     f"| {r['basis']} | {'yes' if r['flagged'] else 'no'} | {r['action']} |")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def trust_summary(c: Campaign) -> list[str]:
    """Lines for ``labelloop status``: agreement, quarantine decisions, annotator quality, queue."""
    rounds = c.ledger.trust.trust_rounds()
    if not rounds:
        return ["trust: no round decided yet"]
    last = max(rounds)
    ran = max((r.round_no for r in c.ledger.list_rounds()), default=0)
    # the settle pass after the last round decides under the next round's number: no such round ran
    settled = (lambda n: bool(ran) and n > ran)  # noqa: E731
    m = rounds[last]["metrics"]
    g = lambda k: m.get(k) if m.get(k) is not None else float("nan")  # noqa: E731
    out = [
        f"trust ({f'after round {ran}' if settled(last) else f'round {last}'}): {rounds[last]['tags'].get('labelloop.consensus', '?')} consensus; "
        f"alpha {_fmt(g('krippendorff_alpha'))} (trusted annotators {_fmt(g('krippendorff_alpha_trusted'))}), "
        f"Fleiss {_fmt(g('fleiss_kappa'))}, mean Cohen {_fmt(g('mean_cohen_kappa'))}, "
        f"agreement {_fmt(g('percent_agreement'), pct=True)}",
        f"  labels: {int(m.get('n_trusted') or 0)} trusted, {int(m.get('n_quarantined') or 0)} quarantined, "
        f"{int(m.get('n_adjudication_queue') or 0)} awaiting adjudication, {int(m.get('n_adjudicated') or 0)} adjudicated, "
        f"{int(m.get('n_pending') or 0)} waiting for answers, "
        f"{int(m.get('n_needs_more') or 0)} waiting for an extra answer, {int(m.get('n_gold_items') or 0)} gold; "
        f"label set v{int(m.get('label_set_version') or 1)}",
    ]
    batches = c.ledger.trust.batch_decisions_frame(round_no=last)
    if len(batches):
        parts = [f"{int(r.batch)} {'QUARANTINED' if r.status == 'quarantined' else r.status} "
                 f"a={_fmt(r.krippendorff_alpha)}" for r in batches.itertuples()]
        out.append("  batches: " + " | ".join(parts))
    ann = c.ledger.trust.annotator_status_frame(round_no=last)
    if len(ann):
        parts = []
        for r in ann.itertuples():
            gold = f"gold {_fmt(r.gold_accuracy)} ({r.n_gold})" if (r.n_gold or 0) else "gold -"
            cons = f"consensus {_fmt(r.consensus_accuracy)} ({r.n_consensus or 0})"
            flag = f" ALERT {r.action}" if r.flagged else ""
            parts.append(f"{r.annotator}: {gold}, {cons}, others {_fmt(r.loo_accuracy)} ({r.n_loo}){flag}")
        out.append("  annotators: " + " | ".join(parts))
    q = quarantined_batches(c.ledger.trust.batch_decisions_frame())
    if len(q):
        out.append("  quarantined batches: " + " | ".join(
            f"batch {int(r.batch)} (round {int(r.round_no)}, a={_fmt(r.krippendorff_alpha)}): {r.reason}"
            for r in q.itertuples()))
    history = " ".join(f"{'settled' if settled(n) else f'r{n}'}={_fmt(rounds[n]['metrics'].get('krippendorff_alpha'))}"
                       for n in sorted(rounds))
    out.append(f"  alpha per round: {history}")
    adj = c.ledger.trust.adjudications_frame()
    if len(adj):
        n_pending = int((adj["status"] == "pending").sum())
        where = " (Label Studio review project)" if c.cfg.annotation.backend == "label_studio" else ""
        out.append(f"  adjudication: {n_pending} pending{where}, {int((adj['status'] == 'done').sum())} decided")
    d = m.get("agreement_al_minus_random")
    if d is not None:
        out.append(f"  health: agreement AL {_fmt(m.get('agreement_al'))} vs random {_fmt(m.get('agreement_random'))} "
                   f"(AL - random {d:+.2f})")
    return out


def quarantined_batches(decisions: pd.DataFrame) -> pd.DataFrame:
    """Batches whose *latest* decision is quarantine (a later round may release or quarantine a batch)."""
    if decisions.empty:
        return decisions
    latest = decisions.sort_values("round_no").drop_duplicates("batch", keep="last")
    return latest[latest["status"] == "quarantined"]


def trust_status(c: Campaign) -> dict[str, Any]:
    """The trust part of ``labelloop status`` as plain data (for ``status_json``)."""
    rounds = c.ledger.trust.trust_rounds()
    if not rounds:
        return {"rounds": {}, "batches": [], "annotators": [], "adjudication": {}}

    def clean(records: list[dict]) -> list[dict]:
        return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in records]

    last = max(rounds)
    batches = c.ledger.trust.batch_decisions_frame()
    ann = c.ledger.trust.annotator_status_frame(round_no=last)
    adj = c.ledger.trust.adjudications_frame()
    return {
        "latest_round": last,
        "rounds": {n: {"metrics": r["metrics"], "tags": r["tags"], "notes": r["notes"]} for n, r in rounds.items()},
        "batches": clean(batches.to_dict("records")),
        "quarantined_batches": clean(quarantined_batches(batches).to_dict("records")),
        "annotators": clean(ann.to_dict("records")),
        "flagged_annotators": sorted(ann.loc[ann["flagged"].astype(bool), "annotator"]) if len(ann) else [],
        "adjudication": {"pending": int((adj["status"] == "pending").sum()) if len(adj) else 0,
                         "done": int((adj["status"] == "done").sum()) if len(adj) else 0},
    }
