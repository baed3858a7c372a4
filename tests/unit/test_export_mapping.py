"""Derived events -> GenAI span records (service/export/mapping.py), and their ids."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.derived import DERIVED, RunFinished, StepFinished, event_id_for
from service.export.ids import span_id_for, trace_id_for
from service.export.mapping import SPAN_TYPES, SpanKind, UnmappableError, needs_extent, spans_of


def step_end(status: str = "completed", **extra: Any) -> dict[str, Any]:
    """A `run_step.<status>` event of step s1 in run r1, no tool calls reported."""
    return {
        "type": f"run_step.{status}", "event_id": event_id_for("r1", "s1", f"run_step.{status}"),
        "source": "assistants", "step_id": "s1", "run_id": "r1", "thread_id": "thread_1",
        "assistant_id": "asst_1", "from_status": "in_progress", "to_status": status,
        "occurred_at": 1_764_000_010, "step_type": "message_creation", "duration_s": 4,
        "usage": {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35},
        "last_error": None, "tools": [], "ended_by_run": False,
    } | extra  # fmt: skip


def run_end(status: str = "completed", **extra: Any) -> dict[str, Any]:
    """A `run.<status>` event of run r1 with two completed steps."""
    return {
        "type": f"run.{status}", "event_id": event_id_for("r1", "", f"run.{status}"),
        "source": "assistants", "run_id": "r1", "thread_id": "thread_1",
        "assistant_id": "asst_1", "from_status": "in_progress", "to_status": status,
        "occurred_at": 1_764_000_020, "duration_s": 20,
        "usage": {"prompt_tokens": 300, "completion_tokens": 25, "total_tokens": 325},
        "last_error": None, "incomplete_details": None,
        "steps": {"completed": 2, "failed": 0, "cancelled": 0, "expired": 0, "incomplete": 0},
        "model": None, "cost_usd": None, "priced_model": None,
    } | extra  # fmt: skip


def mapped(event: dict[str, Any], extent: tuple[float, float] | None = None) -> Any:
    """The span records of an event given as JSON, as the exporter maps it."""
    return spans_of(DERIVED.validate_python(event), "openai", extent)


def test_a_message_step_is_a_chat_span_under_its_run() -> None:
    """Name, kind, ids, times (end = occurred_at, start = end - duration), tokens."""
    [span] = mapped(step_end())
    assert (span.name, span.kind) == ("chat", SpanKind.CLIENT)
    assert span.trace_id == trace_id_for("r1")
    assert span.span_id == span_id_for("r1", "s1")
    assert span.parent_id == span_id_for("r1")
    assert (span.start_ns, span.end_ns) == (1_764_000_006 * 10**9, 1_764_000_010 * 10**9)
    assert span.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.agent.id": "asst_1",
        "gen_ai.conversation.id": "thread_1",
        "gen_ai.usage.input_tokens": 30,
        "gen_ai.usage.output_tokens": 5,
        "runsteps.run.id": "r1",
        "runsteps.step.id": "s1",
        "runsteps.step.type": "message_creation",
        "runsteps.step.ended_by_run": False,
        "runsteps.source": "assistants",
        "runsteps.status": "completed",
        "runsteps.event.id": event_id_for("r1", "s1", "run_step.completed"),
    }
    assert span.error_type is None


def test_a_run_end_is_the_invoke_agent_root_span() -> None:
    """The run's span: no parent, its own times, usage, step counts, response id."""
    [span] = mapped(run_end())
    assert (span.name, span.kind, span.parent_id) == ("invoke_agent", SpanKind.CLIENT, None)
    assert span.span_id == span_id_for("r1")
    assert (span.start_ns, span.end_ns) == (1_764_000_000 * 10**9, 1_764_000_020 * 10**9)
    attrs = span.attributes
    assert attrs["gen_ai.operation.name"] == "invoke_agent"
    assert attrs["gen_ai.response.id"] == "r1"
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (300, 25)
    assert attrs["runsteps.steps.completed"] == 2
    assert "gen_ai.request.model" not in attrs, "no model reported"
    assert "gen_ai.usage.cost" not in attrs, "no price known"


def test_model_and_cost_become_attributes() -> None:
    """The run's model, cost (gen_ai.usage.cost, as Langfuse reads it) and priced model."""
    extra: dict[str, Any] = {
        "model": "gpt-4.1", "cost_usd": 0.0125, "priced_model": "gpt-4.1-2025-04-14",
    }  # fmt: skip
    [span] = mapped(run_end(**extra))
    attrs = span.attributes
    assert attrs["gen_ai.request.model"] == attrs["gen_ai.response.model"] == "gpt-4.1"
    assert attrs["gen_ai.usage.cost"] == 0.0125
    assert attrs["runsteps.priced_model"] == "gpt-4.1-2025-04-14"


def test_one_execute_tool_span_per_tool_call() -> None:
    """A step with three tool calls is three spans with their names, types and call ids;
    the step's tokens are on the first only."""
    tools = [
        {"id": "call_a", "type": "function", "name": "get_weather"},
        {"id": "call_b", "type": "file_search", "name": None},
        {"id": "call_c", "type": "code_interpreter", "name": None},
    ]
    spans = mapped(step_end(step_type="tool_calls", tools=tools))
    assert [s.name for s in spans] == [
        "execute_tool get_weather",
        "execute_tool file_search",
        "execute_tool code_interpreter",
    ]
    assert [s.attributes["gen_ai.tool.type"] for s in spans] == [
        "function",
        "datastore",
        "extension",
    ]
    assert [s.attributes["gen_ai.tool.call.id"] for s in spans] == ["call_a", "call_b", "call_c"]
    calls = ("call_a", "call_b", "call_c")
    assert [s.span_id for s in spans] == [span_id_for("r1", "s1", c) for c in calls]
    assert all(s.kind is SpanKind.INTERNAL and s.parent_id == span_id_for("r1") for s in spans)
    assert ["gen_ai.usage.input_tokens" in s.attributes for s in spans] == [True, False, False]


@pytest.mark.parametrize(
    ("step_type", "name", "tool_type"),
    [
        ("tool_calls", "execute_tool", None),  # an Assistants tool step, its calls unknown
        ("function_call", "execute_tool function", "function"),
        ("web_search_call", "execute_tool web_search", "extension"),
        ("file_search_call", "execute_tool file_search", "datastore"),
        ("message", "chat", None),
        ("reasoning", "chat", None),
        ("mcp_list_tools", "chat", None),
    ],
)
def test_step_types_without_a_tool_list(step_type: str, name: str, tool_type: str | None) -> None:
    """No tool calls reported: the step type alone says whether a step is a tool call."""
    [span] = mapped(step_end(step_type=step_type, source="responses"))
    assert span.name == name
    assert span.attributes.get("gen_ai.tool.type") == tool_type


@pytest.mark.parametrize("status", ["failed", "expired", "cancelled"])
def test_failed_expired_and_cancelled_are_errors(status: str) -> None:
    """Status ERROR with error.type = last_error.code (or the status without one)."""
    error = {"code": "rate_limit_exceeded", "message": "slow down"}
    [with_code] = mapped(step_end(status, last_error=error))
    assert (with_code.error_type, with_code.error_message) == ("rate_limit_exceeded", "slow down")
    assert with_code.attributes["error.type"] == "rate_limit_exceeded"
    [without] = mapped(step_end(status))
    assert without.error_type == without.attributes["error.type"] == status
    [run] = mapped(run_end(status, last_error={"code": "server_error", "message": "oops"}))
    assert run.error_type == "server_error"


@pytest.mark.parametrize("status", ["completed", "incomplete"])
def test_completed_and_incomplete_are_not_errors(status: str) -> None:
    """Neither sets an error; an incomplete run says why."""
    [span] = mapped(step_end(status))
    assert span.error_type is None
    assert "error.type" not in span.attributes
    [run] = mapped(run_end(status, incomplete_details={"reason": "max_output_tokens"}))
    assert run.error_type is None
    assert run.attributes["runsteps.incomplete.reason"] == "max_output_tokens"


def test_the_run_span_covers_its_steps_on_another_clock() -> None:
    """Given its steps' extent (Responses items timed by arrival), the run's span starts at
    the earliest and ends at the latest of its own times and theirs."""
    [span] = mapped(run_end(), extent=(1_764_000_003.25, 1_764_000_021.5))
    assert (span.start_ns, span.end_ns) == (1_764_000_000 * 10**9, 1_764_000_021_500_000_000)
    [inside] = mapped(run_end(), extent=(1_764_000_001, 1_764_000_002))
    assert (inside.start_ns, inside.end_ns) == (1_764_000_000 * 10**9, 1_764_000_020 * 10**9)


def test_unknown_end_time_gives_a_span_without_length() -> None:
    """`duration_s` null (no end time known): the span starts and ends at occurred_at."""
    [span] = mapped(step_end(duration_s=None))
    assert span.start_ns == span.end_ns == 1_764_000_010 * 10**9


def test_a_time_otlp_cannot_carry_is_unmappable() -> None:
    """Past 2**64 nanoseconds (the year 2554) an event cannot become a span."""
    with pytest.raises(UnmappableError, match="2\\*\\*64"):
        mapped(step_end(occurred_at=2**40))


def test_events_other_than_ends_make_no_span() -> None:
    """Starts, usage, requires_action, stalls, rejections: nothing to send."""
    start = step_end() | {
        "type": "run_step.started", "from_status": None, "to_status": "in_progress",
        "event_id": "x",
    }  # fmt: skip
    for key in ("duration_s", "usage", "last_error", "ended_by_run"):
        del start[key]
    assert mapped(start) == ()
    assert not needs_extent(DERIVED.validate_python(start))
    assert needs_extent(DERIVED.validate_python(run_end()))
    no_steps = {"completed": 0, "failed": 0, "cancelled": 0, "expired": 0, "incomplete": 0}
    assert not needs_extent(DERIVED.validate_python(run_end(steps=no_steps)))


@given(st.text(min_size=1, max_size=40), st.text(max_size=40), st.text(max_size=40))
def test_ids_are_a_function_of_run_and_step_ids(run_id: str, step_id: str, call: str) -> None:
    """The same ids always give the same trace and span ids, never zero, within range."""
    assert trace_id_for(run_id) == trace_id_for(run_id)
    assert 0 < trace_id_for(run_id) < 2**128
    assert 0 < span_id_for(run_id, step_id, call) < 2**64
    assert span_id_for(run_id, step_id, call) == span_id_for(run_id, step_id, call)


def test_ids_are_the_documented_hashes() -> None:
    """SHA-256 prefixes of the documented strings (any language can compute them)."""
    import hashlib

    def prefix(text: str, size: int) -> int:
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:size], "big")

    assert trace_id_for("run_abc") == prefix("runsteps.trace|run_abc", 16)
    assert span_id_for("run_abc") == prefix("runsteps.span|run_abc||", 8)
    assert span_id_for("run_abc", "step_1", "call_9") == prefix(
        "runsteps.span|run_abc|step_1|call_9", 8
    )


def test_span_types_are_those_of_the_events_that_make_spans() -> None:
    """SPAN_TYPES, the types the exporter validates in full, are exactly the types of the
    two event classes spans_of maps: StepFinished and RunFinished."""
    declared = {
        *get_args(StepFinished.model_fields["type"].annotation),
        *get_args(RunFinished.model_fields["type"].annotation),
    }
    assert declared == SPAN_TYPES
