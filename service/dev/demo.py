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
from service.errors import ConfigError, RedisServerNotFoundError
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


_TRACES_HINT = (
    "see these runs as traces: start any OTLP backend (e.g. Phoenix: pip install "
    "arize-phoenix && phoenix serve), then\n  OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:6006 "
    "runsteps demo --export-otel\n(README.md, Traces: `runsteps export-otel` does it for a "
    "deployment)"
)


async def _export(settings: Settings, redis: Redis, timeout_s: float) -> bool:
    """Export the demo's derived events as traces to OTEL_EXPORTER_OTLP_ENDPOINT."""
    from service.export.exporter import Exporter
    from service.export.ids import trace_id_for

    exporter = Exporter(settings)
    await exporter.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            [group] = [g for g in await redis.xinfo_groups(settings.derived_stream)
                       if g["name"].decode() == settings.export_group]  # fmt: skip
            if group["lag"] == 0 and group["pending"] == 0:
                break
            await asyncio.sleep(0.05)
        else:
            print(f"traces: not all exported in {timeout_s}s (is the backend up? see the log)")
            return False
    finally:
        await exporter.stop()
    spans = exporter.telemetry.spans
    print(f"traces: {spans} spans exported to the OTLP endpoint; trace ids:")
    for run_id in ("run_demo", "resp_demo"):
        print(f"  {run_id:<10} {trace_id_for(run_id):032x}")
    return spans > 0


async def _demo(settings: Settings, timeout_s: float, export_otel: bool = False) -> bool:
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
        print()
        if export_otel:
            return await _export(settings, redis, timeout_s) and ok
        print(_TRACES_HINT)
        return ok
    finally:
        await redis.aclose()
        await worker.stop()


def run_demo(
    redis_url: str | None = None, timeout_s: float = 30.0, export_otel: bool = False
) -> int:
    """Run the demo (and export its runs as traces); returns the process exit code."""
    local: LocalRedis | None = None
    try:
        if redis_url is None:
            local = LocalRedis().start()
            redis_url = local.url
            print(f"started a private redis-server at {redis_url}")
        settings = Settings(redis_url=redis_url, consumer="demo")
        return 0 if asyncio.run(_demo(settings, timeout_s, export_otel)) else 1
    except (RedisServerNotFoundError, ConfigError) as exc:
        print(f"runsteps demo: {exc}", file=sys.stderr)
        return 2
    finally:
        if local is not None:
            local.stop()
