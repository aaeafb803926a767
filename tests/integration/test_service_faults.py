"""Service faults: the MLflow tracking store unreachable, the ledger database locked or gone.

What labelloop does (and the README's "Reliability" section documents):

* **MLflow unreachable** at the start of a round: the round fails before it changes the ledger (the
  tracker is opened first, before the pull), with one line naming the tracking URI (password
  redacted), no traceback; the next run, with MLflow back, runs the round in full.
* **MLflow going down in the middle of a round's logging** (a real server stopped while the round holds
  at the ``during-log`` fault point): one line naming the step and the URI, no traceback; the ledger
  keeps the round "queried"; with MLflow back the same command resumes it into the same MLflow run,
  without re-querying (the kill -9 "during-log" case in test_faults.py covers a crash there).
* **SQLite ledger locked** by another connection holding a write transaction: the round waits
  `LABELLOOP_LEDGER_BUSY_TIMEOUT_MS` (default 30 s), then fails with one line, nothing written.
* **PostgreSQL ledger gone** (server down): one line naming the ledger (password redacted), no
  traceback, nothing written; once the server is back the round runs.
* **SQLite ledger deleted**: refused (the campaign folder's `.labelloop-setup.json` says it was set up),
  not silently started over.
* **Label Studio unreachable when the round pulls** (down or restarting): retried ~15 s, then one line,
  nothing written (the pull is all-or-nothing); the next run resumes with no duplicate task.
* **Label Studio restarted in the middle of a paged pull** (a real stop + start while the round holds
  between two pages): the pull goes on against the new server process; ledger == Label Studio.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.conftest import free_port, run_cli, write_label_studio_campaign, write_small_campaign
from tests.integration.postgres_cluster import count_rows, postgres_fixture, start_cluster, stop_cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

postgres = postgres_fixture()

DATA_TABLES = ("items", "rounds", "queries", "tasks", "annotations", "trust_items", "batch_decisions",
               "annotator_status", "adjudications", "trust_rounds")


def _snapshot(db: Path) -> dict[str, list]:
    """Every row of the ledger's data tables (the lock row in `meta` is bookkeeping, not data)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        out = {t: sorted(map(repr, con.execute(f"SELECT * FROM {t}").fetchall())) for t in DATA_TABLES}
        out["meta"] = sorted(map(repr, con.execute("SELECT * FROM meta WHERE key NOT LIKE '%lock%'").fetchall()))
        return out
    finally:
        con.close()


def _assert_clean_error(res, *needles: str) -> None:
    out = res.stdout + res.stderr
    assert res.returncode == 2, (res.returncode, out[-3000:])
    assert "Traceback" not in out, out[-3000:]
    for n in needles:
        assert n in res.stderr, (n, res.stderr[-2000:])


def test_mlflow_unreachable_fails_the_round_before_the_ledger_changes(prefect_api, tmp_path: Path):
    port = free_port()  # nothing listens here
    cfg = write_small_campaign(tmp_path, name="mlflow-down", n=500, budget=50)
    env = {"PREFECT_API_URL": prefect_api}
    assert run_cli("setup", str(cfg), env=env).returncode == 0
    before = _snapshot(tmp_path / "ledger.db")

    good = cfg.read_text()
    cfg.write_text(good + f'\n[mlflow]\ntracking_uri = "http://mlflow-user:s3cret-Pa55@127.0.0.1:{port}"\n')
    # MLflow retries an unreachable server with back-off (7 times by default, minutes); one retry here.
    res = run_cli("round", str(cfg), env={**env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                                          "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
                                          "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"})
    _assert_clean_error(res, f"MLflow tracking store http://127.0.0.1:{port} is not usable")
    assert "s3cret-Pa55" not in res.stdout + res.stderr
    assert _snapshot(tmp_path / "ledger.db") == before, "the failed round changed the ledger"

    cfg.write_text(good)  # MLflow back
    res = run_cli("round", str(cfg), env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    from labelloop.flows.runtime import open_campaign

    c = open_campaign(cfg)
    assert {(r.arm, r.round_no, r.status) for r in c.ledger.list_rounds()} == {("active", 1, "done"),
                                                                              ("random", 1, "done")}
    assert all(r.mlflow_run_id for r in c.ledger.list_rounds())
    c.ledger.dispose()


def _start_paused(args: list[str], env: dict, point: str, pause: Path):
    """A CLI round (``python <args>``) held at fault point ``point``; returns once it waits there.
    The caller touches ``pause / "resume"`` to let it go on, and kills it if the test fails first."""
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    rnd = subprocess.Popen([sys.executable, *args], cwd=ROOT,
                           env={**env, "LABELLOOP_PAUSE_AT": point, "LABELLOOP_PAUSE_DIR": str(pause)},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (pause / f"paused-{point}").exists():
        if rnd.poll() is not None:
            raise AssertionError(f"the round ended before it reached {point!r}:\n{rnd.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            rnd.kill()
            raise AssertionError(f"the round never reached {point!r}")
        time.sleep(0.5)
    return rnd


def test_mlflow_down_mid_logging_is_one_clear_line_and_the_round_resumes(prefect_api, tmp_path: Path):
    """A real MLflow server stopped while the round is logging (held at the ``during-log`` fault point,
    after the round run's params went in; its model and metrics come next): one line naming the step and the URI, no traceback, the
    ledger keeps the queried round; with the server back, the same command finishes it into the same run."""
    import json
    import os
    import urllib.request

    from tests.conftest import start_mlflow_server, stop_group

    port = free_port()
    store = tmp_path / "mlflow-store"
    server = start_mlflow_server(store, port)
    try:
        cfg = write_small_campaign(tmp_path, name="mlflow-mid-log", n=500, budget=75,
                                   extra=f'[mlflow]\ntracking_uri = "http://127.0.0.1:{port}"\n')
        env = {**os.environ, "PREFECT_API_URL": prefect_api, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
        assert run_cli("setup", str(cfg), env=env).returncode == 0
        pause = tmp_path / "pause"
        rnd = _start_paused(["-m", "labelloop.flows.cli", "round", str(cfg)], env, "during-log", pause)
        try:
            stop_group(server)  # MLflow goes away in the middle of the round's logging
            (pause / "resume").touch()
            out, err = rnd.communicate(timeout=300)
        finally:
            if rnd.poll() is None:
                rnd.kill()
        assert rnd.returncode == 2, (rnd.returncode, err[-3000:])
        assert "Traceback" not in out + err, err[-3000:]
        assert f"MLflow tracking store http://127.0.0.1:{port} failed while" in err, err[-2000:]
        assert "re-run the same command" in err

        from labelloop.flows.runtime import open_campaign

        c = open_campaign(cfg)
        r1 = c.ledger.get_round("active", 1)
        assert r1 is not None and r1.status == "queried" and r1.mlflow_run_id, "the ledger keeps the queried round"
        queried = c.ledger.queries_frame(arm="active", round_no=1)["item_id"].tolist()
        run_id = r1.mlflow_run_id
        c.ledger.dispose()

        server = start_mlflow_server(store, port)  # MLflow back, same store
        res = run_cli("round", str(cfg), env=env)
        assert res.returncode == 0, res.stderr[-3000:]
        c = open_campaign(cfg)
        r1 = c.ledger.get_round("active", 1)
        assert r1 is not None and r1.status == "done" and r1.mlflow_run_id == run_id, "same run, finished"
        assert c.ledger.queries_frame(arm="active", round_no=1)["item_id"].tolist() == queried, "not re-queried"
        c.ledger.dispose()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={run_id}",
                                    timeout=30) as r:
            run = json.loads(r.read())["run"]
        assert run["info"]["status"] == "FINISHED"
        assert {"test_macro_f1", "n_labels"} <= {m["key"] for m in run["data"]["metrics"]}
    finally:
        stop_group(server)


def test_sqlite_ledger_locked_by_another_writer_is_a_clear_error(prefect_api, tmp_path: Path):
    cfg = write_small_campaign(tmp_path, name="locked", n=500, budget=50)
    env = {"PREFECT_API_URL": prefect_api}
    assert run_cli("setup", str(cfg), env=env).returncode == 0
    db = tmp_path / "ledger.db"
    before = _snapshot(db)

    holder = sqlite3.connect(db, timeout=1, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's open write transaction
    try:
        res = run_cli("round", str(cfg), env={**env, "LABELLOOP_LEDGER_BUSY_TIMEOUT_MS": "1500"}, timeout=300)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    _assert_clean_error(res, "database is locked", str(db))
    assert _snapshot(db) == before, "the failed round changed the ledger"

    res = run_cli("round", str(cfg), env=env)  # the lock is gone: the round runs
    assert res.returncode == 0, res.stderr[-3000:]


URL_ENV = "LABELLOOP_FAULT_TEST_LEDGER_URL"


def test_postgres_ledger_gone_then_back(postgres, prefect_api, tmp_path: Path):
    cfg = write_small_campaign(tmp_path, name="pg-gone", n=500, budget=50, extra=f'[ledger]\nurl_env = "{URL_ENV}"\n')
    env = {"PREFECT_API_URL": prefect_api, URL_ENV: postgres.url}
    assert run_cli("setup", str(cfg), env=env).returncode == 0
    before = count_rows(postgres.url, "pg-gone")

    stop_cluster(postgres)
    try:
        res = run_cli("round", str(cfg), env=env, timeout=300)
    finally:
        start_cluster(postgres.dir)  # same folder: same data, port and password
    _assert_clean_error(res, "error: cannot open the ledger at postgresql+psycopg://labelloop:***@127.0.0.1")
    assert postgres.password not in res.stdout + res.stderr
    assert count_rows(postgres.url, "pg-gone") == before

    res = run_cli("round", str(cfg), env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert count_rows(postgres.url, "pg-gone")["rounds"] == 2


def test_sqlite_ledger_deleted_is_refused_not_silently_restarted(prefect_api, tmp_path: Path):
    """A lost ledger must not turn into a fresh campaign (round 1 again, tasks pushed again)."""
    cfg = write_small_campaign(tmp_path, name="ledger-gone", n=400, budget=50)
    env = {"PREFECT_API_URL": prefect_api}
    assert run_cli("setup", str(cfg), env=env).returncode == 0
    backend_state = (tmp_path / "simulated_backend.json").read_bytes()
    for f in tmp_path.glob("ledger.db*"):
        f.unlink()

    res = run_cli("round", str(cfg), env=env)
    _assert_clean_error(res, "was set up", "has no record of it", ".labelloop-setup.json")
    assert (tmp_path / "simulated_backend.json").read_bytes() == backend_state, "nothing was pushed again"
    con = sqlite3.connect(tmp_path / "ledger.db")
    try:
        assert con.execute("SELECT count(*) FROM items").fetchone()[0] == 0, "nothing was ingested again"
    finally:
        con.close()

    (tmp_path / ".labelloop-setup.json").unlink()  # the documented way to start over on purpose
    res = run_cli("round", str(cfg), env=env)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.label_studio
def test_label_studio_unreachable_at_pull_fails_cleanly_then_resumes(prefect_api, label_studio, tmp_path: Path,
                                                                     monkeypatch):
    """Label Studio down (or restarting) when a round pulls: the backend retries ~15 s, then one line and
    nothing written (a pull collects every page before it stores any); once it is back the round runs and
    no task is pushed twice. A restart that outlasts the retries looks exactly like this."""
    url, token = label_studio
    cfg = write_label_studio_campaign(tmp_path, url, name="ls-down", n=400, budget=20, batch=10, seed_size=10)
    env = {"PREFECT_API_URL": prefect_api, "LABEL_STUDIO_API_KEY": token}
    res = run_cli("setup", str(cfg), env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    before = _snapshot(tmp_path / "ledger.db")

    good = cfg.read_text(encoding="utf-8")
    dead = f"http://127.0.0.1:{free_port()}"  # Label Studio "down": nothing listens at the configured URL
    cfg.write_text(good.replace(f'url = "{url}"', f'url = "{dead}"'), encoding="utf-8")
    res = run_cli("round", str(cfg), env=env)
    _assert_clean_error(res, f"error: Label Studio at {dead}")
    assert token not in res.stdout + res.stderr
    out = res.stdout + res.stderr
    # said once, and retried by the adapter only: Prefect retrying the task on top tripled the wait
    assert out.count(f"Label Studio at {dead} did not answer while") == 1, out[-3000:]
    assert out.count("retry 1/") <= 1, out[-3000:]
    after = _snapshot(tmp_path / "ledger.db")
    assert {k: v for k, v in after.items() if k != "meta"} == {k: v for k, v in before.items() if k != "meta"}, \
        "the failed round wrote annotations, queries or tasks"
    cfg.write_text(good, encoding="utf-8")  # back up

    res = run_cli("round", str(cfg), env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    from labelloop.flows.runtime import open_campaign

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", token)
    c = open_campaign(cfg)
    ls_tasks = c.backend.existing_tasks()
    assert set(ls_tasks) == set(c.ledger.task_ids()), "ledger == Label Studio"
    assert c.ledger.tasks_frame()["item_id"].is_unique
    assert len(c.ledger.annotations_frame()) == 10 * 3, "the seed's answers, pulled once"


_SMALL_PAGES = ("import sys, labelloop.integrations.label_studio as ls\n"
                "ls.LabelStudioBackend.__init__.__kwdefaults__['page_size'] = 4\n"
                "from labelloop.flows.cli import main\n"
                "sys.exit(main(sys.argv[1:]))\n")


@pytest.mark.label_studio
def test_label_studio_restarted_mid_pull_loses_and_duplicates_nothing(prefect_api, label_studio, tmp_path: Path,
                                                                      monkeypatch):
    """A real restart of the Label Studio server between two pages of a pull: the round holds at the
    ``during-pull-page`` fault point, the test stops and starts the server (same data, same port), the
    pull goes on against the new process and the round completes; ledger == Label Studio, one task
    per item, every annotation pulled once."""
    import os
    import subprocess

    from tests.conftest import ROOT

    if label_studio.data_dir is None:
        pytest.skip("Label Studio reused from LABELLOOP_LS_URL: this test restarts the server it started itself")
    url, token = label_studio
    cfg = write_label_studio_campaign(tmp_path, url, name="ls-restart", n=400, budget=20, batch=10, seed_size=10)
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "LABEL_STUDIO_API_KEY": token}
    res = run_cli("setup", str(cfg), env=env)
    assert res.returncode == 0, res.stderr[-3000:]

    pause = tmp_path / "pause"
    rnd = _start_paused(["-c", _SMALL_PAGES, "round", str(cfg)], env, "during-pull-page", pause)
    try:
        script = str(ROOT / "infra" / "label_studio.sh")
        port = url.rsplit(":", 1)[1]
        for args in (["stop"], ["start", "--port", port]):
            r = subprocess.run([script, *args], env=label_studio.env, capture_output=True, text=True, timeout=400)
            assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
        (pause / "resume").touch()
        out, err = rnd.communicate(timeout=400)
    finally:
        if rnd.poll() is None:
            rnd.kill()
    assert rnd.returncode == 0, err[-3000:]
    assert "Traceback" not in out + err and token not in out + err

    from labelloop.flows.runtime import open_campaign

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", token)
    c = open_campaign(cfg)
    assert set(c.backend.existing_tasks()) == set(c.ledger.task_ids()), "ledger == Label Studio"
    assert c.ledger.tasks_frame()["item_id"].is_unique, "one task per item"
    ann = c.ledger.annotations_frame()
    assert len(ann) == 10 * 3 and ann["backend_annotation_id"].is_unique, "the seed's answers, each pulled once"
    r1 = c.ledger.get_round("active", 1)
    assert r1 is not None and r1.status == "done" and r1.n_labels > 0
