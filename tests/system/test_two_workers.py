"""Two worker processes on one group: each derived event exactly once."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from service.sample import T0, step
from service.settings import Settings
from tests.helpers import drained, read_json, wait_until
from tests.system.workers import start_worker, stop_worker

pytestmark = pytest.mark.system

TERMINALS = ["completed", "completed", "completed", "failed", "cancelled", "expired"]


async def test_two_workers_exactly_once(redis: Redis, settings: Settings) -> None:
    """2,000+ shuffled events with duplicates over two processes: exact derived events."""
    rnd = random.Random(7)
    steps = [f"st{i:04d}" for i in range(500)]
    run_of = {s: f"run{i % 20:02d}" for i, s in enumerate(steps)}
    terminal_of = {s: rnd.choice(TERMINALS) for s in steps}
    usage_of = {s: (rnd.randint(1, 500), rnd.randint(0, 200)) for s in steps}

    def started(s: str) -> bytes:
        return json.dumps(step(s, "in_progress", run_id=run_of[s])).encode()

    def ended(s: str, status: str) -> bytes:
        body = step(s, status, run_id=run_of[s], ended_at=T0 + 5, usage=usage_of[s])
        return json.dumps(body).encode()

    procs = [start_worker(settings, "w1"), start_worker(settings, "w2")]
    try:

        async def both_reading() -> bool:
            # A consumer joins the group with its first XREADGROUP; until both have, one
            # worker alone may drain every phase (seen on a loaded machine).
            try:
                consumers = await redis.xinfo_consumers(settings.source_stream, settings.group)
            except ResponseError:  # no stream or group yet
                return False
            return {c["name"].decode() for c in consumers} == {"w1", "w2"}

        await wait_until(both_reading, timeout_s=30, what="both workers to read the group")

        async def phase(entries: list[bytes]) -> None:
            rnd.shuffle(entries)
            pipe = redis.pipeline(transaction=False)
            for data in entries:
                pipe.xadd(settings.source_stream, {"data": data})
            await pipe.execute()
            await wait_until(
                lambda: drained(redis, settings.source_stream, settings.group),
                timeout_s=60,
                what="both workers to drain the stream",
            )

        # Phases keep the expected set exact: started only exists if in_progress is first.
        await phase([started(s) for s in steps] * 2)
        late = [started(s) for s in steps[::5]]
        await phase([ended(s, terminal_of[s]) for s in steps] * 2 + late)
        conflicting = steps[::10]
        other = {s: "failed" if terminal_of[s] != "failed" else "completed" for s in conflicting}
        await phase([ended(s, other[s]) for s in conflicting] * 2)

        sent = 2 * len(steps) + 2 * len(steps) + len(late) + 2 * len(conflicting)
        assert sent >= 2000
        events = await read_json(redis, settings.derived_stream)
        ids = [e["event_id"] for e in events]
        assert len(ids) == len(set(ids)), "a derived event was published twice"
        counts = Counter(e["type"] for e in events)
        expected = Counter({"run_step.started": len(steps), "run.usage": len(steps)})
        expected.update(f"run_step.{terminal_of[s]}" for s in steps)
        expected["run_step.transition_rejected"] = len(conflicting)
        assert counts == expected
        totals: Counter[str] = Counter()
        for s in steps:
            totals[run_of[s]] += sum(usage_of[s])
        last_usage = {e["run_id"]: e for e in events if e["type"] == "run.usage"}
        for run_id, total in totals.items():
            assert (
                max(
                    e["total_tokens"]
                    for e in events
                    if e["type"] == "run.usage" and e["run_id"] == run_id
                )
                == total
            )
            assert last_usage[run_id]["total_tokens"] <= total
        assert await redis.xlen(settings.dlq_stream) == 0
        consumers = await redis.xinfo_consumers(settings.source_stream, settings.group)
        assert {c["name"].decode() for c in consumers} == {"w1", "w2"}
    finally:
        errors = [stop_worker(p) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(errors)
