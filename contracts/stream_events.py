"""What arrives on the source stream: the whole Assistants streaming protocol.

An entry's `data` is either a bare object as a GET endpoint returns it (`thread.run.step`,
`thread.run`, ...) or a streaming envelope `{"event": "<SSE event name>", "data": ...}`
(contracts.producer builds them). Steps and runs have a lifecycle and are validated in full;
messages, threads, deltas and `done` have none and are only recognised (they make up most of
a real stream); an `error` event carries the producer's failure message.

`INBOUND` picks the one model that fits by looking at `object` / `event` first, so an invalid
payload is reported against the model it was meant to be, never against all of them (the
same choice, as JSON Schema, makes the exported schema an if/then/else chain).
`classify_entry` turns an entry into one of four small results for the service. The module is
about 460 lines, over the usual 300: the protocol's 25 event names (each commented), the
models they carry and the dispatch between them are one table read top to bottom; the
classifier's results come last.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
    TypeAdapter,
    field_validator,
)
from pydantic_core import PydanticCustomError

from .dispatch import Dispatch, has, has_prefix, present
from .run import Run, RunStatus
from .run_step import RunStep, StepStatus

__all__ = [
    "EVENT_STATUS",
    "IGNORED_EVENTS",
    "IGNORED_OBJECTS",
    "INBOUND",
    "RUN_EVENT_STATUS",
    "Classified",
    "ErrorEntry",
    "ErrorEvent",
    "ErrorObject",
    "IgnoredEntry",
    "IgnoredEvent",
    "IgnoredObject",
    "Inbound",
    "RunEntry",
    "RunEvent",
    "RunEventLiteral",
    "RunStepDelta",
    "RunStepDeltaEvent",
    "RunStepEvent",
    "StepEntry",
    "StepEventLiteral",
    "StepEventName",
    "StreamEventName",
    "classify",
    "classify_entry",
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


class StreamEventName(StrEnum):
    """Every event name of the Assistants streaming protocol (the SSE `event:` field)."""

    THREAD_CREATED = "thread.created"  # a thread was created for the run (data: thread)
    RUN_CREATED = "thread.run.created"  # data: run, queued
    RUN_QUEUED = "thread.run.queued"  # data: run, queued
    RUN_IN_PROGRESS = "thread.run.in_progress"  # data: run, in_progress
    RUN_REQUIRES_ACTION = "thread.run.requires_action"  # data: run waiting for tool outputs
    RUN_COMPLETED = "thread.run.completed"  # data: run, completed
    RUN_INCOMPLETE = "thread.run.incomplete"  # data: run, ended early
    RUN_FAILED = "thread.run.failed"  # data: run, failed
    RUN_CANCELLING = "thread.run.cancelling"  # data: run, cancel requested
    RUN_CANCELLED = "thread.run.cancelled"  # data: run, cancelled
    RUN_EXPIRED = "thread.run.expired"  # data: run, expired
    STEP_CREATED = "thread.run.step.created"  # data: step, in_progress
    STEP_IN_PROGRESS = "thread.run.step.in_progress"  # data: step, in_progress
    STEP_DELTA = "thread.run.step.delta"  # data: step delta (part of step_details)
    STEP_COMPLETED = "thread.run.step.completed"  # data: step, completed
    STEP_FAILED = "thread.run.step.failed"  # data: step, failed
    STEP_CANCELLED = "thread.run.step.cancelled"  # data: step, cancelled
    STEP_EXPIRED = "thread.run.step.expired"  # data: step, expired
    MESSAGE_CREATED = "thread.message.created"  # data: message
    MESSAGE_IN_PROGRESS = "thread.message.in_progress"  # data: message
    MESSAGE_DELTA = "thread.message.delta"  # data: message delta (text streamed in)
    MESSAGE_COMPLETED = "thread.message.completed"  # data: message
    MESSAGE_INCOMPLETE = "thread.message.incomplete"  # data: message, ended early
    ERROR = "error"  # data: error object; the stream ends
    DONE = "done"  # data: the literal text [DONE]; the stream ended


# Plain strings, not enum members, so a bad name is reported as the names it should be.
StepEventLiteral = Literal[
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.run.step.completed",
    "thread.run.step.failed",
    "thread.run.step.cancelled",
    "thread.run.step.expired",
]
RunEventLiteral = Literal[
    "thread.run.created",
    "thread.run.queued",
    "thread.run.in_progress",
    "thread.run.requires_action",
    "thread.run.completed",
    "thread.run.incomplete",
    "thread.run.failed",
    "thread.run.cancelling",
    "thread.run.cancelled",
    "thread.run.expired",
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
"""Step event name -> the status it implies its step has (None: a delta, no status)."""

RUN_EVENT_STATUS: dict[str, RunStatus] = {
    StreamEventName.RUN_CREATED: RunStatus.QUEUED,  # a run is created queued
    StreamEventName.RUN_QUEUED: RunStatus.QUEUED,
    StreamEventName.RUN_IN_PROGRESS: RunStatus.IN_PROGRESS,
    StreamEventName.RUN_REQUIRES_ACTION: RunStatus.REQUIRES_ACTION,
    StreamEventName.RUN_COMPLETED: RunStatus.COMPLETED,
    StreamEventName.RUN_INCOMPLETE: RunStatus.INCOMPLETE,
    StreamEventName.RUN_FAILED: RunStatus.FAILED,
    StreamEventName.RUN_CANCELLING: RunStatus.CANCELLING,
    StreamEventName.RUN_CANCELLED: RunStatus.CANCELLED,
    StreamEventName.RUN_EXPIRED: RunStatus.EXPIRED,
}
"""Run event name -> the status it implies its run has (the run's own status wins)."""

IGNORED_EVENTS: frozenset[str] = frozenset(
    {
        StreamEventName.THREAD_CREATED,
        StreamEventName.STEP_DELTA,
        StreamEventName.MESSAGE_CREATED,
        StreamEventName.MESSAGE_IN_PROGRESS,
        StreamEventName.MESSAGE_DELTA,
        StreamEventName.MESSAGE_COMPLETED,
        StreamEventName.MESSAGE_INCOMPLETE,
        StreamEventName.DONE,
    }
)
"""Known event names with no lifecycle meaning (the step delta is counted, nothing more)."""

IGNORED_OBJECTS: frozenset[str] = frozenset(
    {"thread", "thread.message", "thread.message.delta", "thread.run.step.delta"}
)
"""Bare object kinds with no lifecycle meaning."""


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class RunStepEvent(_Loose):
    """A streaming envelope carrying a whole run step."""

    event: StepEventLiteral
    data: RunStep


class RunEvent(_Loose):
    """A streaming envelope carrying a whole run (`thread.run.*`)."""

    event: RunEventLiteral
    data: Run


class ToolCallDelta(_Loose):
    """A fragment of one tool call; `index` says which call it belongs to."""

    index: int
    id: str | None = None
    type: str | None = None


class StepDetailsDelta(_Loose):
    """A fragment of step_details; kept loose because deltas are only counted."""

    type: str
    message_creation: dict[str, Any] | None = None
    tool_calls: list[ToolCallDelta] | None = None


class RunStepDeltaBody(_Loose):
    """The changed part of a step."""

    step_details: StepDetailsDelta | None = None


class RunStepDelta(_Loose):
    """A `thread.run.step.delta` object: part of a step's details, streamed."""

    id: str
    object: Literal["thread.run.step.delta"]
    delta: RunStepDeltaBody


class RunStepDeltaEvent(_Loose):
    """A streaming envelope carrying a delta."""

    event: Literal["thread.run.step.delta"]
    data: RunStepDelta


class ErrorObject(_Loose):
    """The body of an `error` event: what went wrong on the producer's side."""

    message: str
    code: str | None = None
    type: str | None = None
    param: str | None = None


class ErrorEvent(_Loose):
    """An `error` streaming event; the stream it ends carries no more run or step events."""

    event: Literal["error"]
    data: ErrorObject


# `_known_or_thread` as JSON Schema: a known ignored name, or any `thread.*` one.
_KNOWN_IGNORED: list[JsonValue] = [str(name) for name in sorted(IGNORED_EVENTS)]
_IGNORED_EVENT_NAME: dict[str, JsonValue] = {
    "anyOf": [{"enum": _KNOWN_IGNORED}, {"pattern": r"^thread\."}]
}


class IgnoredEvent(_Loose):
    """An envelope with no lifecycle meaning: message events and deltas, `thread.created`,
    `done`, or an unknown `thread.*` event (a newer API's; counted as "other").

    `data` is anything (`done` carries the text "[DONE]"). Any other unknown name is invalid:
    it is no Assistants event, and an unknown `thread.run.*` name is sent to the run or step
    envelope instead, whose error lists the names it knows.
    """

    event: str = Field(json_schema_extra=_IGNORED_EVENT_NAME)
    data: Any = None

    @field_validator("event")
    @classmethod
    def _known_or_thread(cls, event: str) -> str:
        if event in IGNORED_EVENTS or event.startswith("thread."):
            return event
        raise PydanticCustomError(
            "stream_event_unknown",
            "unknown event '{event}': an Assistants stream sends thread.* events, "
            "'error' and 'done'",
            {"event": event[:60]},
        )


class IgnoredObject(_Loose):
    """A bare object with no lifecycle meaning (a thread, a message, a delta)."""

    object: Literal["thread", "thread.message", "thread.message.delta"]


_MODEL_TAGS: tuple[tuple[type[BaseModel], str], ...] = (
    (RunStep, "step"),
    (RunStepEvent, "step_event"),
    (RunStepDelta, "delta"),
    (RunStepDeltaEvent, "delta_event"),
    (Run, "run"),
    (RunEvent, "run_event"),
    (ErrorEvent, "error_event"),
    (IgnoredEvent, "ignored_event"),
    (IgnoredObject, "ignored_object"),
)
_OBJECT_TAGS = {
    "thread.run.step": "step",
    "thread.run.step.delta": "delta",
    "thread.run": "run",
    "thread": "ignored_object",
    "thread.message": "ignored_object",
    "thread.message.delta": "ignored_object",
}


def _event_kind(event: Any) -> str:
    if event == StepEventName.DELTA:
        return "delta_event"
    if not isinstance(event, str):
        return "ignored_event"  # whose `event: str` reports the bad type
    # An unknown name in a lifecycle namespace is a mistake, reported with the known names.
    if event.startswith("thread.run.step."):
        return "step_event"
    if event.startswith("thread.run."):
        return "run_event"
    return "error_event" if event == StreamEventName.ERROR else "ignored_event"


def _inbound_kind(value: Any) -> str | None:
    if not isinstance(value, dict):
        return next((tag for model, tag in _MODEL_TAGS if isinstance(value, model)), None)
    kind = value.get("object")
    if isinstance(kind, str) and kind in _OBJECT_TAGS:
        return _OBJECT_TAGS[kind]
    if "event" in value:
        return _event_kind(value["event"])
    # An unknown `object` goes to RunStep, whose error then names the value it expects.
    return "step" if "object" in value else None


def _object_rules() -> tuple[tuple[dict[str, Any], str], ...]:
    kinds: dict[str, list[str]] = {}
    for name, tag in _OBJECT_TAGS.items():
        kinds.setdefault(tag, []).append(name)
    return tuple((has("object", *names), tag) for tag, names in kinds.items())


# `_inbound_kind` as JSON Schema, rule for rule, first match wins (contracts.dispatch).
_INBOUND_KIND = Dispatch(
    _inbound_kind,
    rules=(
        *_object_rules(),
        (has("event", StepEventName.DELTA), "delta_event"),
        (has_prefix("event", "thread.run.step."), "step_event"),
        (has_prefix("event", "thread.run."), "run_event"),
        (has("event", StreamEventName.ERROR), "error_event"),
        (present("event"), "ignored_event"),
        (present("object"), "step"),
    ),
    otherwise={"type": "object", "anyOf": [present("object"), present("event")]},
)


Inbound = Annotated[
    Annotated[RunStep, Tag("step")]
    | Annotated[RunStepEvent, Tag("step_event")]
    | Annotated[RunStepDelta, Tag("delta")]
    | Annotated[RunStepDeltaEvent, Tag("delta_event")]
    | Annotated[Run, Tag("run")]
    | Annotated[RunEvent, Tag("run_event")]
    | Annotated[ErrorEvent, Tag("error_event")]
    | Annotated[IgnoredEvent, Tag("ignored_event")]
    | Annotated[IgnoredObject, Tag("ignored_object")],
    Discriminator(
        _INBOUND_KIND,
        custom_error_type="inbound_kind_unknown",
        custom_error_message=(
            "expected a JSON object with 'object' (a run step, a run, a thread, a message "
            "or a delta) or 'event' (a streaming envelope)"
        ),
    ),
]

INBOUND: TypeAdapter[Inbound] = TypeAdapter(Inbound)


@dataclass(frozen=True, slots=True)
class StepEntry:
    """A run step to track. `event` is its envelope's name, None when it came bare."""

    step: RunStep
    event: str | None = None

    @property
    def status_mismatch(self) -> bool:
        """True when the envelope's event implies another status than the step has (the
        step's own status is the truth: it is tracked by it)."""
        return self.event is not None and EVENT_STATUS[self.event] is not self.step.status


@dataclass(frozen=True, slots=True)
class RunEntry:
    """A run to track. `event` is its envelope's name, None when it came bare."""

    run: Run
    event: str | None = None

    @property
    def status_mismatch(self) -> bool:
        """True when the envelope's event implies another status than the run has (the run's
        own status is the truth: OpenAI streamed `thread.run.completed` carrying an
        `incomplete` run, tests/data/assistants/ruby-openai_streamed_incomplete_run.jsonl)."""
        return self.event is not None and RUN_EVENT_STATUS[self.event] is not self.run.status


@dataclass(frozen=True, slots=True)
class IgnoredEntry:
    """An entry with no lifecycle meaning, to acknowledge (and count by `name`).

    `name` is the event name (e.g. "thread.message.delta", "done") or, for a bare object,
    its `object` (e.g. "thread.message"); `known` is False for an unknown `thread.*` event
    (count it as "other"); `step_id` is set for a run step delta.
    """

    name: str
    known: bool = True
    step_id: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorEntry:
    """An `error` event: the producer's stream failed with `message` (and maybe `code`)."""

    message: str
    code: str | None = None


Classified = StepEntry | RunEntry | IgnoredEntry | ErrorEntry


def classify_entry(data: bytes | str) -> Classified:
    """What one source entry's `data` (JSON text) is, validated by `INBOUND`.

    Returns a StepEntry (a bare step or a `thread.run.step.*` envelope), a RunEntry (a bare
    run or a `thread.run.*` envelope), an IgnoredEntry (threads, messages, deltas, `done`,
    unknown `thread.*` events) or an ErrorEntry (an `error` event). An envelope whose event
    contradicts its object's status is returned as such, `status_mismatch` True: the object
    is what it says it is (the worker tracks it by its own status and counts the
    disagreement). Raises pydantic.ValidationError when `data` is not JSON
    (error type "json_invalid") or no valid entry (the errors point at the offending field).
    """
    return classify(INBOUND.validate_json(data))


def classify(parsed: Inbound) -> Classified:
    """`classify_entry` for a value `INBOUND` already validated."""
    if isinstance(parsed, RunStep):
        return StepEntry(parsed)
    if isinstance(parsed, RunStepEvent):
        return StepEntry(parsed.data, parsed.event)
    if isinstance(parsed, Run):
        return RunEntry(parsed)
    if isinstance(parsed, RunEvent):
        return RunEntry(parsed.data, parsed.event)
    if isinstance(parsed, RunStepDeltaEvent):
        return IgnoredEntry(parsed.event, step_id=parsed.data.id)
    if isinstance(parsed, RunStepDelta):
        return IgnoredEntry(parsed.object, step_id=parsed.id)
    if isinstance(parsed, ErrorEvent):
        return ErrorEntry(parsed.data.message, parsed.data.code)
    if isinstance(parsed, IgnoredEvent):
        return IgnoredEntry(parsed.event, known=parsed.event in IGNORED_EVENTS)
    return IgnoredEntry(parsed.object)
