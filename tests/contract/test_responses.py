"""Recorded Responses streams classify as expected; item and response phases; producer helper."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from contracts.responses import (
    ItemPhase,
    OutputItem,
    ResponseObject,
    ResponsePhase,
    item_phase,
    response_phase,
)
from contracts.responses_events import (
    IgnoredEvent,
    InvalidResponsesEntry,
    OutputItemEvent,
    ResponseLifecycleEvent,
    ResponsesErrorEvent,
    ResponsesEvent,
    classify_responses_entry,
)
from contracts.responses_producer import (
    ResponsesForwarder,
    event_payload,
    response_entry_data,
)

DATA = Path(__file__).parent.parent / "data" / "responses"
STREAMS = sorted(path.stem for path in DATA.glob("*.jsonl"))
LIFECYCLE = {
    "response.created",
    "response.queued",
    "response.in_progress",
    "response.completed",
    "response.failed",
    "response.incomplete",
    "response.cancelled",
}
ITEM = {"response.output_item.added", "response.output_item.done"}

Json = dict[str, Any]


def raw_lines(name: str) -> list[bytes]:
    """The recorded events of one stream, as recorded."""
    return (DATA / f"{name}.jsonl").read_bytes().splitlines()


def entries_of(name: str) -> list[bytes]:
    """The stream as the service receives it: through the producer helper."""
    forwarder = ResponsesForwarder()
    return [forwarder.entry_data(line) for line in raw_lines(name)]


def classified(name: str) -> list[ResponsesEvent]:
    """Every entry of a stream, classified; fails on the first invalid one."""
    events: list[ResponsesEvent] = []
    for entry in entries_of(name):
        result = classify_responses_entry(entry)
        assert not isinstance(result, InvalidResponsesEntry), result
        events.append(result)
    return events


@dataclass(frozen=True)
class Outcome:
    """What a recorded stream ends as."""

    response: ResponsePhase
    opened: dict[str, ItemPhase | None]  # item type -> phase at output_item.added
    closed: dict[str, ItemPhase | None]  # item type -> phase at done, else in the final output
    closed_only_by_response: int = 0  # items never sent in output_item.done


P = ItemPhase
EXPECTED: dict[str, Outcome] = {
    "message_plain": Outcome(
        ResponsePhase.COMPLETED, {"message": P.IN_PROGRESS}, {"message": P.COMPLETED}
    ),
    "function_call": Outcome(
        ResponsePhase.COMPLETED, {"function_call": P.IN_PROGRESS}, {"function_call": P.COMPLETED}
    ),
    "reasoning_function_call": Outcome(
        ResponsePhase.COMPLETED,
        {"reasoning": None, "function_call": P.IN_PROGRESS},
        {"reasoning": P.COMPLETED, "function_call": P.COMPLETED},
    ),
    "code_interpreter": Outcome(
        ResponsePhase.COMPLETED,
        {"message": P.IN_PROGRESS, "code_interpreter_call": P.IN_PROGRESS},
        {"message": P.COMPLETED, "code_interpreter_call": P.COMPLETED},
    ),
    "file_search": Outcome(
        ResponsePhase.COMPLETED,
        {"file_search_call": P.IN_PROGRESS, "message": P.IN_PROGRESS},
        {"file_search_call": P.COMPLETED, "message": P.COMPLETED},
    ),
    "web_search": Outcome(
        ResponsePhase.COMPLETED,
        {"web_search_call": P.IN_PROGRESS, "message": P.IN_PROGRESS},
        {"web_search_call": P.COMPLETED, "message": P.COMPLETED},
    ),
    "image_generation": Outcome(
        ResponsePhase.COMPLETED,
        {"reasoning": None, "image_generation_call": P.IN_PROGRESS, "message": P.IN_PROGRESS},
        {"reasoning": P.COMPLETED, "image_generation_call": P.COMPLETED, "message": P.COMPLETED},
    ),
    "azure_image_generation_done_generating": Outcome(
        ResponsePhase.COMPLETED,
        {"image_generation_call": P.IN_PROGRESS, "message": P.IN_PROGRESS},
        # Recorded: closed, in a completed response, yet still "generating".
        {"image_generation_call": P.IN_PROGRESS, "message": P.COMPLETED},
    ),
    "mcp_call_no_status": Outcome(
        ResponsePhase.COMPLETED,
        {"mcp_list_tools": None, "reasoning": None, "mcp_call": None, "message": P.IN_PROGRESS},
        {
            "mcp_list_tools": P.COMPLETED,
            "reasoning": P.COMPLETED,
            "mcp_call": P.COMPLETED,
            "message": P.COMPLETED,
        },
    ),
    "mcp_call_with_status": Outcome(
        ResponsePhase.COMPLETED,
        {
            "mcp_list_tools": None,
            "reasoning": None,
            "mcp_call": P.IN_PROGRESS,
            "message": P.IN_PROGRESS,
        },
        {
            "mcp_list_tools": P.COMPLETED,
            "reasoning": P.COMPLETED,
            "mcp_call": P.COMPLETED,
            "message": P.COMPLETED,
        },
    ),
    "mcp_list_tools_closed_by_response": Outcome(
        ResponsePhase.COMPLETED,
        {"mcp_list_tools": None, "message": P.IN_PROGRESS},
        {"mcp_list_tools": P.COMPLETED, "message": P.COMPLETED},
        closed_only_by_response=2,
    ),
    "mcp_approval_request": Outcome(
        ResponsePhase.COMPLETED,
        {"mcp_list_tools": None, "reasoning": None, "mcp_approval_request": None},
        {
            "mcp_list_tools": P.COMPLETED,
            "reasoning": P.COMPLETED,
            "mcp_approval_request": P.COMPLETED,
        },
    ),
    "local_shell_call": Outcome(
        ResponsePhase.COMPLETED,
        {"reasoning": None, "local_shell_call": P.IN_PROGRESS},
        {"reasoning": P.COMPLETED, "local_shell_call": P.COMPLETED},
    ),
    "programmatic_function_call_in_progress": Outcome(
        ResponsePhase.COMPLETED,
        {"reasoning": None, "program": None, "function_call": P.IN_PROGRESS},
        # Recorded: the call waits for the caller's output, so it stays in_progress.
        {"reasoning": P.COMPLETED, "program": P.COMPLETED, "function_call": P.IN_PROGRESS},
    ),
    "compaction": Outcome(
        ResponsePhase.COMPLETED,
        {"message": P.IN_PROGRESS, "compaction": None},
        {"message": P.COMPLETED, "compaction": P.COMPLETED},
    ),
    "background_queued": Outcome(
        ResponsePhase.COMPLETED, {"message": P.IN_PROGRESS}, {"message": P.COMPLETED}
    ),
    "background_resumed_starting_after_0": Outcome(
        ResponsePhase.COMPLETED, {"message": P.IN_PROGRESS}, {"message": P.COMPLETED}
    ),
    "vercel-ai_azure_web_search_done_searching": Outcome(
        ResponsePhase.COMPLETED,
        {"web_search_call": P.IN_PROGRESS, "message": P.IN_PROGRESS},
        # Recorded: closed, in a completed response, yet still "searching".
        {"web_search_call": P.IN_PROGRESS, "message": P.COMPLETED},
    ),
    "vercel-ai_xai_web_search_added_completed": Outcome(
        ResponsePhase.COMPLETED,
        # xAI sends the web_search_call already completed in output_item.added.
        {"web_search_call": P.COMPLETED, "message": P.IN_PROGRESS},
        {"web_search_call": P.COMPLETED, "message": P.COMPLETED},
    ),
    "vercel-ai_shell_call_output_added_completed": Outcome(
        ResponsePhase.COMPLETED,
        {"shell_call": P.IN_PROGRESS, "shell_call_output": P.COMPLETED, "message": P.IN_PROGRESS},
        {"shell_call": P.COMPLETED, "shell_call_output": P.COMPLETED, "message": P.COMPLETED},
    ),
    "vercel-ai_tool_search": Outcome(
        ResponsePhase.COMPLETED,
        {
            "tool_search_call": P.IN_PROGRESS,
            "tool_search_output": P.IN_PROGRESS,
            "function_call": P.IN_PROGRESS,
        },
        {
            "tool_search_call": P.COMPLETED,
            "tool_search_output": P.COMPLETED,
            "function_call": P.COMPLETED,
        },
    ),
    "pydantic-ai_deepseek_reasoning_function_call": Outcome(
        ResponsePhase.COMPLETED,
        {"reasoning": P.IN_PROGRESS, "function_call": P.IN_PROGRESS},
        {"reasoning": P.COMPLETED, "function_call": P.COMPLETED},
    ),
    "pydantic-ai_bedrock_mantle_reasoning_function_call": Outcome(
        ResponsePhase.COMPLETED,
        {"reasoning": None, "function_call": P.IN_PROGRESS},
        {"reasoning": P.COMPLETED, "function_call": P.COMPLETED},
    ),
    "vercel-ai_lmstudio_reasoning_message_function_call": Outcome(
        ResponsePhase.COMPLETED,
        {"reasoning": P.IN_PROGRESS, "message": P.IN_PROGRESS, "function_call": P.IN_PROGRESS},
        {"reasoning": P.COMPLETED, "message": P.COMPLETED, "function_call": P.COMPLETED},
    ),
    "pydantic-ai_openrouter_reasoning_id_changes": Outcome(
        ResponsePhase.COMPLETED,
        {"reasoning": None, "message": P.IN_PROGRESS},
        {"reasoning": P.COMPLETED, "message": P.COMPLETED},
        # Recorded: the final output names the reasoning item by another id than the stream.
        closed_only_by_response=1,
    ),
    "error_then_failed": Outcome(ResponsePhase.FAILED, {}, {}),
    "agent-framework_conversation_incomplete_max_output_tokens": Outcome(
        ResponsePhase.INCOMPLETE, {"message": P.IN_PROGRESS}, {"message": P.INCOMPLETE}
    ),
    "azure-ai-projects_workflow_actions": Outcome(
        ResponsePhase.COMPLETED,
        {"workflow_action": P.IN_PROGRESS},
        {"workflow_action": P.COMPLETED},
    ),
}


def test_every_stream_has_an_expectation() -> None:
    """Each data file is checked below, and each expectation has its file."""
    assert sorted(EXPECTED) == STREAMS


@pytest.mark.parametrize("name", STREAMS)
def test_every_event_classifies_by_its_type(name: str) -> None:
    """Every entry of a recorded stream is valid and lands in the family its `type` names."""
    for event in classified(name):
        if event.type in LIFECYCLE:
            assert isinstance(event, ResponseLifecycleEvent)
        elif event.type in ITEM:
            assert isinstance(event, OutputItemEvent)
        elif event.type == "error":
            assert isinstance(event, ResponsesErrorEvent)
        else:
            assert isinstance(event, IgnoredEvent)
            assert event.type.startswith("response.")


@pytest.mark.parametrize("name", STREAMS)
def test_item_events_carry_the_stream_response_id(name: str) -> None:
    """Item events get the id of the response the stream is about, and no other."""
    events = classified(name)
    ids = {e.response_id for e in events if isinstance(e, ResponseLifecycleEvent)}
    assert len(ids) == 1
    assert {e.response_id for e in events if isinstance(e, OutputItemEvent)} <= ids


@pytest.mark.parametrize("name", STREAMS)
def test_recorded_streams_end_as_expected(name: str) -> None:
    """The final response's phase and every item's phase when opened and when closed."""
    expected = EXPECTED[name]
    events = classified(name)
    final = [e for e in events if isinstance(e, ResponseLifecycleEvent)][-1]
    assert response_phase(final.response) is expected.response

    opened: dict[str, ItemPhase | None] = {}
    closed: dict[str, ItemPhase | None] = {}
    done_ids: set[str] = set()
    for event in events:
        if isinstance(event, OutputItemEvent):
            target = closed if event.closed else opened
            target[event.item.type] = item_phase(event.item, closed=event.closed)
            if event.closed:
                done_ids.add(event.item.id)
    by_response = [item for item in final.response.output if item.id not in done_ids]
    for item in by_response:
        assert closed.setdefault(item.type, item_phase(item, closed=True)) == item_phase(
            item, closed=True
        )
    assert opened == expected.opened
    assert closed == expected.closed
    assert len(by_response) == expected.closed_only_by_response


@pytest.mark.parametrize("name", STREAMS)
def test_sequence_numbers_count_up_by_one(name: str) -> None:
    """Within one recorded stream `sequence_number` rises by exactly one per event."""
    numbers = [event.sequence_number for event in classified(name)]
    assert None not in numbers
    assert numbers == list(range(numbers[0] or 0, (numbers[0] or 0) + len(numbers)))


@pytest.mark.parametrize("name", STREAMS)
def test_raw_item_events_are_invalid_without_the_producer_id(name: str) -> None:
    """As recorded (no producer), item events lack `response_id`; every other event is valid."""
    for line in raw_lines(name):
        result = classify_responses_entry(line)
        event_type = json.loads(line)["type"]
        if event_type in ITEM:
            assert isinstance(result, InvalidResponsesEntry)
            assert result.type == event_type
            assert result.reason == (
                f"{event_type} response_id: Field required "
                "(the producer adds it to every event without a 'response' object)"
            )
        else:
            assert not isinstance(result, InvalidResponsesEntry), result


@pytest.mark.parametrize("name", STREAMS)
def test_helper_adds_response_id_exactly_where_needed(name: str) -> None:
    """Only events without a `response` object gain `response_id`; nothing else changes."""
    raws = [json.loads(line) for line in raw_lines(name)]
    entries = [json.loads(entry) for entry in entries_of(name)]
    response_id = next(raw["response"]["id"] for raw in raws if "response" in raw)
    for raw, entry in zip(raws, entries, strict=True):
        if "response" in raw:
            assert entry == raw
        else:
            assert entry == {**raw, "response_id": response_id}


def test_items_closed_only_by_the_final_response() -> None:
    """Two of three mcp_list_tools items get no output_item.done; the final output closes them."""
    events = classified("mcp_list_tools_closed_by_response")
    added = {e.item.id for e in events if isinstance(e, OutputItemEvent) and not e.closed}
    done = {e.item.id for e in events if isinstance(e, OutputItemEvent) and e.closed}
    final = events[-1]
    assert isinstance(final, ResponseLifecycleEvent)
    assert final.type == "response.completed"
    output = {item.id: item for item in final.response.output}
    assert len(added - done) == 2
    for item_id in added - done:
        assert item_phase(output[item_id]) is None
        assert item_phase(output[item_id], closed=True) is ItemPhase.COMPLETED


def test_openrouter_final_output_renames_the_reasoning_item() -> None:
    """OpenRouter streams reasoning as rs_tmp_2kbe…, then its final output calls it rs_tmp_ku4i…:
    recorded as is. The service tracks both ids (no id to tie them), so the run counts three
    steps for two items; nothing is dead-lettered."""
    events = classified("pydantic-ai_openrouter_reasoning_id_changes")
    streamed = {e.item.id for e in events if isinstance(e, OutputItemEvent)}
    final = events[-1]
    assert isinstance(final, ResponseLifecycleEvent)
    output = [item.id for item in final.response.output]
    assert streamed == {"rs_tmp_2kbe7x16sax", "msg_tmp_8cjof4f6zpw"}
    assert output == ["rs_tmp_ku4i7pagjwn", "msg_tmp_8cjof4f6zpw"]


def test_failed_response_and_its_error_event() -> None:
    """A quota error streams an `error` event (fields nested) and then `response.failed`."""
    error, failed = classified("error_then_failed")[-2:]
    assert isinstance(error, ResponsesErrorEvent)
    assert error.code == "insufficient_quota"
    assert error.message.startswith("You exceeded your current quota")
    assert isinstance(failed, ResponseLifecycleEvent)
    assert failed.type == "response.failed"
    assert response_phase(failed.response) is ResponsePhase.FAILED
    assert failed.response.error is not None
    assert failed.response.error.code == "insufficient_quota"
    assert failed.response.usage is None
    assert error.response_id == failed.response.id


def test_incomplete_response_carries_its_reason_and_usage() -> None:
    """A response cut by max_output_tokens (recorded: gpt-4o-mini, 200 tokens) is incomplete,
    says why, reports usage and belongs to the conversation it was created in."""
    events = classified("agent-framework_conversation_incomplete_max_output_tokens")
    final = events[-1]
    assert isinstance(final, ResponseLifecycleEvent)
    assert final.type == "response.incomplete"
    assert response_phase(final.response) is ResponsePhase.INCOMPLETE
    assert final.response.incomplete_details is not None
    assert final.response.incomplete_details.reason == "max_output_tokens"
    assert final.response.completed_at is None
    assert final.response.usage is not None
    assert (final.response.usage.output_tokens, final.response.usage.total_tokens) == (200, 219)
    conversations = {
        e.response.conversation.id
        for e in events
        if isinstance(e, ResponseLifecycleEvent) and e.response.conversation is not None
    }
    assert conversations == {"conv_68fb9837f9588193ac3da6bd57b636a50cdad19d14602ec8"}


def test_azure_workflow_response_is_made_of_workflow_actions() -> None:
    """An Azure AI Foundry workflow agent streams one `workflow_action` item per action, each
    opened in_progress and closed completed, numbered from 1; ids are `wfresp_`/`wfa_`, the
    response names its conversation, reports zero usage and a `completed_at` while in
    progress (not read as an end)."""
    events = classified("azure-ai-projects_workflow_actions")
    assert events[0].sequence_number == 1
    created = events[0]
    assert isinstance(created, ResponseLifecycleEvent)
    assert created.response.id.startswith("wfresp_")
    assert created.response.status == "in_progress"
    assert created.response.completed_at == created.response.created_at
    assert created.response.conversation is not None
    kinds = [
        (e.item.model_extra or {}).get("kind")
        for e in events
        if isinstance(e, OutputItemEvent) and e.closed
    ]
    assert kinds == [
        "SetVariable",
        "CreateConversation",
        "CreateConversation",
        "InvokeAzureAgent",
        "InvokeAzureAgent",
        "SetVariable",
        "EndConversation",
    ]
    final = events[-1]
    assert isinstance(final, ResponseLifecycleEvent)
    assert final.response.usage is not None
    assert final.response.usage.total_tokens == 0


def test_background_response_is_queued_first() -> None:
    """In background mode the response is created queued, then `response.queued` is sent."""
    created, queued, in_progress = classified("background_queued")[:3]
    for event in (created, queued, in_progress):
        assert isinstance(event, ResponseLifecycleEvent)
        assert response_phase(event.response) is ResponsePhase.IN_PROGRESS
    assert isinstance(created, ResponseLifecycleEvent)
    assert created.response.status == "queued"
    assert queued.type == "response.queued"


def test_resumed_stream_repeats_the_events_already_seen() -> None:
    """`starting_after=0` replays every later event: same sequence numbers, same content."""
    first = {json.loads(line)["sequence_number"]: line for line in raw_lines("background_queued")}
    resumed = raw_lines("background_resumed_starting_after_0")
    resumed_numbers = [json.loads(line)["sequence_number"] for line in resumed]
    assert resumed_numbers == sorted(first)[1:]
    for line in resumed:
        assert json.loads(line) == json.loads(first[json.loads(line)["sequence_number"]])


@pytest.mark.parametrize(
    ("status", "error", "closed", "phase"),
    [
        ("in_progress", None, False, P.IN_PROGRESS),
        ("searching", None, False, P.IN_PROGRESS),
        ("interpreting", None, False, P.IN_PROGRESS),
        ("generating", None, True, P.IN_PROGRESS),
        ("calling", None, False, P.IN_PROGRESS),
        ("queued", None, False, P.IN_PROGRESS),
        ("completed", None, False, P.COMPLETED),
        ("incomplete", None, True, P.INCOMPLETE),
        ("failed", None, False, P.FAILED),
        ("failed", "boom", True, P.FAILED),
        ("completed", {"message": "ignored: the status is terminal"}, True, P.COMPLETED),
        (None, None, False, None),
        (None, None, True, P.COMPLETED),
        (None, "Error retrieving tool list from MCP server", False, P.FAILED),
        (None, {"code": "server_error", "message": "x"}, True, P.FAILED),
        ("paused_v9", None, False, None),
        ("paused_v9", None, True, P.COMPLETED),
        ("paused_v9", "boom", True, P.FAILED),
    ],
)
def test_item_phase_table(status: str | None, error: object, closed: bool, phase: P | None) -> None:
    """Statuses in progress / terminal; no status or an unknown one: error, then closed-ness."""
    item = OutputItem(id="it_1", type="any_type_v9", status=status, error=error)
    assert item_phase(item, closed=closed) == phase


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ("queued", ResponsePhase.IN_PROGRESS),
        ("in_progress", ResponsePhase.IN_PROGRESS),
        ("completed", ResponsePhase.COMPLETED),
        ("failed", ResponsePhase.FAILED),
        ("incomplete", ResponsePhase.INCOMPLETE),
        ("cancelled", ResponsePhase.CANCELLED),
    ],
)
def test_response_phase_table(status: str, phase: ResponsePhase) -> None:
    """Every response status maps to one phase; queued counts as in progress."""
    response = ResponseObject.model_validate({"id": "resp_1", "created_at": 1, "status": status})
    assert response_phase(response) is phase


def _lifecycle(event_type: str = "response.cancelled", **response: Any) -> bytes:
    body: Json = {"id": "resp_1", "object": "response", "created_at": 1.5, "status": "cancelled"}
    return json.dumps({"type": event_type, "response": {**body, **response}}).encode()


def test_lifecycle_event_keeps_unknown_fields_and_types() -> None:
    """Unknown item types, unknown fields and float timestamps are accepted and kept."""
    event = classify_responses_entry(
        _lifecycle(
            output=[{"id": "x_1", "type": "hologram_call", "status": "completed", "beam": 3}],
            conversation={"id": "conv_1"},
            prompt={"id": "pmpt_1", "version": "2"},
            metadata={"user": "u_1"},
            brand_new_field={"a": 1},
        )
    )
    assert isinstance(event, ResponseLifecycleEvent)
    assert event.response.created_at == 1.5
    assert event.response.conversation is not None
    assert event.response.conversation.id == "conv_1"
    assert event.response.prompt is not None
    assert event.response.prompt.id == "pmpt_1"
    assert event.response.output[0].model_extra == {"beam": 3}
    assert response_phase(event.response) is ResponsePhase.CANCELLED


def test_error_event_documented_shape() -> None:
    """The documented top-level `code` / `message` error event, with a null code."""
    event = classify_responses_entry(
        b'{"type":"error","code":null,"message":"boom","param":null,"sequence_number":4}'
    )
    assert isinstance(event, ResponsesErrorEvent)
    assert (event.code, event.message, event.response_id) == (None, "boom", None)


ITEM_OK: Json = {
    "type": "response.output_item.done",
    "response_id": "resp_1",
    "output_index": 0,
    "item": {"id": "msg_1", "type": "message", "status": "completed"},
}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{", "Invalid JSON: EOF while parsing an object at line 1 column 1"),
        (b"[]", "expected a JSON object whose 'type' is 'error' or a 'response.*' event"),
        (b'{"id":"x"}', "expected a JSON object whose 'type' is 'error' or a 'response.*' event"),
        (
            b'{"type":"thread.run.step.created"}',
            "type 'thread.run.step.created': "
            "expected a JSON object whose 'type' is 'error' or a 'response.*' event",
        ),
        (
            json.dumps({k: v for k, v in ITEM_OK.items() if k != "response_id"}).encode(),
            "response.output_item.done response_id: Field required "
            "(the producer adds it to every event without a 'response' object)",
        ),
        (
            json.dumps({**ITEM_OK, "item": {"type": "message"}}).encode(),
            "response.output_item.done item.id: Field required",
        ),
        (
            json.dumps({**ITEM_OK, "output_index": -1}).encode(),
            "response.output_item.done output_index: Input should be greater than or equal to 0",
        ),
        (
            b'{"type":"response.completed"}',
            "response.completed response: Field required",
        ),
        (
            _lifecycle(status="paused"),
            "response.cancelled response.status: Input should be 'queued', 'in_progress', "
            "'completed', 'failed', 'incomplete' or 'cancelled'",
        ),
        (
            _lifecycle("response.done"),
            None,  # not a lifecycle event of this API: only counted
        ),
        (b'{"type":"error","code":"x"}', "error message: Field required"),
    ],
)
def test_invalid_entries_say_precisely_why(data: bytes, reason: str | None) -> None:
    """Bad bytes give one precise reason, naming the event type and the field."""
    result = classify_responses_entry(data)
    if reason is None:
        assert isinstance(result, IgnoredEvent)
    else:
        assert isinstance(result, InvalidResponsesEntry)
        assert result.reason == reason


class _SdkEvent(BaseModel):
    """Stands in for an openai-python event: a pydantic model parsed from the wire."""

    model_config = ConfigDict(extra="allow")

    type: str
    item_id: str | None = None
    delta: str | None = None


DELTA: Json = {"type": "response.output_text.delta", "item_id": "msg_1", "delta": "Hi"}


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(DELTA, id="dict"),
        pytest.param(_SdkEvent.model_validate(DELTA), id="pydantic"),
        pytest.param(json.dumps(DELTA), id="sse-data-text"),
        pytest.param(json.dumps(DELTA).encode(), id="sse-data-bytes"),
        pytest.param(f"event: x\ndata: {json.dumps(DELTA)}\n\n", id="sse-frame"),
    ],
)
def test_helper_reads_every_event_form(event: object) -> None:
    """A dict, an SDK model, SSE data text or bytes, or a whole frame give the same entry."""
    assert json.loads(response_entry_data(event, "resp_1")) == {**DELTA, "response_id": "resp_1"}


def test_helper_leaves_events_that_need_nothing() -> None:
    """A response-carrying event, an event with its own id, or no id known: unchanged."""
    created = {"type": "response.created", "response": {"id": "resp_1"}}
    own = {**DELTA, "response_id": "resp_own"}
    assert json.loads(response_entry_data(created, "resp_2")) == created
    assert json.loads(response_entry_data(own, "resp_2")) == own
    assert json.loads(response_entry_data(DELTA)) == DELTA
    assert event_payload(_SdkEvent(type="response.x")) == {"type": "response.x"}


def test_forwarder_resumes_with_a_known_id() -> None:
    """A resumed stream that starts with deltas gets the id the forwarder was given."""
    forwarder = ResponsesForwarder(response_id="resp_9")
    assert json.loads(forwarder.entry_data(DELTA))["response_id"] == "resp_9"
    forwarder.entry_data({"type": "response.created", "response": {"id": "resp_10"}})
    assert forwarder.response_id == "resp_10"


@pytest.mark.parametrize(
    ("event", "error"),
    [(42, TypeError), ("[1, 2]", ValueError), ("event: x\n\n", ValueError)],
)
def test_helper_rejects_what_is_no_event(event: object, error: type[Exception]) -> None:
    """Something that is not an event object fails loudly at the producer."""
    with pytest.raises(error):
        response_entry_data(event, "resp_1")


def test_ignored_events_are_counted_by_type() -> None:
    """Deltas and tool progress of a recorded stream are counted per `type`."""
    counts = Counter(e.type for e in classified("web_search") if isinstance(e, IgnoredEvent))
    assert counts["response.web_search_call.searching"] == 1
    assert counts["response.output_text.delta"] > 10
    assert not set(counts) & (LIFECYCLE | ITEM)
