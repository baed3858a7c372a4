"""Pending entries: a consumer's own, claims of idle ones, delivery counts, failure records,
and the removal of consumers that died with nothing pending.

FastStream's batch subscriber reads only new entries; the recovery loop uses these to bring
back what a dead, hung or restarted consumer left pending (recovery.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from service.storage.scripts import REAP

if TYPE_CHECKING:
    from service.storage.client import PartitionClient

__all__ = ["Pending", "StreamEntries"]

StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]
"""Entries of one stream as redis-py returns them: (entry id, fields)."""


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


class Pending:
    """The pending-entry commands of one partition's consumer group."""

    def __init__(self, conn: PartitionClient) -> None:
        self.conn = conn

    async def own_pending(self, consumer: str, after: bytes, count: int) -> StreamEntries:
        """`consumer`'s own pending entries after id `after` (XREADGROUP with an explicit id)."""
        s = self.conn.settings
        reply = cast(
            "Any",
            await self.conn.redis.xreadgroup(
                s.group, consumer, {self.conn.part.source_stream: after}, count=count
            ),
        )
        return cast("StreamEntries", reply[0][1] if reply else [])

    async def autoclaim(
        self, consumer: str, start: bytes, count: int
    ) -> tuple[bytes, StreamEntries, list[bytes]]:
        """XAUTOCLAIM entries idle longer than the claim time: (next cursor, entries, deleted).

        `deleted` are ids trimmed from the stream while pending: their payload is gone.
        """
        s = self.conn.settings
        reply: list[Any] = await self.conn.redis.xautoclaim(
            self.conn.part.source_stream, s.group, consumer, s.claim_idle_ms, start, count=count
        )
        deleted = list(reply[2]) if len(reply) > 2 else []
        # Entries deleted while pending come back as (id, None) on some servers.
        entries = [(i, f) for i, f in reply[1] if f is not None]
        return reply[0], entries, deleted

    async def deliveries(self, consumer: str, ids: list[bytes]) -> dict[bytes, int]:
        """How many times each of `consumer`'s pending entries has been delivered."""
        if not ids:
            return {}
        rows = cast(
            "list[dict[str, Any]]",
            await self.conn.redis.xpending_range(
                self.conn.part.source_stream,
                self.conn.settings.group,
                min=min(ids, key=_id_key),
                max=max(ids, key=_id_key),
                count=len(ids) * 2,
                consumername=consumer,
            ),
        )
        wanted = set(ids)
        return {
            r["message_id"]: int(r["times_delivered"]) for r in rows if r["message_id"] in wanted
        }

    async def uncount(self, consumer: str, deliveries: dict[bytes, int]) -> None:
        """Take back the last delivery of `consumer`'s pending entries (id -> its count): it
        failed because Redis refused writes, not because of them, and must not bring them
        closer to the delivery cap. XCLAIM RETRYCOUNT sets the count (and restarts the idle
        time, so a claim retries them after the claim time, not at once)."""
        s = self.conn.settings
        by_count: dict[int, list[Any]] = {}  # redis-py types ids loosely
        for entry_id, n in deliveries.items():
            by_count.setdefault(max(n - 1, 0), []).append(entry_id)
        for count, ids in by_count.items():
            await self.conn.redis.xclaim(
                self.conn.part.source_stream, s.group, consumer, 0, ids,
                retrycount=count, justid=True,
            )  # fmt: skip

    async def ack_deleted(self, ids: list[bytes]) -> None:
        """Ack pending ids whose entries were trimmed away (nothing left to process)."""
        if ids:
            await self.conn.redis.xack(self.conn.part.source_stream, self.conn.settings.group, *ids)

    async def record_failures(self, failures: dict[bytes, str]) -> None:
        """Remember why entries failed, for the DLQ entry once their deliveries run out."""
        if failures:
            await self.conn.redis.hset(self.conn.keys.failures, mapping=cast("Any", failures))
            await self.conn.redis.expire(self.conn.keys.failures, self.conn.settings.state_ttl_s)

    async def last_failures(self, ids: list[bytes]) -> dict[bytes, str]:
        """The last recorded failure of each id that has one."""
        if not ids:
            return {}
        rows = cast("list[bytes | None]", await self.conn.redis.hmget(self.conn.keys.failures, ids))
        return {i: r.decode() for i, r in zip(ids, rows, strict=True) if r is not None}

    async def forget_failures(self, ids: list[bytes]) -> None:
        """Drop failure records of entries that are done (processed or dead-lettered)."""
        if ids:
            await self.conn.redis.hdel(self.conn.keys.failures, *ids)

    async def hand_back(self, consumer: str) -> int:
        """Make `consumer`'s pending entries claimable at once (graceful shutdown).

        Redis has no "un-claim": re-claiming them to ourselves with a large IDLE makes every
        other consumer's XAUTOCLAIM take them on its next pass instead of after the idle time.
        """
        s = self.conn.settings
        rows = cast(
            "list[dict[str, Any]]",
            await self.conn.redis.xpending_range(
                self.conn.part.source_stream,
                s.group,
                min="-",
                max="+",
                count=10_000,
                consumername=consumer,
            ),
        )
        ids = [r["message_id"] for r in rows]
        if ids:
            await self.conn.redis.xclaim(
                self.conn.part.source_stream,
                s.group,
                consumer,
                0,
                ids,
                idle=s.claim_idle_ms * 10,
                justid=True,
            )
        return len(ids)

    async def remove_dead_consumers(self, consumer: str, idle_ms: int) -> list[str]:
        """Delete the group's consumers idle longer than `idle_ms` with nothing pending
        (never `consumer`, the caller); returns their names."""
        conn = self.conn
        args = (conn.settings.group, consumer, idle_ms)
        [removed] = await conn.execute(
            lambda pipe: pipe.evalsha(REAP.sha, 1, conn.part.source_stream, *args)
        )
        return [name.decode() for name in cast("list[bytes]", removed)]
