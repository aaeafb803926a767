"""A simulated annotation backend: annotators answer from known labels.

It keeps its tasks in a small JSON file in the campaign folder so that, like a
real Label Studio, it outlives the process: a round killed after a push and
re-run sees the tasks it already created. Annotations are generated on pull,
deterministically (see tasks.annotate), so pulling twice gives the same ids
and labels.

``FileTaskBackend`` is that task store; a backend built on it only says who
answers an item and how (``answers``), as the replay backend does too.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Mapping, Sequence

from integrations.backend import BackendError, PulledAnnotation, TaskRequest
from tasks.annotate import assign_annotators, simulated_answer


class FileTaskBackend:
    """Tasks in a JSON file, annotations generated on pull from ``answers(item_id)``.

    Subclasses set ``name`` and implement ``can_answer`` and ``answers``.
    """

    name = "file"

    def __init__(self, state_path: str | Path):
        self.state_path = Path(state_path)

    # ----- what a subclass provides ----------------------------------------
    def can_answer(self, item_id: str) -> bool:
        raise NotImplementedError

    def answers(self, item_id: str) -> list[tuple[str, str]]:
        """``(annotator, label)`` pairs for ``item_id``, the same on every call."""
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

    # ----- interface ---------------------------------------------------------
    def push(self, tasks: Sequence[TaskRequest]) -> dict[str, str]:
        state = self._load()
        by_item = {t["item_id"]: tid for tid, t in state["tasks"].items()}
        unknown = [t.item_id for t in tasks if t.item_id not in by_item and not self.can_answer(t.item_id)]
        if unknown:  # checked before anything is written: a refused batch creates no task
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
            for j, (annotator, label) in enumerate(self.answers(item)):
                ts = pushed + timedelta(seconds=j + 1)
                out.append(PulledAnnotation(
                    backend_annotation_id=f"{tid}:{annotator}", backend_task_id=tid, item_id=item,
                    annotator=annotator, label=label, status="submitted", created_at=ts, updated_at=ts,
                ))
        return out

    def close_tasks(self, backend_task_ids: Sequence[str]) -> None:
        state = self._load()
        for tid in backend_task_ids:
            if tid in state["tasks"]:
                state["tasks"][tid]["closed"] = True
        self._save(state)


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
        super().__init__(state_path)
        self.true_labels = true_labels
        self.annotators = list(annotators)
        self.accuracy = dict(annotators)
        self.labels = list(labels)
        self.overlap = overlap
        self.seed = seed

    def can_answer(self, item_id: str) -> bool:
        return item_id in self.true_labels

    def answers(self, item_id: str) -> list[tuple[str, str]]:
        names = [a for a, _ in self.annotators]
        return [(ann, simulated_answer(item_id, ann, self.accuracy[ann], self.true_labels[item_id], self.labels,
                                       self.seed))
                for ann in assign_annotators(item_id, names, self.overlap, self.seed)]
