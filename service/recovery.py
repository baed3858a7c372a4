"""Recovery of pending entries and the stalled-step scan: the worker's background loops.

FastStream's batch subscriber reads only new entries (`>`). Entries fetched by a consumer
that died, hung or restarted stay pending; these loops bring them back:
- at start-up a worker first finishes its own pending entries (XREADGROUP from id 0);
- every worker XAUTOCLAIMs entries idle longer than RUNSTEPS_CLAIM_IDLE_MS, in batches,
  and dead-letters those delivered RUNSTEPS_MAX_DELIVERIES times without success.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from contracts.derived import DerivedType, Source, StepStalled, event_id_for

from .derive import stall_member
from .errors import INFRASTRUCTURE_ERRORS
from .queries import step_state
from .trim import trim_source

if TYPE_CHECKING:
    from .pending import Pending
    from .process import Entry, Processor
    from .settings import Settings
    from .store import Store

__all__ = ["Recovery"]

log = logging.getLogger("runsteps.recovery")


class Recovery:
    """Claims and finishes abandoned entries; publishes stalled-step events."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self.store: Store = processor.store
        self.pending: Pending = processor.pending
        self.settings: Settings = processor.settings
        self.last_pass = time.monotonic()  # liveness of the loops, for readiness

    async def finish_own(self) -> int:
        """Process this consumer's own pending entries (left by a previous run of it)."""
        s = self.settings
        after, done = b"0", 0
        while entries := await self.pending.own_pending(s.consumer, after, s.batch_size):
            await self._handle(entries, await self.pending.deliveries(s.consumer, _ids(entries)))
            after = entries[-1][0]
            done += len(entries)
        if done:
            log.info("finished %d pending entries of a previous run", done)
        return done

    async def claim_once(self) -> int:
        """One full XAUTOCLAIM pass over the group's idle entries; returns entries claimed."""
        s = self.settings
        cursor, claimed = b"0-0", 0
        while True:
            cursor, entries, deleted = await self.pending.autoclaim(
                s.consumer, cursor, s.batch_size
            )
            if deleted:
                log.warning("%d pending entries were trimmed before processing", len(deleted))
                await self.pending.ack_deleted(deleted)
            if entries:
                claimed += len(entries)
                await self._handle(
                    entries, await self.pending.deliveries(s.consumer, _ids(entries))
                )
            if cursor == b"0-0":
                return claimed

    async def _handle(self, entries: list[Entry], deliveries: dict[bytes, int]) -> None:
        cap = self.settings.max_deliveries
        # An entry is retried while it has deliveries left; the one past the cap is dead.
        exhausted = [e for e in entries if deliveries.get(e[0], 1) > cap]
        retry = [e for e in entries if deliveries.get(e[0], 1) <= cap]
        if exhausted:
            ids = _ids(exhausted)
            errors = await self.pending.last_failures(ids)
            attempts = {i: deliveries[i] - 1 for i in ids}
            await self.processor.dead_letter_exhausted(exhausted, attempts, errors)
        if retry:
            self.processor.telemetry.reclaimed += len(retry)
            failures = await self.processor.process(retry)
            await self.pending.forget_failures([i for i in _ids(retry) if i not in failures])

    async def scan_stalls(self, now: int | None = None) -> int:
        """Publish run_step.stalled for every step past its deadline (once across workers)."""
        s = self.settings
        now = int(time.time()) if now is None else now
        published = 0
        due, pruned = await self.store.due_stalls(now, limit=500)
        self.processor.telemetry.stall_index_pruned += pruned
        for run_id, step_id in due:
            state = await step_state(self.store.conn, run_id, step_id)
            if state is None or state.status != "in_progress":
                continue
            created = state.created_at if state.created_at is not None else now
            event = StepStalled(
                type=DerivedType.STALLED,
                event_id=event_id_for(run_id, step_id, DerivedType.STALLED),
                source=state.source or Source.ASSISTANTS,
                step_id=step_id,
                run_id=run_id,
                thread_id=state.thread_id,
                assistant_id=state.assistant_id,
                from_status="in_progress",
                to_status="in_progress",
                occurred_at=now,
                stalled_for_s=max(0, int(now - created)),
                stall_after_s=s.stall_after_s,
            )
            body = event.model_dump_json().encode()
            if await self.store.publish_stall(stall_member(run_id, step_id), run_id, step_id, body):
                published += 1
        self.processor.telemetry.derived[DerivedType.STALLED] += published
        return published

    async def run(self) -> None:
        """Claim and scan forever; survive Redis outages with capped exponential backoff."""
        s = self.settings
        claim_every = min(max(s.claim_idle_ms / 4000, 0.05), 5.0)
        next_stall_scan = 0.0
        backoff = 0.1
        while True:
            try:
                claimed = await self.claim_once()
                if time.monotonic() >= next_stall_scan:
                    await self.scan_stalls()
                    self.processor.telemetry.source_trimmed += await trim_source(self.store.conn)
                    next_stall_scan = time.monotonic() + s.stall_scan_s
                self.last_pass = time.monotonic()
                backoff = 0.1
                if not claimed:
                    await asyncio.sleep(claim_every)
            except INFRASTRUCTURE_ERRORS as exc:
                log.warning("redis unavailable in recovery loop (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:  # the loop must outlive any bug; readiness shows it is stuck
                log.exception("recovery loop pass failed; retrying")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)


def _ids(entries: list[Entry]) -> list[bytes]:
    return [i for i, _ in entries]
