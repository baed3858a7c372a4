"""Shared plumbing: private Redis servers, deadlines, and the drain stopwatch."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

from service.dev.redis_server import LocalRedis

__all__ = [
    "BenchError",
    "BenchTimeoutError",
    "CpuProbe",
    "Drain",
    "cpu_seconds",
    "finish",
    "fresh_redis",
    "pending",
    "used_memory",
    "wait_until",
    "watch_drain",
]

POLL_S = 0.01
"""How often the stopwatch looks at the group: the resolution of every drain time."""


class BenchError(RuntimeError):
    """A scenario could not produce a valid measurement."""


class BenchTimeoutError(BenchError):
    """A scenario ran past its deadline; the message says which and how far it got."""


CpuProbe = Callable[[], dict[str, float]]
"""Cumulative CPU seconds of the processes a scenario involves, by role."""


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used so far (/proc/<pid>/stat)."""
    # Fields after the command name: state is the first, utime the 12th, stime the 13th.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@asynccontextmanager
async def fresh_redis() -> AsyncIterator[tuple[LocalRedis, Redis]]:
    """A private redis-server on 127.0.0.1 and a client; both gone afterwards, always."""
    server = LocalRedis()
    try:
        await asyncio.to_thread(server.start)
        redis = Redis.from_url(server.url, socket_connect_timeout=5)
        try:
            yield server, redis
        finally:
            await redis.aclose()
    finally:
        server.stop()


async def finish(task: asyncio.Task[None], stop: asyncio.Event, timeout_s: float = 10.0) -> None:
    """End a loop task: set its `stop` flag, then cancel it until it is done.

    One cancel is not enough: on Python 3.11, redis-py sends each command under
    asyncio.wait_for (its default socket_timeout), which can swallow a cancellation that
    lands as the send completes; the loop then runs on as if never cancelled.
    """
    stop.set()
    deadline = time.perf_counter() + timeout_s
    while not task.done():
        if time.perf_counter() > deadline:
            raise BenchError(f"task {task.get_name()} did not stop in {timeout_s:.0f}s")
        await asyncio.wait({task}, timeout=0.2)
        task.cancel()
    if not task.cancelled() and (exc := task.exception()) is not None:
        raise BenchError(f"task {task.get_name()} failed: {exc!r}") from exc


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, poll_s: float = POLL_S
) -> float:
    """Poll `check` until it holds; returns the seconds it took, or raises after the deadline."""
    started = time.perf_counter()
    while not await check():
        if time.perf_counter() - started > timeout_s:
            raise BenchTimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(poll_s)
    return time.perf_counter() - started


async def pending(redis: Redis, stream: str, group: str) -> int:
    """Entries the group has handed out and not seen acked."""
    return int((await redis.xpending(stream, group))["pending"])


async def used_memory(redis: Redis) -> int:
    """INFO memory used_memory, in bytes."""
    return int((await redis.info("memory"))["used_memory"])


@dataclass(frozen=True, slots=True)
class Drain:
    """How long consumers took to fetch and ack `events` entries."""

    events: int
    seconds: float  # first delivery to the last ack: start-up excluded
    wall_s: float  # consumer start to the last ack: start-up included
    cpu_s: dict[str, float] = field(default_factory=dict)  # by role, over `seconds`

    @property
    def rate(self) -> float:
        """Events per second, start-up excluded."""
        return self.events / self.seconds

    def cpu_us(self, role: str) -> float:
        """CPU microseconds per event that `role` spent while the drain was timed."""
        return self.cpu_s[role] / self.events * 1e6


async def _group(redis: Redis, streams: tuple[str, ...], group: str) -> tuple[int, int]:
    """(entries read, pending) of `group` over `streams`; 0 where it does not exist yet."""
    read = pending = 0
    for stream in streams:
        for g in await redis.xinfo_groups(stream):
            if g["name"].decode() == group:
                read += int(g["entries-read"] or 0)
                pending += int(g["pending"])
    return read, pending


async def watch_drain(
    redis: Redis,
    stream: str | tuple[str, ...],
    group: str,
    *,
    total: int,
    timeout_s: float,
    what: str,
    failed: Callable[[], str | None] = lambda: None,
    cpu: CpuProbe = dict,
) -> Drain:
    """Time a group from now (consumers starting) until all `total` entries are acked
    (over every stream, when given several: the partitions of one deployment).

    The clock for the rate starts at the first delivery, so interpreter and framework
    start-up do not count. `failed` is asked on every poll: a consumer process that died
    ends the wait at once, with its reason, instead of at the deadline. `cpu` is read at
    the first delivery and at the end, giving each role's CPU time over the timed span.
    """
    streams = (stream,) if isinstance(stream, str) else stream
    started = time.perf_counter()
    first: float | None = None
    cpu_first: dict[str, float] = {}
    read, left = 0, total
    while True:
        read, left = await _group(redis, streams, group)
        now = time.perf_counter()
        if first is None and read > 0:
            first, cpu_first = now, cpu()
        if read >= total and left == 0:
            assert first is not None
            used = {role: s - cpu_first.get(role, 0.0) for role, s in cpu().items()}
            # A drain faster than one poll is below the stopwatch's resolution.
            return Drain(total, max(now - first, POLL_S), now - started, used)
        if reason := failed():
            raise BenchError(f"{what}: {reason}")
        if now - started > timeout_s:
            raise BenchTimeoutError(
                f"{what}: timed out after {timeout_s:.0f}s with {read}/{total} entries "
                f"read and {left} pending"
            )
        await asyncio.sleep(POLL_S)
