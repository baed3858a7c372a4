"""The exporter's Redis side: its consumer group on one partition's derived stream, its
dead letters, and the step extent of a run read from the run's tracked state.

The group is the exporter's own (RUNSTEPS_EXPORT_GROUP), beside any other consumer's; it is
created at id 0, so an exporter started on a running deployment exports what the derived
stream still holds. The dead-letter stream is the partition's own (`<stream>:{p}` like the
derived stream's name), so acking an entry and dead-lettering it is one transaction in one
cluster slot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import ResponseError

from contracts.partitioning import partition_stream
from service.storage.reads import MAX_PAGE, run_state

if TYPE_CHECKING:
    from service.export.mapping import Extent
    from service.storage.client import PartitionClient
    from service.storage.pending import StreamEntries

__all__ = ["DeadLetter", "DerivedReader", "GroupFigures"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A derived entry that cannot become a span, and why."""

    entry_id: bytes
    fields: dict[bytes, bytes]
    kind: str  # missing_data, invalid_json, invalid_payload, unmappable
    message: str


@dataclass(frozen=True, slots=True)
class GroupFigures:
    """The exporter group's backlog on one derived stream, as Redis reports it."""

    lag: int | None  # entries not yet delivered to the group (None: Redis cannot tell)
    pending: int  # delivered and not acked


class DerivedReader:
    """The exporter's consumer group on one partition's derived stream."""

    def __init__(self, conn: PartitionClient) -> None:
        s = conn.settings
        self.conn = conn
        self.group = s.export_group
        self.consumer = s.consumer
        self.stream = conn.part.derived_stream
        tagged = s.cluster or s.partitions > 1
        self.dlq = partition_stream(s.export_dlq_stream, conn.part.index, tagged)

    async def ensure_group(self) -> bool:
        """Create the group (and the stream) at id 0 if missing; True if this call did."""
        try:
            await self.conn.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    async def read(self, after: bytes, count: int, block_ms: int | None) -> StreamEntries:
        """XREADGROUP: new entries (`after` b">"), or this consumer's own pending entries
        after id `after` (no block). A pending entry trimmed away has no fields: it comes
        back with an empty dict."""
        reply = cast(
            "Any",
            await self.conn.redis.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: after},
                count=count,
                block=block_ms if after == b">" else None,
            ),
        )
        entries = reply[0][1] if reply else []
        return [(entry_id, fields or {}) for entry_id, fields in entries]

    async def claim(self, idle_ms: int, start: bytes, count: int) -> tuple[bytes, StreamEntries]:
        """XAUTOCLAIM entries other consumers left idle past `idle_ms` (a replica that died
        or was scaled away): (next cursor, entries; trimmed ones with empty fields)."""
        reply: list[Any] = await self.conn.redis.xautoclaim(
            self.stream, self.group, self.consumer, idle_ms, start, count=count
        )
        entries = [(i, f or {}) for i, f in reply[1]]
        entries += [(i, {}) for i in (reply[2] if len(reply) > 2 else [])]
        return reply[0], entries

    async def settle(self, ids: list[bytes], dead: list[DeadLetter], maxlen: int) -> None:
        """Dead-letter `dead` and ack `ids` (which include them), in one transaction."""
        if not ids:
            return

        def build(pipe: Any) -> None:
            for d in dead:
                fields: dict[str | bytes, bytes | str] = {
                    "data": d.fields.get(b"data", b""),
                    "error": json.dumps({"kind": d.kind, "message": d.message}),
                    "source_id": d.entry_id,
                    "source_stream": self.stream,
                }
                fields.update({b"field:" + k: v for k, v in d.fields.items() if k != b"data"})
                pipe.xadd(self.dlq, cast("Any", fields), maxlen=maxlen, approximate=True)
            pipe.xack(self.stream, self.group, *ids)

        await self.conn.execute(build, transaction=bool(dead))

    async def extent(self, run_id: str) -> Extent | None:
        """The earliest start and latest end of the run's tracked steps, from its state;
        None once the state is gone (expired) or holds no step."""
        lo = hi = None
        cursor: str | None = "0"
        while cursor is not None:
            state = await run_state(self.conn, run_id, cursor, MAX_PAGE)
            if state is None:
                break
            for step in state.steps:
                if step.created_at is None:
                    continue
                end = step.ended_at if step.ended_at is not None else step.created_at
                lo = step.created_at if lo is None else min(lo, step.created_at)
                hi = end if hi is None else max(hi, end)
            cursor = state.next_cursor
        return None if lo is None or hi is None else (lo, hi)

    async def figures(self) -> GroupFigures | None:
        """The group's lag and pending count; None when the stream or group is missing."""
        try:
            groups = await self.conn.redis.xinfo_groups(self.stream)
        except ResponseError:
            return None
        for g in groups:
            name = g.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == self.group:
                lag = g.get("lag")
                return GroupFigures(None if lag is None else int(lag), int(g["pending"]))
        return None
