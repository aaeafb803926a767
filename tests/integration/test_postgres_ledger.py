"""The ledger on a real PostgreSQL server (infra/postgres.sh, Debian packages, no Docker).

The team set-up (infra/compose.yaml) keeps the ledger in PostgreSQL; this is the part of it that runs
here: a campaign whose `[ledger] url_env` names a variable holding a URL with a password, set up and
run for a round through the CLI, with its rows read back from PostgreSQL itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli, write_small_campaign
from tests.integration.postgres_cluster import count_rows, postgres_fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

postgres = postgres_fixture()

URL_ENV = "LABELLOOP_TEST_LEDGER_URL"


def test_setup_and_round_write_the_ledger_to_postgres(postgres, prefect_api, tmp_path: Path):
    cfg = write_small_campaign(tmp_path, name="pg-ledger", n=600, budget=50, extra=f'[ledger]\nurl_env = "{URL_ENV}"\n')
    env = {"PREFECT_API_URL": prefect_api, URL_ENV: postgres.url}

    setup = run_cli("setup", str(cfg), env=env)
    assert setup.returncode == 0, setup.stderr[-3000:]
    after_setup = count_rows(postgres.url, "pg-ledger")
    assert after_setup["items"] == 600
    assert after_setup["queries"] == 2 * 25, "the seed, for both arms"
    assert after_setup["tasks"] == 25

    rnd = run_cli("round", str(cfg), env=env)
    assert rnd.returncode == 0, rnd.stderr[-3000:]
    rows = count_rows(postgres.url, "pg-ledger")
    assert rows["annotations"] == 25 * 3, "the seed, labelled by 3 simulated annotators, pulled into PostgreSQL"
    assert rows["rounds"] == 2, "round 1 of both arms"
    assert rows["queries"] == 2 * 25 + 2 * 25 and rows["tasks"] > 25
    assert not (tmp_path / "ledger.db").exists(), "nothing fell back to the SQLite default"

    status = run_cli("status", str(cfg), env=env)
    assert status.returncode == 0, status.stderr[-3000:]
    assert "postgresql+psycopg://labelloop:***@127.0.0.1" in status.stdout

    for res in (setup, rnd, status):
        assert postgres.password not in res.stdout + res.stderr, "the ledger password was printed"


def test_unreachable_or_wrong_password_is_a_clear_error_without_the_password(postgres, tmp_path: Path):
    cfg = write_small_campaign(tmp_path, name="pg-bad", n=300, extra=f'[ledger]\nurl_env = "{URL_ENV}"\n')
    wrong = postgres.url.replace(postgres.password, "Wr0ngPassw0rd-f00d")
    res = run_cli("status", str(cfg), env={URL_ENV: wrong, "PREFECT_API_URL": ""}, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out[-3000:]
    assert "Traceback" not in out
    assert "error: cannot open the ledger at postgresql+psycopg://labelloop:***@" in res.stderr
    assert "password authentication failed" in res.stderr
    assert "Wr0ngPassw0rd-f00d" not in out and postgres.password not in out

    # a server that is not there (a closed port): same kind of one-line error
    from tests.conftest import free_port

    gone = wrong.replace(f"@127.0.0.1:{wrong.split('@127.0.0.1:')[1].split('/')[0]}/", f"@127.0.0.1:{free_port()}/")
    res = run_cli("status", str(cfg), env={URL_ENV: gone, "PREFECT_API_URL": ""}, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out[-3000:]
    assert "Traceback" not in out and "error: cannot open the ledger at" in res.stderr
    assert "Wr0ngPassw0rd-f00d" not in out

    # the variable named by url_env is not set
    res = run_cli("status", str(cfg), env={URL_ENV: "", "PREFECT_API_URL": ""}, timeout=120)
    assert res.returncode == 2 and f"{URL_ENV!r} but that variable is not set" in res.stderr, res.stderr[-2000:]


def test_an_old_ledger_upgrades_in_place_on_postgres(postgres):
    """The fixture's pre-Alembic ledger, copied row for row into PostgreSQL (as the old code's
    ``create_all`` laid it out), is stamped and upgraded on open with every row kept (issue 15)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine, func, select

    from labelloop.integrations.ledger import Ledger
    from labelloop.integrations.ledger.migrate import alembic_config, head_revision
    from labelloop.integrations.ledger.schema import metadata
    from tests.data.make_ledger_fixture import FOLDER

    baseline = ScriptDirectory.from_config(alembic_config()).get_revision("0001").module.metadata
    src, dst = create_engine(f"sqlite:///{FOLDER / 'ledger.db'}"), create_engine(postgres.url)
    counts = {}
    try:
        with src.connect() as s, dst.begin() as d:
            baseline.drop_all(d)
            d.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
            baseline.create_all(d)
            for table in baseline.sorted_tables:
                rows = [dict(r) for r in s.execute(select(table)).mappings()]
                counts[table.name] = len(rows)
                if rows:
                    d.execute(table.insert(), rows)
        led = Ledger(postgres.url, "fixture")
        assert led.migration == "upgraded from 0001"
        with dst.connect() as d:
            assert d.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head_revision()
            added = {"meta": 1}  # 0005: the campaign's items version (data only); every other table as it was
            for table in baseline.sorted_tables:
                assert (d.execute(select(func.count()).select_from(table)).scalar()
                        == counts[table.name] + added.get(table.name, 0)), table.name
            assert d.exec_driver_sql("SELECT value FROM meta WHERE key = 'schema_version'").scalar() == "2"
            assert len(d.exec_driver_sql("SELECT value FROM meta WHERE key = 'fixture:items_version'").scalar()) == 32
            assert compare_metadata(MigrationContext.configure(d), metadata) == []
        assert len(led.list_rounds()) == 6 and sorted(led.trust.trust_rounds()) == [1, 2, 3]
        assert len(led.trust.adjudications_frame(status="done")) == 2
        assert Ledger(postgres.url, "fixture").migration == "current"
    finally:
        src.dispose()
        dst.dispose()
