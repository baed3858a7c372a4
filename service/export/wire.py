"""Span records -> the bytes of an OTLP `ExportTraceServiceRequest`, written directly.

Why by hand: the OpenTelemetry SDK's encoder builds a protobuf message per span, a
`KeyValue` and an `AnyValue` per attribute, then serialises them: most of the exporter's CPU
(bench/README.md, "export-otel against the worker"), enough that one exporter could not keep
up with one worker. Most of a span's attributes repeat from span to span (operation,
provider, source, status, tool name and type), so their encoded bytes are kept and reused
here; only ids, times and counts are encoded per span. `bench.export` measures both
encoders side by side (RUNSTEPS_EXPORT_ENCODER=sdk is the SDK's).

What is not by hand: the resource and the instrumentation scope are encoded once, by the
SDK's own encoder (`encode_spans` of a probe span), and the bytes are sent by the SDK's
OTLP/HTTP exporter's client, with its endpoint, headers, compression, certificates, timeout
and retries. tests/unit/test_export_wire.py checks that these are the very bytes the SDK's
encoder writes (any span records, and the mapping's spans of both dialects);
tests/integration/test_export.py that a backend receives the same spans from both encoders
over every recorded stream.

The wire format (opentelemetry-proto, trace/v1/trace.proto, common/v1/common.proto): fields
in field-number order as protobuf writes them; proto3 defaults (empty strings, zero counts)
left out, a oneof's value and a set sub-message always written.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from service.export.mapping import SpanKind, SpanRecord

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

__all__ = ["WireEncoder"]

_KIND = {SpanKind.INTERNAL: b"\x30\x01", SpanKind.CLIENT: b"\x30\x03"}  # Span.kind (6)
# Span.flags (16, fixed32): SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK; the parent is local.
_FLAGS = b"\x85\x01" + struct.pack("<I", 0x100)
_UNSET = b"\x7a\x00"  # Span.status (15): an empty Status, as the SDK sends UNSET
_ERROR_CODE = b"\x18\x02"  # Status.code (3): STATUS_CODE_ERROR
_PACK_Q = struct.Struct("<Q").pack
_PACK_D = struct.Struct("<d").pack
# Encoded string-valued attributes kept at most (ids churn through; the rest repeat).
_CACHE_MAX = 4096
_ONE_BYTE = [bytes((n,)) for n in range(0x80)]  # the varints below 128: most lengths


def _varint(n: int) -> bytes:
    """A protobuf varint; a negative int64 as its 64-bit two's complement."""
    if n < 0:
        n += 1 << 64
    if n < 0x80:
        return _ONE_BYTE[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field: its tag, the body's length, the body."""
    return tag + _varint(len(body)) + body


def _value(value: str | bool | int | float) -> bytes:
    """An AnyValue: string_value (1), bool_value (2), int_value (3) or double_value (4)."""
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, bool):  # before int: a bool is an int
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    return b"\x21" + _PACK_D(value)


class WireEncoder:
    """Encodes span records for one resource and instrumentation scope."""

    def __init__(self, resource: Resource, scope: InstrumentationScope) -> None:
        self._head_resource, self._head_scope, self._tail_scope, self._tail_resource = _frame(
            resource, scope
        )
        self._keys: dict[str, bytes] = {}
        self._strings: dict[tuple[str, str], bytes] = {}

    def _attribute(self, key: str, value: str | bool | int | float) -> bytes:
        """Span.attributes (9): a KeyValue, key (1) then value (2); a string-valued one
        from the kept bytes when it was seen lately."""
        if not isinstance(value, str):
            return self._key_value(key, value)
        encoded = self._strings.get((key, value))
        if encoded is None:
            if len(self._strings) >= _CACHE_MAX:
                self._strings.clear()
            encoded = self._strings[key, value] = self._key_value(key, value)
        return encoded

    def _key_value(self, key: str, value: str | bool | int | float) -> bytes:
        encoded_key = self._keys.get(key)
        if encoded_key is None:
            encoded_key = self._keys[key] = _field(b"\x0a", key.encode())
        return _field(b"\x4a", encoded_key + _field(b"\x12", _value(value)))

    def span(self, r: SpanRecord) -> bytes:
        """One Span message's body."""
        attribute = self._attribute
        parts = [
            b"\x0a\x10", r.trace_id.to_bytes(16, "big"),  # trace_id (1)
            b"\x12\x08", r.span_id.to_bytes(8, "big"),  # span_id (2)
        ]  # fmt: skip
        if r.parent_id is not None:
            parts += (b"\x22\x08", r.parent_id.to_bytes(8, "big"))  # parent_span_id (4)
        if r.name:
            parts.append(_field(b"\x2a", r.name.encode()))  # name (5)
        parts.append(_KIND[r.kind])
        if r.start_ns:
            parts += (b"\x39", _PACK_Q(r.start_ns))  # start_time_unix_nano (7, fixed64)
        if r.end_ns:
            parts += (b"\x41", _PACK_Q(r.end_ns))  # end_time_unix_nano (8, fixed64)
        parts += [attribute(k, v) for k, v in r.attributes.items()]
        if r.error_type is None:
            parts.append(_UNSET)
        elif r.error_message:  # Status: message (2), code (3)
            parts.append(_field(b"\x7a", _field(b"\x12", r.error_message.encode()) + _ERROR_CODE))
        else:
            parts.append(_field(b"\x7a", _ERROR_CODE))
        parts.append(_FLAGS)
        return b"".join(parts)

    def request(self, records: Sequence[SpanRecord]) -> bytes:
        """The ExportTraceServiceRequest holding `records`, in order, under the one resource
        and scope: resource_spans (1) { resource, scope_spans (2) { scope, spans (2)...,
        schema_url }, schema_url }."""
        if not records:
            return b""  # no resource_spans at all, as the SDK writes it
        span = self.span
        spans = b"".join([_field(b"\x12", span(r)) for r in records])
        scope_spans = _field(b"\x12", self._head_scope + spans + self._tail_scope)
        return _field(b"\x0a", self._head_resource + scope_spans + self._tail_resource)


def _frame(resource: Resource, scope: InstrumentationScope) -> tuple[bytes, bytes, bytes, bytes]:
    """The encoded resource and scope, and the two schema URLs, as the SDK's encoder writes
    them: ResourceSpans.resource (1), ScopeSpans.scope (1), ScopeSpans.schema_url (3),
    ResourceSpans.schema_url (3)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext

    probe = ReadableSpan(
        "probe", SpanContext(1, 1, is_remote=False), resource=resource,
        instrumentation_scope=scope,
    )  # fmt: skip
    resource_spans = encode_spans([probe]).resource_spans[0]
    scope_spans = resource_spans.scope_spans[0]

    def optional(tag: bytes, text: str) -> bytes:
        return _field(tag, text.encode()) if text else b""

    return (
        _field(b"\x0a", resource_spans.resource.SerializeToString()),
        _field(b"\x0a", scope_spans.scope.SerializeToString()),
        optional(b"\x1a", scope_spans.schema_url),
        optional(b"\x1a", resource_spans.schema_url),
    )
