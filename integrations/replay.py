"""Replay real recorded annotators as an annotation backend.

Why: simulated annotators with a fixed accuracy agree in a way real people do
not (real disagreement clusters on hard items, and real workers differ in
kind, not only in accuracy). The shared data sets keep every crowd worker's
answer per item (``rte_mturk_annotations.csv``: 800 RTE items x 10 MTurk
workers with expert gold; ``md_agreement_annotations.csv``: 10,751 tweets x 5
workers). This backend answers a pushed item with exactly the answers those
workers gave, under their own worker ids, so agreement, Dawid–Skene,
annotator alerts and the quarantine gate run on real human behaviour.

Like the simulated backend it keeps its tasks in a JSON file (it outlives the
process; a retried push never creates a second task for an item) and
generates annotations on pull, deterministically (same ids and labels on
every pull). ``max_per_item`` keeps a fixed, pseudo-random subset of each
item's recorded workers: the overlap a campaign would actually pay for.

Long input format: ``item_id, text, annotator_id, label, gold`` (one row per
item and annotator); :func:`load_replay` also returns the items (``id, text,
label`` with ``label`` = gold) to set a campaign up from the same file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from integrations.backend import BackendError
from integrations.simulated import FileTaskBackend
from tasks.annotate import stable_uniform

REPLAY_COLUMNS = ("item_id", "text", "annotator_id", "label", "gold")


@dataclass
class ReplayData:
    items: pd.DataFrame  # id, text, label (the gold / reference label)
    annotations: pd.DataFrame  # item_id, annotator, label
    labels: list[str]  # sorted label names seen in the file


def load_replay(path: str | Path) -> ReplayData:
    """Read a long multi-annotator CSV; raises BackendError naming what is missing."""
    p = Path(path)
    if not p.is_file():
        raise BackendError(f"replay file not found: {p}")
    raw = pd.read_csv(p, dtype=str, keep_default_na=False)
    missing = [c for c in REPLAY_COLUMNS if c not in raw.columns]
    if missing:
        raise BackendError(f"replay file {p} lacks column(s) {missing}; need {list(REPLAY_COLUMNS)}")
    raw = raw[raw["label"] != ""]
    items = (raw.drop_duplicates("item_id")[["item_id", "text", "gold"]]
             .rename(columns={"item_id": "id", "gold": "label"}).reset_index(drop=True))
    ann = raw.rename(columns={"annotator_id": "annotator"})[["item_id", "annotator", "label"]].reset_index(drop=True)
    return ReplayData(items=items, annotations=ann, labels=sorted(set(ann["label"]) | set(items["label"]) - {""}))


class ReplayBackend(FileTaskBackend):
    """An ``AnnotationBackend`` whose annotators are the recorded workers of a real data set."""

    name = "replay"

    def __init__(self, state_path: str | Path, annotations: pd.DataFrame | str | Path, *,
                 max_per_item: int | None = None, seed: int = 0):
        if not isinstance(annotations, pd.DataFrame):
            annotations = load_replay(annotations).annotations
        need = {"item_id", "annotator", "label"}
        if not need <= set(annotations.columns):
            raise BackendError(f"replay annotations need columns {sorted(need)}, got {list(annotations.columns)}")
        if max_per_item is not None and max_per_item < 1:
            raise BackendError("max_per_item must be >= 1")
        super().__init__(state_path)
        self.max_per_item = max_per_item
        self.seed = seed
        frame = annotations.astype({"item_id": str, "annotator": str, "label": str})
        frame = frame.drop_duplicates(["item_id", "annotator"], keep="last")
        self._by_item: dict[str, list[tuple[str, str]]] = {}
        for item, annotator, label in frame[["item_id", "annotator", "label"]].itertuples(index=False):
            self._by_item.setdefault(item, []).append((annotator, label))

    @property
    def annotator_names(self) -> list[str]:
        """Every worker id that can answer (for the annotations contract's known-annotator rule)."""
        return sorted({a for answers in self._by_item.values() for a, _ in answers})

    def answers(self, item_id: str) -> list[tuple[str, str]]:
        """The (worker, label) answers replayed for ``item_id``: all recorded ones, or a fixed
        subset of ``max_per_item`` workers (chosen by a stable hash, so re-runs agree)."""
        recorded = self._by_item.get(item_id, [])
        if self.max_per_item is None or len(recorded) <= self.max_per_item:
            return list(recorded)
        ranked = sorted(recorded, key=lambda al: stable_uniform(self.seed, "replay", item_id, al[0]))
        return ranked[: self.max_per_item]

    def can_answer(self, item_id: str) -> bool:
        return item_id in self._by_item
