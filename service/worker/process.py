"""One fetched batch: decode, build each entry's op, commit, count. Top to bottom.

There is no read before the commit and no state between batches: the commit script decides
every entry on the state it finds (the lifecycle's table), so two replicas never conflict
and a redelivered entry meets the state it left (see commit.lua).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from contracts.derived import DeadLetterKind, Source
from contracts.partitioning import partition_for
from contracts.stream_events import RunEntry, StepEntry
from service.core.decode import (
    IGNORED_OTHER,
    Decoded,
    ErrorReport,
    Ignored,
    Rejection,
    Responses,
    decode_entry,
    reported_run,
)
from service.core.fastpath import FastStep
from service.core.lifecycle import Action, Outcome
from service.core.ops import Op, ReportedStep, published, run_op, step_op
from service.errors import INFRASTRUCTURE_ERRORS
from service.storage.store import DeadLetter, Store
from service.worker.telemetry import Telemetry

if TYPE_CHECKING:
    from service.settings import Settings
    from service.storage.pending import Pending

__all__ = ["Entry", "Processor"]

log = logging.getLogger("runsteps.process")

Entry = tuple[bytes, dict[bytes, bytes]]
"""One stream entry as redis-py returns it: (entry id, fields)."""

_OUTCOMES: dict[str, Outcome] = {  # by the script's action letters
    Action.START: Outcome.STARTED,
    Action.START_WAIT: Outcome.STARTED,
    Action.MOVE: Outcome.MOVED,
    Action.MOVE_WAIT: Outcome.MOVED,
    Action.END: Outcome.FINISHED,
    Action.BEGIN_END: Outcome.FINISHED,
    Action.REJECT: Outcome.REJECTED,
    Action.NOTHING: Outcome.DUPLICATE,
    Action.STALE: Outcome.STALE,
}


_SILENT = frozenset((Action.MOVE, Action.NOTHING, Action.STALE, Action.MISMATCH))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


@dataclass(slots=True)
class Batch:
    """A decoded batch: each run's ops in arrival order, what to ack, what is dead."""

    runs: dict[str, list[Op]] = field(default_factory=dict)
    acks: list[bytes] = field(default_factory=list)  # entries with no ops, not dead-lettered
    dead: list[DeadLetter] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)  # when decoding began
    # What decoding saw, added to the telemetry once the batch is committed (a batch
    # decoded again, or isolated entry by entry after a failure, counts once).
    consumed: int = 0
    ignored: Counter[str] = field(default_factory=Counter)  # by event name
    error_events: int = 0
    status_mismatches: Counter[tuple[str, str]] = field(default_factory=Counter)

    def ops(self) -> Iterator[Op]:
        """Every op, runs in order: the order of the commit script's action letters."""
        return (op for run_ops in self.runs.values() for op in run_ops)


class Processor:
    """Applies batches of source entries of one partition to its store."""

    def __init__(
        self, store: Store, pending: Pending, settings: Settings, telemetry: Telemetry
    ) -> None:
        self.store = store
        self.pending = pending
        self.settings = settings
        self.telemetry = telemetry  # shared by the worker's partitions

    def prepare(self, entries: list[Entry]) -> Batch | None:
        """Decode a batch ahead of `process` (the worker does it while the previous batch's
        commit runs); None if decoding raised: `process` then decodes again, and isolates."""
        try:
            return self._decode(entries)
        except Exception:
            return None

    async def process(self, entries: list[Entry], batch: Batch | None = None) -> dict[bytes, str]:
        """Apply one batch (`batch`: these entries, already decoded by `prepare`); every
        entry ends acked with its effects, or stays pending.

        Returns the entries that failed (id -> error), after recording them for the delivery
        cap. A failing batch is retried entry by entry, so one entry that trips a bug never
        holds back the others. Redis being unreachable is not an entry's fault: that raises,
        and the whole batch stays pending for a retry once Redis is back.
        """
        try:
            await self._apply(entries, batch)
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as exc:
            failures = await self._isolate(entries, exc)
            self.telemetry.failed += len(failures)
            log.error("%d entries failed and stay pending: %s", len(failures), list(failures))
            await self.pending.record_failures(failures)
            return failures
        return {}

    async def _apply(self, entries: list[Entry], batch: Batch | None = None) -> None:
        if batch is None:
            batch = self._decode(entries)
        actions = await self.store.commit(batch.runs, batch.acks, batch.dead)
        self._count(batch, actions)
        if Action.MISMATCH in actions:
            await self._dead_letter_mismatched(batch, actions, dict(entries))
        if self.telemetry.observe is not None:
            self.telemetry.observe(len(entries), time.perf_counter() - batch.started)

    async def _isolate(self, entries: list[Entry], exc: Exception) -> dict[bytes, str]:
        """After a batch failed: each entry alone, so only the failing ones stay pending."""
        if len(entries) == 1:
            return {entries[0][0]: _describe(exc)}
        log.warning("batch of %d failed (%s); isolating", len(entries), _describe(exc))
        failures = {}
        for entry in entries:
            try:
                await self._apply([entry])
            except INFRASTRUCTURE_ERRORS:
                raise
            except Exception as one:
                failures[entry[0]] = _describe(one)
        return failures

    def _decode(self, entries: list[Entry]) -> Batch:
        """Decode every entry into ops of its run, an ignored event, or a dead letter."""
        batch = Batch(consumed=len(entries))
        now = time.time()
        for source_id, fields in entries:
            seen_at = int(source_id.partition(b"-")[0]) / 1000  # the entry id's time
            decoded = decode_entry(fields, self.settings.max_payload_bytes, seen_at)
            if isinstance(decoded, Ignored):
                batch.ignored[decoded.event] += 1
                batch.acks.append(source_id)
                continue
            if isinstance(decoded, ErrorReport):
                batch.error_events += 1
                log.warning("a producer forwarded an error event: %s", decoded.message[:200])
                batch.acks.append(source_id)
                continue
            ops = [] if isinstance(decoded, Rejection) else self._ops(source_id, decoded, now)
            rejection = decoded if isinstance(decoded, Rejection) else self._misrouted(ops)
            if rejection is not None:
                dead = DeadLetter(source_id, fields, rejection.to_json(), rejection.kind)
                batch.dead.append(dead)
                continue
            if isinstance(decoded, StepEntry | RunEntry) and decoded.status_mismatch:
                subject = decoded.step if isinstance(decoded, StepEntry) else decoded.run
                batch.status_mismatches[(str(decoded.event), str(subject.status))] += 1
            for op in ops:
                batch.runs.setdefault(op.run_id, []).append(op)
            if not ops:
                batch.acks.append(source_id)
        return batch

    def _ops(self, source_id: bytes, decoded: Decoded, now: float) -> list[Op]:
        """The ops of a decoded step, run, or Responses event (items first, then the run)."""
        if isinstance(decoded, FastStep):
            return [self._step_op(source_id, decoded, Source.ASSISTANTS, now)]
        if isinstance(decoded, StepEntry):
            return [self._step_op(source_id, decoded.step, Source.ASSISTANTS, now)]
        if isinstance(decoded, RunEntry):
            return [run_op(source_id, reported_run(decoded.run), Source.ASSISTANTS)]
        assert isinstance(decoded, Responses)
        run = decoded.run
        # Items name no conversation; an event carrying their response names its one.
        named = None if run is None else (run.thread_id or "", run.assistant_id or "")
        ops = [
            self._step_op(source_id, item, Source.RESPONSES, now, named) for item in decoded.items
        ]
        if run is not None:
            ops.append(run_op(source_id, run, Source.RESPONSES))
        return ops

    def _step_op(
        self,
        source_id: bytes,
        step: ReportedStep,
        source: Source,
        now: float,
        identity: tuple[str, str] | None = None,
    ) -> Op:
        # A stall is timed from when the step was first seen, not created_at alone:
        # replaying old events must not raise a storm of stalls for steps long done.
        deadline = max(step.created_at, now) + self.settings.stall_after_s
        return step_op(source_id, step, source, deadline, identity)

    def _misrouted(self, ops: list[Op]) -> Rejection | None:
        """A rejection if the ops' run belongs to another partition (a producer's bug)."""
        part = self.store.conn.part
        if part.count == 1 or not ops:
            return None
        run_id = ops[0].run_id
        owner = partition_for(run_id, part.count)
        if owner == part.index:
            return None
        return Rejection(
            DeadLetterKind.WRONG_PARTITION,
            f"run {run_id} belongs to partition {owner}, not {part.index}",
        )

    def _count(self, batch: Batch, actions: str) -> None:
        """Count what the batch consumed, decided and published (once: the commit has
        succeeded)."""
        telemetry = self.telemetry
        telemetry.consumed += batch.consumed
        telemetry.error_events += batch.error_events
        telemetry.status_mismatches.update(batch.status_mismatches)
        for event, n in batch.ignored.items():
            known = event in telemetry.ignored or len(telemetry.ignored) < 100
            telemetry.ignored[event if known else IGNORED_OTHER] += n  # bounded
        telemetry.dead_letters.update(d.kind for d in batch.dead)
        for action, n in Counter(actions).items():
            if action != Action.MISMATCH:  # counted as a dead letter
                telemetry.decisions[_OUTCOMES[action]] += n
        ops = batch.ops()
        derived = telemetry.derived
        for op, action in zip(ops, actions, strict=True):
            if action not in _SILENT:
                for type_ in published(op, action):
                    derived[type_] += 1

    async def _dead_letter_mismatched(
        self, batch: Batch, actions: str, fields: dict[bytes, dict[bytes, bytes]]
    ) -> None:
        """Dead-letter the entries the script left unacked: they name another thread or
        assistant than their run's (a producer mixing up ids, or two runs sharing an id)."""
        ops = batch.ops()
        dead: dict[bytes, DeadLetter] = {}
        for op, action in zip(ops, actions, strict=True):
            if action == Action.MISMATCH and op.source_id not in dead:
                error = Rejection(
                    DeadLetterKind.IDENTITY_MISMATCH,
                    f"run {op.run_id}: this entry names thread {op.thread_id or None!r} and "
                    f"assistant {op.assistant_id or None!r}, not those the run is tracked with",
                )
                dead[op.source_id] = DeadLetter(
                    op.source_id, fields[op.source_id], error.to_json(), error.kind
                )
        await self._dead_letter(list(dead.values()))

    async def dead_letter_exhausted(
        self, entries: list[Entry], attempts: dict[bytes, int], last_errors: dict[bytes, str]
    ) -> None:
        """Send entries that failed on every allowed delivery to the DLQ, with the count."""
        dead = []
        for source_id, fields in entries:
            n = attempts.get(source_id, 0)
            last = last_errors.get(source_id, "unknown (no failure recorded)")
            error = Rejection(
                DeadLetterKind.PROCESSING_FAILED,
                f"processing failed on {n} deliveries; last error: {last}",
                [{"attempts": n, "last_error": last}],
            )
            dead.append(DeadLetter(source_id, fields, error.to_json(), error.kind))
        await self._dead_letter(dead)
        await self.pending.forget_failures([d.source_id for d in dead])

    async def _dead_letter(self, dead: list[DeadLetter]) -> None:
        """Send entries found dead after their batch's commit to the DLQ (each acked there)."""
        self.telemetry.dead_letters.update(d.kind for d in dead)
        await self.store.commit({}, [], dead)
