"""The Lua scripts the service runs, each loaded once and run by EVALSHA.

The commit script's transition tables are generated here from the pure lifecycle, so the
rules the script applies are the ones `lifecycle.decide` states and the unit tests check.
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import sha1
from importlib.resources import files

from contracts.derived import NAMESPACE
from service.core.lifecycle import RUNS, STEPS, Machine, transition_table

__all__ = [
    "COMMIT",
    "DEADLETTER",
    "REAP",
    "SCRIPTS",
    "STALL",
    "STALL_PRUNE",
    "TRIM",
    "Script",
    "commit_source",
]


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script run by EVALSHA; loaded on every node up front and again after NOSCRIPT."""

    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> Script:
        """The script of this source text."""
        return cls(source, sha1(source.encode()).hexdigest())


def _read(name: str) -> str:
    return files("service.storage").joinpath("lua", name).read_text()


def _lua_table(name: str, table: dict[str, str]) -> str:
    pairs = ", ".join(f"[{key!r}] = {value!r}" for key, value in sorted(table.items()))
    return f"local {name} = {{{pairs}}}"


def _names(machine: Machine) -> dict[str, str]:
    return {code: status for status, code in machine.codes.items()}


def _lua_bytes(name: str, value: bytes) -> str:
    escaped = "".join("\\%03d" % b for b in value)  # noqa: UP031  # Lua's decimal escapes
    return f'local {name} = "{escaped}"'


def commit_source() -> str:
    """commit.lua with its generated tables: decisions by (tracked, incoming) status codes,
    and status names by code."""
    header = [
        "-- Generated from service/core by service/storage/scripts.py: do not edit here.",
        _lua_table("STEP", {k: str(v) for k, v in transition_table(STEPS).items()}),
        _lua_table("RUN", {k: str(v) for k, v in transition_table(RUNS).items()}),
        _lua_table("STEP_NAMES", _names(STEPS)),
        _lua_table("RUN_NAMES", _names(RUNS)),
        _lua_bytes("NAMESPACE", NAMESPACE.bytes),  # of the derived events' ids
    ]
    return "\n".join(header) + "\n" + _read("commit.lua")


COMMIT = Script.of(commit_source())
DEADLETTER = Script.of(_read("deadletter.lua"))
STALL = Script.of(_read("stall.lua"))
REAP = Script.of(_read("reap.lua"))
STALL_PRUNE = Script.of(_read("stall_prune.lua"))
TRIM = Script.of(_read("trim.lua"))
SCRIPTS = (COMMIT, DEADLETTER, STALL, STALL_PRUNE, TRIM, REAP)
