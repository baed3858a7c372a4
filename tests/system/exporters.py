"""`runsteps export-otel` processes for system tests, and what they must export."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from contracts.derived import DERIVED
from service.dev.redis_server import free_port
from service.export.mapping import spans_of
from service.settings import Settings
from tests.helpers import drained, wait_until
from tests.system.workers import ROOT, stop_worker, worker_env


def start_exporter(
    settings: Settings, consumer: str, endpoint: str, port: int, **extra: str
) -> subprocess.Popen[bytes]:
    """Start one exporter process of `settings`' derived streams, sending to `endpoint`."""
    env = worker_env(settings, consumer, RUNSTEPS_HTTP_PORT=str(port), **extra)
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = endpoint
    return subprocess.Popen(
        [sys.executable, "-m", "service", "export-otel"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


async def acked_by(redis: Redis, stream: str, group: str) -> int:
    """How many entries of `stream` the group has read and acked (0 before it exists)."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:
        return 0
    for g in groups:
        if g["name"].decode() == group:
            return int(g.get("entries-read") or 0) - int(g["pending"])
    return 0


def expected_spans(events: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(trace id, span id) in hex -> (name, parent) of every span the derived events make."""
    out = {}
    for event in events:
        for span in spans_of(DERIVED.validate_python(event), "openai"):
            key = (f"{span.trace_id:032x}", f"{span.span_id:016x}")
            parent = "" if span.parent_id is None else f"{span.parent_id:016x}"
            out[key] = {"name": span.name, "parent": parent, "event": event}
    return out


async def export_killed_midway(
    redis: Redis,
    settings: Settings,
    endpoint: str,
    check: Callable[[str], Awaitable[None]] | None = None,
    **extra: str,
) -> int:
    """Export `settings`' derived stream to `endpoint` in batches of 5 with an exporter
    process SIGKILLed once 20 entries are acked, then another under the same consumer name
    until every entry is acked; `check(base URL)` runs while it still serves, then SIGTERM
    must end it with exit code 0. Returns how many entries were acked at the kill."""
    small = settings.model_copy(update={"batch_size": 5})
    port = free_port()
    first = start_exporter(small, "x1", endpoint, port, **extra)
    try:

        async def some_acked() -> bool:
            assert first.poll() is None, stop_worker(first)
            return await acked_by(redis, settings.derived_stream, settings.export_group) >= 20

        await wait_until(some_acked, timeout_s=120, what="the exporter to ack some batches")
    finally:
        first.kill()
        first.wait()
        if first.stderr:
            first.stderr.close()
    acked_at_kill = await acked_by(redis, settings.derived_stream, settings.export_group)
    second = start_exporter(small, "x1", endpoint, port, **extra)
    try:

        async def done() -> bool:
            assert second.poll() is None, stop_worker(second)
            return await drained(redis, settings.derived_stream, settings.export_group)

        await wait_until(done, timeout_s=180, what="the restarted exporter to ack everything")
        if check is not None:
            await check(f"http://127.0.0.1:{port}")
    finally:
        errors = await asyncio.to_thread(stop_worker, second)
    assert second.returncode == 0, errors
    return acked_at_kill
