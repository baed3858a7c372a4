"""Recorded Assistants traffic (tests/data/SOURCES.md): every entry of every file classifies as
what its name says, nothing is invalid, and the facts the lifecycle reads come out right."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from contracts.run import RUN_TERMINAL_STATUSES, RunStatus
from contracts.run_step import GenericToolCall, RunStep, StepStatus
from contracts.stream_events import (
    Classified,
    ErrorEntry,
    IgnoredEntry,
    RunEntry,
    StepEntry,
    classify_entry,
)
from service.core.fastpath import decode_fast

from .test_fastpath import _assert_subset

DATA = Path(__file__).parents[1] / "data" / "assistants"
FILES = sorted(DATA.glob("*.jsonl"))
STREAMS = [f for f in FILES if "_bare_" not in f.name]


def _lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def _expected(value: dict[str, Any]) -> type[Classified]:
    """What an entry should classify as, read from its event name or object kind alone."""
    event = value.get("event")
    if event is None:
        kinds: dict[str, type[Classified]] = {"thread.run.step": StepEntry, "thread.run": RunEntry}
        return kinds.get(value["object"], IgnoredEntry)
    if event == "error":
        return ErrorEntry
    if event == "thread.run.step.delta":
        return IgnoredEntry
    if event.startswith("thread.run.step."):
        return StepEntry
    return RunEntry if event.startswith("thread.run.") else IgnoredEntry


def _classified(path: Path) -> list[tuple[dict[str, Any], Classified]]:
    return [(json.loads(line), classify_entry(line)) for line in _lines(path)]


def test_the_recorded_data_is_there() -> None:
    """At least the streams and bare objects SOURCES.md lists are present."""
    assert len(FILES) >= 10
    assert len(STREAMS) >= 5


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_every_recorded_entry_classifies_as_its_name_says(path: Path) -> None:
    """Each entry is a step, a run, ignored or an error event as its name says; none is invalid."""
    for value, got in _classified(path):
        assert type(got) is _expected(value), value.get("event", value.get("object"))


def test_the_one_recorded_envelope_naming_another_status_than_its_object() -> None:
    """Only OpenAI's `thread.run.completed` carrying an `incomplete` run (ruby-openai's
    recording, max_prompt_tokens) names another status than its object has."""
    found = {
        (path.stem, got.event, (got.step if isinstance(got, StepEntry) else got.run).status)
        for path in FILES
        for _, got in _classified(path)
        if isinstance(got, StepEntry | RunEntry) and got.status_mismatch
    }
    assert found == {
        ("ruby-openai_streamed_incomplete_run", "thread.run.completed", RunStatus.INCOMPLETE)
    }


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_recorded_steps_and_runs_keep_what_the_lifecycle_reads(path: Path) -> None:
    """Ids, status and usage read from a recorded step or run equal the recorded values."""
    for value, got in _classified(path):
        body = value.get("data", value)
        item = got.step if isinstance(got, StepEntry) else getattr(got, "run", None)
        if item is None:
            continue
        assert (item.id, item.thread_id, item.status) == (
            body["id"],
            body["thread_id"],
            body["status"],
        )
        usage = body.get("usage")
        assert (item.usage is None) == (usage is None)
        if item.usage is not None and usage is not None:
            assert item.usage.total_tokens == usage["total_tokens"]


_TIMES = ("created_at", "completed_at", "failed_at", "cancelled_at", "expired_at", "expires_at")


def _left_to_pydantic(step: RunStep, body: dict[str, Any]) -> bool:
    """The rarer shapes service/core/fastpath.py leaves to pydantic on purpose: an activities step
    (Azure AI Agents), a tool call of a type the contracts do not model (Azure's mcp, ...),
    times written as integral floats (open-assistant-api's `1718612132.0`)."""
    if any(isinstance(body.get(name), float) for name in _TIMES):
        return True
    details = step.step_details
    if details.type == "activities":
        return True
    return details.type == "tool_calls" and any(
        isinstance(call, GenericToolCall) for call in details.tool_calls
    )


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_recorded_steps_take_the_fast_path_with_pydantic_values(path: Path) -> None:
    """Every recorded step of a modelled shape takes the fast path with pydantic's values;
    the rarer shapes and everything else do not."""
    for line in _lines(path):
        got = classify_entry(line)
        body = json.loads(line)
        body = body.get("data", body)
        if isinstance(got, StepEntry) and not _left_to_pydantic(got.step, body):
            assert _assert_subset(line)
        else:
            assert decode_fast(line) is None


@pytest.mark.parametrize("path", STREAMS, ids=[f.stem for f in STREAMS])
def test_each_recorded_stream_ends_its_run(path: Path) -> None:
    """A recorded stream's last run event is terminal, with the time it ended."""
    runs = [got.run for _, got in _classified(path) if isinstance(got, RunEntry)]
    assert runs
    assert runs[-1].status in RUN_TERMINAL_STATUSES
    assert runs[-1].ended_at is not None


@pytest.mark.parametrize("path", STREAMS, ids=[f.stem for f in STREAMS])
def test_most_of_a_recorded_stream_has_no_lifecycle_meaning(path: Path) -> None:
    """Messages, deltas and done are recognised and ignored, not dead-lettered."""
    entries = [got for _, got in _classified(path)]
    ignored = [e for e in entries if isinstance(e, IgnoredEntry)]
    assert all(e.known for e in ignored)
    # A whole run's stream, not a short excerpt nor one whose deltas were left out (_excerpt).
    if len(entries) > 10 and "_excerpt" not in path.name:
        assert len(ignored) > len(entries) / 4


def test_requires_action_names_the_tool_calls_its_step_made() -> None:
    """The run waiting for tool outputs lists the calls of the tool step that completes later."""
    entries = [got for _, got in _classified(DATA / "openai-dotnet_streaming_tool_call.jsonl")]
    waiting = [e.run for e in entries if isinstance(e, RunEntry) and e.run.pending_tool_call_ids]
    assert [r.status for r in waiting] == [RunStatus.REQUIRES_ACTION]
    tool_steps = [
        e.step
        for e in entries
        if isinstance(e, StepEntry)
        and e.step.type == "tool_calls"
        and e.step.status is StepStatus.COMPLETED
    ]
    details = tool_steps[0].step_details
    assert details.type == "tool_calls"
    assert waiting[0].pending_tool_call_ids == tuple(call.id for call in details.tool_calls)


def test_a_streamed_step_delta_names_its_step() -> None:
    """A recorded thread.run.step.delta is ignored but keeps the id of the step it belongs to."""
    entries = [got for _, got in _classified(DATA / "openai-dotnet_streaming_tool_call.jsonl")]
    deltas = [e for e in entries if isinstance(e, IgnoredEntry) and e.step_id is not None]
    steps = {e.step.id for e in entries if isinstance(e, StepEntry)}
    assert deltas
    assert {d.step_id for d in deltas} <= steps


def test_azure_failed_run_keeps_its_unknown_error_code() -> None:
    """Azure's tool_user_error is kept as sent, and the run ended when it failed."""
    [failed] = [
        got.run
        for _, got in _classified(DATA / "azure-agents-dotnet_failed_run_stream.jsonl")
        if isinstance(got, RunEntry)
    ]
    assert failed.status is RunStatus.FAILED
    assert failed.last_error is not None
    assert failed.last_error.code == "tool_user_error"
    assert failed.ended_at == failed.failed_at == 1764170244
    assert failed.model_extra is not None
    assert failed.model_extra["tools"][0]["type"] == "bing_grounding"


def test_azure_run_waiting_without_an_action_waits_for_nothing() -> None:
    """A requires_action run whose required_action is null has no pending tool call ids."""
    [(_, got)] = _classified(DATA / "azure-agents_bare_runs.jsonl")
    assert isinstance(got, RunEntry)
    assert got.run.status is RunStatus.REQUIRES_ACTION
    assert got.run.pending_tool_call_ids == ()


def test_php_runs_with_empty_metadata_and_incomplete_details() -> None:
    """PHP's `"metadata": []` reads as no metadata; an incomplete run says why."""
    runs = [
        got.run
        for _, got in _classified(DATA / "openai-php_bare_fixtures.jsonl")
        if isinstance(got, RunEntry)
    ]
    assert all(run.metadata == {} for run in runs)
    [incomplete] = [run for run in runs if run.status is RunStatus.INCOMPLETE]
    assert incomplete.incomplete_details is not None
    assert incomplete.incomplete_details.reason == "Input tokens exceeded"
    assert incomplete.ended_at is None  # the fixture gives no completed_at


def test_azure_mcp_run_activities_step_and_approval_round() -> None:
    """Azure's activities step is a step (not dead-lettered); its approval names the MCP call."""
    entries = [
        got for _, got in _classified(DATA / "azure-agents_mcp_approval_stream_excerpt.jsonl")
    ]
    activities = [
        e.step for e in entries if isinstance(e, StepEntry) and e.step.type == "activities"
    ]
    assert [s.status for s in activities] == [StepStatus.IN_PROGRESS] * 2 + [StepStatus.COMPLETED]
    details = activities[-1].step_details
    assert details.type == "activities"
    assert [a.type for a in details.activities] == ["mcp_list_tools"]
    [waiting] = [e.run for e in entries if isinstance(e, RunEntry) and e.run.pending_tool_call_ids]
    assert waiting.status is RunStatus.REQUIRES_ACTION
    assert waiting.pending_tool_call_ids == ("call_7xWS61tAxJO9euluKVIX5aJH",)


def _runs_and_steps(name: str) -> tuple[list[RunEntry], list[StepEntry]]:
    entries = [got for _, got in _classified(DATA / name)]
    runs = [e for e in entries if isinstance(e, RunEntry)]
    return runs, [e for e in entries if isinstance(e, StepEntry)]


def test_azure_connected_agent_call_names_another_run_but_belongs_to_its_own() -> None:
    """A connected_agent call carries the sub-agent's run_id/thread_id (extras of a generic
    call); the step stays the outer run's, and the completed run (expires_at null) ended."""
    runs, steps = _runs_and_steps("azure-agents-python_connected_agent_stream.jsonl")
    [done] = [
        s.step
        for s in steps
        if s.step.status is StepStatus.COMPLETED and s.step.type == "tool_calls"
    ]
    details = done.step_details
    assert details.type == "tool_calls"
    [call] = details.tool_calls
    assert isinstance(call, GenericToolCall)
    assert call.type == "connected_agent"
    assert call.model_extra is not None
    assert call.model_extra["connected_agent"]["run_id"] == "run_BKDHUfLnDMPZxqQsQwKjaNuz"
    assert {s.step.run_id for s in steps} == {"run_W2leXEp540D9EN3AVFNwrvRI"}
    final = runs[-1].run
    assert final.status is RunStatus.COMPLETED
    assert final.expires_at is None
    assert final.ended_at == final.completed_at == 1754519748


def test_azure_function_call_runs_to_completion_without_requires_action() -> None:
    """An azure_function call is answered through storage queues by the service itself: the
    run never waits in requires_action, the tool step completes with the function's output."""
    runs, steps = _runs_and_steps("azure-agents-python_azure_function_stream.jsonl")
    assert [r.run.status for r in runs] == [
        RunStatus.QUEUED,
        RunStatus.QUEUED,
        RunStatus.IN_PROGRESS,
        RunStatus.COMPLETED,
    ]
    assert all(r.run.pending_tool_call_ids == () for r in runs)
    [tool] = [
        s.step
        for s in steps
        if s.step.type == "tool_calls" and s.step.status is StepStatus.COMPLETED
    ]
    details = tool.step_details
    assert details.type == "tool_calls"
    assert [c.type for c in details.tool_calls] == ["azure_function"]
    assert details.tool_calls[0].model_extra == {
        "azure_function": {
            "name": "foo",
            "arguments": (
                '{"query":"What is the most prevalent element in the universe?",'
                '"outputqueueuri":"https://foobar.queue.core.windows.net/azure-function-tool-output"}'
            ),
            "output": "Bar",
        }
    }


def test_azure_deep_research_steps_keep_zero_usage_and_a_null_output() -> None:
    """Deep research's progress messages are completed steps reporting zero usage (kept as
    zeros, not as no usage); its tool call completes with `output: null`."""
    _, steps = _runs_and_steps("azure-agents-python_bare_deep_research_steps.jsonl")
    assert all(s.event is None and s.step.status is StepStatus.COMPLETED for s in steps)
    messages = [s.step for s in steps if s.step.type == "message_creation"]
    assert messages
    assert all(m.usage is not None and m.usage.total_tokens == 0 for m in messages)
    [research] = [s.step for s in steps if s.step.type == "tool_calls"]
    details = research.step_details
    assert details.type == "tool_calls"
    [call] = details.tool_calls
    assert call.type == "deep_research"
    assert call.model_extra is not None
    assert call.model_extra["deep_research"]["output"] is None
    assert research.usage is not None
    assert research.usage.total_tokens == 3878


def test_azure_cancelled_run_ends_when_it_was_cancelled() -> None:
    """Azure's cancel: queued, cancelling (the cancel endpoint's answer), then cancelled with
    `cancelled_at`, `expires_at` null and usage of zeros (kept as zeros, not as no usage)."""
    runs, steps = _runs_and_steps("azure-agents-python_bare_cancelled_run.jsonl")
    assert not steps
    assert [r.run.status for r in runs] == [
        RunStatus.QUEUED,
        RunStatus.CANCELLING,
        RunStatus.CANCELLED,
    ]
    assert all(r.event is None for r in runs)
    assert [r.run.ended_at for r in runs] == [None, None, 1736380785]
    final = runs[-1].run
    assert final.cancelled_at == 1736380785
    assert final.expires_at is None
    assert final.usage is not None
    assert final.usage.total_tokens == 0


def test_azure_streamed_tool_outputs_round_completes_the_step_before_the_run_moves() -> None:
    """Two recorded Azure streams of one run: the first ends in requires_action (and `done`);
    the submit_tool_outputs stream opens with the tool step completed while the run is still
    waiting, then the run is queued again and restarts with a later `started_at`."""
    runs, steps = _runs_and_steps("azure-agents-python_submit_tool_outputs_stream.jsonl")
    assert [r.run.status for r in runs] == [
        RunStatus.QUEUED,
        RunStatus.QUEUED,
        RunStatus.IN_PROGRESS,
        RunStatus.REQUIRES_ACTION,
        RunStatus.QUEUED,
        RunStatus.IN_PROGRESS,
        RunStatus.COMPLETED,
    ]
    [waiting] = [r.run for r in runs if r.run.pending_tool_call_ids]
    assert waiting.pending_tool_call_ids == ("call_Rksj1imNgadFAccoRamVgTZ5",)
    entries = [
        got for _, got in _classified(DATA / "azure-agents-python_submit_tool_outputs_stream.jsonl")
    ]
    tool_done = next(
        i
        for i, e in enumerate(entries)
        if isinstance(e, StepEntry)
        and e.step.type == "tool_calls"
        and e.step.status is StepStatus.COMPLETED
    )
    requeued = [
        i
        for i, e in enumerate(entries)
        if isinstance(e, RunEntry) and e.run.status is RunStatus.QUEUED
    ][-1]
    assert tool_done < requeued
    starts = [r.run.started_at for r in runs if r.run.status is RunStatus.IN_PROGRESS]
    assert starts == [1745873052, 1745873054]
    final = runs[-1].run
    assert final.ended_at == final.completed_at == 1745873055
    assert final.usage is not None
    assert final.usage.total_tokens == 669
    assert {s.step.run_id for s in steps} == {final.id}


def test_azure_function_wait_is_answered_by_the_service() -> None:
    """Older Azure API (2024-12-01-preview): a requires_action run names an `azure_function`
    call (not a function) that no client answers; the service does, and the run goes back to
    in_progress (a new `started_at`) and completes, with no submit in between."""
    runs, _ = _runs_and_steps("azure-agents-python_bare_azure_function_polled_runs.jsonl")
    assert [r.run.status for r in runs] == [
        RunStatus.QUEUED,
        RunStatus.IN_PROGRESS,
        RunStatus.REQUIRES_ACTION,
        RunStatus.IN_PROGRESS,
        RunStatus.COMPLETED,
    ]
    waiting = runs[2].run
    assert waiting.pending_tool_call_ids == ("call_mzRYdtmDqSFqZb1HAvUztB8b",)
    action = waiting.required_action
    assert action is not None
    assert action.submit_tool_outputs is not None
    [call] = action.submit_tool_outputs.tool_calls
    assert call.type == "azure_function"
    assert [r.run.started_at for r in runs[1:]] == [1745383358, 1745383358, 1745383396, 1745383396]
    assert runs[-1].run.ended_at == 1745383397


def test_open_assistant_api_integral_float_times_and_unprefixed_ids() -> None:
    """open-assistant-api answers GETs with times as `datetime.timestamp()` floats (whole
    seconds from MySQL: `1718612130.0`) and bson ObjectId ids without prefixes; both are
    tracked as they are, and its extra columns (updated_at, message_id...) are kept."""
    runs, steps = _runs_and_steps("open-assistant-api_bare_fixture.jsonl")
    [run] = [r.run for r in runs]
    assert run.status is RunStatus.COMPLETED
    assert (run.created_at, run.ended_at) == (1718612130, 1718612136)
    assert {type(run.created_at), type(run.ended_at)} == {int}
    assert run.usage is None
    assert run.id == "6670f0a2c2b3d4e5f6a7b8ca"
    assert [(s.step.type, s.step.created_at, s.step.terminal_at) for s in steps] == [
        ("tool_calls", 1718612132, 1718612135),
        ("message_creation", 1718612135, 1718612136),
    ]
    assert all(s.step.run_id == run.id and s.step.usage is None for s in steps)
    assert steps[0].step.model_extra == {"updated_at": 1718612135.0, "message_id": None}


def test_a_fractional_time_is_still_refused() -> None:
    """Only integral floats read as seconds: a fractional one is no Assistants timestamp."""
    line = _lines(DATA / "open-assistant-api_bare_fixture.jsonl")[1]
    body = json.loads(line)
    body["completed_at"] = 1718612135.5
    with pytest.raises(ValidationError, match="fractional part"):
        classify_entry(json.dumps(body))


def test_azure_json_schema_response_format_run_is_tracked_with_its_format_kept() -> None:
    """A recorded Azure run polled to completion with a `json_schema` response_format object
    (not the string "auto"): the object is kept as sent, the run ends when it completed."""
    runs, steps = _runs_and_steps("azure-agents-js_bare_json_schema_response_format_runs.jsonl")
    assert not steps
    assert [r.run.status for r in runs] == [
        RunStatus.QUEUED,
        RunStatus.IN_PROGRESS,
        RunStatus.COMPLETED,
    ]
    assert all(r.event is None for r in runs)
    assert [r.run.ended_at for r in runs] == [None, None, 1753832317]
    final = runs[-1].run
    assert final.expires_at is None
    assert final.usage is not None
    assert final.usage.total_tokens == 145
    assert final.model_extra is not None
    response_format = final.model_extra["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "AgentResponse"
    assert response_format["json_schema"]["strict"] is False
