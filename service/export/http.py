"""The exporter's HTTP port: `/healthz`, `/readyz` and `/metrics`, as the worker has.

Its own registry and a tiny ASGI app served by uvicorn (no FastStream: the exporter reads
Redis with redis-py). Counters come from the exporter's `ExportTelemetry` at scrape time;
the group's lag and pending count per derived stream, and the length of each exporter
dead-letter stream, are asked of Redis when scraped (every exporter of a group reports the
same figures: aggregate with max by stream, not sum).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from service.edge.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from service.export.exporter import Exporter

__all__ = ["ExportMetrics", "build_app"]

_POLL_TIMEOUT_S = 2.0
_OUTCOMES = ("span", "no_span", "dead_letter")
_KINDS = ("trimmed", "missing_data", "invalid_json", "invalid_payload", "unmappable")


class _Snapshot:
    """What Redis said at the last scrape."""

    __slots__ = ("dlq", "lag", "pending", "up")

    def __init__(self) -> None:
        self.up = False
        self.lag: dict[str, int] = {}
        self.pending: dict[str, int] = {}
        self.dlq: dict[str, int] = {}


class _Collector:
    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter
        self.snapshot = _Snapshot()

    def collect(self) -> Iterator[Metric]:
        t = self.exporter.telemetry
        yield CounterMetricFamily(
            "runsteps_export_spans", "Spans the OTLP backend accepted", value=t.spans
        )
        yield CounterMetricFamily(
            "runsteps_export_failures",
            "OTLP export attempts that failed (nothing acked; retried with backoff)",
            value=t.export_failures,
        )
        yield CounterMetricFamily(
            "runsteps_export_reclaimed_entries",
            "Derived entries taken over from other exporters (dead or scaled away)",
            value=t.reclaimed,
        )
        events = CounterMetricFamily(
            "runsteps_export_events",
            "Derived events acked, by outcome: made spans, made none, dead-lettered",
            labels=["outcome"],
        )
        for outcome in _OUTCOMES:
            events.add_metric([outcome], t.events[outcome])
        yield events
        dead = CounterMetricFamily(
            "runsteps_export_dlq_entries",
            "Derived entries the exporter dead-lettered, by reason",
            labels=["kind"],
        )
        for kind in _KINDS:
            dead.add_metric([kind], t.dead_letters[kind])
        yield dead
        snap = self.snapshot
        yield GaugeMetricFamily(
            "runsteps_redis_up",
            "1 if Redis answered this scrape's queries, else 0",
            value=1.0 if snap.up else 0.0,
        )
        for name, doc, values in (
            ("runsteps_export_lag", "Derived entries not yet delivered to the exporter's "
             "group (XINFO GROUPS lag)", snap.lag),
            ("runsteps_export_pending", "Derived entries delivered to the exporter's group "
             "and not acked (not yet exported)", snap.pending),
            ("runsteps_export_dlq_length", "Entries in the exporter's dead-letter stream",
             snap.dlq),
        ):  # fmt: skip
            gauge = GaugeMetricFamily(name, doc, labels=["stream"])
            for stream, n in values.items():
                gauge.add_metric([stream], n)
            yield gauge


class ExportMetrics:
    """An exporter's metrics in a registry of its own; `render` is the scrape."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter
        self.registry = CollectorRegistry()
        self._collector = _Collector(exporter)
        self.registry.register(self._collector)
        self.export_seconds = Histogram(
            "runsteps_export_seconds",
            "Time of each successful OTLP export call (a batch of spans)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        exporter.telemetry.observe = self.export_seconds.observe

    async def render(self) -> bytes:
        """The text exposition, with the group figures asked of Redis just now."""
        self._collector.snapshot = await self._poll()
        return generate_latest(self.registry)

    async def _poll(self) -> _Snapshot:
        snap = _Snapshot()
        readers = self.exporter.readers
        if self.exporter.redis is None or not readers:
            return snap
        try:
            figures = await asyncio.wait_for(
                asyncio.gather(*(r.figures() for r in readers)), _POLL_TIMEOUT_S
            )
            lengths = await asyncio.wait_for(
                asyncio.gather(*(r.conn.redis.xlen(r.dlq) for r in readers)), _POLL_TIMEOUT_S
            )
        except Exception:  # Redis down or slow: the scrape still answers, with redis_up 0
            return snap
        snap.up = True
        for reader, found, length in zip(readers, figures, lengths, strict=True):
            snap.dlq[reader.dlq] = int(length)
            if found is None:
                continue
            snap.pending[reader.stream] = found.pending
            if found.lag is not None:
                snap.lag[reader.stream] = found.lag
        return snap


Send = Callable[[dict[str, Any]], Awaitable[None]]


def build_app(exporter: Exporter, metrics: ExportMetrics) -> Callable[..., Awaitable[None]]:
    """The ASGI app of the exporter's HTTP port."""

    async def respond(send: Send, status: int, body: bytes, content_type: str) -> None:
        headers = [(b"content-type", content_type.encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/metrics":
            await respond(send, 200, await metrics.render(), CONTENT_TYPE)
            return
        if path == "/healthz":
            alive = exporter.alive()
            status = {"status": "alive" if alive else "stuck"}
            await respond(send, 200 if alive else 503, json.dumps(status).encode(), _JSON)
            return
        if path == "/readyz":
            redis_ok = False
            if exporter.redis is not None:
                with contextlib.suppress(Exception):
                    redis_ok = bool(await asyncio.wait_for(exporter.redis.ping(), 1.0))
            body = {"ready": redis_ok, "checks": {"redis": redis_ok}}
            await respond(send, 200 if redis_ok else 503, json.dumps(body).encode(), _JSON)
            return
        await respond(send, 404, b'{"error":"not found"}', _JSON)

    return app


_JSON = "application/json"
