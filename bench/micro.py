"""The worker's own hot path without Redis: decode -> op, per event.

Deciding and deriving happen in the commit script now (service/storage/lua/commit.lua): what
the worker does per entry is decode it (`decode_entry`) and build its `Op` (`step_op`: the
state string and the events it likely publishes, serialised with orjson). Those two stages are
timed here, as `Processor._decode` runs them.

Each stage runs over the entries in batches of 500, as the worker gets them, and drops each
batch's results, so the garbage collector sees what it sees in the worker; the inputs are
built beforehand and frozen (gc.freeze) so that scanning them is not charged to a stage.
The best of several passes counts.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import ValidationError

from contracts.derived import Source
from contracts.run_step import RunStep
from contracts.stream_events import INBOUND, StepEntry
from service.core.decode import decode_entry
from service.core.fastpath import FastStep
from service.core.ops import step_op
from service.core.reported import ReportedStep

from .workload import Workload

__all__ = ["STAGES", "Micro", "run"]

STAGES = ("decode", "op")
MAX_BYTES = 1_048_576
BATCH = 500
STALL_AFTER_S = 600  # the worker's default
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Micro:
    """Seconds per pass of each stage over `events` entries."""

    events: int
    steps: int  # entries that decode to a step (the rest are deltas or poison)
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

    def us(self, stage: str) -> float:
        """Microseconds of `stage` per source entry."""
        return self.seconds[stage] / self.events * 1e6

    def share(self, stage: str) -> float:
        """Fraction of the path's time spent in `stage`."""
        return self.seconds[stage] / sum(self.seconds.values())


def _ops(steps: list[tuple[bytes, ReportedStep]]) -> None:
    """`step_op` for each step, with the stall deadline `Processor._decode` gives it."""
    floor = time.time() + STALL_AFTER_S
    for source_id, step in steps:
        deadline = max(step.created_at + STALL_AFTER_S, floor)
        step_op(source_id, step, Source.ASSISTANTS, deadline)


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
    steps: list[tuple[bytes, ReportedStep]] = []
    for n, fields in enumerate(entries):
        decoded = decode_entry(fields, MAX_BYTES, 0.0)
        step = decoded.step if isinstance(decoded, StepEntry) else decoded
        if isinstance(step, FastStep | RunStep):
            steps.append((f"1-{n}".encode(), step))
    gc.collect()
    gc.freeze()
    try:
        stages = {
            "decode": _batches(entries, lambda b: [decode_entry(f, MAX_BYTES, 0.0) for f in b]),
            "op": _batches(steps, _ops),
        }
        seconds = {name: _best(stage, repeats) for name, stage in stages.items()}
        pydantic = _best(_batches(workload.payloads, _validate_all), repeats)
    finally:
        gc.unfreeze()
    return Micro(events=len(entries), steps=len(steps), seconds=seconds, pydantic_decode_s=pydantic)


def _validate_all(payloads: list[bytes]) -> None:
    for data in payloads:
        try:  # noqa: SIM105  # as cheap as the baseline consumer's loop
            INBOUND.validate_json(data)
        except ValidationError:
            pass
