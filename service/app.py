"""The only FastStream wiring: broker, batch subscriber, lifecycle hooks, ASGI routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from faststream import AckPolicy
from faststream.asgi import AsgiFastStream
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.message import FAKE_CONSUMER, BatchStreamMessage, RedisBatchStreamMessage
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from .errors import ConfigError
from .process import INFRASTRUCTURE_ERRORS, Entry, Processor
from .recovery import Recovery
from .settings import Settings
from .store import Store

__all__ = ["Worker", "build_worker"]

log = logging.getLogger("runsteps.app")


async def _parse_batch(message: BatchStreamMessage) -> RedisBatchStreamMessage:
    # Skip FastStream's default batch parsing (it JSON-re-encodes every entry): the
    # processor reads the raw fields itself and acks inside its commit script.
    return RedisBatchStreamMessage(
        raw_message=message, body=b"", consumer=FAKE_CONSUMER, group=None
    )


async def _decode_batch(msg: RedisBatchStreamMessage) -> Any:
    raw = msg.raw_message
    return _Batch(list(zip(raw["message_ids"], raw["data"], strict=True)))


class _Batch:
    """The decoded body: an object, not a dict, so FastStream passes it as one argument."""

    __slots__ = ("entries",)

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries


class Worker:
    """One worker process: the broker and subscriber, the store, the recovery loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = RedisBroker(
            settings.redis_url,
            graceful_timeout=settings.shutdown_grace_s,
            logger=log,
            socket_connect_timeout=5,
        )
        self.redis: Redis | None = None
        self.store: Store | None = None
        self.processor: Processor | None = None
        self.recovery: Recovery | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self.started_at = time.monotonic()

    async def start(self) -> None:
        """Start everything in this process (tests, demo); `stop` undoes it."""
        await self.on_startup()
        await self.broker.start()
        await self.after_startup()

    async def stop(self) -> None:
        """Stop consuming, let the current batch finish, hand back what is still pending."""
        await self.on_shutdown()
        await self.broker.stop()
        await self.after_shutdown()

    async def on_startup(self) -> None:
        """Connect, fail fast on configuration errors, create the group, finish own backlog."""
        s = self.settings
        self.redis = Redis.from_url(s.redis_url, socket_connect_timeout=5)
        self.store = Store(self.redis, s)
        try:
            await self._connect(self.store)
        except AuthenticationError as exc:
            raise ConfigError(
                f"Redis refused the credentials in RUNSTEPS_REDIS_URL: {exc}"
            ) from exc
        except NoPermissionError as exc:
            raise ConfigError(f"the Redis user lacks a permission the worker needs: {exc}") from exc
        except ResponseError as exc:
            if "NOPERM" in str(exc) or "WRONGPASS" in str(exc):
                raise ConfigError(f"Redis refused the worker: {exc}") from exc
            raise
        self.processor = Processor(self.store, s)
        self.recovery = Recovery(self.store, self.processor, s)
        await self.recovery.finish_own()

    @staticmethod
    async def _connect(store: Store) -> None:
        backoff = 0.1
        while True:
            try:
                await store.ensure_group()
                await store.check_access()
            except INFRASTRUCTURE_ERRORS as exc:
                log.warning("redis unavailable at start-up (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                return

    async def after_startup(self) -> None:
        """Start the recovery loop (claims, delivery cap, stalled steps)."""
        assert self.recovery is not None
        self._loop_task = asyncio.create_task(self.recovery.run(), name="runsteps-recovery")

    async def on_shutdown(self) -> None:
        """Stop the recovery loop before the broker stops the subscriber."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None

    async def after_shutdown(self) -> None:
        """Hand back anything still pending to the other consumers, then disconnect."""
        if self.store is not None:
            with contextlib.suppress(Exception):  # Redis may be gone: the claim time covers it
                handed = await self.store.hand_back(self.settings.consumer)
                if handed:
                    log.info("handed back %d pending entries", handed)
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None

    async def readiness(self) -> dict[str, bool]:
        """What /readyz reports: Redis answers, the subscriber and the recovery loop run."""
        redis_ok = False
        if self.redis is not None:
            with contextlib.suppress(Exception):
                redis_ok = bool(await asyncio.wait_for(self.redis.ping(), timeout=1.0))
        subscribers = list(self.broker.subscribers)
        consuming = bool(subscribers) and all(sub.running for sub in subscribers)
        loop_alive = self._loop_task is not None and not self._loop_task.done()
        stale_after = max(30.0, self.settings.stall_scan_s * 3, self.settings.claim_idle_ms / 250)
        loop_fresh = (
            self.recovery is not None and time.monotonic() - self.recovery.last_pass < stale_after
        )
        return {
            "redis": redis_ok,
            "consuming": consuming,
            "recovery_loop": loop_alive and loop_fresh,
        }


def build_worker(settings: Settings) -> Worker:
    """Wire a worker for `settings`: one batch subscriber on the source stream."""
    worker = Worker(settings)

    @worker.broker.subscriber(
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

    return worker


def build_app(worker: Worker) -> AsgiFastStream:
    """The deployable ASGI app: the worker plus its HTTP routes on one port."""
    from .http import routes

    return AsgiFastStream(
        worker.broker,
        asgi_routes=routes(worker),
        asyncapi_path="/docs/asyncapi",
        logger=log,
        on_startup=[worker.on_startup],
        after_startup=[worker.after_startup],
        on_shutdown=[worker.on_shutdown],
        after_shutdown=[worker.after_shutdown],
    )
