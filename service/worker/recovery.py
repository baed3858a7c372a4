"""Recovery of pending entries and the stalled-step scan: the worker's background loops.

FastStream's batch subscriber reads only new entries (`>`). Entries fetched by a consumer
that died, hung or restarted stay pending; these loops bring them back:
- at start-up a worker first finishes its own pending entries (XREADGROUP from id 0);
- every worker XAUTOCLAIMs entries idle longer than RUNSTEPS_CLAIM_IDLE_MS, in batches,
  and dead-letters those delivered RUNSTEPS_MAX_DELIVERIES times without success;
- and removes consumers dead for 10 claim times with nothing pending (a worker that is gone
  leaves its name in the group: XINFO CONSUMERS would list every dead one forever).
The same loop trims the source stream (trim.py), first thing in each pass, so that a pass
whose claims Redis refuses for lack of memory still frees what every group has acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, cast

import orjson

from contracts.derived import DerivedType, Source, StepStalled, event_id_for
from service.core.layout import RunField, stall_member
from service.errors import INFRASTRUCTURE_ERRORS
from service.storage.reads import step_state
from service.storage.trim import memory_use, trim_source
from service.worker.heal import group_lost

if TYPE_CHECKING:
    from service.settings import Settings
    from service.storage.pending import Pending
    from service.storage.store import Store
    from service.worker.process import Entry, Processor

__all__ = ["Recovery"]

# A consumer idle this many claim times with nothing pending is dead: a live one polls every
# RUNSTEPS_BLOCK_MS, and whatever a dead one held was claimed after one claim time.
DEAD_AFTER_CLAIMS = 10
# How often, at most, the loop asks Redis how full it is (INFO memory): near maxmemory a
# worker fills the headroom with derived events quickly.
MEMORY_CHECK_S = 1.0

log = logging.getLogger("runsteps.recovery")


class Recovery:
    """Claims and finishes abandoned entries; publishes stalled-step events."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self.store: Store = processor.store
        self.pending: Pending = processor.pending
        self.settings: Settings = processor.settings
        self.last_pass = time.monotonic()  # liveness of the loops, for readiness
        self.memory_tight = False  # Redis near its maxmemory at the last check

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

    async def remove_dead_consumers(self) -> list[str]:
        """Delete the group's dead consumers (long idle, nothing pending), never this one."""
        s = self.settings
        removed = await self.pending.remove_dead_consumers(
            s.consumer, s.claim_idle_ms * DEAD_AFTER_CLAIMS
        )
        if removed:
            self.processor.telemetry.consumers_removed += len(removed)
            log.info("removed dead consumers (idle, nothing pending): %s", ", ".join(removed))
        return removed

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
            try:
                failures = await self.processor.process(retry)
            except INFRASTRUCTURE_ERRORS:  # e.g. maxmemory: Redis refuses the commit's writes
                with contextlib.suppress(*INFRASTRUCTURE_ERRORS):
                    await self.pending.uncount(
                        self.settings.consumer, {i: deliveries.get(i, 1) for i in _ids(retry)}
                    )
                raise
            await self.pending.forget_failures([i for i in _ids(retry) if i not in failures])

    async def trim(self, due: bool = True) -> int:
        """Trim the source stream, returning the entries removed: when `due`, of what every
        group acked past RUNSTEPS_SOURCE_RETENTION_S; whenever Redis is near its maxmemory
        (RUNSTEPS_MEMORY_PRESSURE_RATIO), of all that every group acked, whatever its age.
        Such an episode is logged when it starts and when it ends."""
        s, telemetry = self.settings, self.processor.telemetry
        use = await memory_use(self.store.conn)
        tight = use is not None and use >= s.memory_pressure_ratio
        if tight != self.memory_tight:
            self.memory_tight = tight
            _log_memory(tight, use, s.memory_pressure_ratio, self.store.conn.part.source_stream)
        if not (due or tight):
            return 0
        trimmed = await trim_source(self.store.conn, 0 if tight else s.source_retention_s)
        telemetry.source_trimmed += trimmed
        if tight:
            telemetry.source_trimmed_early += trimmed
        return trimmed

    async def scan_budgets(self, now: float | None = None) -> int:
        """Publish run.budget_exceeded (seconds) for each run still in progress past
        RUNSTEPS_BUDGET_SECONDS (once across workers); 0 when that budget is off."""
        budget = self.settings.budget_seconds
        if budget is None:
            return 0
        now = time.time() if now is None else now
        published = 0
        conn = self.store.conn
        for member, run_id, passed_at in await self.store.due_budgets(now, limit=500):
            thread, assistant = cast(
                "list[bytes | None]",
                await conn.redis.hmget(
                    conn.keys.run(run_id), RunField.THREAD.value, RunField.ASSISTANT.value
                ),
            )
            ids = orjson.dumps({
                "source": Source.RESPONSES if member[0] == "r" else Source.ASSISTANTS,
                "run_id": run_id,
                "thread_id": thread.decode() if thread else None,
                "assistant_id": assistant.decode() if assistant else None,
            })[1:-1]  # fmt: skip
            value = round(now - (passed_at - budget), 3)
            if await self.store.publish_budget(
                member, run_id, ids=ids, budget=repr(budget), value=repr(value),
                now=repr(round(now, 3)),
            ):  # fmt: skip
                published += 1
                self.processor.telemetry.derived[DerivedType.RUN_BUDGET_EXCEEDED] += 1
                self.processor.telemetry.budget_exceeded("seconds")
        return published

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
                tools=state.tools,
                from_status="in_progress",
                to_status="in_progress",
                occurred_at=now,
                # Since created_at, and at least the threshold (a step dated in the future
                # stalls, timed from when it was first seen).
                stalled_for_s=max(s.stall_after_s, int(now - created)),
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
        next_claim = next_stall_scan = next_reap = 0.0
        backoff = 0.1
        while True:
            try:
                scan_due = time.monotonic() >= next_stall_scan
                await self.trim(due=scan_due)  # first: claims may be refused for memory
                claimed = 0
                if time.monotonic() >= next_claim:
                    claimed = await self.claim_once()
                    next_claim = time.monotonic() + (0 if claimed else claim_every)
                if scan_due:
                    await self.scan_stalls()
                    await self.scan_budgets()
                    next_stall_scan = time.monotonic() + s.stall_scan_s
                if time.monotonic() >= next_reap:
                    await self.remove_dead_consumers()
                    next_reap = time.monotonic() + s.claim_idle_ms / 1000
                self.last_pass = time.monotonic()
                backoff = 0.1
                if not claimed:
                    await asyncio.sleep(min(claim_every, MEMORY_CHECK_S))
            except INFRASTRUCTURE_ERRORS as exc:
                log.warning("redis unavailable in recovery loop (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:  # the loop must outlive any bug; readiness shows it
                if group_lost(exc):  # the healer creates it again (heal.py)
                    log.info("consumer group gone in recovery loop; retrying")
                else:
                    log.exception("recovery loop pass failed; retrying")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)


def _log_memory(tight: bool, use: float | None, ratio: float, stream: str) -> None:
    if tight:
        log.warning(
            "redis is near maxmemory (%.0f%% used, RUNSTEPS_MEMORY_PRESSURE_RATIO %.2f): "
            "trimming from %s every entry all groups acked, regardless of "
            "RUNSTEPS_SOURCE_RETENTION_S, until memory is lower",
            100 * (use or 0),
            ratio,
            stream,
        )
    else:
        used = "no maxmemory" if use is None else f"{100 * use:.0f}% used"
        log.info("redis memory no longer tight (%s): %s keeps its retention", used, stream)


def _ids(entries: list[Entry]) -> list[bytes]:
    return [i for i, _ in entries]
