"""A realistic sample run, as a producer would write it: used by the demo and the tests."""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "RESPONSES_EXPECTED",
    "SAMPLE_EXPECTED",
    "responses_entries",
    "run",
    "sample_entries",
    "step",
]

T0 = 1_764_000_000


def step(
    step_id: str,
    status: str,
    *,
    run_id: str = "run_demo",
    kind: str = "message_creation",
    created_at: int = T0,
    ended_at: int | None = None,
    usage: tuple[int, int] | None = None,
    error: str | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One run step object with the exact API field names (every nullable field written)."""
    details: dict[str, Any]
    if kind == "message_creation":
        details = {"type": "message_creation", "message_creation": {"message_id": f"msg_{step_id}"}}
    elif kind == "code_interpreter":
        details = {
            "type": "tool_calls",
            "tool_calls": [
                {
                    "id": f"call_{step_id}",
                    "type": "code_interpreter",
                    "code_interpreter": {
                        "input": "print(sum(range(10)))",
                        "outputs": [{"type": "logs", "logs": "45"}],
                    },
                }
            ],
        }
    else:
        details = {
            "type": "tool_calls",
            "tool_calls": [
                {
                    "id": f"call_{step_id}",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Lisbon"}',
                        "output": '{"temp_c": 21}' if status == "completed" else None,
                    },
                }
            ],
        }
    return {
        "id": step_id,
        "object": "thread.run.step",
        "created_at": created_at,
        "assistant_id": "asst_demo",
        "thread_id": "thread_demo",
        "run_id": run_id,
        "type": "message_creation" if kind == "message_creation" else "tool_calls",
        "status": status,
        "step_details": details,
        "last_error": None
        if error is None
        else {"code": error, "message": "Rate limit reached for requests"},
        "expired_at": ended_at if status == "expired" else None,
        "cancelled_at": ended_at if status == "cancelled" else None,
        "failed_at": ended_at if status == "failed" else None,
        "completed_at": ended_at if status == "completed" else None,
        "metadata": metadata,
        "usage": None
        if usage is None
        else {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
    }


def _env(event: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"event": f"thread.run.step.{event}", "data": data}


def run(run_id: str, status: str, *, calls: tuple[str, ...] = (), ended_at: int | None = None,
        usage: tuple[int, int] | None = None) -> dict[str, Any]:  # fmt: skip
    """A `thread.run.<status>` event with the run object as the API streams it."""
    body: dict[str, Any] = {
        "id": run_id, "object": "thread.run", "created_at": T0 - 1, "thread_id": "thread_demo",
        "assistant_id": "asst_demo", "status": status, "model": "gpt-4o", "tools": [],
        "required_action": None, "last_error": None, "incomplete_details": None,
        "completed_at": ended_at, "usage": None if usage is None else {
            "prompt_tokens": usage[0], "completion_tokens": usage[1],
            "total_tokens": sum(usage)},
    }  # fmt: skip
    if calls:
        body["required_action"] = {
            "type": "submit_tool_outputs",
            "submit_tool_outputs": {"tool_calls": [
                {"id": c, "type": "function",
                 "function": {"name": "get_weather", "arguments": "{}"}} for c in calls]},
        }  # fmt: skip
    return {"event": f"thread.run.{status}", "data": body}


def _message_delta(text: str) -> dict[str, Any]:
    return {"event": "thread.message.delta", "data": {
        "id": "msg_step_msg1", "object": "thread.message.delta",
        "delta": {"content": [{"index": 0, "type": "text", "text": {"value": text}}]}}}  # fmt: skip


def sample_entries(run_id: str = "run_demo") -> list[tuple[str, bytes]]:
    """(label, `data` field bytes) in producer order: the demo's realistic run."""
    msg1_done = step("step_msg1", "completed", ended_at=T0 + 3, usage=(120, 40), run_id=run_id)
    out: list[tuple[str, Any]] = [
        (
            "thread created",
            {"event": "thread.created", "data": {"id": "thread_demo", "object": "thread"}},
        ),
        ("run queued", run(run_id, "queued")),
        ("run in progress", run(run_id, "in_progress")),
        ("created", _env("created", step("step_msg1", "in_progress", run_id=run_id))),
        ("message delta", _message_delta("The weather")),
        ("message delta", _message_delta(" in Lisbon")),
        (
            "tool call",
            step("step_fn", "in_progress", kind="function", created_at=T0 + 4, run_id=run_id),
        ),
        ("run waits for the tool", run(run_id, "requires_action", calls=("call_step_fn",))),
        ("tool outputs submitted", run(run_id, "in_progress")),
        (
            "delta",
            _env(
                "delta",
                {
                    "id": "step_fn",
                    "object": "thread.run.step.delta",
                    "delta": {"step_details": {"type": "tool_calls", "tool_calls": []}},
                },
            ),
        ),
        (
            "tool call done",
            _env(
                "completed",
                step(
                    "step_fn",
                    "completed",
                    kind="function",
                    created_at=T0 + 4,
                    ended_at=T0 + 6,
                    usage=(300, 25),
                    run_id=run_id,
                ),
            ),
        ),
        ("message done", _env("completed", msg1_done)),
        ("duplicate", _env("completed", msg1_done)),
        (
            "out of order: done first",
            step(
                "step_code",
                "completed",
                kind="code_interpreter",
                created_at=T0 + 7,
                ended_at=T0 + 9,
                usage=(200, 60),
                run_id=run_id,
            ),
        ),
        (
            "out of order: late in_progress",
            step(
                "step_code",
                "in_progress",
                kind="code_interpreter",
                created_at=T0 + 7,
                run_id=run_id,
            ),
        ),
        ("retry step", step("step_retry", "in_progress", created_at=T0 + 10, run_id=run_id)),
        (
            "rate limited",
            _env(
                "failed",
                step(
                    "step_retry",
                    "failed",
                    created_at=T0 + 10,
                    ended_at=T0 + 11,
                    usage=(80, 0),
                    error="rate_limit_exceeded",
                    run_id=run_id,
                ),
            ),
        ),
        (
            "terminal is final",
            _env("failed", step("step_msg1", "failed", ended_at=T0 + 12, run_id=run_id)),
        ),
        ("poison: not JSON", b'{"id": "step_x", "status": '),
        ("poison: unknown status", step("step_y", "paused", run_id=run_id)),
        ("final message", step("step_msg2", "in_progress", created_at=T0 + 13, run_id=run_id)),
        (
            "final message done",
            step(
                "step_msg2",
                "completed",
                created_at=T0 + 13,
                ended_at=T0 + 15,
                usage=(400, 90),
                run_id=run_id,
            ),
        ),
        ("run completed", run(run_id, "completed", ended_at=T0 + 16, usage=(1100, 215))),
        ("done", {"event": "done", "data": "[DONE]"}),
    ]
    return [(label, v if isinstance(v, bytes) else json.dumps(v).encode()) for label, v in out]


SAMPLE_EXPECTED = {
    "run.started": 1,
    "run.requires_action": 1,
    "run.completed": 1,
    "run_step.started": 5,
    "run_step.completed": 4,
    "run_step.failed": 1,
    "run_step.transition_rejected": 1,
    "run.usage": 5,
    "dlq": 2,
}
"""Derived events (by type) and DLQ entries the sample yields, exactly."""


def responses_entries(response_id: str = "resp_demo") -> list[tuple[str, bytes]]:
    """A Responses API stream as the SDK emits it (a reasoning item without status, a
    function call, a message), forwarded with the response id added where it is missing."""
    from contracts.responses_producer import ResponsesForwarder

    response = {"id": response_id, "object": "response", "created_at": T0 + 20,
                "status": "in_progress", "output": [], "usage": None}  # fmt: skip
    reasoning = {"id": "rs_demo", "type": "reasoning", "summary": []}
    call = {"id": "fc_demo", "type": "function_call", "status": "in_progress",
            "call_id": "call_demo", "name": "get_weather", "arguments": ""}  # fmt: skip
    call_done = {**call, "status": "completed", "arguments": '{"city":"Lisbon"}'}
    message = {"id": "msg_demo", "type": "message", "status": "in_progress", "role":
               "assistant", "content": []}  # fmt: skip
    message_done = {**message, "status": "completed"}
    final = {**response, "status": "completed", "completed_at": T0 + 24,
             "output": [reasoning, call_done, message_done],
             "usage": {"input_tokens": 320, "output_tokens": 75, "total_tokens": 395}}  # fmt: skip
    events: list[tuple[str, dict[str, Any]]] = [
        ("response created", {"type": "response.created", "response": response}),
        ("reasoning item", {"type": "response.output_item.added", "output_index": 0,
                            "item": reasoning}),
        ("reasoning done", {"type": "response.output_item.done", "output_index": 0,
                            "item": reasoning}),
        ("function call", {"type": "response.output_item.added", "output_index": 1,
                           "item": call}),
        ("arguments delta", {"type": "response.function_call_arguments.delta",
                             "item_id": "fc_demo", "output_index": 1, "delta": "{}"}),
        ("function call done", {"type": "response.output_item.done", "output_index": 1,
                                "item": call_done}),
        ("message item", {"type": "response.output_item.added", "output_index": 2,
                          "item": message}),
        ("text delta", {"type": "response.output_text.delta", "item_id": "msg_demo",
                        "output_index": 2, "content_index": 0, "delta": "Sunny"}),
        ("response completed", {"type": "response.completed", "response": final}),
    ]  # fmt: skip
    forwarder = ResponsesForwarder()
    return [(label, forwarder.entry_data(event)) for label, event in events]


RESPONSES_EXPECTED = {
    "run.started": 1,
    "run_step.started": 3,
    "run_step.completed": 3,
    "run.usage": 1,
    "run.completed": 1,
}
"""Derived events (by type) the Responses sample yields, exactly."""
