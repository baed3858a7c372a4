"""What a worker counts: typed counters the processors and loops add to, and metrics read.

Plain attributes, not string keys: a misspelt counter is a type error, never a metric that
silently stays at zero. The domain figures (steps, tool calls, runs, tokens, cost, budgets)
come through small typed methods the commit path calls once a commit has succeeded; their
free-form label values (models, tool names, item types) are bounded, see `BoundedLabels`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from service.core.prices import TokenUsage
    from service.core.reported import ToolRef

__all__ = [
    "BUDGET_LIMITS",
    "NO_MODEL",
    "NO_TOOL",
    "OTHER",
    "STEP_SECONDS_BUCKETS",
    "BoundedLabels",
    "Buckets",
    "Series",
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
_K = TypeVar("_K")
_V = TypeVar("_V")

MEMO_MAX = 4096
"""Raw label values remembered with what they count into (their bounded labels, or their
histogram series), per metric: counting a value seen before skips bounding and joining. A
flood of unique values past this many is bounded afresh each time, at the old cost."""


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


@dataclass(slots=True)
class Series:
    """One label set's observations: how many fell in each bucket (the last: +Inf), and
    their sum."""

    counts: list[int]
    sum: float = 0.0


@dataclass
class Buckets:
    """Observations by label values, bucketed (no Prometheus types: metrics renders it)."""

    bounds: tuple[float, ...]
    series: dict[Labels, Series] = field(default_factory=dict)

    def of(self, labels: Labels) -> Series:
        """The series of `labels` (empty at first)."""
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = Series([0] * (len(self.bounds) + 1))
        return series


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
    # What raw values count into (MEMO_MAX each): a step's histogram series, a tool call's
    # bounded labels. Sound because a bound's answer for a value never changes (kept stays
    # kept; `other` stays `other`).
    _step_series: dict[tuple[str, str, tuple[str, ...]], Series] = field(
        init=False, default_factory=dict
    )
    _call_labels: dict[tuple[str | None, str, str], Labels] = field(
        init=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        self._models = BoundedLabels(self.max_labels)
        self._tools = BoundedLabels(self.max_labels)
        self._tool_types = BoundedLabels(self.max_labels)
        self._step_types = BoundedLabels(self.max_labels)
        self._step_tool_types = BoundedLabels(self.max_labels)

    def step_ended(
        self,
        source: str,
        status: str,
        step_type: str,
        tools: tuple[ToolRef, ...],
        duration_s: float | None,
    ) -> None:
        """A step ended with `status` after `duration_s` (None: no end time known, its
        duration is not observed), and each of its tool calls with it.

        The duration is labelled with the distinct types of the step's tool calls joined by
        `+` (`function`, `code_interpreter+function`), or `none` when it holds none. A tool
        call is labelled with its name; built-in tools without one (web search, code
        interpreter, ...) with their type.
        """
        for _, tool_type, name in tools:
            call = (name, status, tool_type)
            labels = self._call_labels.get(call)
            if labels is None:
                labels = (self._tool_types(tool_type), self._tools(name or tool_type), status)
                _remember(self._call_labels, call, labels)
            self.tool_calls[labels] += 1
        if duration_s is None:
            return
        types: tuple[str, ...] = ()
        if len(tools) == 1:  # most tool steps: no list comprehension
            types = (tools[0][1],)
        elif tools:
            types = tuple([type_ for _, type_, _ in tools])
        key = (source, step_type, types)
        series = self._step_series.get(key)
        if series is None:
            kinds = "+".join(sorted(set(types))) or NO_TOOL
            labels = (source, self._step_types(step_type), self._step_tool_types(kinds))
            series = self.step_seconds.of(labels)
            _remember(self._step_series, key, series)
        # In the first bucket whose upper bound is at least the duration.
        series.counts[bisect_left(self.step_seconds.bounds, duration_s)] += 1
        series.sum += duration_s if duration_s > 0 else 0.0

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


def _remember(memo: dict[_K, _V], key: _K, value: _V) -> None:
    if len(memo) < MEMO_MAX:
        memo[key] = value
