"""Trimming of the source stream: what every consumer group is done with, past a retention.

Producers cap the source stream with `MAXLEN ~` as a backstop, but at a high rate a cap
that keeps hours of entries is gigabytes. Each worker trims the partitions it reads, from
its recovery loop: entries older than RUNSTEPS_SOURCE_RETENTION_S that every group on the
stream (ours or anybody else's) has had delivered and acked (`trim.lua`). Several replicas
trimming the same stream is harmless: each call trims what is left to trim, often nothing.

Near maxmemory the retention gives way: acked entries kept for it are then the memory that
refuses producers' XADDs and the worker's own commits (`noeviction`), so the recovery loop
trims whatever every group acked, whatever its age (`memory_use`, RUNSTEPS_MEMORY_PRESSURE_RATIO).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.storage.scripts import TRIM

if TYPE_CHECKING:
    from service.storage.client import PartitionClient

__all__ = ["memory_use", "trim_source"]

_MAX_CALLS = 50
"""XTRIM calls per pass at most: each removes up to 100 stream nodes, so a pass stays short
and a large backlog (the stream grew before trimming was on) goes over a few passes."""


async def memory_use(conn: PartitionClient) -> float | None:
    """The used memory of the server holding `conn`'s partition, as a fraction of its
    maxmemory (INFO memory); None when it has no maxmemory."""
    [info] = await conn.execute(lambda pipe: pipe.info("memory"))
    limit = int(info.get("maxmemory", 0))
    return int(info["used_memory"]) / limit if limit > 0 else None


async def trim_source(conn: PartitionClient, retention_s: int | None = None) -> int:
    """Trim `conn`'s source stream of entries no group needs any more and older than
    `retention_s` (RUNSTEPS_SOURCE_RETENTION_S unless given; 0: whatever every group
    acked); the number removed."""
    s, stream = conn.settings, conn.part.source_stream
    retention_ms = (s.source_retention_s if retention_s is None else retention_s) * 1000
    removed = 0
    for _ in range(_MAX_CALLS):
        [trimmed] = await conn.execute(
            lambda pipe: pipe.evalsha(TRIM.sha, 1, stream, retention_ms, s.group)
        )
        if not trimmed:
            break
        removed += int(trimmed)
    return removed
