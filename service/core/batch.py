"""PURE: a fetched batch of source entries -> a `Batch`: each run's ops, what to ack, what
to dead-letter, and what decoding saw (for the telemetry). No I/O: the worker commits it.

Both dialects arrive here as `core.reported.Reported` (decode), so one loop turns every
entry into its ops; an entry whose run belongs to another partition is a dead letter
(wrong_partition), and an entry whose decoding raised (a bug, never the entry's bytes: those
are rejections) is kept apart in `failed`, so it stays pending while the rest commits.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from contracts.derived import DeadLetterKind
from contracts.partitioning import partition_for
from contracts.stream_events import RunEntry, StepEntry
from service.core.decode import ErrorReport, Ignored, Rejection, decode_entry, reported
from service.core.ops import Op, run_op, step_op
from service.core.prices import Prices
from service.core.reported import Reported

__all__ = ["Batch", "DeadLetter", "Entry", "Partitioning", "build_batch", "describe"]

# Tuples: `A | B` in an isinstance would build a union object per entry.
_ENVELOPED = (StepEntry, RunEntry)  # may carry an event name its object disagrees with
_NO_OPS = (Ignored, ErrorReport, Rejection)  # decoded entries that move no step or run

Entry = tuple[bytes, dict[bytes, bytes]]
"""One stream entry as redis-py returns it: (entry id, fields)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A source entry that goes to the DLQ, with the reason."""

    source_id: bytes
    fields: dict[bytes, bytes]
    error: str  # the rejection as JSON, the DLQ entry's `error`
    kind: str  # its DeadLetterKind, for counting


@dataclass(frozen=True, slots=True)
class Partitioning:
    """Which partition a batch was read from, of how many (runs map to one by id)."""

    index: int = 0
    count: int = 1


@dataclass(slots=True)
class Batch:
    """A decoded batch: each run's ops in arrival order, what to ack, what is dead."""

    runs: dict[str, list[Op]] = field(default_factory=dict)
    acks: list[bytes] = field(default_factory=list)  # entries with no ops, not dead-lettered
    dead: list[DeadLetter] = field(default_factory=list)
    failed: dict[bytes, str] = field(default_factory=dict)  # decoding raised: id -> error
    started: float = field(default_factory=time.perf_counter)  # when decoding began
    # What decoding saw, added to the telemetry once the batch is committed (a batch
    # decoded again, or isolated entry by entry after a failure, counts once).
    consumed: int = 0
    ignored: Counter[str] = field(default_factory=Counter)  # by event name
    error_events: int = 0
    errors: list[str] = field(default_factory=list)  # forwarded error events' messages
    # Envelopes whose event name implies another status than their object's own, by (event,
    # object status): tracked by the object's status, counted.
    status_mismatches: Counter[tuple[str, str]] = field(default_factory=Counter)

    def ops(self) -> Iterator[Op]:
        """Every op, runs in order."""
        return (op for run_ops in self.runs.values() for op in run_ops)


def describe(exc: BaseException) -> str:
    """An exception as one bounded line, for failure records and dead letters."""
    return f"{type(exc).__name__}: {exc}"[:500]


def _ops(
    source_id: bytes, reported: Reported, now: float, stall_after_s: float, prices: Prices | None
) -> list[Op]:
    """The ops of one entry: its steps first, then its run."""
    source = reported.source
    ops = [
        # A stall is timed from when runsteps first saw the step (its start is decoded
        # now), never from created_at: replaying old events must not raise a storm of
        # stalls, and a step dated in the future (a skewed clock) must still stall.
        step_op(source_id, step, source, now + stall_after_s, reported.identity)
        for step in reported.steps
    ]
    if reported.run is not None:
        ops.append(run_op(source_id, reported.run, source, prices))
    return ops


def _misrouted(ops: list[Op], partitioning: Partitioning) -> Rejection | None:
    """A rejection if the ops' run belongs to another partition (a producer's bug)."""
    if partitioning.count == 1 or not ops:
        return None
    run_id = ops[0].run_id
    owner = partition_for(run_id, partitioning.count)
    if owner == partitioning.index:
        return None
    return Rejection(
        DeadLetterKind.WRONG_PARTITION,
        f"run {run_id} belongs to partition {owner}, not {partitioning.index}",
    )


def build_batch(
    entries: list[Entry],
    *,
    max_payload_bytes: int,
    stall_after_s: float,
    now: float,
    partitioning: Partitioning = Partitioning(),  # frozen: shared safely
    prices: Prices | None = None,
) -> Batch:
    """Decode every entry into ops of its run, an ignored event, or a dead letter."""
    batch = Batch(consumed=len(entries))
    for source_id, fields in entries:
        try:
            seen_at = int(source_id.partition(b"-")[0]) / 1000  # the entry id's time
            decoded = decode_entry(fields, max_payload_bytes, seen_at)
            ops = (
                []
                if isinstance(decoded, _NO_OPS)
                else _ops(source_id, reported(decoded), now, stall_after_s, prices)
            )
        except Exception as exc:  # a bug, not the entry's bytes: it stays pending
            batch.failed[source_id] = describe(exc)
            continue
        if isinstance(decoded, Ignored):
            batch.ignored[decoded.event] += 1
            batch.acks.append(source_id)
            continue
        if isinstance(decoded, ErrorReport):
            batch.error_events += 1
            batch.errors.append(decoded.message)
            batch.acks.append(source_id)
            continue
        rejection = decoded if isinstance(decoded, Rejection) else _misrouted(ops, partitioning)
        if rejection is not None:
            batch.dead.append(DeadLetter(source_id, fields, rejection.to_json(), rejection.kind))
            continue
        if isinstance(decoded, _ENVELOPED) and decoded.status_mismatch:
            subject = decoded.step if isinstance(decoded, StepEntry) else decoded.run
            batch.status_mismatches[(str(decoded.event), str(subject.status))] += 1
        for op in ops:
            batch.runs.setdefault(op.run_id, []).append(op)
        if not ops:
            batch.acks.append(source_id)
    return batch
