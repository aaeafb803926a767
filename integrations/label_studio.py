"""Label Studio annotation backend (label-studio-sdk 2.x, Label Studio 1.23).

One Label Studio project per campaign, found (or created) by its exact title.
Tasks carry ``data = {"text": ..., "item_id": ...}``; the model's guess travels
as a prediction (pre-annotation). Whether an item is a gold item is *not* sent to
Label Studio at all: the ledger knows it, annotators must not.

Decisions worth knowing
-----------------------
* **Idempotent push.** ``push`` lists the project's tasks first (``data.item_id``)
  and imports only the missing items; the whole list-then-import step is what is
  retried. A push that was killed (or whose import answer got lost) and run again
  never creates a second task for an item. If Label Studio holds several tasks for
  one item (someone imported by hand), the lowest task id wins.
* **Retries.** Connection errors, timeouts, HTTP 5xx, 408 and 429 are retried with
  exponential backoff (``backoff * 2**n`` capped by ``max_backoff``) as long as the
  operation's total budget (``retry_budget``, default 25 s) allows; then a
  :class:`BackendError` says what was being done, where, and why. Other 4xx are not
  retried (401: the API key was refused). The SDK's own retries are switched off.
* **No secrets in output.** The API key is kept private; error messages, log lines
  and ``repr`` never contain it (every message is scrubbed, and SDK exceptions are
  not chained into ours).
* **Pull.** One :class:`PulledAnnotation` per Label Studio annotation id.
  ``was_cancelled`` -> status ``"skipped"`` (label ``None``). An annotation whose
  ``label`` choices hold zero or several values, or a value that is not one of the
  project's labels, -> status ``"invalid"`` with label ``None`` and a warning naming
  the annotation id (we do not raise: one odd annotation must not block a round;
  the validation step downstream rejects non-"submitted" rows). ``label`` is not
  ``None`` exactly when ``status == "submitted"``. Tasks without ``data.item_id``
  (not created by labelloop) are ignored; deleted tasks simply stop appearing.
* **close_tasks** marks tasks as finished (``is_labeled=true``, which removes them
  from Label Studio's labelling queue) and records ``meta.labelloop_closed``; it does
  not delete anything, so the annotation history stays visible in Label Studio.
  Label Studio recomputes ``is_labeled`` when an annotation on the task changes, so
  this is best effort. Tasks that no longer exist are ignored.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar
from xml.sax.saxutils import quoteattr

from labelloop.integrations.backend import BackendError, PulledAnnotation, TaskRequest, missing_items
from labelloop.integrations.faults import checkpoint

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8089"
DEFAULT_SECRET_BLOCK = "label-studio-api-key"
FROM_NAME = "label"
TO_NAME = "text"
RETRYABLE_STATUS = {408, 429}
#: Label Studio webhook actions after which the open batch may have become complete
WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")


# --------------------------------------------------------------------------- config


def label_config(labels: Sequence[str], instructions: str = "") -> str:
    """The labelling interface for single-label text classification.

    Every label is an XML attribute value escaped with ``quoteattr``, so labels such
    as ``a"b``, ``<x>`` or ``R&D`` neither break the XML nor inject markup.
    """
    labels = _check_labels(labels)
    parts = ["<View>"]
    if instructions:
        parts.append(f"<Header value={quoteattr(instructions)}/>")
    parts.append(f'<Text name="{TO_NAME}" value="${TO_NAME}"/>')
    parts.append(f'<Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">')
    parts.extend(f"<Choice value={quoteattr(label)}/>" for label in labels)
    parts.append("</Choices></View>")
    return "".join(parts)


REVIEW_SUFFIX = " (adjudication)"
VOTES_NAME = "votes"


def review_label_config(labels: Sequence[str], instructions: str = "") -> str:
    """The adjudication interface: the item's text, each annotator's label (``$votes``, a
    Text shown read-only) and the same single-choice ``label`` control as the labelling
    project, so :meth:`LabelStudioBackend.pull` reads a reviewer's decision unchanged."""
    labels = _check_labels(labels)
    header = instructions or "Annotators disagreed on this item. Pick the correct label; your answer wins."
    parts = ["<View>", f"<Header value={quoteattr(header)}/>", f'<Text name="{TO_NAME}" value="${TO_NAME}"/>',
             '<Header value="Annotators answered:" size="5"/>', f'<Text name="{VOTES_NAME}" value="${VOTES_NAME}"/>',
             f'<Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">']
    parts.extend(f"<Choice value={quoteattr(label)}/>" for label in labels)
    parts.append("</Choices></View>")
    return "".join(parts)


def choices_result(label: str) -> list[dict[str, Any]]:
    """A Label Studio ``result`` list choosing ``label`` (for predictions and annotations)."""
    return [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices", "value": {"choices": [label]}}]


def _check_labels(labels: Sequence[str]) -> list[str]:
    if isinstance(labels, str):
        raise ValueError("labels must be a sequence of strings, not one string")
    out = list(labels)
    if not out:
        raise ValueError("at least one label is needed")
    for label in out:
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"labels must be non-empty strings, got {label!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"labels must be unique, got {out!r}")
    return out


# --------------------------------------------------------------------------- api key


def resolve_api_key(explicit: str | None = None, secret_block: str | None = None) -> str:
    """The Label Studio API key: ``explicit``, else env ``LABEL_STUDIO_API_KEY``, else the
    Prefect Secret block ``secret_block`` (default env ``LABELLOOP_LS_SECRET_BLOCK`` or
    ``label-studio-api-key``). Never logs the value."""
    if explicit:
        return explicit
    env = os.environ.get("LABEL_STUDIO_API_KEY")
    if env:
        return env
    block = secret_block or os.environ.get("LABELLOOP_LS_SECRET_BLOCK") or DEFAULT_SECRET_BLOCK
    try:
        from prefect.blocks.system import Secret

        value = Secret.load(block).get()
    except Exception as exc:  # noqa: BLE001 - any failure means "no key from Prefect"
        raise BackendError(
            "no Label Studio API key: set LABEL_STUDIO_API_KEY (e.g. "
            "`export LABEL_STUDIO_API_KEY=$(infra/label_studio.sh token)`) or create the Prefect "
            f"Secret block {block!r} ({type(exc).__name__})"
        ) from None
    if not value:
        raise BackendError(f"the Prefect Secret block {block!r} holds an empty Label Studio API key")
    return str(value)


# --------------------------------------------------------------------------- helpers


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not value:
        return datetime.now(timezone.utc)
    dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _as_dict(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    return dict(obj)


def extract_choices(result: Any) -> list[str]:
    """All values chosen in the ``label`` Choices control of an annotation result."""
    values: list[str] = []
    for region in result or []:
        region = _as_dict(region)
        if region.get("type") != "choices" or region.get("from_name") != FROM_NAME:
            continue
        values.extend(str(v) for v in (region.get("value") or {}).get("choices") or [])
    return values


def batch_complete(
    annotations: Iterable[PulledAnnotation],
    task_ids: Iterable[str],
    overlap: int,
    deadline: datetime | None = None,
    now: datetime | None = None,
) -> bool:
    """True when every task in ``task_ids`` has answers (submitted, skipped or invalid)
    from at least ``overlap`` distinct annotators, or when ``deadline`` has passed."""
    wanted = {str(t) for t in task_ids}
    if deadline is not None:
        now = now or datetime.now(timezone.utc)
        if deadline.tzinfo is None:
            deadline = deadline.replace(tzinfo=timezone.utc)
        if now >= deadline:
            return True
    who: dict[str, set[str]] = {t: set() for t in wanted}
    for ann in annotations:
        if ann.backend_task_id in who:
            who[ann.backend_task_id].add(ann.annotator)
    return all(len(v) >= overlap for v in who.values())


@dataclass(frozen=True)
class _Attempt:
    deadline: float
    timeout: float

    def request_options(self) -> dict[str, Any]:
        remaining = max(0.5, self.deadline - time.monotonic())
        return {"timeout": min(self.timeout, remaining), "max_retries": 0}


# --------------------------------------------------------------------------- backend


class LabelStudioBackend:
    """:class:`~integrations.backend.AnnotationBackend` on a real Label Studio server."""

    name = "label_studio"

    def __init__(
        self,
        url: str,
        api_key: str,
        project_title: str,
        labels: Sequence[str],
        overlap: int = 1,
        instructions: str = "",
        timeout: float = 15.0,
        retries: int = 5,
        *,
        retry_budget: float = 25.0,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        page_size: int = 500,
        import_chunk: int = 500,
    ) -> None:
        if not api_key:
            raise BackendError("Label Studio API key is empty (see resolve_api_key)")
        if overlap < 1:
            raise ValueError("overlap must be >= 1")
        self.url = url.rstrip("/")
        self.project_title = project_title
        self.labels = _check_labels(labels)
        self.overlap = int(overlap)
        self.instructions = instructions
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.retry_budget = float(retry_budget)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.page_size = int(page_size)
        self.import_chunk = int(import_chunk)
        self.__api_key = api_key
        self._client: Any = None
        self._project_id: int | None = None
        self._users: dict[int, str] = {}

    @classmethod
    def from_env(
        cls,
        project_title: str,
        labels: Sequence[str],
        overlap: int = 1,
        *,
        url: str | None = None,
        api_key: str | None = None,
        secret_block: str | None = None,
        **kwargs: Any,
    ) -> "LabelStudioBackend":
        """URL from ``LABELLOOP_LS_URL`` (default http://127.0.0.1:8089), key via :func:`resolve_api_key`."""
        return cls(
            url or os.environ.get("LABELLOOP_LS_URL") or DEFAULT_URL,
            resolve_api_key(api_key, secret_block),
            project_title,
            labels,
            overlap,
            **kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"LabelStudioBackend(url={self.url!r}, project_title={self.project_title!r}, "
            f"labels={self.labels!r}, overlap={self.overlap}, api_key='***')"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None  # httpx clients do not pickle; rebuilt lazily (e.g. on a Dask worker)
        return state

    # ------------------------------------------------------------------ plumbing

    @property
    def client(self) -> Any:
        """The label-studio-sdk client (SDK retries off; ours wrap every call)."""
        if self._client is None:
            from label_studio_sdk import LabelStudio

            try:
                self._client = LabelStudio(
                    base_url=self.url, api_key=self.__api_key, timeout=self.timeout, max_retries=0
                )
            except Exception as exc:  # noqa: BLE001 - e.g. an expired JWT refresh token
                raise BackendError(self._scrub(f"Label Studio client for {self.url} could not be set up: {exc}")) from None
        return self._client

    def _scrub(self, text: str) -> str:
        key = self.__api_key
        if key and key in text:
            text = text.replace(key, "***")
        return text

    @staticmethod
    def _status(exc: BaseException) -> int | None:
        code = getattr(exc, "status_code", None)
        return code if isinstance(code, int) else None

    def _retryable(self, exc: BaseException) -> bool:
        import httpx

        if isinstance(exc, httpx.TransportError):  # connect errors, timeouts, broken connections
            return True
        code = self._status(exc)
        return code is not None and (code >= 500 or code in RETRYABLE_STATUS)

    def _describe(self, exc: BaseException) -> str:
        code = self._status(exc)
        if code is not None:
            body = getattr(exc, "body", None)
            if isinstance(body, dict):
                detail = body.get("detail") or body.get("validation_errors") or body
            else:
                detail = body
            detail = str(detail)[:300] if detail else ""
            return f"HTTP {code}{': ' + detail if detail else ''}"
        return f"{type(exc).__name__}: {str(exc)[:300] or 'no details'}"

    def _call(self, what: str, fn: Callable[[_Attempt], T]) -> T:
        """Run ``fn`` with retries on transient failures; raise a token-free BackendError."""
        start = time.monotonic()
        deadline = start + self.retry_budget
        attempt = 0
        while True:
            try:
                return fn(_Attempt(deadline=deadline, timeout=self.timeout))
            except BackendError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below
                retryable = self._retryable(exc)
                detail = self._scrub(self._describe(exc))
                delay = min(self.max_backoff, self.backoff * (2**attempt))
                elapsed = time.monotonic() - start
                if retryable and attempt < self.retries and elapsed + delay < self.retry_budget:
                    attempt += 1
                    log.warning(
                        "Label Studio at %s: %s failed (%s); retry %d/%d in %.1f s",
                        self.url, what, detail, attempt, self.retries, delay,
                    )
                    time.sleep(delay)
                    continue
                code = self._status(exc)
                if code is None and retryable:  # transport error: refused, timed out, reset
                    verb = "did not answer"
                elif code == 401:
                    verb = "refused the API key"
                else:
                    verb = "failed"
                tries = f" after {attempt + 1} attempts in {elapsed:.1f} s" if attempt else ""
                # raised, not also logged: whoever catches it reports it once (the CLI's one error line)
                raise BackendError(self._scrub(f"Label Studio at {self.url} {verb} while {what}{tries}: {detail}")) \
                    from None

    # ------------------------------------------------------------------ project

    @property
    def project_id(self) -> int:
        """Id of the campaign's project (found by exact title or created)."""
        if self._project_id is None:
            self._call(f"finding or creating project {self.project_title!r}", self._pid)
        assert self._project_id is not None
        return self._project_id

    def _pid(self, att: _Attempt) -> int:
        """Project id inside an attempt (so one retry budget covers the whole operation)."""
        if self._project_id is None:
            self._project_id = self._ensure_project(att)
        return self._project_id

    def _find_project(self, att: _Attempt) -> int | None:
        """Lowest id among projects titled exactly ``project_title`` (the API filter is "contains")."""
        ids = [
            int(p.id)
            for p in self.client.projects.list(title=self.project_title, request_options=att.request_options())
            if p.title == self.project_title
        ]
        return min(ids) if ids else None

    def _label_config(self) -> str:
        return label_config(self.labels, self.instructions)

    def _ensure_project(self, att: _Attempt) -> int:
        c = self.client
        config = self._label_config()
        found = self._find_project(att)
        if found is not None:
            full = c.projects.get(found, request_options=att.request_options())
            changes: dict[str, Any] = {}
            if full.label_config != config:
                changes["label_config"] = config
            if full.maximum_annotations != self.overlap:
                changes["maximum_annotations"] = self.overlap
            if changes:
                log.info("updating Label Studio project %r (%d): %s", self.project_title, found, sorted(changes))
                c.projects.update(found, **changes, request_options=att.request_options())
            return found
        extra: dict[str, Any] = {}
        if self.instructions:  # the server answers 500 to expert_instruction=null
            extra = {"expert_instruction": _html_escape(self.instructions), "show_instruction": True}
        created = c.projects.create(
            title=self.project_title,
            label_config=config,
            maximum_annotations=self.overlap,
            request_options=att.request_options(),
            **extra,
        )
        log.info("created Label Studio project %r (id %s) at %s", self.project_title, created.id, self.url)
        return int(created.id)

    def project_labels(self) -> list[str]:
        """The labels Label Studio parsed from the project's configuration (read back via the API)."""

        def go(att: _Attempt) -> list[str]:
            project = self.client.projects.get(self._pid(att), request_options=att.request_options())
            parsed = project.parsed_label_config or {}
            return list((parsed.get(FROM_NAME) or {}).get("labels") or [])

        return self._call(f"reading the labels of project {self.project_title!r}", go)

    # ------------------------------------------------------------------ paging

    def _iter_tasks(self, att: _Attempt, fields: str) -> Iterator[Any]:
        """Every task of the project, page by page (the SDK answers 404 past the last page)."""
        from label_studio_sdk.core.api_error import ApiError

        page, seen, total = 1, 0, None
        while True:
            try:
                pager = self.client.tasks.list(
                    project=self._pid(att),
                    fields=fields,
                    page=page,
                    page_size=self.page_size,
                    request_options=att.request_options(),
                )
            except ApiError as exc:
                if exc.status_code == 404 and page > 1:
                    return
                raise
            items = list(pager.items or [])
            total = getattr(pager.response, "total", total)
            yield from items
            seen += len(items)
            if not items or len(items) < self.page_size or (total is not None and seen >= total):
                return
            checkpoint("during-pull-page")  # fault tests: kill between pages
            page += 1

    def _existing(self, att: _Attempt) -> dict[str, str]:
        existing: dict[str, int] = {}
        for task in self._iter_tasks(att, fields="task_only"):
            item_id = (task.data or {}).get("item_id")
            if item_id is None:
                continue
            item_id = str(item_id)
            if item_id not in existing or int(task.id) < existing[item_id]:
                existing[item_id] = int(task.id)
        return {k: str(v) for k, v in existing.items()}

    def existing_tasks(self) -> dict[str, str]:
        """item_id -> task id for every labelloop task in the project."""
        return self._call(f"listing the tasks of project {self.project_title!r}", self._existing)

    # ------------------------------------------------------------------ push

    def _task_payload(self, t: TaskRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {"data": {"text": t.text, "item_id": t.item_id}}
        # t.is_gold is deliberately not sent: annotators must not see which items are gold.
        if t.predicted_label is not None:
            if t.predicted_label in self.labels:
                pred: dict[str, Any] = {
                    "model_version": t.model_version or "unknown",
                    "result": choices_result(t.predicted_label),
                }
                if t.confidence is not None:
                    pred["score"] = float(t.confidence)
                payload["predictions"] = [pred]
            else:
                log.warning("item %s: predicted label %r is not a project label; no pre-annotation", t.item_id, t.predicted_label)
        return payload

    def push(self, tasks: Sequence[TaskRequest]) -> dict[str, str]:
        unique: dict[str, TaskRequest] = {}
        for t in tasks:
            unique.setdefault(t.item_id, t)
        wanted = list(unique.values())
        if not wanted:
            return {}
        what = f"pushing {len(wanted)} tasks to project {self.project_title!r}"

        def go(att: _Attempt) -> dict[str, str]:
            existing = self._existing(att)
            todo = missing_items(wanted, existing)
            for i in range(0, len(todo), self.import_chunk):
                chunk = todo[i : i + self.import_chunk]
                self.client.projects.import_tasks(
                    id=self._pid(att),
                    request=[self._task_payload(t) for t in chunk],
                    return_task_ids=True,
                    request_options=att.request_options(),
                )
                checkpoint("during-import")  # fault tests: kill between chunks
            if todo:
                existing = self._existing(att)
            log.info(
                "Label Studio project %r: %d of %d items already had tasks, imported %d",
                self.project_title, len(wanted) - len(todo), len(wanted), len(todo),
            )
            return existing

        existing = self._call(what, go)
        lost = [t.item_id for t in wanted if t.item_id not in existing]
        if lost:
            raise BackendError(
                f"Label Studio at {self.url} accepted the import but {len(lost)} items have no task in project "
                f"{self.project_title!r} (first: {lost[:5]})"
            )
        return {t.item_id: existing[t.item_id] for t in wanted}

    # ------------------------------------------------------------------ pull

    def user_emails(self, refresh: bool = False) -> dict[int, str]:
        """Label Studio user id -> e-mail, cached."""
        if refresh or not self._users:

            def go(att: _Attempt) -> dict[int, str]:
                users = self.client.users.list(request_options=att.request_options())
                return {int(u.id): (u.email or u.username or str(u.id)) for u in users}

            self._users = self._call("listing users", go)
        return self._users

    def pull(self) -> list[PulledAnnotation]:
        """Every annotation of every task in the project. The ids of every task seen, answered or not,
        are kept in :attr:`pulled_task_ids`: an annotation the ledger holds on one of those tasks and
        the pull no longer shows was deleted in Label Studio (see ``flows.stages.pull_annotations``)."""

        def go(att: _Attempt) -> list[Any]:
            return list(self._iter_tasks(att, fields="all"))

        every = self._call(f"pulling annotations from project {self.project_title!r}", go)
        self.pulled_task_ids = {str(t.id) for t in every}
        tasks = [t for t in every if t.annotations]
        users = self.user_emails()
        out: dict[str, PulledAnnotation] = {}
        allowed = set(self.labels)
        for task in tasks:
            item_id = (task.data or {}).get("item_id")
            if item_id is None:
                log.warning("Label Studio task %s has no data.item_id (not created by labelloop); ignored", task.id)
                continue
            for raw in task.annotations or []:
                ann = _as_dict(raw)
                ann_id = str(ann.get("id"))
                who = ann.get("completed_by")
                if isinstance(who, dict):
                    user_id, email = who.get("id"), who.get("email")
                else:
                    user_id, email = who, None
                if email is None and user_id is not None:
                    if int(user_id) not in users:
                        users = self.user_emails(refresh=True)
                    email = users.get(int(user_id))
                annotator = email or (str(user_id) if user_id is not None else "unknown")
                if ann.get("was_cancelled"):
                    status, label = "skipped", None
                else:
                    values = extract_choices(ann.get("result"))
                    if len(values) == 1 and values[0] in allowed:
                        status, label = "submitted", values[0]
                    else:
                        status, label = "invalid", None
                        log.warning(
                            "Label Studio annotation %s on task %s (item %s) is invalid: expected one of the "
                            "project labels, got %r; reported with status 'invalid'",
                            ann_id, task.id, item_id, values,
                        )
                created = _parse_time(ann.get("created_at"))
                out[ann_id] = PulledAnnotation(
                    backend_annotation_id=ann_id,
                    backend_task_id=str(task.id),
                    item_id=str(item_id),
                    annotator=annotator,
                    label=label,
                    status=status,
                    created_at=created,
                    updated_at=_parse_time(ann.get("updated_at") or created),
                    lead_time=_seconds(ann.get("lead_time")),
                )
        return sorted(out.values(), key=lambda a: (int(a.backend_task_id), _int_or(a.backend_annotation_id)))

    def is_batch_complete(
        self, task_ids: Iterable[str], overlap: int | None = None, deadline: datetime | None = None
    ) -> bool:
        """True when each task has ``overlap`` (default: the project's) distinct annotators'
        answers, or when ``deadline`` (aware datetime; naive = UTC) has passed."""
        task_ids = list(task_ids)
        if deadline is not None and batch_complete([], task_ids, 1, deadline):
            return True
        return batch_complete(self.pull(), task_ids, overlap or self.overlap, deadline)

    # ------------------------------------------------------------------ close

    def close_tasks(self, backend_task_ids: Sequence[str]) -> None:
        from label_studio_sdk.core.api_error import ApiError

        ids = [str(i) for i in backend_task_ids]
        if not ids:
            return

        def go(att: _Attempt) -> int:
            closed = 0
            for task_id in ids:
                try:
                    self.client.tasks.update(
                        task_id,
                        is_labeled=True,
                        meta={"labelloop_closed": True},
                        request_options=att.request_options(),
                    )
                    closed += 1
                except ApiError as exc:
                    if exc.status_code == 404:
                        log.info("Label Studio task %s no longer exists; nothing to close", task_id)
                        continue
                    raise
            return closed

        n = self._call(f"closing {len(ids)} tasks in project {self.project_title!r}", go)
        log.info("closed %d of %d Label Studio tasks in project %r", n, len(ids), self.project_title)

    # ------------------------------------------------------------------ adjudication

    def task_overlaps(self) -> dict[str, tuple[str, int]]:
        """item_id -> (task id, answers the task asks for): the project's ``maximum_annotations``
        unless adaptive redundancy raised the task's own ``overlap``."""

        def go(att: _Attempt) -> dict[str, tuple[str, int]]:
            out: dict[str, tuple[int, int]] = {}
            for task in self._iter_tasks(att, fields="task_only"):
                item_id = (task.data or {}).get("item_id")
                if item_id is None:
                    continue
                tid = int(task.id)
                if str(item_id) not in out or tid < out[str(item_id)][0]:
                    out[str(item_id)] = (tid, int(getattr(task, "overlap", None) or self.overlap))
            return {k: (str(t), o) for k, (t, o) in out.items()}

        return self._call(f"reading task overlaps of project {self.project_title!r}", go)

    def request_more(self, item_ids: Sequence[str], max_overlap: int) -> dict[str, int]:
        """Ask for one more answer on each item, never beyond ``max_overlap`` (adaptive redundancy).

        Label Studio's own mechanism: the task's ``overlap`` (answers it collects) goes up by one
        and ``is_labeled`` back to false, so the labelling stream offers it to one more annotator
        who has not answered it. Returns item_id -> the task's overlap now (unchanged at the cap or
        for items with no task here).
        """
        wanted = [str(i) for i in item_ids]
        if not wanted:
            return {}
        have = self.task_overlaps()

        def go(att: _Attempt) -> dict[str, int]:
            out: dict[str, int] = {}
            for item in wanted:
                if item not in have:
                    continue
                tid, current = have[item]
                new = min(current + 1, int(max_overlap))
                if new > current:
                    self.client.tasks.update(tid, overlap=new, is_labeled=False, request_options=att.request_options())
                out[item] = max(new, current)
            return out

        return self._call(f"asking for one more answer on {len(wanted)} task(s) in project {self.project_title!r}", go)

    def withdraw_requests(self, answers: Mapping[str, int]) -> int:
        """Take back extra answers that were given up: each task's ``overlap`` down to the answers
        it has (never below the project's), marked labelled, so the labelling stream stops offering
        it. Returns the number of tasks changed. The counterpart of :meth:`request_more`."""
        if not answers:
            return 0
        have = self.task_overlaps()

        def go(att: _Attempt) -> int:
            changed = 0
            for item, n in answers.items():
                if str(item) not in have:
                    continue
                tid, current = have[str(item)]
                new = max(int(n), self.overlap)
                if new < current:
                    self.client.tasks.update(tid, overlap=new, is_labeled=True, request_options=att.request_options())
                    changed += 1
            return changed

        return self._call(f"withdrawing the extra-answer request on {len(answers)} task(s) in project "
                          f"{self.project_title!r}", go)

    def review_backend(self, suffix: str = REVIEW_SUFFIX) -> "LabelStudioReviewBackend":
        """The campaign's adjudication project (title + ``suffix``), same server and key, one
        answer per task. Review tasks never appear in this project, so :meth:`pull` here never
        mixes adjudications into the annotators' answers."""
        return LabelStudioReviewBackend(
            self.url, self.__api_key, self.project_title + suffix, self.labels, 1,
            timeout=self.timeout, retries=self.retries, retry_budget=self.retry_budget, backoff=self.backoff,
            max_backoff=self.max_backoff, page_size=self.page_size, import_chunk=self.import_chunk,
        )

    # ------------------------------------------------------------------ webhooks

    def ensure_webhook(self, url: str, *, stale_suffix: str | None = None,
                       headers: Mapping[str, str] | None = None) -> int:
        """Have the project call ``url`` whenever an annotation is created, updated or deleted
        (the trigger of a round when the batch is done); returns the webhook's id.

        Idempotent: a webhook of the project with this exact URL is reused. Webhooks of the project
        whose URL ends with ``stale_suffix`` but differs (an earlier ``labelloop serve`` on another
        port) are deleted, so Label Studio does not keep calling dead addresses. Label Studio refuses
        local addresses (127.0.0.1, localhost) while its SSRF protection is on: the local server is
        started with ``SSRF_PROTECTION_ENABLED=false`` (infra/label_studio.sh); elsewhere the error
        says which setting to change and the caller falls back to polling.

        ``headers`` are sent with every call (the receiver's shared secret); a webhook with this URL
        but other headers (a rotated secret) is replaced.
        """

        def go(att: _Attempt) -> int:
            pid = self._pid(att)
            hooks = self.client.webhooks.list(project=str(pid), request_options=att.request_options())
            keep = None
            want = dict(headers or {})
            for h in hooks:
                if getattr(h, "project", None) not in (None, pid):
                    continue
                if h.url == url and keep is None and dict(getattr(h, "headers", None) or {}) == want:
                    keep = int(h.id)
                elif (h.url == url) or (stale_suffix and h.url.endswith(stale_suffix)):
                    self.client.webhooks.delete(int(h.id), request_options=att.request_options())
            if keep is not None:
                return keep
            hook = self.client.webhooks.create(
                url=url, project=pid, send_payload=True, send_for_all_actions=False, is_active=True,
                actions=list(WEBHOOK_ACTIONS), **({"headers": want} if want else {}),
                request_options=att.request_options())
            return int(hook.id)

        try:
            return self._call(f"registering a webhook for project {self.project_title!r}", go)
        except BackendError as err:
            if "HTTP 400" in str(err) and ("url" in str(err).lower()):
                raise BackendError(
                    f"{err} -- Label Studio refuses to call {url}: a Label Studio that should call a local "
                    "address needs SSRF_PROTECTION_ENABLED=false in its environment") from None
            raise

    # ------------------------------------------------------------------ misc

    def delete_project(self) -> None:
        """Delete the campaign's project if it exists (tests / clean-up)."""

        def go(att: _Attempt) -> None:
            pid = self._project_id if self._project_id is not None else self._find_project(att)
            if pid is not None:
                self.client.projects.delete(pid, request_options=att.request_options())

        self._call(f"deleting project {self.project_title!r}", go)
        self._project_id = None


class LabelStudioReviewBackend(LabelStudioBackend):
    """Review (adjudication) tasks: ``data = {"text", "item_id", "votes"}`` where ``votes``
    lists each annotator's label; the labelling config is :func:`review_label_config`.
    Push is idempotent per item (as for labelling tasks); :meth:`pull` returns the
    reviewers' answers as :class:`PulledAnnotation` rows. Build it with
    :meth:`LabelStudioBackend.review_backend`."""

    def _label_config(self) -> str:
        return review_label_config(self.labels, self.instructions)

    def push_reviews(self, items: Sequence[tuple[str, str, str]]) -> dict[str, str]:
        """Open a review task per ``(item_id, text, votes)`` unless one exists; item_id -> task id."""
        self._votes = {i: v for i, _, v in items}
        return self.push([TaskRequest(i, t) for i, t, _ in items])

    def _task_payload(self, t: TaskRequest) -> dict[str, Any]:
        payload = super()._task_payload(t)
        payload["data"][VOTES_NAME] = getattr(self, "_votes", {}).get(t.item_id, "")
        return payload

    def sync_reviews(self, votes: Mapping[str, str]) -> tuple[int, int]:
        """Keep the open review tasks current: ``votes`` maps every item still awaiting
        adjudication to its annotators' labels now.

        Why: a review task is opened once, but annotators may keep answering the item
        afterwards, and an item may stop needing review (decided with
        ``flows.trust.record_adjudication``, or by more agreeing answers). A reviewer must
        not decide on stale votes, nor spend time on an item already settled. So an open
        (unanswered) task whose item is in ``votes`` gets its ``votes`` text updated when it
        changed, and an open task whose item is not is closed (``is_labeled``, meta
        ``labelloop_closed``). Answered tasks are never touched. Returns (updated, closed).
        """

        def go(att: _Attempt) -> tuple[int, list[str]]:
            updated, settled = 0, []
            for task in list(self._iter_tasks(att, fields="all")):
                data = dict(task.data or {})
                item_id = data.get("item_id")
                if item_id is None or task.annotations or (getattr(task, "meta", None) or {}).get("labelloop_closed"):
                    continue
                if item_id not in votes:
                    settled.append(str(task.id))
                elif data.get(VOTES_NAME) != votes[item_id]:
                    data[VOTES_NAME] = votes[item_id]
                    self.client.tasks.update(task.id, data=data, request_options=att.request_options())
                    updated += 1
            return updated, settled

        updated, settled = self._call(f"updating review tasks in project {self.project_title!r}", go)
        self.close_tasks(settled)
        if updated:
            log.info("review project %r: %d open task(s) got newer votes", self.project_title, updated)
        return updated, len(settled)


def _seconds(value: Any) -> float | None:
    """Label Studio's ``lead_time`` (seconds the annotator had the task open, summed over edits) as a
    float; None when absent or not a non-negative number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v == v and v >= 0 else None


def _int_or(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


def _html_escape(text: str) -> str:
    from html import escape

    return escape(text).replace("\n", "<br/>")


__all__ = [
    "LabelStudioBackend",
    "LabelStudioReviewBackend",
    "batch_complete",
    "choices_result",
    "extract_choices",
    "label_config",
    "review_label_config",
    "resolve_api_key",
]
