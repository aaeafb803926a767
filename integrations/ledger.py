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
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import pandas as pd
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

SCHEMA_VERSION = 1



def _tuples(result: Any) -> list[tuple]:
    """Result rows as plain tuples, for ``pd.DataFrame``.

    Why: given SQLAlchemy ``Row`` objects pandas probes each one for attributes it lacks
    (every probe raises and is caught inside SQLAlchemy), which made reading the 10,000
    items four times slower than building the same frame from tuples (issue 18).
    """
    return [tuple(r) for r in result]

class LedgerError(RuntimeError):
    """The ledger cannot be opened or written. The message never contains a password."""


metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

items = Table(
    "items",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("text", Text, nullable=False),
    Column("known_label", String(256)),  # from the input file; hidden from the model except test/calibration
    Column("split", String(16), nullable=False),  # pool | seed | test | calibration
    Column("source_file", Text),
    Column("episode", String(64)),  # drift episode that brought the item in (None: initial ingest)
    Column("added_at", DateTime(timezone=True), nullable=False),
)

rounds = Table(
    "rounds",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign", String(64), nullable=False),
    Column("arm", String(32), nullable=False),
    Column("round_no", Integer, nullable=False),
    Column("status", String(32), nullable=False),  # started | queried | pushed | done | stopped
    Column("strategy", String(64)),
    Column("model_version", String(128)),
    Column("mlflow_run_id", String(64)),
    Column("n_labels", Integer),
    Column("metrics", Text),  # JSON
    Column("notes", Text),  # JSON list of gate decisions / warnings
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    UniqueConstraint("campaign", "arm", "round_no", name="uq_round"),
)

queries = Table(
    "queries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign", String(64), nullable=False),
    Column("arm", String(32), nullable=False),
    Column("round_no", Integer, nullable=False),
    Column("item_id", String(256), nullable=False),
    Column("strategy", String(64), nullable=False),
    Column("reason", String(32), nullable=False),  # seed | strategy | random | quota | diversity | gold
    Column("score", Float),
    Column("model_version", String(128)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("campaign", "arm", "item_id", name="uq_query_arm_item"),
)

tasks_table = Table(
    "tasks",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("backend", String(32), nullable=False),
    Column("backend_task_id", String(64), nullable=False),
    Column("round_no", Integer, nullable=False),
    Column("model_version", String(128)),
    Column("is_gold", Boolean, nullable=False, default=False),
    Column("pushed_at", DateTime(timezone=True), nullable=False),
    Column("missing_in_backend", Boolean, nullable=False, default=False),
)

annotations = Table(
    "annotations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign", String(64), nullable=False),
    Column("backend", String(32), nullable=False),
    Column("backend_annotation_id", String(64), nullable=False),
    Column("backend_task_id", String(64), nullable=False),
    Column("item_id", String(256), nullable=False),
    Column("annotator", String(256), nullable=False),
    Column("label", String(256)),
    Column("status", String(16), nullable=False),  # submitted | skipped
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("pulled_in_round", Integer),
    Column("model_version", String(128)),  # the model that asked for this label
    # seconds the annotator spent (Label Studio's ``lead_time``); NULL when the backend does not say.
    # Added after schema version 1: an older ledger gains it on open (see ADDED_COLUMNS).
    Column("lead_time", Float, nullable=True),
    UniqueConstraint("campaign", "backend", "backend_annotation_id", name="uq_annotation"),
)

#: Nullable columns added to existing tables after schema version 1. ``create_all`` creates missing
#: tables but never alters an existing one, so :meth:`Ledger._add_missing_columns` adds these on open
#: (``ALTER TABLE ... ADD COLUMN``, nullable, no default: the same on SQLite and PostgreSQL, and an
#: older labelloop reading the ledger simply ignores them). Issue 15's migrations take these over.
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {"annotations": ("lead_time",)}


def redact_url(url: str) -> str:
    """A database URL safe to print: the password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: show nothing that could be a secret
        return "<unparseable database URL>"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(dt: datetime | None) -> datetime | None:
    """SQLite drops tz info; everything in the ledger is UTC."""
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


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


class Ledger:
    """Thin, idempotent access to the campaign's tables."""

    def __init__(self, url: str, campaign: str, *, create: bool = True):
        self.campaign = campaign
        self.safe_url = redact_url(url)
        try:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(url, future=True)
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            self._absent_columns: set[tuple[str, str]] = set()
            if create:
                metadata.create_all(self.engine)
                self._add_missing_columns()
            else:  # read-only opening (export): an older ledger is read as it is, the new columns as NULL
                self._absent_columns = self._missing_added_columns()
            self._check_schema_version()
        except LedgerError:
            raise
        except SQLAlchemyError as err:
            raise LedgerError(f"cannot open the ledger at {self.safe_url}: {type(err).__name__}: "
                              f"{_scrub(str(err.orig if hasattr(err, 'orig') else err), url)}") from None
        except OSError as err:  # the SQLite file's folder cannot be created or reached
            raise LedgerError(f"cannot open the ledger at {self.safe_url}: {err.strerror or err}: {err.filename}") from None

    # ----- schema ------------------------------------------------------------
    def _missing_added_columns(self) -> set[tuple[str, str]]:
        """(table, column) of :data:`ADDED_COLUMNS` this database lacks (tables it lacks are skipped)."""
        from sqlalchemy import inspect

        insp = inspect(self.engine)
        out: set[tuple[str, str]] = set()
        for table_name, names in ADDED_COLUMNS.items():
            if not insp.has_table(table_name):
                continue
            have = {c["name"] for c in insp.get_columns(table_name)}
            out |= {(table_name, n) for n in names if n not in have}
        return out

    def _add_missing_columns(self) -> None:
        """Give a ledger created by an earlier labelloop the nullable columns of :data:`ADDED_COLUMNS`."""
        from sqlalchemy import text

        for table_name, name in sorted(self._missing_added_columns()):
            col_type = metadata.tables[table_name].c[name].type.compile(dialect=self.engine.dialect)
            try:
                with self.engine.begin() as conn:
                    conn.execute(text(f"ALTER TABLE {table_name} ADD COLUMN {name} {col_type}"))
            except SQLAlchemyError:
                if (table_name, name) in self._missing_added_columns():
                    raise
                # another process opening the same ledger added it first

    def _column(self, table: Table, name: str) -> Any:
        """``table.c[name]``, or NULL under that name when a read-only ledger predates the column."""
        from sqlalchemy import literal

        if (table.name, name) in self._absent_columns:
            return literal(None, table.c[name].type).label(name)
        return table.c[name]

    def _check_schema_version(self) -> None:
        with self.engine.begin() as conn:
            row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
            if row is None:
                conn.execute(_insert_ignore(conn, meta, [{"key": "schema_version", "value": str(SCHEMA_VERSION)}]))
                return
            found = int(row[0])
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
        with self.begin() as conn:
            before = self._count(conn, items)
            for chunk in _chunks(rows, 2000):
                conn.execute(_insert_ignore(conn, items, chunk))
                if progress is not None:
                    progress(len(chunk))
            return self._count(conn, items) - before

    def items_frame(self, splits: Sequence[str] | None = None) -> pd.DataFrame:
        q = select(items.c.item_id, items.c.text, items.c.known_label, items.c.split, items.c.episode).where(
            items.c.campaign == self.campaign
        )
        if splits:
            q = q.where(items.c.split.in_(list(splits)))
        with self.begin() as conn:
            df = pd.DataFrame(_tuples(conn.execute(q.order_by(items.c.item_id))),
                              columns=["item_id", "text", "known_label", "split", "episode"])
        return df

    def n_items(self) -> int:
        with self.begin() as conn:
            return self._count(conn, items)

    # ----- rounds ------------------------------------------------------------
    def start_round(self, arm: str, round_no: int, strategy: str) -> RoundRecord:
        """Create the round row, or return the existing one (a re-run resumes it)."""
        with self.begin() as conn:
            conn.execute(_insert_ignore(conn, rounds, [{
                "campaign": self.campaign, "arm": arm, "round_no": round_no, "status": "started",
                "strategy": strategy, "metrics": "{}", "notes": "[]", "started_at": _utcnow(),
            }]))
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
        if not rows:
            return 0
        with self.begin() as conn:
            before = self._count(conn, queries)
            conn.execute(_insert_ignore(conn, queries, rows))
            return self._count(conn, queries) - before

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
        if not rows:
            return 0
        with self.begin() as conn:
            before = self._count(conn, tasks_table)
            conn.execute(_insert_ignore(conn, tasks_table, rows))
            return self._count(conn, tasks_table) - before

    def mark_tasks_missing(self, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        if ids:
            with self.begin() as conn:
                conn.execute(update(tasks_table).where((tasks_table.c.campaign == self.campaign)
                                                       & tasks_table.c.backend_task_id.in_(ids))
                             .values(missing_in_backend=True))

    def tasks_frame(self) -> pd.DataFrame:
        with self.begin() as conn:
            rows = conn.execute(select(tasks_table).where(tasks_table.c.campaign == self.campaign)).mappings().all()
        return pd.DataFrame(rows, columns=[c.name for c in tasks_table.columns])

    # ----- annotations -------------------------------------------------------
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
                conn.execute(_insert_ignore(conn, annotations, chunk))
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

    # ----- helpers -----------------------------------------------------------
    def _count(self, conn: Any, table: Table) -> int:
        from sqlalchemy import func

        return int(conn.execute(select(func.count()).select_from(table).where(table.c.campaign == self.campaign)).scalar())

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


def _insert_ignore(conn: Any, table: Table, rows: list[dict]) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for SQLite and PostgreSQL (the two supported dialects)."""
    name = conn.engine.dialect.name if hasattr(conn, "engine") else conn.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).values(rows).on_conflict_do_nothing()
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).values(rows).on_conflict_do_nothing()
    raise LedgerError(f"unsupported ledger database {name!r}: use SQLite or PostgreSQL")


def _chunks(rows: list[dict], n: int) -> Iterator[list[dict]]:
    for i in range(0, len(rows), n):
        yield rows[i : i + n]


def _scrub(text: str, url: str) -> str:
    """Remove a password that a driver may have echoed into an error message."""
    try:
        pw = make_url(url).password if url else None
    except Exception:
        pw = None
    return text.replace(pw, "***") if pw else text


# =========================================================================== trust (issue 5)
# Append-only section: tables and methods of the trust stage (flows/trust.py). The tables
# above are untouched; these are created by the same ``metadata.create_all`` on open, so an
# existing ledger simply gains them (no schema-version bump: nothing existing changes).

trust_items = Table(  # the trust decision per round and item: what trained the models of that round
    "trust_items",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("round_no", Integer, primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("batch", Integer),  # tasks.round_no of the item
    Column("status", String(16), nullable=False),  # trusted | adjudication | quarantined | pending | gold
    Column("label", String(256)),
    Column("confidence", Float),
    Column("source", String(16)),  # consensus | adjudicated
    Column("method", String(32)),  # dawid_skene | majority | adjudicator
    Column("n_annotations", Integer),
    Column("n_trusted_annotations", Integer),
    Column("reason", Text),
)

batch_decisions = Table(  # quarantine gate per batch, as decided in each round
    "batch_decisions",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("round_no", Integer, primary_key=True),  # the round that decided
    Column("batch", Integer, primary_key=True),
    Column("n_items", Integer),
    Column("n_annotations", Integer),
    Column("krippendorff_alpha", Float),
    Column("alpha_all_annotators", Float),
    Column("percent_agreement", Float),
    Column("status", String(16), nullable=False),  # passed | quarantined | undefined
    Column("reason", Text),
)

annotator_status = Table(  # annotator quality over time
    "annotator_status",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("round_no", Integer, primary_key=True),
    Column("annotator", String(256), primary_key=True),
    Column("n_gold", Integer),
    Column("gold_accuracy", Float),
    Column("n_loo", Integer),
    Column("loo_accuracy", Float),
    Column("n_consensus", Integer),
    Column("consensus_accuracy", Float),
    Column("basis", String(16)),  # gold | consensus | insufficient
    Column("flagged", Boolean, nullable=False, default=False),
    Column("action", String(64)),  # "" | excluded | weight 0.25
)

adjudications = Table(  # the adjudication queue and its answers (one row per item; the answer wins)
    "adjudications",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("requested_round", Integer, nullable=False),
    Column("reason", Text),
    Column("consensus_label", String(256)),
    Column("consensus_confidence", Float),
    Column("status", String(16), nullable=False),  # pending | done
    Column("label", String(256)),
    Column("label_version", Integer),
    Column("adjudicator", String(256)),
    Column("decided_round", Integer),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True)),
)

gold_labels = Table(  # known labels of gold items (mixed unmarked into batches)
    "gold_labels",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("label", String(256), nullable=False),
    Column("source", String(32), nullable=False),  # file | adjudicated
    Column("added_at", DateTime(timezone=True), nullable=False),
)

label_versions = Table(  # every version of the label set, with the mapping from the previous one
    "label_versions",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("names", Text, nullable=False),  # JSON list
    Column("mapping_from_previous", Text),  # JSON {old label: new label | null}
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

annotation_label_versions = Table(  # the label-set version each annotation was given under
    "annotation_label_versions",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("backend", String(32), primary_key=True),
    Column("backend_annotation_id", String(64), primary_key=True),
    Column("label_version", Integer, nullable=False),
)

trust_rounds = Table(  # the round's trust summary (read by `labelloop status` even when no arm trained)
    "trust_rounds",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("round_no", Integer, primary_key=True),
    Column("metrics", Text, nullable=False),  # JSON
    Column("notes", Text, nullable=False),  # JSON list
    Column("tags", Text, nullable=False),  # JSON
    Column("decided_at", DateTime(timezone=True), nullable=False),
)

answer_targets = Table(  # adaptive redundancy: items asked for more answers than the campaign's overlap
    "answer_targets",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("target", Integer, nullable=False),  # answers now asked for
    Column("exhausted", Boolean, nullable=False, default=False),  # the backend can give no further answer
    Column("round_no", Integer),  # the round that last changed it
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def _none_if_nan(v: Any) -> Any:
    if v is None:
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v.item() if hasattr(v, "item") else v


def _replace_round_rows(self: Ledger, table: Table, round_no: int, rows: list[dict]) -> None:
    """Replace one round's rows of ``table`` in one transaction (a re-run round rewrites them)."""
    from sqlalchemy import delete

    with self.begin() as conn:
        conn.execute(delete(table).where((table.c.campaign == self.campaign) & (table.c.round_no == round_no)))
        for chunk in _chunks(rows, 2000):
            conn.execute(table.insert(), chunk)


def _frame(self: Ledger, table: Table, where: Any = None, order: Sequence[Any] = ()) -> pd.DataFrame:
    q = select(table).where(table.c.campaign == self.campaign)
    if where is not None:
        q = q.where(where)
    if order:
        q = q.order_by(*order)
    with self.begin() as conn:
        rows = conn.execute(q).mappings().all()
    cols = [c.name for c in table.columns if c.name != "campaign"]
    return pd.DataFrame([{k: r[k] for k in cols} for r in rows], columns=cols)


class _TrustLedger:
    """Methods of the trust section, attached to :class:`Ledger` below."""

    # ----- per-round decisions ----------------------------------------------
    def save_trust_round(self: Ledger, round_no: int, *, items: pd.DataFrame, batches: pd.DataFrame,
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
        _replace_round_rows(self, trust_items, round_no, item_rows)
        _replace_round_rows(self, batch_decisions, round_no, batch_rows)
        _replace_round_rows(self, annotator_status, round_no, ann_rows)
        clean = {k: (None if v is None or (isinstance(v, float) and v != v) else float(v)) for k, v in metrics.items()}
        _replace_round_rows(self, trust_rounds, round_no, [{
            "campaign": self.campaign, "round_no": round_no, "metrics": json.dumps(clean),
            "notes": json.dumps(list(notes)), "tags": json.dumps(dict(tags)), "decided_at": _utcnow()}])

    def trust_items_frame(self: Ledger, round_no: int | None = None) -> pd.DataFrame:
        """The trust decision of ``round_no`` (default: the latest decided round)."""
        if round_no is None:
            rounds_ = self.trust_rounds()
            if not rounds_:
                return _frame(self, trust_items, trust_items.c.round_no == -1)
            round_no = max(rounds_)
        return _frame(self, trust_items, trust_items.c.round_no == round_no, [trust_items.c.item_id])

    def batch_decisions_frame(self: Ledger, round_no: int | None = None) -> pd.DataFrame:
        where = None if round_no is None else batch_decisions.c.round_no == round_no
        return _frame(self, batch_decisions, where, [batch_decisions.c.round_no, batch_decisions.c.batch])

    def annotator_status_frame(self: Ledger, round_no: int | None = None) -> pd.DataFrame:
        where = None if round_no is None else annotator_status.c.round_no == round_no
        return _frame(self, annotator_status, where, [annotator_status.c.round_no, annotator_status.c.annotator])

    def trust_rounds(self: Ledger) -> dict[int, dict]:
        """round_no -> {metrics, notes, tags, decided_at}."""
        df = _frame(self, trust_rounds, None, [trust_rounds.c.round_no])
        return {int(r.round_no): {"metrics": json.loads(r.metrics), "notes": json.loads(r.notes),
                                  "tags": json.loads(r.tags), "decided_at": _aware(r.decided_at)}
                for r in df.itertuples()}

    # ----- adjudication -------------------------------------------------------
    def request_adjudications(self: Ledger, round_no: int, queue: pd.DataFrame) -> int:
        """Put items in the adjudication queue (index item_id; columns label, confidence, reason).
        An item already queued or adjudicated is left alone. Returns the number newly queued."""
        now = _utcnow()
        rows = [{"campaign": self.campaign, "item_id": str(i), "requested_round": round_no,
                 "reason": _none_if_nan(r.get("reason")), "consensus_label": _none_if_nan(r.get("label")),
                 "consensus_confidence": _none_if_nan(r.get("confidence")), "status": "pending",
                 "requested_at": now}
                for i, r in zip(queue.index, queue.to_dict("records"))]
        if not rows:
            return 0
        with self.begin() as conn:
            before = self._count(conn, adjudications)
            for chunk in _chunks(rows, 2000):
                conn.execute(_insert_ignore(conn, adjudications, chunk))
            return self._count(conn, adjudications) - before

    def record_adjudication(self: Ledger, item_id: str, label: str, *, adjudicator: str, round_no: int | None,
                            label_version: int | None = None) -> None:
        """Store an adjudicator's label (it wins over the consensus from the next decision on)."""
        now = _utcnow()
        with self.begin() as conn:
            conn.execute(_insert_ignore(conn, adjudications, [{
                "campaign": self.campaign, "item_id": str(item_id), "requested_round": round_no or 0,
                "reason": "adjudicated without a queue entry", "status": "pending", "requested_at": now}]))
            conn.execute(update(adjudications).where(
                (adjudications.c.campaign == self.campaign) & (adjudications.c.item_id == str(item_id))
            ).values(status="done", label=label, adjudicator=adjudicator, decided_round=round_no,
                     label_version=label_version, decided_at=now))

    def reopen_adjudications(self: Ledger, item_ids: Iterable[str], reason: str) -> None:
        """Send adjudicated items back to the queue (e.g. their label was split in a new label set)."""
        ids = [str(i) for i in item_ids]
        if ids:
            with self.begin() as conn:
                conn.execute(update(adjudications).where(
                    (adjudications.c.campaign == self.campaign) & adjudications.c.item_id.in_(ids)
                ).values(status="pending", label=None, reason=reason, decided_at=None))

    def adjudications_frame(self: Ledger, status: str | None = None) -> pd.DataFrame:
        where = None if status is None else adjudications.c.status == status
        return _frame(self, adjudications, where, [adjudications.c.item_id])

    # ----- gold ---------------------------------------------------------------
    def add_gold_labels(self: Ledger, labels_by_item: dict[str, str], source: str) -> int:
        now = _utcnow()
        rows = [{"campaign": self.campaign, "item_id": str(i), "label": str(lbl), "source": source, "added_at": now}
                for i, lbl in labels_by_item.items()]
        if not rows:
            return 0
        with self.begin() as conn:
            before = self._count(conn, gold_labels)
            for chunk in _chunks(rows, 2000):
                conn.execute(_insert_ignore(conn, gold_labels, chunk))
            return self._count(conn, gold_labels) - before

    def gold_labels(self: Ledger) -> pd.Series:
        """item_id -> known label of every gold item."""
        df = _frame(self, gold_labels, None, [gold_labels.c.item_id])
        return pd.Series(df["label"].to_numpy(), index=df["item_id"].to_numpy(), dtype=object)

    def move_items_to_split(self: Ledger, item_ids: Iterable[str], split: str, *, from_split: str = "pool") -> int:
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
        return moved

    # ----- label-set versions -------------------------------------------------
    def record_label_version(self: Ledger, version: int, names: Sequence[str], mapping: dict | None) -> None:
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

    def label_versions(self: Ledger) -> dict[int, list[str]]:
        df = _frame(self, label_versions, None, [label_versions.c.version])
        return {int(r.version): json.loads(r.names) for r in df.itertuples()}

    def stamp_label_version(self: Ledger, version: int) -> int:
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
                conn.execute(_insert_ignore(conn, annotation_label_versions, chunk))
        return len(rows)

    def annotations_with_versions(self: Ledger) -> pd.DataFrame:
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


    # ----- adaptive redundancy ------------------------------------------------
    def answer_targets(self: Ledger) -> tuple[dict[str, int], set[str]]:
        """(item -> answers asked for, items the backend can give no more answers for)."""
        f = _frame(self, answer_targets)
        if f.empty:
            return {}, set()
        return (dict(zip(f["item_id"].astype(str), f["target"].astype(int))),
                set(f.loc[f["exhausted"].astype(bool), "item_id"].astype(str)))

    def set_answer_targets(self: Ledger, targets: dict[str, int], exhausted: Iterable[str], round_no: int) -> None:
        """Record what adaptive redundancy asked of the backend (upsert; idempotent on a re-run)."""
        from sqlalchemy import delete

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

for _name, _fn in vars(_TrustLedger).items():
    if callable(_fn) and not _name.startswith("__"):
        setattr(Ledger, _name, _fn)
