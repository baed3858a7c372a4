"""Source stream trimming against a real Redis: only what every group is done with goes."""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from service.dev.sample import step
from service.settings import Settings
from service.storage.client import PartitionClient
from service.storage.trim import trim_source
from service.worker.app import build_worker
from service.worker.recovery import Recovery
from tests.conftest import make_processor
from tests.helpers import drained, entries, fetch, produce, wait_until

NODE = 100
"""Entries per stream node (Redis's default stream-node-max-entries): `XTRIM MINID ~` frees
whole nodes only, so up to one node's worth of trimmable entries may stay."""


async def add_old(redis: Redis, stream: str, count: int, age_s: int = 7200) -> list[bytes]:
    """XADD `count` entries with ids `age_s` seconds in the past, as a backlog would have."""
    start = (int(time.time()) - age_s) * 1000
    ids = [f"{start + i}-0".encode() for i in range(count)]
    pipe = redis.pipeline(transaction=False)
    for entry_id in ids:
        pipe.xadd(stream, {"data": b"{}"}, id=entry_id)
    await pipe.execute()
    return ids


async def read_and_ack(redis: Redis, s: Settings, count: int, group: str | None = None) -> None:
    """A group reads `count` new entries and acks them all."""
    group = group or s.group
    reply = cast("Any", await redis.xreadgroup(group, "reader", {s.source_stream: ">"}, count))
    ids = [entry_id for entry_id, _ in reply[0][1]] if reply else []
    if ids:
        await redis.xack(s.source_stream, group, *ids)


async def ids_left(redis: Redis, stream: str) -> list[bytes]:
    """The ids still in the stream, oldest first."""
    return [entry_id for entry_id, _ in await entries(redis, stream)]


async def test_acked_entries_past_retention_are_trimmed_newer_kept(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """Entries the group acked go once older than the retention; recent acked ones stay."""
    old = await add_old(redis, settings.source_stream, 1000)
    await produce(redis, settings, *[{"n": i} for i in range(50)])
    await read_and_ack(redis, settings, 2000)
    removed = await trim_source(conn)
    left = await ids_left(redis, settings.source_stream)
    assert removed == 1050 - len(left)
    assert len(set(old) & set(left)) < NODE
    assert len([i for i in left if i not in set(old)]) == 50  # every recent entry kept


async def test_pending_entries_are_kept(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """An entry delivered and not acked stays, and so does every entry after it."""
    old = await add_old(redis, settings.source_stream, 1000)
    await fetch(redis, settings.source_stream, settings.group, "slow")  # 1000 delivered
    await redis.xack(settings.source_stream, settings.group, *old[:600])
    assert await trim_source(conn) > 0
    left = await ids_left(redis, settings.source_stream)
    assert left[-400:] == old[600:]
    assert len(left) < 400 + NODE


async def test_entries_never_delivered_are_kept(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """Entries past the group's last-delivered-id (lag) stay, however old."""
    old = await add_old(redis, settings.source_stream, 1000)
    await read_and_ack(redis, settings, 500)
    assert await trim_source(conn) > 0
    left = await ids_left(redis, settings.source_stream)
    assert left[-501:] == old[499:]  # the last delivered one is kept too
    assert len(left) < 501 + NODE


async def test_another_group_behind_keeps_its_entries_and_lag(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """A second group on the stream that is behind keeps what it has not acked or read, and
    its lag stays exact."""
    old = await add_old(redis, settings.source_stream, 1000)
    await redis.xgroup_create(settings.source_stream, "analytics", id="0")
    await read_and_ack(redis, settings, 1000)
    await read_and_ack(redis, settings, 300, group="analytics")
    await redis.xreadgroup("analytics", "a1", {settings.source_stream: ">"}, count=100)
    assert await trim_source(conn) > 0
    left = await ids_left(redis, settings.source_stream)
    assert left[-700:] == old[300:]  # 100 pending, then 600 never read by analytics
    groups = {g["name"]: g for g in await redis.xinfo_groups(settings.source_stream)}
    assert groups[b"analytics"]["lag"] == 600
    assert groups[b"analytics"]["pending"] == 100


async def test_a_group_that_read_nothing_keeps_everything(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """A group with no deliveries yet (last-delivered-id 0-0) holds the whole stream."""
    old = await add_old(redis, settings.source_stream, 500)
    await redis.xgroup_create(settings.source_stream, "late", id="0")
    await read_and_ack(redis, settings, 500)
    assert await trim_source(conn) == 0
    assert await ids_left(redis, settings.source_stream) == old


async def test_nothing_trimmed_without_our_group_or_stream(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """No stream: nothing to do, no error; our group gone (being recreated): nothing goes."""
    other = settings.model_copy(update={"source_stream": settings.source_stream + ".none"})
    assert await trim_source(PartitionClient(redis, other)) == 0
    old = await add_old(redis, settings.source_stream, 500)
    await read_and_ack(redis, settings, 500)
    await redis.xgroup_destroy(settings.source_stream, settings.group)
    assert await trim_source(conn) == 0
    assert await ids_left(redis, settings.source_stream) == old


async def test_near_maxmemory_what_every_group_acked_goes_whatever_its_age(
    conn: PartitionClient, redis: Redis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis near its maxmemory (RUNSTEPS_MEMORY_PRESSURE_RATIO): acked entries go however
    recent, counted as trimmed early, and the episode is logged once as it starts and once
    as it ends; afterwards the retention holds again. Unacked entries stay throughout."""
    await produce(redis, settings, *[{"n": i} for i in range(1000)])
    await read_and_ack(redis, settings, 800)
    recovery = Recovery(make_processor(conn))
    assert await recovery.trim() == 0, "recent: the retention keeps them"
    caplog.set_level(logging.INFO, logger="runsteps.recovery")
    used = int((await redis.info("memory"))["used_memory"])
    try:
        await redis.config_set("maxmemory", str(int(used / 0.97)))  # writes still accepted
        removed = await recovery.trim(due=False)  # tight: trimmed at once, scan or not
        assert await recovery.trim(due=False) == 0  # still tight, nothing left to trim
    finally:
        await redis.config_set("maxmemory", "0")
    assert await recovery.trim(due=False) == 0
    left = await ids_left(redis, settings.source_stream)
    assert removed == 1000 - len(left)
    assert 200 < len(left) <= 200 + NODE  # the 200 never read all stay
    telemetry = recovery.processor.telemetry
    assert telemetry.source_trimmed == telemetry.source_trimmed_early == removed
    messages = [r.getMessage() for r in caplog.records if r.name == "runsteps.recovery"]
    assert len(messages) == 2, messages
    assert "near maxmemory" in messages[0]
    assert "no longer tight" in messages[1]


async def test_worker_trims_what_it_processed(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """A running worker trims the source stream by itself once entries are processed."""
    s = settings.model_copy(update={"source_retention_s": 0, "stall_scan_s": 0.05})
    await produce(redis, s, *[step(f"w{i}", "in_progress") for i in range(1000)])
    worker = build_worker(s)
    await worker.start()
    try:
        await wait_until(lambda: drained(redis, s.source_stream, s.group), what="processing")
        await wait_until(lambda: _shorter_than(redis, s.source_stream, NODE), what="the trim")
        assert await redis.xlen(s.derived_stream) == 1000
    finally:
        await worker.stop()


async def _shorter_than(redis: Redis, stream: str, n: int) -> bool:
    return int(await redis.xlen(stream)) < n
