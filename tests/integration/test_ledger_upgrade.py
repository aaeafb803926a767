"""A campaign whose ledger an older labelloop wrote carries on under this one (issue 15).

The campaign folder ``tests/data/ledger_v1/`` (config, data, gold file, the simulated backend's
task store and a pre-Alembic ledger after three rounds) is copied, then `labelloop status` and
`labelloop round` run on it through the CLI with a real Prefect API: the ledger is upgraded in
place on open and round 4 follows round 3 of both arms, on top of the old rows.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.data.make_ledger_fixture import FOLDER

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _count(db: Path, sql: str) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute(sql).fetchone()[0])
    finally:
        con.close()


def test_status_and_a_round_continue_on_an_old_ledger(prefect_api, tmp_path: Path):
    camp = tmp_path / "campaign"
    shutil.copytree(FOLDER, camp)
    cfg, db = camp / "campaign.toml", camp / "ledger.db"
    expected = {t: v["rows"] for t, v in json.loads((FOLDER / "digests.json").read_text())["tables"].items()}

    status = run_cli("status", str(cfg), "--json", env={"PREFECT_API_URL": prefect_api})
    assert status.returncode == 0, status.stderr[-3000:]
    assert _count(db, "SELECT count(*) FROM alembic_version") == 1, "status upgraded the ledger on open"
    shown = json.loads(status.stdout)
    assert "fixture" in status.stdout and shown, shown

    rnd = run_cli("round", str(cfg), env={"PREFECT_API_URL": prefect_api})
    assert rnd.returncode == 0, rnd.stdout[-2000:] + rnd.stderr[-3000:]
    assert "round  4" in rnd.stdout, rnd.stdout[-2000:]
    assert _count(db, "SELECT count(*) FROM rounds WHERE round_no = 4 AND status = 'done'") == 2
    assert _count(db, "SELECT count(*) FROM rounds WHERE round_no <= 3") == expected["rounds"]
    assert _count(db, "SELECT count(*) FROM trust_rounds WHERE round_no = 4") == 1
    assert _count(db, "SELECT count(*) FROM annotations") > expected["annotations"]
    assert _count(db, "SELECT count(*) FROM queries WHERE round_no <= 3") == expected["queries"]
