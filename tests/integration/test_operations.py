"""Operations against real local servers: a Prefect API (``prefect server start``) and an MLflow server.

* ``labelloop serve``: a round deployment on a short interval schedule completes a run on its own;
  ``labelloop.drift.detected`` triggers the reopen deployment, which adds the arrivals to the pool
  and runs a round; a round triggered at the same moment never overlaps it (flow-run timestamps
  and the ledger's round start/finish times).
* ``labelloop deploy`` and ``prefect deploy --all`` (prefect.yaml) register the same deployments.
* MLflow as the dashboard, read over the tracking server's REST API: nested round runs, metrics
  stepped by label count, PNG artifacts, a drift run, and the ``champion`` alias on the best round.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from labelloop.flows.runtime import open_campaign
from tests.conftest import ROOT, free_port, run_cli, start_mlflow_server, stop_group, write_small_campaign

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


# --------------------------------------------------------------------------- helpers
def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _deployment_runs(name: str) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with _client() as client:
        dep = client.read_deployment_by_name(name)
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))


def _wait(what: str, predicate, timeout: float, interval: float = 1.0, on_timeout=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = predicate()
        if out:
            return out
        time.sleep(interval)
    detail = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}")


def _state(run) -> str:
    return run.state.type.value if run.state else "?"


def _log_tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _round_spans(c) -> dict[int, tuple[datetime, datetime]]:
    """round_no -> (first arm started, last arm finished) from the ledger."""
    spans: dict[int, list] = {}
    for r in c.ledger.list_rounds():
        assert r.finished_at is not None, f"round {r.round_no} {r.arm} did not finish ({r.status})"
        s = spans.setdefault(r.round_no, [r.started_at, r.finished_at])
        s[0], s[1] = min(s[0], r.started_at), max(s[1], r.finished_at)
    return {k: (v[0], v[1]) for k, v in spans.items()}


# --------------------------------------------------------------------------- serve: schedule, event, one at a time
def test_serve_schedule_drift_reopen_and_one_round_at_a_time(prefect_api, tmp_path: Path):
    from prefect.deployments import run_deployment

    from labelloop.flows.drift import drain_events, emit_drift_event
    from labelloop.flows.locking import round_lock
    from labelloop.flows.reopen import effective_random_share, reopen_boost
    from labelloop.flows.setup import ensure_setup
    from labelloop.flows.status import next_runs

    tag = uuid.uuid4().hex[:6]  # unique names: the Prefect server may be shared (LABELLOOP_TEST_PREFECT_API_URL)
    A, B = f"ops-sched-{tag}", f"ops-drift-{tag}"
    sched_cfg = write_small_campaign(tmp_path / "a", name=A, budget=75, extra='''
[schedule]
round_interval_seconds = 20
drift_cron = ""
[stream]
arrivals = "incoming/"
interval_seconds = 10
''')
    incoming = tmp_path / "a" / "incoming"  # stream mode, served: a file waits in the folder before serve starts
    incoming.mkdir()
    pd.read_csv(tmp_path / "a" / "data" / "arrivals_fresh.csv").iloc[:40].to_csv(incoming / "x1.csv", index=False)
    drift_cfg = write_small_campaign(tmp_path / "b", name=B, budget=150, extra='''
[schedule]
round_cron = ""
drift_cron = ""
[drift]
arrivals = "data/arrivals_drift.csv"
reopen_random_share = 0.4
reopen_rounds = 2
''')
    log = tmp_path / "serve.log"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_RUNNER_POLL_FREQUENCY": "1",
           "PREFECT_LOGGING_LEVEL": "INFO"}
    with open(log, "wb") as fh:
        serve = subprocess.Popen([sys.executable, "-m", "labelloop.flows.cli", "serve", str(sched_cfg), str(drift_cfg)],
                                 cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # The drifting campaign is set up here while the scheduled one starts its first round over there.
        b = open_campaign(drift_cfg)
        ensure_setup(b)
        n_before = b.ledger.n_items()

        # 1. a served round deployment on a short schedule completes a run on its own
        def scheduled_done():
            assert serve.poll() is None, f"serve exited:\n{_log_tail(log)}"
            try:
                runs = _deployment_runs(f"labelloop-round/{A}")
            except Exception:  # noqa: BLE001 - not registered yet
                return None
            return [r for r in runs if _state(r) in FINAL] or None

        def no_runs_hint() -> str:
            try:
                runs = _deployment_runs(f"labelloop-round/{A}")
            except Exception as err:  # noqa: BLE001
                return f"deployment not readable: {err}\n{_log_tail(log)}"
            hint = ("" if runs else "\nthe server created NO scheduled runs: Prefect 3.8's scheduler service fails on "
                    "SQLAlchemy 2.1 ('Can't evaluate bulk DML statement'); pin sqlalchemy<2.1\n")
            return hint + _log_tail(log)

        done = _wait("a completed scheduled round", scheduled_done, 180, 2, no_runs_hint)
        assert _state(done[0]) == "COMPLETED", f"{done[0].state}\n{_log_tail(log)}"
        assert done[0].auto_scheduled, "the run came from the schedule, not from the test"
        # warm: the serve process runs a flow itself (no spawned Python that imports everything again);
        # a run due while another one is in the process (here: the stream run) goes to a subprocess
        text = log.read_text()
        assert re.search(rf"{done[0].name} \(labelloop-round\): in (this process|a subprocess \(another run is "
                         rf"in this process\))", text), _log_tail(log)
        assert re.search(r"\(labelloop-(round|stream)\): in this process", text), _log_tail(log)
        a = open_campaign(sched_cfg)
        assert a.ledger.get_round("active", 1) is not None and a.ledger.get_round("active", 1).status == "done"
        nxt = next_runs(A)["runs"]
        assert nxt.get(f"labelloop-round/{A}") not in (None, "paused"), nxt  # `labelloop status` line
        with _client() as client:  # the schedule did its job; keep the two cores for the rest
            client.pause_deployment(client.read_deployment_by_name(f"labelloop-round/{A}").id)

        # 1b. the served stream deployment picks up the waiting file on its own schedule
        def stream_done():
            try:
                runs = _deployment_runs(f"labelloop-stream/{A}")
            except Exception:  # noqa: BLE001 - not registered yet
                return None
            # a run due while the previous one still runs is cancelled ("Deployment concurrency limit
            # reached"): one stream run at a time, as for rounds
            return [r for r in runs if _state(r) == "COMPLETED"] or None

        sdone = _wait("a completed scheduled stream run", stream_done, 180, 2, lambda: _log_tail(log))
        with _client() as client:
            client.pause_deployment(client.read_deployment_by_name(f"labelloop-stream/{A}").id)
        assert _state(sdone[0]) == "COMPLETED" and sdone[0].auto_scheduled, f"{sdone[0].state}\n{_log_tail(log)}"
        streamed = a.ledger.stream_frame()
        assert len(streamed) == 40 and len(a.ledger.stream_files_seen()) == 1, streamed
        assert set(streamed["route"]) <= {"auto", "audit", "routed", "held"}

        # 2 + 3. a drift event and a round, triggered at once, while this test holds the round lock:
        # both flow runs are running before either may query, then they must take turns.
        arrivals = str((tmp_path / "b" / "data" / "arrivals_drift.csv").resolve())
        with round_lock(b):
            triggered_at = datetime.now(timezone.utc)
            ev = emit_drift_event(B, arrivals=arrivals, scores={"domain_auc": 0.97},
                                  episode="ep-test-1", reason="integration test")
            drain_events()
            manual = run_deployment(f"labelloop-round/{B}", timeout=0)

            def both_running():
                try:
                    reopens = _deployment_runs(f"labelloop-reopen/{B}")
                except Exception:  # noqa: BLE001
                    return None
                with _client() as client:
                    m = client.read_flow_run(manual.id)
                running = [r for r in reopens if _state(r) == "RUNNING"]
                return (running[0], m) if running and _state(m) == "RUNNING" else None

            reopen_run, _ = _wait("the reopen and the manual round both running", both_running, 180, 1,
                                  lambda: _log_tail(log))
            time.sleep(2)
            released_at = datetime.now(timezone.utc)

        def finished():
            with _client() as client:
                r, m = client.read_flow_run(reopen_run.id), client.read_flow_run(manual.id)
            return (r, m) if _state(r) in FINAL and _state(m) in FINAL else None

        reopen_run, manual_run = _wait("both runs to finish", finished, 300, 2, lambda: _log_tail(log))
        assert _state(reopen_run) == "COMPLETED", f"{reopen_run.state}\n{_log_tail(log)}"
        assert _state(manual_run) == "COMPLETED", f"{manual_run.state}\n{_log_tail(log)}"
        assert reopen_run.parameters["episode"] == "ep-test-1"
        assert reopen_run.parameters["arrivals"] == arrivals
        assert reopen_run.parameters["event_id"] == str(ev.id)

        # the reopen added the arrivals to the pool, tagged with the episode, and boosted exploration
        items = b.ledger.items_frame()
        new = items[items["episode"] == "ep-test-1"]
        assert len(new) == 300 and set(new["split"]) == {"pool"}
        assert b.ledger.n_items() == n_before + 300
        boost = json.loads(b.ledger.get_meta("reopen_boost"))
        assert boost["episode"] == "ep-test-1" and boost["share"] == 0.4 and boost["rounds"] == 2
        assert effective_random_share(b, boost["first_round"]) == 0.4
        assert effective_random_share(b, boost["first_round"] + 2) == b.cfg.query.random_share
        assert reopen_boost(b, boost["first_round"] + 1) is not None
        # the boosted round says why its share is raised (round notes -> CLI line, MLflow tag; status uses the same)
        from labelloop.flows.campaign_state import active_random_share

        assert active_random_share(b, boost["first_round"]) == (
            0.4, "random share raised to 0.40 after drift episode ep-test-1")
        assert active_random_share(b, boost["first_round"] + 2) == (b.cfg.query.random_share, None)
        notes = b.ledger.get_round("active", boost["first_round"]).notes
        assert "random share raised to 0.40 after drift episode ep-test-1" in notes, notes
        # ... and the boosted round's active batch really carries the raised random share (0.4, not 0.1)
        q = b.ledger.queries_frame(arm="active", round_no=boost["first_round"])
        assert len(q) >= 10, q
        share = (q["reason"] == "random").mean()
        assert share >= 0.3, f"random share in the boosted round {share:.2f}"

        # it ran a round: a subflow of the reopen run
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

        with _client() as client:
            subs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[reopen_run.id])))
        sub_rounds = [s for s in subs if s.name and _state(s) == "COMPLETED"]
        assert sub_rounds, "the reopen flow ran a round subflow"
        sub = max(sub_rounds, key=lambda s: s.end_time)

        # one round at a time: both flow runs were running before the lock was released ...
        for run in (reopen_run, manual_run):
            assert triggered_at <= run.start_time <= released_at, (run.name, run.start_time, released_at)
            assert run.end_time > released_at
        # ... and the ledger's rounds, two of them, do not overlap and happened after the release
        spans = _round_spans(b)
        assert len(spans) >= 2, spans
        ordered = sorted(spans.values())
        for (s1, e1), (s2, e2) in zip(ordered, ordered[1:]):
            assert e1 <= s2, f"rounds overlap: {ordered}"
        assert ordered[0][0] >= released_at
        # each ledger round lies inside one of the two round flow runs, a different one each
        slack = timedelta(seconds=2)
        owners = []
        for start, end in ordered[:2]:
            inside = [run.id for run in (manual_run, sub)
                      if run.start_time - slack <= start and end <= run.end_time + slack]
            assert inside, f"round {start}..{end} is in no round flow run"
            owners.append(inside)
        assert set(owners[0]) | set(owners[1]) == {manual_run.id, sub.id}

        # 4. the same arrivals again (a re-sent alert) add nothing and spend no labels
        rounds_before = len(b.ledger.list_rounds())
        emit_drift_event(B, arrivals=arrivals, episode="ep-test-1", reason="sent twice")
        drain_events()

        def second_reopen():
            runs = [r for r in _deployment_runs(f"labelloop-reopen/{B}") if r.id != reopen_run.id]
            return [r for r in runs if _state(r) in FINAL] or None

        again = _wait("the second reopen", second_reopen, 180, 2, lambda: _log_tail(log))
        assert _state(again[0]) == "COMPLETED"
        assert b.ledger.n_items() == n_before + 300
        assert len(b.ledger.list_rounds()) == rounds_before

        # SIGTERM (as Ctrl-C): serve stops by itself, pauses the schedules, exits 0
        os.killpg(serve.pid, signal.SIGTERM)
        assert serve.wait(timeout=90) == 0, _log_tail(log)
        assert _log_tail(log, 3).splitlines()[-1] == "stopped", _log_tail(log)
        with _client() as client:
            assert client.read_deployment_by_name(f"labelloop-round/{B}").paused
    finally:
        stop_group(serve)

    # `labelloop status`: round table, pending tasks, and no schedule without an API
    res = run_cli("status", str(drift_cfg), env={"PREFECT_API_URL": ""}, timeout=120)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "macro-F1" in out and "active" in out and "random" in out
    assert "pending" in out and "drift episodes: 1; last ep-test-1" in out
    assert "no schedule found" in out
    res = run_cli("status", str(drift_cfg), "--json", env={"PREFECT_API_URL": ""}, timeout=120)
    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)
    assert st["campaign"] == B and {r["arm"] for r in st["rounds"]} == {"active", "random"}
    assert "trust" in st and st["schedule"]["runs"] == {}


# --------------------------------------------------------------------------- deploy (team path)
def test_deploy_and_prefect_yaml_register_the_same_deployments(prefect_api, tmp_path: Path):
    from prefect.client.schemas.actions import WorkPoolCreate

    with _client() as client:
        try:
            client.create_work_pool(WorkPoolCreate(name="labelloop", type="process"))
        except Exception:  # noqa: BLE001 - exists from an earlier run against the same server
            pass
    tag = uuid.uuid4().hex[:6]
    cfg1 = write_small_campaign(tmp_path / "d1", name=f"ops-deploy-{tag}", extra='''
[schedule]
round_cron = "30 5 * * 1-5"
drift_cron = "15 * * * *"
timezone = "Europe/Berlin"
[stream]
arrivals = "incoming"
interval_seconds = 120
''')
    cfg2 = write_small_campaign(tmp_path / "d2", name=f"ops-yaml-{tag}", extra='''
[schedule]
round_cron = "30 5 * * 1-5"
drift_cron = "15 * * * *"
timezone = "Europe/Berlin"
[stream]
arrivals = "incoming"
interval_seconds = 120
''')
    env = {"PREFECT_API_URL": prefect_api}
    res = run_cli("deploy", str(cfg1), "--pool", "labelloop", env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"labelloop-round/ops-deploy-{tag}" in res.stdout

    exports = run_cli("deploy", str(cfg2), "--print-env", env=env, timeout=120)
    assert exports.returncode == 0, exports.stderr
    yaml_env = {**os.environ, "PREFECT_API_URL": prefect_api}
    for line in exports.stdout.splitlines():
        k, _, v = line.removeprefix("export ").partition("=")
        yaml_env[k] = json.loads(v)
    res = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=ROOT,
                         env=yaml_env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    with _client() as client:
        automations = client.read_automations()
        for name in (f"ops-deploy-{tag}", f"ops-yaml-{tag}"):
            rnd = client.read_deployment_by_name(f"labelloop-round/{name}")
            drf = client.read_deployment_by_name(f"labelloop-drift-check/{name}")
            rep = client.read_deployment_by_name(f"labelloop-reopen/{name}")
            stm = client.read_deployment_by_name(f"labelloop-stream/{name}")
            every = [getattr(s.schedule, "interval", None) or s.schedule.cron for s in stm.schedules]
            assert every in ([timedelta(seconds=120)], ["*/2 * * * *"]), f"stream mode (issue 17): {every}"
            assert stm.schedules[0].active and stm.concurrency_options.collision_strategy.value == "CANCEL_NEW"
            for d in (rnd, drf, rep, stm):
                assert d.work_pool_name == "labelloop"
                assert Path(d.parameters["config"]).name == "campaign.toml" and Path(d.parameters["config"]).is_absolute()
                assert not any(k in json.dumps(d.parameters).lower() for k in ("token", "password", "api_key"))
            assert [s.schedule.cron for s in rnd.schedules] == ["30 5 * * 1-5"]
            assert rnd.schedules[0].schedule.timezone == "Europe/Berlin"
            assert [s.schedule.cron for s in drf.schedules] == ["15 * * * *"]
            assert not rep.schedules
            assert rnd.global_concurrency_limit.limit == 1
            assert rnd.concurrency_options.collision_strategy.value == "ENQUEUE"
            assert rep.concurrency_options.collision_strategy.value == "ENQUEUE"
            mine = [a for a in automations
                    if any(getattr(act, "deployment_id", None) == rep.id for act in a.actions)]
            assert len(mine) == 1, f"{name}: one trigger automation for the reopen deployment"
            batch = [a for a in automations
                     if any(getattr(act, "deployment_id", None) == rnd.id for act in a.actions)]
            assert len(batch) == 1 and batch[0].trigger.expect == {"labelloop.batch.completed"}, (
                f"{name}: the round deployment starts on a completed batch (issue 17)")
            assert batch[0].trigger.match.model_dump().get("prefect.resource.id") in (
                f"labelloop.campaign.{name}", [f"labelloop.campaign.{name}"])
            trig = mine[0].trigger
            assert trig.expect == {"labelloop.drift.detected"}
            assert trig.match.model_dump().get("prefect.resource.id") in (
                f"labelloop.campaign.{name}", [f"labelloop.campaign.{name}"])
            params = mine[0].actions[0].parameters
            assert params["arrivals"] in ("{{ event.payload.arrivals }}",
                                          {"__prefect_kind": "jinja", "template": "{{ event.payload.arrivals }}"})


# --------------------------------------------------------------------------- MLflow as the dashboard
@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 (SQLite backend, local artifact root), stopped by process group."""
    port = free_port()
    proc = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(proc)


def _rest(base: str, path: str, params: dict | None = None, body: dict | None = None) -> dict:
    url = f"{base}/api/2.0/mlflow/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


def _search(base: str, exp_id: str, flt: str) -> list[dict]:
    out, token = [], None
    while True:
        body = {"experiment_ids": [exp_id], "filter": flt, "max_results": 500}
        if token:
            body["page_token"] = token
        page = _rest(base, "runs/search", body=body)
        out += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            return out


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _metrics(run: dict) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def test_mlflow_server_is_the_dashboard(prefect_api, mlflow_server, tmp_path: Path):
    from labelloop.flows.campaign import campaign_flow
    from labelloop.flows.drift import drift_check_flow

    cfg = write_small_campaign(tmp_path, name="ops-mlflow", budget=75, extra=f'''
[mlflow]
tracking_uri = "{mlflow_server}"
''')
    campaign_flow(str(cfg))
    drift = drift_check_flow(str(cfg), str((tmp_path / "data" / "arrivals_drift.csv").resolve()))
    assert drift["drifted"], drift

    exp = _rest(mlflow_server, "experiments/get-by-name", {"experiment_name": "labelloop-ops-mlflow"})["experiment"]
    parents = _search(mlflow_server, exp["experiment_id"], "tags.`labelloop.kind` = 'campaign'")
    assert len(parents) == 1
    pid = parents[0]["info"]["run_id"]
    kids = _search(mlflow_server, exp["experiment_id"], f"tags.mlflow.parentRunId = '{pid}'")
    rounds = [k for k in kids if _tags(k).get("labelloop.kind") == "round"]
    by_arm: dict[str, list[dict]] = {}
    for r in rounds:
        by_arm.setdefault(_tags(r)["labelloop.arm"], []).append(r)
    assert set(by_arm) == {"active", "random"}
    for arm, runs in by_arm.items():
        runs.sort(key=lambda r: int(_tags(r)["labelloop.round"]))
        assert [int(_tags(r)["labelloop.round"]) for r in runs] == [1, 2, 3], arm
        for r in runs:
            m = _metrics(r)
            assert {"test_macro_f1", "test_accuracy", "calibration_ece", "calibration_ece_after", "n_labels",
                    "labels_spent", "cost"} <= set(m), (arm, sorted(m))
            rid = r["info"]["run_id"]
            hist = _rest(mlflow_server, "metrics/get-history", {"run_id": rid, "metric_key": "test_macro_f1"})
            assert [h["step"] for h in hist["metrics"]] == [int(m["n_labels"])], "stepped by label count"
            arts = _rest(mlflow_server, "artifacts/list", {"run_id": rid, "path": "plots"}).get("files", [])
            pngs = {a["path"] for a in arts if a["path"].endswith(".png")}
            assert {"plots/confusion_matrix.png", "plots/reliability_diagram.png",
                    "plots/learning_curve.png"} <= pngs, (arm, pngs)
            root = {a["path"] for a in _rest(mlflow_server, "artifacts/list", {"run_id": rid}).get("files", [])}
            # the queried batch as a table, in every round that queried (the last one spends no more labels)
            assert ("queried_batch.json" in root) == (m["n_queried"] > 0), (arm, m["n_queried"], root)
            assert "labelloop.calibration_gate" in _tags(r)
        assert _metrics(runs[0])["n_queried"] > 0, arm
        assert [int(_metrics(r)["n_labels"]) for r in runs] == [25, 50, 75]
    # the parent run carries both learning curves, stepped by labels, and the learning-curve PNG
    for arm in ("active", "random"):
        hist = _rest(mlflow_server, "metrics/get-history", {"run_id": pid, "metric_key": f"{arm}_test_macro_f1"})
        assert sorted(h["step"] for h in hist["metrics"]) == [25, 50, 75]
    arts = _rest(mlflow_server, "artifacts/list", {"run_id": pid, "path": "plots"}).get("files", [])
    assert "plots/learning_curve.png" in {a["path"] for a in arts}

    # the drift run
    drifts = [k for k in kids if _tags(k).get("labelloop.kind") == "drift"]
    assert len(drifts) == 1
    assert _tags(drifts[0])["labelloop.drift"] == "detected"
    assert _metrics(drifts[0])["drift_domain_auc"] >= 0.75
    files = _rest(mlflow_server, "artifacts/list", {"run_id": drifts[0]["info"]["run_id"]}).get("files", [])
    assert {"drift_report.md", "drift_report.json"} <= {f["path"] for f in files}

    # champion = the best active round's registered version (moved only on improvement: first of ties)
    alias = _rest(mlflow_server, "registered-models/alias", {"name": "labelloop-ops-mlflow", "alias": "champion"})
    champion = alias["model_version"]
    versioned = [r for r in by_arm["active"] if "labelloop.model_version" in _tags(r)]
    assert versioned
    best = max(_metrics(r)["test_macro_f1"] for r in versioned)
    first_best = next(r for r in versioned if _metrics(r)["test_macro_f1"] == best)
    assert champion["version"] == _tags(first_best)["labelloop.model_version"]
    assert champion["run_id"] == first_best["info"]["run_id"]
