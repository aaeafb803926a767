"""The ledger: the single source of truth of a campaign (SQLAlchemy).

Every item and its split, every query (which round, which strategy, which
model asked), every task pushed to the annotation backend and every
annotation (who, when, backend ids) lives here, so any label in a trained
model can be traced back to the human who gave it.

Why idempotent writes everywhere: a round must be safe to kill at any point
and run again. Inserts are "insert or ignore" on natural keys (item id,
backend annotation id, (arm, item) for queries, item for tasks), so a re-run
step never duplicates a row. SQLite by default; any SQLAlchemy URL works
(PostgreSQL for teams).

The tables are in ``integrations.ledger.schema``; opening a ledger creates or
upgrades it through Alembic (``integrations.ledger.migrate``). Every SQL
statement labelloop runs on a ledger is a method here or on ``ledger.trust``
(``integrations.ledger.trust.TrustStore``): the round lock's lease
(``lease`` / ``update_lease``) and the doctor's repairs included, so no other
module imports SQLAlchemy.
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import pandas as pd
from sqlalchemy import Table, create_engine, event, literal, select, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from labelloop.integrations.ledger.base import LedgerError, _aware, _chunks, _count, _insert_ignore, _insert_new, _tuples, _utcnow
from labelloop.integrations.ledger.migrate import SchemaError, ensure_schema, missing_columns, missing_tables
from labelloop.integrations.ledger.schema import (
    SCHEMA_VERSION,
    annotation_label_versions,
    annotations,
    items,
    meta,
    queries,
    rounds,
    stream_files,
    stream_items,
    tasks_table,
)
from labelloop.integrations.ledger.trust import TrustStore


def redact_url(url: str) -> str:
    """A database URL safe to print: the password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: show nothing that could be a secret
        return "<unparseable database URL>"


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names (``sqlite:///x.db?timeout=30`` -> ``x.db``); None for a server
    database, an in-memory one or a string that is no URL. SQLAlchemy parses it, as the engine does."""
    try:
        u = make_url(url)
    except Exception:  # noqa: BLE001 - not a URL: create_engine reports it, with its own message
        return None
    db = u.database if u.get_backend_name() == "sqlite" else None
    return Path(db) if db and db != ":memory:" else None


@dataclass
class RoundRecord:
    id: int
    campaign: str
    arm: str
    round_no: int
    status: str
    strategy: str | None
    model_version: str | None
    mlflow_run_id: str | None
    n_labels: int | None
    metrics: dict
    notes: list
    started_at: datetime
    finished_at: datetime | None


ITEMS_VERSION = "items_version"  # meta key (after "<campaign>:"): changes with every write to the items table


class Ledger:
    """Thin, idempotent access to the campaign's tables."""

    def __init__(self, url: str, campaign: str, *, create: bool = True):
        self.campaign = campaign
        self.safe_url = redact_url(url)
        self._items_cache: tuple[str, pd.DataFrame] | None = None  # (items version, all items): items_frame
        try:
            if (db := sqlite_file(url)) is not None:
                db.parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(url, future=True)
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            self.migration = ensure_schema(self.engine, create=create)
            # read-only below head: what the database lacks is read as NULL (see _column)
            self._absent_columns = (missing_columns(self.engine) if self.migration.startswith("read-only")
                                    else set())
            self._absent_tables = (missing_tables(self.engine) if self.migration.startswith("read-only")
                                   else set())
            self._check_schema_version()
            self.trust = TrustStore(self)
        except SchemaError as err:
            raise LedgerError(f"cannot open the ledger at {self.safe_url}: {err}") from None
        except LedgerError:
            raise
        except SQLAlchemyError as err:
            raise LedgerError(f"cannot open the ledger at {self.safe_url}: {type(err).__name__}: "
                              f"{_scrub(str(err.orig if hasattr(err, 'orig') else err), url)}") from None
        except OSError as err:  # the SQLite file's folder cannot be created or reached
            raise LedgerError(f"cannot open the ledger at {self.safe_url}: {err.strerror or err}: {err.filename}") from None

    # ----- schema ------------------------------------------------------------
    def _check_schema_version(self) -> None:
        """Refuse a ledger whose ``meta.schema_version`` is above this release's (written by a newer one)."""
        with self.engine.begin() as conn:
            row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
        found = int(row[0]) if row is not None else SCHEMA_VERSION
        if found > SCHEMA_VERSION:
            raise LedgerError(
                f"the ledger at {self.safe_url} has schema version {found}, newer than this labelloop "
                f"understands ({SCHEMA_VERSION}); upgrade labelloop instead of writing to it"
            )

    @contextmanager
    def begin(self) -> Iterator[Any]:
        """One transaction; errors come back as LedgerError naming the ledger, never its password."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as err:
            detail = _scrub(str(err.orig), self.engine.url.render_as_string(hide_password=False)).strip()
            if "database is locked" in detail:
                detail += (" (another process holds a write transaction on it; waited "
                           f"{_busy_timeout_ms()} ms, see "
                           "LABELLOOP_LEDGER_BUSY_TIMEOUT_MS); nothing was written, re-run when it is free")
            raise LedgerError(f"ledger {self.safe_url} failed: {detail}") from None

    def get_meta(self, key: str) -> str | None:
        with self.begin() as conn:
            row = conn.execute(select(meta.c.value).where(meta.c.key == f"{self.campaign}:{key}")).first()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        k = f"{self.campaign}:{key}"
        with self.begin() as conn:
            if conn.execute(select(meta.c.key).where(meta.c.key == k)).first():
                conn.execute(update(meta).where(meta.c.key == k).values(value=value))
            else:
                conn.execute(meta.insert().values(key=k, value=value))

    # ----- items -------------------------------------------------------------
    def add_items(self, frame: pd.DataFrame, *, episode: str | None = None,
                  progress: Callable[[int], Any] | None = None) -> int:
        """Insert items (columns id, text, label, split[, source_file]); existing ids are left alone.

        Returns the number of new rows. All rows go in one transaction: a
        failure writes nothing. ``progress(n)`` is told after each chunk of n rows is written.
        """
        with self.begin() as conn:
            return self._add_items(conn, frame, episode=episode, progress=progress)

    def _add_items(self, conn: Any, frame: pd.DataFrame, *, episode: str | None = None,
                   progress: Callable[[int], Any] | None = None) -> int:
        now = _utcnow()
        rows = [
            {
                "campaign": self.campaign,
                "item_id": str(r["id"]),
                "text": r["text"],
                "known_label": None if pd.isna(r.get("label")) else str(r.get("label")),
                "split": r["split"],
                "source_file": r.get("source_file"),
                "episode": episode,
                "added_at": now,
            }
            for r in frame.to_dict("records")
        ]
        before = self._count(conn, items)
        for chunk in _chunks(rows, 2000):
            _insert_ignore(conn, items, chunk)
            if progress is not None:
                progress(len(chunk))
        added = self._count(conn, items) - before
        if added:
            self._bump_items_version(conn)
        return added

    def _bump_items_version(self, conn: Any) -> None:
        """Record that the items table changed (in the writing transaction), for :meth:`items_frame`'s cache."""
        key = f"{self.campaign}:{ITEMS_VERSION}"
        _insert_ignore(conn, meta, [{"key": key, "value": ""}])
        conn.execute(update(meta).where(meta.c.key == key).values(value=uuid.uuid4().hex))

    def items_frame(self, splits: Sequence[str] | None = None) -> pd.DataFrame:
        """The campaign's items (``item_id, text, known_label, split, episode``, by id), or those of ``splits``.

        Why cached: a round reads the items (10,000 texts in the benchmark campaign) five times, ~0.1 s
        each. The frame is kept with the ledger's items version (``meta``), which every items write
        changes in its own transaction, so one small query tells whether the cache is current, also
        after another process (a stream ingest, a reopen) wrote items. A ledger without a version yet
        (written before it existed) is read each time until its next items write.
        """
        with self.begin() as conn:
            version = conn.execute(select(meta.c.value).where(meta.c.key == f"{self.campaign}:{ITEMS_VERSION}")
                                   ).scalar()
            cached = self._items_cache
            if version is None or cached is None or cached[0] != version:
                q = select(items.c.item_id, items.c.text, items.c.known_label, items.c.split, items.c.episode
                           ).where(items.c.campaign == self.campaign)
                if splits and version is None:
                    q = q.where(items.c.split.in_(list(splits)))
                df = pd.DataFrame(_tuples(conn.execute(q.order_by(items.c.item_id))),
                                  columns=["item_id", "text", "known_label", "split", "episode"])
                if version is None:
                    return df
                cached = self._items_cache = (version, df)
        df = cached[1]
        if splits:
            df = df[df["split"].isin(list(splits))].reset_index(drop=True)
        return df.copy(deep=False)  # callers may add columns: never to the cached frame

    def move_items_to_split(self, item_ids: Iterable[str], split: str, *, from_split: str = "pool") -> int:
        """Move items from ``from_split`` (only) to ``split``; returns how many moved. Used to turn
        never-queried pool items into gold items, so no arm can query (and train on) them."""
        ids = [str(i) for i in item_ids]
        moved = 0
        with self.begin() as conn:
            for chunk in [ids[i : i + 500] for i in range(0, len(ids), 500)]:
                res = conn.execute(update(items).where(
                    (items.c.campaign == self.campaign) & items.c.item_id.in_(chunk) & (items.c.split == from_split)
                ).values(split=split))
                moved += int(res.rowcount or 0)
            if moved:
                self._bump_items_version(conn)
        return moved

    def n_items(self) -> int:
        with self.begin() as conn:
            return self._count(conn, items)

    # ----- rounds ------------------------------------------------------------
    def start_round(self, arm: str, round_no: int, strategy: str) -> RoundRecord:
        """Create the round row, or return the existing one (a re-run resumes it)."""
        with self.begin() as conn:
            _insert_ignore(conn, rounds, [{
                "campaign": self.campaign, "arm": arm, "round_no": round_no, "status": "started",
                "strategy": strategy, "metrics": "{}", "notes": "[]", "started_at": _utcnow(),
            }])
        rec = self.get_round(arm, round_no)
        assert rec is not None
        return rec

    def update_round(self, arm: str, round_no: int, **values: Any) -> None:
        if "metrics" in values and not isinstance(values["metrics"], str):
            values["metrics"] = json.dumps(values["metrics"], default=float)
        if "notes" in values and not isinstance(values["notes"], str):
            values["notes"] = json.dumps(values["notes"])
        if values.get("status") in ("done", "stopped"):
            values.setdefault("finished_at", _utcnow())
        with self.begin() as conn:
            conn.execute(update(rounds).where(
                (rounds.c.campaign == self.campaign) & (rounds.c.arm == arm) & (rounds.c.round_no == round_no)
            ).values(**values))

    def get_round(self, arm: str, round_no: int) -> RoundRecord | None:
        recs = self.list_rounds(arm=arm, round_no=round_no)
        return recs[0] if recs else None

    def list_rounds(self, arm: str | None = None, round_no: int | None = None) -> list[RoundRecord]:
        q = select(rounds).where(rounds.c.campaign == self.campaign)
        if arm is not None:
            q = q.where(rounds.c.arm == arm)
        if round_no is not None:
            q = q.where(rounds.c.round_no == round_no)
        with self.begin() as conn:
            rows = conn.execute(q.order_by(rounds.c.round_no, rounds.c.arm)).mappings().all()
        return [
            RoundRecord(
                id=r["id"], campaign=r["campaign"], arm=r["arm"], round_no=r["round_no"], status=r["status"],
                strategy=r["strategy"], model_version=r["model_version"], mlflow_run_id=r["mlflow_run_id"],
                n_labels=r["n_labels"], metrics=json.loads(r["metrics"] or "{}"), notes=json.loads(r["notes"] or "[]"),
                started_at=_aware(r["started_at"]), finished_at=_aware(r["finished_at"]),
            )
            for r in rows
        ]

    # ----- queries -----------------------------------------------------------
    def add_queries(self, arm: str, round_no: int, picks: Iterable[dict]) -> int:
        """Record queried items (dicts: item_id, strategy, reason, score, model_version).

        An item already queried by this arm is ignored: re-running a round's
        query step never duplicates a query.
        """
        now = _utcnow()
        rows = [{"campaign": self.campaign, "arm": arm, "round_no": round_no, "created_at": now, **p} for p in picks]
        with self.begin() as conn:
            return _insert_new(conn, queries, self.campaign, rows)

    def queries_frame(self, arm: str | None = None, round_no: int | None = None) -> pd.DataFrame:
        q = select(queries.c.arm, queries.c.round_no, queries.c.item_id, queries.c.strategy, queries.c.reason,
                   queries.c.score, queries.c.model_version).where(queries.c.campaign == self.campaign)
        if arm is not None:
            q = q.where(queries.c.arm == arm)
        if round_no is not None:
            q = q.where(queries.c.round_no == round_no)
        with self.begin() as conn:
            return pd.DataFrame(_tuples(conn.execute(q.order_by(queries.c.id))),
                                columns=["arm", "round_no", "item_id", "strategy", "reason", "score", "model_version"])

    # ----- tasks -------------------------------------------------------------
    def task_ids(self) -> dict[str, str]:
        """item_id -> backend task id for every pushed item."""
        with self.begin() as conn:
            rows = conn.execute(select(tasks_table.c.item_id, tasks_table.c.backend_task_id).where(
                tasks_table.c.campaign == self.campaign)).all()
        return {r[0]: r[1] for r in rows}

    def record_tasks(self, backend: str, round_no: int, mapping: dict[str, str],
                     model_version: str | None = None, gold: set[str] | None = None) -> int:
        gold = gold or set()
        now = _utcnow()
        rows = [{"campaign": self.campaign, "item_id": i, "backend": backend, "backend_task_id": str(t),
                 "round_no": round_no, "model_version": model_version, "is_gold": i in gold, "pushed_at": now,
                 "missing_in_backend": False}
                for i, t in mapping.items()]
        with self.begin() as conn:
            return _insert_new(conn, tasks_table, self.campaign, rows)

    def mark_tasks_missing(self, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        if ids:
            with self.begin() as conn:
                conn.execute(update(tasks_table).where((tasks_table.c.campaign == self.campaign)
                                                       & tasks_table.c.backend_task_id.in_(ids))
                             .values(missing_in_backend=True))

    def repoint_tasks(self, task_by_item: dict[str, str]) -> None:
        """Point items at another backend task (the doctor's repair when the ledger's task was deleted
        in the backend but the item has another one there); the task counts as present again."""
        if not task_by_item:
            return
        with self.begin() as conn:
            for item, tid in task_by_item.items():
                conn.execute(update(tasks_table).where(
                    (tasks_table.c.campaign == self.campaign) & (tasks_table.c.item_id == str(item))
                ).values(backend_task_id=str(tid), missing_in_backend=False))

    def tasks_frame(self) -> pd.DataFrame:
        with self.begin() as conn:
            rows = conn.execute(select(tasks_table).where(tasks_table.c.campaign == self.campaign)).mappings().all()
        return pd.DataFrame(rows, columns=[c.name for c in tasks_table.columns])

    # ----- annotations -------------------------------------------------------
    def withdraw_annotations(self, backend: str, backend_annotation_ids: Iterable[str]) -> int:
        """Mark annotations the backend no longer holds as an answer (``withdrawn``, no label).

        Why not delete the rows: the ledger is the campaign's history (who answered what, when, how
        long it took); a withdrawn answer only stops counting as a label. An answer that comes back
        (edited again into a valid choice) is a changed row for :meth:`upsert_annotations`.
        """
        ids = sorted({str(i) for i in backend_annotation_ids})
        n = 0
        with self.begin() as conn:
            for chunk in _chunks(ids, 500):
                n += conn.execute(update(annotations).where(
                    (annotations.c.campaign == self.campaign) & (annotations.c.backend == backend)
                    & annotations.c.backend_annotation_id.in_(chunk) & (annotations.c.status != "withdrawn")
                ).values(status="withdrawn", label=None)).rowcount
        return n

    def upsert_annotations(self, pulled: Sequence[Any], backend: str, round_no: int | None) -> dict[str, int]:
        """Store pulled annotations keyed by backend annotation id.

        New ids are inserted; an id seen before is updated only when its label,
        status or updated_at changed (an annotator edited it). Returns counts
        of inserted / updated / unchanged rows.
        """
        counts = {"inserted": 0, "updated": 0, "unchanged": 0}
        if not pulled:
            return counts
        with self.begin() as conn:
            existing = {
                r["backend_annotation_id"]: r
                for r in conn.execute(select(annotations.c.backend_annotation_id, annotations.c.label,
                                             annotations.c.status, annotations.c.updated_at,
                                             annotations.c.lead_time)
                                      .where((annotations.c.campaign == self.campaign)
                                             & (annotations.c.backend == backend))).mappings()
            }
            asked_by = dict(conn.execute(select(tasks_table.c.item_id, tasks_table.c.model_version)
                                         .where(tasks_table.c.campaign == self.campaign)).all())
            new_rows = []
            for a in pulled:
                key = str(a.backend_annotation_id)
                old = existing.get(key)
                if old is None:
                    new_rows.append({
                        "campaign": self.campaign, "backend": backend, "backend_annotation_id": key,
                        "backend_task_id": str(a.backend_task_id), "item_id": a.item_id, "annotator": a.annotator,
                        "label": a.label, "status": a.status, "created_at": a.created_at, "updated_at": a.updated_at,
                        "pulled_in_round": round_no, "model_version": asked_by.get(a.item_id),
                        "lead_time": _lead_time(a),
                    })
                elif ((old["label"], old["status"]) != (a.label, a.status) or _aware(old["updated_at"]) != _aware(a.updated_at)
                      or _lead_time(a) not in (None, old["lead_time"])):  # Label Studio adds an edit's time
                    conn.execute(update(annotations).where(
                        (annotations.c.campaign == self.campaign) & (annotations.c.backend == backend)
                        & (annotations.c.backend_annotation_id == key)
                    ).values(label=a.label, status=a.status, updated_at=a.updated_at,
                             lead_time=_lead_time(a) if _lead_time(a) is not None else old["lead_time"]))
                    counts["updated"] += 1
                else:
                    counts["unchanged"] += 1
            for chunk in _chunks(new_rows, 2000):
                _insert_ignore(conn, annotations, chunk)
            counts["inserted"] = len(new_rows)
        return counts

    def annotations_frame(self, *, submitted_only: bool = False) -> pd.DataFrame:
        q = select(annotations.c.backend_annotation_id, annotations.c.backend_task_id, annotations.c.item_id,
                   annotations.c.annotator, annotations.c.label, annotations.c.status, annotations.c.created_at,
                   annotations.c.updated_at, annotations.c.pulled_in_round, annotations.c.model_version,
                   self._column(annotations, "lead_time")).where(annotations.c.campaign == self.campaign)
        if submitted_only:
            q = q.where(annotations.c.status == "submitted")
        with self.begin() as conn:
            return pd.DataFrame(_tuples(conn.execute(q.order_by(annotations.c.id))),
                                columns=["backend_annotation_id", "backend_task_id", "item_id", "annotator", "label",
                                         "status", "created_at", "updated_at", "pulled_in_round", "model_version",
                                         "lead_time"])

    def _column(self, table: Table, name: str) -> Any:
        """``table.c[name]``, or NULL under that name when a ledger opened read-only predates the column."""
        if (table.name, name) in self._absent_columns:
            return literal(None, table.c[name].type).label(name)
        return table.c[name]

    def annotations_with_versions(self) -> pd.DataFrame:
        """``annotations_frame()`` plus ``backend`` and ``label_version`` (None if never stamped)."""
        j = annotations.outerjoin(annotation_label_versions, (
            (annotation_label_versions.c.campaign == annotations.c.campaign)
            & (annotation_label_versions.c.backend == annotations.c.backend)
            & (annotation_label_versions.c.backend_annotation_id == annotations.c.backend_annotation_id)))
        cols = [annotations.c.backend, annotations.c.backend_annotation_id, annotations.c.backend_task_id,
                annotations.c.item_id, annotations.c.annotator, annotations.c.label, annotations.c.status,
                annotations.c.created_at, annotations.c.updated_at, annotations.c.pulled_in_round,
                annotations.c.model_version, annotation_label_versions.c.label_version]
        q = select(*cols).select_from(j).where(annotations.c.campaign == self.campaign).order_by(annotations.c.id)
        with self.begin() as conn:
            return pd.DataFrame(_tuples(conn.execute(q)), columns=[c.name for c in cols])

    # ----- stream mode (flows/stream.py, issue 17) ------------------------------
    def stream_files_seen(self) -> set[str]:
        """SHA-256 of every arrival file stream mode has consumed."""
        with self.begin() as conn:
            return {r[0] for r in conn.execute(select(stream_files.c.sha256)
                                               .where(stream_files.c.campaign == self.campaign))}

    def consume_stream_file(self, frame: pd.DataFrame, *, sha256: str, path: str) -> int:
        """Add a file's arrivals as items of split ``stream`` and mark the file consumed, in one transaction
        (a crash leaves neither). Ids already in the ledger are left alone. Returns the number of new items."""
        with self.begin() as conn:
            added = self._add_items(conn, frame.assign(split="stream"), episode="stream")
            _insert_ignore(conn, stream_files, [{
                "campaign": self.campaign, "sha256": sha256, "path": path, "rows": int(len(frame)),
                "added": int(added), "consumed_at": _utcnow()}])
        return added

    def stream_frame(self) -> pd.DataFrame:
        """Every stream decision (one row per arrival)."""
        cols = [c for c in stream_items.columns if c.name != "campaign"]
        if stream_items.name in self._absent_tables:  # read-only, from before stream mode: no decisions
            return pd.DataFrame(columns=[c.name for c in cols])
        with self.begin() as conn:
            rows = _tuples(conn.execute(select(*cols).where(stream_items.c.campaign == self.campaign)
                                        .order_by(stream_items.c.decided_at, stream_items.c.item_id)))
        return pd.DataFrame(rows, columns=[c.name for c in cols])

    def record_stream_decisions(self, rows: Sequence[dict]) -> int:
        """Insert new decisions; an item already decided is updated only while it is ``held`` (a held item is
        decided again when budget frees up; every other decision is final). Returns rows written."""
        if not rows:
            return 0
        written = 0
        with self.begin() as conn:
            held = {r[0] for r in conn.execute(select(stream_items.c.item_id).where(
                (stream_items.c.campaign == self.campaign) & (stream_items.c.route == "held")))}
            have = {r[0] for r in conn.execute(select(stream_items.c.item_id)
                                               .where(stream_items.c.campaign == self.campaign))}
            new = [{"campaign": self.campaign, **r} for r in rows if r["item_id"] not in have]
            for chunk in _chunks(new, 2000):
                _insert_ignore(conn, stream_items, chunk)
            written += len(new)
            for r in rows:
                if r["item_id"] in held:
                    conn.execute(update(stream_items).where(
                        (stream_items.c.campaign == self.campaign) & (stream_items.c.item_id == r["item_id"])
                    ).values(**{k: v for k, v in r.items() if k != "item_id"}))
                    written += 1
        return written

    # ----- leases (flows/locking.py) ---------------------------------------------
    def lease(self, name: str) -> str:
        """The raw value of the campaign's lease ``name`` ("" when never taken or released)."""
        with self.begin() as conn:
            row = conn.execute(select(meta.c.value).where(meta.c.key == f"{self.campaign}:{name}")).first()
        return row[0] if row else ""

    def update_lease(self, name: str, decide: Callable[[str], str | None]) -> str:
        """Read the lease ``name`` and replace it by ``decide(value)`` (None: leave it) in one transaction
        that holds the row: no other process reads or writes it in between. Returns the value read.

        Why a callback: the lock's policy (owner, expiry, a dead holder) is the caller's; the ledger
        only guarantees the read-decide-write is atomic. The insert comes first: on SQLite it takes
        the database's write lock, so the read and the update are serialised with every other writer;
        on PostgreSQL the row then exists and SELECT ... FOR UPDATE locks it."""
        key = f"{self.campaign}:{name}"
        with self.begin() as conn:
            _insert_ignore(conn, meta, [{"key": key, "value": ""}])
            row = conn.execute(select(meta.c.value).where(meta.c.key == key).with_for_update()).first()
            current = row[0] if row else ""
            new = decide(current)
            if new is not None:
                conn.execute(update(meta).where(meta.c.key == key).values(value=new))
        return current

    # ----- helpers -----------------------------------------------------------
    def _count(self, conn: Any, table: Table) -> int:
        return _count(conn, table, self.campaign)

    def dispose(self) -> None:
        self.engine.dispose()


def _lead_time(a: Any) -> float | None:
    """Seconds the annotator spent on ``a`` (``PulledAnnotation.lead_time``), None when unknown or invalid."""
    v = getattr(a, "lead_time", None)
    try:
        v = None if v is None else float(v)
    except (TypeError, ValueError):
        return None
    return v if v is not None and v == v and v >= 0 else None


def _busy_timeout_ms() -> int:
    """How long SQLite waits for another writer's lock (``LABELLOOP_LEDGER_BUSY_TIMEOUT_MS``, default 30 s)."""
    return int(os.environ.get("LABELLOOP_LEDGER_BUSY_TIMEOUT_MS", "30000"))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the MLflow UI / `labelloop status` read while a round writes; busy_timeout waits for a lock
    # instead of failing at once when two processes touch the ledger.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={_busy_timeout_ms()}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _scrub(text: str, url: str) -> str:
    """Remove a password that a driver may have echoed into an error message."""
    try:
        pw = make_url(url).password if url else None
    except Exception:
        pw = None
    return text.replace(pw, "***") if pw else text


