"""A throwaway PostgreSQL cluster for tests, started with ``infra/postgres.sh`` (no Docker).

Import :func:`postgres_fixture` into a test module (``postgres = postgres_fixture()``): one cluster per
module, stopped at its end. Without PostgreSQL binaries the tests are skipped with the reason, except
under CI (``LABELLOOP_REQUIRE_POSTGRES=1``, set by ``.ci/run``), where they fail: CI must exercise them.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "postgres.sh"


@dataclass(frozen=True)
class PostgresCluster:
    dir: Path
    url: str  # SQLAlchemy URL, password included

    @property
    def password(self) -> str:
        from sqlalchemy.engine import make_url

        pw = make_url(self.url).password
        assert pw, "infra/postgres.sh always sets a password"
        return pw

    def __repr__(self) -> str:  # never show the password in a pytest report
        return f"PostgresCluster(dir={str(self.dir)!r})"


def _script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def require_postgres() -> None:
    """Skip (locally) or fail (CI) when PostgreSQL or the psycopg driver is missing."""
    required = os.environ.get("LABELLOOP_REQUIRE_POSTGRES") == "1"
    problems = []
    if _script("bindir", timeout=30).returncode != 0:
        problems.append("PostgreSQL server binaries not found (run `infra/postgres.sh install` as root)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        problems.append("the psycopg driver is not installed (pip install -e '.[postgres]')")
    if problems:
        msg = "; ".join(problems)
        if required:
            pytest.fail(f"LABELLOOP_REQUIRE_POSTGRES=1 but {msg}", pytrace=False)
        pytest.skip(msg)


def start_cluster(folder: Path) -> PostgresCluster:
    res = _script("start", str(folder), timeout=180)
    if res.returncode != 0:
        pytest.fail(f"infra/postgres.sh start failed ({res.returncode}):\n{res.stderr[-3000:]}", pytrace=False)
    url = res.stdout.strip().splitlines()[-1]
    assert url.startswith("postgresql+psycopg://"), "postgres.sh start prints the SQLAlchemy URL last"
    return PostgresCluster(folder, url)


def stop_cluster(cluster: PostgresCluster, patience: float = 240) -> None:
    """Stop the cluster and return only once it is down (its ``postmaster.pid`` gone). ``pg_ctl -w stop``
    gives up after 60 s, which a loaded machine can exceed: a test that then ran "without PostgreSQL" found
    the server still answering. Asks again until ``patience`` runs out, then fails the test. From the
    second try on in ``immediate`` mode: a CI run once saw a fast shutdown hang for 240 s on a loaded
    machine, and a test cluster (fsync off, thrown away next) needs no shutdown checkpoint."""
    pid_file = Path(cluster.dir) / "data" / "postmaster.pid"
    deadline = time.monotonic() + patience
    mode = "fast"
    while True:
        _script("stop", str(cluster.dir), mode, timeout=120)
        mode = "immediate"
        if not pid_file.exists() or not _alive(pid_file):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"PostgreSQL in {cluster.dir} still running {patience:.0f} s after 'infra/postgres.sh stop'",
                        pytrace=False)
        time.sleep(2)


def _alive(pid_file: Path) -> bool:
    """The postmaster named in ``postmaster.pid`` still runs (a killed one leaves the file behind)."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user (the postgres account)
        return True
    return True


def postgres_fixture():
    @pytest.fixture(scope="module")
    def postgres(tmp_path_factory) -> PostgresCluster:
        require_postgres()
        cluster = start_cluster(tmp_path_factory.mktemp("pg"))
        try:
            yield cluster
        finally:
            stop_cluster(cluster)

    return postgres


def count_rows(url: str, campaign: str) -> dict[str, int]:
    """Rows per ledger table for one campaign (read straight from the database)."""
    from sqlalchemy import create_engine, text

    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            return {t: int(conn.execute(text(f"SELECT count(*) FROM {t} WHERE campaign = :c"), {"c": campaign})
                           .scalar())
                    for t in ("items", "queries", "tasks", "annotations", "rounds")}
    finally:
        eng.dispose()
