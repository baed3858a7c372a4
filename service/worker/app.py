"""The only FastStream wiring: broker, batch subscriber, lifecycle hooks, ASGI routes.

Longer than a module should be (~400 lines) because it holds everything that touches
FastStream or the process's lifecycle: start-up (retries, signals, fail-fast on
configuration), the batch handler with its one commit in flight, shutdown's hand-back and
readiness. Moving any of it out would spread FastStream over several modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

from faststream import AckPolicy
from faststream.redis import RedisBroker, RedisClusterBroker, StreamSub
from faststream.redis.exceptions import StreamGroupNotFoundError
from faststream.redis.message import FAKE_CONSUMER, BatchStreamMessage, RedisBatchStreamMessage
from pydantic import PlainValidator
from redis.asyncio import Redis
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    ResponseError,
)

from contracts.stream_events import Inbound
from service.core.batch import Entry
from service.core.prices import Prices
from service.errors import INFRASTRUCTURE_ERRORS, ConfigError, StartupAbortedError
from service.settings import Settings
from service.storage.client import PartitionClient, connect
from service.storage.keys import Partition, partitions
from service.storage.pending import Pending
from service.storage.reads import find_run, find_step
from service.storage.replies import keep_duplicate_fields
from service.storage.store import Store
from service.worker.heal import Healer, Subscriber
from service.worker.pipeline import Pipeline
from service.worker.process import Processor
from service.worker.recovery import Recovery
from service.worker.telemetry import Telemetry

if TYPE_CHECKING:
    from contracts.queries import RunState, StepState

__all__ = ["Worker", "build_worker"]

log = logging.getLogger("runsteps.app")


def _not_group_lost(record: logging.LogRecord) -> bool:
    # FastStream logs a lost group as CRITICAL, "restart the application": the healer
    # restarts the subscriber instead and logs that itself (heal.py).
    return not (record.exc_info and isinstance(record.exc_info[1], StreamGroupNotFoundError))


log.addFilter(_not_group_lost)


async def _parse_batch(message: BatchStreamMessage) -> RedisBatchStreamMessage:
    # Skip FastStream's default batch parsing (it JSON-re-encodes every entry): the
    # processor reads the raw fields itself and acks inside its commit script.
    return RedisBatchStreamMessage(
        raw_message=message, body=b"", consumer=FAKE_CONSUMER, group=None
    )


async def _decode_batch(msg: RedisBatchStreamMessage) -> Any:
    raw = msg.raw_message
    return _Batch(list(zip(raw["message_ids"], raw["data"], strict=True)))


# The handler receives the raw batch unchanged; the annotation only tells AsyncAPI that each
# entry's `data` is an Inbound payload (a run step, envelope or delta).
_DocumentedBatch = Annotated[Any, PlainValidator(lambda v: v, json_schema_input_type=Inbound)]


class _Batch:
    """The decoded body: an object, not a dict, so FastStream passes it as one argument."""

    __slots__ = ("entries",)

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries


class Worker:
    """One worker process: the broker and subscriber, the store, the recovery loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.parts = partitions(settings)
        broker_class = RedisClusterBroker if settings.cluster else RedisBroker
        self.broker = broker_class(
            settings.redis_url,
            graceful_timeout=settings.shutdown_grace_s,
            logger=log,
            socket_connect_timeout=5,
        )
        self.redis: Redis | None = None
        self.telemetry = Telemetry(max_labels=settings.metrics_max_labels)
        # Read now, so a bad RUNSTEPS_PRICES_FILE stops start-up (exit 2) before any I/O.
        self.prices = Prices.load(settings)
        self.conns: list[PartitionClient] = []
        self.processors: list[Processor] = []
        self.recoveries: list[Recovery] = []
        self.subscribers: dict[int, Subscriber] = {}  # by index into parts: those read
        self.healer: Healer | None = None
        self._loop_tasks: list[asyncio.Task[None]] = []
        self.pipelines: dict[int, Pipeline] = {}  # by index into parts: those read
        self.started_at = time.monotonic()
        self.config_error: ConfigError | None = None
        self.aborted = False  # stopped by a signal before start-up completed
        self._stop = asyncio.Event()
        self._stopping = asyncio.Event()  # shutdown began: a refused commit is not retried

    async def step(self, run_id: str, step_id: str) -> StepState | None:
        """A step's tracked state, from the partition its run id maps to."""
        return await find_step(self.conns, run_id, step_id)

    async def run(self, run_id: str, cursor: str = "0", limit: int = 100) -> RunState | None:
        """A run's tracked state and a page of its steps, from its partition."""
        return await find_run(self.conns, run_id, cursor, limit)

    async def start(self) -> None:
        """Start everything in this process (tests, demo); `stop` undoes it."""
        await self.on_startup()
        await self.start_consuming()
        await self.after_startup()

    async def stop(self) -> None:
        """Stop consuming, let the current batch finish, hand back what is still pending."""
        await self.on_shutdown()
        await self.broker.stop()
        await self.after_shutdown()

    async def on_startup(self) -> None:
        """Connect, fail fast on configuration errors, create the group, finish own backlog."""
        with self._starting():
            await self._start_up()

    async def start_consuming(self) -> None:
        """Start every subscriber: FastStream's XGROUP CREATE, then its read loop.

        A start-up hook too, so that the app reports itself started only once the worker
        consumes: at maxmemory Redis may refuse the XGROUP CREATE although it let the group
        check through a moment earlier (memory dipped), and a failure after the app reported
        started would stop FastStream but leave the process up, consuming nothing. Redis
        refusing or away is retried until every subscriber runs; any other failure fails the
        start-up, which ends the process (exit 3).
        """
        with self._starting():
            await self._retrying(self._start_subscribers)

    async def _start_subscribers(self) -> None:
        # What BrokerUsecase.start does, except that a subscriber already running (started
        # before another one was refused) is not started a second time.
        await self.broker.connect()
        for subscriber in self.broker.subscribers:
            if not subscriber.running:
                await subscriber.start()
        for publisher in self.broker.publishers:
            await publisher.start()
        self.broker.running = True

    @contextlib.contextmanager
    def _starting(self) -> Iterator[None]:
        """A start-up hook's frame: SIGTERM ends its waits; what ended it is recorded."""
        try:
            with self._stop_on_signal():
                yield
        except ConfigError as exc:
            self.config_error = exc  # uvicorn turns a failed start-up into SystemExit(3)
            raise
        except StartupAbortedError:
            self.aborted = True
            raise

    @contextlib.contextmanager
    def _stop_on_signal(self) -> Iterator[None]:
        """While starting up, SIGTERM/SIGINT also end the wait for Redis.

        uvicorn only records a signal during the lifespan start-up; a worker waiting for an
        unreachable Redis would otherwise sit out the whole termination grace period.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def chained(sig: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self._stop.set)
            handler = previous[signal.Signals(sig)]
            if callable(handler):
                handler(sig, frame)

        for sig in previous:
            signal.signal(sig, chained)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def _start_up(self) -> None:
        s = self.settings
        self.redis = connect(s)
        # FastStream's subscriber reads with a client of its own: it must keep them too.
        keep_duplicate_fields(await self.broker.connect())
        self.conns = [PartitionClient(self.redis, s, part) for part in self.parts]
        try:
            for conn in self.conns:
                await self._connect(conn)
        except (AuthenticationError, AuthorizationError) as exc:
            raise ConfigError(
                f"Redis refused the credentials in RUNSTEPS_REDIS_URL: {exc}"
            ) from exc
        except NoPermissionError as exc:
            raise ConfigError(f"the Redis user lacks a permission the worker needs: {exc}") from exc
        except ResponseError as exc:
            if "NOPERM" in str(exc) or "WRONGPASS" in str(exc):
                raise ConfigError(f"Redis refused the worker: {exc}") from exc
            raise
        self.processors = [
            Processor(Store(conn), Pending(conn), s, self.telemetry, self.prices)
            for conn in self.conns
        ]
        owned = s.owned_partitions
        if s.own_partitions.strip():
            log.info(
                "pinned to partitions %s of %d: no other replica should read them",
                ",".join(map(str, owned)),
                s.partitions,
            )
        self.recoveries = [
            Recovery(processor)
            for processor in self.processors
            if processor.store.conn.part.index in owned
        ]
        for recovery in self.recoveries:
            # At maxmemory its commits are refused: retried (each pass starts from id 0).
            await self._retrying(recovery.finish_own)

    async def _connect(self, conn: PartitionClient) -> None:
        async def prepare() -> None:
            await conn.ensure_group()
            await conn.check_access()
            await conn.load_scripts()

        await self._retrying(prepare)

    async def _retrying(self, action: Callable[[], Awaitable[object]]) -> None:
        """Run `action` until Redis lets it through: unreachable, loading, at maxmemory,
        ... are retried with capped backoff; a stop request ends the wait."""
        backoff = 0.1
        while True:
            try:
                await action()
            except (AuthenticationError, AuthorizationError):
                raise  # ConnectionError subclasses in redis-py, but no retry can fix them
            except INFRASTRUCTURE_ERRORS as exc:
                log.warning(
                    "redis unavailable at start-up (%s: %s); retrying in %.1fs",
                    type(exc).__name__,
                    exc,
                    backoff,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff)
                if self._stop.is_set():
                    raise StartupAbortedError("stopped while waiting for Redis") from exc
                backoff = min(backoff * 2, 5.0)
            else:
                return

    async def after_startup(self) -> None:
        """Start the recovery loops (claims, delivery cap, stalls), one per partition read,
        and the healer that keeps the subscribers consuming."""
        self._loop_tasks = [
            asyncio.create_task(r.run(), name=f"runsteps-recovery-{r.store.conn.part.index}")
            for r in self.recoveries
        ]
        readers = [(self.conns[i], sub) for i, sub in self.subscribers.items()]
        self.healer = Healer(readers, self.settings, self.telemetry)
        self._loop_tasks.append(asyncio.create_task(self.healer.run(), name="runsteps-healer"))

    def alive(self) -> bool:
        """What /healthz reports: false once not consuming for RUNSTEPS_UNHEALTHY_AFTER_S."""
        return self.healer is None or self.healer.alive()

    async def on_shutdown(self) -> None:
        """Stop the recovery loops before the broker stops the subscribers."""
        self._stopping.set()
        for task in self._loop_tasks:
            task.cancel()
        if self._loop_tasks:
            # redis-py routes commands through asyncio.wait_for, which on Python 3.11 can
            # swallow a cancel that lands as a send completes: cancel again, never hang.
            for _ in range(10):
                _, alive = await asyncio.wait(self._loop_tasks, timeout=0.5)
                if not alive:
                    break
                for task in alive:
                    task.cancel()
        self._loop_tasks = []

    async def handle(self, index: int, entries: list[Entry]) -> None:
        """One fetched batch of partition `index`, into that partition's pipeline."""
        pipeline = self.pipelines.get(index)
        if pipeline is None:
            pipeline = self.pipelines[index] = Pipeline(self.processors[index], self._stopping)
        await pipeline.submit(entries)

    async def after_shutdown(self) -> None:
        """Let the last commits finish, hand back what is still pending, then disconnect."""
        for pipeline in self.pipelines.values():
            await pipeline.drain(self.settings.shutdown_grace_s)
        for processor in self.processors:
            conn = processor.store.conn
            await conn.aclose()
            with contextlib.suppress(Exception):  # Redis may be gone: the claim time covers it
                handed = await processor.pending.hand_back(self.settings.consumer)
                if handed:
                    log.info(
                        "handed back %d pending entries of %s", handed, conn.part.source_stream
                    )
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
        loop_alive = bool(self._loop_tasks) and not any(t.done() for t in self._loop_tasks)
        stale_after = max(30.0, self.settings.stall_scan_s * 3, self.settings.claim_idle_ms / 250)
        now = time.monotonic()
        loop_fresh = bool(self.recoveries) and all(
            now - r.last_pass < stale_after for r in self.recoveries
        )
        return {
            "redis": redis_ok,
            "consuming": consuming,
            "recovery_loop": loop_alive and loop_fresh,
        }


def _subscribe(worker: Worker, index: int, part: Partition) -> None:
    settings = worker.settings
    linger_s = settings.linger_ms / 1000

    subscriber = worker.broker.subscriber(
        stream=StreamSub(
            part.source_stream,
            group=settings.group,
            consumer=settings.consumer,
            batch=True,
            max_records=settings.batch_size,
            polling_interval=settings.block_ms,
        ),
        parser=_parse_batch,
        decoder=_decode_batch,
        ack_policy=AckPolicy.MANUAL,
        title=f"source{'' if part.count == 1 else f' {part.index}'}",
        description="Run-step events: each entry's field `data` holds one JSON object.",
    )
    worker.subscribers[index] = subscriber

    @subscriber
    async def handle(batch: _DocumentedBatch) -> None:
        entries = batch.entries
        await worker.handle(index, entries)
        if len(entries) < settings.batch_size and linger_s:
            # Let entries gather: every fetch and commit has a fixed cost that a batch of
            # one pays alone (bench/README.md measures what linger buys).
            await asyncio.sleep(linger_s)


def build_worker(settings: Settings) -> Worker:
    """Wire a worker for `settings`: one batch subscriber per partition it reads."""
    from contracts.derived import AnyDerived, DeadLetterEntry

    worker = Worker(settings)
    # FastStream's "Received"/"Processed" lines come per batch: DEBUG, not INFO. The same as
    # RedisBroker(log_level=DEBUG); not set_level(), which would lower our logger's level.
    worker.broker.config.logger.log_level = logging.DEBUG
    if settings.otel_enabled:
        try:
            from faststream.redis.opentelemetry import RedisTelemetryMiddleware
        except ImportError as exc:
            raise ConfigError(
                "RUNSTEPS_OTEL_ENABLED is set but OpenTelemetry is not installed: "
                "pip install 'runsteps[otel]'"
            ) from exc
        worker.broker.add_middleware(RedisTelemetryMiddleware())
    owned = settings.owned_partitions
    for index, part in enumerate(worker.parts):
        if part.index in owned:  # every partition has a store, for queries; only these a reader
            _subscribe(worker, index, part)
        # Documentation only (AsyncAPI): Lua scripts write these streams, not FastStream.
        suffix = "" if part.count == 1 else f" {part.index}"
        worker.broker.publisher(
            stream=part.derived_stream,
            title=f"derived{suffix}",
            description="Derived lifecycle events: each entry's field `data` holds one JSON "
            "object; `event_id` is deterministic, so consumers can deduplicate.",
            schema=AnyDerived,
        )
        worker.broker.publisher(
            stream=part.dlq_stream,
            title=f"dlq{suffix}",
            description="Dead letters: source entries that could not be processed, as they "
            "were, with the reason in `error`.",
            schema=DeadLetterEntry,
        )
    return worker
