"""The consumers runsteps is compared with: a bare redis-py loop and plain FastStream.

Each validates every entry exactly as the worker's decoder does (`INBOUND.validate_json`),
so the differences are the framework and the state tracking, not the parsing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from faststream import AckPolicy
from faststream.redis import RedisBroker, RedisStreamMessage, StreamSub
from pydantic import ValidationError

from contracts.stream_events import INBOUND

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from service.worker.process import Processor

__all__ = ["consume_baseline", "faststream_processor", "faststream_validator"]

BATCH = 500

_Reply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]

# Per-message INFO access logs are off: they would flood the benchmark's output, and with
# them on, the naive subscriber would only be slower.
_quiet = logging.getLogger("bench.faststream")
_quiet.setLevel(logging.WARNING)


def _validate(data: bytes) -> None:
    try:  # noqa: SIM105  # cheaper than contextlib.suppress in a per-entry loop
        INBOUND.validate_json(data)
    except ValidationError:
        pass  # a bad entry is still consumed and acked, as the worker dead-letters it


async def consume_baseline(
    redis: Redis, stream: str, group: str, consumer: str, stop: asyncio.Event
) -> None:
    """B, the ceiling of just consuming: XREADGROUP 500, validate each, one XACK; until stop."""
    while not stop.is_set():
        reply = await redis.xreadgroup(group, consumer, {stream: ">"}, count=BATCH, block=100)
        for _, entries in cast("_Reply", reply or []):
            for _, fields in entries:
                _validate(fields.get(b"data", b""))
            await redis.xack(stream, group, *(entry_id for entry_id, _ in entries))


def faststream_validator(
    url: str, stream: str, group: str, consumer: str, min_idle_time: int | None = None
) -> RedisBroker:
    """C, what most users write first: a per-message subscriber with the default ack policy.

    With `min_idle_time` it is FastStream's XAUTOCLAIM subscriber instead (recovery).
    """
    broker = RedisBroker(url, logger=_quiet)

    @broker.subscriber(
        stream=StreamSub(stream, group=group, consumer=consumer, min_idle_time=min_idle_time)
    )
    async def handle(msg: RedisStreamMessage) -> None:
        _validate(msg.raw_message["data"].get(b"data", b""))

    return broker


def faststream_processor(
    url: str, stream: str, group: str, consumer: str, *, processor: Processor, min_idle_time: int
) -> RedisBroker:
    """FastStream's XAUTOCLAIM subscriber feeding runsteps' Processor one entry at a time.

    The Processor acks inside its commit script, so FastStream's own ack is off.
    """
    broker = RedisBroker(url, logger=_quiet)

    @broker.subscriber(
        stream=StreamSub(stream, group=group, consumer=consumer, min_idle_time=min_idle_time),
        ack_policy=AckPolicy.MANUAL,
    )
    async def handle(msg: RedisStreamMessage) -> None:
        raw = msg.raw_message
        await processor.process([(raw["message_ids"][0], raw["data"])])

    return broker
