"""Worker processes for system tests: real `python -m service worker` subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from service.settings import Settings
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]


def worker_env(settings: Settings, consumer: str, **extra: str) -> dict[str, str]:
    """The environment a deployed worker would get: RUNSTEPS_* from these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTEPS_")}
    for name, value in settings.model_dump().items():
        env[f"RUNSTEPS_{name.upper()}"] = str(value)
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
