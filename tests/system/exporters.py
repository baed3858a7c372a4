"""`runsteps export-otel` processes for system tests, and what they must export."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from contracts.derived import DERIVED
from service.export.mapping import spans_of
from service.settings import Settings
from tests.system.workers import ROOT, worker_env


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
