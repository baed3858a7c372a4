"""One fetched batch of a partition: built (core.batch), committed, counted. Top to bottom.

There is no read before the commit and no state between batches: the commit script decides
every entry on the state it finds (the lifecycle's table), so two replicas never conflict
and a redelivered entry meets the state it left (see commit.lua).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import TYPE_CHECKING

from contracts.derived import STEP_END_TYPES, DeadLetterKind
from service.core.batch import Batch, DeadLetter, Entry, Partitioning, build_batch, describe
from service.core.decode import IGNORED_OTHER, Rejection
from service.core.lifecycle import Action
from service.core.ops import closed_step
from service.core.prices import Prices, bundled_prices
from service.core.published import published
from service.errors import INFRASTRUCTURE_ERRORS

if TYPE_CHECKING:
    from service.core.ops import Op, RunEnded
    from service.settings import Settings
    from service.storage.pending import Pending
    from service.storage.store import Store
    from service.worker.telemetry import Telemetry

__all__ = ["Entry", "Processor"]

# Globals, not `Action.X` per op (ARCHITECTURE.md, "Hot path rules").
_END, _BEGIN_END, _MISMATCH = Action.END, Action.BEGIN_END, Action.IDENTITY_MISMATCH

log = logging.getLogger("runsteps.process")


class Processor:
    """Applies batches of source entries of one partition to its store."""

    def __init__(
        self,
        store: Store,
        pending: Pending,
        settings: Settings,
        telemetry: Telemetry,
        prices: Prices | None = None,
    ) -> None:
        self.store = store
        self.pending = pending
        self.settings = settings
        self.telemetry = telemetry  # shared by the worker's partitions
        self.prices = bundled_prices() if prices is None else prices
        part = store.conn.part
        self._partitioning = Partitioning(part.index, part.count)

    def build(self, entries: list[Entry]) -> Batch:
        """Decode `entries` into a batch (pure: the worker runs it while the previous
        batch's commit is in flight)."""
        s = self.settings
        return build_batch(
            entries,
            max_payload_bytes=s.max_payload_bytes,
            stall_after_s=s.stall_after_s,
            now=time.time(),
            partitioning=self._partitioning,
            prices=self.prices,
        )

    async def process(self, entries: list[Entry]) -> dict[bytes, str]:
        """Build and commit one batch (see `commit`)."""
        return await self.commit(entries, self.build(entries))

    async def commit(self, entries: list[Entry], batch: Batch) -> dict[bytes, str]:
        """Commit `batch` (built from `entries`); every entry ends acked with its effects,
        or stays pending.

        Returns the entries that failed (id -> error), after recording them for the delivery
        cap. A failing batch is retried entry by entry, so one entry that trips a bug never
        holds back the others. Redis being unreachable is not an entry's fault: that raises,
        and the whole batch stays pending for a retry once Redis is back.
        """
        failures = dict(batch.failed)
        try:
            await self._apply(entries, batch)
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as exc:
            failures |= await self._isolate(entries, exc)
        if failures:
            self.telemetry.failed += len(failures)
            log.error("%d entries failed and stay pending: %s", len(failures), list(failures))
            await self.pending.record_failures(failures)
        return failures

    async def _apply(self, entries: list[Entry], batch: Batch) -> None:
        committed = await self.store.apply(batch.runs, batch.acks, batch.dead)
        done = committed.actions
        self._count(batch, done)
        self._count_also(committed.also)
        if any(action is _MISMATCH for _, action in done):
            await self._dead_letter_mismatched(done, dict(entries))
        if self.telemetry.observe is not None:
            self.telemetry.observe(len(entries), time.perf_counter() - batch.started)

    async def _isolate(self, entries: list[Entry], exc: Exception) -> dict[bytes, str]:
        """After a batch failed: each entry alone, so only the failing ones stay pending."""
        if len(entries) == 1:
            return {entries[0][0]: describe(exc)}
        log.warning("batch of %d failed (%s); isolating", len(entries), describe(exc))
        failures = {}
        for entry in entries:
            one = self.build([entry])
            if one.failed:
                continue  # already recorded by the whole batch's build
            try:
                await self._apply([entry], one)
            except INFRASTRUCTURE_ERRORS:
                raise
            except Exception as error:
                failures[entry[0]] = describe(error)
        return failures

    def _count(self, batch: Batch, done: list[tuple[Op, Action]]) -> None:
        """Count what the batch consumed, decided and published (once: the commit has
        succeeded)."""
        telemetry = self.telemetry
        telemetry.consumed += batch.consumed - len(batch.failed)
        telemetry.error_events += batch.error_events
        telemetry.status_mismatches.update(batch.status_mismatches)
        for message in batch.errors:
            log.warning("a producer forwarded an error event: %s", message[:200])
        for event, n in batch.ignored.items():
            known = event in telemetry.ignored or len(telemetry.ignored) < 100
            telemetry.ignored[event if known else IGNORED_OTHER] += n  # bounded
        telemetry.dead_letters.update(d.kind for d in batch.dead)
        decisions = Counter(action for _, action in done)
        for action, n in decisions.items():
            outcome = action.outcome
            if outcome is not None:  # a mismatch is counted as a dead letter
                telemetry.decisions[outcome] += n
        derived = telemetry.derived
        for op, action in done:
            for type_ in published(op.kind, action, op.end_type, op.usage != ""):
                derived[type_] += 1
            if action is _END or action is _BEGIN_END:  # it ended its subject
                if op.step_ended is not None:
                    telemetry.step_ended(*op.step_ended)
                elif op.run_ended is not None:
                    self._count_run_ended(op.run_ended)

    def _count_run_ended(self, ended: RunEnded) -> None:
        """The domain metrics of a run that this commit ended."""
        telemetry = self.telemetry
        telemetry.run_ended(ended.source, ended.status, ended.model, ended.usage, ended.cost_usd)
        if ended.usage is not None and ended.cost_usd is None:
            telemetry.unpriced(ended.model)

    def _count_also(self, also: list[str]) -> None:
        """Count what the commit published beyond the actions' declaration: the ends of
        steps their runs' ends closed (in the domain metrics too), budget events."""
        for item in also:
            if item.startswith("{"):  # a closed step's end event
                ended = closed_step(item)
                _, status, *_ = ended  # StepEnded: (source, status, ...)
                self.telemetry.derived[STEP_END_TYPES[status]] += 1
                self.telemetry.step_ended(*ended)
                continue
            type_, _, limit = item.partition("|")
            self.telemetry.derived[type_] += 1
            if limit:
                self.telemetry.budget_exceeded(limit)

    async def _dead_letter_mismatched(
        self, done: list[tuple[Op, Action]], fields: dict[bytes, dict[bytes, bytes]]
    ) -> None:
        """Dead-letter the entries the script left unacked: they name another thread or
        assistant than their run's (a producer mixing up ids, or two runs sharing an id)."""
        dead: dict[bytes, DeadLetter] = {}
        for op, action in done:
            if action is Action.IDENTITY_MISMATCH and op.source_id not in dead:
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
        await self.store.apply({}, [], dead)
