"""PURE lifecycle rules of run steps and runs: no I/O, no clocks, values in and values out.

A subject (a step, or a run) moves through non-terminal statuses to exactly one terminal
status and stays there. Everything the worker does under duplicates, redelivery,
out-of-order arrival and several replicas follows from `decide`: the commit script runs the
same rules, from a table generated here (`transition_table`), so there is one source of truth.

The one-start contract lives here too: a subject first seen terminal gets its start
published before its end (`Decision.starts`), and a non-terminal status arriving after the
end changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "RUNS",
    "STEPS",
    "Action",
    "Decision",
    "Machine",
    "Outcome",
    "decide",
    "ended_by_run",
]


class Outcome(StrEnum):
    """What one incoming status does to a subject's tracked state."""

    STARTED = "started"  # first sighting, not terminal: state created, a start published
    MOVED = "moved"  # runs only: one non-terminal status to another
    FINISHED = "finished"  # reached a terminal status: its end (after its start, if unseen)
    REJECTED = "rejected"  # terminal subject asked to become another terminal: one rejection
    DUPLICATE = "duplicate"  # nothing new (same status again, or a rejection already made)
    STALE = "stale"  # non-terminal after terminal: arrived late, ignored without noise


class Action(StrEnum):
    """What the commit script did with one op: its reply holds one letter per op.

    By design each value is its name's first letter (a unit test holds them to it), so a
    reply like "SEEL" reads as START, END, END, LATE.
    """

    START = "S"  # create the state; publish the start
    WAIT_START = "W"  # create the state; publish the start, then run.requires_action
    MOVE = "M"  # store the new non-terminal status; publish nothing
    AWAIT = "A"  # store it (requires_action); publish run.requires_action for a new round
    END = "E"  # store the terminal status; publish the end
    BEGIN_END = "B"  # first seen terminal: publish the start, then the end
    REJECT = "R"  # publish one transition_rejected, unless this status was refused before
    DUPLICATE = "D"  # nothing new: only the ack
    LATE = "L"  # non-terminal after terminal (stale): only the ack
    IDENTITY_MISMATCH = "I"  # names another thread/assistant than its run's: not applied

    @property
    def outcome(self) -> Outcome | None:
        """The lifecycle outcome this action carries out (None: not applied at all)."""
        return _OUTCOMES.get(self)


@dataclass(frozen=True, slots=True)
class Machine:
    """The statuses of one kind of subject: which are terminal, and their one-letter codes."""

    name: str
    codes: dict[str, str]  # status -> one-letter code kept in Redis
    terminal: frozenset[str]
    waiting: str | None = None  # the status that publishes run.requires_action on entry

    def is_terminal(self, status: str | None) -> bool:
        """True for the statuses a subject never leaves."""
        return status in self.terminal


STEPS = Machine(
    name="step",
    codes={"in_progress": "i", "completed": "c", "failed": "f", "cancelled": "x",
           "expired": "e", "incomplete": "n"},
    terminal=frozenset({"completed", "failed", "cancelled", "expired", "incomplete"}),
)  # fmt: skip
"""A run step, or a Responses output item: in_progress, then one terminal status."""

RUNS = Machine(
    name="run",
    codes={"queued": "q", "in_progress": "i", "requires_action": "a", "cancelling": "g",
           "completed": "c", "failed": "f", "cancelled": "x", "expired": "e",
           "incomplete": "n"},
    terminal=frozenset({"completed", "failed", "cancelled", "expired", "incomplete"}),
    waiting="requires_action",
)  # fmt: skip
"""An Assistants run, or a Responses response: non-terminal statuses in any order, then one
terminal status."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one incoming status against the tracked one."""

    outcome: Outcome
    from_status: str | None
    to_status: str
    starts: bool = False  # publishes the subject's start (its first sighting)
    waits: bool = False  # publishes run.requires_action (entering the waiting status)

    @property
    def action(self) -> Action:
        """The commit script's letter for this decision."""
        match self.outcome:
            case Outcome.STARTED:
                return Action.WAIT_START if self.waits else Action.START
            case Outcome.MOVED:
                return Action.AWAIT if self.waits else Action.MOVE
            case Outcome.FINISHED:
                return Action.BEGIN_END if self.starts else Action.END
            case Outcome.REJECTED:
                return Action.REJECT
            case Outcome.STALE:
                return Action.LATE
            case _:
                return Action.DUPLICATE


_OUTCOMES: dict[Action, Outcome] = {
    Action.START: Outcome.STARTED,
    Action.WAIT_START: Outcome.STARTED,
    Action.MOVE: Outcome.MOVED,
    Action.AWAIT: Outcome.MOVED,
    Action.END: Outcome.FINISHED,
    Action.BEGIN_END: Outcome.FINISHED,
    Action.REJECT: Outcome.REJECTED,
    Action.DUPLICATE: Outcome.DUPLICATE,
    Action.LATE: Outcome.STALE,
}


def decide(
    machine: Machine,
    current: str | None,
    incoming: str,
    rejected: frozenset[str] = frozenset(),
) -> Decision:
    """Decide what `incoming` does to a subject whose tracked status is `current`.

    `rejected` holds the terminal statuses already refused for this subject, so that the
    same refused event redelivered does not yield a second rejection.
    """
    terminal = machine.terminal
    waits = incoming == machine.waiting
    if current is None:
        if incoming in terminal:
            return Decision(Outcome.FINISHED, None, incoming, starts=True)
        return Decision(Outcome.STARTED, None, incoming, starts=True, waits=waits)
    if current not in terminal:
        if incoming in terminal:
            return Decision(Outcome.FINISHED, current, incoming)
        if incoming == current:
            return Decision(Outcome.DUPLICATE, current, incoming)
        return Decision(Outcome.MOVED, current, incoming, waits=waits)
    if incoming not in terminal:
        return Decision(Outcome.STALE, current, incoming)
    if incoming == current or incoming in rejected:
        return Decision(Outcome.DUPLICATE, current, incoming)
    return Decision(Outcome.REJECTED, current, incoming)


def ended_by_run(run_status: str, responses: bool) -> str:
    """The status a step still in progress takes when its run ends with `run_status`: the
    same (the Assistants API completes every step of a completed run, and fails, cancels or
    expires them with it); a Responses item still open when its response ends is
    incomplete, whatever the response's end."""
    if run_status not in RUNS.terminal:
        raise ValueError(f"{run_status} does not end a run")
    return "incomplete" if responses else run_status


def transition_table(machine: Machine) -> dict[str, Action]:
    """`decide` for every (tracked, incoming) pair, keyed by their codes ('' = unknown).

    The commit script looks decisions up in this table; a rejection it finds already made
    for the same status (`rejected`) it turns into nothing, as `decide` does.
    """
    table: dict[str, Action] = {}
    for current in [None, *machine.codes]:
        for incoming in machine.codes:
            key = ("" if current is None else machine.codes[current]) + machine.codes[incoming]
            table[key] = decide(machine, current, incoming).action
    return table
