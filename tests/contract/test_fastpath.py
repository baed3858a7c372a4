"""The msgspec fast path accepts a subset of what the pydantic contracts accept, with the
same values: whatever it accepts, pydantic accepts and reads identically; whatever it
declines, decode_entry still judges with pydantic (so rejections keep their reasons)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.workload import build
from contracts.run_step import RunStep
from contracts.stream_events import INBOUND, RunStepEvent, StepEntry
from service.core.decode import Rejection, decode_entry
from service.core.fastpath import FastStep, decode_fast
from service.dev.sample import sample_entries

from .samples import (
    CODE_INTERPRETER,
    FILE_SEARCH_BARE,
    FILE_SEARCH_FULL,
    FUNCTION_DONE,
    FUNCTION_PENDING,
    completed,
    failed,
    step,
    tool_step,
)
from .test_invalid import CASES

VALID = [
    step(),
    step(metadata={"k" * 64: "é" * 512, **{f"k{i}": "v" for i in range(15)}}),
    completed(),
    failed(),
    step(status="cancelled", cancelled_at=1699063296),
    step(status="expired", expired_at=1699063297),
    step(status="incomplete"),
    tool_step(CODE_INTERPRETER, FILE_SEARCH_BARE, FILE_SEARCH_FULL, FUNCTION_PENDING),
    completed(type="tool_calls", step_details=tool_step(FUNCTION_DONE)["step_details"]),
    # issue #12: what real producers send
    step(status="expired", expired_at=None, expires_at=1699063890),
    failed(last_error={"code": "tool_user_error", "message": "connection id not found"}),
    completed(expires_at=1699063890, metadata=None),
]


def _facts(s: RunStep | FastStep) -> dict[str, Any]:
    usage = s.usage
    error = s.last_error
    return {
        "id": s.id,
        "created_at": s.created_at,
        "assistant_id": s.assistant_id,
        "thread_id": s.thread_id,
        "run_id": s.run_id,
        "type": s.type,
        "status": s.status,
        "terminal_at": s.terminal_at,
        "usage": None
        if usage is None
        else (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens),
        "last_error": None if error is None else (error.code, error.message),
        "metadata": s.metadata,
    }


def _pydantic_step(data: bytes) -> RunStep | None:
    """What pydantic reads from `data` as a step to act on, or None if it rejects it."""
    decoded = decode_entry({b"data": data}, 1 << 20, 0.0)
    if not isinstance(decoded, FastStep):
        return decoded.step if isinstance(decoded, StepEntry) else None
    parsed = INBOUND.validate_json(data)  # decode_entry's own fast path: go around it
    parsed = parsed.data if isinstance(parsed, RunStepEvent) else parsed
    return parsed if isinstance(parsed, RunStep) else None


def _assert_subset(data: bytes) -> bool:
    """If the fast path accepts `data`, pydantic does too and reads the same facts."""
    fast = decode_fast(data)
    if fast is None:
        return False
    slow = _pydantic_step(data)
    assert slow is not None, f"fast path accepted what pydantic rejects: {data[:300]!r}"
    assert _facts(fast) == _facts(slow)
    return True


def _both_shapes(body: dict[str, Any]) -> list[bytes]:
    """The body bare, and in the streaming envelope its status implies."""
    status = body.get("status")
    event = status if isinstance(status, str) else "completed"
    return [
        json.dumps(body).encode(),
        json.dumps({"event": f"thread.run.step.{event}", "data": body}).encode(),
    ]


@pytest.mark.parametrize("body", VALID, ids=range(len(VALID)))
def test_valid_steps_take_the_fast_path_with_the_same_values(body: dict[str, Any]) -> None:
    [bare, _] = _both_shapes(body)
    assert _assert_subset(bare)
    if body["status"] != "incomplete":  # no streaming event carries an incomplete step
        assert _assert_subset(_both_shapes(body)[1])


def test_the_benchmark_and_demo_payloads_agree() -> None:
    payloads = build(4_000).payloads + [p for _, p in sample_entries()]
    fast = sum(_assert_subset(p) for p in payloads)
    assert fast >= len(payloads) * 0.9  # the fast path must actually carry the load


UNKNOWN_FIELDS = [
    step(extra_field_from_a_newer_api={"x": 1}),
    step(extra="\ud800"),  # a lone surrogate: orjson refuses the whole document
    step(extra=[[[[[]]]]]),
    completed(usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "x": 1e300}),
]


@pytest.mark.parametrize("body", UNKNOWN_FIELDS, ids=range(len(UNKNOWN_FIELDS)))
def test_unknown_fields_are_left_to_pydantic(body: dict[str, Any]) -> None:
    """msgspec would skip an unknown field unchecked; pydantic keeps or refuses it."""
    data = json.dumps(body).encode()
    assert decode_fast(data) is None
    assert not isinstance(decode_entry({b"data": data}, 1 << 20, 0.0), FastStep)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_invalid_payloads_are_declined_and_keep_their_reason(case: tuple[Any, ...]) -> None:
    data = json.dumps(case[1]).encode()
    assert decode_fast(data) is None
    assert isinstance(decode_entry({b"data": data}, 1 << 20, 0.0), Rejection)


ODD = [
    # lax input pydantic accepts: the fast path declines, pydantic decides
    json.dumps(step(created_at="1699063291")).encode(),
    json.dumps(step(created_at=1699063291.0)).encode(),
    json.dumps(step(created_at=True)).encode(),
    json.dumps(step(created_at=2**70)).encode(),
    # shapes pydantic's discriminator reads differently
    json.dumps({k: v for k, v in step().items() if k != "object"}).encode(),
    json.dumps(
        {"event": "thread.run.step.created", "data": step(), "object": "thread.run.step"}
    ).encode(),
    json.dumps({"event": "thread.run.step.completed", "data": step()}).encode(),
    json.dumps({"event": "thread.run.step.delta", "data": step()}).encode(),
    # shapes the contracts accept and the fast path leaves to pydantic (issue #12)
    json.dumps(
        tool_step({"id": "call_b", "type": "bing_grounding", "bing_grounding": {}})
    ).encode(),
    json.dumps(tool_step({"id": "call_fs", "type": "file_search", "file_search": []})).encode(),
    json.dumps(step(metadata=[])).encode(),
    json.dumps({"event": "thread.run.completed", "data": step(object="thread.run")}).encode(),
    # JSON oddities
    json.dumps(step(id="step_\ud800")).encode(),
    json.dumps(step()).encode() + b" trailing",
    json.dumps(step())[:-1].encode() + b', "status": "paused"}',
    b'{"object": "thread.run.step", "created_at": NaN}',
    b"",
    b"null",
]


@pytest.mark.parametrize("data", ODD, ids=range(len(ODD)))
def test_odd_payloads_never_pass_the_fast_path_alone(data: bytes) -> None:
    _assert_subset(data)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
_FIELDS = sorted(completed().keys() | {"usage.prompt_tokens", "step_details.type", "metadata.k"})


def _mutate(body: dict[str, Any], path: str, value: Any, drop: bool) -> dict[str, Any]:
    head, _, tail = path.partition(".")
    if not tail:
        if drop:
            body.pop(head, None)
        else:
            body[head] = value
    elif isinstance(body.get(head), dict):
        _mutate(body[head], tail, value, drop)
    return body


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from([completed(), failed(), step(), tool_step(CODE_INTERPRETER)]),
    path=st.sampled_from(_FIELDS),
    value=_JSON,
    drop=st.booleans(),
    envelope=st.booleans(),
)
def test_mutated_steps_never_pass_the_fast_path_alone(
    base: dict[str, Any], path: str, value: Any, drop: bool, envelope: bool
) -> None:
    body = _mutate(copy.deepcopy(base), path, value, drop)
    _assert_subset(_both_shapes(body)[envelope and body.get("status") != "incomplete"])
