"""Two worker processes, each pinned to its own partition: no races, every start published."""

from __future__ import annotations

import functools
import json
from collections import Counter

import pytest
from redis.asyncio import Redis

from contracts.partitioning import partition_for
from service.dev.sample import T0, step
from service.settings import Settings
from service.storage.keys import partitions
from tests.helpers import drained, read_json, wait_until
from tests.system.workers import start_worker, stop_worker

pytestmark = pytest.mark.system


async def test_pinned_workers_publish_every_start(redis: Redis, settings: Settings) -> None:
    """Each step's start and end go in one burst (a backlog), the end close behind the start.
    Workers sharing a stream may commit an end before its start, which then arrives stale;
    with each partition read by one pinned worker, every step gets its run_step.started."""
    s = settings.model_copy(update={"partitions": 2, "batch_size": 50})
    parts = partitions(s)
    steps = [f"st{i:04d}" for i in range(600)]
    run_of = {st: f"run{i % 30:02d}" for i, st in enumerate(steps)}
    burst: dict[str, list[bytes]] = {p.source_stream: [] for p in parts}
    for i, st in enumerate(steps):
        stream = parts[partition_for(run_of[st], 2)].source_stream
        burst[stream].append(json.dumps(step(st, "in_progress", run_id=run_of[st])).encode())
        if i >= 3:  # each end three steps behind its start
            done = steps[i - 3]
            body = step(done, "completed", run_id=run_of[done], ended_at=T0 + 5, usage=(3, 2))
            stream = parts[partition_for(run_of[done], 2)].source_stream
            burst[stream].append(json.dumps(body).encode())
    for part in parts:
        await redis.xgroup_create(part.source_stream, s.group, id="0", mkstream=True)
        pipe = redis.pipeline(transaction=False)
        for data in burst[part.source_stream]:
            pipe.xadd(part.source_stream, {"data": data})
        await pipe.execute()
    procs = [
        start_worker(s, "w0", RUNSTEPS_OWN_PARTITIONS="0"),
        start_worker(s, "w1", RUNSTEPS_OWN_PARTITIONS="1"),
    ]
    try:
        for part in parts:
            await wait_until(
                functools.partial(drained, redis, part.source_stream, s.group),
                timeout_s=60,
                what=f"{part.source_stream} drained",
            )
        counts: Counter[str] = Counter()
        for index, part in enumerate(parts):
            events = await read_json(redis, part.derived_stream)
            counts.update(e["type"] for e in events)
            assert {e["run_id"] for e in events} <= {
                run for run in run_of.values() if partition_for(run, 2) == index
            }
            for c in await redis.xinfo_consumers(part.source_stream, s.group):
                assert c["name"].decode() == f"w{index}"  # its own reader only
        assert counts["run_step.started"] == len(steps)
        assert counts["run_step.completed"] == len(steps) - 3
        assert counts["run.usage"] == len(steps) - 3
    finally:
        errors = [stop_worker(p) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(errors)
