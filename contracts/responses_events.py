"""The Responses API streaming events, and the classifier that sorts a source entry into one.

A source entry's `data` is one streaming event as the SDK serialises it. `classify_responses_entry`
sorts it into exactly one of: a response lifecycle event (carries the whole response), an output
item event (carries one item and the producer-added `response_id`), an event that is only counted
(deltas, content parts, tool progress), an `error` event, or an invalid entry with its reason.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, get_args

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

from .dispatch import Dispatch, has, has_prefix
from .limits import TrackedId
from .responses import OutputItem, ResponseObject

__all__ = [
    "RESPONSES_EVENT",
    "IgnoredEvent",
    "InvalidResponsesEntry",
    "ItemEventType",
    "LifecycleEventType",
    "OutputItemEvent",
    "ResponseLifecycleEvent",
    "ResponsesErrorEvent",
    "ResponsesEvent",
    "classify_responses_entry",
]


class _ApiModel(BaseModel):
    model_config = ConfigDict(extra="allow")


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

_LIFECYCLE_TYPES: frozenset[str] = frozenset(get_args(LifecycleEventType))
_ITEM_TYPES: frozenset[str] = frozenset(get_args(ItemEventType))


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
    response_id: TrackedId
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


def _message_here_or_nested(schema: dict[str, Any]) -> None:
    # The JSON Schema side of `_lift_nested_error`: `message` at the top level, or under
    # `error` when it is not at the top level.
    schema["required"].remove("message")
    message = {"type": "string"}
    nested = {"type": "object", "required": ["message"], "properties": {"message": message}}
    schema["anyOf"] = [
        {"required": ["message"], "properties": {"message": message}},
        {"required": ["error"], "properties": {"error": nested}},
    ]


class ResponsesErrorEvent(_ApiModel):
    """A streamed `error` event.

    The API documents `code` / `message` at the top level; recorded streams also nest them
    under `error` (`{"type":"error","error":{"code":...,"message":...}}`); both are read.
    """

    model_config = ConfigDict(json_schema_extra=_message_here_or_nested)

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

# `_event_kind` as JSON Schema, rule for rule, first match wins (contracts.dispatch).
_EVENT_KIND = Dispatch(
    _event_kind,
    rules=(
        (has("type", *get_args(LifecycleEventType)), "lifecycle"),
        (has("type", *get_args(ItemEventType)), "item"),
        (has("type", "error"), "error"),
        (has_prefix("type", "response."), "ignored"),
    ),
    otherwise=has_prefix("type", "response."),
)

RESPONSES_EVENT: TypeAdapter[ResponsesEvent] = TypeAdapter(
    Annotated[
        Annotated[ResponseLifecycleEvent, Tag("lifecycle")]
        | Annotated[OutputItemEvent, Tag("item")]
        | Annotated[ResponsesErrorEvent, Tag("error")]
        | Annotated[IgnoredEvent, Tag("ignored")],
        Discriminator(
            _EVENT_KIND,
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
