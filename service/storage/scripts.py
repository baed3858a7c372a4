"""The Lua scripts the service runs, each loaded once and run by EVALSHA.

Every script is its .lua file (lua/) below one generated header: the run hash's layout
(`core.layout`), the status codes and transition tables (`core.lifecycle`), what each
action publishes (`core.published`) and the commit protocol's argument counts
(`storage.protocol`). So no script spells a field name, a status code or a rule itself,
and the rules the commit script applies are the ones `lifecycle.decide` states and the unit
tests check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import sha1
from importlib.resources import files

from contracts.derived import NAMESPACE, STEP_END_TYPES
from service.core.layout import (
    BY_RUN_MARK,
    ENDED_FIELDS,
    IN_PROGRESS,
    SEP,
    STEP_PREFIX,
    TOOL_FIELD_SEP,
    TOOL_SEP,
    TOOLS_PREFIX,
    TOTALS,
    RunField,
)
from service.core.lifecycle import RUNS, STEPS, Action, Machine, ended_by_run, transition_table
from service.core.published import PUBLISHES, Kind
from service.core.state import STEP_TYPE_CODES
from service.storage.protocol import BATCH_ARGS, RUN_ARGS, STEP_ARGS

__all__ = [
    "BUDGET",
    "COMMIT",
    "DEADLETTER",
    "REAP",
    "SCRIPTS",
    "STALL",
    "STALL_PRUNE",
    "TRIM",
    "Script",
    "header",
]

_LUA_MAGIC = set("^$()%.[]*+-?")


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script run by EVALSHA; loaded on every node up front and again after NOSCRIPT."""

    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> Script:
        """The script of this source text."""
        return cls(source, sha1(source.encode()).hexdigest())


def _lua(value: object) -> str:
    """A Lua literal of a string, number, bool, list or mapping (string keys)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"[{k!r}] = {_lua(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "{" + ", ".join(_lua(v) for v in value) + "}"
    raise TypeError(f"no Lua literal for {value!r}")


def _names(machine: Machine) -> dict[str, str]:
    return {code: status for status, code in machine.codes.items()}


def _publishes(kind: Kind) -> dict[str, dict[str, bool]]:
    return {
        action.value: {slot.value: True for slot in slots}
        for (k, action), slots in PUBLISHES.items()
        if k is kind
    }


def _by_run() -> dict[str, dict[str, str]]:
    return {
        dialect: {
            RUNS.codes[status]: STEPS.codes[ended_by_run(status, dialect == "responses")]
            for status in sorted(RUNS.terminal)
        }
        for dialect in ("assistants", "responses")
    }


def header() -> str:
    """The Lua header every script starts with, generated from the declarations."""
    assert SEP not in _LUA_MAGIC, "SEP is used in Lua patterns"
    assert STEP_PREFIX not in _LUA_MAGIC, "so is STEP_PREFIX"
    assert TOOL_SEP not in _LUA_MAGIC, "so is TOOL_SEP"
    assert TOOL_FIELD_SEP not in _LUA_MAGIC, "and TOOL_FIELD_SEP"
    ended = list(ENDED_FIELDS.values())
    constants: list[tuple[str, object]] = [
        ("STEP_PREFIX", STEP_PREFIX),  # a step's field: this and its id
        ("TOOLS_PREFIX", TOOLS_PREFIX),  # a step's tool calls' field: this and its id
        ("SEP", SEP),  # between a state string's fields; its status code comes first
        ("IN_PROGRESS", IN_PROGRESS),  # the code of a subject that can stall
        ("F", {f.name.lower(): f.value for f in RunField}),  # the run-wide fields
        ("TOTALS", [f.value for f in TOTALS]),  # usage totals, in run.usage's order
        ("ENDED", ended),  # steps ended, by terminal status, in StepCounts' order
        ("ENDED_AT", {f[1:]: i for i, f in enumerate(ended, 1)}),  # code -> position
        ("STEP", {k: str(v) for k, v in sorted(transition_table(STEPS).items())}),
        ("RUN", {k: str(v) for k, v in sorted(transition_table(RUNS).items())}),
        ("STEP_NAMES", _names(STEPS)),  # status code -> status
        ("STEP_TYPE_NAMES", {c: t for t, c in STEP_TYPE_CODES.items()}),  # Assistants types
        ("STEP_END_TYPES", {STEPS.codes[s]: t.value for s, t in STEP_END_TYPES.items()}),
        ("BY_RUN", _by_run()),  # dialect -> run's end code -> its open steps' end code
        ("BY_RUN_MARK", BY_RUN_MARK),
        ("RUN_NAMES", _names(RUNS)),
        ("ACT", {a.name: a.value for a in Action}),
        ("PUBLISHES", {"step": _publishes(Kind.STEP), "run": _publishes(Kind.RUN)}),
        ("BATCH", {name: i for i, name in enumerate(BATCH_ARGS, 1)}),  # batch args' places
        ("STEP_ARGS", len(STEP_ARGS)),  # arguments per op (storage/protocol.py)
        ("RUN_ARGS", len(RUN_ARGS)),
    ]
    lines = [
        "-- Generated by service/storage/scripts.py from service/core (layout, lifecycle,",
        "-- published) and service/storage/protocol.py: do not edit here.",
        *(f"local {name} = {_lua(value)}" for name, value in constants),
        _lua_bytes("NAMESPACE", NAMESPACE.bytes),  # of the derived events' ids
        # core.layout.encode_tools: between a step's kept tool calls, and a call's fields.
        _lua_bytes("TOOL_SEP", TOOL_SEP.encode()),
        _lua_bytes("TOOL_FIELD_SEP", TOOL_FIELD_SEP.encode()),
        "-- core.layout.stall_member: a step's member in the stall index.",
        "local function stall_member(run_id, step_id)",
        "  return #run_id .. ':' .. run_id .. step_id",
        "end",
        "-- core.layout.budget_member: a run's member in the seconds-budget index.",
        "local function budget_member(source, run_id)",
        "  return string.sub(source, 1, 1) .. ':' .. run_id",
        "end",
        "-- contracts.derived.event_id_for: the UUIDv5 of 'run|step|type|qualifier'.",
        "local function event_id(run_id, subject, type_, qualifier)",
        "  local h = redis.sha1hex(NAMESPACE .. run_id .. '|' .. subject .. '|' .. type_ .. '|'",
        "    .. qualifier)",
        "  local variant = tonumber(string.sub(h, 17, 17), 16) % 4 + 1",
        "  return string.sub(h, 1, 8) .. '-' .. string.sub(h, 9, 12) .. '-5' .. string.sub(h, 14,",
        "    16) .. '-' .. string.sub('89ab', variant, variant) .. string.sub(h, 18, 20) .. '-'",
        "    .. string.sub(h, 21, 32)",
        "end",
        "-- contracts.derived.RunBudgetExceeded: `ids` are its source .. thread ids, as JSON.",
        "local function budget_event(run_id, ids, model, limit, budget, value, occurred)",
        '  return \'{"type":"run.budget_exceeded","event_id":"\'',
        "    .. event_id(run_id, '', 'run.budget_exceeded', limit) .. '\",' .. ids",
        "    .. ',\"model\":' .. (model or 'null') .. ',\"limit\":\"' .. limit .. '\",\"budget\":'",
        "    .. budget .. ',\"value\":' .. value .. ',\"occurred_at\":' .. occurred .. '}'",
        "end",
    ]
    return "\n".join(lines) + "\n"


def _lua_bytes(name: str, value: bytes) -> str:
    escaped = "".join("\\%03d" % b for b in value)  # noqa: UP031  # Lua's decimal escapes
    return f'local {name} = "{escaped}"'


def _load(name: str) -> Script:
    return Script.of(header() + files("service.storage").joinpath("lua", name).read_text())


COMMIT = _load("commit.lua")
DEADLETTER = _load("deadletter.lua")
STALL = _load("stall.lua")
REAP = _load("reap.lua")
STALL_PRUNE = _load("stall_prune.lua")
TRIM = _load("trim.lua")
BUDGET = _load("budget.lua")
SCRIPTS = (COMMIT, DEADLETTER, STALL, STALL_PRUNE, TRIM, REAP, BUDGET)
