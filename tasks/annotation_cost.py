"""The annotators' side of a round: their time, what it bought, and how each of them does (pure).

Why: the people labelling are the most expensive part of the loop, yet a round used to count
labels only. Label Studio records how long each annotation took (``lead_time``, seconds the
task was open, summed over edits); the ledger keeps it with the annotation, and these
functions turn it into what a team lead asks: seconds per label, a round's cost in hours,
hours per test-accuracy point (beside labels per point), and per annotator the answers,
agreement with the consensus, gold accuracy and median seconds per item.

Which answers a round "cost": those first pulled in that round (``pulled_in_round``), i.e. the
answers the round brings in to train on. An arm's share is the answers on items that arm
queried. Answers without a ``lead_time`` (a backend that does not record it, a ledger from
before it was kept) count as answers but not as time, and ``n_timed`` says how many were timed.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from labelloop.tasks.evaluate import cost_per_accuracy_point

__all__ = ["annotator_metrics", "annotator_table", "effort", "hours_per_accuracy_point", "items_of"]

_SUBMITTED = "submitted"


def _timed(ann: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(ann["lead_time"], errors="coerce") if "lead_time" in ann else pd.Series(np.nan, index=ann.index)


def effort(ann: pd.DataFrame) -> dict[str, float]:
    """Time spent on a set of answers (columns ``status``, ``lead_time``).

    ``annotation_seconds`` sums every timed answer, skipped ones included (a skip costs time too);
    ``annotation_seconds_per_label`` divides it by the submitted answers (the labels it bought);
    NaN when no answer was timed or no label came of it.
    """
    secs = _timed(ann)
    n_labels = int((ann["status"] == _SUBMITTED).sum()) if len(ann) else 0
    n_timed = int(secs.notna().sum())
    total = float(secs.sum()) if n_timed else float("nan")
    return {
        "annotation_answers": float(len(ann)),
        "annotation_labels": float(n_labels),
        "annotation_timed": float(n_timed),
        "annotation_seconds": total,
        "annotation_hours": total / 3600.0 if n_timed else float("nan"),
        "annotation_seconds_per_label": total / n_labels if n_timed and n_labels else float("nan"),
    }


def hours_per_accuracy_point(ann: pd.DataFrame, history: Sequence[tuple[int, float]]) -> float | None:
    """Annotation hours per test-accuracy point gained since the first evaluated round.

    ``ann``: the arm's answers (``pulled_in_round``, ``lead_time``); ``history``: (round, test
    accuracy) of each evaluated round, this one last. The hours at each round are those of the
    answers pulled up to it, so this is :func:`tasks.evaluate.cost_per_accuracy_point` with hours
    in place of labels: the seed round's hours are not charged. None without timing or without a gain.
    """
    if len(history) < 2 or ann.empty:
        return None
    secs = _timed(ann)
    if not secs.notna().any():
        return None
    pulled = pd.to_numeric(ann["pulled_in_round"], errors="coerce")
    hours = [float(secs[pulled <= r].sum()) / 3600.0 for r, _ in history]
    return cost_per_accuracy_point(hours, [a for _, a in history], 1.0)


def annotator_table(ann: pd.DataFrame, round_no: int, quality: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per annotator (index): answers to date, median seconds per item to date, this
    round's answers and seconds per label, and from the trust decision (``quality``: the ledger's
    ``annotator_status`` rows of the round) agreement with the consensus and gold accuracy.

    Columns: ``answers``, ``labels``, ``median_seconds``, ``round_answers``,
    ``round_seconds_per_label``, ``consensus_agreement``, ``n_consensus``, ``gold_accuracy``,
    ``n_gold`` (NaN where unknown).
    """
    cols = ["answers", "labels", "median_seconds", "round_answers", "round_seconds_per_label",
            "consensus_agreement", "n_consensus", "gold_accuracy", "n_gold"]
    names: set[str] = set(ann["annotator"].astype(str)) if len(ann) else set()
    if quality is not None and len(quality):
        names |= set(quality["annotator"].astype(str))
    out = pd.DataFrame(index=pd.Index(sorted(names), name="annotator"), columns=cols, dtype=float)
    if len(ann):
        a = ann.assign(annotator=ann["annotator"].astype(str), seconds=_timed(ann),
                       pulled=pd.to_numeric(ann["pulled_in_round"], errors="coerce"))
        by = a.groupby("annotator")
        out["answers"] = by.size().astype(float)
        out["labels"] = by["status"].apply(lambda s: float((s == _SUBMITTED).sum()))
        out["median_seconds"] = by["seconds"].median()
        now = a[a["pulled"] == round_no]
        if len(now):
            g = now.groupby("annotator")
            out["round_answers"] = g.size().astype(float)
            labels = g["status"].apply(lambda s: float((s == _SUBMITTED).sum()))
            timed = g["seconds"].count()
            secs = g["seconds"].sum().where(timed > 0)
            out["round_seconds_per_label"] = (secs / labels.where(labels > 0)).astype(float)
        out["round_answers"] = out["round_answers"].fillna(0.0)
        out[["answers", "labels"]] = out[["answers", "labels"]].fillna(0.0)
    if quality is not None and len(quality):
        q = quality.assign(annotator=quality["annotator"].astype(str)).set_index("annotator")
        out["consensus_agreement"] = pd.to_numeric(q["consensus_accuracy"], errors="coerce").reindex(out.index)
        out["n_consensus"] = pd.to_numeric(q["n_consensus"], errors="coerce").reindex(out.index)
        out["gold_accuracy"] = pd.to_numeric(q["gold_accuracy"], errors="coerce").reindex(out.index)
        out["n_gold"] = pd.to_numeric(q["n_gold"], errors="coerce").reindex(out.index)
    return out


def annotator_metrics(table: pd.DataFrame, metric_name: Callable[[str, str], str]) -> dict[str, float]:
    """MLflow metrics of :func:`annotator_table` (``annotator_<what>_<name>``), NaNs left out."""
    keys: Mapping[str, str] = {"answers": "annotator_answers_", "median_seconds": "annotator_median_seconds_",
                               "round_seconds_per_label": "annotator_seconds_per_label_",
                               "consensus_agreement": "annotator_consensus_agreement_",
                               "gold_accuracy": "annotator_gold_accuracy_"}
    out: dict[str, float] = {}
    for name, row in table.iterrows():
        for col, prefix in keys.items():
            v = row.get(col)
            if v is not None and v == v:
                out[metric_name(prefix, str(name))] = float(v)
    return out


def items_of(ann: pd.DataFrame, item_ids: Iterable[str]) -> pd.DataFrame:
    """The answers on ``item_ids`` (an arm's queried items)."""
    return ann[ann["item_id"].astype(str).isin({str(i) for i in item_ids})] if len(ann) else ann
