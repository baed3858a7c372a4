"""Two worker processes on one group: each derived event exactly once."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from redis.asyncio import Redis

from service.dev.sample import T0, step
from service.settings import Settings
from tests.helpers import read_json
from tests.system.load import produce
from tests.system.workers import two_workers, wait_drained

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

    async def phase(entries: list[bytes]) -> None:
        rnd.shuffle(entries)
        await produce(redis, settings.source_stream, entries)
        await wait_drained(redis, settings, timeout_s=60)

    async with two_workers(redis, settings):
        # Phases keep the expected set exact (every step ends in phase two).
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


async def test_one_start_before_its_end_under_every_order(redis: Redis, settings: Settings) -> None:
    """Two processes drain a shuffled backlog where each step's events come in order, end
    first, with a late in_progress, or with no in_progress at all: every step gets exactly
    one start, before its one end, and the end is always from in_progress."""
    rnd = random.Random(11)
    orders = {
        "in_order": ["in_progress", "END"],
        "end_first": ["END", "in_progress"],
        "late_and_twice": ["in_progress", "END", "in_progress", "END"],
        "end_only": ["END"],
    }
    steps = {f"o{i:04d}": list(orders)[i % len(orders)] for i in range(2000)}
    backlog: list[tuple[str, bytes]] = []
    for s, order in steps.items():
        run_id = f"orun{int(s[1:]) % 50:02d}"
        for status in orders[order]:
            body = step(s, "completed" if status == "END" else status, run_id=run_id,
                        ended_at=T0 + 3 if status == "END" else None)  # fmt: skip
            backlog.append((s, json.dumps(body).encode()))
    # Shuffle globally, but keep each step's own order (what differs is which replica and
    # which batch each of its events lands in).
    positions = sorted(rnd.random() for _ in backlog)
    rnd.shuffle(positions)
    by_step: dict[str, list[float]] = {}
    for (s, _), pos in zip(backlog, positions, strict=True):
        by_step.setdefault(s, []).append(pos)
    for keys in by_step.values():
        keys.sort()
    cursor = dict.fromkeys(by_step, 0)
    keyed = []
    for s, data in backlog:
        keyed.append((by_step[s][cursor[s]], data))
        cursor[s] += 1
    await produce(redis, settings.source_stream, [data for _, data in sorted(keyed)])
    async with two_workers(redis, settings.model_copy(update={"batch_size": 50})):
        await wait_drained(redis, settings, timeout_s=90)
        events = await read_json(redis, settings.derived_stream)
        seen: dict[str, list[dict[str, object]]] = {}
        for e in events:
            seen.setdefault(str(e["step_id"]), []).append(e)
        assert set(seen) == set(steps)
        for s, mine in seen.items():
            types = [e["type"] for e in mine]
            assert types == ["run_step.started", "run_step.completed"], (s, steps[s], types)
            assert mine[1]["from_status"] == "in_progress"
        assert await redis.xlen(settings.dlq_stream) == 0
