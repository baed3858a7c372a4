"""`runsteps demo`: a private Redis, the worker, a sample producer, derived events printed."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

from redis.asyncio import Redis

from service.dev.redis_server import LocalRedis
from service.dev.sample import (
    RESPONSES_EXPECTED,
    SAMPLE_EXPECTED,
    responses_entries,
    sample_entries,
)
from service.errors import RedisServerNotFoundError
from service.settings import Settings
from service.storage.reads import read_streams
from service.worker.app import build_worker

__all__ = ["run_demo"]


def _describe(event: dict[str, Any]) -> str:
    subject = f"step={event['step_id']}" if event.get("step_id") else f"run={event['run_id']}"
    parts = [f"{event['type']:<29}", f"{event['source']:<10}", f"{subject:<16}"]
    parts.append(f"{event.get('from_status') or '-'} -> {event['to_status']}")
    if event.get("duration_s") is not None:
        parts.append(f"duration={event['duration_s']}s")
    if event.get("last_error"):
        parts.append(f"error={event['last_error']['code']}")
    if event["type"] == "run.usage":
        parts.append(f"run_total_tokens={event['total_tokens']} steps={event['steps_counted']}")
    elif event.get("usage"):
        parts.append(f"tokens={event['usage']['total_tokens']}")
    if event.get("reason"):
        parts.append(f"({event['reason']})")
    return "  ".join(parts)


async def _demo(settings: Settings, timeout_s: float) -> bool:
    worker = build_worker(settings)
    await worker.start()
    redis = Redis.from_url(settings.redis_url)
    try:
        for dialect, produced in (("assistants", sample_entries()),
                                  ("responses", responses_entries())):  # fmt: skip
            for label, data in produced:
                await redis.xadd(settings.source_stream, {"data": data})
                print(f"produced  {dialect:<10}  {label}")
        print()
        expected = Counter(SAMPLE_EXPECTED) + Counter(RESPONSES_EXPECTED)
        seen: Counter[str] = Counter()
        cursors = {settings.derived_stream: "0", settings.dlq_stream: "0"}
        deadline = time.monotonic() + timeout_s
        while seen != expected and time.monotonic() < deadline:
            for name, entries in await read_streams(redis, cursors, 500):
                for entry_id, fields in entries:
                    cursors[name] = entry_id.decode()
                    if name == settings.dlq_stream:
                        seen["dlq"] += 1
                        error = json.loads(fields[b"error"])
                        print(f"{'DLQ':<29}  {error['kind']}: {error['message']}")
                    else:
                        event = json.loads(fields[b"data"])
                        seen[event["type"]] += 1
                        print(_describe(event))
        run = await worker.run("run_demo")
        print()
        print(f"run run_demo usage totals: {run.usage.model_dump() if run else None}")
        ok = seen == expected
        print("demo OK: every expected derived event and DLQ entry arrived exactly once"
              if ok else f"demo FAILED: expected {dict(expected)}, saw {dict(seen)}")  # fmt: skip
        return ok
    finally:
        await redis.aclose()
        await worker.stop()


def run_demo(redis_url: str | None = None, timeout_s: float = 30.0) -> int:
    """Run the demo; returns the process exit code."""
    local: LocalRedis | None = None
    try:
        if redis_url is None:
            local = LocalRedis().start()
            redis_url = local.url
            print(f"started a private redis-server at {redis_url}")
        settings = Settings(redis_url=redis_url, consumer="demo")
        return 0 if asyncio.run(_demo(settings, timeout_s)) else 1
    except RedisServerNotFoundError as exc:
        print(f"runsteps demo: {exc}", file=sys.stderr)
        return 2
    finally:
        if local is not None:
            local.stop()
