"""Prometheus metrics of one worker, in a registry of its own (several workers per process).

Counters are read from the worker's `Telemetry` (shared by its partitions' processors) at
scrape time, so processing code keeps a plain Counter and knows nothing of Prometheus.
Batch timings come through the telemetry's `observe` hook. Stream lengths and the consumer
group's lag and pending count are asked of Redis when scraped, per stream: every worker of a
group reports the same figures (aggregate them with max by stream, not sum).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from contracts.derived import DeadLetterKind, DerivedType
from service.core.lifecycle import Outcome
from service.worker.telemetry import BUDGET_LIMITS, Buckets, Telemetry

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio import Redis

    from service.storage.keys import Partition

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus text exposition format."""

_POLL_TIMEOUT_S = 2.0

# (metric name without _total, help, the Telemetry count): typed getters, so a misspelt
# count is a type error rather than a metric that silently stays at zero.
_PLAIN_COUNTERS: tuple[tuple[str, str, Callable[[Telemetry], int]], ...] = (
    ("runsteps_events_consumed", "Source entries handled (redeliveries count again)",
     lambda t: t.consumed),
    ("runsteps_processing_failures", "Entries whose processing raised; left pending",
     lambda t: t.failed),
    ("runsteps_reclaimed_entries", "Pending entries taken over from other consumers",
     lambda t: t.reclaimed),
    ("runsteps_error_events", "`error` events forwarded by producers",
     lambda t: t.error_events),
    ("runsteps_source_trimmed",
     "Source entries trimmed: acked by every group, past retention (or near maxmemory)",
     lambda t: t.source_trimmed),
    ("runsteps_source_trimmed_early",
     "Source entries trimmed before the retention: acked by every group, Redis near maxmemory",
     lambda t: t.source_trimmed_early),
    ("runsteps_stall_index_pruned", "Stall index members removed: step state gone or ended",
     lambda t: t.stall_index_pruned),
    ("runsteps_groups_recreated", "Consumer groups found gone (NOGROUP) and created again",
     lambda t: t.groups_recreated),
    ("runsteps_consumers_removed", "Dead consumers (idle, nothing pending) removed from the group",
     lambda t: t.consumers_removed),
)  # fmt: skip


class _Snapshot:
    """What Redis said at the last scrape; a stream is missing where Redis could not say."""

    __slots__ = ("lag", "lengths", "pending", "up")

    def __init__(self) -> None:
        self.up = False
        self.lag: dict[str, int] = {}  # by source stream; absent when Redis cannot tell
        self.pending: dict[str, int] = {}
        self.lengths: dict[tuple[str, str], int] = {}  # by (stream, role)


class _StatsCollector:
    """Turns the telemetry stats and the last Redis snapshot into metric families."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.snapshot = _Snapshot()

    def collect(self) -> Iterator[Metric]:
        telemetry = self.telemetry
        for name, doc, count in _PLAIN_COUNTERS:
            yield CounterMetricFamily(name, doc, value=count(telemetry))
        yield CounterMetricFamily(
            "runsteps_transitions_rejected",
            "Terminal steps or runs reported with a different terminal status",
            value=telemetry.decisions[Outcome.REJECTED],
        )
        yield _family(
            CounterMetricFamily,
            "runsteps_derived_events",
            "Derived events published, by type (counted once their commit succeeded)",
            ["type"],
            (((t.value,), telemetry.derived[t]) for t in DerivedType),
        )
        yield _family(
            CounterMetricFamily,
            "runsteps_decisions",
            "Lifecycle decisions made, by outcome",
            ["outcome"],
            (((o.value,), telemetry.decisions[o]) for o in Outcome),
        )
        yield _family(
            CounterMetricFamily,
            "runsteps_dlq_entries",
            "Source entries dead-lettered, by reason",
            ["kind"],
            (((k.value,), telemetry.dead_letters[k]) for k in DeadLetterKind),
        )
        yield _family(
            CounterMetricFamily,
            "runsteps_status_mismatches",
            "Envelopes whose event name implies another status than their run or step has, "
            "by event and the object's status (tracked by the object's own status)",
            ["event", "status"],
            sorted(telemetry.status_mismatches.items()),
        )
        yield _family(
            CounterMetricFamily,
            "runsteps_events_ignored",
            "Source events with no lifecycle meaning (deltas, message events, ...), acked",
            ["event"],
            (((name,), n) for name, n in sorted(telemetry.ignored.items())),
        )

        yield from _domain(telemetry)

        snap = self.snapshot
        yield GaugeMetricFamily(
            "runsteps_redis_up",
            "1 if Redis answered this scrape's queries, else 0",
            value=1.0 if snap.up else 0.0,
        )
        yield _family(
            GaugeMetricFamily,
            "runsteps_consumer_group_lag",
            "Source entries not yet delivered to the consumer group (XINFO GROUPS lag)",
            ["stream"],
            (((stream,), n) for stream, n in snap.lag.items()),
        )
        yield _family(
            GaugeMetricFamily,
            "runsteps_consumer_group_pending",
            "Entries delivered to the consumer group and not acked yet (XINFO GROUPS pending)",
            ["stream"],
            (((stream,), n) for stream, n in snap.pending.items()),
        )
        yield _family(
            GaugeMetricFamily,
            "runsteps_stream_length",
            "Entries in each stream (XLEN)",
            ["stream", "role"],
            snap.lengths.items(),
        )


def _domain(telemetry: Telemetry) -> Iterator[Metric]:
    """What the agents did: steps, tool calls, runs, tokens, cost, budgets, unpriced models."""
    yield _histogram(
        "runsteps_step_duration_seconds",
        "Durations of ended steps, by source, step type and tool type (its tool calls' "
        "distinct types joined by +, or none)",
        ["source", "step_type", "tool_type"],
        telemetry.step_seconds,
    )
    yield _family(
        CounterMetricFamily,
        "runsteps_tool_calls_ended",
        "Tool calls ended, by tool type, tool (its name, or its type for a built-in tool) "
        "and the status its step ended with",
        ["type", "tool", "status"],
        telemetry.tool_calls.items(),
    )
    yield _family(
        CounterMetricFamily,
        "runsteps_runs_ended",
        "Runs ended, by source, status and model (`unknown`: no payload named one)",
        ["source", "status", "model"],
        telemetry.runs_ended.items(),
    )
    yield _family(
        CounterMetricFamily,
        "runsteps_tokens",
        "Tokens of ended runs, by model and kind: input and output are the totals, "
        "cached_input is part of input and reasoning part of output",
        ["model", "kind"],
        telemetry.tokens.items(),
    )
    yield _family(
        CounterMetricFamily,
        "runsteps_cost_usd",
        "Cost of ended runs in US dollars, by model, at the prices of each run's creation day",
        ["model"],
        (((model,), nano / 1e9) for model, nano in telemetry.cost_nano_usd.items()),
    )
    yield _family(
        CounterMetricFamily,
        "runsteps_budget_exceeded",
        "run.budget_exceeded events published, by limit",
        ["limit"],
        (((limit,), telemetry.budgets_exceeded[limit]) for limit in BUDGET_LIMITS),
    )
    yield _family(
        CounterMetricFamily,
        "runsteps_unpriced",
        "Events that carry no cost because their model is unknown or has no price, by model",
        ["model"],
        (((model,), n) for model, n in telemetry.unpriced_events.items()),
    )


def _histogram(name: str, doc: str, labels: list[str], histogram: Buckets) -> Metric:
    """A labelled histogram family from a telemetry histogram (cumulative buckets)."""
    family = HistogramMetricFamily(name, doc, labels=labels)
    bounds = [*map(floatToGoString, histogram.bounds), "+Inf"]  # as prometheus_client writes le
    for values, series in histogram.series.items():
        cumulative, total = [], 0
        for bound, n in zip(bounds, series.counts, strict=True):
            total += n
            cumulative.append((bound, float(total)))
        family.add_metric(list(values), cumulative, series.sum)
    return family


def _family(
    kind: type[CounterMetricFamily | GaugeMetricFamily],
    name: str,
    doc: str,
    labels: list[str],
    samples: Iterable[tuple[tuple[str, ...], float]],
) -> Metric:
    """A labelled metric family with one sample per label-values tuple."""
    family = kind(name, doc, labels=labels)
    for values, n in samples:
        family.add_metric(list(values), n)
    return family


class Metrics:
    """A worker's metrics: hooks itself into the worker's telemetry; `render` is the scrape.

    `redis` gives the worker's client at scrape time (None before start-up or after
    shutdown); `parts` are the partitions whose streams are reported, of consumer `group`.
    """

    def __init__(
        self,
        telemetry: Telemetry,
        redis: Callable[[], Redis | None],
        parts: Sequence[Partition],
        group: str,
    ) -> None:
        self.redis = redis
        self.parts = parts
        self.group = group
        self.registry = CollectorRegistry()
        self._collector = _StatsCollector(telemetry)
        self.registry.register(self._collector)
        self.batch_seconds = Histogram(
            "runsteps_batch_processing_seconds",
            "Time from decoding a fetched batch to its commit's reply",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "runsteps_batch_size",
            "Source entries per processed batch",
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=self.registry,
        )
        telemetry.observe = self.observe

    def observe(self, entries: int, seconds: float) -> None:
        """Record one processed batch (the processor calls this after each batch)."""
        self.batch_size.observe(entries)
        self.batch_seconds.observe(seconds)

    async def render(self) -> bytes:
        """The text exposition, with stream and group figures asked of Redis just now."""
        snapshot = await self._poll()
        # No await between taking the snapshot and rendering: one scrape, one snapshot.
        self._collector.snapshot = snapshot
        return generate_latest(self.registry)

    async def _poll(self) -> _Snapshot:
        snap = _Snapshot()
        redis = self.redis()
        if redis is None:
            return snap
        parts = self.parts
        sources = [p.source_stream for p in parts]
        streams = [
            (stream, role)
            for p in parts
            for stream, role in (
                (p.source_stream, "source"),
                (p.derived_stream, "derived"),
                (p.dlq_stream, "dlq"),
            )
        ]
        pipe = redis.pipeline(transaction=False)
        for stream in sources:
            pipe.xinfo_groups(stream)
        for stream, _ in streams:
            pipe.xlen(stream)
        try:
            replies = await asyncio.wait_for(
                pipe.execute(raise_on_error=False), timeout=_POLL_TIMEOUT_S
            )
        except Exception:  # Redis down or slow: the scrape still answers, with redis_up 0
            return snap
        infos, lengths = replies[: len(sources)], replies[len(sources) :]
        if any(isinstance(r, Exception) for r in lengths):
            return snap
        snap.up = True
        snap.lengths = {key: int(n) for key, n in zip(streams, lengths, strict=True)}
        for stream, info in zip(sources, infos, strict=True):
            if isinstance(info, Exception):  # no such stream yet: no group figures
                continue
            group = _find_group(cast("list[dict[str, Any]]", info), self.group)
            if group is None:
                continue
            snap.pending[stream] = int(group["pending"])
            if group.get("lag") is not None:  # nil when Redis cannot tell (entries deleted)
                snap.lag[stream] = int(group["lag"])
        return snap


def _find_group(groups: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    for group in groups:
        raw = group.get("name")
        if (raw.decode() if isinstance(raw, bytes) else raw) == name:
            return group
    return None
