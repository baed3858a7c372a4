"""`runsteps export-otel` as a process: every recorded stream of both dialects through a
worker process and an exporter process killed with SIGKILL mid-stream, then restarted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

from service.settings import Settings
from tests.helpers import read_json, request
from tests.otlp import OtlpReceiver
from tests.system.exporters import expected_spans, export_killed_midway
from tests.system.load import SUMMARIES, produce
from tests.system.test_real_streams import _streams
from tests.system.workers import start_worker, stop_worker, wait_drained

pytestmark = pytest.mark.system


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP receiver on 127.0.0.1."""
    with OtlpReceiver() as running:
        yield running


async def test_sigkill_mid_stream_then_restart_gives_every_span_once(
    redis: Redis, settings: Settings, receiver: OtlpReceiver
) -> None:
    """Killed with SIGKILL after some batches and started again (same consumer name): the
    backend holds exactly the spans the derived events make (re-sent ones carry the same
    ids), one trace per run; /healthz and /metrics answer; SIGTERM exits 0."""
    await produce(redis, settings.source_stream, _streams())
    worker = start_worker(settings, "w1")
    try:
        await wait_drained(redis, settings, timeout_s=60)
    finally:
        assert stop_worker(worker) is not None
    events = await read_json(redis, settings.derived_stream)
    total = len(events)

    async def serving(base: str) -> None:
        status, _, _ = await request(base, "/healthz")
        assert status == 200
        status, _, metrics = await request(base, "/metrics")
        assert status == 200
        assert b"runsteps_export_spans_total" in metrics
        assert f'runsteps_export_lag{{stream="{settings.derived_stream}"}} 0.0'.encode() in metrics

    acked_at_kill = await export_killed_midway(redis, settings, receiver.endpoint, serving)
    assert acked_at_kill < total, "killed mid-stream, not after the end"

    expected = expected_spans(events)
    received = receiver.received()
    keys = {(s.trace_id, s.span_id) for s in received}
    assert keys == set(expected), "no span missing, no extra span"
    assert {t for t, _ in keys} == {t for t, _ in expected}, "one trace per run"
    for span in received:
        want = expected[span.trace_id, span.span_id]
        assert (span.name, span.parent_id) == (want["name"], want["parent"])
    SUMMARIES.append(
        f"export-otel SIGKILL: {total} derived events, killed after {acked_at_kill} acked; "
        f"{len(expected)} spans expected, {len(keys)} distinct received "
        f"({len(received) - len(keys)} re-sent with the same ids), "
        f"{len({t for t, _ in keys})} traces"
    )
