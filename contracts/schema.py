"""JSON Schema for every wire format, for producers and consumers outside Python.

Generated from the pydantic models, for any Draft 2020-12 validator: every union whose
member is chosen by a field (`type`, `event`, `object`) becomes an if/then/else chain on
that field, so a value meets exactly one member (pydantic's own `oneOf` is ambiguous
where a catch-all member, such as ignored events, also matches), and no OpenAPI
`discriminator` keyword is left for a strict validator to refuse.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from .derived import DERIVED, DeadLetterEntry, DeadLetterError
from .dispatch import Dispatch, JsonDict, has
from .queries import RunState, StepState
from .responses_events import RESPONSES_EVENT
from .run import Run
from .run_step import RunStep
from .stream_events import INBOUND, RunEvent, RunStepDelta, RunStepDeltaEvent, RunStepEvent

__all__ = ["EXPORTED", "DispatchedJsonSchema", "json_schemas", "write_schemas"]

EXPORTED: dict[str, TypeAdapter[Any]] = {
    "run_step": TypeAdapter(RunStep),
    "run_step_event": TypeAdapter(RunStepEvent),
    "run_step_delta": TypeAdapter(RunStepDelta),
    "run_step_delta_event": TypeAdapter(RunStepDeltaEvent),
    "run": TypeAdapter(Run),
    "run_event": TypeAdapter(RunEvent),
    "inbound": INBOUND,
    "derived_event": DERIVED,
    "dead_letter_entry": TypeAdapter(DeadLetterEntry),
    "dead_letter_error": TypeAdapter(DeadLetterError),
    "responses_event": RESPONSES_EVENT,
    "run_state": TypeAdapter(RunState),
    "step_state": TypeAdapter(StepState),
}
"""Each exported wire format by schema name: the pydantic validator its schema is made from."""


class DispatchedJsonSchema(GenerateJsonSchema):
    """Pydantic's JSON Schema generator, with every tagged union an if/then/else chain.

    A union on a field (`Field(discriminator="type")`) is chained on that field's values; a
    union chosen by a function must say how as JSON Schema too (`contracts.dispatch`): a
    plain function cannot be exported, and is refused rather than exported ambiguously.
    """

    def tagged_union_schema(self, schema: core_schema.TaggedUnionSchema) -> JsonSchemaValue:
        members: dict[str, JsonSchemaValue] = {}
        for tag, choice in schema["choices"].items():
            members[str(tag.value if isinstance(tag, Enum) else tag)] = self.generate_inner(choice)
        discriminator = schema["discriminator"]
        if isinstance(discriminator, Dispatch):
            rules, otherwise = discriminator.rules, discriminator.otherwise
        elif isinstance(discriminator, str):
            rules, otherwise = _by_field(discriminator, members)
        else:
            raise TypeError(
                f"a union chosen by {discriminator!r} has no JSON Schema: "
                "discriminate by a field, or by a contracts.dispatch.Dispatch"
            )
        chain = otherwise
        for guard, tag in reversed(rules):
            chain = {"if": guard, "then": members[tag], "else": chain}
        return chain


def _by_field(
    name: str, members: dict[str, JsonSchemaValue]
) -> tuple[tuple[tuple[JsonDict, str], ...], JsonDict]:
    """Rules choosing a member by field `name`: one per member, all its tags at once."""
    tags: dict[str, list[str]] = {}
    for tag, member in members.items():
        tags.setdefault(json.dumps(member, sort_keys=True), []).append(tag)
    rules = tuple((has(name, *same), same[0]) for same in tags.values())
    return rules, has(name, *members)


def json_schemas() -> dict[str, dict[str, Any]]:
    """Each wire format's JSON Schema (validation mode), by name."""
    return {
        name: adapter.json_schema(schema_generator=DispatchedJsonSchema)
        for name, adapter in EXPORTED.items()
    }


def write_schemas(directory: Path) -> list[Path]:
    """Write `<name>.schema.json` for each schema into `directory`; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
