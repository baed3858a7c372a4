"""Hostile source entries, each with the DLQ kind and a fragment of the reason it must get.

Shared by the decode-level table (tests/contract/test_hostile_decode.py) and the system
test that mixes them into a normal load (tests/system/test_hostile.py). Every one of them
can only fail because of its bytes, so each is refused when decoded: never retried, never
`processing_failed`. (Over 300 lines: it is one table, a case per entry, read top to bottom.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.contract.samples import completed, step

__all__ = ["HOSTILE", "Hostile"]

MAX_PAYLOAD_BYTES = 1_048_576  # RUNSTEPS_MAX_PAYLOAD_BYTES's default


@dataclass(frozen=True)
class Hostile:
    """One hostile entry: its fields in order (repeats allowed) and the verdict it must get."""

    name: str
    fields: tuple[tuple[bytes, bytes], ...]
    kind: str
    reason: str  # a fragment of the DLQ entry's error message


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _swap(value: Any, old: bytes, new: bytes) -> bytes:
    """`value` as JSON with the bytes `old` replaced: for what json.dumps would never write."""
    data = _dumps(value)
    assert old in data
    return data.replace(old, new, 1)


def _with(body: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**body, **fields}


def _usage(prompt: Any = 1, completion: Any = 1, total: Any = 2) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def _run(status: str = "completed", **fields: Any) -> dict[str, Any]:
    body = {"id": "run_h", "object": "thread.run", "created_at": 1699063290,
            "thread_id": "thread_h", "assistant_id": "asst_h", "status": status,
            "completed_at": 1699063299, "usage": _usage(), **fields}  # fmt: skip
    return {"event": f"thread.run.{status}", "data": body}


def _response(**fields: Any) -> dict[str, Any]:
    body = {"id": "resp_h", "object": "response", "created_at": 1764000000,
            "status": "completed", "completed_at": 1764000009, "output": [],
            "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
            **fields}  # fmt: skip
    return {"type": "response.completed", "sequence_number": 9, "response": body}


def _item_event(**fields: Any) -> dict[str, Any]:
    item = {"id": "msg_h", "type": "message", "status": "in_progress"}
    return {"type": "response.output_item.added", "response_id": "resp_h", "output_index": 0,
            "item": item, **fields}  # fmt: skip


def _deep(depth: int) -> bytes:
    return _dumps(step(id="step_deep"))[:-1] + b', "junk": ' + b"[" * depth + b"]" * depth + b"}"


_STEP = step(id="step_h", run_id="run_h", metadata={"k": "v"})
_DONE = completed(id="step_h", run_id="run_h")
_P = "step.usage.prompt_tokens"
_TOKENS = "at most 8589934591"
_TIME = "from 0 to 9007199254740991"

# (name, data or fields, kind, reason fragment)
_CASES: list[tuple[str, bytes | tuple[tuple[bytes, bytes], ...], str, str]] = [
    # bytes that are no JSON (orjson, strict)
    ("invalid_utf8_in_run_id", _swap(_STEP, b"run_h", b"run_\xff"), "invalid_json", "UTF-8"),
    ("invalid_utf8_in_metadata", _swap(_STEP, b'"v"', b'"\xc3"'), "invalid_json", "UTF-8"),
    (
        "encoded_surrogate_in_id",
        _swap(_STEP, b"step_h", b"step_\xed\xa0\x80"),
        "invalid_json",
        "UTF-8",
    ),
    (
        "invalid_utf8_in_unknown_field",
        _dumps(_STEP)[:-1] + b', "x": "\xff"}',
        "invalid_json",
        "UTF-8",
    ),
    (
        "lone_surrogate_escape_in_id",
        _swap(_STEP, b"step_h", b"step_\\ud800"),
        "invalid_json",
        "surrogate",
    ),
    ("nesting_10000_in_unknown_field", _deep(10_000), "invalid_json", "depth limit"),
    ("nesting_1025_at_the_root", b"[" * 1025 + b"]" * 1025, "invalid_json", "depth limit"),
    ("nan_literal", _swap(_STEP, b"1699063291", b"NaN"), "invalid_json", "invalid JSON"),
    ("infinity_literal", _swap(_DONE, b"120", b"Infinity"), "invalid_json", "invalid JSON"),
    (
        "minus_infinity_literal",
        _swap(_DONE, b"120", b"-Infinity"),
        "invalid_json",
        "invalid JSON",
    ),
    (
        "number_past_a_double",
        _dumps(_STEP)[:-1] + b', "x": 1e400}',
        "invalid_json",
        "infinity",
    ),
    ("bom_prefix", b"\xef\xbb\xbf" + _dumps(_STEP), "invalid_json", "BOM"),
    ("trailing_garbage", _dumps(_STEP) + b" x", "invalid_json", "after document"),
    ("two_documents", _dumps(_STEP) * 2, "invalid_json", "after document"),
    ("truncated", _dumps(_STEP)[:-1], "invalid_json", "invalid JSON"),
    (
        "raw_control_character",
        _swap(_STEP, b"step_h", b"step\x01"),
        "invalid_json",
        "control character",
    ),
    ("leading_zero", _swap(_STEP, b"1699063291", b"01699063291"), "invalid_json", "leading zero"),
    ("python_repr", repr(_STEP).encode(), "invalid_json", "invalid JSON"),
    ("empty_data", b"", "invalid_json", "empty"),
    ("whitespace_only", b"  \n", "invalid_json", "empty"),
    # JSON, but not an object
    ("json_list", _dumps([_STEP]), "invalid_payload", "expected a JSON object, got list"),
    ("json_string", b'"step_h"', "invalid_payload", "expected a JSON object, got str"),
    ("json_number", b"42", "invalid_payload", "expected a JSON object, got int"),
    ("json_null", b"null", "invalid_payload", "expected a JSON object, got NoneType"),
    ("json_true", b"true", "invalid_payload", "expected a JSON object, got bool"),
    ("empty_object", b"{}", "invalid_payload", "'object'"),
    # the entry's fields
    ("missing_data_field", ((b"payload", _dumps(_STEP)),), "missing_data", "no 'data' field"),
    (
        "duplicate_data_field",
        ((b"data", _dumps(_STEP)), (b"data", _dumps(_DONE))),
        "invalid_payload",
        "duplicate field data",
    ),
    (
        "payload_of_2_mb",
        _dumps(_with(_STEP, pad="x" * 2_000_000)),
        "oversized",
        f"the limit is {MAX_PAYLOAD_BYTES}",
    ),
    # ids the query API could not address
    ("step_id_empty", _dumps(_with(_STEP, id="")), "invalid_payload", "step.id: String should"),
    ("step_id_with_slash", _dumps(_with(_STEP, id="a/b")), "invalid_payload", "step.id: the id"),
    (
        "run_id_with_slash",
        _dumps(_with(_STEP, run_id="run/1")),
        "invalid_payload",
        "step.run_id: the id contains '/'",
    ),
    ("run_id_empty", _dumps(_with(_STEP, run_id="")), "invalid_payload", "step.run_id"),
    (
        "run_id_of_257_chars",
        _dumps(_with(_STEP, run_id="r" * 257)),
        "invalid_payload",
        "step.run_id: String should have at most 256 characters",
    ),
    ("step_id_with_newline", _dumps(_with(_STEP, id="step_h\n")), "invalid_payload", "printable"),
    ("step_id_with_nul", _dumps(_with(_STEP, id="step\x00h")), "invalid_payload", "control"),
    (
        "step_id_with_zero_width_space",
        _dumps(_with(_STEP, id="step\u200bh")),
        "invalid_payload",
        "control",
    ),
    (
        "run_object_id_with_slash",
        _dumps(_run(id="run/h")),
        "invalid_payload",
        "run_event.data.id: the id contains '/'",
    ),
    (
        "response_id_with_slash",
        _dumps(_response(id="resp/h")),
        "invalid_payload",
        "lifecycle.response.id",
    ),
    (
        "response_output_item_id_empty",
        _dumps(_response(output=[{"id": "", "type": "message"}])),
        "invalid_payload",
        "lifecycle.response.output.0.id",
    ),
    (
        "item_id_with_tab",
        _dumps(_item_event(item={"id": "msg\th", "type": "message"})),
        "invalid_payload",
        "item.item.id",
    ),
    (
        "item_event_response_id_with_newline",
        _dumps(_item_event(response_id="resp\nh")),
        "invalid_payload",
        "item.response_id",
    ),
    (
        "item_event_without_response_id",
        _dumps({**_item_event(), "response_id": None}),
        "invalid_payload",
        "item.response_id",
    ),
    # counts and times past what the commit script sums and stores exactly
    (
        "prompt_tokens_2_64",
        _dumps(_with(_DONE, usage=_usage(2**64))),
        "invalid_payload",
        f"{_P}: an integer past 64 bits",
    ),
    (
        "prompt_tokens_2_63_minus_1",
        _dumps(_with(_DONE, usage=_usage(2**63 - 1))),
        "invalid_payload",
        _TOKENS,
    ),
    (
        "total_tokens_2_53_plus_1",
        _dumps(_with(_DONE, usage=_usage(total=2**53 + 1))),
        "invalid_payload",
        _TOKENS,
    ),
    (
        "completion_tokens_2_33",
        _dumps(_with(_DONE, usage=_usage(completion=2**33))),
        "invalid_payload",
        _TOKENS,
    ),
    (
        "negative_token_count",
        _dumps(_with(_DONE, usage=_usage(-1))),
        "invalid_payload",
        "greater than or equal to 0",
    ),
    ("fractional_token_count", _dumps(_with(_DONE, usage=_usage(1.5))), "invalid_payload", _P),
    ("token_count_as_string", _dumps(_with(_DONE, usage=_usage("many"))), "invalid_payload", _P),
    (
        "created_at_2_64",
        _dumps(_with(_STEP, created_at=2**64)),
        "invalid_payload",
        "step.created_at: an integer past 64 bits",
    ),
    ("created_at_2_53", _dumps(_with(_STEP, created_at=2**53)), "invalid_payload", _TIME),
    (
        "created_at_2_63_minus_1",
        _dumps(_with(_STEP, created_at=2**63 - 1)),
        "invalid_payload",
        _TIME,
    ),
    ("created_at_negative", _dumps(_with(_STEP, created_at=-1)), "invalid_payload", _TIME),
    (
        "completed_at_2_60",
        _dumps(_with(_DONE, completed_at=2**60)),
        "invalid_payload",
        "step.completed_at: a timestamp must be",
    ),
    (
        "run_usage_2_50",
        _dumps(_run(usage=_usage(total=2**50))),
        "invalid_payload",
        "run_event.data.usage.total_tokens",
    ),
    (
        "run_expired_at_a_string",
        _dumps(_run("expired", expired_at="soon")),
        "invalid_payload",
        "run_event.data.expired_at",
    ),
    (
        "response_created_at_1e300",
        _dumps(_response(created_at=1e300)),
        "invalid_payload",
        "lifecycle.response.created_at: a timestamp must be",
    ),
    (
        "response_completed_at_2_53",
        _dumps(_response(completed_at=2.0**53)),
        "invalid_payload",
        "lifecycle.response.completed_at",
    ),
    (
        "response_input_tokens_2_40",
        _dumps(_response(usage={"input_tokens": 2**40, "output_tokens": 1, "total_tokens": 1})),
        "invalid_payload",
        "lifecycle.response.usage.input_tokens",
    ),
    (
        "response_cached_tokens_2_40",
        _dumps(
            _response(
                usage={
                    "input_tokens": 1,
                    "output_tokens": 1,
                    "total_tokens": 2,
                    "input_tokens_details": {"cached_tokens": 2**40},
                }
            )
        ),
        "invalid_payload",
        "input_tokens_details.cached_tokens",
    ),
    # fields of the wrong type or value
    ("status_a_number", _dumps(_with(_STEP, status=42)), "invalid_payload", "step.status"),
    ("status_null", _dumps(_with(_STEP, status=None)), "invalid_payload", "step.status"),
    ("status_unknown", _dumps(_with(_STEP, status="paused")), "invalid_payload", "step.status"),
    ("type_unknown", _dumps(_with(_STEP, type="web_browsing")), "invalid_payload", "step.type"),
    (
        "step_details_a_list",
        _dumps(_with(_STEP, step_details=[])),
        "invalid_payload",
        "step.step_details",
    ),
    (
        "metadata_value_a_number",
        _dumps(_with(_STEP, metadata={"k": 1})),
        "invalid_payload",
        "step.metadata",
    ),
    (
        "object_unknown",
        _dumps(_with(_STEP, object="thread.run.steps")),
        "invalid_payload",
        "step.object",
    ),
    (
        "envelope_event_unknown",
        _dumps({"event": "thread.run.step.paused", "data": _STEP}),
        "invalid_payload",
        "step_event.event",
    ),
    (
        "responses_event_unknown",
        _dumps({"type": "session.created"}),
        "invalid_payload",
        "'type' is 'error' or a 'response.*' event",
    ),
]

HOSTILE: list[Hostile] = [
    Hostile(name, ((b"data", entry),) if isinstance(entry, bytes) else entry, kind, reason)
    for name, entry, kind, reason in _CASES
]
