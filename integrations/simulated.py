"""A simulated annotation backend: annotators answer from known labels.

It keeps its tasks in a small JSON file in the campaign folder so that, like a
real Label Studio, it outlives the process: a round killed after a push and
re-run sees the tasks it already created. Annotations are generated on pull,
deterministically (see tasks.annotate), so pulling twice gives the same ids
and labels.
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


class SimulatedBackend:
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
        self.state_path = Path(state_path)
        self.true_labels = true_labels
        self.annotators = list(annotators)
        self.accuracy = dict(annotators)
        self.labels = list(labels)
        self.overlap = overlap
        self.seed = seed

    # ----- state -------------------------------------------------------------
    def _load(self) -> dict:
        if not self.state_path.exists():
            return {"next_id": 1, "tasks": {}}
        try:
            return json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise BackendError(f"simulated backend state {self.state_path} is unreadable: {err}") from None

    def _save(self, state: dict) -> None:
        # Atomic replace: a kill mid-write leaves the previous state, never half a file.
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_path.parent, prefix=".sim-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
        os.replace(tmp, self.state_path)

    # ----- interface ---------------------------------------------------------
    def push(self, tasks: Sequence[TaskRequest]) -> dict[str, str]:
        state = self._load()
        by_item = {t["item_id"]: tid for tid, t in state["tasks"].items()}
        now = datetime.now(timezone.utc).isoformat()
        for t in tasks:
            if t.item_id in by_item:
                continue
            if t.item_id not in self.true_labels:
                raise BackendError(f"simulated annotators have no known label for item {t.item_id!r}")
            tid = str(state["next_id"])
            state["next_id"] += 1
            state["tasks"][tid] = {"item_id": t.item_id, "pushed_at": now, "prediction": t.predicted_label}
            by_item[t.item_id] = tid
        self._save(state)
        return {t.item_id: by_item[t.item_id] for t in tasks}

    def pull(self) -> list[PulledAnnotation]:
        state = self._load()
        out: list[PulledAnnotation] = []
        names = [a for a, _ in self.annotators]
        for tid, t in sorted(state["tasks"].items(), key=lambda kv: int(kv[0])):
            if t.get("closed"):
                continue
            item = t["item_id"]
            pushed = datetime.fromisoformat(t["pushed_at"])
            for j, ann in enumerate(assign_annotators(item, names, self.overlap, self.seed)):
                label = simulated_answer(item, ann, self.accuracy[ann], self.true_labels[item], self.labels, self.seed)
                ts = pushed + timedelta(seconds=j + 1)
                out.append(PulledAnnotation(
                    backend_annotation_id=f"{tid}:{ann}", backend_task_id=tid, item_id=item, annotator=ann,
                    label=label, status="submitted", created_at=ts, updated_at=ts,
                ))
        return out

    def close_tasks(self, backend_task_ids: Sequence[str]) -> None:
        state = self._load()
        for tid in backend_task_ids:
            if tid in state["tasks"]:
                state["tasks"][tid]["closed"] = True
        self._save(state)
