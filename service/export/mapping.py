"""Derived events -> span records, after the OpenTelemetry GenAI semantic conventions.

Pure: no Redis, no OpenTelemetry SDK (otlp.py turns the records into the SDK's spans). The
convention followed is the GenAI agent and tool spans of open-telemetry/semantic-conventions-
genai at commit e8fc5751 (`docs/gen-ai/gen-ai-agent-spans.md`, status Development; it builds
on semantic-conventions v1.41.1). README.md, "Traces (OpenTelemetry)", has the mapping table.

A span is sent once, whole, with its end: so only a terminal event makes one. A run's end
(`run.<terminal>`) becomes its `invoke_agent` span; a step's end (`run_step.<terminal>`)
becomes one `execute_tool {tool}` span per tool call (tool steps) or one `chat` span (message,
reasoning and every other step). Every other event (`*.started`, `run.usage`,
`run.requires_action`, `*.transition_rejected`, `run_step.stalled`, `run.budget_exceeded`)
makes no span: what it says is in the terminal event's span, or it has no place in a trace.

Written against the derived-event contract's version 3: step events name their tool calls
(`tools`), run events their `model`, a run's end its `cost_usd` and `priced_model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from contracts.derived import RUN_END_TYPES, STEP_END_TYPES, AnyDerived, RunFinished, StepFinished
from service.export.ids import span_id_for, trace_id_for

__all__ = [
    "ERROR_STATUSES",
    "SEMCONV",
    "SPAN_TYPES",
    "Extent",
    "SpanKind",
    "SpanRecord",
    "UnmappableError",
    "needs_extent",
    "spans_of",
]

SEMCONV = "open-telemetry/semantic-conventions-genai@e8fc5751 (on semconv v1.41.1)"
"""The version of the GenAI conventions the mapping follows."""

SPAN_TYPES = frozenset({*STEP_END_TYPES.values(), *RUN_END_TYPES.values()})
"""The derived event types that make spans (StepFinished's and RunFinished's): spans_of
makes none of any other."""

ERROR_STATUSES = frozenset({"failed", "expired", "cancelled"})
"""Terminal statuses whose span has status ERROR and `error.type` (the `last_error.code`, or
the status itself when there is none). `completed` and `incomplete` leave it unset."""

# Nanoseconds must fit OTLP's fixed64: a time past 2**64 ns (the year 2554) cannot be sent.
_MAX_NS = 2**64 - 1

# gen_ai.tool.type's well-known values: a function the application runs (`function`), a
# tool the provider runs on the agent's behalf (`extension`), a retrieval store
# (`datastore`). The tool's own type is kept as `runsteps.tool.type`.
_TOOL_TYPES = {"function": "function", "custom": "function", "file_search": "datastore"}

_TOKENS = (
    ("gen_ai.usage.input_tokens", "prompt_tokens", "input_tokens"),
    ("gen_ai.usage.output_tokens", "completion_tokens", "output_tokens"),
)

Attributes = dict[str, str | bool | int | float]
Extent = tuple[float, float]
"""The earliest start and the latest end (unix seconds) of a run's tracked steps."""


class UnmappableError(ValueError):
    """A valid derived event that cannot become a span (the reason is the message)."""


class SpanKind(StrEnum):
    """The span kinds the conventions give each operation."""

    CLIENT = "client"  # invoke_agent (a remote agent service) and chat (a model call)
    INTERNAL = "internal"  # execute_tool


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One span, whole: ids, name, times (unix nanoseconds), attributes and error."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int | None  # the run's span for a step, None for the run's own
    kind: SpanKind
    start_ns: int
    end_ns: int
    attributes: Attributes = field(default_factory=dict)
    error_type: str | None = None  # set: status ERROR with this `error.type`
    error_message: str | None = None  # the status description


def _get(obj: BaseModel | dict[str, Any] | None, name: str) -> Any:
    """A field of a model or of an API object the contract keeps as a dict (a run's
    `last_error`, `incomplete_details`), None when absent."""
    if obj is None:
        return None
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _ns(seconds: float) -> int:
    ns = seconds * 1_000_000_000 if isinstance(seconds, int) else round(seconds * 1e9)
    if not 0 <= ns <= _MAX_NS:
        raise UnmappableError(f"time {seconds!r} is outside what OTLP can carry (0 to 2**64 ns)")
    return ns


def _times(occurred_at: float, duration_s: float | None) -> tuple[float, float]:
    """(start, end) in seconds: a terminal event happens at the end; without a known end
    (`duration_s` null) it happens at the subject's start and the span has no length."""
    if duration_s is None:
        return occurred_at, occurred_at
    return occurred_at - duration_s, occurred_at


def _common(event: StepFinished | RunFinished, operation: str, provider: str) -> Attributes:
    attrs: Attributes = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": provider,
        "runsteps.run.id": event.run_id,
        "runsteps.source": str(event.source),
        "runsteps.status": event.to_status,
        "runsteps.event.id": event.event_id,
    }
    if event.assistant_id is not None:
        attrs["gen_ai.agent.id"] = event.assistant_id
    if event.thread_id is not None:
        attrs["gen_ai.conversation.id"] = event.thread_id
    return attrs


def _error(event: StepFinished | RunFinished) -> tuple[str | None, str | None]:
    if event.to_status not in ERROR_STATUSES:
        return None, None
    code, message = _get(event.last_error, "code"), _get(event.last_error, "message")
    return (str(code) if code else event.to_status), (str(message) if message else None)


def _tokens(attrs: Attributes, usage: Any) -> None:
    """gen_ai.usage.*: Assistants' prompt/completion tokens or Responses' input/output."""
    if usage is None:
        return
    fields = usage if isinstance(usage, dict) else vars(usage)
    for attr, first, second in _TOKENS:
        value = fields.get(first, fields.get(second))
        if isinstance(value, int):
            attrs[attr] = value


def _tools(event: StepFinished) -> list[tuple[str, str, str | None]]:
    """(call id, type, name) of each tool call of a tool step; [] for other steps.

    A tool step whose calls were never reported (`tools` empty: an Assistants step seen
    only by its status) still gets one span: an Assistants `tool_calls` step (its tool
    unknown) or a Responses `*_call` item (its type names the tool type)."""
    if event.tools:
        return [(t.id, t.type, t.name) for t in event.tools]
    kind = event.step_type
    if kind == "tool_calls":
        return [("", "", None)]
    if "_call" in kind:  # function_call, web_search_call, mcp_call, shell_call_output, ...
        return [("", kind.partition("_call")[0], None)]
    return []


def _step_spans(event: StepFinished, provider: str) -> list[SpanRecord]:
    start, end = _times(event.occurred_at, event.duration_s)
    start_ns, end_ns = _ns(start), _ns(end)
    trace_id, parent = trace_id_for(event.run_id), span_id_for(event.run_id)
    error_type, message = _error(event)
    base: Attributes = {"runsteps.step.id": event.step_id, "runsteps.step.type": event.step_type}
    base["runsteps.step.ended_by_run"] = event.ended_by_run
    if error_type is not None:
        base["error.type"] = error_type
    tools = _tools(event)
    if not tools:
        attrs = _common(event, "chat", provider) | base
        _tokens(attrs, event.usage)
        return [
            SpanRecord("chat", trace_id, span_id_for(event.run_id, event.step_id), parent,
                       SpanKind.CLIENT, start_ns, end_ns, attrs, error_type, message)
        ]  # fmt: skip
    spans = []
    for index, (call_id, tool_type, name) in enumerate(tools):
        attrs = _common(event, "execute_tool", provider) | base
        tool_name = name or tool_type
        if tool_name:
            attrs["gen_ai.tool.name"] = tool_name
        if tool_type:
            attrs["gen_ai.tool.type"] = _TOOL_TYPES.get(tool_type, "extension")
            attrs["runsteps.tool.type"] = tool_type
        if call_id:
            attrs["gen_ai.tool.call.id"] = call_id
        if index == 0:  # the step's tokens once, so sums over spans stay right
            _tokens(attrs, event.usage)
        spans.append(
            SpanRecord(
                f"execute_tool {tool_name}" if tool_name else "execute_tool",
                trace_id,
                span_id_for(event.run_id, event.step_id, call_id),
                parent,
                SpanKind.INTERNAL,
                start_ns,
                end_ns,
                attrs,
                error_type,
                message,
            )
        )
    return spans


def _run_span(event: RunFinished, provider: str, extent: Extent | None) -> SpanRecord:
    start, end = _times(event.occurred_at, event.duration_s)
    if extent is not None:  # the run's span holds its steps' spans, whatever their clock
        start, end = min(start, extent[0]), max(end, extent[1])
    attrs = _common(event, "invoke_agent", provider)
    attrs["gen_ai.response.id"] = event.run_id
    if event.model:
        attrs["gen_ai.request.model"] = attrs["gen_ai.response.model"] = event.model
    _tokens(attrs, event.usage)
    if event.cost_usd is not None:
        attrs["gen_ai.usage.cost"] = event.cost_usd
    if event.priced_model:
        attrs["runsteps.priced_model"] = event.priced_model
    for status, count in event.steps.model_dump().items():
        attrs[f"runsteps.steps.{status}"] = count
    reason = _get(event.incomplete_details, "reason")
    if reason:
        attrs["runsteps.incomplete.reason"] = str(reason)
    error_type, message = _error(event)
    if error_type is not None:
        attrs["error.type"] = error_type
    return SpanRecord(
        "invoke_agent",
        trace_id_for(event.run_id),
        span_id_for(event.run_id),
        None,
        SpanKind.CLIENT,
        _ns(start),
        _ns(end),
        attrs,
        error_type,
        message,
    )


def needs_extent(event: AnyDerived) -> bool:
    """Whether the event's span needs its run's step extent: a run's end with steps."""
    return isinstance(event, RunFinished) and any(event.steps.model_dump().values())


def spans_of(
    event: AnyDerived, provider: str, extent: Extent | None = None
) -> Sequence[SpanRecord]:
    """The spans one derived event makes (none for most); UnmappableError if it cannot.

    `provider` is `gen_ai.provider.name`; `extent` the run's step extent (`needs_extent`),
    None when unknown (the run's own times are used)."""
    if isinstance(event, StepFinished):
        return _step_spans(event, provider)
    if isinstance(event, RunFinished):
        return [_run_span(event, provider, extent)]
    return ()
