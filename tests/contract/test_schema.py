"""JSON Schema export, the derived events' wire format and their deterministic ids."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from contracts import (
    DERIVED,
    DeadLetterError,
    DeadLetterKind,
    DerivedType,
    RunUsage,
    StepFinished,
    StepStalled,
    StepStarted,
    TransitionRejected,
    event_id_for,
    json_schemas,
    write_schemas,
)
from contracts.derived import (
    NAMESPACE,
    RunBudgetExceeded,
    RunFinished,
    RunRequiresAction,
    RunStarted,
    RunTransitionRejected,
)
from contracts.dispatch import Dispatch
from contracts.schema import EXPORTED
from service.core.decode import Rejection, decode_entry
from tests.contract.samples import step

NAMES = {
    "run_step",
    "run_step_event",
    "run_step_delta",
    "run_step_delta_event",
    "run",
    "run_event",
    "inbound",
    "derived_event",
    "dead_letter_entry",
    "dead_letter_error",
    "responses_event",
    "run_state",
    "step_state",
}


def test_every_schema_is_exported() -> None:
    """json_schemas() names every wire format, each an object schema."""
    schemas = json_schemas()
    assert set(schemas) == NAMES
    for schema in schemas.values():
        assert "$defs" in schema or "properties" in schema


def _keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        yield from node
        for value in node.values():
            yield from _keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from _keys(value)


def test_no_schema_leaves_a_union_to_oneof_or_the_openapi_discriminator() -> None:
    """Every union is an if/then/else chain: no `oneOf` (a value matching two members fails
    it) and no OpenAPI `discriminator` (a strict validator refuses the keyword)."""
    for name, schema in json_schemas().items():
        assert {"oneOf", "discriminator"}.isdisjoint(_keys(schema)), name


def _dispatches(node: Any) -> Iterator[Dispatch]:
    """Every Dispatch in a pydantic core schema."""
    if isinstance(node, dict):
        if isinstance(node.get("discriminator"), Dispatch):
            yield node["discriminator"]
        for value in node.values():
            yield from _dispatches(value)
    elif isinstance(node, list | tuple):
        for value in node:
            yield from _dispatches(value)


DISPATCHES = list(
    {id(d): d for a in EXPORTED.values() for d in _dispatches(a.core_schema)}.values()
)


def _examples(dispatch: Dispatch) -> list[str]:
    """The strings a dispatch's rules name (consts, enums, prefixes), and near misses."""
    found = ["", "other", "error", "thread.x", "response.x", "thread.run.step.paused"]
    for key, value in _items(dispatch.rules):
        if key == "const":
            found.append(value)
        elif key == "enum":
            found.extend(value)
        elif key == "pattern":
            prefix = value.removeprefix("^").replace("\\.", ".")
            found += [prefix, prefix + "x", prefix[:-1]]
    return found


def _items(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _items(value)
    elif isinstance(node, list | tuple):
        for value in node:
            yield from _items(value)


@st.composite
def _value(draw: st.DrawFn, dispatch: Dispatch) -> Any:
    scalar = st.one_of(st.sampled_from(_examples(dispatch)), st.integers(), st.none())
    keys = st.sampled_from(["object", "event", "type", "data"])
    return draw(st.one_of(st.dictionaries(keys, scalar, max_size=3), scalar, st.lists(scalar)))


@pytest.mark.parametrize("dispatch", DISPATCHES, ids=[d.__name__ for d in DISPATCHES])
@given(data=st.data())
def test_a_dispatch_chooses_in_json_schema_as_in_python(
    dispatch: Dispatch, data: st.DataObject
) -> None:
    """For any value, the first JSON Schema guard it matches names the member the Python
    function picks; a value matching none fails `otherwise` (pydantic refuses it too)."""
    value = data.draw(_value(dispatch))
    chosen = next(
        (tag for guard, tag in dispatch.rules if Draft202012Validator(guard).is_valid(value)),
        None,
    )
    assert chosen == dispatch(value)
    if chosen is None:
        assert not Draft202012Validator(dispatch.otherwise).is_valid(value)


def test_metadata_limits_are_in_the_schema() -> None:
    """Non-Python producers see the metadata limits too."""
    metadata = json_schemas()["run_step"]["properties"]["metadata"]["anyOf"][0]
    assert metadata["maxProperties"] == 16
    assert metadata["propertyNames"] == {"maxLength": 64}
    assert metadata["additionalProperties"]["maxLength"] == 512


@pytest.mark.parametrize(
    ("step_id", "valid"),
    [("step_1", True), ("step 1", True), ("step_ü", True), ("step/1", False), ("s\n1", False)],
)
def test_the_published_schema_agrees_with_the_decoder_on_ids(step_id: str, valid: bool) -> None:
    """A producer checking ids against the JSON Schema gets the decoder's answer."""
    body = json.loads(json.dumps(step(id=step_id)))
    errors = list(Draft202012Validator(json_schemas()["run_step"]).iter_errors(body))
    assert (not errors) is valid
    decoded = decode_entry({b"data": json.dumps(body).encode()}, 1 << 20, 0.0)
    assert (not isinstance(decoded, Rejection)) is valid


def test_write_schemas_writes_stable_json(tmp_path: Path) -> None:
    """write_schemas writes one sorted, indented file per schema, identical on rewrite."""
    paths = write_schemas(tmp_path / "schema")
    assert {p.name for p in paths} == {f"{n}.schema.json" for n in NAMES}
    first = {p: p.read_text(encoding="utf-8") for p in paths}
    for path, text in first.items():
        assert json.loads(text) == json_schemas()[path.name.removesuffix(".schema.json")]
        assert text.startswith('{\n  "')
    write_schemas(tmp_path / "schema")
    assert {p: p.read_text(encoding="utf-8") for p in paths} == first


COMMON: dict[str, Any] = {
    "event_id": "00000000-0000-0000-0000-000000000000",
    "source": "assistants",
    "step_id": "step_1",
    "run_id": "run_1",
    "thread_id": "thread_1",
    "assistant_id": "asst_1",
    "occurred_at": 1699063299,
}
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
TOOLS = {"tools": [{"id": "call_1", "type": "function", "name": "get_weather"}]}
MODEL = {"model": "gpt-4o-2024-08-06"}
COST = {"cost_usd": 0.000075, "priced_model": "gpt-4o"}

DERIVED_SAMPLES: list[tuple[dict[str, Any], type]] = [
    (
        {"type": "run_step.started", "from_status": None, "to_status": "in_progress"}
        | {"step_type": "tool_calls"}
        | TOOLS,
        StepStarted,
    ),
    *[
        (
            {"type": f"run_step.{status}", "from_status": "in_progress", "to_status": status}
            | {"step_type": "message_creation", "duration_s": 8, "usage": USAGE}
            | {"last_error": None, "tools": [], "ended_by_run": status == "incomplete"},
            StepFinished,
        )
        for status in ("completed", "failed", "cancelled", "expired", "incomplete")
    ],
    (
        {"type": "run_step.transition_rejected", "from_status": "completed"}
        | {"to_status": "failed", "reason": "step is already completed"}
        | TOOLS,
        TransitionRejected,
    ),
    (
        {"type": "run_step.stalled", "from_status": "in_progress", "to_status": "in_progress"}
        | {"stalled_for_s": 700, "stall_after_s": 600}
        | TOOLS,
        StepStalled,
    ),
    (
        {"type": "run.usage", "from_status": "in_progress", "to_status": "completed"}
        | USAGE
        | {"steps_counted": 2}
        | MODEL
        | COST,
        RunUsage,
    ),
]
RUN_COMMON = {k: v for k, v in COMMON.items() if k != "step_id"} | MODEL
STEPS_ENDED = {"completed": 2, "failed": 1, "cancelled": 0, "expired": 0, "incomplete": 0}
RUN_SAMPLES: list[tuple[dict[str, Any], type]] = [
    (
        {"type": "run.started", "from_status": None, "to_status": "queued"},
        RunStarted,
    ),
    (
        {"type": "run.requires_action", "from_status": "in_progress"}
        | {"to_status": "requires_action", "tool_call_ids": ["call_1", "call_2"]},
        RunRequiresAction,
    ),
    *[
        (
            {"type": f"run.{status}", "from_status": "in_progress", "to_status": status}
            | {"duration_s": 12, "usage": USAGE, "last_error": None}
            | {"incomplete_details": None, "steps": STEPS_ENDED}
            | COST,
            RunFinished,
        )
        for status in ("completed", "failed", "cancelled", "expired", "incomplete")
    ],
    (
        {"type": "run.transition_rejected", "from_status": "completed"}
        | {"to_status": "failed", "reason": "run is already completed"},
        RunTransitionRejected,
    ),
    *[
        (
            {"type": "run.budget_exceeded", "limit": limit, "budget": budget, "value": value},
            RunBudgetExceeded,
        )
        for limit, budget, value in [("tokens", 1000, 1015), ("usd", 0.5, 0.512345678)]
    ],
]


@pytest.mark.parametrize(
    ("fields", "model"), DERIVED_SAMPLES, ids=[f["type"] for f, _ in DERIVED_SAMPLES]
)
def test_derived_events_round_trip(fields: dict[str, Any], model: type) -> None:
    """Each derived event decodes to its own model via `type` and dumps back unchanged."""
    payload = COMMON | fields
    event = DERIVED.validate_json(json.dumps(payload))
    assert type(event) is model
    assert json.loads(DERIVED.dump_json(event)) == payload


@pytest.mark.parametrize(("fields", "model"), RUN_SAMPLES, ids=[f["type"] for f, _ in RUN_SAMPLES])
def test_run_events_round_trip(fields: dict[str, Any], model: type) -> None:
    """Each run event decodes to its own model via `type` and dumps back unchanged."""
    payload = RUN_COMMON | fields
    event = DERIVED.validate_json(json.dumps(payload))
    assert type(event) is model
    assert json.loads(DERIVED.dump_json(event)) == payload


def test_derived_types_all_have_a_model() -> None:
    """Every DerivedType value is accepted by exactly one sample above."""
    types = {f["type"] for f, _ in DERIVED_SAMPLES + RUN_SAMPLES}
    assert types == set(DerivedType)


def test_derived_events_reject_unknown_fields() -> None:
    """Our own output is exact: an unexpected field is an error, not silently kept."""
    payload = COMMON | DERIVED_SAMPLES[0][0] | {"surprise": 1}
    with pytest.raises(ValidationError, match="surprise"):
        DERIVED.validate_python(payload)


def test_event_id_is_deterministic_and_qualified() -> None:
    """Same inputs, same pinned uuid (the namespace never changes); another run, qualifier or
    type, another id."""
    first = event_id_for("run_1", "step_1", DerivedType.TRANSITION_REJECTED, "failed")
    assert first == event_id_for("run_1", "step_1", "run_step.transition_rejected", "failed")
    assert first != event_id_for("run_1", "step_1", DerivedType.TRANSITION_REJECTED, "cancelled")
    assert first != event_id_for("run_2", "step_1", DerivedType.TRANSITION_REJECTED, "failed")
    assert first != event_id_for("run_1", "step_1", DerivedType.STARTED, "failed")
    pinned = event_id_for("run_1", "step_1", DerivedType.STARTED)
    assert pinned == str(uuid.uuid5(NAMESPACE, "run_1|step_1|run_step.started|"))


def test_dead_letter_error_json() -> None:
    """The DLQ `error` field is kind, message and an errors list defaulting to empty."""
    error = DeadLetterError(kind=DeadLetterKind.OVERSIZED, message="too big")
    assert json.loads(error.model_dump_json()) == {
        "kind": "oversized",
        "message": "too big",
        "errors": [],
    }


@given(st.text(), st.text(), st.text(), st.text())
def test_event_id_is_uuid5_of_its_parts(run_id: str, step_id: str, type_: str, q: str) -> None:
    """event_id_for is exactly uuid5(NAMESPACE, "run|step|type|qualifier"): any language can
    compute it, and the hand-rolled uuid5 equals the standard library's for any input."""
    expected = uuid.uuid5(NAMESPACE, f"{run_id}|{step_id}|{type_}|{q}")
    assert event_id_for(run_id, step_id, type_, q) == str(expected)
