"""Hostile entries mixed into a normal load, through a real worker process and redis-server.

Every hostile entry of tests/hostile.py must land in the DLQ with its exact kind and reason,
decided at decode time: none `processing_failed`, no batch isolated, no retry; the worker
keeps going and every normal run's derived events are exact.
"""

from __future__ import annotations

import json
import random

import pytest
from redis.asyncio import Redis

from service.settings import Settings
from tests.helpers import entries, xadd_raw
from tests.hostile import HOSTILE, MAX_PAYLOAD_BYTES, Hostile
from tests.system.load import SUMMARIES, Load, run_totals, tally
from tests.system.workers import start_worker, stop_worker, wait_drained

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]


async def test_hostile_entries_are_dead_lettered_at_decode(
    redis: Redis, settings: Settings
) -> None:
    """Each hostile entry: DLQ, its kind and reason; the normal runs: exact; nothing retried."""
    s = settings.model_copy(update={"batch_size": 100, "max_payload_bytes": MAX_PAYLOAD_BYTES})
    load = Load.build(steps=1500, copies=1, seed=21)
    mixed: list[Hostile | bytes] = [*load.shuffled(), *HOSTILE]
    random.Random(21).shuffle(mixed)
    hostile_ids: dict[bytes, Hostile] = {}
    for entry in mixed:  # all written before the worker starts: hostile ones share batches
        if isinstance(entry, bytes):
            await xadd_raw(redis, s.source_stream, "data", entry)
        else:
            flat = [part for pair in entry.fields for part in pair]
            hostile_ids[await xadd_raw(redis, s.source_stream, *flat)] = entry
    worker = start_worker(s, "w1")
    try:
        await wait_drained(redis, s)
        assert worker.poll() is None, "the worker died or restarted"
    finally:
        log = stop_worker(worker)
    assert worker.returncode == 0, log

    result = await tally(redis, s.derived_stream, load, len(mixed))
    dead = [f for _, f in await entries(redis, s.dlq_stream)]
    SUMMARIES.append(result.line("hostile entries") + f" dlq={len(dead)}/{len(HOSTILE)}")
    assert (result.lost, result.doubled, result.unexpected) == (0, 0, 0)
    assert await run_totals(redis, s.key_prefix, list(load.run_totals)) == load.run_totals
    verdicts = {}
    for fields in dead:
        case = hostile_ids[fields[b"source_id"]]
        error = json.loads(fields[b"error"])
        verdicts[case.name] = (error["kind"], case.reason in error["message"])
    assert verdicts == {h.name: (h.kind, True) for h in HOSTILE}
    # Decided at decode: no batch failed, so none was isolated and nothing waits for a retry.
    assert "isolating" not in log
    assert "stay pending" not in log
    assert (await redis.xpending(s.source_stream, s.group))["pending"] == 0
