"""Replay real recorded annotators as an annotation backend.

Why: simulated annotators with a fixed accuracy agree in a way real people do
not (real disagreement clusters on hard items, and real workers differ in
kind, not only in accuracy). The shared data sets keep every crowd worker's
answer per item (``rte_mturk_annotations.csv``: 800 RTE items x 10 MTurk
workers with expert gold; ``md_agreement_annotations.csv``: 10,751 tweets x 5
workers). This backend answers a pushed item with exactly the answers those
workers gave, under their own worker ids, so agreement, Dawid–Skene,
annotator alerts and the trust policy run on real human behaviour — and a
team can rehearse a campaign on its own labelling history
(``[annotation] backend = "replay"``, ``[annotation.replay] path``).

Like the simulated backend it keeps its tasks in a JSON file (it outlives the
process; a retried push never creates a second task for an item) and
generates annotations on pull, deterministically (same ids and labels on
every pull). Each item's recorded workers are put in a fixed order by a
stable hash (``seed``); a task yields the first ``max_per_item`` (the
campaign's ``overlap``) of them — the overlap a campaign would actually pay
for — and ``request_more`` adds the next recorded worker. An item with no
recorded answer is accepted by ``push`` and stays unanswered
(``unanswerable`` lists such items).

Two readers: :func:`read_answers` reads a campaign's replay file (CSV or
Parquet, long format, one row per answer, configurable column names) and
checks it; :func:`load_replay` reads the shared data sets' layout
(``item_id, text, annotator_id, label, gold``) and also returns the items
(``id, text, label`` with ``label`` = gold) to set a campaign up from the
same file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from labelloop.integrations.backend import BackendError
from labelloop.integrations.simulated import FileTaskBackend
from labelloop.tasks.annotate import stable_uniform

REPLAY_COLUMNS = ("item_id", "text", "annotator_id", "label", "gold")
ANSWER_COLUMNS = ["item_id", "annotator", "label"]  # what ReplayBackend consumes
_CSV = (".csv", ".tsv", ".txt")
_PARQUET = (".parquet", ".pq")


@dataclass
class ReplayData:
    items: pd.DataFrame  # id, text, label (the gold / reference label)
    annotations: pd.DataFrame  # item_id, annotator, label
    labels: list[str]  # sorted label names seen in the file


def read_answers(path: str | Path, *, item_column: str = "item_id", annotator_column: str = "annotator_id",
                 label_column: str = "label", labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a long-format answer file (one row per answer) into ``item_id, annotator, label``.

    CSV/TSV or Parquet. Every value is read as text and stripped; a row with a
    blank label is a skipped answer and dropped; when a worker answered an item
    twice the last row wins. Raises ``BackendError`` with one line naming the
    file and the column / data row (1-based, header excluded) for: a missing
    or unreadable file, a missing column, a blank item or annotator id, a label
    outside ``labels``, or no answer at all. Nothing is partially accepted.
    """
    p = Path(path)
    if not p.is_file():
        raise BackendError(f"replay file not found: {p}")
    cols = {"item_column": item_column, "annotator_column": annotator_column, "label_column": label_column}
    wanted = list(dict.fromkeys(cols.values()))
    suffix = p.suffix.lower()
    try:
        if suffix in _PARQUET:
            import pyarrow.parquet as pq

            available = list(pq.read_schema(p).names)
        elif suffix in _CSV:
            sep = "\t" if suffix == ".tsv" else ","
            available = list(pd.read_csv(p, sep=sep, nrows=0, encoding="utf-8-sig").columns)
        else:
            raise BackendError(f"replay file {p}: unknown file type {p.suffix or '(none)'!r}; use CSV, TSV or Parquet")
        missing = [f"{col!r} ([annotation.replay] {key})" for key, col in cols.items() if col not in available]
        if missing:
            raise BackendError(f"replay file {p}: missing column(s) {', '.join(missing)}; "
                               f"available columns: {available[:20]}")
        if suffix in _PARQUET:
            raw = pd.read_parquet(p, columns=wanted)
            raw = raw.astype(object).where(raw.notna(), "").astype(str)
        else:
            raw = pd.read_csv(p, sep=sep, usecols=wanted, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except BackendError:
        raise
    except (OSError, UnicodeError, ValueError, pd.errors.ParserError, ImportError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BackendError(f"replay file {p} cannot be read: {first}") from None
    frame = pd.DataFrame({"item_id": raw[item_column].str.strip(), "annotator": raw[annotator_column].str.strip(),
                          "label": raw[label_column].str.strip()})
    frame["row"] = range(1, len(frame) + 1)
    for key, col in (("item_id", item_column), ("annotator", annotator_column)):
        blank = frame.loc[frame[key] == "", "row"]
        if len(blank):
            raise BackendError(f"replay file {p}, row {int(blank.iloc[0])}: column {col!r} is blank "
                               f"({len(blank)} row(s) in all)")
    frame = frame[frame["label"] != ""]
    if labels is not None:
        bad = frame[~frame["label"].isin(set(labels))]
        if len(bad):
            r = bad.iloc[0]
            raise BackendError(f"replay file {p}, row {int(r['row'])}: column {label_column!r} has label "
                               f"{r['label']!r}, not in the label set {list(labels)} "
                               f"({len(bad)} row(s) in all, labels {sorted(set(bad['label']))[:10]})")
    if frame.empty:
        raise BackendError(f"replay file {p} has no answers (no row with a {label_column!r} value)")
    frame = frame.drop_duplicates(["item_id", "annotator"], keep="last")
    return frame[ANSWER_COLUMNS].reset_index(drop=True)


def load_replay(path: str | Path) -> ReplayData:
    """Read a shared data set's long multi-annotator CSV; raises BackendError naming what is missing."""
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
    ann = raw.rename(columns={"annotator_id": "annotator"})[ANSWER_COLUMNS].reset_index(drop=True)
    return ReplayData(items=items, annotations=ann, labels=sorted(set(ann["label"]) | set(items["label"]) - {""}))


class ReplayBackend(FileTaskBackend):
    """An ``AnnotationBackend`` whose annotators are the recorded workers of a real data set."""

    name = "replay"
    accepts_unanswerable = True

    def __init__(self, state_path: str | Path, annotations: pd.DataFrame | str | Path, *,
                 max_per_item: int | None = None, seed: int = 0):
        if not isinstance(annotations, pd.DataFrame):
            annotations = load_replay(annotations).annotations
        need = set(ANSWER_COLUMNS)
        if not need <= set(annotations.columns):
            raise BackendError(f"replay annotations need columns {sorted(need)}, got {list(annotations.columns)}")
        if max_per_item is not None and max_per_item < 1:
            raise BackendError("max_per_item must be >= 1")
        super().__init__(state_path, overlap=max_per_item)
        self.seed = seed
        frame = annotations.astype({"item_id": str, "annotator": str, "label": str})
        frame = frame.drop_duplicates(["item_id", "annotator"], keep="last")
        recorded: dict[str, list[tuple[str, str]]] = {}
        for item, annotator, label in frame[ANSWER_COLUMNS].itertuples(index=False):
            recorded.setdefault(item, []).append((annotator, label))
        # Each item's workers in a fixed order (stable hash of seed, item and worker): the same
        # workers answer on a re-run, and request_more appends the next one.
        self._by_item = {item: sorted(answers, key=lambda al, i=item: stable_uniform(seed, "replay", i, al[0]))
                         for item, answers in recorded.items()}
        self._annotators = sorted({a for answers in self._by_item.values() for a, _ in answers})

    @property
    def max_per_item(self) -> int | None:
        return self.overlap

    @property
    def annotator_names(self) -> list[str]:
        """Every worker id that can answer (for the annotations contract's known-annotator rule)."""
        return list(self._annotators)

    def answers(self, item_id: str, target: int | None = None) -> list[tuple[str, str]]:
        """The (worker, label) answers replayed for ``item_id``: the first ``target`` (default
        ``max_per_item``; None: all) of its recorded workers in the fixed stable-hash order."""
        ranked = self._by_item.get(item_id, [])
        k = self.overlap if target is None else target
        return list(ranked if k is None else ranked[:k])

    def available(self, item_id: str) -> int:
        return len(self._by_item.get(item_id, ()))

    def can_answer(self, item_id: str) -> bool:
        return item_id in self._by_item
