"""Raw stream entry -> what the lifecycle acts on, or a Rejection for the DLQ.

Two dialects share the source stream: Assistants (objects with `object`, envelopes with
`event`) and Responses (events with `type`). Everything that can fail only because of an
entry's bytes fails here, with a precise reason: nothing after decoding depends on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from contracts.derived import DeadLetterError, DeadLetterKind, Source
from contracts.responses import ItemPhase, OutputItem, ResponseObject, item_phase
from contracts.responses_events import (
    RESPONSES_EVENT,
    IgnoredEvent,
    OutputItemEvent,
    ResponseLifecycleEvent,
    ResponsesErrorEvent,
)
from contracts.run import Run
from contracts.stream_events import (
    IGNORED_EVENTS,
    INBOUND,
    ErrorEntry,
    IgnoredEntry,
    RunEntry,
    StepEntry,
    classify,
)
from service.core.fastpath import FastStep, decode_fast
from service.core.reported import Item, ItemError, Reported, ReportedRun

__all__ = [
    "DUPLICATE_PREFIX",
    "IGNORED_OTHER",
    "Decoded",
    "ErrorReport",
    "Ignored",
    "Rejection",
    "Subjects",
    "decode_entry",
    "reported",
]

DATA_FIELD = b"data"
DUPLICATE_PREFIX = b"\x00dup"
"""The start of a renamed copy of a repeated field name (service/storage/replies.py renames
them as Redis replies are parsed, so that decoding can refuse the entry)."""
IGNORED_OTHER = "other"
"""The label of ignored events whose name is not one the protocols define."""
_DATA_COPY = b":" + DATA_FIELD  # how a renamed copy of it ends (service/storage/replies.py)

# The ignored events whose contract model (IgnoredEvent) accepts any `data`: no model is
# built for them. A step delta's envelope is validated (RunStepDeltaEvent).
_LOOSE_EVENTS = IGNORED_EVENTS - {"thread.run.step.delta"}
# Globals, not `Source.X` or `ItemPhase.X` per entry (ARCHITECTURE.md, "Hot path rules").
_ASSISTANTS, _RESPONSES = Source.ASSISTANTS, Source.RESPONSES
_IN_PROGRESS, _COMPLETED, _INCOMPLETE = (
    ItemPhase.IN_PROGRESS, ItemPhase.COMPLETED, ItemPhase.INCOMPLETE
)  # fmt: skip


# Most entries of a real stream: not frozen (ARCHITECTURE.md, "Hot path rules").
@dataclass(slots=True)
class Ignored:
    """An event with no lifecycle meaning (a delta, a message event, ...): acked and counted."""

    event: str  # its event name, the label it is counted under


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """An `error` event a producer forwarded: counted and logged (its message), acked."""

    message: str
    code: str | None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an entry cannot be processed; becomes the DLQ entry's `error` field."""

    kind: DeadLetterKind
    message: str
    errors: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        """The DLQ `error` field: kind, message and the validation errors."""
        return DeadLetterError(
            kind=self.kind, message=self.message, errors=self.errors
        ).model_dump_json()


Decoded = FastStep | StepEntry | RunEntry | Reported | Ignored | ErrorReport | Rejection
"""What one entry is: an Assistants step (fast path or contract) or run, a Responses event's
items and response, an ignored event, a forwarded error event, or a rejection."""

Subjects = FastStep | StepEntry | RunEntry | Reported
"""The decoded entries that move steps or runs (`reported` reads them alike)."""


def reported(decoded: Subjects) -> Reported:
    """What the worker reads of a decoded entry, whichever its dialect: the one place both
    dialects' steps and runs become `Reported` (a Responses event already is one)."""
    if isinstance(decoded, Reported):
        return decoded
    if isinstance(decoded, StepEntry):
        return Reported(_ASSISTANTS, (decoded.step,))
    if isinstance(decoded, RunEntry):
        return Reported(_ASSISTANTS, (), reported_run(decoded.run))
    return Reported(_ASSISTANTS, (decoded,))


_INT_PAST_64_BITS = "an integer past 64 bits"


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    # Keep loc/type/msg only: `input` would copy payload contents into the error.
    return [
        {"loc": [str(p) for p in e["loc"]], "type": e["type"], "msg": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]


def _invalid(exc: ValidationError) -> Rejection:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "<root>"
    # orjson reads an integer past 64 bits as a float, which pydantic then calls a string.
    message = _INT_PAST_64_BITS if first["type"] == "int_parsing_size" else first["msg"]
    return Rejection(DeadLetterKind.INVALID_PAYLOAD, f"{where}: {message}", _errors(exc))


def _data(fields: dict[bytes, bytes], max_bytes: int) -> bytes | Rejection:
    """The entry's one `data` field, or why there is none to decode."""
    data = fields.get(DATA_FIELD)
    if data is None:
        names = sorted(k.decode("utf-8", "replace") for k in fields)
        return Rejection(DeadLetterKind.MISSING_DATA, f"entry has no 'data' field (has {names})")
    if len(fields) > 1:
        copies = sum(k.startswith(DUPLICATE_PREFIX) and k.endswith(_DATA_COPY) for k in fields)
        if copies:
            return Rejection(
                DeadLetterKind.INVALID_PAYLOAD,
                f"duplicate field data: the entry has {copies + 1} 'data' fields",
            )
    if len(data) > max_bytes:
        return Rejection(
            DeadLetterKind.OVERSIZED, f"payload is {len(data)} bytes; the limit is {max_bytes}"
        )
    return data


def decode_entry(fields: dict[bytes, bytes], max_bytes: int, seen_at: float) -> Decoded:
    """Validate one source entry's `data` field into what the lifecycle acts on.

    Well-formed run steps take the msgspec fast path; everything else is parsed once and
    validated by the pydantic contracts, which also word every rejection. `seen_at` (the
    entry id's time) stands in for the times Responses items do not carry.
    """
    data = _data(fields, max_bytes)
    if isinstance(data, Rejection):
        return data
    fast = decode_fast(data)
    if fast is not None:
        return fast
    try:  # strict JSON: invalid UTF-8, nesting past 1024 levels, integers past 64 bits
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return Rejection(DeadLetterKind.INVALID_JSON, f"<root>: invalid JSON: {exc}")
    if not isinstance(value, dict):
        return Rejection(
            DeadLetterKind.INVALID_PAYLOAD,
            f"<root>: expected a JSON object, got {type(value).__name__}",
        )
    event = value.get("event")
    if event in _LOOSE_EVENTS and "object" not in value:
        return Ignored(event)  # most of a real stream; IgnoredEvent takes any `data` too
    if "type" in value and "event" not in value and "object" not in value:
        return _responses(value, seen_at)
    try:
        classified = classify(INBOUND.validate_python(value))
    except ValidationError as exc:
        return _invalid(exc)
    if isinstance(classified, StepEntry | RunEntry):
        # An envelope whose event contradicts its object's status (OpenAI itself streamed
        # `thread.run.completed` carrying an `incomplete` run) is tracked by the object's own
        # status; the processor counts the disagreement (`status_mismatch`).
        return classified
    if isinstance(classified, IgnoredEntry):
        return Ignored(classified.name if classified.known else IGNORED_OTHER)
    if isinstance(classified, ErrorEntry):
        return ErrorReport(classified.message, classified.code)
    raise AssertionError(f"unexpected entry {classified!r}")  # pragma: no cover


def reported_run(run: Run) -> ReportedRun:
    """An Assistants run as the worker reads it."""
    return ReportedRun(
        id=run.id,
        thread_id=run.thread_id,
        assistant_id=run.assistant_id,
        status=run.status,
        created_at=run.created_at,
        ended_at=run.ended_at,
        pending_tool_call_ids=list(run.pending_tool_call_ids),
        usage=None if run.usage is None else run.usage.model_dump(mode="json"),
        last_error=None if run.last_error is None else run.last_error.model_dump(mode="json"),
        incomplete_details=None
        if run.incomplete_details is None
        else run.incomplete_details.model_dump(mode="json"),
        model=run.model or None,  # an empty model names none
    )


def _item_error(item: OutputItem) -> ItemError | None:
    error = item.error
    if error is None:
        return None
    if isinstance(error, dict):
        return ItemError(str(error.get("code") or "error"), str(error.get("message") or ""))
    return ItemError("error", str(error))


def _item(
    item: OutputItem, response_id: str, phase: ItemPhase, created: float, ended: float
) -> Item:
    status = str(phase)
    tool = item.tool
    return Item(
        id=item.id,
        run_id=response_id,
        status=status,
        type=item.type,
        created_at=created,
        tools=() if tool is None else (tool,),
        terminal_at=None if status == "in_progress" else ended,
        last_error=_item_error(item) if status == "failed" else None,
    )


def _response_run(response: ResponseObject) -> ReportedRun:
    completed = response.completed_at
    terminal = response.status not in ("queued", "in_progress")
    usage = response.usage
    return ReportedRun(
        id=response.id,
        thread_id=None if response.conversation is None else response.conversation.id,
        assistant_id=None if response.prompt is None else response.prompt.id,
        status=response.status,
        created_at=response.created_at,
        ended_at=completed if terminal else None,
        usage=None if usage is None else usage.model_dump(mode="json", exclude_none=True),
        totals=None
        if usage is None
        else (usage.input_tokens, usage.output_tokens, usage.total_tokens),
        last_error=None
        if response.error is None
        else response.error.model_dump(mode="json", exclude_none=True),
        incomplete_details=None
        if response.incomplete_details is None
        else response.incomplete_details.model_dump(mode="json", exclude_none=True),
        model=response.model or None,
    )


def _responses(value: dict[str, Any], seen_at: float) -> Decoded:
    """A Responses event: items as steps, the response as the run."""
    try:
        event = RESPONSES_EVENT.validate_python(value)
    except ValidationError as exc:
        return _invalid(exc)
    if isinstance(event, IgnoredEvent):
        return Ignored(event.type)
    if isinstance(event, ResponsesErrorEvent):
        return ErrorReport(event.message, event.code)
    if isinstance(event, OutputItemEvent):
        phase = item_phase(event.item, closed=event.closed) or _IN_PROGRESS
        item = _item(event.item, event.response_id, phase, seen_at, seen_at)
        return Reported(_RESPONSES, (item,))
    assert isinstance(event, ResponseLifecycleEvent)
    response = event.response
    run = _response_run(response)
    items: tuple[Item, ...] = ()
    if run.ended_at is not None or response.status not in ("queued", "in_progress"):
        # A terminal response's output is the authority for every item in it: an item
        # still in progress when its response ends is closed as incomplete.
        ended = run.ended_at if run.ended_at is not None else seen_at
        items = tuple(
            _item(
                output,
                response.id,
                _INCOMPLETE if phase is _IN_PROGRESS else phase,
                response.created_at,
                ended,
            )
            for output in response.output
            if (phase := item_phase(output, closed=True) or _COMPLETED)
        )
    # Items name no conversation: the event carrying their response names its one.
    return Reported(_RESPONSES, items, run, (run.thread_id or "", run.assistant_id or ""))
