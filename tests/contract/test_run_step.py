"""Real Assistants API run steps, envelopes and deltas decode and round-trip unchanged."""

from __future__ import annotations

import json
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import (
    EVENT_STATUS,
    INBOUND,
    TERMINAL_STATUSES,
    RunStep,
    RunStepDelta,
    RunStepDeltaEvent,
    RunStepEvent,
    StepEventName,
    StepStatus,
)
from contracts.run_step import (
    CodeInterpreterToolCall,
    FileSearchToolCall,
    FunctionToolCall,
    ImageOutput,
    LogsOutput,
    ToolCallsDetails,
)
from contracts.stream_events import StepEventLiteral

from .samples import (
    CODE_INTERPRETER,
    FILE_SEARCH_BARE,
    FILE_SEARCH_FULL,
    FUNCTION_DONE,
    FUNCTION_PENDING,
    Json,
    completed,
    failed,
    step,
    tool_step,
)

NULLABLE = ("last_error", "expired_at", "cancelled_at", "failed_at", "completed_at", "usage")

SAMPLES: dict[str, Json] = {
    "message_creation": step(),
    "code_interpreter_logs_and_image": tool_step(CODE_INTERPRETER),
    "file_search_without_options_or_results": tool_step(FILE_SEARCH_BARE),
    "file_search_with_options_and_results": tool_step(FILE_SEARCH_FULL),
    "function_output_null": tool_step(FUNCTION_PENDING),
    "function_output_set": tool_step(FUNCTION_DONE, status="completed", completed_at=1699063300),
    "parallel_tool_calls": tool_step(CODE_INTERPRETER, FILE_SEARCH_FULL, FUNCTION_DONE),
    "completed_with_usage": completed(metadata={"user": "u_42", "trace": "t-9"}),
    "failed_rate_limit": failed(),
    "cancelled": step(status="cancelled", cancelled_at=1699063400),
    "expired": tool_step(FUNCTION_PENDING, status="expired", expired_at=1699064000),
    "incomplete": step(status="incomplete"),
    "every_nullable_null": step(metadata=None),
    "unknown_fields": completed(
        incomplete_details=None,
        usage={
            "prompt_tokens": 1,
            "completion_tokens": 2,
            "total_tokens": 3,
            "prompt_token_details": {"cached_tokens": 0},
        },
        step_details={
            "type": "message_creation",
            "message_creation": {"message_id": "msg_1", "annotations_v9": []},
        },
    ),
}


def _minimal() -> Json:
    sample = step()
    for name in (*NULLABLE, "metadata", "object"):
        del sample[name]
    return sample


@pytest.mark.parametrize("sample", SAMPLES.values(), ids=SAMPLES.keys())
def test_round_trip_is_lossless(sample: Json) -> None:
    """Every field the API sent, extras included, comes back out unchanged."""
    parsed = RunStep.model_validate_json(json.dumps(sample))
    assert parsed.model_dump(mode="json", exclude_unset=True) == sample
    assert RunStep.model_validate_json(parsed.model_dump_json()) == parsed


def test_absent_nullable_fields_read_as_null() -> None:
    """Absent nullable fields and a missing `object` take their defaults and dump as null."""
    parsed = RunStep.model_validate_json(json.dumps(_minimal()))
    dumped = parsed.model_dump(mode="json")
    assert all(dumped[name] is None for name in (*NULLABLE, "metadata"))
    assert dumped["object"] == "thread.run.step"
    assert RunStep.model_validate(dumped) == RunStep.model_validate(step(metadata=None))


def test_unknown_fields_are_kept_as_extras() -> None:
    """A field from a newer API version is kept, at the top level and nested."""
    parsed = RunStep.model_validate(SAMPLES["unknown_fields"])
    assert parsed.model_extra == {"incomplete_details": None}
    assert parsed.usage is not None
    assert parsed.usage.model_extra == {"prompt_token_details": {"cached_tokens": 0}}


def test_tool_calls_decode_to_their_own_models() -> None:
    """The `type` discriminator picks the tool call and output model."""
    parsed = RunStep.model_validate(SAMPLES["parallel_tool_calls"])
    assert isinstance(parsed.step_details, ToolCallsDetails)
    code, search, function = parsed.step_details.tool_calls
    assert isinstance(code, CodeInterpreterToolCall)
    logs, image = code.code_interpreter.outputs
    assert isinstance(logs, LogsOutput)
    assert logs.logs == "42\n"
    assert isinstance(image, ImageOutput)
    assert image.image.file_id == "file-img1"
    assert isinstance(search, FileSearchToolCall)
    assert search.file_search.results is not None
    assert search.file_search.results[1].content is None
    assert isinstance(function, FunctionToolCall)
    assert function.function.output == "-3C"


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (step(), None),
        (completed(), 1699063299),
        (failed(), 1699063295),
        (step(status="cancelled", cancelled_at=7), 7),
        (step(status="expired", expired_at=8), 8),
        (step(status="incomplete", completed_at=9), None),
        (step(status="completed"), None),
    ],
    ids=["in_progress", "completed", "failed", "cancelled", "expired", "incomplete", "no_ts"],
)
def test_terminal_at_reads_the_status_timestamp(sample: Json, expected: int | None) -> None:
    """terminal_at is the timestamp belonging to the status, and None without one."""
    assert RunStep.model_validate(sample).terminal_at == expected


def test_terminal_statuses_are_all_but_in_progress() -> None:
    """Only in_progress is non-terminal."""
    assert set(StepStatus) - TERMINAL_STATUSES == {StepStatus.IN_PROGRESS}


def test_event_names_statuses_and_literal_agree() -> None:
    """EVENT_STATUS covers every event name; the envelope accepts all but the delta."""
    assert set(EVENT_STATUS) == set(StepEventName)
    assert set(get_args(StepEventLiteral)) == set(StepEventName) - {StepEventName.DELTA}


def test_bare_step_through_inbound() -> None:
    """A bare step (with `object`) decodes as a RunStep."""
    parsed = INBOUND.validate_json(json.dumps(completed()).encode())
    assert isinstance(parsed, RunStep)
    assert parsed.usage is not None
    assert parsed.usage.total_tokens == 155


@pytest.mark.parametrize("name", sorted(set(StepEventName) - {StepEventName.DELTA}))
def test_every_envelope_through_inbound(name: StepEventName) -> None:
    """Each step envelope decodes with its name and a step in the status it implies."""
    status = EVENT_STATUS[name]
    assert status is not None
    payload = {"event": str(name), "data": step(status=str(status))}
    parsed = INBOUND.validate_json(json.dumps(payload).encode())
    assert isinstance(parsed, RunStepEvent)
    assert parsed.event == name
    assert parsed.data.status is status


DELTA: Json = {
    "id": "step_abc123",
    "object": "thread.run.step.delta",
    "delta": {
        "step_details": {
            "type": "tool_calls",
            "tool_calls": [
                {"index": 0, "type": "code_interpreter", "code_interpreter": {"input": "6 *"}},
                {"index": 1, "id": "call_x", "type": "web_browser_v2", "web_browser_v2": {}},
            ],
        }
    },
}


@pytest.mark.parametrize("enveloped", [False, True], ids=["bare", "enveloped"])
def test_delta_through_inbound(enveloped: bool) -> None:
    """A delta, bare or enveloped, decodes leniently (partial and unknown tool calls pass)."""
    payload: Json = {"event": "thread.run.step.delta", "data": DELTA} if enveloped else DELTA
    parsed = INBOUND.validate_json(json.dumps(payload).encode())
    if enveloped:
        assert isinstance(parsed, RunStepDeltaEvent)
        parsed = parsed.data
    assert isinstance(parsed, RunStepDelta)
    assert parsed.delta.step_details is not None
    assert parsed.model_dump(mode="json", exclude_unset=True) == DELTA


def test_inbound_accepts_models_in_python_mode() -> None:
    """validate_python on an already-built model returns that model's kind."""
    models: list[Any] = [
        RunStep.model_validate(step()),
        RunStepEvent.model_validate({"event": "thread.run.step.created", "data": step()}),
        RunStepDelta.model_validate(DELTA),
        RunStepDeltaEvent.model_validate({"event": "thread.run.step.delta", "data": DELTA}),
    ]
    assert [type(INBOUND.validate_python(m)) for m in models] == [type(m) for m in models]


_KEYS = st.text(max_size=64)
_VALUES = st.text(max_size=512)


@given(st.dictionaries(_KEYS, _VALUES, max_size=16))
def test_metadata_within_limits_round_trips(metadata: dict[str, str]) -> None:
    """Any metadata within 16 keys of <=64 chars and values of <=512 chars is accepted."""
    parsed = INBOUND.validate_json(json.dumps(step(metadata=metadata)).encode())
    assert isinstance(parsed, RunStep)
    assert parsed.metadata == metadata
