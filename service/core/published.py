"""What each decision publishes: the one declaration the builders, the script and the
metrics read.

An op carries the events its decision will most likely publish (`core.ops`); the commit
script publishes, for the action it takes, the slots declared here, in this order (its
generated header holds `PUBLISHES`, storage/scripts.py); and the worker counts what a batch
published from the same table (`published`). One integration test runs every (kind,
action) through the real script and checks the derived stream against this table.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from functools import cache

from contracts.derived import DerivedType
from service.core.lifecycle import Action

__all__ = ["PUBLISHES", "Kind", "Slot", "published"]


class Kind(StrEnum):
    """What an op is about."""

    STEP = "step"  # a run step, or a Responses output item
    RUN = "run"  # a run, or a Responses response


class Slot(StrEnum):
    """An event a decision may publish."""

    START = "start"  # the subject's start: carried by a starting op, built for a first-seen end
    WAIT = "wait"  # run.requires_action, once per round of tool calls (carried)
    USAGE = "usage"  # run.usage, closed with the run's totals (only if the op reports usage)
    END = "end"  # the subject's end (carried; a run's closed with its step counts)
    REJECTION = "rejection"  # transition_rejected (built from the end's ids)


PUBLISHES: Mapping[tuple[Kind, Action], tuple[Slot, ...]] = {
    (Kind.STEP, Action.START): (Slot.START,),
    (Kind.STEP, Action.END): (Slot.END, Slot.USAGE),
    (Kind.STEP, Action.BEGIN_END): (Slot.START, Slot.END, Slot.USAGE),
    (Kind.STEP, Action.REJECT): (Slot.REJECTION,),
    (Kind.RUN, Action.START): (Slot.START,),
    (Kind.RUN, Action.WAIT_START): (Slot.START, Slot.WAIT),
    (Kind.RUN, Action.AWAIT): (Slot.WAIT,),
    (Kind.RUN, Action.END): (Slot.USAGE, Slot.END),
    (Kind.RUN, Action.BEGIN_END): (Slot.START, Slot.USAGE, Slot.END),
    (Kind.RUN, Action.REJECT): (Slot.REJECTION,),
}
"""The slots each (kind, action) publishes, in the order they land on the derived stream.
Every other pair publishes nothing. USAGE is published only by an op that reports usage;
a round of tool calls already published makes the script answer MOVE (or START) instead."""

_TYPES: Mapping[tuple[Kind, Slot], DerivedType] = {
    (Kind.STEP, Slot.START): DerivedType.STARTED,
    (Kind.STEP, Slot.USAGE): DerivedType.RUN_USAGE,
    (Kind.STEP, Slot.REJECTION): DerivedType.TRANSITION_REJECTED,
    (Kind.RUN, Slot.START): DerivedType.RUN_STARTED,
    (Kind.RUN, Slot.WAIT): DerivedType.RUN_REQUIRES_ACTION,
    (Kind.RUN, Slot.USAGE): DerivedType.RUN_USAGE,
    (Kind.RUN, Slot.REJECTION): DerivedType.RUN_TRANSITION_REJECTED,
}


@cache  # a handful of distinct arguments, asked once per op
def published(kind: Kind, action: str, end_type: str, has_usage: bool) -> tuple[str, ...]:
    """The types of the events `action` published for an op of `kind` whose end event
    (if any) is `end_type` and which reports usage or not."""
    types: list[str] = []
    for slot in PUBLISHES.get((kind, Action(action)), ()):
        if slot is Slot.END:
            types.append(end_type)
        elif slot is not Slot.USAGE or has_usage:
            types.append(_TYPES[kind, slot].value)
    return tuple(types)
