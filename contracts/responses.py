"""The OpenAI Responses API dialect: streaming events, responses (runs) and output items (steps).

A source entry's `data` is one streaming event as the SDK serialises it. `classify_responses_entry`
sorts it into exactly one of: a response lifecycle event (carries the whole response), an output
item event (carries one item and the producer-added `response_id`), an event that is only counted
(deltas, content parts, tool progress), an `error` event, or an invalid entry with its reason.

Every model allows unknown fields and unknown item types: a newer API adding an item type, a tool
or a field must never make an entry undecodable.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    NonNegativeInt,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

__all__ = [
    "IN_PROGRESS_ITEM_STATUSES",
    "RESPONSES_EVENT",
    "TERMINAL_ITEM_STATUSES",
    "TERMINAL_RESPONSE_STATUSES",
    "IgnoredEvent",
    "InvalidResponsesEntry",
    "ItemEventType",
    "ItemPhase",
    "ItemStatus",
    "LifecycleEventType",
    "OutputItem",
    "OutputItemEvent",
    "ResponseLifecycleEvent",
    "ResponseObject",
    "ResponsePhase",
    "ResponseStatus",
    "ResponseUsage",
    "ResponsesErrorEvent",
    "ResponsesEvent",
    "classify_responses_entry",
    "item_phase",
    "response_phase",
]


class _ApiModel(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- responses (runs) --------------------------------------------------------------------------


class ResponseStatus(StrEnum):
    """Where a response is in its lifecycle, as `response.status` says."""

    QUEUED = "queued"  # accepted, waiting for a worker (background mode only)
    IN_PROGRESS = "in_progress"  # the model is producing output items
    COMPLETED = "completed"  # finished normally
    FAILED = "failed"  # ended by an error; `error` says which
    INCOMPLETE = "incomplete"  # ended early (e.g. max_output_tokens); `incomplete_details` says why
    CANCELLED = "cancelled"  # cancelled by the caller (background mode)


TERMINAL_RESPONSE_STATUSES: frozenset[ResponseStatus] = frozenset(ResponseStatus) - {
    ResponseStatus.QUEUED,
    ResponseStatus.IN_PROGRESS,
}


class ResponseError(_ApiModel):
    """Why a response failed."""

    code: str | None = None
    message: str | None = None


class IncompleteDetails(_ApiModel):
    """Why a response ended early, e.g. `max_output_tokens` or `content_filter`."""

    reason: str | None = None


class InputTokensDetails(_ApiModel):
    """Breakdown of input tokens."""

    cached_tokens: NonNegativeInt | None = None


class OutputTokensDetails(_ApiModel):
    """Breakdown of output tokens."""

    reasoning_tokens: NonNegativeInt | None = None


class ResponseUsage(_ApiModel):
    """Tokens a response used; null until the response is terminal."""

    input_tokens: NonNegativeInt
    output_tokens: NonNegativeInt
    total_tokens: NonNegativeInt
    input_tokens_details: InputTokensDetails | None = None
    output_tokens_details: OutputTokensDetails | None = None


class ConversationRef(_ApiModel):
    """The conversation a response belongs to."""

    id: str


class PromptRef(_ApiModel):
    """The stored prompt a response was made from."""

    id: str


class OutputItem(_ApiModel):
    """One output item (a step): a message, a tool call, reasoning, ... Any `type` is accepted.

    `status` is kept as the raw string: some item types have none (reasoning, mcp_list_tools,
    mcp_approval_request, compaction), and a status this contract does not know must not make
    the entry invalid. `item_phase` says what it means.
    """

    id: str
    type: str
    status: str | None = None
    error: Any = None  # a string on mcp_call, an object elsewhere; only its nullness is read


class ResponseObject(_ApiModel):
    """The `response` object a lifecycle event carries (a run)."""

    id: str
    object: Literal["response"] = "response"
    created_at: int | float
    status: ResponseStatus
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    usage: ResponseUsage | None = None
    output: list[OutputItem] = []
    conversation: ConversationRef | None = None
    prompt: PromptRef | None = None
    metadata: dict[str, str] | None = None


class ResponsePhase(StrEnum):
    """What a response's status means to the tracker."""

    IN_PROGRESS = "in_progress"  # queued or in_progress: exists, not finished
    COMPLETED = "completed"  # finished normally
    FAILED = "failed"  # ended by an error
    INCOMPLETE = "incomplete"  # ended early
    CANCELLED = "cancelled"  # cancelled by the caller


def response_phase(response: ResponseObject) -> ResponsePhase:
    """The phase of a response: `queued` counts as in progress, every other status maps 1:1."""
    if response.status is ResponseStatus.QUEUED:
        return ResponsePhase.IN_PROGRESS
    return ResponsePhase(response.status.value)


# --- output items (steps) ----------------------------------------------------------------------


class ItemStatus(StrEnum):
    """The item statuses the API documents (several are per tool)."""

    IN_PROGRESS = "in_progress"  # any item being produced
    SEARCHING = "searching"  # web_search_call / file_search_call running its search
    INTERPRETING = "interpreting"  # code_interpreter_call running code
    GENERATING = "generating"  # image_generation_call drawing
    CALLING = "calling"  # mcp_call waiting for the MCP server
    QUEUED = "queued"  # a tool call waiting to run
    COMPLETED = "completed"  # finished normally
    INCOMPLETE = "incomplete"  # cut short with its response (e.g. max_output_tokens)
    FAILED = "failed"  # the tool call failed


IN_PROGRESS_ITEM_STATUSES: frozenset[ItemStatus] = frozenset(
    {
        ItemStatus.IN_PROGRESS,
        ItemStatus.SEARCHING,
        ItemStatus.INTERPRETING,
        ItemStatus.GENERATING,
        ItemStatus.CALLING,
        ItemStatus.QUEUED,
    }
)
TERMINAL_ITEM_STATUSES: frozenset[ItemStatus] = frozenset(ItemStatus) - IN_PROGRESS_ITEM_STATUSES


class ItemPhase(StrEnum):
    """What an item's status (or its absence) means to the tracker."""

    IN_PROGRESS = "in_progress"  # started, not finished
    COMPLETED = "completed"  # finished normally
    INCOMPLETE = "incomplete"  # cut short
    FAILED = "failed"  # failed


def item_phase(item: OutputItem, *, closed: bool = False) -> ItemPhase | None:
    """The phase of an output item; `closed` says the item was seen closed.

    An item is closed when it arrives in `response.output_item.done` or in the `output` of a
    response whose status is terminal (some items get no `output_item.done` at all).

    - A documented terminal status maps to its phase; a documented in-progress status
      (`in_progress`, `searching`, `interpreting`, `generating`, `calling`, `queued`) maps to
      IN_PROGRESS even when closed: recorded streams close items that still say `generating`
      (Azure image generation) or `in_progress` (a function call awaiting the caller's output),
      and what a response's end means for such an item is the tracker's decision.
    - With no status, or a status this contract does not know (a newer API's word is not
      guessed at): FAILED if the item carries a non-null `error`, else COMPLETED if closed,
      else None, meaning "open, no status".
    """
    status = item.status
    if status in TERMINAL_ITEM_STATUSES:
        return ItemPhase(status)
    if status in IN_PROGRESS_ITEM_STATUSES:
        return ItemPhase.IN_PROGRESS
    if item.error is not None:
        return ItemPhase.FAILED
    return ItemPhase.COMPLETED if closed else None


# --- streaming events --------------------------------------------------------------------------

# Plain strings, not enum members, so a bad name is reported as the names it should be.
LifecycleEventType = Literal[
    "response.created",
    "response.queued",
    "response.in_progress",
    "response.completed",
    "response.failed",
    "response.incomplete",
    "response.cancelled",
]
ItemEventType = Literal["response.output_item.added", "response.output_item.done"]

_LIFECYCLE_TYPES: frozenset[str] = frozenset(
    {
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.failed",
        "response.incomplete",
        "response.cancelled",
    }
)
_ITEM_TYPES: frozenset[str] = frozenset({"response.output_item.added", "response.output_item.done"})


class ResponseLifecycleEvent(_ApiModel):
    """An event carrying the whole response; `response.status` is the truth, not `type`.

    (OpenAI-compatible servers have been seen sending `response.completed` with status
    `incomplete`; the status is what the response says it is.)
    """

    type: LifecycleEventType
    response: ResponseObject
    sequence_number: NonNegativeInt | None = None

    @property
    def response_id(self) -> str:
        """The id of the response (the run)."""
        return self.response.id


class OutputItemEvent(_ApiModel):
    """`response.output_item.added` / `.done`: one item, and the response it belongs to.

    `response_id` is not sent by the API: the producer adds it (see `contracts.responses_producer`).
    """

    type: ItemEventType
    response_id: str
    output_index: NonNegativeInt
    item: OutputItem
    sequence_number: NonNegativeInt | None = None

    @property
    def closed(self) -> bool:
        """True for `response.output_item.done`."""
        return self.type == "response.output_item.done"


class IgnoredEvent(_ApiModel):
    """Any other `response.*` event (deltas, content parts, tool progress): counted by `type`."""

    type: str
    sequence_number: NonNegativeInt | None = None


class ResponsesErrorEvent(_ApiModel):
    """A streamed `error` event.

    The API documents `code` / `message` at the top level; recorded streams also nest them
    under `error` (`{"type":"error","error":{"code":...,"message":...}}`); both are read.
    """

    type: Literal["error"]
    message: str
    code: str | None = None
    response_id: str | None = None  # added by the producer once a response is known
    sequence_number: NonNegativeInt | None = None

    @model_validator(mode="before")
    @classmethod
    def _lift_nested_error(cls, data: Any) -> Any:
        if isinstance(data, dict) and "message" not in data:
            nested = data.get("error")
            if isinstance(nested, dict) and "message" in nested:
                return {"code": nested.get("code"), **data, "message": nested["message"]}
        return data


ResponsesEvent = ResponseLifecycleEvent | OutputItemEvent | IgnoredEvent | ResponsesErrorEvent


def _event_kind(value: Any) -> str | None:
    if not isinstance(value, dict):
        return next((tag for model, tag in _MODEL_TAGS if isinstance(value, model)), None)
    kind = value.get("type")
    if kind in _LIFECYCLE_TYPES:
        return "lifecycle"
    if kind in _ITEM_TYPES:
        return "item"
    if kind == "error":
        return "error"
    if isinstance(kind, str) and kind.startswith("response."):
        return "ignored"
    return None


_MODEL_TAGS: tuple[tuple[type[BaseModel], str], ...] = (
    (ResponseLifecycleEvent, "lifecycle"),
    (OutputItemEvent, "item"),
    (ResponsesErrorEvent, "error"),
    (IgnoredEvent, "ignored"),
)

RESPONSES_EVENT: TypeAdapter[ResponsesEvent] = TypeAdapter(
    Annotated[
        Annotated[ResponseLifecycleEvent, Tag("lifecycle")]
        | Annotated[OutputItemEvent, Tag("item")]
        | Annotated[ResponsesErrorEvent, Tag("error")]
        | Annotated[IgnoredEvent, Tag("ignored")],
        Discriminator(
            _event_kind,
            custom_error_type="responses_event_unknown",
            custom_error_message=(
                "expected a JSON object whose 'type' is 'error' or a 'response.*' event"
            ),
        ),
    ]
)


class InvalidResponsesEntry(BaseModel):
    """An entry that is not a valid Responses event, and exactly why."""

    model_config = ConfigDict(frozen=True)

    reason: str
    type: str | None = None  # the entry's `type`, when it has a string one


_RESPONSE_ID_HINT = "the producer adds it to every event without a 'response' object"


def _reason(error: ValidationError, event_type: str | None) -> str:
    first = error.errors(include_url=False)[0]
    message = first["msg"]
    if event_type is None or _event_kind({"type": event_type}) is None:
        # Not JSON, not an object, or no event of this dialect: nothing to point into.
        return f"type {event_type!r}: {message}" if event_type is not None else message
    # Inside the tagged union the first location is the tag; the event type says more.
    path = ".".join(str(part) for part in first["loc"][1:])
    if path == "response_id" and first["type"] == "missing":
        message = f"{message} ({_RESPONSE_ID_HINT})"
    return f"{event_type} {path}: {message}" if path else f"{event_type}: {message}"


def _type_of(data: bytes | str) -> str | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) else None


def classify_responses_entry(data: bytes | str) -> ResponsesEvent | InvalidResponsesEntry:
    """Classify an entry's `data` JSON; never raises for bad bytes, says why instead."""
    try:
        return RESPONSES_EVENT.validate_json(data)
    except ValidationError as error:
        event_type = _type_of(data)
        return InvalidResponsesEntry(reason=_reason(error, event_type), type=event_type)
