"""What the worker publishes: derived lifecycle events (plain JSON) and dead-letter errors."""

from __future__ import annotations

import hashlib
import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Json, NonNegativeInt, TypeAdapter

from .run_step import LastError, Usage

__all__ = [
    "CONTRACT_VERSION",
    "DERIVED",
    "NAMESPACE",
    "RUN_END_TYPES",
    "STEP_END_TYPES",
    "AnyDerived",
    "DeadLetterEntry",
    "DeadLetterError",
    "DeadLetterKind",
    "DerivedEvent",
    "DerivedType",
    "RunEvent",
    "RunFinished",
    "RunRequiresAction",
    "RunStarted",
    "RunTransitionRejected",
    "RunUsage",
    "Source",
    "StepCounts",
    "StepFinished",
    "StepStalled",
    "StepStarted",
    "TransitionRejected",
    "event_id_for",
]

# Fixed forever: changing it changes every event id and breaks consumers' deduplication.
NAMESPACE = uuid.UUID("239b3640-3742-4d3f-ae5e-4116cce6d07d")


CONTRACT_VERSION = 2
"""Version of the derived-event contract (CHANGELOG.md says what each version changed)."""


class Source(StrEnum):
    """The protocol a derived event's subject was reported in."""

    ASSISTANTS = "assistants"  # Assistants API: thread.run.step objects inside thread.run
    RESPONSES = "responses"  # Responses API: output items inside a response


class DerivedType(StrEnum):
    """The kinds of derived event."""

    STARTED = "run_step.started"  # a step's start: exactly one per step, before its end
    COMPLETED = "run_step.completed"  # the step completed
    FAILED = "run_step.failed"  # the step failed
    CANCELLED = "run_step.cancelled"  # the step was cancelled
    EXPIRED = "run_step.expired"  # the step expired
    INCOMPLETE = "run_step.incomplete"  # the run ended with the step unfinished
    TRANSITION_REJECTED = "run_step.transition_rejected"  # a terminal step asked to change
    STALLED = "run_step.stalled"  # in progress for longer than the stall threshold
    RUN_USAGE = "run.usage"  # the run's token totals after a step's usage was counted
    RUN_STARTED = "run.started"  # a run's start: exactly one per run, before its end
    RUN_REQUIRES_ACTION = "run.requires_action"  # the run waits for tool outputs
    RUN_COMPLETED = "run.completed"  # the run completed
    RUN_FAILED = "run.failed"  # the run failed
    RUN_CANCELLED = "run.cancelled"  # the run was cancelled
    RUN_EXPIRED = "run.expired"  # the run expired
    RUN_INCOMPLETE = "run.incomplete"  # the run ended early (e.g. a token limit)
    RUN_TRANSITION_REJECTED = "run.transition_rejected"  # a terminal run asked to change


STEP_END_TYPES: dict[str, DerivedType] = {
    s: DerivedType(f"run_step.{s}") for s in ("completed", "failed", "cancelled", "expired",
                                              "incomplete")
}  # fmt: skip
"""A step's terminal status -> the type of its end event."""

RUN_END_TYPES: dict[str, DerivedType] = {
    s: DerivedType(f"run.{s}") for s in ("completed", "failed", "cancelled", "expired",
                                         "incomplete")
}  # fmt: skip
"""A run's terminal status -> the type of its end event."""


_NAMESPACE_SHA1 = hashlib.sha1(NAMESPACE.bytes, usedforsecurity=False)
# The RFC 4122 variant keeps the top two bits of byte 8 at 10: hex digit 16 becomes 8-b.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def event_id_for(run_id: str, step_id: str, type: str, qualifier: str = "") -> str:
    """The deterministic id of a derived event, so a republished event has the same id.

    `uuid.uuid5(NAMESPACE, f"{run_id}|{step_id}|{type}|{qualifier}")` (`step_id` is empty
    for run events), computed on the hex digest without building UUID objects.
    """
    digest = _NAMESPACE_SHA1.copy()
    digest.update(f"{run_id}|{step_id}|{type}|{qualifier}".encode())
    h = digest.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


StepStatusValue = Literal["in_progress", "completed", "failed", "cancelled", "expired",
                          "incomplete"]  # fmt: skip
RunStatusValue = Literal["queued", "in_progress", "requires_action", "cancelling", "completed",
                         "failed", "cancelled", "expired", "incomplete"]  # fmt: skip


class _Derived(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DerivedEvent(_Derived):
    """Fields every derived event about a step carries."""

    type: DerivedType
    event_id: str = Field(description="deterministic UUIDv5: deduplicate on it")
    source: Source
    step_id: str
    run_id: str
    thread_id: str | None
    assistant_id: str | None
    from_status: StepStatusValue | None = Field(description="null only on run_step.started")
    to_status: StepStatusValue
    occurred_at: int | float = Field(description="unix seconds, from the subject's own times")


class StepStarted(DerivedEvent):
    """A step's start: published once per step, before its end, even when the first event
    seen of the step was already terminal."""

    type: Literal[DerivedType.STARTED]
    step_type: str = Field(description="run step type, or the Responses output item type")


class StepFinished(DerivedEvent):
    """A step reached a terminal status; `from_status` is always in_progress."""

    type: Literal[
        DerivedType.COMPLETED,
        DerivedType.FAILED,
        DerivedType.CANCELLED,
        DerivedType.EXPIRED,
        DerivedType.INCOMPLETE,
    ]
    step_type: str
    duration_s: int | float | None = Field(description="null when no end time is known")
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
    """The run's token totals: summed over the steps counted so far (Assistants: after each
    step with usage), or the response's own when it ends (Responses: `step_id` is null,
    prompt/completion are its input/output tokens, steps_counted its items ended)."""

    type: Literal[DerivedType.RUN_USAGE]
    step_id: str | None  # type: ignore[assignment]  # null for a response's own totals
    prompt_tokens: NonNegativeInt
    completion_tokens: NonNegativeInt
    total_tokens: NonNegativeInt
    steps_counted: NonNegativeInt


class RunEvent(_Derived):
    """Fields every derived event about a run (or a Responses response) carries."""

    type: DerivedType
    event_id: str = Field(description="deterministic UUIDv5: deduplicate on it")
    source: Source
    run_id: str
    thread_id: str | None
    assistant_id: str | None
    from_status: RunStatusValue | None = Field(description="null on run.started (or first seen)")
    to_status: RunStatusValue
    occurred_at: int | float = Field(description="unix seconds, from the run's own times")


class RunStarted(RunEvent):
    """A run's start: published once per run, before its end, even when the first event
    seen of the run was already terminal (`to_status` is then in_progress)."""

    type: Literal[DerivedType.RUN_STARTED]


class RunRequiresAction(RunEvent):
    """The run started waiting for tool outputs (once per round of tool calls);
    `from_status` is null when the run was first seen waiting."""

    type: Literal[DerivedType.RUN_REQUIRES_ACTION]
    tool_call_ids: list[str]


class RunTransitionRejected(RunEvent):
    """A terminal run was reported with a different terminal status; the first one stands."""

    type: Literal[DerivedType.RUN_TRANSITION_REJECTED]
    reason: str


class StepCounts(_Derived):
    """How many of the run's steps the service saw end, by terminal status."""

    completed: NonNegativeInt
    failed: NonNegativeInt
    cancelled: NonNegativeInt
    expired: NonNegativeInt
    incomplete: NonNegativeInt


class RunFinished(RunEvent):
    """A run reached a terminal status."""

    type: Literal[
        DerivedType.RUN_COMPLETED,
        DerivedType.RUN_FAILED,
        DerivedType.RUN_CANCELLED,
        DerivedType.RUN_EXPIRED,
        DerivedType.RUN_INCOMPLETE,
    ]
    duration_s: int | float | None = Field(description="null when no end time is known")
    usage: dict[str, Any] | None = Field(description="the run's usage as the API reports it")
    last_error: dict[str, Any] | None
    incomplete_details: dict[str, Any] | None
    steps: StepCounts


AnyDerived = Annotated[
    StepStarted
    | StepFinished
    | TransitionRejected
    | StepStalled
    | RunUsage
    | RunStarted
    | RunRequiresAction
    | RunFinished
    | RunTransitionRejected,
    Field(discriminator="type"),
]

DERIVED: TypeAdapter[AnyDerived] = TypeAdapter(AnyDerived)


class DeadLetterKind(StrEnum):
    """Why a source entry went to the dead-letter stream."""

    MISSING_DATA = "missing_data"  # the entry has no `data` field
    OVERSIZED = "oversized"  # `data` is larger than the configured limit
    INVALID_JSON = "invalid_json"  # `data` is not JSON
    INVALID_PAYLOAD = "invalid_payload"  # JSON, but not a valid step, envelope or delta
    # Retired (CHANGELOG.md): such an entry is tracked by its object's status. Kept so old
    # dead letters still read; nothing is dead-lettered with it any more.
    ENVELOPE_MISMATCH = "envelope_mismatch"  # the event name contradicted the status
    PROCESSING_FAILED = "processing_failed"  # valid, but handling it kept failing
    WRONG_PARTITION = "wrong_partition"  # its run belongs to another partition's stream
    IDENTITY_MISMATCH = "identity_mismatch"  # its thread/assistant contradict its run's


class DeadLetterError(BaseModel):
    """The JSON in a dead-letter entry's `error` field."""

    model_config = ConfigDict(extra="forbid")

    kind: DeadLetterKind
    message: str
    errors: list[dict[str, Any]] = Field(default_factory=list)


class DeadLetterEntry(BaseModel):
    """The fields of one dead-letter entry (written by a Lua script, never by FastStream)."""

    model_config = ConfigDict(
        extra="allow",
        title="DeadLetterEntry",
        json_schema_extra={"patternProperties": {"^field:": {"type": "string"}}},
    )

    data: str = Field(
        description="the source entry's `data` field as it was (empty if it had none)"
    )
    error: Json[DeadLetterError] = Field(description="why it was dead-lettered, as JSON")
    source_id: str = Field(description="the source entry's id")
    source_stream: str = Field(description="the stream the entry was read from")
