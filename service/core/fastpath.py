"""The hot path's decoder: msgspec mirrors of the contracts, checked as strictly.

`contracts` stays the published, pydantic definition of a run step; decoding every entry
with it is several times slower (`python -m bench micro` measures both). These msgspec
structs accept a subset of what the pydantic models accept (strict types, same limits, same
required fields, same discriminators) at a fraction of the cost. Whatever they do not
accept goes to pydantic, which either accepts it (lax input such as "123" for an int) or
rejects it with the error the dead-letter entry carries. tests/contract/test_fastpath.py
checks the subset claim on valid, invalid, generated and recorded payloads.

Rarer shapes the contracts tolerate are left to pydantic on purpose: a tool call of a type
the contracts do not model (Azure's bing_grounding, ...), times in milliseconds (pydantic
reads them, contracts/limits.py), Azure's `activities` steps (no
struct here, so they fail the details union), PHP's `[]` for an empty map, and
any field the structs do not declare (`_Known`). tests/contract/test_fastpath_hostile.py
checks the subset claim on hostile mutations of every recorded entry.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from contracts.limits import MAX_ID_CHARS, MAX_TOKENS, MS_FROM, id_fault
from contracts.run_step import (
    METADATA_MAX_KEY_CHARS,
    METADATA_MAX_KEYS,
    METADATA_MAX_VALUE_CHARS,
    StepStatus,
    StepType,
)
from contracts.stream_events import EVENT_STATUS, StepEventLiteral
from service.core.reported import ToolRef

__all__ = ["FastStep", "decode_fast"]

# contracts.limits, as msgspec constraints; an id's characters are checked after decoding.
_Tokens = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]
_Time = Annotated[int, msgspec.Meta(ge=0, lt=MS_FROM)]  # milliseconds: left to pydantic
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]


class _Known(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """No unknown fields: msgspec skips unknown content without checking it as strictly as
    orjson does (invalid UTF-8, lone surrogate escapes, numbers past a double, nesting), so
    a payload with any is left to pydantic. The fields real producers add are declared."""


class _Usage(_Known, frozen=True):
    prompt_tokens: _Tokens
    completion_tokens: _Tokens
    total_tokens: _Tokens
    # Recorded OpenAI steps carry these; kept as extras by the contract, unread.
    prompt_token_details: dict[str, int] | None = None
    completion_tokens_details: dict[str, int] | None = None


class _LastError(_Known, frozen=True):
    code: str  # any code, as LastError keeps it
    message: str


class _MessageCreation(_Known, frozen=True):
    message_id: str


class _MessageCreationDetails(_Known, frozen=True, tag="message_creation"):
    message_creation: _MessageCreation


class _LogsOutput(_Known, frozen=True, tag="logs"):
    logs: str


class _ImageFile(_Known, frozen=True):
    file_id: str


class _ImageOutput(_Known, frozen=True, tag="image"):
    image: _ImageFile


class _CodeInterpreter(_Known, frozen=True):
    input: str
    outputs: list[_LogsOutput | _ImageOutput]


class _CodeInterpreterCall(_Known, frozen=True, tag="code_interpreter"):
    id: str
    code_interpreter: _CodeInterpreter


class _RankingOptions(_Known, frozen=True):
    ranker: str
    score_threshold: float


class _FileSearchContent(_Known, frozen=True):
    # Not a tag: msgspec requires a tag only inside a union, and pydantic requires `type`.
    type: Literal["text"]
    text: str


class _FileSearchResult(_Known, frozen=True):
    file_id: str
    file_name: str
    score: float
    content: list[_FileSearchContent] | None = None
    attributes: dict[str, str | int | float | bool] | None = None  # an extra to the contract


class _FileSearch(_Known, frozen=True):
    ranking_options: _RankingOptions | None = None
    results: list[_FileSearchResult] | None = None


class _FileSearchCall(_Known, frozen=True, tag="file_search"):
    id: str
    file_search: _FileSearch


class _FunctionCall(_Known, frozen=True):
    name: str
    arguments: str
    output: str | None = None


class _FunctionCallItem(_Known, frozen=True, tag="function"):
    id: str
    function: _FunctionCall


class _ToolCallsDetails(_Known, frozen=True, tag="tool_calls"):
    tool_calls: list[_CodeInterpreterCall | _FileSearchCall | _FunctionCallItem]


def _tool_ref(call: _CodeInterpreterCall | _FileSearchCall | _FunctionCallItem) -> ToolRef:
    """A tool call as `contracts.RunStep.tools` names it: (id, type, name)."""
    if isinstance(call, _FunctionCallItem):
        return (call.id, "function", call.function.name)
    kind = "code_interpreter" if isinstance(call, _CodeInterpreterCall) else "file_search"
    return (call.id, kind, None)


# Globals, not `StepStatus.X` per call (ARCHITECTURE.md, "Hot path rules").
_COMPLETED, _FAILED, _CANCELLED, _EXPIRED = (
    StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.EXPIRED
)  # fmt: skip

_Metadata = Annotated[
    dict[
        Annotated[str, msgspec.Meta(max_length=METADATA_MAX_KEY_CHARS)],
        Annotated[str, msgspec.Meta(max_length=METADATA_MAX_VALUE_CHARS)],
    ],
    msgspec.Meta(max_length=METADATA_MAX_KEYS),
]


class FastStep(_Known, frozen=True, kw_only=True):
    """A run step, field for field as `contracts.RunStep` (inside an envelope `object` may
    be left out, as there); a step with unknown fields is left to RunStep, which keeps them."""

    id: _Id
    created_at: _Time
    assistant_id: str
    thread_id: str
    run_id: _Id
    type: StepType
    status: StepStatus
    step_details: _MessageCreationDetails | _ToolCallsDetails
    object: Literal["thread.run.step"] = "thread.run.step"
    last_error: _LastError | None = None
    expired_at: _Time | None = None
    cancelled_at: _Time | None = None
    failed_at: _Time | None = None
    completed_at: _Time | None = None
    expires_at: _Time | None = None
    metadata: _Metadata | None = None
    usage: _Usage | None = None

    @property
    def tools(self) -> tuple[ToolRef, ...]:
        """(id, type, name) of each tool call, as `contracts.RunStep.tools` says."""
        details = self.step_details
        if not isinstance(details, _ToolCallsDetails):
            return ()
        calls = details.tool_calls
        if len(calls) == 1:  # most steps: no generator (bench/README.md, "tools")
            return (_tool_ref(calls[0]),)
        return tuple([_tool_ref(call) for call in calls])

    @property
    def terminal_at(self) -> int | None:
        """When the step reached its terminal status, or None (in progress, incomplete);
        an expired step without `expired_at` expired at `expires_at`, as RunStep says."""
        status = self.status
        if status is _COMPLETED:
            return self.completed_at
        if status is _FAILED:
            return self.failed_at
        if status is _CANCELLED:
            return self.cancelled_at
        if status is _EXPIRED:
            return self.expired_at if self.expired_at is not None else self.expires_at
        return None


class _BareStep(FastStep, frozen=True, kw_only=True):
    # A bare entry is told apart from an envelope or a delta by `object`: required here.
    object: Literal["thread.run.step"]


# No unknown fields: RunStepEvent allows them, but a payload with an `object` beside `event`
# is a bare step to pydantic's discriminator, so anything unusual goes that way.
class _Envelope(_Known, frozen=True):
    event: StepEventLiteral
    data: FastStep


_STEP = msgspec.json.Decoder(_BareStep)
_ENVELOPE = msgspec.json.Decoder(_Envelope)
_DETAILS_TAG = {_MessageCreationDetails: StepType.MESSAGE_CREATION,
                _ToolCallsDetails: StepType.TOOL_CALLS}  # fmt: skip


def decode_fast(data: bytes) -> FastStep | None:
    """The step in `data` (bare or in its streaming envelope), or None: ask pydantic."""
    try:
        if data.startswith(b'{"event"'):
            envelope = _ENVELOPE.decode(data)
            step = envelope.data
            if EVENT_STATUS[envelope.event] is not step.status:
                return None  # the contract path keeps the event name: the disagreement is counted
        else:
            step = _STEP.decode(data)
    # Not DecodeError (ValidationError included) alone: msgspec raises UnicodeDecodeError on
    # invalid UTF-8 in a string and RecursionError on deep nesting. Whatever the fast path
    # cannot decode, decode_entry judges, with the reason.
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if _DETAILS_TAG[type(step.step_details)] is not step.type:
        return None
    if id_fault(step.id) or id_fault(step.run_id):
        return None
    return step
