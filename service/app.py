"""The only FastStream wiring: broker, the batch subscriber, startup and shutdown."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from faststream import AckPolicy, FastStream
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.message import FAKE_CONSUMER, BatchStreamMessage, RedisBatchStreamMessage
from redis.asyncio import Redis

from .process import Entry, Processor
from .settings import Settings
from .store import Store

__all__ = ["Worker", "build_worker"]

log = logging.getLogger("runsteps.app")


async def _parse_batch(message: BatchStreamMessage) -> RedisBatchStreamMessage:
    # Skip FastStream's default batch parsing (JSON re-encoding of every entry): the
    # processor reads the raw fields itself, and acks inside its commit script.
    return RedisBatchStreamMessage(
        raw_message=message, body=b"", consumer=FAKE_CONSUMER, group=None
    )


async def _decode_batch(msg: RedisBatchStreamMessage) -> Any:
    raw = msg.raw_message
    return _Batch(list(zip(raw["message_ids"], raw["data"], strict=True)))


@dataclass(frozen=True, slots=True)
class _Batch:
    """The decoded body: an object, not a dict, so FastStream passes it as one argument."""

    entries: list[Entry]


@dataclass
class Worker:
    """A built worker: the FastStream app and the pieces tests and the demo reach into."""

    settings: Settings
    broker: RedisBroker
    app: FastStream
    redis: Redis | None = None
    processor: Processor | None = None
    _extra: dict[str, Any] = field(default_factory=dict)

    async def start(self) -> None:
        """Connect, create the consumer group, start consuming (for in-process use)."""
        await self._startup()
        await self.broker.start()

    async def stop(self) -> None:
        """Stop consuming and close connections."""
        await self.broker.stop()
        await self._shutdown()

    async def _startup(self) -> None:
        self.redis = Redis.from_url(self.settings.redis_url)
        store = Store(self.redis, self.settings)
        await store.ensure_group()
        self.processor = Processor(store, self.settings)

    async def _shutdown(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None


def build_worker(settings: Settings) -> Worker:
    """Wire a worker for `settings`: one batch subscriber on the source stream."""
    broker = RedisBroker(settings.redis_url, logger=log)
    app = FastStream(broker, logger=log)
    worker = Worker(settings=settings, broker=broker, app=app)

    @broker.subscriber(
        stream=StreamSub(
            settings.source_stream,
            group=settings.group,
            consumer=settings.consumer,
            batch=True,
            max_records=settings.batch_size,
            polling_interval=settings.block_ms,
        ),
        parser=_parse_batch,
        decoder=_decode_batch,
        ack_policy=AckPolicy.MANUAL,
    )
    async def handle(batch: Any) -> None:
        assert worker.processor is not None
        await worker.processor.process(batch.entries)

    app.on_startup(worker._startup)
    app.on_shutdown(worker._shutdown)
    return worker
