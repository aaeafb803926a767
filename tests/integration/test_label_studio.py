"""Label Studio backend and simulated crowd against a real Label Studio 1.23 server.

No mocks: the session fixture ``label_studio`` starts the server with
infra/label_studio.sh (or reuses LABELLOOP_LS_URL + LABEL_STUDIO_API_KEY).
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from labelloop.integrations.backend import AnnotationBackend, BackendError, TaskRequest
from labelloop.integrations.label_studio import (
    LabelStudioBackend,
    batch_complete,
    choices_result,
    extract_choices,
    label_config,
    resolve_api_key,
)
from labelloop.integrations.label_studio_crowd import (
    SimAnnotator,
    answer_open_tasks,
    assign,
    default_annotators,
    simulated_answer,
)

REPO = Path(__file__).resolve().parents[2]


def ls(test):
    """Mark a test that needs the real Label Studio server."""
    return pytest.mark.integration(pytest.mark.label_studio(test))

TRICKY = ['a"b', "<x>", "R&D"]
LABELS = ["pos", "neg", "neutral"]


def _backend(label_studio, labels=LABELS, overlap=1, **kw) -> LabelStudioBackend:
    url, token = label_studio
    return LabelStudioBackend(url, token, f"test-{uuid.uuid4().hex[:10]}", labels, overlap, **kw)


def _tasks(n: int, labels=LABELS, prefix="item") -> list[TaskRequest]:
    return [
        TaskRequest(
            item_id=f"{prefix}-{i}",
            text=f"text number {i}",
            predicted_label=labels[i % len(labels)],
            confidence=0.5 + (i % 5) / 10,
            model_version="run-123",
            is_gold=(i % 7 == 0),
        )
        for i in range(n)
    ]


def _ls_tasks(backend: LabelStudioBackend) -> list:
    return list(backend.client.tasks.list(project=backend.project_id, fields="all"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cleanup():
    made: list[LabelStudioBackend] = []
    yield made.append
    for b in made:
        try:
            b.delete_project()
        except BackendError:
            pass


# --------------------------------------------------------------------------- pure functions


def test_label_config_escapes_labels_without_injection():
    evil = 'x"/><Choice value="injected'
    xml = label_config(TRICKY + [evil], instructions='Read <b>this</b> & "that"')
    root = ET.fromstring(xml)  # well-formed
    choices = root.find("Choices")
    assert choices.get("name") == "label" and choices.get("toName") == "text"
    assert choices.get("choice") == "single"
    assert [c.get("value") for c in choices.findall("Choice")] == TRICKY + [evil]
    assert root.find("Header").get("value") == 'Read <b>this</b> & "that"'
    assert len(root.findall(".//Choice")) == 4 and root.find(".//b") is None


def test_label_config_rejects_bad_label_sets():
    for bad in ([], ["a", "a"], ["a", ""], "ab"):
        with pytest.raises(ValueError):
            label_config(bad)


def test_crowd_is_deterministic_and_spreads_overlap():
    annotators = default_annotators(5, 0.7)
    picks = [tuple(a.name for a in assign(f"i{i}", annotators, 3, seed=7)) for i in range(300)]
    assert all(len(set(p)) == 3 for p in picks)
    assert picks == [tuple(a.name for a in assign(f"i{i}", annotators, 3, seed=7)) for i in range(300)]
    load = Counter(n for p in picks for n in p)
    assert min(load.values()) > 0.7 * 180  # roughly balanced (expected 180 each)
    a = SimAnnotator("annotator1", 0.8)
    answers = [simulated_answer(f"i{i}", "pos", LABELS, a, seed=3) for i in range(2000)]
    assert answers == [simulated_answer(f"i{i}", "pos", LABELS, a, seed=3) for i in range(2000)]
    assert 0.76 < answers.count("pos") / 2000 < 0.84
    assert set(answers) == set(LABELS)
    skips = [simulated_answer(f"i{i}", "pos", LABELS, a, seed=3, skip_rate=0.2) for i in range(2000)]
    assert 0.17 < skips.count(None) / 2000 < 0.23
    with pytest.raises(ValueError):
        assign("i", annotators[:2], 3, seed=1)


def test_batch_complete_and_choice_extraction():
    assert extract_choices(choices_result("R&D")) == ["R&D"]
    assert extract_choices([]) == []
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    assert batch_complete([], ["1"], 2, deadline=past)
    assert not batch_complete([], ["1"], 2, deadline=past + timedelta(hours=1))


def test_resolve_api_key_prefers_explicit_then_env(monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "from-env")
    assert resolve_api_key("explicit") == "explicit"
    assert resolve_api_key() == "from-env"


# --------------------------------------------------------------------------- real server


@ls
def test_backend_satisfies_protocol(label_studio):
    assert isinstance(_backend(label_studio), AnnotationBackend)


@ls
def test_tricky_labels_round_trip(label_studio, cleanup):
    b = _backend(label_studio, labels=TRICKY, overlap=1, instructions="Pick <one> & only one")
    cleanup(b)
    assert b.project_labels() == TRICKY
    stored = b.client.projects.get(b.project_id)
    assert stored.label_config == label_config(TRICKY, "Pick <one> & only one")
    ids = b.push(_tasks(3, labels=TRICKY))
    # prediction (pre-annotation) survived too
    preds = {t.data["item_id"]: t.predictions[0] for t in _ls_tasks(b)}
    assert extract_choices(_as_dict(preds["item-1"])["result"]) == ["<x>"]
    truth = {f"item-{i}": TRICKY[i] for i in range(3)}
    n = answer_open_tasks(b, truth, [SimAnnotator("annotator1", 1.0)], overlap=1, seed=0)
    assert n == 3
    got = {a.item_id: a.label for a in b.pull()}
    assert got == truth
    assert set(ids) == set(truth)


@ls
def test_push_is_idempotent(label_studio, cleanup):
    b = _backend(label_studio)
    cleanup(b)
    tasks = _tasks(30)
    first = b.push(tasks[:12])  # a push that "died" after 12 items
    full = b.push(tasks)
    again = b.push(tasks)
    assert len(full) == 30 and full == again
    assert all(full[k] == v for k, v in first.items())
    ls = _ls_tasks(b)
    assert len(ls) == 30
    assert sorted(t.data["item_id"] for t in ls) == sorted(t.item_id for t in tasks)
    # gold flag never reaches Label Studio; prediction does
    for t in ls:
        assert set(t.data) == {"text", "item_id"}
        assert "gold" not in json.dumps(t.meta or {})
        p = _as_dict(t.predictions[0])
        assert p["model_version"] == "run-123" and p["score"] is not None
    # a second backend object (e.g. the next round's process) finds the same project
    other = LabelStudioBackend(b.url, label_studio[1], b.project_title, LABELS, 1)
    assert other.project_id == b.project_id and other.push(tasks[:3]) == {k: full[k] for k in list(full)[:3]}


@ls
def test_crowd_of_three_gives_90_annotations_with_identities(label_studio, cleanup):
    b = _backend(label_studio, overlap=3)
    cleanup(b)
    tasks = _tasks(30)
    ids = b.push(tasks)
    truth = {t.item_id: LABELS[(i * 7) % 3] for i, t in enumerate(tasks)}
    annotators = default_annotators(3, [0.9, 0.7, 0.5])
    t0 = time.monotonic()
    assert answer_open_tasks(b, truth, annotators, overlap=3, seed=11) == 90
    elapsed = time.monotonic() - t0
    assert answer_open_tasks(b, truth, annotators, overlap=3, seed=11) == 0  # nothing left to do

    pulled = b.pull()
    assert len(pulled) == 90 and len({a.backend_annotation_id for a in pulled}) == 90
    per_task = defaultdict(set)
    for a in pulled:
        assert a.status == "submitted" and a.item_id in truth and ids[a.item_id] == a.backend_task_id
        per_task[a.backend_task_id].add(a.annotator)
        expected = simulated_answer(a.item_id, truth[a.item_id], LABELS, _by_email(annotators, a.annotator), 11)
        assert a.label == expected
    assert all(v == {x.email for x in annotators} for v in per_task.values())

    # what the API shows (raw annotations + users) equals what pull reports
    users = {u.id: u.email for u in b.client.users.list()}
    api = {}
    for t in _ls_tasks(b):
        for raw in t.annotations:
            raw = _as_dict(raw)
            api[str(raw["id"])] = (users[raw["completed_by"]], extract_choices(raw["result"])[0])
    assert api == {a.backend_annotation_id: (a.annotator, a.label) for a in pulled}
    acc = Counter(a.annotator for a in pulled if a.label == truth[a.item_id])
    assert acc["annotator1@labelloop.local"] >= acc["annotator3@labelloop.local"]
    assert b.is_batch_complete(list(ids.values()))
    print(f"crowd: 90 annotations in {elapsed:.1f} s")


@ls
def test_edited_annotation_keeps_id_and_shows_new_label(label_studio, cleanup):
    b = _backend(label_studio)
    cleanup(b)
    b.push(_tasks(2))
    answer_open_tasks(b, {"item-0": "pos", "item-1": "neg"}, [SimAnnotator("annotator1", 1.0)], 1, seed=0)
    before = {a.item_id: a for a in b.pull()}
    ann = before["item-0"]
    assert ann.label == "pos" and not b.is_batch_complete([ann.backend_task_id], overlap=2)
    time.sleep(0.05)
    b.client.annotations.update(int(ann.backend_annotation_id), result=choices_result("neutral"))
    after = {a.item_id: a for a in b.pull()}
    assert after["item-0"].backend_annotation_id == ann.backend_annotation_id
    assert after["item-0"].label == "neutral" and after["item-0"].annotator == ann.annotator
    assert after["item-0"].updated_at > ann.updated_at and after["item-0"].created_at == ann.created_at
    assert after["item-1"] == before["item-1"]


@ls
def test_skipped_and_invalid_annotations(label_studio, cleanup, caplog):
    b = _backend(label_studio)
    cleanup(b)
    ids = b.push(_tasks(3))
    answer_open_tasks(b, {"item-0": "pos"}, [SimAnnotator("annotator1", 1.0)], 1, seed=0, skip_rate=1.0)
    # two values where one is expected (e.g. written through the API, bypassing choice="single")
    multi = [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["pos", "neg"]}}]
    bad = b.client.annotations.create(id=int(ids["item-1"]), result=multi)
    b.client.annotations.create(id=int(ids["item-2"]), result=choices_result("not-a-label"))
    with caplog.at_level(logging.WARNING):
        got = {a.item_id: a for a in b.pull()}
    assert got["item-0"].status == "skipped" and got["item-0"].label is None
    assert got["item-0"].annotator == "annotator1@labelloop.local"
    assert got["item-1"].status == "invalid" and got["item-1"].label is None
    assert got["item-2"].status == "invalid" and got["item-2"].label is None
    assert f"annotation {bad.id} " in caplog.text


@ls
def test_deleted_task_does_not_break_pull_or_close(label_studio, cleanup):
    b = _backend(label_studio)
    cleanup(b)
    ids = b.push(_tasks(5))
    truth = {f"item-{i}": LABELS[i % 3] for i in range(5)}
    answer_open_tasks(b, truth, [SimAnnotator("annotator1", 1.0)], 1, seed=0)
    b.client.tasks.delete(ids["item-2"])
    pulled = b.pull()
    assert len(pulled) == 4 and "item-2" not in {a.item_id for a in pulled}
    b.close_tasks([ids["item-2"], ids["item-3"]])  # deleted one is ignored
    assert b.client.tasks.get(ids["item-3"]).is_labeled
    assert ids["item-2"] not in b.existing_tasks().values()
    # pushing again recreates only the deleted item
    again = b.push(_tasks(5))
    assert len(_ls_tasks(b)) == 5 and again["item-0"] == ids["item-0"] and again["item-2"] != ids["item-2"]


@ls
def test_an_extra_answer_asked_for_and_given_up_leaves_the_labelling_stream(label_studio, cleanup):
    """A team of two with overlap 2: an unsure item asks for a third answer nobody can give; once it
    is given up, the task's overlap is back to 2 and it is labelled again (no longer offered)."""
    b = _backend(label_studio, overlap=2)
    cleanup(b)
    b.push(_tasks(2))
    team = [SimAnnotator("annotator1", 1.0), SimAnnotator("annotator2", 1.0)]
    assert answer_open_tasks(b, {"item-0": "pos", "item-1": "neg"}, team, overlap=2, seed=0) == 4
    assert b.request_more(["item-0"], max_overlap=5) == {"item-0": 3}
    tid = int(b.task_overlaps()["item-0"][0])
    assert not b.client.tasks.get(tid).is_labeled  # offered to a third annotator
    assert answer_open_tasks(b, {"item-0": "pos"}, team, overlap=3, seed=0) == 0  # nobody left to give it
    assert b.withdraw_requests({"item-0": 2, "item-1": 2}) == 1  # item-1 was never raised
    assert b.task_overlaps()["item-0"][1] == 2 and b.client.tasks.get(tid).is_labeled
    assert b.withdraw_requests({"item-0": 2}) == 0  # idempotent


@ls
def test_answers_deleted_or_edited_away_in_label_studio_stop_counting(label_studio, cleanup, tmp_path):
    """A manager deletes a spammer's annotation; an annotator clears their choice. Both answers were
    pulled before: the next pull withdraws them (kept as history, no label), and the other answers stay."""
    from types import SimpleNamespace

    from labelloop.flows.stages import pull_annotations
    from labelloop.integrations.ledger import Ledger

    b = _backend(label_studio, overlap=2)
    cleanup(b)
    ids = b.push(_tasks(3))
    led = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", "c")
    led.record_tasks("label_studio", 1, ids)
    c = SimpleNamespace(ledger=led, backend=b, labels=LABELS)
    team = [SimAnnotator("annotator1", 1.0), SimAnnotator("annotator2", 1.0)]
    truth = {"item-0": "pos", "item-1": "neg", "item-2": "neutral"}
    assert answer_open_tasks(b, truth, team, overlap=2, seed=0) == 6
    first = pull_annotations.fn(c, 1)
    assert (first["inserted"], first["withdrawn"]) == (6, 0)
    by_item: dict[str, list] = defaultdict(list)
    for a in b.pull():
        by_item[a.item_id].append(a)
    b.client.annotations.delete(int(by_item["item-0"][0].backend_annotation_id))
    b.client.annotations.update(int(by_item["item-1"][0].backend_annotation_id), result=[])
    again = pull_annotations.fn(c, 2)
    assert again["withdrawn"] == 2, again
    ann = led.annotations_frame()
    gone = {by_item["item-0"][0].backend_annotation_id, by_item["item-1"][0].backend_annotation_id}
    assert set(ann.loc[ann["status"] == "withdrawn", "backend_annotation_id"]) == gone
    assert ann.loc[ann["status"] == "withdrawn", "label"].isna().all()
    assert len(led.annotations_frame(submitted_only=True)) == 4
    assert pull_annotations.fn(c, 3)["withdrawn"] == 0  # idempotent
    # the cleared answer is given again: it counts again
    b.client.annotations.update(int(by_item["item-1"][0].backend_annotation_id), result=choices_result("neg"))
    assert pull_annotations.fn(c, 3)["updated"] == 1 and len(led.annotations_frame(submitted_only=True)) == 5
    # a task deleted by hand withdraws nothing: its answers are kept as they were
    b.client.tasks.delete(int(ids["item-2"]))
    assert pull_annotations.fn(c, 4)["withdrawn"] == 0 and len(led.annotations_frame(submitted_only=True)) == 5
    # a new label set ("neg" dropped): item-1's two "neg" answers come back invalid from a pull that
    # checks today's labels, unchanged; they keep their stored label for the [[labels.previous]] mapping
    url, token = label_studio
    renamed = LabelStudioBackend(url, token, b.project_title, ["pos", "neutral"], 2)
    c.backend, c.labels = renamed, ["pos", "neutral"]
    assert sum(a.status == "invalid" for a in renamed.pull()) == 2
    kept = pull_annotations.fn(c, 5)
    assert kept["withdrawn"] == 0, kept
    ann = led.annotations_frame(submitted_only=True)
    assert len(ann) == 5 and (ann["label"] == "neg").sum() == 2


@ls
def test_unreachable_label_studio_raises_token_free_error(label_studio, caplog):
    token = label_studio[1]
    url = f"http://127.0.0.1:{_closed_port()}"
    b = LabelStudioBackend(url, token, "campaign-x", LABELS, 1)
    assert token not in repr(b)
    caplog.set_level(logging.DEBUG)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as err:
        b.push(_tasks(25))
    elapsed = time.monotonic() - t0
    assert elapsed < 30
    msg = str(err.value)
    assert msg.startswith(f"Label Studio at {url} did not answer while pushing 25 tasks to project 'campaign-x'")
    assert token not in msg and token not in repr(err.value) and token not in caplog.text
    assert err.value.__cause__ is None  # SDK internals are not chained in
    # a small budget is honoured too
    quick = LabelStudioBackend(url, token, "campaign-x", LABELS, 1, retry_budget=2.0)
    t0 = time.monotonic()
    with pytest.raises(BackendError):
        quick.pull()
    assert time.monotonic() - t0 < 5


@ls
def test_wrong_token_is_reported_without_retries(label_studio, caplog):
    url = label_studio[0]
    bogus = "0123456789abcdef" * 2 + "deadbeef"
    b = LabelStudioBackend(url, bogus, "campaign-x", LABELS, 1)
    caplog.set_level(logging.DEBUG)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as err:
        b.pull()
    assert time.monotonic() - t0 < 5
    assert "refused the API key" in str(err.value) and "401" in str(err.value)
    assert bogus not in str(err.value) and bogus not in caplog.text


@ls
def test_annotators_with_their_own_tokens(label_studio, cleanup):
    if label_studio.data_dir is None:
        pytest.skip("per-user tokens are minted through the ORM of a server this session started")
    emails = ["tokenuser1@labelloop.local", "tokenuser2@labelloop.local"]
    out = subprocess.run(
        [str(REPO / "infra" / "label_studio.sh"), "annotator-tokens", *emails],
        env=label_studio.env, capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    creds = json.loads(out)["annotators"]
    annotators = [SimAnnotator(e, 1.0, token=creds[e]["token"]) for e in emails]
    assert creds[emails[0]]["token"] not in repr(annotators[0])
    b = _backend(label_studio, overlap=2)
    cleanup(b)
    b.push(_tasks(2))
    assert answer_open_tasks(b, {"item-0": "pos", "item-1": "neg"}, annotators, 2, seed=0) == 4
    for t in _ls_tasks(b):
        for raw in t.annotations:
            raw = _as_dict(raw)
            assert raw["completed_by"] == raw["updated_by"]  # recorded by the user itself
            assert raw["completed_by"] in {creds[e]["id"] for e in emails}
    assert {a.annotator for a in b.pull()} == set(emails)


@ls
def test_start_script_is_idempotent_and_refuses_busy_port(label_studio, tmp_path):
    if label_studio.data_dir is None:
        pytest.skip("the server was not started by this session")
    script = str(REPO / "infra" / "label_studio.sh")
    port = label_studio.url.rsplit(":", 1)[1]
    again = subprocess.run([script, "start", "--port", port], env=label_studio.env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "already running" in again.stderr
    status = subprocess.run([script, "status"], env=label_studio.env, capture_output=True, text=True, timeout=30)
    assert status.returncode == 0 and "healthy" in status.stdout
    other_env = {**label_studio.env, "LABELLOOP_LS_DATA": str(tmp_path / "other")}
    busy = subprocess.run([script, "start", "--port", port], env=other_env,
                          capture_output=True, text=True, timeout=60)
    assert busy.returncode != 0 and f"port {port}" in busy.stderr and "already in use" in busy.stderr
    stop_idle = subprocess.run([script, "stop"], env=other_env, capture_output=True, text=True, timeout=30)
    assert stop_idle.returncode == 0 and "not running" in stop_idle.stderr
    creds = label_studio.data_dir / "credentials.env"
    assert oct(creds.stat().st_mode & 0o777) == "0o600"


# --------------------------------------------------------------------------- helpers


def _as_dict(obj):
    return obj if isinstance(obj, dict) else obj.model_dump()


def _by_email(annotators, email):
    return next(a for a in annotators if a.email == email)
