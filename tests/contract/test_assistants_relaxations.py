"""What real producers send beyond the OpenAI reference (issue #12): the RunStep relaxations,
the Run model, and how every kind of stream entry is classified."""

from __future__ import annotations

import json
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from contracts.derived import Source
from contracts.limits import MAX_EXACT, MS_FROM
from contracts.run import RUN_TERMINAL_STATUSES, Run, RunStatus
from contracts.run_step import FileSearchToolCall, GenericToolCall, LastErrorCode, RunStep
from contracts.stream_events import (
    EVENT_STATUS,
    IGNORED_EVENTS,
    INBOUND,
    RUN_EVENT_STATUS,
    ErrorEntry,
    IgnoredEntry,
    RunEntry,
    RunEventLiteral,
    StepEntry,
    StreamEventName,
    classify_entry,
)
from service.core.decode import decode_entry
from service.core.fastpath import decode_fast
from service.core.ops import step_op

from .samples import CODE_INTERPRETER, completed, failed, step, tool_step
from .test_fastpath import _assert_subset, _both_shapes

# A real Azure AI Agents tool call (tests/data/SOURCES.md: azure-ai-evaluation's tests).
BING_GROUNDING: dict[str, Any] = {
    "id": "call_PG9cYqLGAVO30BWBwgHMcvJQ",
    "type": "bing_grounding",
    "bing_grounding": {"requesturl": "https://api.bing.microsoft.com/v7.0/search?q="},
}
UNKNOWN_CALLS: list[dict[str, Any]] = [
    BING_GROUNDING,
    {"id": "call_s1", "type": "azure_ai_search", "azure_ai_search": {"input": "q", "output": "x"}},
    {"id": "call_o1", "type": "openapi", "openapi": {"name": "weather", "output": "{}"}},
    {"id": "call_p1", "type": "sharepoint_grounding", "sharepoint_grounding": {}},
    {"id": "call_f1", "type": "fabric_dataagent", "fabric_dataagent": {"output": "42"}},
    {"id": "call_m1", "type": "mcp", "server_label": "docs", "name": "search", "arguments": "{}"},
    {"id": "call_r1", "type": "retrieval", "retrieval": {}},
    {"id": "call_z1", "type": "a_tool_from_next_year"},
]
# The tool calls of openai-php/client's threadRunStepWithCodeInterpreterOutputResource, as
# PHP's json_encode writes them (`"file_search": []`).
PHP_CALLS: list[dict[str, Any]] = [
    {
        "id": "call_KSg14X7kZF2WDzlPhpQ168Mj",
        "type": "code_interpreter",
        "code_interpreter": {
            "input": "The input string.",
            "outputs": [
                {"type": "image", "image": {"file_id": "file-6EsV79Y261TEmi0PY5iHbZdS"}},
                {"type": "logs", "logs": "The log output content."},
            ],
        },
    },
    {
        "id": "call_Fbg14X7kZF2WDzlPhpQ167De",
        "type": "function",
        "function": {"name": "add", "arguments": '{ "a": 5, "b": 7 }', "output": "12"},
    },
    {"id": "call_mNs14X7kZF2WDzlPhpQ163Co", "type": "file_search", "file_search": []},
]


def _step(body: dict[str, Any]) -> RunStep:
    parsed = INBOUND.validate_json(json.dumps(body))
    assert isinstance(parsed, RunStep)
    return parsed


def _run(**overrides: Any) -> dict[str, Any]:
    run: dict[str, Any] = {
        "id": "run_abc123",
        "object": "thread.run",
        "created_at": 1699063290,
        "assistant_id": "asst_abc123",
        "thread_id": "thread_abc123",
        "status": "queued",
        "started_at": None,
        "expires_at": 1699063890,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": None,
        "required_action": None,
        "last_error": None,
        "model": "gpt-4o",
        "tools": [{"type": "code_interpreter"}],
        "metadata": {},
        "usage": None,
    }
    run.update(overrides)
    return run


@pytest.mark.parametrize("call", UNKNOWN_CALLS, ids=[c["type"] for c in UNKNOWN_CALLS])
def test_a_tool_call_of_an_unknown_type_is_kept_as_sent(call: dict[str, Any]) -> None:
    """Azure's and v1's tool types validate as a generic call whose fields survive a dump."""
    body = tool_step(CODE_INTERPRETER, call, status="completed", completed_at=1699063299)
    parsed = _step(body)
    assert parsed.step_details.type == "tool_calls"
    generic = parsed.step_details.tool_calls[1]
    assert isinstance(generic, GenericToolCall)
    assert generic.model_dump() == call
    assert parsed.model_dump(mode="json")["step_details"] == body["step_details"]


@pytest.mark.parametrize("call", UNKNOWN_CALLS, ids=[c["type"] for c in UNKNOWN_CALLS])
def test_an_unknown_tool_call_leaves_the_fast_path_to_pydantic(call: dict[str, Any]) -> None:
    """The fast path declines an unknown tool type; decode_entry still accepts the step."""
    for data in _both_shapes(tool_step(call)):
        assert decode_fast(data) is None
        decoded = decode_entry({b"data": data}, 1 << 20, 0.0)
        assert isinstance(decoded, StepEntry)


def test_an_unknown_last_error_code_is_kept_as_a_string() -> None:
    """A code OpenAI does not document is kept; a documented one still equals its enum."""
    unknown = _step(failed(last_error={"code": "tool_user_error", "message": "bad id"}))
    assert unknown.last_error is not None
    assert unknown.last_error.code == "tool_user_error"
    known = _step(failed())
    assert known.last_error is not None
    assert known.last_error.code == LastErrorCode.RATE_LIMIT_EXCEEDED


def test_an_unknown_last_error_code_takes_the_fast_path() -> None:
    """The fast path keeps any code too, with the same value as pydantic."""
    body = failed(last_error={"code": "tool_user_error", "message": "bad id"})
    assert all(_assert_subset(data) for data in _both_shapes(body))


def test_php_file_search_as_empty_list_reads_as_empty_object() -> None:
    """`"file_search": []` (PHP's `{}`) is an empty file_search, the other calls unchanged."""
    parsed = _step(tool_step(*PHP_CALLS, metadata={"name": "the step name"}))
    assert parsed.step_details.type == "tool_calls"
    file_search = parsed.step_details.tool_calls[2]
    assert isinstance(file_search, FileSearchToolCall)
    assert file_search.file_search.results is None
    assert decode_fast(json.dumps(tool_step(*PHP_CALLS)).encode()) is None


def test_php_metadata_as_empty_list_reads_as_empty_map() -> None:
    """`"metadata": []` is no metadata; a non-empty list is still rejected."""
    assert _step(step(metadata=[])).metadata == {}
    with pytest.raises(ValidationError):
        _step(step(metadata=["k"]))


@pytest.mark.parametrize(
    ("expired_at", "expires_at", "terminal_at"),
    [(None, 1699063890, 1699063890), (1699063800, 1699063890, 1699063800), (None, None, None)],
)
def test_an_expired_step_ends_at_its_run_deadline_without_expired_at(
    expired_at: int | None, expires_at: int | None, terminal_at: int | None
) -> None:
    """terminal_at of an expired step is expired_at, else expires_at; the fast path agrees."""
    body = step(status="expired", expired_at=expired_at, expires_at=expires_at)
    assert _step(body).terminal_at == terminal_at
    assert all(_assert_subset(data) for data in _both_shapes(body))


def test_expires_at_is_not_the_end_of_a_step_in_another_status() -> None:
    """Only an expired step falls back to expires_at."""
    assert _step(step(status="cancelled", expires_at=1699063890)).terminal_at is None


@pytest.mark.parametrize(
    ("sent", "read"),
    [
        (1699063290, 1699063290),
        (MS_FROM - 1, MS_FROM - 1),  # the year 5138 in seconds: still seconds
        (MS_FROM, MS_FROM // 1000),  # 1973 in milliseconds
        (1699063290123, 1699063290),  # floored
        (MAX_EXACT, MAX_EXACT // 1000),
    ],
)
def test_a_time_from_ms_from_up_is_read_as_milliseconds(sent: int, read: int) -> None:
    """Assistants-compatible servers (astra-assistants-api) send milliseconds: every time
    field reads them as seconds; the fast path leaves them to pydantic and agrees."""
    body = completed(created_at=sent, completed_at=sent)
    parsed = _step(body)
    assert (parsed.created_at, parsed.completed_at) == (read, read)
    assert [_assert_subset(data) for data in _both_shapes(body)] == [sent < MS_FROM] * 2
    run = Run.model_validate(_run(status="completed", created_at=sent, completed_at=sent))
    assert (run.created_at, run.ended_at) == (read, read)


def test_a_step_mixing_milliseconds_and_seconds_has_its_true_duration() -> None:
    """astra-assistants-api ends a file_search step with `completed_at` in seconds while its
    `created_at` stays in milliseconds: each field is read on its own."""
    body = completed(created_at=1718612130123, completed_at=1718612135)
    decoded = decode_entry({b"data": json.dumps(body).encode()}, 1_000_000, 1718612140.0)
    assert isinstance(decoded, StepEntry)
    assert (decoded.step.created_at, decoded.step.terminal_at) == (1718612130, 1718612135)
    end = json.loads(step_op(b"1-0", decoded.step, Source.ASSISTANTS, 0).end_event)
    assert (end["occurred_at"], end["duration_s"]) == (1718612135, 5)


# ---- the run ----


@pytest.mark.parametrize(
    ("status", "timestamps", "ended_at"),
    [
        ("queued", {}, None),
        ("in_progress", {"started_at": 1}, None),
        ("requires_action", {"started_at": 1}, None),
        ("cancelling", {"started_at": 1}, None),
        ("completed", {"completed_at": 7}, 7),
        ("failed", {"failed_at": 6}, 6),
        ("cancelled", {"cancelled_at": 5}, 5),
        ("incomplete", {"completed_at": 4}, 4),
        ("incomplete", {}, None),
        ("expired", {"expires_at": 9}, 9),
        ("expired", {"expires_at": 9, "expired_at": 8}, 8),
    ],
)
def test_a_run_ends_when_its_terminal_status_says(
    status: str, timestamps: dict[str, int], ended_at: int | None
) -> None:
    """ended_at reads the timestamp of the run's terminal status (expired: expires_at)."""
    run = Run.model_validate(_run(status=status, **{"expires_at": None, **timestamps}))
    assert run.ended_at == ended_at
    assert (run.status in RUN_TERMINAL_STATUSES) == (status not in NOT_TERMINAL)


NOT_TERMINAL = {"queued", "in_progress", "requires_action", "cancelling"}


def test_a_run_waiting_for_tool_outputs_names_the_calls() -> None:
    """pending_tool_call_ids lists submit_tool_outputs' calls in order, only while waiting."""
    action = {
        "type": "submit_tool_outputs",
        "submit_tool_outputs": {
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}},
                {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": ""}},
            ]
        },
    }
    waiting = Run.model_validate(_run(status="requires_action", required_action=action))
    assert waiting.pending_tool_call_ids == ("call_a", "call_b")
    stale = Run.model_validate(_run(status="in_progress", required_action=action))
    assert stale.pending_tool_call_ids == ()


def test_a_run_waiting_for_approval_waits_for_the_calls_it_names() -> None:
    """Azure's submit_tool_approval names the MCP calls awaiting approval; kept as sent."""
    call = {"id": "call_7x", "type": "mcp", "arguments": "{}", "name": "f", "server_label": "gh"}
    approval = {"type": "submit_tool_approval", "submit_tool_approval": {"tool_calls": [call]}}
    run = Run.model_validate(_run(status="requires_action", required_action=approval))
    assert run.required_action is not None
    assert run.required_action.model_dump()["submit_tool_approval"] == {"tool_calls": [call]}
    assert run.pending_tool_call_ids == ("call_7x",)
    empty = {"type": "submit_tool_approval", "submit_tool_approval": {"tool_calls": []}}
    assert Run.model_validate(_run(status="requires_action", required_action=empty))\
        .pending_tool_call_ids == ()  # fmt: skip


def test_a_run_waiting_for_another_action_has_no_tool_outputs_pending() -> None:
    """An action of a type nobody documents is kept as sent and names no pending calls."""
    other = {"type": "submit_form_v9", "submit_form_v9": {"tool_calls": [{"id": "c", "type": "x"}]}}
    run = Run.model_validate(_run(status="requires_action", required_action=other))
    assert run.required_action is not None
    assert run.required_action.model_dump()["submit_form_v9"] == other["submit_form_v9"]
    assert run.pending_tool_call_ids == ()


def test_a_run_keeps_what_it_does_not_model() -> None:
    """model, tools, instructions and unknown fields survive a round trip; none is fatal."""
    body = _run(instructions=None, tools=[BING_GROUNDING], a_field_from_2027={"x": 1})
    dumped = Run.model_validate(body).model_dump(mode="json")
    assert {name: dumped[name] for name in body} == body


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"status": "paused"}, ("status",)),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, ("metadata",)),
        ({"usage": {"prompt_tokens": -1, "completion_tokens": 1, "total_tokens": 0}}, ("usage",)),
        ({"created_at": "yesterday"}, ("created_at",)),
        ({"last_error": {"message": "no code"}}, ("last_error", "code")),
        ({"required_action": {"type": "submit_tool_outputs", "submit_tool_outputs": {}}}, ()),
    ],
    ids=["status", "metadata", "usage", "created_at", "last_error", "required_action"],
)
def test_what_the_lifecycle_reads_of_a_run_stays_strict(
    overrides: dict[str, Any], loc: tuple[str, ...]
) -> None:
    """An invalid run field fails at that field, reported against the run model."""
    with pytest.raises(ValidationError) as caught:
        INBOUND.validate_json(json.dumps(_run(**overrides)))
    locs = [e["loc"] for e in caught.value.errors()]
    assert any(tuple(x)[: 1 + len(loc)] == ("run", *loc) for x in locs), locs


# ---- the protocol and the classifier ----


def test_every_event_name_has_one_meaning() -> None:
    """Each protocol event is a step, a run, an ignored or the error event, exactly once."""
    steps = set(EVENT_STATUS) - {"thread.run.step.delta"}
    runs = set(RUN_EVENT_STATUS)
    kinds = [steps, runs, set(IGNORED_EVENTS), {"error"}]
    assert set().union(*kinds) == set(StreamEventName)
    assert sum(len(k) for k in kinds) == len(StreamEventName)
    assert set(get_args(RunEventLiteral)) == runs
    assert set(RUN_EVENT_STATUS.values()) == set(RunStatus)


@pytest.mark.parametrize("name", sorted(RUN_EVENT_STATUS))
def test_every_run_envelope_classifies_as_a_run(name: str) -> None:
    """A run under each thread.run.* event is a RunEntry, consistent with its status."""
    status = RUN_EVENT_STATUS[name]
    got = classify_entry(json.dumps({"event": name, "data": _run(status=status)}))
    assert isinstance(got, RunEntry)
    assert got.event == name
    assert not got.status_mismatch


def test_an_envelope_contradicting_its_object_is_flagged() -> None:
    """A run or step whose envelope implies another status is returned with status_mismatch."""
    run = classify_entry(json.dumps({"event": "thread.run.completed", "data": _run()}))
    assert isinstance(run, RunEntry)
    assert run.status_mismatch
    body = {"event": "thread.run.step.completed", "data": step()}
    got = classify_entry(json.dumps(body))
    assert isinstance(got, StepEntry)
    assert got.status_mismatch


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (step(), StepEntry(RunStep.model_validate(step()))),
        (
            {"event": "thread.message.delta", "data": {"id": "msg_1"}},
            IgnoredEntry("thread.message.delta"),
        ),
        ({"event": "done", "data": "[DONE]"}, IgnoredEntry("done")),
        ({"event": "done"}, IgnoredEntry("done")),
        (
            {"event": "thread.created", "data": {"id": "thread_1", "object": "thread"}},
            IgnoredEntry("thread.created"),
        ),
        (
            {"event": "thread.message.refused", "data": {}},
            IgnoredEntry("thread.message.refused", known=False),
        ),
        ({"id": "thread_1", "object": "thread", "created_at": 1}, IgnoredEntry("thread")),
        (
            {"id": "msg_1", "object": "thread.message", "content": []},
            IgnoredEntry("thread.message"),
        ),
        (
            {"id": "msg_1", "object": "thread.message.delta", "delta": {}},
            IgnoredEntry("thread.message.delta"),
        ),
        (
            {"id": "step_1", "object": "thread.run.step.delta", "delta": {}},
            IgnoredEntry("thread.run.step.delta", step_id="step_1"),
        ),
        (
            {"event": "error", "data": {"code": "server_error", "message": "Sorry"}},
            ErrorEntry("Sorry", "server_error"),
        ),
        ({"event": "error", "data": {"message": "boom"}}, ErrorEntry("boom")),
    ],
    ids=[
        "bare_step",
        "message_delta",
        "done",
        "done_without_data",
        "thread_created",
        "unknown_thread_event",
        "bare_thread",
        "bare_message",
        "bare_message_delta",
        "bare_step_delta",
        "error_event",
        "error_event_without_code",
    ],
)
def test_an_entry_is_classified_by_its_name(payload: Any, expected: Any) -> None:
    """classify_entry returns the step, run, ignored or error result the entry's name says."""
    got = classify_entry(json.dumps(payload).encode())
    if isinstance(expected, StepEntry):
        assert isinstance(got, StepEntry)
        assert got.step == expected.step
        assert got.event is None
    else:
        assert got == expected


@pytest.mark.parametrize(
    ("payload", "loc", "error_type"),
    [
        (
            {"event": "this.is.invalid", "data": {}},
            ("ignored_event", "event"),
            "stream_event_unknown",
        ),
        ({"event": "thread.run.paused", "data": {}}, ("run_event", "event"), "literal_error"),
        (
            {"event": "thread.run.step.paused", "data": step()},
            ("step_event", "event"),
            "literal_error",
        ),
        ({"event": 7, "data": {}}, ("ignored_event", "event"), "string_type"),
        ({"event": "error", "data": {"code": "x"}}, ("error_event", "data", "message"), "missing"),
        (
            {"event": "thread.run.failed", "data": {"id": "run_1"}},
            ("run_event", "data", "created_at"),
            "missing",
        ),
        ({"object": "thread", "event": "done", "created_at": 1}, (), None),
        ("[1, 2]", (), "inbound_kind_unknown"),
        ('{"event": ', (), "json_invalid"),
    ],
    ids=[
        "not_an_assistants_event",
        "unknown_run_event",
        "unknown_step_event",
        "event_not_a_string",
        "error_without_message",
        "run_envelope_invalid",
        "object_and_event",
        "not_an_object",
        "not_json",
    ],
)
def test_an_invalid_entry_says_where(
    payload: Any, loc: tuple[Any, ...], error_type: str | None
) -> None:
    """An invalid entry raises ValidationError at the field of the model it was meant to be."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    if error_type is None:  # an object kind wins over an event name, as for steps
        assert classify_entry(data) == IgnoredEntry("thread")
        return
    with pytest.raises(ValidationError) as caught:
        classify_entry(data)
    errors = caught.value.errors()
    assert any(e["type"] == error_type and tuple(e["loc"])[: len(loc)] == loc for e in errors), (
        errors
    )


def test_run_and_ignored_kinds_never_take_the_step_fast_path() -> None:
    """The fast path only ever accepts steps: a run, a message or done goes to pydantic."""
    for payload in [
        _run(),
        {"event": "thread.run.in_progress", "data": _run(status="in_progress")},
        {"event": "thread.message.delta", "data": {"id": "msg_1"}},
        {"event": "done", "data": "[DONE]"},
    ]:
        assert decode_fast(json.dumps(payload, separators=(",", ":")).encode()) is None
