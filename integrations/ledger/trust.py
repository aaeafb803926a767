"""``ledger.trust``: the trust stage's tables behind methods (issue 5; a component since issue 15).

Before issue 15 these methods were attached to ``Ledger`` one by one with ``setattr``; they
are now :class:`TrustStore`, composed into every ``Ledger`` as ``ledger.trust``.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import Any, Iterable, Protocol, Sequence

import pandas as pd
from sqlalchemy import Table, delete, select, update

from labelloop.integrations.ledger.base import LedgerError, _aware, _chunks, _insert_ignore, _insert_new, _none_if_nan, _utcnow
from labelloop.integrations.ledger.schema import (
    adjudications,
    annotation_label_versions,
    annotations,
    annotator_status,
    answer_targets,
    batch_decisions,
    gold_labels,
    label_versions,
    trust_items,
    trust_rounds,
)


class _Ledger(Protocol):
    """What TrustStore needs of its Ledger (integrations.ledger.core imports this module, not the reverse)."""

    campaign: str

    def begin(self) -> AbstractContextManager[Any]: ...


class TrustStore:
    """The trust stage's storage (flows/trust.py): per-round decisions, adjudication, gold,
    label-set versions and adaptive redundancy, as ``ledger.trust``.

    Why a component: these tables are written only by the trust stage, and keeping their
    methods on an object of their own keeps :class:`~integrations.ledger.core.Ledger` about
    items, rounds, queries, tasks and annotations. It shares the ledger's engine, campaign and
    transactions (``ledger.begin``), so its writes fail and roll back the same way.
    """

    def __init__(self, ledger: _Ledger):
        self.ledger = ledger
        self.campaign = ledger.campaign

    def begin(self) -> Any:
        return self.ledger.begin()

    def _replace_round_rows(self, table: Table, round_no: int, rows: list[dict]) -> None:
        """Replace one round's rows of ``table`` in one transaction (a re-run round rewrites them)."""
        with self.begin() as conn:
            conn.execute(delete(table).where((table.c.campaign == self.campaign) & (table.c.round_no == round_no)))
            for chunk in _chunks(rows, 2000):
                conn.execute(table.insert(), chunk)

    def _frame(self, table: Table, where: Any = None, order: Sequence[Any] = ()) -> pd.DataFrame:
        q = select(table).where(table.c.campaign == self.campaign)
        if where is not None:
            q = q.where(where)
        if order:
            q = q.order_by(*order)
        with self.begin() as conn:
            rows = conn.execute(q).mappings().all()
        cols = [c.name for c in table.columns if c.name != "campaign"]
        return pd.DataFrame([{k: r[k] for k in cols} for r in rows], columns=cols)

    # ----- per-round decisions ----------------------------------------------
    def save_trust_round(self, round_no: int, *, items: pd.DataFrame, batches: pd.DataFrame,
                         annotators: pd.DataFrame, metrics: dict, notes: list, tags: dict) -> None:
        """Store one round's trust decision (items, batch gate, annotator quality, summary); idempotent."""
        item_rows = [{"campaign": self.campaign, "round_no": round_no, "item_id": str(i),
                      **{k: _none_if_nan(r.get(k)) for k in ("batch", "status", "label", "confidence", "source",
                                                            "method", "n_annotations", "n_trusted_annotations",
                                                            "reason")}}
                     for i, r in zip(items.index, items.to_dict("records"))]
        batch_rows = [{"campaign": self.campaign, "round_no": round_no, "batch": int(b),
                       **{k: _none_if_nan(r.get(k)) for k in ("n_items", "n_annotations", "krippendorff_alpha",
                                                             "alpha_all_annotators", "percent_agreement", "status",
                                                             "reason")}}
                      for b, r in zip(batches.index, batches.to_dict("records"))]
        ann_rows = [{"campaign": self.campaign, "round_no": round_no, "annotator": str(a),
                     **{k: _none_if_nan(r.get(k)) for k in ("n_gold", "gold_accuracy", "n_loo", "loo_accuracy",
                                                           "n_consensus", "consensus_accuracy", "basis", "action")},
                     "flagged": bool(r.get("flagged"))}
                    for a, r in zip(annotators.index, annotators.to_dict("records"))]
        self._replace_round_rows(trust_items, round_no, item_rows)
        self._replace_round_rows(batch_decisions, round_no, batch_rows)
        self._replace_round_rows(annotator_status, round_no, ann_rows)
        clean = {k: (None if v is None or (isinstance(v, float) and v != v) else float(v)) for k, v in metrics.items()}
        self._replace_round_rows(trust_rounds, round_no, [{
            "campaign": self.campaign, "round_no": round_no, "metrics": json.dumps(clean),
            "notes": json.dumps(list(notes)), "tags": json.dumps(dict(tags)), "decided_at": _utcnow()}])

    def trust_items_frame(self, round_no: int | None = None) -> pd.DataFrame:
        """The trust decision of ``round_no`` (default: the latest decided round)."""
        if round_no is None:
            rounds_ = self.trust_rounds()
            if not rounds_:
                return self._frame(trust_items, trust_items.c.round_no == -1)
            round_no = max(rounds_)
        return self._frame(trust_items, trust_items.c.round_no == round_no, [trust_items.c.item_id])

    def batch_decisions_frame(self, round_no: int | None = None) -> pd.DataFrame:
        where = None if round_no is None else batch_decisions.c.round_no == round_no
        return self._frame(batch_decisions, where, [batch_decisions.c.round_no, batch_decisions.c.batch])

    def annotator_status_frame(self, round_no: int | None = None) -> pd.DataFrame:
        where = None if round_no is None else annotator_status.c.round_no == round_no
        return self._frame(annotator_status, where, [annotator_status.c.round_no, annotator_status.c.annotator])

    def trust_rounds(self) -> dict[int, dict]:
        """round_no -> {metrics, notes, tags, decided_at}."""
        df = self._frame(trust_rounds, None, [trust_rounds.c.round_no])
        return {int(r.round_no): {"metrics": json.loads(r.metrics), "notes": json.loads(r.notes),
                                  "tags": json.loads(r.tags), "decided_at": _aware(r.decided_at)}
                for r in df.itertuples()}

    # ----- adjudication -------------------------------------------------------
    def request_adjudications(self, round_no: int, queue: pd.DataFrame) -> int:
        """Put items in the adjudication queue (index item_id; columns label, confidence, reason).
        An item already queued or adjudicated is left alone. Returns the number newly queued."""
        now = _utcnow()
        rows = [{"campaign": self.campaign, "item_id": str(i), "requested_round": round_no,
                 "reason": _none_if_nan(r.get("reason")), "consensus_label": _none_if_nan(r.get("label")),
                 "consensus_confidence": _none_if_nan(r.get("confidence")), "status": "pending",
                 "requested_at": now}
                for i, r in zip(queue.index, queue.to_dict("records"))]
        with self.begin() as conn:
            return _insert_new(conn, adjudications, self.campaign, rows)

    def record_adjudication(self, item_id: str, label: str, *, adjudicator: str, round_no: int | None,
                            label_version: int | None = None) -> None:
        """Store an adjudicator's label (it wins over the consensus from the next decision on)."""
        now = _utcnow()
        with self.begin() as conn:
            _insert_ignore(conn, adjudications, [{
                "campaign": self.campaign, "item_id": str(item_id), "requested_round": round_no or 0,
                "reason": "adjudicated without a queue entry", "status": "pending", "requested_at": now}])
            conn.execute(update(adjudications).where(
                (adjudications.c.campaign == self.campaign) & (adjudications.c.item_id == str(item_id))
            ).values(status="done", label=label, adjudicator=adjudicator, decided_round=round_no,
                     label_version=label_version, decided_at=now))

    def reopen_adjudications(self, item_ids: Iterable[str], reason: str) -> None:
        """Send adjudicated items back to the queue (e.g. their label was split in a new label set)."""
        ids = [str(i) for i in item_ids]
        if ids:
            with self.begin() as conn:
                conn.execute(update(adjudications).where(
                    (adjudications.c.campaign == self.campaign) & adjudications.c.item_id.in_(ids)
                ).values(status="pending", label=None, reason=reason, decided_at=None))

    def adjudications_frame(self, status: str | None = None) -> pd.DataFrame:
        where = None if status is None else adjudications.c.status == status
        return self._frame(adjudications, where, [adjudications.c.item_id])

    # ----- gold ---------------------------------------------------------------
    def add_gold_labels(self, labels_by_item: dict[str, str], source: str) -> int:
        now = _utcnow()
        rows = [{"campaign": self.campaign, "item_id": str(i), "label": str(lbl), "source": source, "added_at": now}
                for i, lbl in labels_by_item.items()]
        with self.begin() as conn:
            return _insert_new(conn, gold_labels, self.campaign, rows)

    def gold_labels(self) -> pd.Series:
        """item_id -> known label of every gold item."""
        df = self._frame(gold_labels, None, [gold_labels.c.item_id])
        return pd.Series(df["label"].to_numpy(), index=df["item_id"].to_numpy(), dtype=object)

    # ----- label-set versions -------------------------------------------------
    def record_label_version(self, version: int, names: Sequence[str], mapping: dict | None) -> None:
        """Record a label-set version. Raises LedgerError when the version is already recorded with
        other names: a changed label set must get a new version, never reuse the old number."""
        with self.begin() as conn:
            row = conn.execute(select(label_versions.c.names).where(
                (label_versions.c.campaign == self.campaign) & (label_versions.c.version == version))).first()
            if row is not None:
                if json.loads(row[0]) != list(names):
                    raise LedgerError(
                        f"label set version {version} was recorded as {json.loads(row[0])}, but the config now "
                        f"says {list(names)} under the same version; bump labels.version and describe the change "
                        "under [[labels.previous]] so earlier answers are mapped or re-labelled, not mixed")
                return
            conn.execute(label_versions.insert().values(
                campaign=self.campaign, version=version, names=json.dumps(list(names)),
                mapping_from_previous=None if mapping is None else json.dumps(mapping), recorded_at=_utcnow()))

    def label_versions(self) -> dict[int, list[str]]:
        df = self._frame(label_versions, None, [label_versions.c.version])
        return {int(r.version): json.loads(r.names) for r in df.itertuples()}

    def label_version_times(self) -> dict[int, Any]:
        """version -> when it was recorded (UTC)."""
        df = self._frame(label_versions, None, [label_versions.c.version])
        return {int(r.version): _aware(r.recorded_at) for r in df.itertuples()}

    def stamp_label_version(self, version: int) -> int:
        """Give every annotation that has no label-set version yet ``version`` (the one in force when
        it was first seen). Returns the number stamped."""
        with self.begin() as conn:
            stamped = select(annotation_label_versions.c.backend, annotation_label_versions.c.backend_annotation_id
                             ).where(annotation_label_versions.c.campaign == self.campaign)
            have = {(r[0], r[1]) for r in conn.execute(stamped)}
            rows = [{"campaign": self.campaign, "backend": b, "backend_annotation_id": a, "label_version": version}
                    for b, a in conn.execute(select(annotations.c.backend, annotations.c.backend_annotation_id)
                                             .where(annotations.c.campaign == self.campaign))
                    if (b, a) not in have]
            for chunk in _chunks(rows, 2000):
                _insert_ignore(conn, annotation_label_versions, chunk)
        return len(rows)

    # ----- adaptive redundancy ------------------------------------------------
    def answer_targets(self) -> tuple[dict[str, int], set[str]]:
        """(item -> answers asked for, items the backend can give no more answers for)."""
        f = self._frame(answer_targets)
        if f.empty:
            return {}, set()
        return (dict(zip(f["item_id"].astype(str), f["target"].astype(int))),
                set(f.loc[f["exhausted"].astype(bool), "item_id"].astype(str)))

    def answer_target_rounds(self) -> dict[str, int]:
        """item -> the round that last raised (or settled) its answer target: when the request was made."""
        f = self._frame(answer_targets)
        if f.empty:
            return {}
        f = f[f["round_no"].notna()]
        return dict(zip(f["item_id"].astype(str), f["round_no"].astype(int)))

    def set_answer_targets(self, targets: dict[str, int], exhausted: Iterable[str], round_no: int) -> None:
        """Record what adaptive redundancy asked of the backend (upsert; idempotent on a re-run)."""
        ex = {str(i) for i in exhausted}
        keys = set(map(str, targets)) | ex
        if not keys:
            return
        old, old_ex = self.answer_targets()
        now = _utcnow()
        rows = [{"campaign": self.campaign, "item_id": i, "target": int(targets.get(i, old.get(i, 0))),
                 "exhausted": i in ex or i in old_ex, "round_no": round_no, "updated_at": now} for i in sorted(keys)]
        with self.begin() as conn:
            for chunk in _chunks(rows, 500):
                conn.execute(delete(answer_targets).where((answer_targets.c.campaign == self.campaign)
                                                          & answer_targets.c.item_id.in_([r["item_id"] for r in chunk])))
                conn.execute(answer_targets.insert(), chunk)
