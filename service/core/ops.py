"""PURE: a reported step or run -> an `Op`, the effects its entry may have.

The worker never reads state before committing: the commit script decides each entry on
the state it finds (the table comes from `lifecycle`), so an entry carries the events its
decision will most likely publish (`core.published` says which, by action), ready to
append: a starting entry its start, an ending one its end and run.usage;
run.requires_action (with `%FROM%` where the tracked status goes). The rare ones, the start
of a subject first seen ended and a rejected second end, the script builds from the end's
ids (commit.lua), so no entry ships events it seldom needs. An event is its type and id,
its subject's ids (serialised once per entry, shared by its events), then its own fields,
in the exact shape and field order of the `contracts.derived` models; the tests validate
every event the worker writes against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from contracts.derived import (
    RUN_END_TYPES,
    STEP_END_TYPES,
    DerivedType,
    Source,
    StepFinished,
    event_id_for,
)
from service.core.layout import RunField, encode_prices, encode_tools, step_field
from service.core.lifecycle import RUNS, STEPS
from service.core.prices import Priced, Prices, TokenUsage
from service.core.published import Kind
from service.core.reported import ReportedRun, ReportedStep, ToolRef
from service.core.state import encode_run_state, encode_state

__all__ = ["FROM", "Op", "RunEnded", "StepEnded", "closed_step", "run_op", "step_op"]

FROM = "%FROM%"
"""Where the commit script writes the tracked status into a rejection."""

Event = dict[str, Any]


StepEnded = tuple[str, str, str, tuple[ToolRef, ...], float | None]
"""What a step's end says, for the domain metrics (counted once the commit says the op did
end it): (source, status, step type, tool calls, duration in seconds or None). A tuple, as
it is built per step end: a dataclass costs five times as much (bench/README.md)."""


@dataclass(slots=True)
class RunEnded:
    """What a run's end says, for the domain metrics (counted once the commit says the op
    did end it)."""

    source: str
    status: str
    model: str | None
    usage: TokenUsage | None  # what the API reports
    cost_usd: float | None


def closed_step(end_event: str) -> StepEnded:
    """What the end of a step its run's end closed says, for the domain metrics: the commit
    script builds that event (`ended_by_run` true) and returns it (Committed.also)."""
    event = StepFinished.model_validate_json(end_event)
    tools = tuple((t.id, t.type, t.name) for t in event.tools)
    return (str(event.source), event.to_status, event.step_type, tools, event.duration_s)


@dataclass(slots=True)  # built per entry: a frozen dataclass's __init__ costs more
class Op:
    """One source entry's possible effects on one subject; `storage.commit` sends it to the
    commit script (which fields, in which order, it declares there)."""

    kind: Kind
    source_id: bytes
    run_id: str
    thread_id: str  # the thread and assistant its entry names (checked against its run's)
    assistant_id: str
    status: str  # the incoming status's one-letter code (lifecycle.Machine.codes)
    field: str  # the subject's field in its run's hash (core.layout)
    state: str  # the subject's state string after this entry's own status
    names: str = ""  # "1" if its entry names a thread or assistant, else ""
    deadline: str = ""  # a starting step's stall deadline (unix seconds)
    # A starting op's start event; an ending op's start's last fields only (`"occurred_at":
    # ...}`): the script builds the rest from the end, if the subject was never seen.
    start_event: bytes = b""
    end_event: bytes = b""  # a run's goes without its closing brace: the script adds steps
    usage: str = ""  # tokens the entry reports, 'prompt,completion,total' (a response's own)
    usage_event: bytes = b""  # run.usage without its totals and closing brace
    round: str = ""  # a waiting run's round of tool calls (its first call id)
    wait_event: bytes = b""  # run.requires_action
    tools: str = ""  # a step's tool calls as its run's hash keeps them ('' for none)
    model: bytes = b""  # a run's model, as JSON ('' when its payload names none)
    prices: str = ""  # its prices as the run hash keeps them (core.layout.encode_prices)
    usage_cost: bytes = b""  # run.usage's cost fields for the run's own totals, priced here
    end_type: str = ""  # the end event's type, for counting what was published
    step_ended: StepEnded | None = None  # an ending step op's, for the domain metrics
    run_ended: RunEnded | None = None  # an ending run op's, for the domain metrics


def _dumps(event: Event) -> bytes:
    return orjson.dumps(event)


_OPENINGS = {t.value: f'{{"type":"{t.value}","event_id":"'.encode() for t in DerivedType}

# Globals, not `DerivedType.X` per op, and event types as plain strings, not members
# (ARCHITECTURE.md, "Hot path rules").
_STEP, _RUN, _STATE = Kind.STEP, Kind.RUN, RunField.STATE
_STARTED, _RUN_STARTED, _USAGE, _WAITING = (
    DerivedType.STARTED.value, DerivedType.RUN_STARTED.value, DerivedType.RUN_USAGE.value,
    DerivedType.RUN_REQUIRES_ACTION.value,
)  # fmt: skip
_STEP_ENDS = {status: type_.value for status, type_ in STEP_END_TYPES.items()}
_RUN_ENDS = {status: type_.value for status, type_ in RUN_END_TYPES.items()}


def _event(type_: str, event_id: str, ids: bytes, rest: Event) -> bytes:
    """One event: its type and id, its subject's ids (`_step_ids`), then `rest`'s fields.
    The ids are serialised once per entry and shared by every event it carries."""
    return b"".join((_OPENINGS[type_], event_id.encode(), b'",', ids, b",", _dumps(rest)[1:]))


def _step_ids(step: ReportedStep, source: Source) -> bytes:
    ids = {
        "source": source,
        "step_id": step.id,
        "run_id": step.run_id,
        "thread_id": step.thread_id,
        "assistant_id": step.assistant_id,
    }
    return _dumps(ids)[1:-1]


_NO_TOOLS = b"[]"


def _tools(tools: tuple[ToolRef, ...]) -> bytes:
    """A step's tool calls as its events list them."""
    if not tools:
        return _NO_TOOLS
    if len(tools) == 1:  # most tool steps: no list comprehension (bench/README.md, "tools")
        id_, type_, name = tools[0]
        return orjson.dumps(({"id": id_, "type": type_, "name": name},))
    return orjson.dumps([{"id": id_, "type": type_, "name": name} for id_, type_, name in tools])


def _token_usage(usage: dict[str, Any]) -> TokenUsage:
    """A run's usage as either API reports it (prompt/completion or input/output tokens, and
    their cached and reasoning details)."""
    inp = usage.get("prompt_tokens", usage.get("input_tokens")) or 0
    out = usage.get("completion_tokens", usage.get("output_tokens")) or 0
    inp_details = usage.get("prompt_token_details") or usage.get("input_tokens_details") or {}
    out_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    return TokenUsage(
        int(inp),
        int(out),
        int(inp_details.get("cached_tokens") or 0),
        int(out_details.get("reasoning_tokens") or 0),
    )


def _cost(priced: Priced | None) -> Event:
    if priced is None:
        return {"cost_usd": None, "priced_model": None}
    return {"cost_usd": priced.cost_usd, "priced_model": priced.priced_model}


def step_op(
    source_id: bytes,
    step: ReportedStep,
    source: Source,
    stall_deadline: int | float,
    identity: tuple[str, str] | None = None,
) -> Op:
    """The op of one reported step; `stall_deadline` is used if this starts it.

    `identity`: the (thread, assistant) its entry names, when not the step's own (a
    Responses item in an event that carries its response): the whole entry is checked
    against its run's, and held whole if it contradicts it.
    """
    status = step.status
    usage = step.usage
    triple = None if usage is None else (
        usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
    )  # fmt: skip
    error = step.last_error
    ended_at = step.terminal_at
    thread, assistant = identity or (step.thread_id or "", step.assistant_id or "")
    op = Op(
        kind=_STEP,
        source_id=source_id,
        run_id=step.run_id,
        thread_id=thread,
        assistant_id=assistant,
        names="1" if thread or assistant else "",
        status=STEPS.codes[status],
        field=step_field(step.id),
        state=encode_state(
            status,
            step.created_at,
            step.type,
            source,
            ended_at=ended_at,
            usage=triple,
            error_code=None if error is None else str(error.code),
        ),
    )
    ids = _step_ids(step, source)
    calls = step.tools
    tools = _tools(calls)
    if calls:  # kept short, else as the events list them (layout.encode_tools)
        kept = encode_tools(step.id, calls)
        op.tools = tools.decode() if kept is None else kept
    head = ids + b',"tools":' + tools  # a step event's ids, then its tools
    if status == "in_progress":
        op.deadline = str(int(stall_deadline))
        start: Event = {"from_status": None, "to_status": status, "occurred_at": step.created_at}
        start["step_type"] = step.type
        type_ = _STARTED
        op.start_event = _event(type_, event_id_for(step.run_id, step.id, type_), head, start)
        return op
    # The start's last fields: the script builds the rest from the end, if it needs it.
    op.start_event = _dumps({"occurred_at": step.created_at, "step_type": step.type})[1:]
    type_ = op.end_type = _STEP_ENDS[status]
    occurred_at = ended_at if ended_at is not None else step.created_at
    end: Event = {"from_status": "in_progress", "to_status": status, "occurred_at": occurred_at}
    end["step_type"] = step.type
    end["duration_s"] = None if ended_at is None else max(0, ended_at - step.created_at)
    end["usage"] = None if triple is None else {
        "prompt_tokens": triple[0], "completion_tokens": triple[1], "total_tokens": triple[2],
    }  # fmt: skip
    end["last_error"] = None if error is None else {"code": error.code, "message": error.message}
    end["ended_by_run"] = False
    op.end_event = _event(type_, event_id_for(step.run_id, step.id, type_), head, end)
    op.step_ended = (source, status, step.type, calls, end["duration_s"])
    if triple is not None:
        op.usage = "%d,%d,%d" % triple  # noqa: UP031  # the script parses exactly this
        usage_event: Event = {"from_status": "in_progress", "to_status": status}
        usage_event["occurred_at"] = occurred_at
        type_ = _USAGE
        usage_id = event_id_for(step.run_id, step.id, type_)
        # The script appends the totals and the brace.
        op.usage_event = _event(type_, usage_id, ids, usage_event)[:-1]
    return op


def _run_ids(run: ReportedRun, source: Source) -> bytes:
    ids = {
        "source": source,
        "run_id": run.id,
        "thread_id": run.thread_id,
        "assistant_id": run.assistant_id,
        "model": run.model,
    }
    return _dumps(ids)[1:-1]


def run_op(source_id: bytes, run: ReportedRun, source: Source, prices: Prices | None = None) -> Op:
    """The op of one reported run status; `prices` prices its model (none: unpriced)."""
    status = run.status
    terminal = RUNS.is_terminal(status)
    op = Op(
        kind=_RUN,
        source_id=source_id,
        run_id=run.id,
        thread_id=run.thread_id or "",
        assistant_id=run.assistant_id or "",
        names="1" if run.thread_id or run.assistant_id else "",
        status=RUNS.codes[status],
        field=_STATE,
        state=encode_run_state(status, run.created_at, run.ended_at if terminal else None),
    )
    ids = _run_ids(run, source)
    if run.model:
        op.model = orjson.dumps(run.model)
        vector = None if prices is None else prices.per_token(run.model, run.created_at)
        if vector is not None:
            op.prices = encode_prices(
                vector.input, vector.cached_input, vector.output, vector.priced_model
            )
    if terminal:  # the start's last field: the script builds the rest from the end
        op.start_event = _dumps({"occurred_at": run.created_at})[1:]
    else:
        type_ = _RUN_STARTED
        start: Event = {"from_status": None, "to_status": status, "occurred_at": run.created_at}
        op.start_event = _event(type_, event_id_for(run.id, "", type_), ids, start)
    if status == RUNS.waiting:
        calls = run.pending_tool_call_ids
        op.round = calls[0] if calls else ""
        type_ = _WAITING
        waiting: Event = {"from_status": FROM, "to_status": status}
        waiting["occurred_at"] = run.created_at
        waiting["tool_call_ids"] = calls
        op.wait_event = _event(type_, event_id_for(run.id, "", type_, op.round), ids, waiting)
    if not terminal:
        return op
    ended_at = run.ended_at
    occurred_at = ended_at if ended_at is not None else run.created_at
    usage = run.usage
    priced = None
    if usage is not None and prices is not None:
        priced = prices.cost(run.model, None, run.created_at, _token_usage(usage))
    if run.totals is not None:
        op.usage = "%d,%d,%d" % run.totals  # noqa: UP031  # the script parses exactly this
        op.usage_cost = _dumps(_cost(priced))[1:-1]
        type_ = _USAGE
        usage_ids = {
            "source": source,
            "step_id": None,  # RunUsage's field order: its totals name no step
            "run_id": run.id,
            "thread_id": run.thread_id,
            "assistant_id": run.assistant_id,
        }
        usage_event: Event = {"from_status": "in_progress", "to_status": status}
        usage_event["occurred_at"] = occurred_at
        usage_id = event_id_for(run.id, "", type_)
        # The script appends the totals and the brace.
        op.usage_event = _event(type_, usage_id, _dumps(usage_ids)[1:-1], usage_event)[:-1]
    type_ = op.end_type = _RUN_ENDS[status]
    end: Event = {"from_status": FROM, "to_status": status, "occurred_at": occurred_at}
    end["duration_s"] = None if ended_at is None else max(0, ended_at - run.created_at)
    end["usage"] = run.usage
    end["last_error"] = run.last_error
    end["incomplete_details"] = run.incomplete_details
    end |= _cost(priced)
    op.run_ended = RunEnded(
        source,
        status,
        run.model,
        None if usage is None else _token_usage(usage),
        None if priced is None else priced.cost_usd,
    )
    # The script appends the run's step counts and the brace.
    op.end_event = _event(type_, event_id_for(run.id, "", type_), ids, end)[:-1]
    return op
