"""The ledger's migrations (issue 15): an existing campaign's ledger upgrades in place, nothing lost.

The fixture ``tests/data/ledger_v1/`` was written by labelloop before Alembic (main at 966919c,
see tests/data/make_ledger_fixture.py); ``digests.json`` holds each table's row count and a
digest of its rows as that code left them.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from labelloop.integrations.ledger import SCHEMA_VERSION, Ledger, LedgerError
from labelloop.integrations.ledger.migrate import BASELINE, alembic_config, head_revision
from labelloop.integrations.ledger.schema import metadata
from tests.data.make_ledger_fixture import FOLDER, TABLES, table_digest

EXPECTED = json.loads((FOLDER / "digests.json").read_text(encoding="utf-8"))


@pytest.fixture
def old_ledger(tmp_path: Path) -> Path:
    """A copy of the pre-Alembic fixture ledger (the committed file is never opened for writing)."""
    db = tmp_path / "ledger.db"
    shutil.copy(FOLDER / "ledger.db", db)
    return db


def _digests(db: Path) -> dict[str, dict]:
    """Each table's rows and digest over the columns the fixture was written with (migrations may add some)."""
    old = sqlite3.connect(FOLDER / "ledger.db")
    cols = {t: [r[1] for r in old.execute(f"PRAGMA table_info({t})")] for t in TABLES}
    old.close()
    con = sqlite3.connect(db)
    try:
        return {t: dict(zip(("rows", "sha256"), table_digest(con, t, cols[t]))) for t in TABLES}
    finally:
        con.close()


def _schema_diff(url: str) -> list:
    """What differs between the database at ``url`` and ``integrations.ledger.schema`` (empty: the same)."""
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        eng.dispose()


def test_the_fixture_is_what_the_old_code_wrote(old_ledger):
    con = sqlite3.connect(old_ledger)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    con.close()
    assert "alembic_version" not in tables and version == ("1",)
    assert _digests(old_ledger) == EXPECTED["tables"], "the committed fixture changed"


def test_an_old_ledger_upgrades_in_place_with_everything_intact(old_ledger):
    led = Ledger(f"sqlite:///{old_ledger}", "fixture")
    assert led.migration == f"upgraded from {BASELINE}"

    after = _digests(old_ledger)
    for table in TABLES:
        if table != "meta":
            assert after[table] == EXPECTED["tables"][table], f"{table} changed in the upgrade"
    con = sqlite3.connect(old_ledger)
    meta_rows = dict(con.execute("SELECT key, value FROM meta").fetchall())
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(head_revision(),)]
    con.close()
    assert meta_rows.pop("schema_version") == str(SCHEMA_VERSION) == "2"
    ann = led.annotations_frame()
    assert "lead_time" in ann and ann["lead_time"].isna().all(), "0003 added lead_time, NULL for old answers"
    assert led.stream_frame().empty and led.stream_files_seen() == set(), "0004 added stream mode's tables, empty"
    assert len(meta_rows.pop("fixture:items_version")) == 32, "0005 gave the campaign its items version"
    assert meta_rows["fixture:setup_done"] == "1" and len(meta_rows) == EXPECTED["tables"]["meta"]["rows"] - 1

    # ... and read back through the new code: rounds, annotations and trust decisions.
    counts = {t: v["rows"] for t, v in EXPECTED["tables"].items()}
    rounds = led.list_rounds()
    assert len(rounds) == counts["rounds"] == 6
    assert {(r.arm, r.round_no) for r in rounds} == {(a, n) for a in ("active", "random") for n in (1, 2, 3)}
    assert round(led.get_round("active", 3).metrics["test_macro_f1"], 4) == 0.7968
    assert all(r.status == "done" and r.metrics.get("test_macro_f1") is not None for r in rounds)
    assert len(led.annotations_frame()) == counts["annotations"]
    assert len(led.queries_frame()) == counts["queries"] and len(led.tasks_frame()) == counts["tasks"]
    assert len(led.items_frame()) == counts["items"]
    assert sorted(led.trust.trust_rounds()) == [1, 2, 3]
    assert sum(len(led.trust.trust_items_frame(round_no=r)) for r in (1, 2, 3)) == counts["trust_items"]
    status = led.trust.annotator_status_frame()
    assert len(status) == counts["annotator_status"]
    last = status[status["round_no"] == 3].set_index("annotator")
    assert bool(last.loc["rand", "flagged"]) and last.loc["rand", "action"] == "excluded"
    done = led.trust.adjudications_frame(status="done")
    assert len(done) == counts["adjudications"] == 2 and done["label"].notna().all()
    assert len(led.trust.gold_labels()) == counts["gold_labels"]
    assert led.trust.label_versions() == {1: ["billing", "shipping", "technical", "account", "feedback"]}
    targets, _ = led.trust.answer_targets()
    assert len(targets) == counts["answer_targets"]
    assert len(led.annotations_with_versions()["label_version"].dropna()) == counts["annotation_label_versions"]

    assert Ledger(f"sqlite:///{old_ledger}", "fixture").migration == "current", "the upgrade runs once"


def test_new_and_upgraded_ledgers_have_the_schema_module_exactly(tmp_path, old_ledger):
    """The schema module, a new ledger and an upgraded one agree: a change to schema.py without a
    migration revision (or the reverse) fails here."""
    new = f"sqlite:///{tmp_path / 'new.db'}"
    assert Ledger(new, "c").migration == "created"
    Ledger(f"sqlite:///{old_ledger}", "fixture")
    replayed = f"sqlite:///{tmp_path / 'replayed.db'}"  # every revision from an empty database
    eng = create_engine(replayed)
    with eng.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    eng.dispose()
    for url in (new, f"sqlite:///{old_ledger}", replayed):
        assert _schema_diff(url) == [], url


def test_an_old_ledger_from_before_the_trust_tables_gains_them(old_ledger):
    con = sqlite3.connect(old_ledger)
    for t in ("trust_items", "batch_decisions", "annotator_status", "adjudications", "gold_labels", "label_versions",
              "annotation_label_versions", "trust_rounds", "answer_targets"):
        con.execute(f"DROP TABLE {t}")
    con.commit()
    con.close()
    led = Ledger(f"sqlite:///{old_ledger}", "fixture")
    assert led.trust.trust_rounds() == {} and len(led.list_rounds()) == 6
    assert _schema_diff(f"sqlite:///{old_ledger}") == []


def test_a_ledger_from_a_newer_release_is_refused_unwritten(old_ledger):
    Ledger(f"sqlite:///{old_ledger}", "fixture")
    con = sqlite3.connect(old_ledger)
    con.execute("UPDATE alembic_version SET version_num = '9999'")
    con.commit()
    con.close()
    before = _digests(old_ledger)
    with pytest.raises(LedgerError, match="revision 9999, newer than this labelloop understands"):
        Ledger(f"sqlite:///{old_ledger}", "fixture")
    assert _digests(old_ledger) == before


def test_opening_without_create_does_not_make_a_ledger(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(LedgerError, match="holds no ledger tables"):
        Ledger(url, "c", create=False)
    eng = create_engine(url)
    with eng.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sqlite_master")).scalar() == 0
    eng.dispose()


def test_only_the_ledger_package_imports_sqlalchemy():
    """All SQL is behind the ledger's methods (issue 15): no project module outside integrations/ledger/
    imports SQLAlchemy or Alembic, at the top or inside a function."""
    import ast

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for pkg in ("flows", "tasks", "integrations"):
        for path in (root / pkg).rglob("*.py"):
            if (root / "integrations" / "ledger") in path.parents:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(n.split(".")[0] in ("sqlalchemy", "alembic") for n in names):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
