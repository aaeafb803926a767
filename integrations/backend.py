"""The annotation-backend interface every backend implements.

Why a Protocol and plain dataclasses: the round flow must not care whether the
labels come from Label Studio or from simulated annotators, and the ledger must
be able to store what any backend returns without knowing where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Mapping, Protocol, Sequence, runtime_checkable

from labelloop.tasks.errors import LabelloopError


@dataclass(frozen=True)
class TaskRequest:
    """One item to put in front of annotators."""

    item_id: str
    text: str
    predicted_label: str | None = None  # the model's guess, shown as a pre-annotation
    confidence: float | None = None  # max class probability of that guess
    model_version: str | None = None  # MLflow run id / model version that asked
    is_gold: bool = False  # a known-label QA item; never shown as such to annotators


@dataclass(frozen=True)
class PulledAnnotation:
    """One annotation as the backend reports it (one per backend annotation id)."""

    backend_annotation_id: str
    backend_task_id: str
    item_id: str
    annotator: str
    label: str | None  # None when skipped / cancelled
    status: str  # "submitted", "skipped" (cancelled) or "invalid" (unusable result); label is set only when submitted
    created_at: datetime
    updated_at: datetime
    lead_time: float | None = None  # seconds the annotator spent on it (Label Studio's lead_time); None: unknown


class BackendError(LabelloopError, RuntimeError):
    """The annotation backend could not do what was asked. Message is token-free."""


@runtime_checkable
class AnnotationBackend(Protocol):
    """Push a batch, pull finished annotations, close tasks.

    Optional: ``request_more`` (see :class:`MoreAnswersBackend`) for adaptive
    redundancy. It is not part of this protocol so that a backend without it
    still passes ``isinstance(b, AnnotationBackend)``; test with
    :func:`supports_more_answers`.
    """

    name: str

    def push(self, tasks: Sequence[TaskRequest]) -> dict[str, str]:
        """Create tasks for items not yet present; return item_id -> backend task id
        for *every* requested item (existing ones included), so a retried push
        never creates a second task for the same item."""
        ...

    def pull(self) -> list[PulledAnnotation]:
        """Every annotation the backend currently holds (finished or skipped)."""
        ...

    def close_tasks(self, backend_task_ids: Sequence[str]) -> None:
        """Stop collecting annotations for these tasks (best effort)."""
        ...


@runtime_checkable
class MoreAnswersBackend(Protocol):
    """A backend that can ask for one more answer on items already pushed (adaptive redundancy)."""

    def request_more(self, item_ids: Sequence[str], max_overlap: int) -> dict[str, int]:
        """Ask for one more answer on each item, never beyond ``max_overlap`` answers.

        Returns item_id -> the item's new target number of answers; the target is
        unchanged when the item is already at ``max_overlap`` or nothing more can come
        (no further annotator, task closed). Idempotency is the caller's business: each
        call raises the target by one more. Items the backend never saw are left out.
        """
        ...


def supports_more_answers(backend: object) -> bool:
    """True when ``backend`` implements ``request_more`` (adaptive redundancy)."""
    return isinstance(backend, MoreAnswersBackend)


def missing_items(tasks: Sequence[TaskRequest], existing: Mapping[str, str]) -> list[TaskRequest]:
    """Tasks whose item has no backend task yet (helper for idempotent pushes)."""
    return [t for t in tasks if t.item_id not in existing]
