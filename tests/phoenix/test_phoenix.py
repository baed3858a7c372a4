"""The traces in a real Phoenix: recorded streams of both dialects through a worker process
and an exporter process (SIGKILLed mid-stream, restarted), read back through Phoenix's API,
and one run's trace shot in Phoenix's UI by headless Chromium (docs/phoenix-trace.png).

Phoenix (`arize-phoenix` from PyPI) lives in its own venv, `.venv-phoenix` (`make
phoenix-test` makes it; RUNSTEPS_PHOENIX_PYTHON names another): its dependencies are not the
project's. It runs offline on 127.0.0.1: telemetry pixels and external resources (web fonts,
the sandbox download) off, the agent assistant and MCP server off, its OTLP gRPC port bound
to 127.0.0.1 (Phoenix binds it to every interface; `_LAUNCH` wraps the call). Without that
venv this test fails, never skips.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from contracts.derived import RUN_END_TYPES
from service.dev.redis_server import free_port
from service.settings import Settings
from tests.helpers import read_json, request, wait_until
from tests.ops.test_asyncapi_browser import PNG_MAGIC, chromium, fetch
from tests.system.exporters import expected_spans, export_killed_midway
from tests.system.load import produce
from tests.system.test_real_streams import _streams
from tests.system.workers import start_worker, stop_worker, wait_drained

# Phoenix takes 30-60 s to start on 2 cores: more than the suite's per-test timeout.
pytestmark = [pytest.mark.phoenix, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
PHOENIX_PYTHON = os.environ.get(
    "RUNSTEPS_PHOENIX_PYTHON", str(ROOT / ".venv-phoenix" / "bin" / "python")
)
SCREENSHOT = ROOT / "docs" / "phoenix-trace.png"

# Run with Phoenix's interpreter: its gRPC OTLP port on loopback only, then `phoenix serve`.
_LAUNCH = """
import sys
import grpc.aio._server as server
add = server.Server.add_insecure_port
server.Server.add_insecure_port = lambda self, a: add(self, a.replace("[::]", "127.0.0.1"))
from phoenix.server.main import main
sys.argv = ["phoenix", "serve"]
main()
"""


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Phoenix server on 127.0.0.1, offline, with a fresh SQLite database: its base URL."""
    if not Path(PHOENIX_PYTHON).exists():
        pytest.fail(f"{PHOENIX_PYTHON} not found: `make phoenix-test` installs Phoenix there")
    port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_"))}
    env.update(
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(grpc_port),
        PHOENIX_WORKING_DIR=str(tmp_path_factory.mktemp("phoenix")),
        PHOENIX_TELEMETRY_ENABLED="false",
        PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
        PHOENIX_DISABLE_AGENT_ASSISTANT="true",
        PHOENIX_ENABLE_MCP_SERVER="false",
    )
    log = tmp_path_factory.mktemp("phoenix-log") / "phoenix.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PHOENIX_PYTHON, "-c", _LAUNCH], env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    async def up() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        return (await asyncio.to_thread(fetch, f"{base}/v1/projects"))[0] == 200

    try:
        asyncio.run(wait_until(up, timeout_s=240, what="Phoenix to serve"))
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def phoenix_spans(base: str, project: str) -> list[dict[str, Any]]:
    """Every span of `project` through Phoenix's REST API (pages of 1000)."""
    spans: list[dict[str, Any]] = []
    cursor = ""
    while True:
        query = f"?limit=1000{f'&cursor={cursor}' if cursor else ''}"
        status, body = await asyncio.to_thread(fetch, f"{base}/v1/projects/{project}/spans{query}")
        if status == 404:  # no span yet: the project does not exist yet
            return []
        assert status == 200, body
        page = json.loads(body)
        spans += page["data"]
        cursor = page["next_cursor"] or ""
        if not cursor:
            return spans


def _ns(iso: str) -> int:
    """Unix nanoseconds of Phoenix's ISO time (microseconds)."""
    stamp = datetime.fromisoformat(iso)
    return (int(stamp.timestamp()) * 1_000_000 + stamp.microsecond) * 1000


async def test_recorded_streams_in_phoenix_one_trace_per_run(
    phoenix: str, redis: Redis, settings: Settings
) -> None:
    """Phoenix shows one trace per run, its invoke_agent span the root and every ended
    step a span under it, with the events' names, times, attributes and error statuses:
    with the exporter SIGKILLed mid-stream and restarted, no second trace, no extra span."""
    project = f"runsteps-{uuid.uuid4().hex[:8]}"
    otel = {"OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project}"}
    await produce(redis, settings.source_stream, _streams())
    worker = start_worker(settings, "w1")
    try:
        await wait_drained(redis, settings, timeout_s=60)
    finally:
        stop_worker(worker)
    events = await read_json(redis, settings.derived_stream)
    expected = expected_spans(events)

    async def alive(base: str) -> None:
        assert (await request(base, "/healthz"))[0] == 200

    acked = await export_killed_midway(redis, settings, f"{phoenix}/v1/traces", alive, **otel)
    assert acked < len(events), "killed mid-stream, not after the end"

    async def all_in() -> bool:
        return len(await phoenix_spans(phoenix, project)) >= len(expected)

    await wait_until(all_in, timeout_s=60, what="Phoenix to store every span")
    spans = await phoenix_spans(phoenix, project)
    got = {(s["context"]["trace_id"], s["context"]["span_id"]): s for s in spans}
    assert len(spans) == len(got) == len(expected), "no span twice, none extra"
    assert set(got) == set(expected)
    traces = {t for t, _ in got}
    runs_ended = {e["run_id"] for e in events if e["type"] in RUN_END_TYPES.values()}
    assert len(traces) >= len(runs_ended), "a trace per run"
    roots = [s for s in spans if s["parent_id"] is None]
    assert len(roots) == len(runs_ended) == len({s["context"]["trace_id"] for s in roots})

    for key, span in got.items():
        check_span(span, expected[key], got.get((key[0], expected[key]["parent"])))
    await screenshot(phoenix, project, spans)


def check_span(span: dict[str, Any], want: dict[str, Any], run: dict[str, Any] | None) -> None:
    """One span as Phoenix stored it against the event it came from: name, parent,
    attributes, status, times (a step's are the event's; the run's span holds its steps)."""
    event = want["event"]
    attrs = span["attributes"]
    assert span["name"] == want["name"]
    assert (span["parent_id"] or "") == want["parent"]
    assert attrs["runsteps.run.id"] == event["run_id"]
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.operation.name"] == want["name"].split()[0]
    if event["to_status"] in ("failed", "expired", "cancelled"):
        assert span["status_code"] == "ERROR", span
        assert attrs["error.type"]
    else:
        assert span["status_code"] == "UNSET", span
    start, end = _ns(span["start_time"]), _ns(span["end_time"])
    if not want["parent"]:
        assert attrs["gen_ai.response.id"] == event["run_id"]
        assert end >= round(event["occurred_at"] * 1e9) - 1000
        return
    assert abs(end - round(event["occurred_at"] * 1e9)) < 1000  # Phoenix keeps microseconds
    if event["duration_s"] is not None:
        assert abs((end - start) - round(event["duration_s"] * 1e9)) < 2000
    if run is not None:
        assert _ns(run["start_time"]) <= start <= end <= _ns(run["end_time"])


async def screenshot(phoenix: str, project: str, spans: list[dict[str, Any]]) -> None:
    """Headless Chromium shows the Assistants run with the most spans in Phoenix's trace
    view; its screenshot is written to docs/phoenix-trace.png."""
    roots = {s["context"]["trace_id"] for s in spans if s["parent_id"] is None}
    children: Counter[str] = Counter(
        s["context"]["trace_id"]
        for s in spans
        if s["parent_id"] and s["attributes"]["runsteps.source"] == "assistants"
    )
    shown = max((t for t in children if t in roots), key=lambda t: children[t])
    _, body = await asyncio.to_thread(fetch, f"{phoenix}/v1/projects")
    [project_id] = [p["id"] for p in json.loads(body)["data"] if p["name"] == project]
    page = f"{phoenix}/projects/{project_id}/traces/{shown}"
    browse = ("--window-size=1600,1000", "--virtual-time-budget=20000")
    dom = (await chromium(*browse, "--dump-dom", page, timeout_s=90)).decode()
    assert "invoke_agent" in dom
    SCREENSHOT.parent.mkdir(exist_ok=True)
    await chromium(*browse, f"--screenshot={SCREENSHOT}", page, timeout_s=90)
    png = SCREENSHOT.read_bytes()
    assert png.startswith(PNG_MAGIC)
    assert len(png) > 40_000  # a blank page is about 12 KB
