"""Invalid payloads fail at the JSON boundary with an error that points at the bad field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from contracts import INBOUND

from .samples import completed, failed, step, tool_step

Loc = tuple[str | int, ...]


def _without(sample: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in sample.items() if k != name}


NEGATIVE_USAGE = {"prompt_tokens": -1, "completion_tokens": 5, "total_tokens": 4}

# (id, payload, location of the error, fragment of its message)
CASES: list[tuple[str, Any, Loc, str]] = [
    ("created_at_not_int", step(created_at="yesterday"), ("step", "created_at"), "integer"),
    ("status_unknown", step(status="paused"), ("step", "status"), "'in_progress'"),
    ("step_type_unknown", step(type="web_browsing"), ("step", "type"), "'tool_calls'"),
    (
        "step_details_contradict_type",
        step(type="tool_calls"),
        ("step", "step_details"),
        "step_details.type is 'message_creation' but the step's type is 'tool_calls'",
    ),
    (
        "tool_call_type_missing",
        tool_step({"id": "call_1", "web_browser": {}}),
        ("step", "step_details", "tool_calls", "tool_calls", 0),
        "a tool call needs a string 'type'",
    ),
    (
        "tool_call_known_type_invalid",
        tool_step({"id": "call_1", "type": "function", "function": {"arguments": "{}"}}),
        ("step", "step_details", "tool_calls", "tool_calls", 0, "function", "function", "name"),
        "Field required",
    ),
    (
        "tool_call_unknown_type_without_id",
        tool_step({"type": "bing_grounding", "bing_grounding": {}}),
        ("step", "step_details", "tool_calls", "tool_calls", 0, "other", "id"),
        "Field required",
    ),
    (
        "last_error_code_not_a_string",
        failed(last_error={"code": 429, "message": "no"}),
        ("step", "last_error", "code"),
        "valid string",
    ),
    (
        "metadata_17_keys",
        step(metadata={f"k{i}": "v" for i in range(17)}),
        ("step", "metadata"),
        "metadata has 17 keys; at most 16 are allowed",
    ),
    (
        "metadata_key_65_chars",
        step(metadata={"k" * 65: "v"}),
        ("step", "metadata"),
        "is 65 characters; at most 64",
    ),
    (
        "metadata_value_513_chars",
        step(metadata={"note": "v" * 513}),
        ("step", "metadata"),
        "metadata value of key 'note' is 513 characters; at most 512",
    ),
    (
        "usage_negative",
        completed(usage=NEGATIVE_USAGE),
        ("step", "usage", "prompt_tokens"),
        "greater than or equal to 0",
    ),
    ("id_missing", _without(step(), "id"), ("step", "id"), "Field required"),
    ("object_wrong", step(object="thread.run.steps"), ("step", "object"), "'thread.run.step'"),
    (
        "envelope_event_unknown",
        {"event": "thread.run.step.paused", "data": step()},
        ("step_event", "event"),
        "'thread.run.step.completed'",
    ),
    (
        "envelope_step_invalid",
        {"event": "thread.run.step.completed", "data": step(status="done")},
        ("step_event", "data", "status"),
        "'completed'",
    ),
    (
        "delta_without_id",
        {"event": "thread.run.step.delta", "data": {"object": "thread.run.step.delta"}},
        ("delta_event", "data", "id"),
        "Field required",
    ),
    ("id_with_slash", step(id="step/1"), ("step", "id"), "contains '/'"),
    ("id_empty", step(id=""), ("step", "id"), "at least 1 character"),
    ("run_id_257_chars", step(run_id="r" * 257), ("step", "run_id"), "at most 256 characters"),
    ("run_id_with_newline", step(run_id="run_1\n"), ("step", "run_id"), "non-printable"),
    ("created_at_past_2_53", step(created_at=2**53), ("step", "created_at"), "2**53-1"),
    ("created_at_negative", step(created_at=-1), ("step", "created_at"), "from 0 to"),
    (
        "usage_past_max_tokens",
        completed(usage={"prompt_tokens": 2**33, "completion_tokens": 0, "total_tokens": 1}),
        ("step", "usage", "prompt_tokens"),
        "at most 8589934591",
    ),
    ("neither_object_nor_event", {"id": "step_1"}, (), "'object'"),
    ("not_an_object", [step()], (), "'event'"),
]


@pytest.mark.parametrize(
    ("payload", "loc", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_invalid_payload_names_the_field(payload: Any, loc: Loc, fragment: str) -> None:
    """The validation error sits at the offending field and its message says what is wrong."""
    with pytest.raises(ValidationError) as caught:
        INBOUND.validate_json(json.dumps(payload).encode())
    errors = caught.value.errors(include_url=False)
    at_loc = [e["msg"] for e in errors if e["loc"] == loc]
    assert at_loc, f"no error at {loc}: {errors}"
    assert any(fragment in msg for msg in at_loc), at_loc


def test_neither_object_nor_event_has_its_own_error_type() -> None:
    """A payload that is no known kind fails with one clear error, not one per model."""
    with pytest.raises(ValidationError) as caught:
        INBOUND.validate_json(b'{"id": "step_1", "status": "completed"}')
    (error,) = caught.value.errors()
    assert error["type"] == "inbound_kind_unknown"


def test_invalid_json_is_reported_as_json() -> None:
    """Bytes that are not JSON fail as json_invalid, distinct from an invalid payload."""
    with pytest.raises(ValidationError) as caught:
        INBOUND.validate_json(b'{"id": "step_1", ')
    assert caught.value.errors()[0]["type"] == "json_invalid"


def test_long_metadata_key_is_truncated_in_the_message() -> None:
    """A huge metadata key is not copied whole into the error message."""
    with pytest.raises(ValidationError) as caught:
        INBOUND.validate_json(json.dumps(step(metadata={"k" * 10_000: "v"})).encode())
    assert len(caught.value.errors()[0]["msg"]) < 200
