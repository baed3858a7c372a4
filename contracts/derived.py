"""What the worker publishes: derived lifecycle events (plain JSON) and dead-letter errors."""

from __future__ import annotations

import hashlib
import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, TypeAdapter

from .run_step import LastError, StepStatus, StepType, Usage

__all__ = [
    "DERIVED",
    "NAMESPACE",
    "AnyDerived",
    "DeadLetterError",
    "DeadLetterKind",
    "DerivedEvent",
    "DerivedType",
    "RunUsage",
    "StepFinished",
    "StepStalled",
    "StepStarted",
    "TransitionRejected",
    "event_id_for",
]

# Fixed forever: changing it changes every event id and breaks consumers' deduplication.
NAMESPACE = uuid.UUID("239b3640-3742-4d3f-ae5e-4116cce6d07d")


class DerivedType(StrEnum):
    """The kinds of derived event."""

    STARTED = "run_step.started"  # first sighting of a step, in progress
    COMPLETED = "run_step.completed"  # the step completed
    FAILED = "run_step.failed"  # the step failed
    CANCELLED = "run_step.cancelled"  # the step was cancelled
    EXPIRED = "run_step.expired"  # the step expired
    INCOMPLETE = "run_step.incomplete"  # the run ended with the step unfinished
    TRANSITION_REJECTED = "run_step.transition_rejected"  # a terminal step asked to change
    STALLED = "run_step.stalled"  # in progress for longer than the stall threshold
    RUN_USAGE = "run.usage"  # the run's token totals after a step's usage was counted


_NAMESPACE_SHA1 = hashlib.sha1(NAMESPACE.bytes, usedforsecurity=False)
# The RFC 4122 variant keeps the top two bits of byte 8 at 10: hex digit 16 becomes 8-b.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def event_id_for(step_id: str, type: str, qualifier: str = "") -> str:
    """The deterministic id of a derived event, so a republished event has the same id.

    `uuid.uuid5(NAMESPACE, f"{step_id}|{type}|{qualifier}")`, computed on the hex digest
    without building UUID objects: it runs once or twice per event on the worker's hot path.
    """
    digest = _NAMESPACE_SHA1.copy()
    digest.update(f"{step_id}|{type}|{qualifier}".encode())
    h = digest.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


class DerivedEvent(BaseModel):
    """Fields every derived event carries."""

    model_config = ConfigDict(extra="forbid")

    type: DerivedType
    event_id: str
    step_id: str
    run_id: str
    thread_id: str
    assistant_id: str
    from_status: StepStatus | None
    to_status: StepStatus
    occurred_at: int  # unix seconds, taken from the step's own timestamps


class StepStarted(DerivedEvent):
    """A step was seen for the first time."""

    type: Literal[DerivedType.STARTED]
    step_type: StepType


class StepFinished(DerivedEvent):
    """A step reached a terminal status."""

    type: Literal[
        DerivedType.COMPLETED,
        DerivedType.FAILED,
        DerivedType.CANCELLED,
        DerivedType.EXPIRED,
        DerivedType.INCOMPLETE,
    ]
    step_type: StepType
    duration_s: int | None  # None when the terminal status carries no timestamp
    usage: Usage | None
    last_error: LastError | None


class TransitionRejected(DerivedEvent):
    """A terminal step was reported with a different terminal status; the first one stands."""

    type: Literal[DerivedType.TRANSITION_REJECTED]
    reason: str


class StepStalled(DerivedEvent):
    """A step has been in progress for longer than the stall threshold."""

    type: Literal[DerivedType.STALLED]
    stalled_for_s: int
    stall_after_s: int


class RunUsage(DerivedEvent):
    """The run's cumulative token totals over the steps counted so far."""

    type: Literal[DerivedType.RUN_USAGE]
    prompt_tokens: NonNegativeInt
    completion_tokens: NonNegativeInt
    total_tokens: NonNegativeInt
    steps_counted: NonNegativeInt


AnyDerived = Annotated[
    StepStarted | StepFinished | TransitionRejected | StepStalled | RunUsage,
    Field(discriminator="type"),
]

DERIVED: TypeAdapter[AnyDerived] = TypeAdapter(AnyDerived)


class DeadLetterKind(StrEnum):
    """Why a source entry went to the dead-letter stream."""

    MISSING_DATA = "missing_data"  # the entry has no `data` field
    OVERSIZED = "oversized"  # `data` is larger than the configured limit
    INVALID_JSON = "invalid_json"  # `data` is not JSON
    INVALID_PAYLOAD = "invalid_payload"  # JSON, but not a valid step, envelope or delta
    ENVELOPE_MISMATCH = "envelope_mismatch"  # the event name contradicts the step's status
    PROCESSING_FAILED = "processing_failed"  # valid, but handling it kept failing
    WRONG_PARTITION = "wrong_partition"  # its run belongs to another partition's stream


class DeadLetterError(BaseModel):
    """The JSON in a dead-letter entry's `error` field."""

    model_config = ConfigDict(extra="forbid")

    kind: DeadLetterKind
    message: str
    errors: list[dict[str, Any]] = Field(default_factory=list)
