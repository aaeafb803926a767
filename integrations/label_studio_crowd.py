"""Simulated annotators that work through a real Label Studio server as real users.

Each :class:`SimAnnotator` is a Label Studio user (``annotator1`` ->
``annotator1@labelloop.local``, named e.g. "Ada Okafor" by :func:`tasks.annotate.person_name`),
created on first use, so Label Studio's UI and API show who labelled what, exactly as with
human annotators. Each answer is sent with a ``lead_time`` (:func:`tasks.annotate.simulated_lead_time`).

Identity, verified against Label Studio 1.23.2:

* Default: the backend's (admin) token records every annotation and passes
  ``completed_by=<user id>``; the server keeps ``completed_by`` from the request
  body, so the annotation belongs to that user (``updated_by`` shows the admin).
* Per-user tokens: give ``SimAnnotator(token=...)`` and that annotator acts with
  its own token (``completed_by`` and ``updated_by`` are then the user itself).
  Label Studio has no API for an admin to read another user's token and ignores
  passwords in ``POST /api/users``, so for a local server mint them with
  ``infra/label_studio.sh annotator-tokens annotator1@labelloop.local ...``
  (Django ORM; prints JSON).

Answers are deterministic per ``(seed, item_id, annotator)``: correct with
probability ``accuracy``, otherwise a uniformly chosen wrong label; with
probability ``skip_rate`` the annotator skips (a cancelled annotation).
Each item gets ``overlap`` distinct annotators chosen by a seeded hash of the item
id (so load spreads evenly and a rerun picks the same people). Re-running
:func:`answer_open_tasks` only fills what is missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from labelloop.integrations.backend import BackendError
from labelloop.integrations.label_studio import LabelStudioBackend, choices_result
from labelloop.tasks.annotate import assign_annotators, person_name, simulated_lead_time, stable_uniform
from labelloop.tasks.annotate import simulated_answer as _answer

log = logging.getLogger(__name__)

EMAIL_DOMAIN = "labelloop.local"


@dataclass(frozen=True)
class SimAnnotator:
    name: str
    accuracy: float
    token: str | None = field(default=None, repr=False)  # optional per-user API token

    def __post_init__(self) -> None:
        if not 0.0 <= self.accuracy <= 1.0:
            raise ValueError(f"accuracy must be in [0, 1], got {self.accuracy}")

    @property
    def email(self) -> str:
        return self.name if "@" in self.name else f"{self.name}@{EMAIL_DOMAIN}"


def default_annotators(k: int, accuracy: float | Sequence[float] = 0.85) -> list[SimAnnotator]:
    """``annotator1`` … ``annotatorK`` with one accuracy or one per annotator."""
    accs = [accuracy] * k if isinstance(accuracy, (int, float)) else list(accuracy)
    if len(accs) != k:
        raise ValueError("one accuracy per annotator")
    return [SimAnnotator(f"annotator{i + 1}", float(a)) for i, a in enumerate(accs)]


def assign(item_id: str, annotators: Sequence[SimAnnotator], overlap: int, seed: int) -> list[SimAnnotator]:
    """The ``overlap`` distinct annotators who answer ``item_id``.

    Same choice as the in-memory simulated backend (tasks.annotate), so a
    campaign gets the same crowd whichever backend carries it.
    """
    if overlap > len(annotators):
        raise ValueError(f"overlap {overlap} needs at least {overlap} annotators, got {len(annotators)}")
    by_name = {a.name: a for a in annotators}
    return [by_name[n] for n in assign_annotators(item_id, list(by_name), overlap, seed)]


def simulated_answer(
    item_id: str, true_label: str, labels: Sequence[str], annotator: SimAnnotator, seed: int, skip_rate: float = 0.0
) -> str | None:
    """The label ``annotator`` gives ``item_id`` (``None`` = skipped). Deterministic, and equal to
    the in-memory simulated backend's answer for the same annotator name and seed."""
    if skip_rate > 0 and stable_uniform(seed, "skip", item_id, annotator.name) < skip_rate:
        return None
    return _answer(item_id, annotator.name, annotator.accuracy, true_label, labels, seed)


def ensure_users(backend: LabelStudioBackend, annotators: Sequence[SimAnnotator]) -> dict[str, int]:
    """Find or create a Label Studio user per annotator; e-mail -> user id.

    Each gets a readable first and last name (:func:`tasks.annotate.person_name`), so Label
    Studio's task list shows distinct initials; users created by an earlier labelloop (first name
    = the annotator's name, no last name) are renamed once."""

    def go(att: Any) -> dict[str, int]:
        client = backend.client
        users = {(u.email or "").lower(): u for u in client.users.list(request_options=att.request_options())}
        out: dict[str, int] = {}
        for a in annotators:
            first, last = person_name(a.name)
            user = users.get(a.email.lower())
            if user is None:
                user = client.users.create(
                    username=a.email.split("@")[0],
                    email=a.email,
                    first_name=first,
                    last_name=last,
                    request_options=att.request_options(),
                )
                log.info("created Label Studio user %s (%s %s, id %d)", a.email, first, last, int(user.id))
            elif not (user.last_name or "").strip():
                client.users.update(int(user.id), first_name=first, last_name=last,
                                    request_options=att.request_options())
            out[a.email] = int(user.id)
        return out

    ids = backend._call(f"creating {len(annotators)} annotator users", go)
    backend.user_emails(refresh=True)
    return ids


class _Submitter:
    """Posts annotations, either with the backend's client (+completed_by) or per-user clients."""

    def __init__(self, backend: LabelStudioBackend, user_ids: Mapping[str, int]) -> None:
        self.backend = backend
        self.user_ids = user_ids
        self._clients: dict[str, Any] = {}

    def _client_for(self, a: SimAnnotator) -> Any:
        if not a.token:
            return self.backend.client
        if a.email not in self._clients:
            from label_studio_sdk import LabelStudio

            self._clients[a.email] = LabelStudio(
                base_url=self.backend.url, api_key=a.token, timeout=self.backend.timeout, max_retries=0
            )
        return self._clients[a.email]

    def submit(self, task_id: str, a: SimAnnotator, label: str | None, lead_time: float) -> None:
        kwargs: dict[str, Any] = {"lead_time": lead_time}
        if label is None:
            kwargs.update(result=[], was_cancelled=True)
        else:
            kwargs.update(result=choices_result(label), was_cancelled=False)
        if not a.token:
            kwargs["completed_by"] = self.user_ids[a.email]
        client = self._client_for(a)

        def go(att: Any) -> None:
            client.annotations.create(id=int(task_id), **kwargs, request_options=att.request_options())

        self.backend._call(f"recording {a.email}'s annotation of task {task_id}", go)


def answer_open_tasks(
    backend: LabelStudioBackend,
    true_labels: Mapping[str, str],
    annotators: Sequence[SimAnnotator],
    overlap: int,
    seed: int,
    skip_rate: float = 0.0,
) -> int:
    """Answer every task of the backend's project that still lacks an answer from one of
    its assigned annotators; return how many annotations were submitted.

    Items without a known true label are left for humans (and logged)."""
    if not 0.0 <= skip_rate <= 1.0:
        raise ValueError("skip_rate must be in [0, 1]")
    if len({a.email for a in annotators}) != len(annotators):
        raise ValueError("annotator names must be distinct")
    labels = backend.labels
    unknown = {lab for lab in true_labels.values() if lab not in labels}
    if unknown:
        raise ValueError(f"true labels not in the project's labels: {sorted(unknown)}")

    user_ids = ensure_users(backend, annotators)
    overlaps = backend.task_overlaps()  # item_id -> (task id, answers the task asks for)
    tasks = {item: tid for item, (tid, _) in overlaps.items()}
    done: dict[str, set[str]] = {}
    for ann in backend.pull():
        done.setdefault(ann.backend_task_id, set()).add(ann.annotator.lower())

    submitter = _Submitter(backend, user_ids)
    submitted = 0
    no_truth = 0
    for item_id, task_id in sorted(tasks.items(), key=lambda kv: int(kv[1])):
        truth = true_labels.get(item_id)
        if truth is None:
            no_truth += 1
            continue
        # a task that adaptive redundancy raised asks for more: the next annotators in the same order
        wanted = min(max(overlap, overlaps[item_id][1]), len(annotators))
        for a in assign(item_id, annotators, wanted, seed):
            if a.email.lower() in done.get(task_id, set()):
                continue
            label = simulated_answer(item_id, truth, labels, a, seed, skip_rate)
            lead = simulated_lead_time(item_id, a.name, seed)
            try:
                submitter.submit(task_id, a, label, lead)
            except BackendError as exc:
                if "HTTP 404" in str(exc):  # task deleted meanwhile
                    log.info("task %s disappeared before %s could answer it", task_id, a.email)
                    continue
                raise
            submitted += 1
    if no_truth:
        log.info("%d tasks have no known true label; the simulated crowd left them open", no_truth)
    log.info("simulated crowd submitted %d annotations to project %r", submitted, backend.project_title)
    return submitted


__all__ = ["SimAnnotator", "answer_open_tasks", "assign", "default_annotators", "ensure_users", "simulated_answer"]
