"""What a worker counts: typed counters the processors and loops add to, and metrics read.

Plain attributes, not string keys: a misspelt counter is a type error, never a metric that
silently stays at zero.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Telemetry"]


@dataclass
class Telemetry:
    """Counts shared by a worker's processors and recovery loops, and the batch hook."""

    consumed: int = 0  # source entries handled (redeliveries count again)
    failed: int = 0  # entries whose processing raised; left pending
    reclaimed: int = 0  # pending entries taken over from other consumers
    error_events: int = 0  # `error` events the producers forwarded
    source_trimmed: int = 0  # source entries trimmed: acked by every group, past retention or early
    source_trimmed_early: int = 0  # of those, trimmed before it: Redis near its maxmemory
    stall_index_pruned: int = 0  # stall index members of steps gone or no longer in progress
    groups_recreated: int = 0  # consumer groups found gone and created again
    consumers_removed: int = 0  # dead consumers (long idle, nothing pending) deleted
    derived: Counter[str] = field(default_factory=Counter)  # published, by derived type
    decisions: Counter[str] = field(default_factory=Counter)  # by lifecycle.Outcome
    dead_letters: Counter[str] = field(default_factory=Counter)  # by DeadLetterKind
    ignored: Counter[str] = field(default_factory=Counter)  # by event name, or `other`
    # Called after each committed batch with (entries, seconds from decode to reply).
    observe: Callable[[int, float], None] | None = None
