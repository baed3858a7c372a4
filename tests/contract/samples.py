"""Realistic run steps as the Assistants API returns them, shared by the contract tests."""

from __future__ import annotations

import copy
from typing import Any

Json = dict[str, Any]

_BASE: Json = {
    "id": "step_abc123",
    "object": "thread.run.step",
    "created_at": 1699063291,
    "assistant_id": "asst_abc123",
    "thread_id": "thread_abc123",
    "run_id": "run_abc123",
    "type": "message_creation",
    "status": "in_progress",
    "step_details": {"type": "message_creation", "message_creation": {"message_id": "msg_1"}},
    "last_error": None,
    "expired_at": None,
    "cancelled_at": None,
    "failed_at": None,
    "completed_at": None,
    "metadata": {},
    "usage": None,
}

CODE_INTERPRETER: Json = {
    "id": "call_code",
    "type": "code_interpreter",
    "code_interpreter": {
        "input": "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nprint(6 * 7)",
        "outputs": [
            {"type": "logs", "logs": "42\n"},
            {"type": "image", "image": {"file_id": "file-img1"}},
        ],
    },
}
FILE_SEARCH_BARE: Json = {"id": "call_fs1", "type": "file_search", "file_search": {}}
FILE_SEARCH_FULL: Json = {
    "id": "call_fs2",
    "type": "file_search",
    "file_search": {
        "ranking_options": {"ranker": "default_2024_08_21", "score_threshold": 0.5},
        "results": [
            {
                "file_id": "file-doc1",
                "file_name": "handbook.pdf",
                "score": 0.87,
                "content": [{"type": "text", "text": "Refunds are processed in 5 days."}],
            },
            {"file_id": "file-doc2", "file_name": "faq.md", "score": 0.61},
        ],
    },
}
FUNCTION_PENDING: Json = {
    "id": "call_fn1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}', "output": None},
}
FUNCTION_DONE: Json = {
    "id": "call_fn2",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}', "output": "-3C"},
}


def step(**overrides: Any) -> Json:
    """A valid in-progress message_creation step, with top-level fields replaced."""
    sample = copy.deepcopy(_BASE)
    sample.update(overrides)
    return sample


def tool_step(*calls: Json, **overrides: Any) -> Json:
    """A valid tool_calls step carrying `calls`."""
    details = {"type": "tool_calls", "tool_calls": [copy.deepcopy(c) for c in calls]}
    return step(type="tool_calls", step_details=details, **overrides)


def completed(**overrides: Any) -> Json:
    """A completed step with usage, as the API returns it at the end (overridable)."""
    usage = {"prompt_tokens": 120, "completion_tokens": 35, "total_tokens": 155}
    return step(**{"status": "completed", "completed_at": 1699063299, "usage": usage, **overrides})


def failed(**overrides: Any) -> Json:
    """A step that failed on a rate limit."""
    error = {"code": "rate_limit_exceeded", "message": "Rate limit reached for gpt-4o."}
    return step(**{"status": "failed", "failed_at": 1699063295, "last_error": error, **overrides})
