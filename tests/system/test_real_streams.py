"""Two worker processes on a backlog of whole recorded streams of both dialects."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from redis.asyncio import Redis

from contracts.responses_producer import ResponsesForwarder
from service.settings import Settings
from tests.helpers import read_json
from tests.system.load import produce
from tests.system.workers import two_workers, wait_drained

pytestmark = pytest.mark.system

DATA = Path(__file__).resolve().parents[1] / "data"


def _streams() -> list[bytes]:
    entries: list[bytes] = []
    for path in sorted((DATA / "assistants").glob("*.jsonl")):
        entries += [line.encode() for line in path.read_text().splitlines() if line.strip()]
    for path in sorted((DATA / "responses").glob("*.jsonl")):
        forward = ResponsesForwarder()
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        entries += [forward.entry_data(line) for line in lines]
    return entries


async def test_whole_streams_over_two_workers_exactly_once(
    redis: Redis, settings: Settings
) -> None:
    """Every recorded stream, each event twice, shuffled, drained by two processes: each
    run and step has one start before one end, no event twice, nothing dead-lettered."""
    entries = _streams() * 2
    random.Random(5).shuffle(entries)
    await produce(redis, settings.source_stream, entries)
    async with two_workers(redis, settings.model_copy(update={"batch_size": 20})):
        await wait_drained(redis, settings, timeout_s=60)
        events = await read_json(redis, settings.derived_stream)
        ids = Counter(e["event_id"] for e in events)
        assert max(ids.values()) == 1, "a derived event was published twice"
        subjects: dict[tuple[str, str | None], list[str]] = {}
        for e in events:
            if e["type"].endswith((".started", "completed", "failed", "cancelled", "expired",
                                   "incomplete")):  # fmt: skip
                subjects.setdefault((e["run_id"], e.get("step_id")), []).append(e["type"])
        for subject, types in subjects.items():
            assert types[0].endswith(".started"), (subject, types)
            assert len(types) <= 2, (subject, types)
        assert {e["source"] for e in events} == {"assistants", "responses"}
        assert sum(1 for e in events if e["type"] == "run.started") >= 10
        assert await redis.xlen(settings.dlq_stream) == 0
        assert json.loads(json.dumps(events))  # plain JSON throughout
