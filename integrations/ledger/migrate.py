"""Bring a ledger to the newest schema when it is opened (Alembic, issue 15).

Three cases, decided on every open (the usual one costs one query):

* **at head** (``alembic_version`` names the newest revision): nothing to do.
* **empty database**: the tables are created from ``integrations.ledger.schema`` and the ledger
  is stamped at head (a new campaign never replays the history).
* **written before Alembic** (tables, no ``alembic_version``): the baseline tables it lacks are
  created (what the old open's ``create_all`` did), it is stamped at the baseline revision, then
  upgraded to head. An older versioned ledger is upgraded from its revision.

Opened with ``create=False`` (``labelloop export``: read-only in spirit) a ledger is never
written: one that is not at head is read as it is, the columns it lacks read as NULL
(:func:`missing_columns`). A ledger at a revision this labelloop does not know was upgraded by
a newer release: it is refused, never written. Two processes opening the same old ledger at once are serialised (a
file lock beside a SQLite file, an advisory transaction lock on PostgreSQL), so the upgrade
runs once.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from labelloop.integrations.ledger.schema import SCHEMA_VERSION, meta, metadata

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"
_PG_LOCK_ID = 0x6C61_6265_6C6C  # "label": any constant shared by every labelloop process


def alembic_config(conn: Connection | None = None) -> Config:
    """An Alembic config for the ledger's migrations, bound to ``conn`` (no alembic.ini)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    """The ledger's Alembic revision (None: not versioned, i.e. new or written before Alembic)."""
    return MigrationContext.configure(conn).get_current_revision()


def ensure_schema(engine: Engine, *, create: bool) -> str:
    """Create or upgrade the ledger behind ``engine``; returns what was done (``current``,
    ``created``, ``upgraded from X``). Raises :class:`SchemaError` for a ledger this release
    must not write (newer, or missing with ``create=False``)."""
    head = head_revision()
    with engine.connect() as conn:
        found = current_revision(conn)
        if found == head:
            return "current"
        if not create:  # read-only: never create or upgrade, only check that it is a ledger we can read
            if not set(inspect(conn).get_table_names()) & set(metadata.tables):
                raise SchemaError("it holds no ledger tables (run `labelloop setup` first)")
            if found is not None:
                _known(found, head)
            return f"read-only at {found or 'the pre-migration schema'}"
    with _migration_lock(engine), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_ID})
        found = current_revision(conn)  # again: another process may have upgraded meanwhile
        if found == head:
            return "current"
        cfg = alembic_config(conn)
        script = ScriptDirectory.from_config(cfg)
        if found is None:
            tables = set(inspect(conn).get_table_names())
            if not tables & set(metadata.tables):
                if not create:
                    raise SchemaError("it holds no ledger tables (run `labelloop setup` first)")
                metadata.create_all(conn)
                conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                command.stamp(cfg, "head")
                return "created"
            old = _old_schema_version(conn)
            if old is not None and old > 1:
                raise SchemaError(f"it has schema version {old} but no migration history; "
                                  "it was not written by a labelloop release this one can upgrade")
            script.get_revision(BASELINE).module.create_missing(conn)
            command.stamp(cfg, BASELINE)
            found = BASELINE
        else:
            _known(found, head)
        command.upgrade(cfg, "head")
        return f"upgraded from {found}"


def _known(revision: str, head: str) -> None:
    """Refuse a revision this release's migrations do not contain (a newer labelloop upgraded it)."""
    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except Exception:  # noqa: BLE001 - alembic raises several kinds for an unknown id
        raise SchemaError(f"it is at schema revision {revision}, newer than this labelloop understands "
                          f"(newest: {head}); upgrade labelloop instead of writing to it") from None


def missing_columns(engine: Engine) -> set[tuple[str, str]]:
    """(table, column) of the schema module that the database lacks, in the tables it has (a ledger
    opened read-only below head reads them as NULL)."""
    insp = inspect(engine)
    have_tables = set(insp.get_table_names())
    out: set[tuple[str, str]] = set()
    for name, table in metadata.tables.items():
        if name in have_tables:
            have = {c["name"] for c in insp.get_columns(name)}
            out |= {(name, c.name) for c in table.columns if c.name not in have}
    return out


def missing_tables(engine: Engine) -> set[str]:
    """Tables of the schema module that the database lacks (a ledger opened read-only below head has none
    of the tables later migrations add: they read as empty)."""
    return set(metadata.tables) - set(inspect(engine).get_table_names())


class SchemaError(Exception):
    """The ledger's schema is one this release must not write; core.Ledger turns it into LedgerError."""


def _old_schema_version(conn: Connection) -> int | None:
    try:
        row = conn.execute(meta.select().with_only_columns(meta.c.value)
                           .where(meta.c.key == "schema_version")).first()
    except Exception:  # noqa: BLE001 - no meta table at all: a ledger from before it existed
        return None
    try:
        return None if row is None else int(row[0])
    except ValueError:
        return None


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Any]:
    """Serialise migrations of one SQLite file across processes (PostgreSQL locks inside the transaction)."""
    db = engine.url.database if engine.dialect.name == "sqlite" else None
    if not db or db == ":memory:":
        yield None
        return
    with open(f"{db}.migrate.lock", "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
