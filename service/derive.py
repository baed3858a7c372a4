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
    types: tuple[str, ...]  # the types of every event published, run.usage included


# Per outcome, what derive publishes; looked up, as this runs once per event.
_STARTED = (DerivedType.STARTED.value,)
_FINISHED: dict[StepStatus, tuple[DerivedType, tuple[str, ...], tuple[str, ...]]] = {
    status: (
        DerivedType(f"run_step.{status}"),
        (f"run_step.{status}",),
        (f"run_step.{status}", DerivedType.RUN_USAGE.value),
    )
    for status in StepStatus
    if status is not StepStatus.IN_PROGRESS
}
_REJECTED = (DerivedType.TRANSITION_REJECTED.value,)
_NOTHING = Derived((), None, ())


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


def derive(step: Step, decision: Decision) -> Derived:
    """The derived events that `decision` on `step` publishes (none for no-ops).

    Fields past the common ones are set one by one: dict.update(**fields) cost more here.
    """
    outcome = decision.outcome
    if outcome is Outcome.STARTED:
        started = _common(step, decision, DerivedType.STARTED)
        started["occurred_at"] = step.created_at
        started["step_type"] = step.type
        return Derived((started,), None, _STARTED)
    ended_at = step.terminal_at
    occurred_at = ended_at if ended_at is not None else step.created_at
    if outcome is Outcome.FINISHED:
        type_, alone, with_usage = _FINISHED[decision.to_status]
        finished = _common(step, decision, type_)
        finished["occurred_at"] = occurred_at
        finished["step_type"] = step.type
        finished["duration_s"] = None if ended_at is None else max(0, ended_at - step.created_at)
        finished["usage"] = _usage(step)
        finished["last_error"] = _error(step)
        if step.usage is None:
            return Derived((finished,), None, alone)
        usage = _common(step, decision, DerivedType.RUN_USAGE)
        usage["occurred_at"] = occurred_at
        return Derived((finished,), usage, with_usage)
    if outcome is Outcome.REJECTED:
        rejected = _common(step, decision, DerivedType.TRANSITION_REJECTED, decision.to_status)
        rejected["occurred_at"] = occurred_at
        rejected["reason"] = f"step is already {decision.from_status}; terminal statuses are final"
        return Derived((rejected,), None, _REJECTED)
    return _NOTHING
