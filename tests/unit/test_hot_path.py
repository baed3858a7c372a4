"""The hot path's rules (ARCHITECTURE.md, "Hot path rules"), checked where a profile cannot.

On Python 3.11 (the image's) reading a member off an Enum class (`Kind.STEP`) costs about
1k instructions, because `EnumType.__getattr__` sends every class attribute lookup down
CPython's slow path; per entry that was about 5% of the worker's work. An entry's way
through the worker, in either dialect, must read members from globals, so the number of
such reads per batch does not grow with the batch.
"""

from __future__ import annotations

import enum
import json
from collections import Counter
from typing import Any

import pytest
from redis.asyncio import Redis

from service.core.batch import Entry
from service.core.fastpath import decode_fast
from service.core.lifecycle import Action
from service.dev.sample import T0, responses_entries, step
from service.settings import Settings
from service.storage.client import PartitionClient
from service.storage.protocol import commit_call
from tests.conftest import make_processor


def _entries(payloads: list[bytes]) -> list[Entry]:
    return [(f"{1_700_000_000_000 + i}-0".encode(), {b"data": p}) for i, p in enumerate(payloads)]


def _steps(runs: int) -> list[Entry]:
    """`runs` runs' steps as producers send them: each started, then ended with usage; a
    message step enveloped, a tool step bare."""
    payloads: list[dict[str, Any]] = []
    for n in range(runs):
        run_id = f"run_{n}"
        message = step("step_m", "in_progress", run_id=run_id)
        tool = step("step_t", "in_progress", run_id=run_id, kind="function")
        payloads += [{"event": "thread.run.step.created", "data": message}, tool]
        ended = step("step_m", "completed", run_id=run_id, ended_at=T0 + 2, usage=(10, 5))
        payloads += [{"event": "thread.run.step.completed", "data": ended}]
        payloads += [step("step_t", "failed", run_id=run_id, kind="function", error="x")]
    return _entries([json.dumps(p).encode() for p in payloads])


def _responses(runs: int) -> list[Entry]:
    """`runs` responses' sample streams (service.dev.sample): items of several types, a
    response's lifecycle."""
    return _entries([p for n in range(runs) for _, p in responses_entries(f"resp_{n}")])


@pytest.fixture
def member_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every member read off an Enum class while the test runs, as 'Class.NAME'."""
    reads: Counter[str] = Counter()

    def counting(cls: type, name: str) -> Any:
        members = type.__getattribute__(cls, "__dict__").get("_member_map_", {})
        if name in members:
            reads[f"{cls.__name__}.{name}"] += 1
        return type.__getattribute__(cls, name)

    monkeypatch.setattr(enum.EnumType, "__getattribute__", counting)
    return reads


def _through_the_worker(entries: list[Entry]) -> None:
    """One batch's pure work in the worker: build, the commit call, the counting."""
    settings = Settings(redis_url="redis://127.0.0.1:9/0", consumer="hot", partitions=1)
    conn = PartitionClient(Redis.from_url(settings.redis_url), settings)  # never connects
    processor = make_processor(conn)
    batch = processor.build(entries)
    assert (batch.failed, batch.dead) == ({}, [])
    commit_call(conn, batch.runs, batch.acks)
    end, start = Action.END, Action.START  # what the script answers, once (not the worker's)
    done = [(op, end if op.end_event else start) for op in batch.ops()]
    processor._count(batch, done)


def _reads_per_batch(member_reads: Counter[str], small: list[Entry], large: list[Entry]) -> None:
    _through_the_worker(small)  # imports, caches
    member_reads.clear()
    _through_the_worker(small)
    per_small = Counter(member_reads)
    member_reads.clear()
    _through_the_worker(large)
    assert member_reads == per_small


def test_a_batch_of_steps_reads_no_enum_member_per_entry(member_reads: Counter[str]) -> None:
    """Twenty times the entries, the same member reads (only per-batch ones, if any)."""
    small, large = _steps(1), _steps(20)
    assert all(decode_fast(fields[b"data"]) for _, fields in large)  # the hot path's decoder
    _reads_per_batch(member_reads, small, large)


def test_a_batch_of_responses_reads_no_enum_member_per_entry(member_reads: Counter[str]) -> None:
    """The same for the Responses dialect's items and responses."""
    _reads_per_batch(member_reads, _responses(1), _responses(20))
