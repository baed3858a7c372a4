"""What arrives on the source stream: a bare step, a streaming envelope, or a delta.

`INBOUND` picks the one model that fits by looking at `object` / `event` first, so an invalid
payload is reported against the model it was meant to be, never against all four.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, TypeAdapter

from .run_step import RunStep, StepStatus

__all__ = [
    "EVENT_STATUS",
    "INBOUND",
    "Inbound",
    "RunStepDelta",
    "RunStepDeltaEvent",
    "RunStepEvent",
    "StepEventLiteral",
    "StepEventName",
]


class StepEventName(StrEnum):
    """The Assistants streaming events that carry a run step (or a delta of one)."""

    CREATED = "thread.run.step.created"  # the step exists, in progress
    IN_PROGRESS = "thread.run.step.in_progress"  # the step is running
    DELTA = "thread.run.step.delta"  # part of the step's details streamed in
    COMPLETED = "thread.run.step.completed"  # the step finished normally
    FAILED = "thread.run.step.failed"  # the step failed
    CANCELLED = "thread.run.step.cancelled"  # the step was cancelled
    EXPIRED = "thread.run.step.expired"  # the step expired


# Plain strings, not enum members, so a bad name is reported as the names it should be.
StepEventLiteral = Literal[
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.run.step.completed",
    "thread.run.step.failed",
    "thread.run.step.cancelled",
    "thread.run.step.expired",
]

EVENT_STATUS: dict[str, StepStatus | None] = {
    StepEventName.CREATED: StepStatus.IN_PROGRESS,
    StepEventName.IN_PROGRESS: StepStatus.IN_PROGRESS,
    StepEventName.DELTA: None,
    StepEventName.COMPLETED: StepStatus.COMPLETED,
    StepEventName.FAILED: StepStatus.FAILED,
    StepEventName.CANCELLED: StepStatus.CANCELLED,
    StepEventName.EXPIRED: StepStatus.EXPIRED,
}


class RunStepEvent(BaseModel):
    """A streaming envelope carrying a whole run step."""

    model_config = ConfigDict(extra="allow")

    event: StepEventLiteral
    data: RunStep


class ToolCallDelta(BaseModel):
    """A fragment of one tool call; `index` says which call it belongs to."""

    model_config = ConfigDict(extra="allow")

    index: int
    id: str | None = None
    type: str | None = None


class StepDetailsDelta(BaseModel):
    """A fragment of step_details; kept loose because deltas are only counted."""

    model_config = ConfigDict(extra="allow")

    type: str
    message_creation: dict[str, Any] | None = None
    tool_calls: list[ToolCallDelta] | None = None


class RunStepDeltaBody(BaseModel):
    """The changed part of a step."""

    model_config = ConfigDict(extra="allow")

    step_details: StepDetailsDelta | None = None


class RunStepDelta(BaseModel):
    """A `thread.run.step.delta` object: part of a step's details, streamed."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["thread.run.step.delta"]
    delta: RunStepDeltaBody


class RunStepDeltaEvent(BaseModel):
    """A streaming envelope carrying a delta."""

    model_config = ConfigDict(extra="allow")

    event: Literal["thread.run.step.delta"]
    data: RunStepDelta


_MODEL_TAGS: tuple[tuple[type[BaseModel], str], ...] = (
    (RunStep, "step"),
    (RunStepEvent, "step_event"),
    (RunStepDelta, "delta"),
    (RunStepDeltaEvent, "delta_event"),
)


def _inbound_kind(value: Any) -> str | None:
    if not isinstance(value, dict):
        return next((tag for model, tag in _MODEL_TAGS if isinstance(value, model)), None)
    kind = value.get("object")
    if kind == "thread.run.step":
        return "step"
    if kind == "thread.run.step.delta":
        return "delta"
    if "event" in value:
        return "delta_event" if value["event"] == StepEventName.DELTA else "step_event"
    # An unknown `object` goes to RunStep, whose error then names the value it expects.
    return "step" if "object" in value else None


Inbound = Annotated[
    Annotated[RunStep, Tag("step")]
    | Annotated[RunStepEvent, Tag("step_event")]
    | Annotated[RunStepDelta, Tag("delta")]
    | Annotated[RunStepDeltaEvent, Tag("delta_event")],
    Discriminator(
        _inbound_kind,
        custom_error_type="inbound_kind_unknown",
        custom_error_message=(
            "expected a JSON object with 'object' (a run step or a delta) "
            "or 'event' (a streaming envelope)"
        ),
    ),
]

INBOUND: TypeAdapter[Inbound] = TypeAdapter(Inbound)
