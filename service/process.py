"""The application layer: one fetched batch -> decode, read state, decide, commit.

Decisions are made in Python by the pure lifecycle; the store applies each with a
compare-and-set on the step's version, atomically with the source XACK. A conflict means
another worker moved the step meanwhile: those entries are re-read and decided again.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
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

from .decode import Delta, Rejection, Step, decode_entry
from .derive import derive
from .errors import CommitConflictError
from .lifecycle import Decision, Outcome, decide
from .store import Commit, CommitResult, DeadLetter, Store, Tracked, encode_state

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


class Processor:
    """Applies batches of source entries to the store; holds no state between batches."""

    def __init__(self, store: Store, settings: Settings, shared: Telemetry | None = None) -> None:
        self.store = store
        self.settings = settings
        # The processors of all partitions of a worker share one Telemetry.
        self.telemetry = Telemetry() if shared is None else shared
        # Versions must be unique per write, not counters: a chained write in one batch
        # expects the version its own previous write set, which no other worker can forge.
        self._token = secrets.token_hex(3)
        self._seq = itertools.count()

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

    async def process(self, entries: list[Entry]) -> dict[bytes, str]:
        """Apply one batch; every entry ends acked with its effects, or stays pending.

        Returns the entries that failed (id -> error), after recording them for the delivery
        cap. A failing batch is retried entry by entry, so one bad entry never holds back the
        others. Redis being unreachable is not an entry's fault: that raises, and the whole
        batch stays pending for a retry once Redis is back.
        """
        started = time.perf_counter()
        try:
            await self._process(entries)
            if self.observe is not None:
                self.observe(len(entries), time.perf_counter() - started)
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

    async def _process(self, entries: list[Entry]) -> None:
        part = self.store.part
        dead: list[DeadLetter] = []
        acks: list[bytes] = []
        steps: list[tuple[bytes, Step]] = []
        for source_id, fields in entries:
            decoded = decode_entry(fields, self.settings.max_payload_bytes)
            if isinstance(decoded, Rejection):
                dead.append(DeadLetter(source_id, fields, decoded.to_json()))
                self.stats[f"dlq.{decoded.kind}"] += 1
            elif isinstance(decoded, Delta):
                acks.append(source_id)
                self.stats["deltas"] += 1
            elif part.count > 1 and partition_for(decoded.run_id, part.count) != part.index:
                wrong = Rejection(
                    DeadLetterKind.WRONG_PARTITION,
                    f"run {decoded.run_id} belongs to partition "
                    f"{partition_for(decoded.run_id, part.count)}, not {part.index}",
                )
                dead.append(DeadLetter(source_id, fields, wrong.to_json()))
                self.stats[f"dlq.{wrong.kind}"] += 1
            else:
                steps.append((source_id, decoded))
        self.stats["consumed"] += len(entries)

        for _ in range(self.settings.commit_retries):
            states = await self.store.read(list({step.id: None for _, step in steps}))
            commits, plain_acks = self._plan(steps, states)
            results = await self.store.apply(commits, acks + plain_acks, dead)
            dead, acks = [], []
            for commit, result in zip(commits, results, strict=True):
                if result is CommitResult.DONE:  # count what was published, exactly once
                    self.stats.update(f"derived.{t}" for t in commit.types)
            retry = {
                c.source_id
                for c, r in zip(commits, results, strict=True)
                if r is CommitResult.CONFLICT
            }
            self.stats["conflicts"] += len(retry)
            steps = [(sid, step) for sid, step in steps if sid in retry]
            if not steps:
                return
        raise CommitConflictError(f"{len(steps)} entries still conflict; left pending")

    def _plan(
        self, steps: list[tuple[bytes, Step]], states: dict[str, Tracked]
    ) -> tuple[list[Commit], list[bytes]]:
        commits: list[Commit] = []
        acks: list[bytes] = []
        # Steps with a write earlier in this batch: their later no-ops rest on state that is
        # not committed yet, so they go through the script's version check too.
        written: set[str] = set()
        for source_id, step in steps:
            tracked = states[step.id]
            decision = decide(tracked.status, step.status, tracked.rejected)
            self.stats[f"outcome.{decision.outcome}"] += 1
            if not decision.changes_state and step.id not in written:
                acks.append(source_id)
                continue
            version = f"{self._token}{next(self._seq):x}"
            commit, record = self._commit(source_id, step, tracked, decision, version)
            commits.append(commit)
            written.add(step.id)
            if decision.changes_state:  # a checked no-op writes nothing, not even a version
                states[step.id] = _after(tracked, decision, version, record)
        return commits, acks

    def _commit(
        self, source_id: bytes, step: Step, tracked: Tracked, decision: Decision, version: str
    ) -> tuple[Commit, dict[str, str]]:
        """The commit of one decision, and the step's state record after it."""
        if not decision.changes_state:
            return Commit(source_id, step.id, step.run_id, tracked.version, version), dict(
                tracked.record
            )
        s = self.settings
        derived = derive(step, decision)
        record = dict(tracked.record)
        record["v"] = version
        run_owner = ("", "")
        if tracked.status is None:
            record.update(c=str(step.created_at), r=step.run_id, y=str(step.type))
            run_owner = (step.thread_id, step.assistant_id)
        stall, ttl, usage = "", None, None
        if decision.outcome is Outcome.STARTED:
            record["s"] = str(decision.to_status)
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
            stall, ttl = "-", s.state_ttl_s
        else:  # REJECTED: remember it so a redelivery does not reject twice
            record["x"] = ",".join(sorted({*tracked.rejected, decision.to_status}))
            ttl = s.state_ttl_s
        commit = Commit(
            source_id=source_id,
            step_id=step.id,
            run_id=step.run_id,
            expected=tracked.version,
            version=version,
            state=encode_state(record),
            run_owner=run_owner,
            events=tuple(orjson.dumps(e) for e in derived.events),
            usage=usage,
            # The store appends the run's totals: the JSON goes without its closing brace.
            run_usage=b"" if derived.run_usage is None else orjson.dumps(derived.run_usage)[:-1],
            types=derived.types,
            stall=stall,
            ttl_s=ttl,
        )
        return commit, record


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
