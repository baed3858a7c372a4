"""End-to-end latency at a fixed offered rate: XADD of an event -> its derived event seen.

One worker runs; this process paces a producer (a pipelined batch per millisecond tick)
and reads the derived stream with XREAD BLOCK. Only in_progress and completed events are
sent, so each one yields exactly one run_step.* event to time (run.usage is not timed).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from redis.asyncio import Redis

from service.dev.sample import step

from .infra import BenchTimeoutError, cpu_seconds, finish, fresh_redis, watch_drain
from .workers import WorkerProcess, bench_settings
from .workload import SENT_PLACEHOLDER, paced_events, prefill

if TYPE_CHECKING:
    from .workload import PacedEvent

__all__ = ["Latency", "run"]

TIMED = {"run_step.started", "run_step.completed"}
Key = tuple[str, str]  # (step id, status): what a derived event answers
_Reply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency percentiles at one offered rate."""

    offered_rate: float  # events/s asked for
    achieved_rate: float  # events/s the producer actually sent
    events: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    worker_busy: float  # worker CPU seconds per second while sending and collecting
    redis_busy: float  # the same for redis-server


def _percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def _produce(
    redis: Redis, stream: str, events: list[PacedEvent], rate: float, sent: dict[Key, int]
) -> float:
    """Send `events` at `rate`, a batch per tick; records each send time; returns seconds."""
    placeholder = SENT_PLACEHOLDER.encode()
    started = time.perf_counter()
    done = 0
    while done < len(events):
        due = min(len(events), int((time.perf_counter() - started) * rate) + 1)
        if due > done:
            now_ns = time.time_ns()
            stamp = f"{now_ns:019d}".encode()
            pipe = redis.pipeline(transaction=False)
            for e in events[done:due]:
                pipe.xadd(stream, {"data": e.template.replace(placeholder, stamp, 1)})
                sent[(e.step_id, e.status)] = now_ns
            await pipe.execute()
            done = due
        await asyncio.sleep(0.001)
    return time.perf_counter() - started


async def _read(
    redis: Redis, stream: str, seen: dict[Key, int], cursor: bytes, stop: asyncio.Event
) -> None:
    """Record when each run_step.* event becomes visible on the derived stream; until stop."""
    while not stop.is_set():
        reply = await redis.xread({stream: cursor}, count=1000, block=200)
        now_ns = time.time_ns()
        for _, entries in cast("_Reply", reply or []):
            for entry_id, fields in entries:
                cursor = entry_id
                event = json.loads(fields[b"data"])
                if event["type"] in TIMED:
                    seen.setdefault((event["step_id"], event["to_status"]), now_ns)


async def _collect(
    seen: dict[Key, int],
    sent: dict[Key, int],
    timeout_s: float,
    failed: Callable[[], str | None],
) -> None:
    deadline = time.perf_counter() + timeout_s
    while not sent.keys() <= seen.keys():
        if reason := failed():
            raise BenchTimeoutError(f"latency: {reason}")
        if time.perf_counter() > deadline:
            missing = len(sent.keys() - seen.keys())
            raise BenchTimeoutError(
                f"latency: {missing} of {len(sent)} derived events not seen "
                f"{timeout_s:.0f}s after the last send"
            )
        await asyncio.sleep(0.05)


async def measure(rate: float, duration_s: float, say: Callable[[str], None]) -> Latency:
    """Offer `rate` events/s for `duration_s` to one running worker; time each event."""
    events = paced_events(int(rate * duration_s))
    say(f"latency: {len(events)} events at {rate:.0f}/s to one worker ...")
    async with fresh_redis() as (server, redis):
        assert server.proc is not None
        s = bench_settings(server.url, "lat")
        warmup = json.dumps(step("step_warmup", "in_progress")).encode()
        await prefill(redis, s.source_stream, s.group, [warmup])
        reader = Redis.from_url(server.url)
        worker = WorkerProcess(s, "bench-lat")
        stop = asyncio.Event()
        task: asyncio.Task[None] | None = None
        try:
            # Start timing only once the worker has processed its first entry.
            await watch_drain(
                redis,
                s.source_stream,
                s.group,
                total=1,
                timeout_s=60,
                what="latency worker start-up",
                failed=worker.failure,
            )
            sent: dict[Key, int] = {}
            seen: dict[Key, int] = {}
            task = asyncio.create_task(
                _read(reader, s.derived_stream, seen, b"0", stop), name="derived reader"
            )
            pids = (worker.pid, server.proc.pid)
            cpu_before = [cpu_seconds(pid) for pid in pids]
            started = time.perf_counter()
            elapsed = await _produce(redis, s.source_stream, events, rate, sent)
            await _collect(seen, sent, 30.0, worker.failure)
            span = time.perf_counter() - started
            busy = [(cpu_seconds(pid) - b) / span for pid, b in zip(pids, cpu_before, strict=True)]
        finally:
            try:
                if task is not None:
                    await finish(task, stop)
            finally:
                worker.stop()
                await reader.aclose()
    ms = sorted((seen[k] - sent[k]) / 1e6 for k in sent)
    return Latency(
        offered_rate=rate,
        achieved_rate=len(events) / elapsed,
        events=len(events),
        p50_ms=_percentile(ms, 50),
        p90_ms=_percentile(ms, 90),
        p99_ms=_percentile(ms, 99),
        max_ms=ms[-1],
        worker_busy=busy[0],
        redis_busy=busy[1],
    )


async def run(
    rates: tuple[float, ...], duration_s: float, say: Callable[[str], None] = print
) -> list[Latency]:
    """`measure` at each rate, each with its own server and worker."""
    return [await measure(rate, duration_s, say) for rate in rates]
