"""PURE: a step and the lifecycle's decision -> the derived events to publish.

Events are built as plain dicts in the exact shape of the `contracts.derived` models (the
published schema; the tests validate every event the worker writes against it). Building
pydantic models here would validate values that come from an already validated RunStep,
at a cost of tens of microseconds per event on the hot path (see bench/).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from contracts.derived import DerivedType, event_id_for
from contracts.run_step import StepStatus

from .lifecycle import Decision, Outcome

if TYPE_CHECKING:
    from .decode import Step

__all__ = ["Derived", "derive"]

Event = dict[str, Any]
"""One derived event as JSON-ready values (StrEnums serialise as their values)."""


@dataclass(slots=True)  # built per event: a frozen dataclass's __init__ costs more
class Derived:
    """What one decision publishes: step events, and a run.usage event if usage counts.

    The run.usage totals are cumulative over the run, so only the store can fill them in,
    atomically with the increment: `run_usage` carries every other field, and the store
    appends prompt_tokens, completion_tokens, total_tokens and steps_counted.
    """

    events: tuple[Event, ...]
    run_usage: Event | None

    @property
    def types(self) -> tuple[str, ...]:
        """The types of every event published, run.usage included."""
        types = tuple(e["type"] for e in self.events)
        return types if self.run_usage is None else (*types, self.run_usage["type"])


# run_step.<status> for each terminal status (a dict lookup: this runs once per event).
_FINISHED: dict[StepStatus, DerivedType] = {
    status: DerivedType(f"run_step.{status}")
    for status in StepStatus
    if status is not StepStatus.IN_PROGRESS
}


def _common(step: Step, decision: Decision, type_: DerivedType, qualifier: str = "") -> Event:
    return {
        "type": type_,
        "event_id": event_id_for(step.id, type_, qualifier),
        "step_id": step.id,
        "run_id": step.run_id,
        "thread_id": step.thread_id,
        "assistant_id": step.assistant_id,
        "from_status": decision.from_status,
        "to_status": decision.to_status,
    }


def _usage(step: Step) -> Event | None:
    usage = step.usage
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _error(step: Step) -> Event | None:
    error = step.last_error
    return None if error is None else {"code": error.code, "message": error.message}


def derive(step: Step, decision: Decision) -> Derived:
    """The derived events that `decision` on `step` publishes (none for no-ops)."""
    ended_at = step.terminal_at
    occurred_at = ended_at if ended_at is not None else step.created_at
    if decision.outcome is Outcome.STARTED:
        started = _common(step, decision, DerivedType.STARTED)
        started.update(occurred_at=step.created_at, step_type=step.type)
        return Derived((started,), None)
    if decision.outcome is Outcome.FINISHED:
        finished = _common(step, decision, _FINISHED[decision.to_status])
        finished.update(
            occurred_at=occurred_at,
            step_type=step.type,
            duration_s=None if ended_at is None else max(0, ended_at - step.created_at),
            usage=_usage(step),
            last_error=_error(step),
        )
        usage = None
        if step.usage is not None:
            usage = _common(step, decision, DerivedType.RUN_USAGE)
            usage["occurred_at"] = occurred_at
        return Derived((finished,), usage)
    if decision.outcome is Outcome.REJECTED:
        rejected = _common(step, decision, DerivedType.TRANSITION_REJECTED, decision.to_status)
        rejected.update(
            occurred_at=occurred_at,
            reason=f"step is already {decision.from_status}; terminal statuses are final",
        )
        return Derived((rejected,), None)
    return Derived((), None)
