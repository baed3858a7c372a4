"""The pure hot path without Redis: decode -> decide -> derive (-> encode), per event.

`encode` (orjson.dumps of each derived event, as Processor._commit does) is what happens
next to derive's output; it is timed as a fourth stage because it is CPU on the same path.

Each stage runs over the entries in batches of 500, as the worker gets them, and drops each
batch's results, so the garbage collector sees what it sees in the worker; the inputs are
built beforehand and frozen (gc.freeze) so that scanning them is not charged to a stage.
The best of several passes counts.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import orjson
from pydantic import ValidationError

from contracts.run_step import StepStatus
from contracts.stream_events import INBOUND
from service.decode import Delta, Rejection, Step, decode_entry
from service.derive import Derived, derive
from service.lifecycle import Decision, decide

from .workload import Workload

__all__ = ["STAGES", "Micro", "run"]

STAGES = ("decode", "decide", "derive", "encode")
MAX_BYTES = 1_048_576
BATCH = 500
T = TypeVar("T")

State = dict[str, tuple[StepStatus | None, frozenset[StepStatus]]]


@dataclass(frozen=True, slots=True)
class Micro:
    """Seconds per pass of each stage over `events` entries."""

    events: int
    seconds: dict[str, float]
    pydantic_decode_s: float  # the decode stage with the pydantic contracts alone

    @property
    def us_per_event(self) -> float:
        """Microseconds of CPU per source entry, all stages."""
        return sum(self.seconds.values()) / self.events * 1e6

    @property
    def per_core(self) -> float:
        """Entries per second one core could take through the pure path."""
        return 1e6 / self.us_per_event

    @property
    def fast_decode_gain(self) -> float:
        """How many times faster the decode stage is than pydantic alone on the same input."""
        return self.pydantic_decode_s / self.seconds["decode"]

    def share(self, stage: str) -> float:
        """Fraction of the path's time spent in `stage`."""
        return self.seconds[stage] / sum(self.seconds.values())


def _decide_all(steps: list[Step]) -> list[tuple[StepStatus | None, frozenset[StepStatus]]]:
    """The tracked (status, rejected) each step meets, as the store would hold them."""
    state: State = {}
    out = []
    for step in steps:
        current, rejected = state.get(step.id, (None, frozenset()))
        out.append((current, rejected))
        decision = decide(current, step.status, rejected)
        if decision.changes_state:
            if decision.new_status is None:
                rejected = rejected | {decision.to_status}
            state[step.id] = (decision.new_status or current, rejected)
    return out


def _encode(derived: Sequence[Derived]) -> int:
    size = 0
    for d in derived:
        for event in d.events:
            size += len(orjson.dumps(event))
        if d.run_usage is not None:
            size += len(orjson.dumps(d.run_usage))
    return size


def _batches(items: list[T], stage: Callable[[list[T]], object]) -> Callable[[], None]:
    def run() -> None:
        for at in range(0, len(items), BATCH):
            stage(items[at : at + BATCH])

    return run


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
    steps = [d for d in decoded if not isinstance(d, Delta | Rejection)]
    tracked = _decide_all(steps)
    asks = [(cur, step.status, rej) for step, (cur, rej) in zip(steps, tracked, strict=True)]
    decisions: list[Decision] = [decide(*ask) for ask in asks]
    changes = [(s, d) for s, d in zip(steps, decisions, strict=True) if d.changes_state]
    derived = [derive(s, d) for s, d in changes]
    gc.collect()
    gc.freeze()
    try:
        stages = {
            "decode": _batches(entries, lambda b: [decode_entry(f, MAX_BYTES) for f in b]),
            "decide": _batches(asks, lambda b: [decide(*ask) for ask in b]),
            "derive": _batches(changes, lambda b: [derive(s, d) for s, d in b]),
            "encode": _batches(derived, _encode),
        }
        seconds = {name: _best(stage, repeats) for name, stage in stages.items()}
        pydantic = _best(_batches(workload.payloads, _validate_all), repeats)
    finally:
        gc.unfreeze()
    return Micro(events=len(entries), seconds=seconds, pydantic_decode_s=pydantic)


def _validate_all(payloads: list[bytes]) -> None:
    for data in payloads:
        try:  # noqa: SIM105  # as cheap as the baseline consumer's loop
            INBOUND.validate_json(data)
        except ValidationError:
            pass
