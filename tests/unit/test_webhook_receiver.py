"""The webhook receiver `labelloop serve` runs for Label Studio (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from labelloop.flows.batch_trigger import trigger_enabled
from labelloop.flows.config import CampaignConfig
from labelloop.integrations.webhook_receiver import WebhookReceiver, campaign_path


@pytest.fixture
def receiver():
    calls: list[tuple[str, str]] = []
    r = WebhookReceiver("127.0.0.1", 0, ["tickets", "a b/c"], lambda c, a: calls.append((c, a))).start()
    r.calls_seen = calls
    yield r
    r.stop()


def _post(url: str, body: bytes) -> int:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as res:
            return res.status
    except urllib.error.HTTPError as err:
        return err.code


def test_a_call_for_a_campaign_wakes_its_checker(receiver):
    url = receiver.base_url + campaign_path("tickets")
    assert _post(url, json.dumps({"action": "ANNOTATION_CREATED", "annotation": {"id": 1}}).encode()) == 204
    assert _post(receiver.base_url + campaign_path("a b/c"), b"not json") == 204
    assert receiver.calls_seen == [("tickets", "ANNOTATION_CREATED"), ("a b/c", "?")]


def test_unknown_paths_and_campaigns_are_refused(receiver):
    assert _post(receiver.base_url + campaign_path("other"), b"{}") == 404
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
