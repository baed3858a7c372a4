"""Partitioned streams on a real 3-master Redis Cluster: exactly once, and a master dying."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from redis.asyncio import Redis, RedisCluster

from contracts.partitioning import partition_for
from service.dev.redis_server import LocalCluster
from service.settings import Settings
from service.storage.keys import Partition, partitions
from tests.helpers import drained, wait_until
from tests.system.load import SUMMARIES, Load, tally
from tests.system.workers import start_worker, stop_worker

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]


@pytest.fixture
async def cluster() -> AsyncIterator[LocalCluster]:
    """A fresh 3-master cluster on loopback ports (stopped even if it fails to start)."""
    c = LocalCluster(masters=3)
    try:
        await asyncio.to_thread(c.start)
        yield c
    finally:
        await asyncio.to_thread(c.stop)


def by_partition(entries: list[bytes], parts: tuple[Partition, ...]) -> dict[str, list[bytes]]:
    """Route entries as producers do: partition_for(run_id, N) picks the stream."""
    out: dict[str, list[bytes]] = defaultdict(list)
    for data in entries:
        p = partition_for(json.loads(data)["run_id"], len(parts))
        out[parts[p].source_stream].append(data)
    return out


async def produce(client: Redis, routed: dict[str, list[bytes]]) -> None:
    """XADD each partition's entries (one slot per partition, so one node each)."""
    for stream, entries in routed.items():
        for data in entries:
            await client.xadd(stream, {"data": data})


async def all_drained(client: Redis, settings: Settings, parts: tuple[Partition, ...]) -> bool:
    """Every partition's stream read and acked."""
    for part in parts:
        if not await drained(client, part.source_stream, settings.group):
            return False
    return True


async def test_six_partitions_two_workers_survive_a_master_kill(cluster: LocalCluster) -> None:
    """6 partitions, 2 workers: exactly once; a dead master pauses only its partitions."""
    s = Settings(
        redis_url=cluster.url,
        cluster=True,
        partitions=6,
        consumer="unused",
        http_port=0,
        block_ms=50,
        claim_idle_ms=1000,
    )
    parts = partitions(s)
    client = cast("Redis", RedisCluster.from_url(cluster.url))
    load = Load.build(steps=1500, copies=2, seed=21)
    workers = [start_worker(s, "w1"), start_worker(s, "w2")]
    try:
        await produce(client, by_partition(load.shuffled(), parts))
        await wait_until(lambda: all_drained(client, s, parts), 60, "all partitions drained")
        derived = [p.derived_stream for p in parts]
        first = await tally(client, derived, load, len(load.entries))
        SUMMARIES.append(first.line("cluster 3 masters, 6 partitions, 2 workers"))
        assert (first.lost, first.doubled, first.unexpected) == (0, 0, 0)

        # Kill one master: its partitions pause, the others go on.
        cc = cast("Any", client)
        victim = 1
        port = cluster.nodes[victim].port
        down = [p for p in parts if cc.get_node_from_key(p.source_stream).port == port]
        up = [p for p in parts if p not in down]
        cluster.nodes[victim].kill()
        more = Load.build(steps=600, copies=1, seed=22, prefix="m")
        routed = by_partition(more.shuffled(), parts)
        await produce(client, {p.source_stream: routed[p.source_stream] for p in up})
        await wait_until(lambda: all_drained(client, s, tuple(up)), 60, "live partitions drained")
        assert all(w.poll() is None for w in workers), "a worker died with a master"

        await asyncio.to_thread(cluster.restart, victim)
        await asyncio.to_thread(cluster.wait_ok)
        await client.aclose()
        client = cast("Redis", RedisCluster.from_url(cluster.url))
        await produce(client, {p.source_stream: routed[p.source_stream] for p in down})
        await wait_until(lambda: all_drained(client, s, parts), 90, "all drained after restart")
        merged = Load(seed=0)
        merged.required = {**load.required, **more.required}
        merged.optional = {**load.optional, **more.optional}
        result = await tally(client, derived, merged, len(load.entries) + len(more.entries))
        SUMMARIES.append(
            result.line(f"cluster master kill -9 ({len(down)} of 6 partitions paused)")
        )
        assert (result.lost, result.doubled, result.unexpected) == (0, 0, 0)
    finally:
        errors = [stop_worker(w) for w in workers]
        await client.aclose()
    assert [w.returncode for w in workers] == [0, 0], "\n".join(errors)
