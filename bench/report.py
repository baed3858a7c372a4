"""The results table: printed as text, written as Markdown with the command and the date."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from service.dev.redis_server import find_redis_server

from .micro import STAGES

if TYPE_CHECKING:
    from .infra import Drain
    from .latency import Latency
    from .micro import Micro
    from .recovery import RecoveryResult
    from .throughput import Capped, Throughput

__all__ = ["Results"]

Row = tuple[str, str, str]  # metric, value, note


def _n(x: float) -> str:
    return f"{x:,.0f}"


_CORES = os.cpu_count() or 1


def _ceiling(drain: Drain) -> float:
    """Events/s if every core of this machine did nothing but this drain's CPU work."""
    return _CORES * 1e6 / (drain.cpu_us("consumer") + drain.cpu_us("redis"))


def _throughput(t: Throughput) -> list[Row]:
    a, b, c, d = t.a.drain, t.b, t.c, t.d.drain
    rows: list[Row] = [
        (
            "A runsteps worker, 1 process",
            f"{_n(a.rate)} ev/s",
            f"{a.seconds:.1f} s for {_n(a.events)}",
        ),
        ("B bare redis-py loop", f"{_n(b.rate)} ev/s", "XREADGROUP 500 + validate_json + XACK"),
        (
            "C naive FastStream subscriber",
            f"{_n(c.rate)} ev/s",
            f"per message; first {_n(c.events)} entries only",
        ),
        (
            "D runsteps worker, 2 processes",
            f"{_n(d.rate)} ev/s",
            f"{d.seconds:.1f} s for {_n(d.events)}",
        ),
        (
            "CPU µs/event A / B / C / D",
            " / ".join(f"{x.cpu_us('consumer'):.1f}+{x.cpu_us('redis'):.1f}" for x in (a, b, c, d)),
            "consumer process(es) + redis-server, over the timed span",
        ),
        (
            "worker CPU per event, A/B",
            f"{a.cpu_us('consumer') / b.cpu_us('consumer'):.2f}",
            f"{a.cpu_us('consumer'):.1f} / {b.cpu_us('consumer'):.1f} µs: the worker process "
            "against the bare loop's, same run",
        ),
        (
            "redis-server CPU per event, A/B",
            f"{a.cpu_us('redis') / b.cpu_us('redis'):.2f}",
            f"{a.cpu_us('redis'):.1f} / {b.cpu_us('redis'):.1f} µs: the commit script's "
            "writes against B's XREADGROUP + XACK, same run",
        ),
        ("A/B", f"{a.rate / b.rate:.2f}", "share of the bare-consume ceiling"),
        ("A/C", f"{a.rate / c.rate:.2f}", "against what most users write first"),
        ("D/A", f"{d.rate / a.rate:.2f}", f"2 processes over 1, on a {_CORES}-core machine"),
        (
            "D vs this machine's CPU ceiling",
            f"{d.rate / _ceiling(d):.0%}",
            f"ceiling {_n(_ceiling(d))} ev/s: {_CORES} cores / D's CPU per event (workers and "
            "Redis share the cores; with Redis on its own core each worker adds its rate)",
        ),
        (
            "steps with a run_step.started (A / D)",
            f"{t.a.started:.1%} / {t.d.started:.1%}",
            "share of the workload's steps with a run_step.started on the derived stream; the "
            "capped scenarios' are below",
        ),
        *_capped(t.capped, pinned=False),
        *_capped(t.pinned, pinned=True),
        (
            "worker start-up",
            f"{t.startup_s:.2f} s",
            "process start to first entry acked, empty stream",
        ),
        (
            "worker peak RSS (A / D max)",
            f"{t.a.peak_rss_mib:.0f} / {t.d.peak_rss_mib:.0f} MiB",
            "VmHWM",
        ),
    ]
    if (m := t.a.memory) is not None:
        rows += [
            (
                "Redis bytes per tracked step",
                f"{_n(m.per_step)} B",
                f"used_memory delta, streams deleted; {_n(m.steps)} steps, {_n(m.runs)} runs",
            ),
            (
                "one completed step's field + state",
                f"{m.step_state} B",
                "'@<step id>' and its state string, inside its run's hash",
            ),
            (
                "MEMORY USAGE run hash",
                f"{m.run_hash} B",
                f"one run of {_n(m.steps / max(1, m.runs))} steps, {m.run_encoding}",
            ),
            (
                "stream bytes per entry (source / derived)",
                f"{_n(m.source_per_entry)} / {_n(m.derived_per_entry)} B",
                "MEMORY USAGE, for scale",
            ),
        ]
    return rows


def _verdict(value: float, limit: float, most: bool) -> str:
    """'met', or 'missed by N%' (how far `value` is past `limit`)."""
    if (value <= limit) if most else (value >= limit):
        return "met"
    return f"**missed** by {abs(value / limit - 1):.0%}"


def _targets(t: Throughput) -> list[Row]:
    """The issue's targets, judged on this run's measurements."""
    a, b, c = t.a.drain, t.b, t.c
    worker = a.cpu_us("consumer") / b.cpu_us("consumer")
    redis = a.cpu_us("redis") / b.cpu_us("redis")
    runs = [t.a, t.d]
    if not isinstance(t.capped, str):
        runs += [run for pair in t.capped.rounds for run in pair]
    if not isinstance(t.pinned, str):
        runs += [run for pair in t.pinned.rounds for run in pair]
    fewest = min(run.started for run in runs)
    rows: list[Row] = [
        ("worker CPU per event, A/B", f"{worker:.2f}", f"<= 1.35: {_verdict(worker, 1.35, True)}"),
        (
            "redis-server CPU per event, A/B",
            f"{redis:.2f}",
            f"<= 4.7: {_verdict(redis, 4.7, True)}",
        ),
    ]
    if not isinstance(t.capped, str):
        median = t.capped.median
        rows.append(("D'/A' (median)", f"{median:.2f}", f">= 1.8: {_verdict(median, 1.8, False)}"))
    rows += [
        (
            "steps with a run_step.started, fewest",
            f"{fewest:.1%}",
            f"100% in each of {len(runs)} runsteps drains: {_verdict(fewest, 1.0, False)}",
        ),
        ("A/C", f"{a.rate / c.rate:.1f}", f">= 10: {_verdict(a.rate / c.rate, 10, False)}"),
    ]
    return rows


def _capped(c: Capped | str, pinned: bool) -> list[Row]:
    a_, d_ = ("A''", "D''") if pinned else ("A'", "D'")
    if isinstance(c, str):
        return [(f"{a_} and {d_} capped", "left out", c)]
    per = f"each worker capped at {c.cores:g} CPU (a cgroup CFS quota, as a pod's limits.cpu)"
    if pinned:
        per += "; 2 partitions"
    a = [pair[0].drain for pair in c.rounds]
    d = [pair[1].drain for pair in c.rounds]
    ratios = c.ratios

    def rates(drains: list[Drain]) -> str:
        return " / ".join(_n(x.rate) for x in drains)

    cores = " / ".join(
        f"{x.cpu_us('consumer') * x.rate / 1e6:.2f}+{x.cpu_us('redis') * x.rate / 1e6:.2f}"
        for x in d
    )
    two = (
        "2 capped processes, each pinned to its partition (RUNSTEPS_OWN_PARTITIONS), over 1 "
        "reading both"
        if pinned
        else "2 capped processes over 1"
    )
    return [
        (f"{a_} runsteps, 1 process, capped", f"{rates(a)} ev/s", f"{per}; one per round"),
        (
            f"{d_} runsteps, 2 processes{', pinned' if pinned else ''}, capped",
            f"{rates(d)} ev/s",
            f"{per}; one per round",
        ),
        (
            f"steps with a run_step.started ({a_} / {d_})",
            "; ".join(f"{pair[0].started:.1%} / {pair[1].started:.1%}" for pair in c.rounds),
            "one pair per round",
        ),
        (
            f"{d_}/{a_} per round",
            " / ".join(f"{r:.2f}" for r in ratios),
            f"{a_} then {d_} in each round; {d_} used {cores} cores (workers + redis-server)",
        ),
        (
            f"{d_}/{a_}",
            f"{c.median:.2f}",
            f"median of {len(ratios)} rounds: {two}; workers and Redis fit the {_CORES} cores",
        ),
    ]


def _latency(runs: list[Latency]) -> list[Row]:
    rows: list[Row] = []
    for x in runs:
        rate = _n(x.offered_rate)
        rows += [
            (
                f"latency at {rate}/s: p50 / p90",
                f"{x.p50_ms:.1f} / {x.p90_ms:.1f} ms",
                f"sent {_n(x.achieved_rate)}/s, {_n(x.events)} events, XADD -> derived seen",
            ),
            (
                f"latency at {rate}/s: p99 / max",
                f"{x.p99_ms:.1f} / {x.max_ms:.1f} ms",
                f"worker CPU busy {x.worker_busy:.0%}, redis-server {x.redis_busy:.0%}",
            ),
        ]
    return rows


def _micro(m: Micro) -> list[Row]:
    return [
        (
            "hot path, no Redis",
            f"{m.us_per_event:.1f} µs/event",
            f"{_n(m.per_core)} ev/s per core over {_n(m.events)} entries ({_n(m.steps)} steps)",
        ),
        (
            "per stage: " + " / ".join(STAGES),
            " / ".join(f"{m.us(s):.1f}" for s in STAGES) + " µs/event",
            " / ".join(f"{m.share(s):.0%}" for s in STAGES)
            + "; op = step_op: state string and the events the entry likely publishes (orjson)",
        ),
        (
            "decode: msgspec fast path vs pydantic alone",
            f"{m.fast_decode_gain:.1f}x faster",
            f"{m.seconds['decode'] / m.events * 1e6:.1f} vs "
            f"{m.pydantic_decode_s / m.events * 1e6:.1f} µs/entry, same entries",
        ),
    ]


def _recovery(r: RecoveryResult) -> list[Row]:
    return [
        (
            "runsteps claim loop",
            f"{r.runsteps_s:.2f} s",
            f"{_n(r.backlog / r.runsteps_s)} ev/s, full processing",
        ),
        (
            "FastStream min_idle_time, validate+ack",
            f"{r.faststream_s:.2f} s",
            f"{_n(r.backlog / r.faststream_s)} ev/s",
        ),
        (
            "FastStream min_idle_time + Processor",
            f"{r.faststream_processor_s:.2f} s",
            f"{_n(r.backlog / r.faststream_processor_s)} ev/s, full processing",
        ),
        (
            "FastStream / runsteps time",
            f"{r.faststream_s / r.runsteps_s:.1f}x",
            f"{r.faststream_processor_s / r.runsteps_s:.1f}x with the same processing",
        ),
    ]


def _code() -> str:
    """A fingerprint of the code measured: the service, its contracts and this bench."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for package in ("service", "contracts", "bench"):
        for path in sorted((root / package).glob("*.[pl][yu]*")):  # .py and .lua
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def _machine() -> str:
    try:
        redis = subprocess.run(
            [find_redis_server(), "--version"], capture_output=True, text=True, check=True
        ).stdout.split()[2]
    except Exception:  # the version is decoration; a missing binary failed the run earlier
        redis = "v=?"
    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"redis-server {redis.removeprefix('v=')}, {platform.system()} {platform.release()}"
    )


@dataclass
class Results:
    """What one `python -m bench` run measured; absent sections were not run."""

    command: str
    started: datetime
    throughput: Throughput | None = None
    latency: list[Latency] = field(default_factory=list)
    micro: Micro | None = None
    recovery: RecoveryResult | None = None
    notes: list[str] = field(default_factory=list)

    def sections(self) -> list[tuple[str, list[Row]]]:
        """(title, rows) of every section that ran."""
        out: list[tuple[str, list[Row]]] = []
        if self.throughput is not None:
            out.append(("Targets, judged on this run", _targets(self.throughput)))
            n = _n(self.throughput.a.drain.events)
            out.append((f"Throughput: drain {n} pre-filled entries", _throughput(self.throughput)))
        if self.latency:
            out.append(("Latency at fixed offered rates, one worker", _latency(self.latency)))
        if self.micro is not None:
            out.append(("Worker hot path: decode -> op", _micro(self.micro)))
        if self.recovery is not None:
            title = f"Recovery of a {_n(self.recovery.backlog)}-entry dead-consumer backlog"
            out.append((title, _recovery(self.recovery)))
        return out

    def text(self) -> str:
        """The table as printed."""
        rows = [r for _, rs in self.sections() for r in rs]
        w0 = max((len(r[0]) for r in rows), default=10)
        w1 = max((len(r[1]) for r in rows), default=10)
        lines = [f"runsteps benchmark  {self.started:%Y-%m-%d %H:%M %Z}  `{self.command}`"]
        for title, section in self.sections():
            lines += ["", title]
            lines += [f"  {m:<{w0}}  {v:>{w1}}  {note}".rstrip() for m, v, note in section]
        return "\n".join(lines)

    def markdown(self) -> str:
        """The table as bench/results.md holds it."""
        lines = [
            "# runsteps benchmark results",
            "",
            f"- command: `{self.command}`",
            f"- date: {self.started:%Y-%m-%d %H:%M %Z}",
            f"- machine: {_machine()}",
            f"- code: sha256 of service/, contracts/, bench/ sources = {_code()}",
            "- absolute numbers are machine noise; ratios measured side by side are the claim",
        ]
        for title, section in self.sections():
            lines += ["", f"## {title}", "", "| metric | value | note |", "|---|---:|---|"]
            lines += [f"| {m} | {v} | {note} |" for m, v, note in section]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"
