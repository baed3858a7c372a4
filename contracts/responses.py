"""The OpenAI Responses API objects: a response (a run) and its output items (steps).

The tracker reads a response's status and an item's status (or its absence); `response_phase`
and `item_phase` say what they mean. The streaming events that carry them, and the classifier
of source entries, are in `contracts.responses_events`.

Every model allows unknown fields and unknown item types: a newer API adding an item type, a tool
or a field must never make an entry undecodable.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .limits import NumericTimestamp, TokenCount, TrackedId

__all__ = [
    "IN_PROGRESS_ITEM_STATUSES",
    "TERMINAL_ITEM_STATUSES",
    "TERMINAL_RESPONSE_STATUSES",
    "ItemPhase",
    "ItemStatus",
    "OutputItem",
    "ResponseObject",
    "ResponsePhase",
    "ResponseStatus",
    "ResponseUsage",
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

    cached_tokens: TokenCount | None = None


class OutputTokensDetails(_ApiModel):
    """Breakdown of output tokens."""

    reasoning_tokens: TokenCount | None = None


class ResponseUsage(_ApiModel):
    """Tokens a response used; null until the response is terminal."""

    input_tokens: TokenCount
    output_tokens: TokenCount
    total_tokens: TokenCount
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

    id: TrackedId
    type: str
    status: str | None = None
    error: Any = None  # a string on mcp_call, an object elsewhere; only its nullness is read

    @property
    def tool(self) -> tuple[str, str, str | None] | None:
        """A tool call item's (id, type, name), or None for other items: the type without
        its `_call` (and `_tool`) suffix (function_call -> function, custom_tool_call ->
        custom), the id its `call_id` when it has one, the name its `name` when it has one."""
        if not self.type.endswith("_call"):
            return None
        extra = self.model_extra or {}
        call_id, name = extra.get("call_id"), extra.get("name")
        return (
            call_id if isinstance(call_id, str) and call_id else self.id,
            self.type.removesuffix("_call").removesuffix("_tool"),
            name if isinstance(name, str) else None,
        )


class ResponseObject(_ApiModel):
    """The `response` object a lifecycle event carries (a run)."""

    id: TrackedId
    object: Literal["response"] = "response"
    created_at: NumericTimestamp
    completed_at: NumericTimestamp | None = None  # set once the response ended
    status: ResponseStatus
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    usage: ResponseUsage | None = None
    output: list[OutputItem] = []
    conversation: ConversationRef | None = None
    prompt: PromptRef | None = None
    metadata: dict[str, str] | None = None
    model: str | None = None


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


# Globals, read per item: an Enum class's attribute is slow on Python 3.11 (ARCHITECTURE.md,
# "Hot path rules").
_IN_PROGRESS, _COMPLETED, _FAILED = ItemPhase.IN_PROGRESS, ItemPhase.COMPLETED, ItemPhase.FAILED


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
        return _IN_PROGRESS
    if item.error is not None:
        return _FAILED
    return _COMPLETED if closed else None
