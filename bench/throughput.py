"""Drain throughput: runsteps (1 and 2 processes) against a bare loop and naive FastStream.

Each scenario gets a fresh redis-server, pre-filled before any consumer starts; the clock
for the rate runs from the first delivery to the last ack (see `watch_drain`).
"""

from __future__ import annotations

import asyncio
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from service.core.layout import STEP_PREFIX
from service.storage.keys import partitions

from .consumers import consume_baseline, faststream_validator
from .cpucap import CpuCap, unavailable
from .infra import CpuProbe, Drain, cpu_seconds, finish, fresh_redis, used_memory, watch_drain
from .workers import ROOT, WorkerProcess, bench_settings
from .workload import prefill, route

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from service.dev.redis_server import LocalRedis
    from service.settings import Settings

    from .workload import Workload

__all__ = ["Capped", "Memory", "Throughput", "WorkerRun", "capped", "run", "startup"]

NAIVE_MAX = 20_000
"""The naive subscriber drains only this prefix: it is slow enough to dominate a full run."""

CAP_CORES = 0.5
"""CPUs per worker in the capped pair: two workers and Redis then fit this 2-core machine,
so D over A shows what a second worker adds when cores are not what runs out."""


def _drain_timeout(events: int, floor_rate: float) -> float:
    return 60.0 + events / floor_rate


def _cpu(server: LocalRedis, consumers: Callable[[], list[int]]) -> CpuProbe:
    """CPU seconds of the consumer processes and of redis-server."""

    def read() -> dict[str, float]:
        assert server.proc is not None
        return {
            "consumer": sum(cpu_seconds(pid) for pid in consumers()),
            "redis": cpu_seconds(server.proc.pid),
        }

    return read


def _this_process() -> list[int]:
    return [os.getpid()]


@dataclass(frozen=True, slots=True)
class Memory:
    """Redis memory of runsteps' tracked state, streams excluded."""

    steps: int  # step fields ('@<step id>') in the run hashes found by SCAN
    runs: int  # run hashes found by SCAN
    state_bytes: int  # used_memory after (streams deleted) minus before (empty server)
    step_state: int  # bytes of one completed step's field and state string
    run_hash: int  # MEMORY USAGE of one run's hash (its steps' states, ids, totals)
    run_encoding: str  # OBJECT ENCODING of that hash: listpack is the compact one
    source_per_entry: float  # MEMORY USAGE of the source stream per entry
    derived_per_entry: float  # MEMORY USAGE of the derived stream per entry

    @property
    def per_step(self) -> float:
        """Bytes of state per tracked step (runs, sets and the stall index shared out)."""
        return self.state_bytes / self.steps


@dataclass(frozen=True, slots=True)
class WorkerRun:
    """A runsteps drain: time, the workers' peak RSS, and the state's Redis memory."""

    drain: Drain
    processes: int
    peak_rss_mib: float  # the largest VmHWM among the processes
    memory: Memory | None
    started: float  # share of the workload's steps that got a run_step.started event


@dataclass(frozen=True, slots=True)
class Capped:
    """A and D again with each worker capped at `cores` CPUs, as pods with a CPU limit.

    In rounds, A' then D' in each: a capped drain's rate moves with what else the shared
    machine runs (A' ranged 15.8k-21.2k ev/s in runs minutes apart), so one pair's ratio is
    noise; the median of the rounds' ratios is the claim. `pinned`: the pair on two
    partitions, A'' one worker reading both, D'' each worker pinned to one.
    """

    cores: float
    rounds: tuple[tuple[WorkerRun, WorkerRun], ...]  # (A', D') per round, in order
    pinned: bool = False

    @property
    def ratios(self) -> list[float]:
        """D'/A' of each round."""
        return [d.drain.rate / a.drain.rate for a, d in self.rounds]

    @property
    def median(self) -> float:
        """The median of the rounds' D'/A'."""
        return statistics.median(self.ratios)


@dataclass(frozen=True, slots=True)
class Throughput:
    """A to D side by side, plus the worker's start-up time and the capped pair."""

    startup_s: float
    a: WorkerRun
    b: Drain
    c: Drain
    d: WorkerRun
    capped: Capped | str  # or why it could not run here
    pinned: Capped | str  # the capped pair on two partitions, D'' pinned; or why not


_STARTED = b'{"type":"run_step.started"'
StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]


async def _started(redis: Redis, stream: str) -> int:
    """run_step.started events in a derived stream (each one's JSON starts with its type)."""
    n, after = 0, "-"
    while rows := cast("StreamEntries", await redis.xrange(stream, min=after, count=10_000)):
        n += sum(1 for _, fields in rows if fields[b"data"].startswith(_STARTED))
        after = "(" + rows[-1][0].decode()
    return n


async def _usage(redis: Redis, key: str) -> int:
    return int(await redis.memory_usage(key, samples=0) or 0)


async def _steps(redis: Redis, pattern: str) -> tuple[int, int]:
    """(tracked steps, run hashes) among the keys matching `pattern`."""
    runs = [key async for key in redis.scan_iter(match=pattern, count=5000)]
    steps = 0
    for at in range(0, len(runs), 500):
        pipe = redis.pipeline(transaction=False)
        for key in runs[at : at + 500]:
            pipe.hkeys(key)
        for fields in await pipe.execute():
            steps += sum(1 for f in fields if f.startswith(STEP_PREFIX.encode()))
    return steps, len(runs)


async def _memory(redis: Redis, s: Settings, workload: Workload, before: int) -> Memory:
    """Stream sizes, then delete the streams and read what the state alone takes."""
    part = partitions(s)[0]
    keys = part.keys
    streams = (part.source_stream, part.derived_stream, part.dlq_stream)
    source = await _usage(redis, part.source_stream) / len(workload)
    derived_n = max(1, await redis.xlen(part.derived_stream))
    derived = await _usage(redis, part.derived_stream) / derived_n
    await redis.delete(*streams)
    after = await used_memory(redis)
    steps, runs = await _steps(redis, keys.run("*"))
    completed = STEP_PREFIX + workload.completed_step
    state = await redis.hget(keys.run(workload.run_id), completed) or b""
    return Memory(
        steps=steps,
        runs=runs,
        state_bytes=after - before,
        step_state=len(completed) + len(state),
        run_hash=await _usage(redis, keys.run(workload.run_id)),
        run_encoding=(await redis.object("encoding", keys.run(workload.run_id))).decode(),
        source_per_entry=source,
        derived_per_entry=derived,
    )


async def run_workers(
    workload: Workload,
    processes: int,
    tag: str,
    *,
    memory: bool = False,
    cap: float | None = None,
    root: Path = ROOT,
    parts: int = 1,
    pinned: bool = False,
) -> WorkerRun:
    """Pre-fill, start `processes` workers, time the drain; optionally measure memory.

    `cap`: each worker is limited to this many CPUs, in a cgroup of its own (see cpucap).
    `root`: the source tree the workers run from (see bench.compare).
    `parts`: partitions, the entries routed over them by run id as producers do; `pinned`:
    worker i alone reads partition i (RUNSTEPS_OWN_PARTITIONS), else every worker all.
    """
    async with fresh_redis() as (server, redis):
        url = server.url
        s = bench_settings(url, tag, partitions=parts)
        before = await used_memory(redis)
        layout = partitions(s)
        for part, payloads in zip(layout, route(workload.payloads, parts), strict=True):
            await prefill(redis, part.source_stream, s.group, payloads)
        workers: list[WorkerProcess] = []
        caps = None if cap is None else CpuCap(cap)
        try:
            for i in range(processes):
                own = s.model_copy(update={"own_partitions": str(i)}) if pinned else s
                workers.append(WorkerProcess(own, f"bench-{tag}{i}", root))
                if caps is not None:  # capped while it imports: before its first fetch
                    caps.add(workers[-1].pid)
            drain = await watch_drain(
                redis,
                tuple(part.source_stream for part in layout),
                s.group,
                total=len(workload),
                timeout_s=_drain_timeout(len(workload), 500),
                what=f"runsteps x{processes}",
                failed=lambda: next((f for w in workers if (f := w.failure())), None),
                cpu=_cpu(server, lambda: [w.pid for w in workers]),
            )
            rss = max(w.peak_rss_mib() for w in workers)
        finally:
            for w in workers:
                w.stop()
            if caps is not None:
                caps.close()
        started = sum([await _started(redis, part.derived_stream) for part in layout])
        mem = await _memory(redis, s, workload, before) if memory and parts == 1 else None
        return WorkerRun(drain, processes, rss, mem, started / workload.steps)


async def startup(workload: Workload) -> float:
    """Seconds from `python -m service worker` to its first entry acked (empty stream)."""
    async with fresh_redis() as (server, redis):
        url = server.url
        s = bench_settings(url, "startup")
        await prefill(redis, s.source_stream, s.group, workload.payloads[:1])
        worker = WorkerProcess(s, "bench-startup")
        try:
            drain = await watch_drain(
                redis,
                s.source_stream,
                s.group,
                total=1,
                timeout_s=60,
                what="runsteps start-up",
                failed=worker.failure,
            )
        finally:
            worker.stop()
        return drain.wall_s


async def baseline(payloads: list[bytes]) -> Drain:
    """B: the bare redis-py loop, in this process."""
    async with fresh_redis() as (server, redis):
        url = server.url
        s = bench_settings(url, "b")
        await prefill(redis, s.source_stream, s.group, payloads)
        client = type(redis).from_url(url)
        stop = asyncio.Event()
        task = asyncio.create_task(
            consume_baseline(client, s.source_stream, s.group, "bench-b", stop), name="baseline"
        )
        try:
            return await watch_drain(
                redis,
                s.source_stream,
                s.group,
                total=len(payloads),
                timeout_s=_drain_timeout(len(payloads), 2000),
                what="baseline loop",
                failed=lambda: repr(task.exception()) if task.done() else None,
                cpu=_cpu(server, _this_process),
            )
        finally:
            await finish(task, stop)
            await client.aclose()


async def naive(payloads: list[bytes]) -> Drain:
    """C: a per-message FastStream subscriber, in this process."""
    async with fresh_redis() as (server, redis):
        url = server.url
        s = bench_settings(url, "c")
        # The group exists before FastStream starts: it would create it at `$` (new only).
        await prefill(redis, s.source_stream, s.group, payloads)
        broker = faststream_validator(url, s.source_stream, s.group, "bench-c")
        try:
            await broker.start()
            return await watch_drain(
                redis,
                s.source_stream,
                s.group,
                total=len(payloads),
                timeout_s=_drain_timeout(len(payloads), 200),
                what="naive FastStream subscriber",
                cpu=_cpu(server, _this_process),
            )
        finally:
            await broker.stop()


CAP_ROUNDS = 3
"""Rounds of the capped pair (A' then D'), each on fresh servers."""


async def capped(
    workload: Workload, rounds: int, say: Callable[[str], None] = print, *, pinned: bool = False
) -> Capped | str:
    """The capped pair in `rounds` rounds, or why it cannot run here. `pinned`: on two
    partitions, A'' one worker reading both, D'' each worker pinned to one."""
    what = "A'' and D'' (pinned)" if pinned else "A' and D'"
    reason = unavailable()
    if reason is not None:
        say(f"throughput: capped {what} left out: {reason}")
        return reason
    parts = 2 if pinned else 1
    pairs = []
    for n in range(1, rounds + 1):
        say(f"throughput: {what}, each worker capped at {CAP_CORES} CPU, round {n} ...")
        tag = "pin" if pinned else "cap"
        a = await run_workers(workload, 1, f"a_{tag}{n}", cap=CAP_CORES, parts=parts)
        d = await run_workers(workload, 2, f"d_{tag}{n}", cap=CAP_CORES, parts=parts, pinned=pinned)
        pairs.append((a, d))
    return Capped(CAP_CORES, tuple(pairs), pinned)


async def run(
    workload: Workload, say: Callable[[str], None] = print, cap_rounds: int = CAP_ROUNDS
) -> Throughput:
    """Start-up, then A, B, C and D, one after the other, each on its own server; then the
    capped pair in `cap_rounds` rounds."""
    say("throughput: worker start-up on an empty stream ...")
    startup_s = await startup(workload)
    say(f"throughput: A, runsteps, 1 process, {len(workload)} entries ...")
    a = await run_workers(workload, 1, "a", memory=True)
    say(f"throughput: B, bare redis-py loop, {len(workload)} entries ...")
    b = await baseline(workload.payloads)
    c_payloads = workload.payloads[:NAIVE_MAX]
    say(f"throughput: C, naive FastStream subscriber, first {len(c_payloads)} entries ...")
    c = await naive(c_payloads)
    say(f"throughput: D, runsteps, 2 processes, {len(workload)} entries ...")
    d = await run_workers(workload, 2, "d")
    pair = await capped(workload, cap_rounds, say)
    pinned = await capped(workload, cap_rounds, say, pinned=True)
    return Throughput(startup_s=startup_s, a=a, b=b, c=c, d=d, capped=pair, pinned=pinned)
