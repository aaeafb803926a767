"""The webhook receiver `labelloop serve` runs for Label Studio (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import json
import stat
import urllib.error
import urllib.request

import pytest

from labelloop.flows.batch_trigger import trigger_enabled
from labelloop.flows.config import CampaignConfig
from labelloop.integrations.webhook_receiver import SECRET_HEADER, WebhookReceiver, campaign_path, webhook_secret


SECRETS = {"tickets": "s3cret-tickets", "a b/c": "s3cret-abc"}


@pytest.fixture
def receiver():
    calls: list[tuple[str, str]] = []
    r = WebhookReceiver("127.0.0.1", 0, SECRETS, lambda c, a: calls.append((c, a))).start()
    r.calls_seen = calls
    yield r
    r.stop()


def _post(url: str, body: bytes, token: str | None = None) -> int:
    headers = {"Content-Type": "application/json", **({SECRET_HEADER: token} if token is not None else {})}
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as res:
            return res.status
    except urllib.error.HTTPError as err:
        return err.code


def test_a_call_for_a_campaign_wakes_its_checker(receiver):
    url = receiver.base_url + campaign_path("tickets")
    assert _post(url, json.dumps({"action": "ANNOTATION_CREATED", "annotation": {"id": 1}}).encode(),
                 SECRETS["tickets"]) == 204
    assert _post(receiver.base_url + campaign_path("a b/c"), b"not json", SECRETS["a b/c"]) == 204
    assert receiver.calls_seen == [("tickets", "ANNOTATION_CREATED"), ("a b/c", "?")]


def test_a_call_without_the_campaigns_secret_gets_401_and_wakes_nothing(receiver, caplog):
    url = receiver.base_url + campaign_path("tickets")
    assert _post(url, b"{}") == 401
    assert _post(url, b"{}", "") == 401
    assert _post(url, b"{}", SECRETS["a b/c"]) == 401, "another campaign's secret is not this one's"
    assert _post(url, b"{}", SECRETS["tickets"] + "x") == 401
    assert receiver.calls_seen == [] and receiver.refused == 4 and receiver.calls == 0
    assert not any(v in caplog.text for v in SECRETS.values()), "the secret is never logged"


def test_the_secret_is_generated_once_kept_private_or_read_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("LABELLOOP_WEBHOOK_SECRET", raising=False)
    first = webhook_secret(tmp_path, "LABELLOOP_WEBHOOK_SECRET")
    assert len(first) >= 40 and webhook_secret(tmp_path, "LABELLOOP_WEBHOOK_SECRET") == first
    path = tmp_path / ".labelloop-webhook-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "readable by its owner only"
    (tmp_path / "other").mkdir()
    assert webhook_secret(tmp_path / "other", None) != first, "another campaign folder, another secret"
    monkeypatch.setenv("LABELLOOP_WEBHOOK_SECRET", "from-the-environment")
    assert webhook_secret(tmp_path, "LABELLOOP_WEBHOOK_SECRET") == "from-the-environment"
    with pytest.raises(ValueError):
        WebhookReceiver("127.0.0.1", 0, {"t": ""}, lambda c, a: None)


def test_unknown_paths_and_campaigns_are_refused(receiver):
    assert _post(receiver.base_url + campaign_path("other"), b"{}", SECRETS["tickets"]) == 404
    assert _post(receiver.base_url + "/elsewhere", b"{}") == 404
    with urllib.request.urlopen(receiver.base_url + "/health", timeout=5) as res:
        assert res.status == 200
    assert receiver.calls_seen == []


def _cfg(backend: str, trigger: str = "") -> CampaignConfig:
    extra = {"label_studio": {"url": "http://127.0.0.1:1"}} if backend == "label_studio" else {}
    schedule = {"batch_trigger": trigger == "on"} if trigger else {}
    return CampaignConfig.model_validate({
        "name": "t", "data": {"path": "x.csv"}, "labels": {"names": ["a", "b"]},
        "annotation": {"backend": backend, **extra}, "schedule": schedule})


def test_the_trigger_is_on_for_label_studio_unless_configured():
    assert trigger_enabled(_cfg("label_studio"))
    assert not trigger_enabled(_cfg("simulated")), "answers arrive at once: `labelloop run` goes round after round"
    assert trigger_enabled(_cfg("simulated", "on"))
    assert not trigger_enabled(_cfg("label_studio", "off"))


def test_status_says_whether_and_how_rounds_are_batch_triggered():
    from labelloop.flows.config import round_triggers

    ls = round_triggers(_cfg("label_studio"))
    assert (ls["batch_trigger"], ls["how"]) == (True, "webhook+polling")
    assert "webhook" in ls["sentence"] and "every 30 s" in ls["sentence"] and "shared secret" in ls["sentence"]
    sim = round_triggers(_cfg("simulated"))
    assert (sim["batch_trigger"], sim["how"]) == (False, None) and sim["sentence"].startswith("not batch-triggered")
    forced = round_triggers(_cfg("simulated", "on"))
    assert (forced["batch_trigger"], forced["how"]) == (True, "polling")
    off = round_triggers(_cfg("label_studio", "off"))
    assert off["how"] is None and "batch_trigger = false" in off["sentence"]
    assert "cron '0 6 * * 1-5'" in off["sentence"]
