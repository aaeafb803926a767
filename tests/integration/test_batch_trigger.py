"""A round when the batch is done (issue 17), against real Label Studio and Prefect servers.

``labelloop serve`` with no cron: annotations submitted through Label Studio's API that complete
the open batch lead to a COMPLETED round flow run within 60 s -- by Label Studio's webhook for one
campaign, and for a campaign whose webhook calls cannot reach labelloop, by the polling check
within its interval. One serve process and the session's servers carry both.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from labelloop.flows.runtime import open_campaign
from tests.conftest import ROOT, stop_group, write_small_campaign

pytestmark = [pytest.mark.integration, pytest.mark.label_studio, pytest.mark.timeout(600)]

POLL = 10  # the blocked campaign's polling interval (seconds)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _campaign(folder: Path, url: str, name: str, schedule: str) -> Path:
    cfg = _write(folder, url, name, schedule)
    # one arm and no model registry: the round stays small, the test is about what starts it
    cfg.write_text(cfg.read_text().replace("[query]\n", "[query]\nrandom_arm = false\n")
                   + "[mlflow]\nregister_model = false\n")
    return cfg


def _write(folder: Path, url: str, name: str, schedule: str) -> Path:
    return write_small_campaign(folder, name=name, n=480, budget=40, batch=10, seed_size=10,
                                backend="label_studio", extra=f'''
[annotation.simulated]
annotators = [{{ name = "ann-1", accuracy = 0.95 }}, {{ name = "ann-2", accuracy = 0.9 }}, {{ name = "ann-3", accuracy = 0.85 }}]
[annotation.label_studio]
url = "{url}"
project_title = "labelloop test {name}"
[schedule]
round_cron = ""
drift_cron = ""
{schedule}
''')


def _log(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _wait(what: str, fn, timeout: float, log: Path, serve: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert serve.poll() is None, f"serve exited:\n{_log(log)}"
        got = fn()
        if got:
            return got
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{_log(log)}")


def _round_runs(campaign: str) -> list:
    """Flow runs of the deployment ``labelloop-round/<campaign>``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["labelloop-round"])),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[campaign])))


def _answer(cfg: Path) -> datetime:
    """The three annotators answer the open batch through Label Studio's API; returns when they were done."""
    from labelloop.integrations.label_studio_crowd import SimAnnotator, answer_open_tasks

    c = open_campaign(cfg)
    truth = {r.item_id: r.known_label for r in c.ledger.items_frame().itertuples() if r.known_label}
    crowd = [SimAnnotator(a.name, a.accuracy) for a in c.cfg.annotation.simulated.annotators]
    assert answer_open_tasks(c.backend, truth, crowd, overlap=3, seed=0) == 3 * 10
    return datetime.now(timezone.utc)


def test_a_completed_batch_starts_a_round_by_webhook_and_by_polling(prefect_api, label_studio, tmp_path: Path,
                                                                     monkeypatch):
    from prefect.client.orchestration import get_client

    from labelloop.flows.setup import ensure_setup

    url, token = label_studio
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", token)
    tag = uuid.uuid4().hex[:6]
    hook, blocked = f"trig-hook-{tag}", f"trig-poll-{tag}"
    hook_cfg = _campaign(tmp_path / "hook", url, hook, "batch_poll_seconds = 3600   # only the webhook can be quick")
    poll_cfg = _campaign(tmp_path / "poll", url, blocked,
                         f'batch_poll_seconds = {POLL}\nwebhook_url = "http://127.0.0.1:{_closed_port()}"')
    for cfg in (hook_cfg, poll_cfg):
        c = open_campaign(cfg)
        ensure_setup(c)  # the seed batch is in Label Studio, unanswered
        c.tracker  # noqa: B018 - the MLflow store exists (its one-time creation is no part of the trigger's minute)

    log = tmp_path / "serve.log"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "LABEL_STUDIO_API_KEY": token,
           "PREFECT_RUNNER_POLL_FREQUENCY": "1", "PREFECT_LOGGING_LEVEL": "INFO"}
    with open(log, "wb") as fh:
        serve = subprocess.Popen([sys.executable, "-m", "labelloop.flows.cli", "serve", str(hook_cfg), str(poll_cfg)],
                                 cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # the watchers start once the deployments and their automations are registered
        _wait("the webhook registrations", lambda: log.read_text(errors="replace").count("Label Studio calls") == 2,
              180, log, serve)
        with get_client(sync_client=True) as client:
            for name in (hook, blocked):
                dep = client.read_deployment_by_name(f"labelloop-round/{name}")
                assert not dep.schedules, "no cron: only the completed batch can start this round"
        hooks = open_campaign(hook_cfg).backend.client.webhooks.list(
            project=str(open_campaign(hook_cfg).backend.project_id))
        assert [h.url for h in hooks] and all(h.url.endswith(f"/label-studio/{hook}") for h in hooks)
        # the shared secret: generated by labelloop into the campaign folder (mode 600), registered with
        # Label Studio as a header, never printed; a call without it is refused
        secret_file = tmp_path / "hook" / ".labelloop-webhook-secret"
        secret = secret_file.read_text().strip()
        assert len(secret) >= 40 and (secret_file.stat().st_mode & 0o777) == 0o600
        assert all((h.headers or {}).get("X-Labelloop-Token") == secret for h in hooks), "registered as a header"
        assert secret not in log.read_text(errors="replace"), "the secret is never logged"
        import re
        import urllib.error
        import urllib.request

        hook_url = re.search(r"Label Studio calls (\S+/label-studio/" + re.escape(hook) + ")",
                             log.read_text(errors="replace")).group(1)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(hook_url, data=b"{}", method="POST"), timeout=5)
        assert refused.value.code == 401, "a call without the secret is refused"
        assert not _round_runs(hook), "nothing runs before the batch is answered"

        # 1. webhook: the last answer of the seed batch -> a COMPLETED round within 60 s
        done_at = _answer(hook_cfg)

        def completed(name: str):
            runs = [r for r in _round_runs(name) if r.state and r.state.type.value == "COMPLETED"]
            return runs or None

        run = _wait("a round started by the webhook", lambda: completed(hook), 90, log, serve)[0]
        took = (run.end_time - done_at).total_seconds()
        print(f"webhook: round COMPLETED {took:.1f} s after the batch was answered")
        assert took <= 60, f"the round finished {took:.0f} s after the batch was answered\n{_log(log)}"
        assert not run.auto_scheduled
        text = log.read_text(errors="replace")
        assert f"campaign {hook}: seed answered" in text and "found by webhook" in text, _log(log)
        c = open_campaign(hook_cfg)
        assert c.ledger.get_round("active", 1).status == "done"
        assert len(_round_runs(hook)) == 1, "one batch, one round"

        # 2. webhooks blocked (Label Studio cannot reach the address it was given): polling does it
        done_at = _answer(poll_cfg)
        run = _wait("a round started by polling", lambda: completed(blocked), POLL + 90, log, serve)[0]
        took = (run.end_time - done_at).total_seconds()
        print(f"polling: round COMPLETED {took:.1f} s after the batch was answered")
        assert took <= POLL + 60, f"the polled round finished {took:.0f} s after the batch was answered\n{_log(log)}"
        assert f"campaign {blocked}: seed answered" in log.read_text(errors="replace")
        assert "found by poll" in log.read_text(errors="replace"), _log(log)
        assert open_campaign(poll_cfg).ledger.get_round("active", 1).status == "done"
        assert secret not in log.read_text(errors="replace"), "the secret is never logged"
    finally:
        stop_group(serve)
