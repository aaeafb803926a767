"""A simulated annotation backend: annotators answer from known labels.

It keeps its tasks in a small JSON file in the campaign folder so that, like a
real Label Studio, it outlives the process: a round killed after a push and
re-run sees the tasks it already created. Annotations are generated on pull,
deterministically (see tasks.annotate), so pulling twice gives the same ids
and labels.

``FileTaskBackend`` is that task store; a backend built on it only says who
answers an item and how (``answers``), as the replay backend does too. It
also implements adaptive redundancy (``request_more``): one more annotator
per item on request, the earlier answers unchanged.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Mapping, Sequence

from labelloop.integrations.backend import BackendError, PulledAnnotation, TaskRequest
from labelloop.tasks.annotate import assign_annotators, simulated_answer, simulated_lead_time


class FileTaskBackend:
    """Tasks in a JSON file, annotations generated on pull from ``answers(item_id, target)``.

    Subclasses set ``name`` and implement ``can_answer``, ``available`` and
    ``answers``. Every item has a fixed, stable order of annotators; a task
    yields the first ``target`` of them. The target starts at ``overlap``
    (None: everyone who can answer) and ``request_more`` raises it one at a
    time (adaptive redundancy), stored per task in the JSON state so a new
    process sees it. Raising it never changes the answers already given.
    """

    name = "file"
    # Replay: an item nobody recorded an answer for is accepted and stays unanswered
    # (``unanswerable`` reports it); the simulated annotators can answer only known labels.
    accepts_unanswerable = False

    def __init__(self, state_path: str | Path, *, overlap: int | None = None):
        self.state_path = Path(state_path)
        self.overlap = overlap

    # ----- what a subclass provides ----------------------------------------
    def can_answer(self, item_id: str) -> bool:
        raise NotImplementedError

    def available(self, item_id: str) -> int:
        """How many answers ``item_id`` can ever get (its annotators in the stable order)."""
        raise NotImplementedError

    def answers(self, item_id: str, target: int | None = None) -> list[tuple[str, str]]:
        """The first ``target`` (default: ``overlap``) ``(annotator, label)`` pairs of ``item_id``'s
        stable order; the same on every call, and a larger target only appends."""
        raise NotImplementedError

    # ----- state -------------------------------------------------------------
    def _load(self) -> dict:
        if not self.state_path.exists():
            return {"next_id": 1, "tasks": {}}
        try:
            return json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise BackendError(f"{self.name} backend state {self.state_path} is unreadable: {err}") from None

    def _save(self, state: dict) -> None:
        # Atomic replace: a kill mid-write leaves the previous state, never half a file.
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_path.parent, prefix=f".{self.name}-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
        os.replace(tmp, self.state_path)

    def _target(self, item_id: str, task: dict) -> int:
        """The number of answers the task yields now: its stored target (or ``overlap``), capped
        by what can come at all."""
        n = self.available(item_id)
        want = task.get("target", self.overlap)
        return n if want is None else min(int(want), n)

    # ----- interface ---------------------------------------------------------
    def push(self, tasks: Sequence[TaskRequest]) -> dict[str, str]:
        state = self._load()
        by_item = {t["item_id"]: tid for tid, t in state["tasks"].items()}
        unknown = [t.item_id for t in tasks if t.item_id not in by_item and not self.can_answer(t.item_id)]
        if unknown and not self.accepts_unanswerable:  # checked before anything is written
            raise BackendError(f"the {self.name} annotators cannot answer {len(unknown)} item(s) "
                               f"(no known or recorded label), e.g. {unknown[:5]}")
        now = datetime.now(timezone.utc).isoformat()
        for t in tasks:
            if t.item_id in by_item:
                continue
            tid = str(state["next_id"])
            state["next_id"] += 1
            state["tasks"][tid] = {"item_id": t.item_id, "pushed_at": now, "prediction": t.predicted_label}
            by_item[t.item_id] = tid
        self._save(state)
        return {t.item_id: by_item[t.item_id] for t in tasks}

    def pull(self) -> list[PulledAnnotation]:
        state = self._load()
        out: list[PulledAnnotation] = []
        for tid, t in sorted(state["tasks"].items(), key=lambda kv: int(kv[0])):
            if t.get("closed"):
                continue
            item = t["item_id"]
            pushed = datetime.fromisoformat(t["pushed_at"])
            more_at = [datetime.fromisoformat(x) for x in t.get("more_at", [])]
            target = self._target(item, t)
            first_extra = target - len(more_at)  # answers from request_more arrive after it was called
            ts = pushed
            for j, (annotator, label) in enumerate(self.answers(item, target)):
                ts = (pushed + timedelta(seconds=j + 1) if j < first_extra
                      else max(more_at[j - first_extra], ts) + timedelta(seconds=1))
                out.append(PulledAnnotation(
                    backend_annotation_id=f"{tid}:{annotator}", backend_task_id=tid, item_id=item,
                    annotator=annotator, label=label, status="submitted", created_at=ts, updated_at=ts,
                    lead_time=self.lead_time(item, annotator),
                ))
        return out

    def lead_time(self, item_id: str, annotator: str) -> float | None:
        """Seconds ``annotator`` spent on ``item_id``; None: this backend does not know."""
        return None

    def close_tasks(self, backend_task_ids: Sequence[str]) -> None:
        state = self._load()
        for tid in backend_task_ids:
            if tid in state["tasks"]:
                state["tasks"][tid]["closed"] = True
        self._save(state)

    def request_more(self, item_ids: Sequence[str], max_overlap: int) -> dict[str, int]:
        """Adaptive redundancy: one more annotator (the next in the item's stable order) for each
        pushed item, never beyond ``max_overlap``. Returns item_id -> the new target; unchanged when
        the item is at ``max_overlap``, has no further annotator, or its task is closed. Items never
        pushed are left out. One atomic state write."""
        state = self._load()
        by_item = {t["item_id"]: tid for tid, t in state["tasks"].items()}
        now = datetime.now(timezone.utc).isoformat()
        out: dict[str, int] = {}
        changed = False
        for item in dict.fromkeys(item_ids):
            tid = by_item.get(item)
            if tid is None:
                continue
            task = state["tasks"][tid]
            target = self._target(item, task)
            if not task.get("closed") and target < max_overlap and target < self.available(item):
                target += 1
                task["target"] = target
                task.setdefault("more_at", []).append(now)
                changed = True
            out[item] = target
        if changed:
            self._save(state)
        return out

    def answer_targets(self, item_ids: Sequence[str] | None = None) -> dict[str, int]:
        """item_id -> how many answers the item's task will yield as things stand (pushed items only;
        default: all). Lets a waiting round tell "not answered yet" from "no more will come"."""
        state = self._load()
        wanted = None if item_ids is None else set(item_ids)
        return {t["item_id"]: self._target(t["item_id"], t) for t in state["tasks"].values()
                if wanted is None or t["item_id"] in wanted}

    def unanswerable(self, item_ids: Sequence[str] | None = None) -> list[str]:
        """Pushed items (of ``item_ids``; default: all) that will never get an answer (sorted)."""
        return sorted(i for i, n in self.answer_targets(item_ids).items() if n == 0)


class SimulatedBackend(FileTaskBackend):
    name = "simulated"

    def __init__(
        self,
        state_path: str | Path,
        *,
        true_labels: Mapping[str, str],
        annotators: Sequence[tuple[str, float]],
        labels: Sequence[str],
        overlap: int = 3,
        seed: int = 0,
    ):
        super().__init__(state_path, overlap=overlap)
        self.true_labels = true_labels
        self.annotators = list(annotators)
        self.accuracy = dict(annotators)
        self.labels = list(labels)
        self.seed = seed

    @property
    def annotator_names(self) -> list[str]:
        return [a for a, _ in self.annotators]

    def can_answer(self, item_id: str) -> bool:
        return item_id in self.true_labels

    def lead_time(self, item_id: str, annotator: str) -> float | None:
        return simulated_lead_time(item_id, annotator, self.seed)

    def available(self, item_id: str) -> int:
        return len(self.annotators) if item_id in self.true_labels else 0

    def answers(self, item_id: str, target: int | None = None) -> list[tuple[str, str]]:
        # assign_annotators ranks all annotators by a stable hash and keeps the first k, so a
        # larger target keeps the same first annotators (and their answers) and appends.
        k = self.overlap if target is None else target
        return [(ann, simulated_answer(item_id, ann, self.accuracy[ann], self.true_labels[item_id], self.labels,
                                       self.seed))
                for ann in assign_annotators(item_id, self.annotator_names, k, self.seed)]
