"""Recovering a dead consumer's backlog: runsteps' claim loop against FastStream's.

A consumer "dead" fetches every entry and never acks. Once the entries are idle longer
than the claim time, the clock starts and runs until XPENDING says 0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from service.storage.client import PartitionClient
from service.storage.pending import Pending
from service.storage.store import Store
from service.worker.process import Processor
from service.worker.recovery import Recovery
from service.worker.telemetry import Telemetry

from .consumers import faststream_processor, faststream_validator
from .infra import BenchTimeoutError, fresh_redis, pending, wait_until
from .workers import bench_settings
from .workload import prefill

if TYPE_CHECKING:
    from faststream.redis import RedisBroker

    from service.settings import Settings

    from .workload import Workload

__all__ = ["RecoveryResult", "run"]

CLAIM_IDLE_MS = 100
TIMEOUT_S = 180.0


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    """Seconds to bring a dead consumer's backlog to zero pending, three ways."""

    backlog: int
    runsteps_s: float  # Recovery.claim_once loop, full processing (state, derived, DLQ)
    faststream_s: float  # min_idle_time subscriber, validate + default ack
    faststream_processor_s: float  # min_idle_time subscriber feeding runsteps' Processor


async def _abandon(redis: Redis, s: Settings, payloads: list[bytes]) -> None:
    """Pre-fill, let consumer `dead` fetch everything, and wait out the claim time."""
    await prefill(redis, s.source_stream, s.group, payloads)
    while await redis.xreadgroup(s.group, "dead", {s.source_stream: ">"}, count=1000):
        pass
    left = await pending(redis, s.source_stream, s.group)
    if left != len(payloads):
        raise BenchTimeoutError(f"recovery: expected {len(payloads)} pending, found {left}")
    # Entries become claimable only after the idle time: a wait that is the scenario itself.
    await asyncio.sleep(CLAIM_IDLE_MS / 1000 + 0.05)


async def _runtime(url: str, s: Settings) -> tuple[Redis, Processor, Recovery]:
    """Store, Processor and Recovery wired as Worker.on_startup wires them."""
    client = Redis.from_url(url, socket_connect_timeout=5)
    conn = PartitionClient(client, s)
    await conn.load_scripts()
    processor = Processor(Store(conn), Pending(conn), s, Telemetry())
    return client, processor, Recovery(processor)


async def _claim_loop(payloads: list[bytes]) -> float:
    async with fresh_redis() as (server, redis):
        url = server.url
        s = bench_settings(url, "rec", consumer="rescuer", claim_idle_ms=CLAIM_IDLE_MS)
        await _abandon(redis, s, payloads)
        client, _, recovery = await _runtime(url, s)
        try:
            started = time.perf_counter()
            while await pending(redis, s.source_stream, s.group):
                if time.perf_counter() - started > TIMEOUT_S:
                    raise BenchTimeoutError(f"recovery: claim loop not done in {TIMEOUT_S:.0f}s")
                await recovery.claim_once()
            return time.perf_counter() - started
        finally:
            await client.aclose()


async def _subscriber(payloads: list[bytes], *, process: bool) -> float:
    async with fresh_redis() as (server, redis):
        url = server.url
        s = bench_settings(url, "rec", consumer="rescuer", claim_idle_ms=CLAIM_IDLE_MS)
        await _abandon(redis, s, payloads)
        client, processor, _ = await _runtime(url, s)
        broker: RedisBroker
        if process:
            broker = faststream_processor(
                url,
                s.source_stream,
                s.group,
                "rescuer",
                processor=processor,
                min_idle_time=CLAIM_IDLE_MS,
            )
        else:
            broker = faststream_validator(
                url, s.source_stream, s.group, "rescuer", min_idle_time=CLAIM_IDLE_MS
            )
        try:
            started = time.perf_counter()
            await broker.start()

            async def drained() -> bool:
                return await pending(redis, s.source_stream, s.group) == 0

            await wait_until(drained, TIMEOUT_S, "FastStream min_idle_time to clear the backlog")
            return time.perf_counter() - started
        finally:
            await broker.stop()
            await client.aclose()


async def run(workload: Workload, say: Callable[[str], None] = print) -> RecoveryResult:
    """The three ways, one after the other, each on its own server."""
    payloads = workload.payloads
    say(f"recovery: runsteps claim loop, {len(payloads)} abandoned entries ...")
    ours = await _claim_loop(payloads)
    say("recovery: FastStream min_idle_time subscriber, validate + ack ...")
    plain = await _subscriber(payloads, process=False)
    say("recovery: FastStream min_idle_time subscriber driving the Processor ...")
    processed = await _subscriber(payloads, process=True)
    return RecoveryResult(len(payloads), ours, plain, processed)
