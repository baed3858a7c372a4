"""runsteps' own OTLP encoder (service/export/wire.py) against the SDK's: the same bytes.

The SDK's encoder is the reference: every request wire.py writes must be, byte for byte,
what `encode_spans(...).SerializePartialToString()` writes for the same spans (the SDK's
OTLP/HTTP exporter sends exactly that). Checked on span records of any shape (hypothesis)
and on the mapping's own spans of both dialects; the integration suite checks the same on
every recorded stream through a real HTTP receiver (tests/integration/test_export.py).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource

from contracts.derived import DERIVED
from service.export.mapping import SpanKind, SpanRecord, spans_of
from service.export.otlp import SpanFactory, build_resource
from service.export.wire import WireEncoder
from tests.unit.test_export_mapping import run_end, step_end


def sdk_bytes(factory: SpanFactory, records: list[SpanRecord]) -> bytes:
    """What the SDK's OTLP/HTTP exporter would send for `records`."""
    encoded: bytes = encode_spans(factory.spans(records)).SerializePartialToString()
    return encoded


_values = st.one_of(
    st.text(max_size=40),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)
_records = st.builds(
    SpanRecord,
    name=st.text(max_size=30),
    trace_id=st.integers(min_value=1, max_value=2**128 - 1),
    span_id=st.integers(min_value=1, max_value=2**64 - 1),
    parent_id=st.none() | st.integers(min_value=1, max_value=2**64 - 1),
    kind=st.sampled_from(list(SpanKind)),
    start_ns=st.integers(min_value=0, max_value=2**64 - 1),
    end_ns=st.integers(min_value=0, max_value=2**64 - 1),
    attributes=st.dictionaries(st.text(min_size=1, max_size=20), _values, max_size=8),
    error_type=st.none() | st.text(max_size=10),
    error_message=st.none() | st.text(max_size=30),
)


@settings(max_examples=300)
@given(st.lists(_records, max_size=6), st.dictionaries(st.text(min_size=1), _values, max_size=3))
def test_any_spans_encode_to_the_sdks_bytes(
    records: list[SpanRecord], resource_attributes: dict[str, Any]
) -> None:
    """Any ids, names, times, attribute types (strings, bools, negative ints, doubles),
    errors with and without a message, any resource: the SDK's exact bytes."""
    factory = SpanFactory(Resource(resource_attributes))
    wire = WireEncoder(factory.resource, factory.scope)
    assert wire.request(records) == sdk_bytes(factory, records)


def test_the_mappings_spans_encode_to_the_sdks_bytes() -> None:
    """Chat, tool and run spans of both dialects, failed ones with their error, under the
    exporter's own resource (service.name, schema URL) and scope; encoded twice, so the
    second request is made from the encoder's kept attribute bytes."""
    events = [
        step_end(),
        step_end("failed", last_error={"code": "rate_limit_exceeded", "message": "slow down"}),
        step_end("cancelled", usage=None, duration_s=None),
        step_end(step_type="tool_calls", tools=[
            {"id": "call_1", "type": "function", "name": "get_weather"},
            {"id": "call_2", "type": "file_search", "name": None},
        ]),
        step_end(source="responses", thread_id=None, assistant_id=None,
                 step_type="mcp_call", tools=[{"id": "mcp_1", "type": "mcp", "name": "search"}]),
        run_end(model="gpt-4o", cost_usd=0.001234567, priced_model="gpt-4o"),
        run_end("failed", last_error={"code": "server_error", "message": "boom"}),
        run_end("incomplete", source="responses", thread_id=None, assistant_id=None,
                incomplete_details={"reason": "max_output_tokens"}),
    ]  # fmt: skip
    records = [r for e in events for r in spans_of(DERIVED.validate_python(e), "openai")]
    factory = SpanFactory(build_resource())
    wire = WireEncoder(factory.resource, factory.scope)
    assert len(records) == len(events) + 1, "the two-call step makes two spans"
    for _ in range(2):
        assert wire.request(records) == sdk_bytes(factory, records)
    decoded = ExportTraceServiceRequest.FromString(wire.request(records))
    assert decoded.resource_spans[0].scope_spans[0].scope.name == "runsteps.export"


def test_the_kept_attribute_bytes_stay_bounded() -> None:
    """Ids never repeat: the encoder's kept attribute bytes are cleared past their bound and
    what it writes is unchanged."""
    factory = SpanFactory(build_resource())
    wire = WireEncoder(factory.resource, factory.scope)
    records = [
        SpanRecord("chat", 1, i + 1, 1, SpanKind.CLIENT, 0, 1, {"runsteps.step.id": f"step_{i}"})
        for i in range(10_000)
    ]
    for start in range(0, len(records), 500):
        batch = records[start : start + 500]
        assert wire.request(batch) == sdk_bytes(factory, batch)
    assert 0 < len(wire._strings) <= 4096
