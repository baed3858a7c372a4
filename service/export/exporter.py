"""The exporter: one loop per partition reads the derived stream through the exporter's
consumer group, turns each batch into spans, exports them, and only then acks the batch.

A batch's whole path is `_prepare` then `_finish`: decode each entry and validate it, in
full if its type makes spans, else its type only (bad ones are dead letters, with the
reason), read the step extent of each run that ended with steps, map, encode (wire.py, or
the SDK's spans for its encoder); then export (blocking HTTP or gRPC, in a thread), and
dead-letter and ack in one transaction. The next batch is prepared while one is exported.
An export that fails acks nothing: the loop waits (doubling up to
RUNSTEPS_EXPORT_RETRY_MAX_S), then reads its own pending entries again from the start, so a
backend that is down makes the lag grow, loses nothing, and is caught up with by itself
once it answers. Entries another exporter left pending (it died or was scaled away) are
claimed after RUNSTEPS_CLAIM_IDLE_MS. Span ids are deterministic (ids.py): exporting a
batch twice (a crash between export and ack) sends the same spans again, never new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import BaseModel, TypeAdapter, ValidationError
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    ResponseError,
)

from contracts.derived import DERIVED, AnyDerived, DerivedType
from service.errors import INFRASTRUCTURE_ERRORS, ConfigError, RunstepsError
from service.export.mapping import (
    SPAN_TYPES,
    SpanRecord,
    UnmappableError,
    needs_extent,
    spans_of,
)
from service.export.otlp import SpanFactory, build_exporter, build_resource, byte_sender
from service.export.reader import DeadLetter, DerivedReader
from service.export.wire import WireEncoder
from service.storage.client import PartitionClient, connect
from service.storage.keys import partitions

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SpanExporter
    from redis.asyncio import Redis

    from service.settings import Settings
    from service.storage.pending import StreamEntries

__all__ = ["ExportFailedError", "ExportTelemetry", "Exporter"]

log = logging.getLogger("runsteps.export")

_FIRST_BACKOFF_S = 0.1
_TRIMMED = "trimmed from the derived stream (MAXLEN) before it was exported"


class _Typed(BaseModel):
    """A derived event's type, all an event that makes no span is checked for."""

    type: DerivedType


_TYPED = TypeAdapter(_Typed)


class ExportFailedError(RunstepsError):
    """The OTLP backend did not accept a batch of spans (down, refusing, timing out)."""


@dataclass
class ExportTelemetry:
    """What an exporter counts; its /metrics reads these."""

    spans: int = 0  # spans the backend accepted
    export_failures: int = 0  # export attempts that failed: nothing acked, retried
    reclaimed: int = 0  # pending entries taken over from other exporters
    events: Counter[str] = field(default_factory=Counter)  # acked: span, no_span, dead_letter
    dead_letters: Counter[str] = field(default_factory=Counter)  # by kind
    # Called with the seconds of each successful export call.
    observe: Callable[[float], None] | None = None


def _invalid(exc: ValidationError) -> tuple[str, str]:
    """(kind, message) of a derived entry the contract refuses: the first error's place
    and reason, never the payload."""
    errors = exc.errors(include_url=False, include_input=False)
    kind = "invalid_json" if any(e["type"] == "json_invalid" for e in errors) else "invalid_payload"
    first = errors[0] if errors else {"loc": (), "msg": str(exc)}
    where = ".".join(str(p) for p in first["loc"]) or "<root>"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return kind, f"{where}: {first['msg']}{more}"


@dataclass(frozen=True, slots=True)
class _Batch:
    """A batch ready to export: its entries' ids (all acked once exported), its dead
    letters, its spans (and their OTLP request, with runsteps' encoder), what it counts."""

    ids: list[bytes]
    dead: list[DeadLetter]
    records: list[SpanRecord]
    payload: bytes | None
    outcomes: Counter[str]


async def _settled(sending: asyncio.Task[None] | None) -> None:
    """Wait for the batch being sent (its failure raises here); None: nothing is sent."""
    if sending is not None:
        await sending


async def _mend(reader: DerivedReader, exc: Exception, backoff: float) -> None:
    """Say why a pass of the loop failed; a group that was deleted is created again."""
    if isinstance(exc, ExportFailedError):
        log.warning("OTLP export failed (%s); retrying in %.1fs", exc, backoff)
    elif isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP"):
        log.warning("the exporter's group on %s was gone; created again", reader.stream)
        with contextlib.suppress(*INFRASTRUCTURE_ERRORS, ResponseError):
            await reader.ensure_group()
    elif isinstance(exc, INFRASTRUCTURE_ERRORS):
        log.warning("redis unavailable (%s); retrying in %.1fs", exc, backoff)
    else:
        log.exception("export loop pass failed; retrying in %.1fs", backoff, exc_info=exc)


class Exporter:
    """One `runsteps export-otel` process: a loop per partition, one span exporter."""

    def __init__(
        self,
        settings: Settings,
        span_exporter: SpanExporter | None = None,
        resource: Resource | None = None,
    ) -> None:
        self.settings = settings
        self.parts = partitions(settings)
        self.telemetry = ExportTelemetry()
        self.factory = SpanFactory(resource if resource is not None else build_resource())
        self.span_exporter = span_exporter if span_exporter is not None else build_exporter()
        # Spans encoded here and sent by the exporter's client, unless the settings ask for
        # the SDK's encoder or the exporter takes only the SDK's spans (gRPC, a test's).
        self._send = None if settings.export_encoder == "sdk" else byte_sender(self.span_exporter)
        self.wire = WireEncoder(self.factory.resource, self.factory.scope)
        self.redis: Redis | None = None
        self.readers: list[DerivedReader] = []
        self.last_progress = time.monotonic()  # the last read that Redis answered
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (retrying while Redis is unavailable), create the groups, start a loop
        per partition. ConfigError on credentials or permissions no retry can fix."""
        self._stop.clear()
        self.redis = connect(self.settings)
        self.readers = [
            DerivedReader(PartitionClient(self.redis, self.settings, part)) for part in self.parts
        ]
        backoff = _FIRST_BACKOFF_S
        for reader in self.readers:
            while True:
                try:
                    await reader.ensure_group()
                    break
                except (AuthenticationError, AuthorizationError, NoPermissionError) as exc:
                    raise ConfigError(f"Redis refused the exporter: {exc}") from exc
                except ResponseError as exc:
                    if "NOPERM" in str(exc) or "WRONGPASS" in str(exc):
                        raise ConfigError(f"Redis refused the exporter: {exc}") from exc
                    raise
                except INFRASTRUCTURE_ERRORS as exc:
                    log.warning("redis unavailable at start-up (%s); retrying", exc)
                    if await self._pause(backoff):
                        return
                    backoff = min(backoff * 2, 5.0)
        self.last_progress = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._consume(r), name=f"runsteps-export-{r.conn.part.index}")
            for r in self.readers
        ]

    async def stop(self) -> None:
        """Stop reading, let the batches in hand finish (up to RUNSTEPS_SHUTDOWN_GRACE_S),
        then disconnect. What stays pending is read again by this consumer's next start, or
        claimed by another exporter after RUNSTEPS_CLAIM_IDLE_MS."""
        self._stop.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=self.settings.shutdown_grace_s)
            for task in late:
                task.cancel()
            await asyncio.wait(self._tasks, timeout=5)
        self._tasks = []
        # Ends an export's retry wait in its thread; this exporter is not used again.
        await asyncio.to_thread(self.span_exporter.shutdown)
        for reader in self.readers:
            await reader.conn.aclose()
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None

    def alive(self) -> bool:
        """False once no read has succeeded for RUNSTEPS_UNHEALTHY_AFTER_S (Redis away): a
        backend that is down does not count, the loop keeps reading its pending entries."""
        return time.monotonic() - self.last_progress < self.settings.unhealthy_after_s

    async def _pause(self, seconds: float) -> bool:
        """Wait `seconds` or until stopped; True if stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    # -- the loop --------------------------------------------------------------------------

    async def _consume(self, reader: DerivedReader) -> None:
        """Own pending entries first, then new ones; claims now and then; retry forever.

        While one batch is exported and acked (`sending`), the next is read and prepared:
        a batch is sent only once the one before it was acked, so acks stay in order, and a
        failed export drops the batch prepared behind it (unacked: it is read again)."""
        s = self.settings
        claim_every = min(max(s.claim_idle_ms / 4000, 0.05), 5.0)
        after, next_claim, backoff = b"0", 0.0, _FIRST_BACKOFF_S
        sending: asyncio.Task[None] | None = None
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_claim:
                    await _settled(sending)
                    sending = None
                    await self._claim(reader)
                    next_claim = time.monotonic() + claim_every
                if after == b">":
                    entries = await reader.read(b">", s.batch_size, s.block_ms)
                else:  # own pending entries (a previous run's, or a failed export's)
                    entries = await reader.read(after, s.batch_size, None)
                    after = entries[-1][0] if entries else b">"
                self.last_progress = time.monotonic()
                batch = await self._prepare(reader, entries) if entries else None
                await _settled(sending)
                sending = None
                if batch is not None:
                    sending = asyncio.create_task(self._finish(reader, batch))
                backoff = _FIRST_BACKOFF_S
            except Exception as exc:  # the loop outlives anything; its pending entries wait
                after = b"0"
                if sending is not None:  # read again from the start, with what it held
                    with contextlib.suppress(Exception):
                        await sending
                    sending = None
                await _mend(reader, exc, backoff)
                if await self._pause(backoff):
                    return
                backoff = min(backoff * 2, s.export_retry_max_s)
        if sending is not None:  # stopped: the batch in hand is exported and acked
            with contextlib.suppress(Exception):
                await sending

    async def _claim(self, reader: DerivedReader) -> None:
        """Take over and export entries other exporters left idle (one pass)."""
        s = self.settings
        cursor = b"0-0"
        while True:
            cursor, entries = await reader.claim(s.claim_idle_ms, cursor, s.batch_size)
            if entries:
                self.telemetry.reclaimed += len(entries)
                await self._handle(reader, entries)
            if cursor == b"0-0":
                return

    async def _handle(self, reader: DerivedReader, entries: StreamEntries) -> None:
        """One batch, whole: prepared, exported, acked (ExportFailedError: nothing acked)."""
        await self._finish(reader, await self._prepare(reader, entries))

    async def _prepare(self, reader: DerivedReader, entries: StreamEntries) -> _Batch:
        """Validate, map and encode a batch: what _finish exports and acks."""
        valid: list[tuple[bytes, dict[bytes, bytes], AnyDerived]] = []
        dead: list[DeadLetter] = []
        outcomes: Counter[str] = Counter()
        for entry_id, fields in entries:
            data = fields.get(b"data")
            if not fields:
                dead.append(DeadLetter(entry_id, fields, "trimmed", _TRIMMED))
            elif data is None:
                dead.append(DeadLetter(entry_id, fields, "missing_data", "no `data` field"))
            else:
                try:  # validated whole only if it makes spans: 2 in 3 events do not
                    if _TYPED.validate_json(data).type in SPAN_TYPES:
                        valid.append((entry_id, fields, DERIVED.validate_json(data)))
                    else:
                        outcomes["no_span"] += 1
                except ValidationError as exc:
                    dead.append(DeadLetter(entry_id, fields, *_invalid(exc)))
        ends = {e.run_id for _, _, e in valid if needs_extent(e)}
        extents = dict(zip(ends, await asyncio.gather(*map(reader.extent, ends)), strict=True))
        records: list[SpanRecord] = []
        provider = self.settings.export_provider_name
        for entry_id, fields, event in valid:
            try:
                made = spans_of(event, provider, extents.get(event.run_id))
            except UnmappableError as exc:
                dead.append(DeadLetter(entry_id, fields, "unmappable", str(exc)))
                continue
            records.extend(made)
            outcomes["span" if made else "no_span"] += 1
        outcomes["dead_letter"] += len(dead)
        payload = self.wire.request(records) if self._send is not None and records else None
        return _Batch([i for i, _ in entries], dead, records, payload, outcomes)

    async def _finish(self, reader: DerivedReader, batch: _Batch) -> None:
        """Export a prepared batch's spans, then dead-letter and ack it."""
        if batch.records:
            await self._export(batch)
        await reader.settle(batch.ids, batch.dead, self.settings.dlq_maxlen)
        self.telemetry.events.update(batch.outcomes)
        self.telemetry.dead_letters.update(d.kind for d in batch.dead)
        for d in batch.dead:
            log.warning("derived entry %s dead-lettered (%s): %s", d.entry_id, d.kind, d.message)

    @property
    def encoding(self) -> str:
        """Which encoder makes the OTLP requests: `wire` (runsteps') or `sdk`."""
        return "sdk" if self._send is None else "wire"

    async def _export(self, batch: _Batch) -> None:
        """Hand the spans to the OTLP exporter (its own retries inside its timeout)."""
        from opentelemetry.sdk.trace.export import SpanExportResult

        started = time.perf_counter()
        if self._send is not None and batch.payload is not None:
            accepted = await asyncio.to_thread(self._send, batch.payload)
        else:
            spans = self.factory.spans(batch.records)
            result = await asyncio.to_thread(self.span_exporter.export, spans)
            accepted = result is SpanExportResult.SUCCESS
        if not accepted:
            self.telemetry.export_failures += 1
            raise ExportFailedError(f"the backend did not accept {len(batch.records)} spans")
        self.telemetry.spans += len(batch.records)
        if self.telemetry.observe is not None:
            self.telemetry.observe(time.perf_counter() - started)
