"""The pure hot path without Redis: decode -> decide -> derive (-> encode), per event.

`encode` (orjson of the derived events, as the Processor does) is what the Processor does next with
derive's output before the commit; it is timed as a fourth stage because it is CPU on
the same path. Each stage runs over the whole list; the best of several passes counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from contracts.run_step import RunStep, StepStatus
from service.decode import decode_entry
from service.derive import Derived, derive
from service.lifecycle import Decision, decide

from .workload import Workload

__all__ = ["STAGES", "Micro", "run"]

STAGES = ("decode", "decide", "derive", "encode")
MAX_BYTES = 1_048_576

State = dict[str, tuple[StepStatus | None, frozenset[StepStatus]]]


@dataclass(frozen=True, slots=True)
class Micro:
    """Seconds per pass of each stage over `events` entries."""

    events: int
    seconds: dict[str, float]

    @property
    def us_per_event(self) -> float:
        """Microseconds of CPU per source entry, all stages."""
        return sum(self.seconds.values()) / self.events * 1e6

    @property
    def per_core(self) -> float:
        """Entries per second one core could take through the pure path."""
        return 1e6 / self.us_per_event

    def share(self, stage: str) -> float:
        """Fraction of the path's time spent in `stage`."""
        return self.seconds[stage] / sum(self.seconds.values())


def _decide_all(steps: list[RunStep]) -> list[Decision]:
    # The tracked state as the store would hold it after each event, kept in a dict.
    state: State = {}
    out = []
    for step in steps:
        current, rejected = state.get(step.id, (None, frozenset()))
        decision = decide(current, step.status, rejected)
        if decision.changes_state:
            if decision.new_status is None:
                rejected = rejected | {decision.to_status}
            state[step.id] = (decision.new_status or current, rejected)
        out.append(decision)
    return out


def _encode(derived: list[Derived]) -> int:
    size = 0
    for d in derived:
        for event in d.events:
            size += len(orjson.dumps(event))
        if d.run_usage is not None:
            size += len(orjson.dumps(d.run_usage))
    return size


def _best(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def run(workload: Workload, repeats: int = 5) -> Micro:
    """Time each stage over every entry of `workload`."""
    entries = [{b"data": p} for p in workload.payloads]
    decoded = [decode_entry(f, MAX_BYTES) for f in entries]
    steps = [d for d in decoded if isinstance(d, RunStep)]
    decisions = _decide_all(steps)
    changes = [(s, d) for s, d in zip(steps, decisions, strict=True) if d.changes_state]
    derived = [derive(s, d) for s, d in changes]
    seconds = {
        "decode": _best(lambda: [decode_entry(f, MAX_BYTES) for f in entries], repeats),
        "decide": _best(lambda: _decide_all(steps), repeats),
        "derive": _best(lambda: [derive(s, d) for s, d in changes], repeats),
        "encode": _best(lambda: _encode(derived), repeats),
    }
    return Micro(events=len(entries), seconds=seconds)
