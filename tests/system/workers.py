"""Worker processes for system tests: real `python -m service worker` subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from service.settings import Settings
from tests.helpers import drained, wait_until

ROOT = Path(__file__).resolve().parents[2]


def worker_env(settings: Settings, consumer: str, **extra: str) -> dict[str, str]:
    """The environment a deployed worker would get: RUNSTEPS_* from these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTEPS_")}
    for name, value in settings.model_dump().items():
        env[f"RUNSTEPS_{name.upper()}"] = "" if value is None else str(value)  # "": unset
    env["RUNSTEPS_CONSUMER"] = consumer
    env.update(extra)
    return env


def start_worker(settings: Settings, consumer: str, **extra: str) -> subprocess.Popen[bytes]:
    """Start one worker process consuming `settings`' streams."""
    return subprocess.Popen(
        [sys.executable, "-m", "service", "worker"],
        cwd=ROOT,
        env=worker_env(settings, consumer, **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


async def wait_reading(redis: Redis, settings: Settings, *consumers: str) -> None:
    """Wait until every named worker has joined the group (its first XREADGROUP): past
    start-up, so it reads its share and a SIGTERM finds its handlers installed."""

    async def reading() -> bool:
        try:
            joined = await redis.xinfo_consumers(settings.source_stream, settings.group)
        except ResponseError:  # no stream or group yet
            return False
        return {c["name"].decode() for c in joined} >= set(consumers)

    await wait_until(reading, timeout_s=30, what=f"workers {consumers} to read the group")


async def wait_drained(redis: Redis, s: Settings, timeout_s: float = 120) -> None:
    """Wait until every entry of the source stream is read and acked (a connection that
    a Redis restart broke counts as not yet: the next poll reconnects)."""

    async def done() -> bool:
        try:
            return await drained(redis, s.source_stream, s.group)
        except (RedisConnectionError, ConnectionError, OSError):
            return False

    await wait_until(done, timeout_s, "the stream to drain")


@asynccontextmanager
async def two_workers(redis: Redis, settings: Settings) -> AsyncIterator[None]:
    """Worker processes w1 and w2 on `settings`' streams, both reading the group when the
    body runs; on leaving, both are stopped and must have exited 0."""
    procs = [start_worker(settings, "w1"), start_worker(settings, "w2")]
    try:
        # Until both have joined, one alone may drain everything; and a SIGTERM during a
        # worker's start-up would find its handlers not yet installed.
        await wait_reading(redis, settings, "w1", "w2")
        yield
    finally:
        errors = [stop_worker(p) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(errors)


def stop_worker(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> str:
    """SIGTERM a worker and wait for it; returns its stderr for diagnostics."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    return err
