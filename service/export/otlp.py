"""Span records -> the OpenTelemetry SDK's spans, and the OTLP exporter the standard
`OTEL_*` variables configure.

Spans are made by the SDK's own Tracer, so its span limits, its sampler and its resource
handling apply as to any instrumented program. Only their ids are ours: the SDK asks its
`IdGenerator` for a new span's ids, and a generator takes no arguments, so `PrimedIds` hands
out the ids set just before each `start_span` (one event loop, one span at a time). A
step's span starts under a non-recording parent carrying its run's span context, so the
SDK takes the trace id from it and links the parent whether or not the run's span was sent
yet. Times are the events' own (`start_time`, `end(end_time)`). Ended spans are collected
by a span processor and handed to the exporter by the caller, which acks the derived
events only once the exporter said yes.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from importlib.metadata import version

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from service.errors import ConfigError
from service.export.mapping import SpanKind as Kind
from service.export.mapping import SpanRecord

__all__ = ["SpanFactory", "build_exporter", "build_resource"]

_KINDS = {Kind.CLIENT: SpanKind.CLIENT, Kind.INTERNAL: SpanKind.INTERNAL}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
# The schema of the semantic conventions the GenAI repository builds on (mapping.SEMCONV).
SCHEMA_URL = "https://opentelemetry.io/schemas/1.41.1"
# The `otel-grpc` extra's module, imported only when the protocol asks for it.
_GRPC_EXPORTER = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"


class PrimedIds(IdGenerator):
    """Returns the trace and span id set just before the SDK asks for them."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_trace_id(self) -> int:
        """The primed trace id (asked for a span without a parent: a run's)."""
        return self.trace_id

    def generate_span_id(self) -> int:
        """The primed span id."""
        return self.span_id


class _Collect(SpanProcessor):
    """Keeps every ended span until the caller takes them."""

    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        """Called by the SDK as a span ends."""
        self.ended.append(span)


def build_resource() -> Resource:
    """The resource from OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; `service.name` is
    `runsteps` unless they set one."""
    resource = Resource.create({})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "runsteps"}))
    return resource


class SpanFactory:
    """Makes the SDK's spans from span records, with their own ids, parents and times."""

    def __init__(self, resource: Resource) -> None:
        self._ids = PrimedIds()
        self._collect = _Collect()
        provider = TracerProvider(resource=resource, id_generator=self._ids)
        provider.add_span_processor(self._collect)
        self._tracer = provider.get_tracer(
            "runsteps.export", version("runsteps"), schema_url=SCHEMA_URL
        )

    def spans(self, records: Iterable[SpanRecord]) -> list[ReadableSpan]:
        """The ended spans of `records` (fewer when OTEL_TRACES_SAMPLER drops some: with
        `traceidratio` a whole run is kept or dropped, its spans sharing the trace id)."""
        tracer, ids = self._tracer, self._ids
        for r in records:
            ids.trace_id, ids.span_id = r.trace_id, r.span_id
            parent = None
            if r.parent_id is not None:
                context = SpanContext(r.trace_id, r.parent_id, is_remote=False,
                                      trace_flags=_SAMPLED)  # fmt: skip
                parent = set_span_in_context(NonRecordingSpan(context))
            span = tracer.start_span(
                r.name, parent, _KINDS[r.kind], r.attributes, start_time=r.start_ns
            )
            if r.error_type is not None:
                span.set_status(Status(StatusCode.ERROR, r.error_message))
            span.end(end_time=r.end_ns)
        ended, self._collect.ended = self._collect.ended, []
        return ended


def _protocol() -> str:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if value := os.environ.get(name, "").strip():
            return value
    return "http/protobuf"


def build_exporter() -> SpanExporter:
    """The OTLP span exporter the OTEL_EXPORTER_OTLP_* variables describe: http/protobuf
    unless the protocol says grpc (the `otel-grpc` extra); endpoint, headers, timeout,
    compression and certificates are read by the exporter itself."""
    protocol = _protocol()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            module = importlib.import_module(_GRPC_EXPORTER)
        except ImportError as exc:
            raise ConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL is grpc, but the gRPC exporter is not installed: "
                "pip install 'runsteps[otel-grpc]'"
            ) from exc
        exporter: SpanExporter = module.OTLPSpanExporter()
        return exporter
    raise ConfigError(
        f"OTLP protocol {protocol!r} is not supported: http/protobuf (the default) or grpc"
    )
