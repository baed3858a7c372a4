"""`runsteps export-otel` in this process: real Redis, the worker, an in-process OTLP receiver.

What a tracing backend is handed: one trace per run, its `invoke_agent` span the root, one
span per step (per tool call) under it, times and errors from the derived events; nothing
acked before the backend said yes; refusals in the exporter's own dead-letter stream.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from redis.asyncio import Redis

from contracts.derived import RUN_END_TYPES, STEP_END_TYPES, event_id_for
from contracts.partitioning import partition_for
from service.dev.sample import responses_entries, sample_entries
from service.export.exporter import Exporter
from service.export.http import ExportMetrics
from service.export.ids import span_id_for, trace_id_for
from service.settings import Settings
from service.storage.keys import partitions
from service.worker.app import build_worker
from tests.helpers import drained, entries, pending, read_json, settle, wait_until
from tests.integration.test_real_traffic import ASSISTANTS, RESPONSES, _assistants, _responses
from tests.otlp import OtlpReceiver, ReceivedSpan

ROOT = Path(__file__).resolve().parents[2]
CLIENT, INTERNAL = 3, 1  # OTLP span kinds
ERROR = 2  # OTLP status code


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP receiver on 127.0.0.1."""
    with OtlpReceiver() as running:
        yield running


def make_exporter(settings: Settings, receiver: OtlpReceiver) -> Exporter:
    """An exporter of `settings`' derived streams to `receiver`, with a short timeout."""
    return Exporter(settings, OTLPSpanExporter(endpoint=receiver.endpoint, timeout=2))


@pytest.fixture
async def exporter(settings: Settings, receiver: OtlpReceiver) -> AsyncIterator[Exporter]:
    """A started exporter of this test's derived stream to `receiver`."""
    running = make_exporter(settings, receiver)
    await running.start()
    yield running
    await running.stop()


async def exported(redis: Redis, settings: Settings) -> None:
    """Wait until the exporter's group has read and acked every derived entry."""

    async def done() -> bool:
        return all(
            [await drained(redis, p.derived_stream, settings.export_group)
             for p in partitions(settings)]
        )  # fmt: skip

    await wait_until(done, timeout_s=30, what="the exporter to ack every derived entry")


async def track(redis: Redis, settings: Settings, entries: list[tuple[str, bytes]]) -> None:
    """Run the worker in this process over `entries` until the source is drained."""
    worker = build_worker(settings)
    await worker.start()
    try:
        for _, data in entries:
            await redis.xadd(settings.source_stream, {"data": data})
        await settle(redis, settings)
    finally:
        await worker.stop()


def ends(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The terminal events of runs and steps: those that make spans."""
    terminal = {*STEP_END_TYPES.values(), *RUN_END_TYPES.values()}
    return [e for e in events if e["type"] in terminal]


def by_id(spans: list[ReceivedSpan]) -> dict[tuple[str, str], ReceivedSpan]:
    """Spans by (trace id, span id): what a backend keys them by."""
    return {(s.trace_id, s.span_id): s for s in spans}


def hex_trace(run_id: str) -> str:
    """A run's trace id as backends show it."""
    return f"{trace_id_for(run_id):032x}"


def hex_span(run_id: str, step_id: str = "", call_id: str = "") -> str:
    """A span id as backends show it."""
    return f"{span_id_for(run_id, step_id, call_id):016x}"


async def test_each_run_is_one_trace_with_a_span_per_step(
    redis: Redis, settings: Settings, receiver: OtlpReceiver, exporter: Exporter
) -> None:
    """The demo's Assistants run and Responses response: one trace each, the run span its
    root, every ended step a child span with its times, kind and error from the events."""
    await track(redis, settings, sample_entries() + responses_entries())
    await exported(redis, settings)
    events = await read_json(redis, settings.derived_stream)
    spans = by_id(receiver.received())

    runs = [e for e in ends(events) if e["type"].startswith("run.")]
    step_ends = [e for e in ends(events) if e["type"].startswith("run_step.")]
    assert {s.trace_id for s in spans.values()} == {hex_trace(r["run_id"]) for r in runs}
    assert len(spans) == len(runs) + len(step_ends), "one span per run and per ended step"
    for run in runs:
        root = spans[hex_trace(run["run_id"]), hex_span(run["run_id"])]
        assert (root.name, root.kind, root.parent_id) == ("invoke_agent", CLIENT, "")
        assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert root.attributes["gen_ai.response.id"] == run["run_id"]
        assert root.attributes["gen_ai.provider.name"] == "openai"
        assert root.attributes["runsteps.status"] == run["to_status"]
        assert root.end_ns >= run["occurred_at"] * 10**9
        assert root.resource["service.name"] == "runsteps"
        assert root.scope == "runsteps.export"
    for end in step_ends:
        [span] = [
            s for s in spans.values() if s.attributes.get("runsteps.step.id") == end["step_id"]
        ]
        run_span = spans[hex_trace(end["run_id"]), hex_span(end["run_id"])]
        assert span.trace_id == hex_trace(end["run_id"])
        assert span.parent_id == hex_span(end["run_id"]), "a child of its run's span"
        assert run_span.start_ns <= span.start_ns <= span.end_ns <= run_span.end_ns
        assert span.end_ns == round(end["occurred_at"] * 1e9)
        if end["duration_s"] is not None:
            assert span.end_ns - span.start_ns == round(end["duration_s"] * 1e9)
        if end["to_status"] in ("failed", "expired", "cancelled"):
            assert span.status == ERROR
            assert span.attributes["error.type"] == (end["last_error"] or {}).get(
                "code", end["to_status"]
            )
        else:
            assert span.status == 0
            assert "error.type" not in span.attributes
        tool = end["step_type"] == "tool_calls" or "_call" in end["step_type"]
        assert span.name.startswith("execute_tool") if tool else span.name == "chat"
        assert span.kind == (INTERNAL if tool else CLIENT)
    failed = [s for s in spans.values() if s.status == ERROR]
    assert failed, "the demo run has a failed step"


async def test_a_backend_that_is_down_loses_nothing(
    redis: Redis, settings: Settings, receiver: OtlpReceiver
) -> None:
    """While the backend answers 503 nothing is acked (pending stays); once it answers,
    every span arrives and the group drains by itself."""
    receiver.failing = True
    exporter = make_exporter(settings.model_copy(update={"export_retry_max_s": 0.2}), receiver)
    metrics = ExportMetrics(exporter)
    await exporter.start()
    try:
        await track(redis, settings, sample_entries())
        await wait_until(
            lambda: _true(exporter.telemetry.export_failures >= 2), what="two failed exports"
        )
        assert await pending(redis, settings.derived_stream, settings.export_group) > 0
        assert receiver.received() == []
        assert exporter.alive(), "a backend that is down does not make the exporter stuck"
        receiver.failing = False
        await exported(redis, settings)
        body = (await metrics.render()).decode()
    finally:
        await exporter.stop()
    assert len(by_id(receiver.received())) == len(
        ends(await read_json(redis, settings.derived_stream))
    )
    assert "runsteps_export_failures_total" in body
    assert f'runsteps_export_pending{{stream="{settings.derived_stream}"}} 0.0' in body


async def _true(value: bool) -> bool:
    return value


async def test_a_replayed_stream_gives_the_same_spans(
    redis: Redis, settings: Settings, receiver: OtlpReceiver, exporter: Exporter
) -> None:
    """Every derived event delivered again (the group set back to 0) re-sends exactly the
    same spans, ids included: no second trace, no new span."""
    await track(redis, settings, sample_entries())
    await exported(redis, settings)
    first = receiver.received()
    await redis.xgroup_setid(settings.derived_stream, settings.export_group, "0")
    await wait_until(lambda: _true(len(receiver.received()) == 2 * len(first)),
                     what="the replay exported")  # fmt: skip
    again = receiver.received()[len(first) :]
    assert by_id(again).keys() == by_id(first).keys()
    assert {k: (s.name, s.start_ns, s.end_ns, s.attributes) for k, s in by_id(again).items()} == {
        k: (s.name, s.start_ns, s.end_ns, s.attributes) for k, s in by_id(first).items()
    }


async def test_both_encoders_hand_the_backend_the_same_spans(
    redis: Redis, settings: Settings
) -> None:
    """Every recorded stream of both dialects, tracked once, exported by two exporters in
    their own groups: runsteps' encoder (the default, sent by the pinned SDK exporter's own
    client) and the SDK's (`RUNSTEPS_EXPORT_ENCODER=sdk`). The backends receive the same
    spans, every id, time, attribute and status, and as many of them."""
    recorded = [d for p in ASSISTANTS for d in _assistants(p)]
    recorded += [d for p in RESPONSES for d in _responses(p)]
    await track(redis, settings, [("", d) for d in recorded])
    received: dict[str, list[Any]] = {}
    for encoder in ("wire", "sdk"):
        own = settings.model_copy(
            update={"export_encoder": encoder, "export_group": f"otel-{encoder}"}
        )
        with OtlpReceiver() as receiver:
            exporter = make_exporter(own, receiver)
            assert exporter.encoding == encoder, "the pinned SDK exporter's client is used"
            await exporter.start()
            try:
                await exported(redis, own)
            finally:
                await exporter.stop()
            received[encoder] = sorted(
                receiver.received(), key=lambda s: (s.trace_id, s.span_id, s.name)
            )
    ends_made = ends(await read_json(redis, settings.derived_stream))
    assert len(received["wire"]) >= len(ends_made) > 100
    assert received["wire"] == received["sdk"]


def _step_end(run_id: str, step_id: str, **extra: Any) -> dict[str, Any]:
    event = {
        "type": "run_step.completed", "source": "assistants", "step_id": step_id,
        "run_id": run_id, "thread_id": "thread_x", "assistant_id": "asst_x",
        "from_status": "in_progress", "to_status": "completed", "occurred_at": 1_764_000_010,
        "step_type": "tool_calls", "duration_s": 3, "usage": None, "last_error": None,
        "tools": [], "ended_by_run": False,
        "event_id": event_id_for(run_id, step_id, "run_step.completed"),
    }  # fmt: skip
    return event | extra


async def test_what_cannot_be_mapped_is_dead_lettered_with_the_reason(
    redis: Redis, settings: Settings, receiver: OtlpReceiver, exporter: Exporter
) -> None:
    """Bad JSON, a missing `data`, an unknown event and a time OTLP cannot carry each go
    to the exporter's dead-letter stream with their kind; all acked, the good one exported.
    An event of a type that makes no span is checked for its type only: acked, no span."""
    stream = settings.derived_stream
    await redis.xadd(stream, {"data": b"{nope"})
    await redis.xadd(stream, {"other": b"x"})
    await redis.xadd(stream, {"data": json.dumps({"type": "run_step.unheard_of"})})
    await redis.xadd(stream, {"data": json.dumps(_step_end("r1", "s_far", occurred_at=2**40))})
    await redis.xadd(stream, {"data": json.dumps(_step_end("r1", "s_ok"))})
    await redis.xadd(stream, {"data": json.dumps({"type": "run_step.started"})})
    await exported(redis, settings)
    dead = await entries(redis, settings.export_dlq_stream)
    kinds = [json.loads(f[b"error"])["kind"] for _, f in dead]
    assert kinds == ["invalid_json", "missing_data", "invalid_payload", "unmappable"]
    assert dead[1][1][b"field:other"] == b"x"
    assert dead[0][1][b"data"] == b"{nope"
    assert all(f[b"source_stream"] == stream.encode() for _, f in dead)
    assert "2**64" in json.loads(dead[3][1][b"error"])["message"]
    [span] = receiver.received()
    assert span.span_id == hex_span("r1", "s_ok")
    assert span.end_ns - span.start_ns == 3 * 10**9
    assert exporter.telemetry.events["no_span"] == 1
    assert Counter(exporter.telemetry.dead_letters) == Counter(
        {"invalid_json": 1, "missing_data": 1, "invalid_payload": 1, "unmappable": 1}
    )


async def test_every_partition_is_exported(
    redis: Redis, settings: Settings, receiver: OtlpReceiver
) -> None:
    """With 3 partitions each derived stream `<name>:{p}` is read; each event's span comes
    out, and each partition's refusals go to its own dead-letter stream."""
    parted = settings.model_copy(update={"partitions": 3})
    exporter = make_exporter(parted, receiver)
    await exporter.start()
    try:
        runs = [f"run_{i}" for i in range(12)]
        for run_id in runs:
            part = partitions(parted)[partition_for(run_id, 3)]
            await redis.xadd(part.derived_stream, {"data": json.dumps(_step_end(run_id, "s"))})
        await redis.xadd(partitions(parted)[2].derived_stream, {"data": b"[]"})
        await exported(redis, parted)
    finally:
        await exporter.stop()
    assert {s.trace_id for s in receiver.received()} == {hex_trace(r) for r in runs}
    assert await redis.xlen(f"{settings.export_dlq_stream}:{{2}}") == 1


def test_demo_exports_its_runs_as_traces(receiver: OtlpReceiver) -> None:
    """`runsteps demo --export-otel` sends both demo runs to the OTLP endpoint of the
    standard variable and names their trace ids; without the flag it says how to."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNSTEPS_", "OTEL_"))}
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = receiver.endpoint
    done = subprocess.run(
        [sys.executable, "-m", "service", "demo", "--export-otel"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert {s.trace_id for s in receiver.received()} == {
        hex_trace("run_demo"),
        hex_trace("resp_demo"),
    }
    assert hex_trace("run_demo") in done.stdout
    plain = subprocess.run(
        [sys.executable, "-m", "service", "demo"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    assert "runsteps demo --export-otel" in plain.stdout


@pytest.mark.parametrize(
    ("protocol", "says"),
    [("http/json", "not supported"), ("grpc", "runsteps[otel-grpc]")],
)
def test_an_unusable_otlp_protocol_exits_2_saying_why(protocol: str, says: str) -> None:
    """`runsteps export-otel` refuses a protocol it cannot speak before touching Redis:
    exit code 2 and one line (gRPC needs the `otel-grpc` extra, not installed here)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNSTEPS_", "OTEL_"))}
    env |= {"OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "RUNSTEPS_REDIS_URL": "redis://127.0.0.1:9/0"}
    done = subprocess.run(
        [sys.executable, "-m", "service", "export-otel"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "configuration error" in done.stderr
    assert says in done.stderr
