"""The application layer: one fetched batch -> decode, read state, decide, commit.

Decisions are made in Python by the pure lifecycle; the store applies each with a
compare-and-set on the step's version, atomically with the source XACK. A conflict means
another worker moved the step meanwhile: those entries are re-read and decided again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    ReadOnlyError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from contracts.derived import DeadLetterKind
from contracts.partitioning import partition_for
from contracts.run_step import StepStatus

from .decode import Delta, Rejection, Step, decode_entry
from .derive import derive
from .errors import CommitConflictError
from .lifecycle import Decision, Outcome, decide
from .store import Commit, CommitResult, DeadLetter, StepRef, Store, Tracked, encode_state

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["INFRASTRUCTURE_ERRORS", "Entry", "Processor", "Telemetry"]

log = logging.getLogger("runsteps.process")

Entry = tuple[bytes, dict[bytes, bytes]]
"""One stream entry as redis-py returns it: (entry id, fields)."""

INFRASTRUCTURE_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    ReadOnlyError,
    SlotNotCoveredError,
    TryAgainError,
    OSError,
)
"""Errors that say Redis (or a cluster node) is unavailable, not that an entry is bad."""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


@dataclass
class Telemetry:
    """What a worker's processors count, and the hook told about each batch."""

    stats: Counter[str] = field(default_factory=Counter)
    observe: Callable[[int, float], None] | None = None


PLAN_SLICE = 50
"""Entries planned between two turns of the event loop while a commit call is in flight."""

FLUSH_AFTER_S = 0.02
"""How long a full batch's commit may wait for the next batch before it is sent alone."""


@dataclass(slots=True)
class _Plan:
    """One batch, decided: what its commit call sends, and the states it will leave."""

    entries: list[Entry]
    steps: list[tuple[bytes, Step]] = field(default_factory=list)
    commits: list[Commit] = field(default_factory=list)
    acks: list[bytes] = field(default_factory=list)  # entries acked without a script
    dead: list[DeadLetter] = field(default_factory=list)
    predicted: dict[StepRef, Tracked] = field(default_factory=dict)  # state after
    conflicts: list[tuple[bytes, Step]] = field(default_factory=list)  # to decide again
    started: float = field(default_factory=time.perf_counter)
    # Planned on another batch's predicted states, not yet committed: those steps.
    carried: set[StepRef] = field(default_factory=set)
    decoded_acks: int = 0  # how many of `acks` came from decoding (deltas), not planning

    def replan(self) -> _Plan:
        """The batch as decoded, before planning: to plan it again on fresh state."""
        acks = self.acks[: self.decoded_acks]
        return _Plan(
            self.entries,
            self.steps,
            acks=acks,
            dead=self.dead,
            started=self.started,
            decoded_acks=len(acks),
        )


@dataclass(slots=True)
class _Flight:
    """A plan whose commit call is sent and not yet observed."""

    plan: _Plan
    missed: asyncio.Future[set[StepRef]]  # resolves to the steps whose commit missed


class Processor:
    """Applies batches of source entries to the store.

    Between batches it holds at most one planned, unsent commit and one sent, unobserved
    commit (see `process(more=True)`); a lock keeps batches one at a time, whether the
    subscriber's (planned in the background), the recovery loop's or a flush.
    """

    def __init__(self, store: Store, settings: Settings, shared: Telemetry | None = None) -> None:
        self.store = store
        self.settings = settings
        # The processors of all partitions of a worker share one Telemetry.
        self.telemetry = Telemetry() if shared is None else shared
        # Versions must be unique per write, not counters: a chained write in one batch
        # expects the version its own previous write set, which no other worker can forge.
        self._token = secrets.token_hex(3)
        self._seq = itertools.count()
        self._lock = asyncio.Lock()
        self._deferred: _Plan | None = None  # planned, not sent
        self._flight: _Flight | None = None  # sent, not observed
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[dict[bytes, str]]] = set()
        self._background: set[asyncio.Task[None]] = set()  # full batches being planned
        self._contended_until = 0.0  # monotonic time: no deferred commit before it

    @property
    def stats(self) -> Counter[str]:
        """Counts by outcome, DLQ kind, etc. (shared by the worker's partitions)."""
        return self.telemetry.stats

    @property
    def observe(self) -> Callable[[int, float], None] | None:
        """Called after each batch with (entries, seconds): the metrics hook."""
        return self.telemetry.observe

    @observe.setter
    def observe(self, hook: Callable[[int, float], None] | None) -> None:
        self.telemetry.observe = hook

    async def process(self, entries: list[Entry], *, more: bool = False) -> dict[bytes, str]:
        """Apply one batch; every entry ends acked with its effects, or stays pending.

        Returns the entries that failed (id -> error), after recording them for the delivery
        cap. A failing batch is retried entry by entry, so one bad entry never holds back the
        others. Redis being unreachable is not an entry's fault: that raises, and the whole
        batch stays pending for a retry once Redis is back.

        `more` says another batch follows at once (this one was full: a backlog). Then this
        returns as soon as the batch is taken, with nothing to report: it is planned in the
        background, so the subscriber fetches the next batch meanwhile (batches are still
        planned one at a time, in order; `planned()` waits for it). Its commit goes out with
        the next batch, right after that batch's state reads, and is observed only with the
        batch after that: Redis runs it while this process plans the next batch, then
        decodes and reads the one after. Failures are recorded and logged, not returned, and
        so is Redis being unreachable (the claim loop takes such entries up again). A commit
        waits at most FLUSH_AFTER_S for a next batch; `flush()` sends it at once.

        For `defer_pause_s` after a commit conflict, a full batch's commit goes out as soon
        as it is planned, and is observed with the next batch: another replica is then
        moving this partition's steps, and the longer a step's state waits planned but
        unsent, the likelier the other replica ends a step whose start this one holds (the
        start then arrives stale: no run_step.started for that step).
        """
        await self._lock.acquire()
        if not more:
            try:
                return await self._batch(entries, more=False)
            finally:
                self._lock.release()
        task = asyncio.create_task(self._in_background(entries))
        self._background.add(task)  # keep a reference until it is done
        task.add_done_callback(self._background.discard)
        return {}

    async def planned(self) -> None:
        """Wait until no batch is being planned in the background."""
        async with self._lock:
            pass

    async def _in_background(self, entries: list[Entry]) -> None:
        """`_batch(more=True)` with the lock `process` took, released when done."""
        try:
            await self._batch(entries, more=True)
        except INFRASTRUCTURE_ERRORS as exc:
            log.error("a batch of %d stays pending: %s", len(entries), _describe(exc))
        except Exception:  # no caller to raise to: say it, the claim loop retries the batch
            log.exception("a batch of %d stays pending", len(entries))
        finally:
            self._lock.release()

    async def _batch(self, entries: list[Entry], *, more: bool) -> dict[bytes, str]:
        """`process` with the lock held."""
        deferred, self._deferred = self._deferred, None
        flight, self._flight = self._flight, None
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if deferred is None and flight is None and not more:
            return await self._guarded(entries)
        try:
            plan, failures, launched = await self._overlap(flight, deferred, entries)
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as exc:
            # Start again without overlap (isolating bad entries): every commit is
            # idempotent per entry, whatever of the earlier batches already went out.
            log.warning("overlapped batches failed (%s); one by one", _describe(exc))
            failures = {}
            if flight is not None:
                await _observe(flight)
                failures |= await self._guarded(flight.plan.entries)
            if deferred is not None:
                failures |= await self._guarded(deferred.entries)
            return failures | await self._guarded(entries)
        if more and time.monotonic() >= self._contended_until:
            self._deferred, self._flight = plan, launched  # sent with the next batch
        else:  # sent now; after a conflict (see `process`) observed with the next batch
            if launched is not None:  # one commit in flight at a time: land that first
                landed, missed = await self._land(launched)
                failures |= landed
                plan = await self._fresh(plan, missed)
            if not more:
                return failures | await self._send_guarded(plan)
            self.stats["undeferred"] += 1
            self._flight = self._launch(plan)
        loop = asyncio.get_running_loop()
        self._flush_timer = loop.call_later(FLUSH_AFTER_S, self._flush_soon)
        return failures

    async def flush(self) -> dict[bytes, str]:
        """Observe the commit in flight and send a deferred one now (done before a stop)."""
        async with self._lock:
            deferred, self._deferred = self._deferred, None
            flight, self._flight = self._flight, None
            failures: dict[bytes, str] = {}
            if flight is not None:
                failures, missed = await self._land(flight)
                if deferred is not None:
                    deferred = await self._fresh(deferred, missed)
            if deferred is not None:
                failures |= await self._send_guarded(deferred)
            return failures

    def _flush_soon(self) -> None:
        self._flush_timer = None
        task = asyncio.create_task(self.flush())
        self._flushing.add(task)  # keep a reference until it is done
        task.add_done_callback(self._flushing.discard)

    async def _send_guarded(self, plan: _Plan) -> dict[bytes, str]:
        """Send a planned batch's commit now; isolate its entries if that fails."""
        return await self._guarded(plan.entries, lambda _: self._send(plan))

    async def _guarded(
        self,
        entries: list[Entry],
        run: Callable[[list[Entry]], Awaitable[None]] | None = None,
    ) -> dict[bytes, str]:
        """Run `run` (default: process from scratch); isolate entries if it fails."""
        try:
            await (run or self._process)(entries)
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as exc:
            if len(entries) == 1:
                failures = {entries[0][0]: _describe(exc)}
            else:
                log.warning("batch of %d failed (%s); isolating", len(entries), _describe(exc))
                failures = {}
                for entry in entries:
                    try:
                        await self._process([entry])
                    except INFRASTRUCTURE_ERRORS:
                        raise
                    except Exception as one:
                        failures[entry[0]] = _describe(one)
            self.stats["failed"] += len(failures)
            log.error("%d entries failed and stay pending: %s", len(failures), list(failures))
            await self.store.record_failures(failures)
            return failures
        return {}

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
            dead.append(DeadLetter(source_id, fields, error.to_json()))
        self.stats[f"dlq.{DeadLetterKind.PROCESSING_FAILED}"] += len(dead)
        await self.store.apply([], [], dead)
        await self.store.forget_failures([d.source_id for d in dead])

    def _decode(self, entries: list[Entry]) -> _Plan:
        """Decode a batch: steps to decide on, plain acks (deltas), dead letters."""
        part = self.store.part
        plan = _Plan(entries)
        for source_id, fields in entries:
            decoded = decode_entry(fields, self.settings.max_payload_bytes)
            if isinstance(decoded, Rejection):
                plan.dead.append(DeadLetter(source_id, fields, decoded.to_json()))
                self.stats[f"dlq.{decoded.kind}"] += 1
            elif isinstance(decoded, Delta):
                plan.acks.append(source_id)
                self.stats["deltas"] += 1
            elif part.count > 1 and partition_for(decoded.run_id, part.count) != part.index:
                wrong = Rejection(
                    DeadLetterKind.WRONG_PARTITION,
                    f"run {decoded.run_id} belongs to partition "
                    f"{partition_for(decoded.run_id, part.count)}, not {part.index}",
                )
                plan.dead.append(DeadLetter(source_id, fields, wrong.to_json()))
                self.stats[f"dlq.{wrong.kind}"] += 1
            else:
                plan.steps.append((source_id, decoded))
        plan.decoded_acks = len(plan.acks)
        self.stats["consumed"] += len(entries)
        return plan

    async def _process(self, entries: list[Entry]) -> None:
        plan = self._decode(entries)
        states = await self.store.read(_refs(plan.steps))
        self._plan(plan, states)
        await self._send(plan)

    async def _overlap(
        self, flight: _Flight | None, deferred: _Plan | None, entries: list[Entry]
    ) -> tuple[_Plan, dict[bytes, str], _Flight | None]:
        """Plan `entries` while Redis runs the deferred batch's commit.

        Returns the plan, the failures of the batch in flight (now observed), and the flight
        of the deferred batch's commit (sent, not observed). This batch's state reads go
        first, so they are not held behind the deferred commit; steps the batches in flight
        and deferred write are not read: this batch starts from the states those commits
        will leave. Should any of them not land (another worker moved the step), the batches
        planned on them are planned again from fresh reads.
        """
        plan = self._decode(entries)
        ids = _refs(plan.steps)
        ahead = {} if deferred is None else deferred.predicted
        landing = {} if flight is None else flight.plan.predicted
        states = await self.store.read([i for i in ids if i not in ahead and i not in landing])
        failures: dict[bytes, str] = {}
        if flight is not None:
            failures, missed = await self._land(flight)
            if deferred is not None:
                deferred = await self._fresh(deferred, missed)
            ahead = {} if deferred is None else deferred.predicted
            stale = []
            for i in ids:
                if i in states or i in ahead:
                    continue
                if i in landing and i not in missed:  # committed now, as predicted
                    states[i] = landing[i]
                else:  # missed, or predicted only by the deferred batch before its re-plan
                    stale.append(i)
            states |= await self.store.read(stale)
        if deferred is None:
            self._plan(plan, states)
            return plan, failures, None
        launched = self._launch(deferred)
        carried = {i: ahead[i] for i in ids if i in ahead}
        states |= carried
        written = set(carried)
        try:
            # In slices, yielding between them: asyncio writes what the socket did not take
            # at once only while the loop runs, and Redis starts on the commit call only
            # once all of it has arrived.
            for at in range(0, len(plan.steps), PLAN_SLICE):
                await asyncio.sleep(0)
                self._plan(plan, states, written, plan.steps[at : at + PLAN_SLICE])
        except BaseException:
            await _observe(launched)  # never leave the deferred commit unobserved
            raise
        plan.carried = set(carried)
        return plan, failures, launched

    def _launch(self, plan: _Plan) -> _Flight:
        task = asyncio.ensure_future(self._apply(plan))
        task.add_done_callback(_retrieve)
        return _Flight(plan, task)

    async def _land(self, flight: _Flight) -> tuple[dict[bytes, str], set[StepRef]]:
        """Observe a commit in flight and retry its conflicts.

        Returns its failures and the steps whose commit missed: a batch planned on the
        states it predicted for them must be planned again (`_fresh`).
        """
        missed = set(flight.plan.predicted)  # should observing it fail: trust none

        async def settle(_: list[Entry]) -> None:
            nonlocal missed
            missed = await flight.missed
            await self._retry(flight.plan)

        return await self._guarded(flight.plan.entries, settle), missed

    async def _fresh(self, plan: _Plan, missed: set[StepRef]) -> _Plan:
        """`plan`, or if it carried states that `missed`, the batch planned again on fresh
        state."""
        if not missed & plan.carried:
            return plan
        again = plan.replan()
        self._plan(again, await self.store.read(_refs(again.steps)))
        return again

    async def _apply(self, plan: _Plan) -> set[StepRef]:
        """Send a plan's commits, acks and dead letters; returns steps whose commit missed."""
        results = await self.store.apply(plan.commits, plan.acks, plan.dead)
        missed: set[StepRef] = set()
        conflicts: set[bytes] = set()
        published: list[str] = []
        for commit, result in zip(plan.commits, results, strict=True):
            if result is CommitResult.DONE:  # count what was published, exactly once
                published += commit.types
            else:
                missed.add((commit.run_id, commit.step_id))
                if result is CommitResult.CONFLICT:
                    conflicts.add(commit.source_id)
        stats = self.stats
        for type_, n in Counter(published).items():
            stats[f"derived.{type_}"] += n
        stats["conflicts"] += len(conflicts)
        if conflicts:
            self._contended_until = time.monotonic() + self.settings.defer_pause_s
        plan.conflicts = [(sid, step) for sid, step in plan.steps if sid in conflicts]
        return missed

    async def _send(self, plan: _Plan) -> None:
        await self._apply(plan)
        await self._retry(plan)

    async def _retry(self, plan: _Plan) -> None:
        """Decide conflicting entries again on fresh state until they commit, then observe."""
        for _ in range(self.settings.commit_retries - 1):
            if not plan.conflicts:
                break
            again = _Plan(plan.entries, steps=plan.conflicts)
            self._plan(again, await self.store.read(_refs(again.steps)))
            await self._apply(again)
            plan.conflicts = again.conflicts
        if plan.conflicts:
            raise CommitConflictError(f"{len(plan.conflicts)} entries still conflict; left pending")
        if self.observe is not None:
            self.observe(len(plan.entries), time.perf_counter() - plan.started)

    def _plan(
        self,
        plan: _Plan,
        states: dict[StepRef, Tracked],
        written: set[StepRef] | None = None,
        steps: list[tuple[bytes, Step]] | None = None,
    ) -> None:
        """Decide `steps` (default: all of `plan`'s) on `states`; fills in `plan`'s commits,
        acks and predicted states.

        `written`: steps whose state in `states` is not committed yet (written earlier in
        this batch, or predicted from the deferred batch): their later no-ops go through the
        script's version check too, as a plain ack would rest on state that may not land.
        """
        commits, acks = plan.commits, plan.acks
        written = set() if written is None else written
        outcomes: list[Outcome] = []
        for source_id, step in plan.steps if steps is None else steps:
            ref = (step.run_id, step.id)
            tracked = states[ref]
            decision = decide(tracked.status, step.status, tracked.rejected)
            outcomes.append(decision.outcome)
            if not decision.changes_state:
                if ref in written:  # a checked no-op: acked by the script, writes nothing
                    commits.append(Commit(source_id, step.id, step.run_id, tracked.version))
                else:
                    acks.append(source_id)
                continue
            version = f"{self._token}{next(self._seq):x}"
            commit, record = self._commit(source_id, step, tracked, decision, version)
            commits.append(commit)
            written.add(ref)
            states[ref] = plan.predicted[ref] = _after(tracked, decision, version, record)
        stats = self.stats
        for outcome, n in Counter(outcomes).items():
            stats[f"outcome.{outcome}"] += n

    def _commit(
        self, source_id: bytes, step: Step, tracked: Tracked, decision: Decision, version: str
    ) -> tuple[Commit, dict[str, str]]:
        """The commit of a decision that changes state, and the step's record after it."""
        s = self.settings
        derived = derive(step, decision)
        record = dict(tracked.record)
        record["v"] = version
        run_owner = ("", "")
        if tracked.status is None:
            record.update(c=str(step.created_at), y=str(step.type))
            run_owner = (step.thread_id, step.assistant_id)
        stall, live, ttl, usage = "", 0, None, None
        if decision.outcome is Outcome.STARTED:
            record["s"] = str(decision.to_status)
            live = 1
            # From when the step was first seen, not created_at alone: replaying old events
            # must not raise a storm of stalls for steps that finished long ago.
            stall = f"+{max(step.created_at, int(time.time())) + s.stall_after_s}"
        elif decision.outcome is Outcome.FINISHED:
            record["s"] = str(decision.to_status)
            if step.terminal_at is not None:
                record["d"] = str(step.terminal_at)
            if step.usage is not None:
                u = step.usage
                usage = (u.prompt_tokens, u.completion_tokens, u.total_tokens)
                record.update(up=str(usage[0]), uc=str(usage[1]), ut=str(usage[2]))
            if step.last_error is not None:
                record["e"] = str(step.last_error.code)
            if tracked.status is StepStatus.IN_PROGRESS:  # off the stall index, one less live
                stall, live = "-", -1
            ttl = s.state_ttl_s
        else:  # REJECTED: remember it so a redelivery does not reject twice
            record["x"] = ",".join(sorted({*tracked.rejected, decision.to_status}))
            ttl = s.state_ttl_s
        commit = Commit(
            source_id=source_id,
            step_id=step.id,
            run_id=step.run_id,
            expected=tracked.version,
            state=encode_state(record),
            run_owner=run_owner,
            events=tuple(map(orjson.dumps, derived.events)),
            usage=usage,
            # The store appends the run's totals: the JSON goes without its closing brace.
            run_usage=b"" if derived.run_usage is None else orjson.dumps(derived.run_usage)[:-1],
            types=derived.types,
            stall=stall,
            live=live,
            ttl_s=ttl,
        )
        return commit, record


async def _observe(flight: _Flight) -> None:
    """Wait for a commit in flight whatever its outcome (its entries are handled anew)."""
    with contextlib.suppress(Exception):
        await flight.missed


def _retrieve(task: asyncio.Task[set[StepRef]]) -> None:
    """Mark a flight's exception as seen: a worker stopping on a Redis error leaves its
    last flight unobserved, and its entries pending, which is not worth a warning."""
    if not task.cancelled():
        task.exception()


def _refs(steps: list[tuple[bytes, Step]]) -> list[StepRef]:
    return list({(step.run_id, step.id): None for _, step in steps})


def _after(tracked: Tracked, decision: Decision, version: str, record: dict[str, str]) -> Tracked:
    """The state this batch expects once `decision` is committed."""
    rejected = tracked.rejected
    if decision.outcome is Outcome.REJECTED:
        rejected = rejected | {decision.to_status}
    return Tracked(
        status=decision.new_status or tracked.status,
        version=version,
        rejected=rejected,
        record=record,
    )
