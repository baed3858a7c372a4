"""PURE: a step and the lifecycle's decision -> the derived events to publish."""

from __future__ import annotations

from dataclasses import dataclass

from contracts.derived import (
    DerivedEvent,
    DerivedType,
    RunUsage,
    StepFinished,
    StepStarted,
    TransitionRejected,
    event_id_for,
)
from contracts.run_step import RunStep

from .lifecycle import Decision, Outcome

__all__ = ["Derived", "derive"]


@dataclass(frozen=True, slots=True)
class Derived:
    """What one decision publishes: step events, and a run.usage template if usage counts.

    The run.usage totals are cumulative over the run, so only the store can fill them in,
    atomically with the increment; `run_usage` carries everything else.
    """

    events: tuple[DerivedEvent, ...]
    run_usage: RunUsage | None


def _common(step: RunStep, decision: Decision, type_: DerivedType, qualifier: str = "") -> dict:  # type: ignore[type-arg]
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


def derive(step: RunStep, decision: Decision) -> Derived:
    """The derived events that `decision` on `step` publishes (none for no-ops)."""
    if decision.outcome is Outcome.STARTED:
        started = StepStarted(
            **_common(step, decision, DerivedType.STARTED),
            occurred_at=step.created_at,
            step_type=step.type,
        )
        return Derived((started,), None)
    if decision.outcome is Outcome.FINISHED:
        ended_at = step.terminal_at
        finished = StepFinished(
            **_common(step, decision, DerivedType(f"run_step.{decision.to_status}")),
            occurred_at=ended_at if ended_at is not None else step.created_at,
            step_type=step.type,
            duration_s=None if ended_at is None else max(0, ended_at - step.created_at),
            usage=step.usage,
            last_error=step.last_error,
        )
        usage = None
        if step.usage is not None:
            usage = RunUsage(
                **_common(step, decision, DerivedType.RUN_USAGE),
                occurred_at=finished.occurred_at,
                prompt_tokens=0,
                completion_tokens=0,
                total_tokens=0,
                steps_counted=0,
            )
        return Derived((finished,), usage)
    if decision.outcome is Outcome.REJECTED:
        ended_at = step.terminal_at
        rejected = TransitionRejected(
            **_common(step, decision, DerivedType.TRANSITION_REJECTED, decision.to_status),
            occurred_at=ended_at if ended_at is not None else step.created_at,
            reason=f"step is already {decision.from_status}; terminal statuses are final",
        )
        return Derived((rejected,), None)
    return Derived((), None)
