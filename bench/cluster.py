"""Scaling out: the same partitioned load on a 1-master and a 3-master Redis Cluster.

`python -m bench.cluster [--events N] [--workers W]`: N entries over 6 partitions
(`crc32(run_id) mod 6`), W worker processes with RUNSTEPS_CLUSTER=true; the aggregate drain
rate for 1 master and for 3 masters, measured side by side in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any, cast

from redis.asyncio import Redis, RedisCluster

from service.dev.redis_server import LocalCluster
from service.storage.keys import partitions

from .workers import WorkerProcess, bench_settings
from .workload import build, route

PARTITIONS = 6


async def _drained(client: Redis, streams: list[str], group: str) -> int:
    """Entries still unread or unacked over all partition streams."""
    left = 0
    for stream in streams:
        for g in await client.xinfo_groups(stream):
            if g["name"].decode() == group:
                left += int(g["lag"] or 0) + int(g["pending"])
    return left


async def drain_rate(masters: int, payloads: list[bytes], workers: int) -> float:
    """Events/s of `workers` processes draining `payloads` on a cluster of `masters`."""
    cluster = await asyncio.to_thread(LocalCluster(masters=masters).start)
    procs: list[WorkerProcess] = []
    client = cast("Redis", RedisCluster.from_url(cluster.url))
    try:
        s = bench_settings(
            cluster.url, f"c{masters}", cluster=True, partitions=PARTITIONS, key_prefix="bench"
        )
        parts = partitions(s)
        routed = {
            part.source_stream: entries
            for part, entries in zip(parts, route(payloads, PARTITIONS), strict=True)
        }
        for part in parts:
            await client.xgroup_create(part.source_stream, s.group, id="0", mkstream=True)
        for stream, entries in routed.items():
            node = cast("Any", client).get_node_from_key(stream)
            direct = Redis(host=node.host, port=node.port)
            for at in range(0, len(entries), 2000):
                pipe = direct.pipeline(transaction=False)
                for data in entries[at : at + 2000]:
                    pipe.xadd(stream, {"data": data})
                await pipe.execute()
            await direct.aclose()
        streams = [p.source_stream for p in parts]
        procs = [WorkerProcess(s, f"w{i}") for i in range(workers)]
        started: float | None = None
        deadline = time.monotonic() + 600
        while (left := await _drained(client, streams, s.group)) > 0:
            if started is None and left < len(payloads):
                started = time.perf_counter()  # first delivery: start-up excluded
            if failure := next((f for w in procs if (f := w.failure())), None):
                raise RuntimeError(failure)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{left} entries left after 600 s")
            await asyncio.sleep(0.01)
        return len(payloads) / (time.perf_counter() - (started or time.perf_counter()))
    finally:
        for w in procs:
            w.stop()
        await client.aclose()
        cluster.stop()


async def main(events: int, workers: int) -> None:
    """Run both clusters and print the rates and their ratio."""
    payloads = build(events).payloads
    one = await drain_rate(1, payloads, workers)
    three = await drain_rate(3, payloads, workers)
    print(f"cluster scaling: {events:,} entries, {PARTITIONS} partitions, {workers} workers")
    print(f"  1 master   {one:>10,.0f} ev/s")
    print(f"  3 masters  {three:>10,.0f} ev/s")
    print(f"  3/1 ratio  {three / one:>10.2f}   (same machine: 2 cores shared by all processes)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.workers))
