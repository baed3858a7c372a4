"""How a union picks its member, said twice: in Python for pydantic, in JSON Schema for others.

A union whose member is chosen by a function (an Assistants entry by its `object` or its
`event`, a tool call by its `type`, ...) cannot be exported as a plain `oneOf`: a
`thread.run.step.completed` envelope is a step event and would match the catch-all member
of ignored events too, so a standard validator rejects what pydantic accepts. `Dispatch` is
that function with the same choice written as JSON Schema guards: `contracts.schema` turns
them into an if/then/else chain, where a value meets exactly one member. Both say the same:
tests/contract/test_schema.py checks them against each other.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Dispatch", "JsonDict", "has", "has_prefix", "has_string", "present"]

JsonDict = dict[str, Any]


@dataclass(frozen=True, eq=False, slots=True)
class Dispatch:
    """A pydantic callable discriminator that also says, as JSON Schema, how it chooses.

    `pick` returns the tag of the member a value is meant to be (None: no member). `rules`
    are the same choice as JSON Schema: (guard, tag) pairs, the first guard a value matches
    names its member. A value that matches no guard is validated against `otherwise`, which
    it can only fail: that schema's errors say what a value needs.
    """

    pick: Callable[[Any], str | None]
    rules: tuple[tuple[JsonDict, str], ...]
    otherwise: JsonDict

    def __call__(self, value: Any) -> str | None:
        return self.pick(value)

    @property
    def __name__(self) -> str:  # pydantic-core names a callable discriminator by it
        return self.pick.__name__


def present(name: str) -> JsonDict:
    """Guard: an object with property `name`."""
    return {"type": "object", "required": [name], "properties": {name: {}}}


def has(name: str, *values: str) -> JsonDict:
    """Guard: an object whose property `name` is one of `values`."""
    names = [str(value) for value in values]  # plain strings, not enum members
    allowed = {"const": names[0]} if len(names) == 1 else {"enum": names}
    return {"type": "object", "required": [name], "properties": {name: allowed}}


def has_string(name: str) -> JsonDict:
    """Guard: an object whose property `name` is a string."""
    return {"type": "object", "required": [name], "properties": {name: {"type": "string"}}}


_PLAIN = re.compile(r"[a-z_.]+")


def has_prefix(name: str, prefix: str) -> JsonDict:
    """Guard: an object whose property `name` is a string starting with `prefix` (letters,
    `_` and `.`)."""
    if not _PLAIN.fullmatch(prefix):
        raise ValueError(f"prefix {prefix!r}: only letters, '_' and '.' are escaped here")
    pattern = "^" + prefix.replace(".", r"\.")
    string = {"type": "string", "pattern": pattern}
    return {"type": "object", "required": [name], "properties": {name: string}}
