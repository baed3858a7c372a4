"""Span records -> the OpenTelemetry SDK's span data, and the OTLP exporter the standard
`OTEL_*` variables configure.

The spans are the SDK's `ReadableSpan`, the span data every SDK `SpanExporter` takes,
built with their own ids, parent, times, kind, status, resource and instrumentation scope.
The SDK's other way, its Tracer, draws ids from an `IdGenerator` that takes no arguments:
ours would have to be primed before each `start_span` and a step's parent passed as a
non-recording span context, all to make a span that is already finished. That works, but
costs about 15 times the CPU per span (context propagation, the sampler, locks: 100-150 us
against 6-10 us measured on this machine), and the exporter must keep up with the worker.
What the Tracer would add, sampling and span limits, belongs here to the backend or a
collector: the ids and attributes are bounded by the contract (ids of at most 256
characters, a fixed set of attributes).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from importlib.metadata import version

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from service.errors import ConfigError
from service.export.mapping import SpanKind as Kind
from service.export.mapping import SpanRecord

__all__ = ["SpanFactory", "build_exporter", "build_resource", "byte_sender"]

_KINDS = {Kind.CLIENT: SpanKind.CLIENT, Kind.INTERNAL: SpanKind.INTERNAL}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)
# The schema of the semantic conventions the GenAI repository builds on (mapping.SEMCONV).
SCHEMA_URL = "https://opentelemetry.io/schemas/1.41.1"
# The `otel-grpc` extra's module, imported only when the protocol asks for it.
_GRPC_EXPORTER = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"


class _Resource(Resource):
    """A resource whose hash is computed once: the SDK's encoder groups spans by resource,
    hashing it for every span, and Resource's hash serialises its attributes to JSON."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(dict(resource.attributes), resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return other is self or super().__eq__(other)


def build_resource() -> Resource:
    """The resource from OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; `service.name` is
    `runsteps` unless they set one."""
    resource = Resource.create({})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "runsteps"}))
    return _Resource(resource)


def _error(message: str | None) -> Status:
    return Status(StatusCode.ERROR, message)


class SpanFactory:
    """Makes the SDK's span data from span records: one resource, one scope for all."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.scope = InstrumentationScope("runsteps.export", version("runsteps"), SCHEMA_URL)

    def spans(self, records: Iterable[SpanRecord]) -> list[ReadableSpan]:
        """The ended spans of `records`, in order."""
        resource, scope = self.resource, self.scope
        return [
            ReadableSpan(
                r.name,
                SpanContext(r.trace_id, r.span_id, is_remote=False, trace_flags=_SAMPLED),
                None
                if r.parent_id is None
                else SpanContext(r.trace_id, r.parent_id, is_remote=False, trace_flags=_SAMPLED),
                resource,
                r.attributes,
                kind=_KINDS[r.kind],
                status=_UNSET if r.error_type is None else _error(r.error_message),
                start_time=r.start_ns,
                end_time=r.end_ns,
                instrumentation_scope=scope,
            )
            for r in records
        ]


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


def byte_sender(exporter: SpanExporter) -> Callable[[bytes], bool] | None:
    """How to send a request encoded by runsteps (wire.py) through `exporter`: the SDK's
    OTLP/HTTP exporter's own client (endpoint, headers, compression, TLS, timeout and retries
    as the OTEL_* variables configure them); True once the backend accepted it. None for any
    other exporter (gRPC, a test's), which is handed the SDK's spans instead.

    The client is the exporter's private `_client` (opentelemetry-exporter-otlp-proto-http
    1.45, pinned in the lock): if a release moves it, this answers None and the SDK's own
    encoder is used, slower but the same spans (tests/integration/test_export.py fails first:
    it requires the fast path with the pinned release)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if type(exporter) is not OTLPSpanExporter:
        return None
    export = getattr(getattr(exporter, "_client", None), "export", None)
    if not callable(export):
        return None

    def send(data: bytes) -> bool:
        return getattr(export(data), "success", False) is True

    return send
