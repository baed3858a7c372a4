"""What the worker reads of a step and of a run, whichever dialect and decoder it came from.

Decoding (`core.decode`) turns every entry of either dialect into a `Reported`: the steps
it moves and the run it moves, in the shapes below; everything after decoding reads only
these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from contracts.derived import Source

__all__ = ["Item", "ItemError", "Reported", "ReportedRun", "ReportedStep", "ToolRef"]

ToolRef = tuple[str, str, str | None]
"""A tool call as derived events name it: (id, type, name)."""


class _Usage(Protocol):
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def total_tokens(self) -> int: ...


class _Error(Protocol):
    @property
    def code(self) -> str: ...
    @property
    def message(self) -> str: ...


class ReportedStep(Protocol):
    """A step: an Assistants run step (contract model or fast-path struct) or an `Item`."""

    @property
    def id(self) -> str: ...
    @property
    def run_id(self) -> str: ...
    @property
    def thread_id(self) -> str | None: ...
    @property
    def assistant_id(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def created_at(self) -> int | float: ...
    @property
    def terminal_at(self) -> int | float | None: ...
    @property
    def usage(self) -> _Usage | None: ...
    @property
    def last_error(self) -> _Error | None: ...
    @property
    def tools(self) -> tuple[ToolRef, ...]: ...


# Not frozen: built per entry (ARCHITECTURE.md, "Hot path rules"); nothing changes them
# after decoding.
@dataclass(slots=True)
class ReportedRun:
    """A run: an Assistants run, or a Responses response."""

    id: str
    thread_id: str | None
    assistant_id: str | None
    status: str
    created_at: int | float
    ended_at: int | float | None
    pending_tool_call_ids: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None  # as the API reports it
    totals: tuple[int, int, int] | None = None  # a response's own (input, output, total)
    last_error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    model: str | None = None  # as the payload reports it


@dataclass(frozen=True, slots=True)
class ItemError:
    """A Responses item's error, as a step's last_error."""

    code: str
    message: str


@dataclass(slots=True)  # built per entry: not frozen (above)
class Item:
    """A Responses output item as a step."""

    id: str
    run_id: str
    status: str
    type: str
    created_at: int | float
    terminal_at: int | float | None
    last_error: ItemError | None
    thread_id: str | None = None
    assistant_id: str | None = None
    usage: None = None  # items report no usage: their response does
    tools: tuple[ToolRef, ...] = ()  # a tool call item's one call


@dataclass(slots=True)  # built per entry: not frozen (above)
class Reported:
    """One entry's subjects: the steps it moves, then the run it moves (if any).

    `identity`: the (thread, assistant) the entry names for its steps when they do not
    carry their own (Responses items in an event that carries their response).
    """

    source: Source
    steps: tuple[ReportedStep, ...]
    run: ReportedRun | None = None
    identity: tuple[str, str] | None = None
