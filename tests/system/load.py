"""Load generation and exactly-once accounting for the system tests."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field

from redis.asyncio import Redis

from contracts.derived import DerivedType, event_id_for
from service.dev.sample import T0, step
from tests.helpers import read_json

TERMINALS = ["completed", "completed", "completed", "failed", "cancelled", "expired"]
SUMMARIES: list[str] = []
"""One line per system test, printed at the end of the session."""


@dataclass
class Load:
    """Events for three kinds of steps, and the derived events they must yield.

    - progress-only steps: in_progress (duplicated): exactly one run_step.started each;
    - terminal-only steps: a terminal status (duplicated): run_step.started, its end and
      run.usage, once each (the start is implied by the end);
    - full steps: in_progress then terminal, in any arrival order: the same three, once.
    """

    seed: int
    entries: list[bytes] = field(default_factory=list)
    required: dict[str, str] = field(default_factory=dict)  # event_id -> type
    optional: dict[str, str] = field(default_factory=dict)  # may appear, at most once
    run_totals: Counter[str] = field(default_factory=Counter)

    @classmethod
    def build(cls, steps: int, copies: int = 2, seed: int = 1, prefix: str = "s") -> Load:
        """A load over `steps` steps, each event written `copies` times."""
        load = cls(seed)
        rnd = random.Random(seed)
        for i in range(steps):
            sid, run_id, kind = f"{prefix}{i:06d}", f"run{i % 50:03d}", i % 3
            usage = (rnd.randint(1, 300), rnd.randint(0, 100))
            status = rnd.choice(TERMINALS)
            progress = json.dumps(step(sid, "in_progress", run_id=run_id)).encode()
            done = json.dumps(
                step(sid, status, run_id=run_id, ended_at=T0 + 3, usage=usage)
            ).encode()
            load.required[event_id_for(run_id, sid, DerivedType.STARTED)] = DerivedType.STARTED
            if kind != 1:
                load.entries += [progress] * copies
            if kind == 0:
                continue
            load.entries += [done] * copies
            end = f"run_step.{status}"
            load.required[event_id_for(run_id, sid, end)] = end
            load.required[event_id_for(run_id, sid, DerivedType.RUN_USAGE)] = DerivedType.RUN_USAGE
            load.run_totals[run_id] += sum(usage)
        return load

    def shuffled(self) -> list[bytes]:
        """The entries in a random order (same seed, same order)."""
        out = list(self.entries)
        random.Random(self.seed).shuffle(out)
        return out


async def produce(redis: Redis, stream: str, entries: list[bytes], chunk: int = 1000) -> None:
    """XADD entries in pipelined chunks, as a fast producer would."""
    for start in range(0, len(entries), chunk):
        pipe = redis.pipeline(transaction=False)
        for data in entries[start : start + chunk]:
            pipe.xadd(stream, {"data": data})
        await pipe.execute()


@dataclass(frozen=True)
class Tally:
    """Derived events observed against those expected."""

    sent: int
    expected: int
    observed: int
    lost: int
    doubled: int
    unexpected: int

    def line(self, name: str) -> str:
        """The one-line summary of a system test."""
        return (
            f"{name}: sent={self.sent} expected={self.expected} observed={self.observed} "
            f"lost={self.lost} doubled={self.doubled} unexpected={self.unexpected}"
        )


async def tally(redis: Redis, derived_stream: str | list[str], load: Load, sent: int) -> Tally:
    """Count the derived stream's (or streams') events against the load's expectations."""
    streams = [derived_stream] if isinstance(derived_stream, str) else derived_stream
    events = [e for stream in streams for e in await read_json(redis, stream)]
    seen = Counter(e["event_id"] for e in events)
    allowed = load.required.keys() | load.optional.keys()
    return Tally(
        sent=sent,
        expected=len(load.required),
        observed=len(events),
        lost=len(load.required.keys() - seen.keys()),
        doubled=sum(1 for n in seen.values() if n > 1),
        unexpected=len(seen.keys() - allowed),
    )


async def run_totals(redis: Redis, key_prefix: str, runs: list[str]) -> dict[str, int]:
    """The total_tokens each run's hash holds."""
    out = {}
    for run_id in runs:
        value = await redis.hget(f"{key_prefix}:run:{run_id}", "total_tokens")
        out[run_id] = int(value or 0)
    return out
