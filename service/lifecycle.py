"""PURE lifecycle rules of one run step: no I/O, no clocks, values in and values out.

A step moves from in_progress to exactly one terminal status and stays there. Everything the
worker does under duplicates, redelivery and out-of-order arrival follows from `decide`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from contracts.run_step import TERMINAL_STATUSES, StepStatus

__all__ = ["Decision", "Outcome", "decide"]


class Outcome(StrEnum):
    """What one incoming status does to a step's tracked state."""

    STARTED = "started"  # first sighting, in progress: state created, run_step.started
    FINISHED = "finished"  # reached a terminal status: run_step.<status> (+ run.usage)
    REJECTED = "rejected"  # terminal step asked to become another terminal: one rejection
    DUPLICATE = "duplicate"  # nothing new (same status again, or a rejection already made)
    STALE = "stale"  # in_progress after terminal: arrived late, ignored without noise


_WRITES = frozenset({Outcome.STARTED, Outcome.FINISHED, Outcome.REJECTED})
_MOVES = frozenset({Outcome.STARTED, Outcome.FINISHED})


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one incoming status against the tracked one."""

    outcome: Outcome
    from_status: StepStatus | None
    to_status: StepStatus
    # True when the tracked state must be written (and a derived event published).
    changes_state: bool = field(init=False)
    # The status to store, or None when the stored status stays as it is.
    new_status: StepStatus | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "changes_state", self.outcome in _WRITES)
        moves = self.outcome in _MOVES
        object.__setattr__(self, "new_status", self.to_status if moves else None)


_DECISIONS: dict[tuple[StepStatus | None, StepStatus, frozenset[StepStatus]], Decision] = {}


def decide(
    current: StepStatus | None,
    incoming: StepStatus,
    rejected: frozenset[StepStatus] = frozenset(),
) -> Decision:
    """Decide what `incoming` does to a step whose tracked status is `current`.

    `rejected` holds the terminal statuses already refused for this step, so that the same
    refused event redelivered does not yield a second rejection. The inputs take a few
    hundred values at most, so each Decision is made once and then looked up.
    """
    key = (current, incoming, rejected)
    decision = _DECISIONS.get(key)
    if decision is None:
        decision = _DECISIONS[key] = _decide(current, incoming, rejected)
    return decision


def _decide(
    current: StepStatus | None, incoming: StepStatus, rejected: frozenset[StepStatus]
) -> Decision:
    if current is None:
        outcome = Outcome.STARTED if incoming is StepStatus.IN_PROGRESS else Outcome.FINISHED
    elif current is StepStatus.IN_PROGRESS:
        outcome = Outcome.DUPLICATE if incoming is current else Outcome.FINISHED
    elif incoming is StepStatus.IN_PROGRESS:
        outcome = Outcome.STALE
    elif incoming is current or incoming in rejected:
        outcome = Outcome.DUPLICATE
    else:
        outcome = Outcome.REJECTED
    return Decision(outcome=outcome, from_status=current, to_status=incoming)


def is_terminal(status: StepStatus | None) -> bool:
    """True for the statuses a step never leaves."""
    return status in TERMINAL_STATUSES
