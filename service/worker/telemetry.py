"""What a worker counts: typed counters the processors and loops add to, and metrics read.

Plain attributes, not string keys: a misspelt counter is a type error, never a metric that
silently stays at zero. The domain figures (steps, tool calls, runs, tokens, cost, budgets)
come through small typed methods the commit path calls once a commit has succeeded; their
free-form label values (models, tool names, item types) are bounded, see `BoundedLabels`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.core.prices import TokenUsage

__all__ = [
    "BUDGET_LIMITS",
    "NO_MODEL",
    "NO_TOOL",
    "OTHER",
    "STEP_SECONDS_BUCKETS",
    "BoundedLabels",
    "Buckets",
    "Telemetry",
]

OTHER = "other"
"""The label value that stands for every value past a label's limit."""
NO_MODEL = "unknown"
"""The model label of a run no payload named a model for."""
NO_TOOL = "none"
"""The tool type label of a step that holds no tool call (messages, reasoning)."""
BUDGET_LIMITS = ("tokens", "usd", "steps", "seconds")
"""The limits a run.budget_exceeded names (RUNSTEPS_BUDGET_*): each always has a sample."""
STEP_SECONDS_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
"""Upper bounds of the step-duration histogram (seconds): tool calls take from under a
second (functions) to many minutes (deep research, code interpreter)."""

Labels = tuple[str, ...]


class BoundedLabels:
    """One free-form label's values: the first `limit` distinct values are kept, every later
    one is counted as `other`, so a flood of unique names cannot grow a metric without end."""

    __slots__ = ("limit", "seen")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        """`value`, or `other` once `limit` other values were seen."""
        if value in self.seen:
            return value
        if len(self.seen) < self.limit:
            self.seen.add(value)
            return value
        return OTHER


@dataclass
class Buckets:
    """Observations by label values, bucketed (no Prometheus types: metrics renders it)."""

    bounds: tuple[float, ...]
    counts: dict[Labels, list[int]] = field(default_factory=dict)  # per bucket, + one for +Inf
    sums: dict[Labels, float] = field(default_factory=dict)

    def observe(self, labels: Labels, value: float) -> None:
        """Count `value` in the first bucket whose upper bound is at least `value`."""
        counts = self.counts.get(labels)
        if counts is None:
            counts = self.counts[labels] = [0] * (len(self.bounds) + 1)
        counts[bisect_left(self.bounds, value)] += 1
        self.sums[labels] = self.sums.get(labels, 0.0) + value


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
    # Envelopes whose event name implies another status than their object has (tracked by
    # the object's own), by (event name, object status): both from closed sets.
    status_mismatches: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Called after each committed batch with (entries, seconds from decode to reply).
    observe: Callable[[int, float], None] | None = None
    # Distinct values kept per free-form label (RUNSTEPS_METRICS_MAX_LABELS).
    max_labels: int = 100
    # Domain figures, added to by the methods below.
    step_seconds: Buckets = field(default_factory=lambda: Buckets(STEP_SECONDS_BUCKETS))
    tool_calls: Counter[Labels] = field(default_factory=Counter)  # (type, tool, status)
    runs_ended: Counter[Labels] = field(default_factory=Counter)  # (source, status, model)
    tokens: Counter[Labels] = field(default_factory=Counter)  # (model, kind)
    cost_nano_usd: Counter[str] = field(default_factory=Counter)  # by model, nano-dollars
    budgets_exceeded: Counter[str] = field(default_factory=Counter)  # by limit
    unpriced_events: Counter[str] = field(default_factory=Counter)  # by model
    # One bound per free-form label; `model` is one for every metric labelled with it, so
    # a model kept is named the same in runs, tokens, cost and unpriced.
    _models: BoundedLabels = field(init=False)
    _tools: BoundedLabels = field(init=False)
    _tool_types: BoundedLabels = field(init=False)
    _step_types: BoundedLabels = field(init=False)
    _step_tool_types: BoundedLabels = field(init=False)  # joined types: a label of its own

    def __post_init__(self) -> None:
        self._models = BoundedLabels(self.max_labels)
        self._tools = BoundedLabels(self.max_labels)
        self._tool_types = BoundedLabels(self.max_labels)
        self._step_types = BoundedLabels(self.max_labels)
        self._step_tool_types = BoundedLabels(self.max_labels)

    def step_ended(
        self, source: str, step_type: str, tool_types: Iterable[str], duration_s: float | None
    ) -> None:
        """A step ended after `duration_s` (None: no end time known, not observed).

        `tool_types` are the types of the step's tool calls: a step's observation is
        labelled with its distinct types joined by `+` (`function`, `code_interpreter+
        function`), or `none` when it holds no tool call.
        """
        if duration_s is None:
            return
        kinds = "+".join(sorted(set(tool_types))) or NO_TOOL
        labels = (source, self._step_types(step_type), self._step_tool_types(kinds))
        self.step_seconds.observe(labels, max(duration_s, 0.0))

    def tool_call_ended(self, name: str | None, status: str, tool_type: str) -> None:
        """A tool call ended with its step's terminal `status`. Built-in tools without a
        name (web search, code interpreter, ...) are labelled with their type."""
        tool = self._tools(name or tool_type)
        self.tool_calls[(self._tool_types(tool_type), tool, status)] += 1

    def run_ended(
        self,
        source: str,
        status: str,
        model: str | None,
        usage: TokenUsage | None,
        cost_usd: float | None,
    ) -> None:
        """A run ended with `status`, having used `usage` that cost `cost_usd` (None when
        unpriced: say so with `unpriced`)."""
        label = self._models(model or NO_MODEL)
        self.runs_ended[(source, status, label)] += 1
        if usage is not None:
            for kind, n in (
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
                ("cached_input", usage.cached_input_tokens),
                ("reasoning", usage.reasoning_tokens),
            ):
                self.tokens[(label, kind)] += n
        if cost_usd is not None:
            # Summed in whole nano-dollars, so a long-running worker's total stays exact.
            self.cost_nano_usd[label] += round(cost_usd * 1_000_000_000)

    def budget_exceeded(self, limit: str) -> None:
        """A run.budget_exceeded was published for `limit` (tokens, usd, steps, seconds)."""
        self.budgets_exceeded[limit] += 1

    def unpriced(self, model: str | None) -> None:
        """An event that should carry a cost carries none: its model is unknown or has no
        price."""
        self.unpriced_events[self._models(model or NO_MODEL)] += 1
