"""Self-healing: a lost consumer group is recreated and a stopped subscriber restarted; a
worker that cannot get back to consuming in time says so to its liveness probe.

FastStream's stream subscriber stops for good when a read answers NOGROUP: the stream was
deleted, the group destroyed, or Redis restarted without its data. The healer notices the
stopped subscriber, creates the group again (`XGROUP CREATE ... 0 MKSTREAM`) and starts the
subscriber again. From id 0, because what the old group had read is unknown: every entry
still in the stream is read again, nothing produced after the loss is missed, and the commit
recognises the entries it already applied (their run's state says so) and only acks them.
Except where that state is gone too: a run whose state expired (RUNSTEPS_STATE_TTL_S, days by
default, while source entries are trimmed after RUNSTEPS_SOURCE_RETENTION_S, an hour) or
Redis lost it all, and bad entries, which go to the DLQ again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Protocol

from redis.exceptions import ResponseError

if TYPE_CHECKING:
    from service.settings import Settings
    from service.storage.client import PartitionClient
    from service.worker.telemetry import Telemetry

__all__ = ["Healer", "Subscriber", "group_lost"]

log = logging.getLogger("runsteps.heal")

_TICK_S = 0.5  # how soon a stopped subscriber is seen; a PING per tick
_MAX_BACKOFF_S = 5.0


def group_lost(exc: BaseException) -> bool:
    """Whether Redis answered that the stream or its consumer group does not exist."""
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


class Subscriber(Protocol):
    """What the healer needs of a FastStream subscriber."""

    running: bool

    async def start(self) -> None:
        """Create its group if missing (BUSYGROUP is fine) and start its read loop."""


class Healer:
    """Keeps a worker's subscribers consuming; `alive` is false once that fails too long."""

    def __init__(
        self,
        readers: list[tuple[PartitionClient, Subscriber]],
        settings: Settings,
        telemetry: Telemetry,
    ) -> None:
        self.readers = readers
        self.settings = settings
        self.telemetry = telemetry
        self.consuming_at = time.monotonic()  # when every subscriber last ran, Redis answering

    def alive(self) -> bool:
        """False once the worker has not been consuming for RUNSTEPS_UNHEALTHY_AFTER_S."""
        return self.stuck_for() < self.settings.unhealthy_after_s

    def stuck_for(self) -> float:
        """Seconds since the worker was last seen consuming."""
        return time.monotonic() - self.consuming_at

    async def run(self) -> None:
        """Check every tick; after a failed restart, back off (capped) and try again."""
        backoff = _TICK_S
        while True:
            try:
                await self.check()
                backoff = _TICK_S
            except Exception as exc:  # Redis away, out of memory, refused: retry; liveness tells
                log.warning("cannot resume consuming yet (%s); retrying in %.1fs", exc, backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            await asyncio.sleep(backoff)

    async def check(self) -> None:
        """Restart every stopped subscriber (its group first), then PING: all fine, consuming."""
        for conn, subscriber in self.readers:
            if not subscriber.running:
                await self.restore_group(conn)
                await subscriber.start()
                log.info("subscriber of %s restarted", conn.part.source_stream)
        for conn, _ in self.readers[:1]:  # one client serves every partition
            await asyncio.wait_for(conn.redis.ping(), timeout=2.0)
        self.consuming_at = time.monotonic()

    async def restore_group(self, conn: PartitionClient) -> None:
        """Create `conn`'s group again if it is gone; logged and counted once per loss."""
        if await conn.ensure_group():
            self.telemetry.groups_recreated += 1
            log.warning(
                "consumer group %s of stream %s was gone (stream deleted, group destroyed or "
                "Redis emptied): created again from id 0; entries still in the stream are "
                "read again and those already applied are only acked",
                self.settings.group,
                conn.part.source_stream,
            )
