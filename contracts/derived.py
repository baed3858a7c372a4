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
    "BudgetLimit",
    "DeadLetterEntry",
    "DeadLetterError",
    "DeadLetterKind",
    "DerivedEvent",
    "DerivedType",
    "RunBudgetExceeded",
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
    "ToolCall",
    "TransitionRejected",
    "event_id_for",
]

# Fixed forever: changing it changes every event id and breaks consumers' deduplication.
NAMESPACE = uuid.UUID("239b3640-3742-4d3f-ae5e-4116cce6d07d")


CONTRACT_VERSION = 3
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
    RUN_BUDGET_EXCEEDED = "run.budget_exceeded"  # the run passed a budget (once per limit)


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


_TOOL_ID = "the call's id (`call_...`) where the protocol gives one, else the item's id"
_TOOL_TYPE = (
    "Assistants: the tool call's type as sent (function, code_interpreter, file_search, mcp, "
    "...); Responses: the item's type without its `_call` suffix (function, web_search, mcp, "
    "custom, ...)"
)


class ToolCall(_Derived):
    """One tool call a step holds."""

    id: str = Field(description=_TOOL_ID)
    type: str = Field(description=_TOOL_TYPE)
    name: str | None = Field(description="the function's, MCP tool's or custom tool's name")


class _StepIds(_Derived):
    type: DerivedType
    event_id: str = Field(description="deterministic UUIDv5: deduplicate on it")
    source: Source
    step_id: str
    run_id: str
    thread_id: str | None
    assistant_id: str | None


class DerivedEvent(_StepIds):
    """Fields every derived event about a step carries."""

    tools: list[ToolCall] = Field(
        description="the tool calls the step holds, as known at this event ([] for message "
        "and reasoning steps, and for a tool step whose calls are not known yet)"
    )
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
    ended_by_run: bool = Field(
        description="true when the step was still open as its run ended: it takes the run's "
        "end (completed, failed, cancelled, expired, incomplete; a Responses item: incomplete)"
    )


class TransitionRejected(DerivedEvent):
    """A terminal step was reported with a different terminal status; the first one stands."""

    type: Literal[DerivedType.TRANSITION_REJECTED]
    reason: str


class StepStalled(DerivedEvent):
    """A step has been in progress for longer than the stall threshold."""

    type: Literal[DerivedType.STALLED]
    stalled_for_s: int
    stall_after_s: int


_COST = (
    "the cost in US dollars of the usage this event reports, at its model's prices on the day "
    "the run was created, exact to the nano-dollar; null when the model is unknown or unpriced"
)
_PRICED = "the price table's model that matched; null with cost_usd"


class RunUsage(_StepIds):
    """The run's token totals: summed over the steps counted so far (Assistants: after each
    step with usage), or the response's own when it ends (Responses: `step_id` is null,
    prompt/completion are its input/output tokens, steps_counted its items ended)."""

    type: Literal[DerivedType.RUN_USAGE]
    step_id: str | None  # type: ignore[assignment]  # null for a response's own totals
    from_status: StepStatusValue | RunStatusValue
    to_status: StepStatusValue | RunStatusValue
    occurred_at: int | float = Field(description="unix seconds, from the subject's own times")
    prompt_tokens: NonNegativeInt
    completion_tokens: NonNegativeInt
    total_tokens: NonNegativeInt
    steps_counted: NonNegativeInt
    model: str | None = Field(description="the run's model, as its payloads report it")
    cost_usd: float | None = Field(description=_COST)
    priced_model: str | None = Field(description=_PRICED)


class _RunIds(_Derived):
    type: DerivedType
    event_id: str = Field(description="deterministic UUIDv5: deduplicate on it")
    source: Source
    run_id: str
    thread_id: str | None
    assistant_id: str | None
    model: str | None = Field(
        description="the run's (or response's) model as the payload reports it; null until "
        "any payload of the run names it (an empty string names none)"
    )


class RunEvent(_RunIds):
    """Fields every derived event about a run (or a Responses response) carries."""

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
    cost_usd: float | None = Field(description=_COST)
    priced_model: str | None = Field(description=_PRICED)
    steps: StepCounts = Field(description="the run's steps by how they ended, those the "
                              "run's own end closed (ended_by_run) included")  # fmt: skip


BudgetLimit = Literal["tokens", "usd", "steps", "seconds"]


class RunBudgetExceeded(_RunIds):
    """The run passed one of the deployment's budgets (RUNSTEPS_BUDGET_*): published once
    per run and limit, atomically with the entry that crossed it (`seconds`: also by the
    scanner, for a run still in progress). runsteps reports; it does not stop the run."""

    type: Literal[DerivedType.RUN_BUDGET_EXCEEDED]
    limit: BudgetLimit
    budget: int | float = Field(description="the setting that was passed")
    value: int | float = Field(description="what the run reached")
    occurred_at: int | float = Field(description="unix seconds")


AnyDerived = Annotated[
    StepStarted
    | StepFinished
    | TransitionRejected
    | StepStalled
    | RunUsage
    | RunStarted
    | RunRequiresAction
    | RunFinished
    | RunTransitionRejected
    | RunBudgetExceeded,
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
