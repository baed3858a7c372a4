"""`python -m bench.scriptcost [--rev REV]`: where the commit script's redis-server CPU goes.

The workload is decoded into batches of 500 as the worker does, and every batch's commit
call (keys and arguments, exactly as the worker sends them) is recorded once. The calls are
then replayed against three scripts in turns, each on a flushed server, and redis-server's
CPU per entry is measured (median of the rounds):

- `commit`: service/storage/lua/commit.lua as the worker runs it;
- `arguments only`: the same calls to a script that returns at once: what carrying the
  arguments into Lua costs (Redis's Lua hashes every byte of every string it creates);
- `no XADD`: the commit script with its XADD left out (everything else as is).

So `commit` less `no XADD` is the derived events' XADDs (the contract: one per event), and
`no XADD` less `arguments only` is deciding and writing state. XREADGROUP is not in here: the
bench's B pays it too.

With `--rev REV`, the same workload is also recorded by REV's own decoder, protocol and
script (a temporary git worktree), and each round replays REV's calls and this tree's, in
alternating order, on the same server: `commit` and `arguments only` of each, and this
tree's `commit` over REV's per round, with their median. Replayed calls leave out the
worker's Python and the drain's timing, so this is the steadiest side-by-side measure of a
change's redis-server cost that bench/ has (`bench.compare` measures the whole worker).
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvloop
from redis.asyncio import Redis

from service.dev.redis_server import LocalRedis
from service.settings import Settings

from .compare import worktree
from .infra import cpu_seconds, fresh_redis
from .workers import ROOT
from .workload import build

__all__ = ["main"]

BATCH = 500
_XADD = "redis.call('XADD', derived, 'MAXLEN', '~', maxlen, '*', 'data', data)"

Calls = list[tuple[int, tuple[Any, ...]]]
"""Commit calls: (number of keys, keys then arguments)."""

# Run by `record` with the measured tree as the working directory, so that tree's own
# decoder, protocol and script make the calls (no server: building a call reads nothing).
# Reads the pickled (payloads, batch size, output path); writes (script source, calls).
_RECORD = """
import pickle, sys
from redis.asyncio import Redis
from service.settings import Settings
from service.storage.client import PartitionClient
from service.storage.pending import Pending
from service.storage.protocol import commit_call
from service.storage.scripts import COMMIT
from service.storage.store import Store
from service.worker.process import Processor
from service.worker.telemetry import Telemetry

payloads, batch, out = pickle.load(sys.stdin.buffer)
settings = Settings(redis_url="redis://127.0.0.1:9/0", consumer="scriptcost")
store = Store(PartitionClient(Redis.from_url(settings.redis_url), settings))
processor = Processor(store, Pending(store.conn), settings, Telemetry())
entries = [(f"{1_700_000_000_000 + i}-0".encode(), {b"data": p}) for i, p in enumerate(payloads)]
calls = []
for at in range(0, len(entries), batch):
    built = processor.build(entries[at : at + batch])
    call = commit_call(store.conn, built.runs, built.acks)
    calls.append((len(call.keys), (*call.keys, *call.args)))
with open(out, "wb") as f:
    pickle.dump((COMMIT.source, calls), f)
"""


def record(payloads: list[bytes], root: Path) -> tuple[str, Calls]:
    """The commit script and the calls the tree at `root` makes for `payloads`."""
    with tempfile.TemporaryDirectory(prefix="runsteps-scriptcost-") as tmp:
        out = Path(tmp) / "calls.pickle"
        subprocess.run(
            [sys.executable, "-c", _RECORD], cwd=root, check=True,
            input=pickle.dumps((payloads, BATCH, str(out))),
        )  # fmt: skip
        with out.open("rb") as f:
            source, calls = pickle.load(f)  # written just now, by us
    return source, calls


def variants(source: str) -> dict[str, str]:
    """The commit script and its two cut-down variants, by name."""
    assert _XADD in source, "commit.lua's publish() changed: update bench/scriptcost.py"
    return {
        "commit": source,
        "arguments only": "do return '' end\n" + source,
        "no XADD": source.replace(_XADD, ""),
    }


async def replay(server: LocalRedis, redis: Redis, script: str, calls: Calls) -> float:
    """redis-server's CPU seconds for `calls` against `script`, on a flushed server."""
    assert server.proc is not None
    await redis.flushall()
    sha = await redis.script_load(script)
    # Every tree's calls ack into the default source stream and group.
    defaults = Settings()
    await redis.xgroup_create(defaults.source_stream, defaults.group, mkstream=True)
    before = cpu_seconds(server.proc.pid)
    for nkeys, args in calls:
        await redis.evalsha(sha, nkeys, *args)
    return cpu_seconds(server.proc.pid) - before


def _bytes_per_entry(calls: Calls, events: int) -> float:
    return sum(len(a) for _, args in calls for a in args if isinstance(a, bytes | str)) / events


async def run(events: int, rounds: int) -> None:
    """This tree's script and its variants, in turns; the medians."""
    payloads = build(events).payloads
    source, calls = record(payloads, ROOT)
    size = _bytes_per_entry(calls, events)
    print(f"{events:,} entries in {len(calls)} calls, {size:.0f} bytes each")
    per_entry: dict[str, list[float]] = {name: [] for name in variants(source)}
    async with fresh_redis() as (server, redis):
        for _ in range(rounds):
            for name, script in variants(source).items():
                seconds = await replay(server, redis, script, calls)
                per_entry[name].append(seconds / events * 1e6)
    for name, values in per_entry.items():
        print(f"{name:>15}: {statistics.median(values):4.1f} us of redis-server CPU per entry")


async def run_against(rev: str, events: int, rounds: int) -> None:
    """REV's calls and this tree's, alternating, each round; the ratios and medians."""
    payloads = build(events).payloads
    with worktree(rev) as base:
        trees = {rev: record(payloads, base), "this tree": record(payloads, ROOT)}
    for name, (_, calls) in trees.items():
        print(f"{name}: {len(calls)} calls, {_bytes_per_entry(calls, events):.0f} bytes per entry")
    figures: dict[tuple[str, str], list[float]] = {}
    ratios: list[float] = []
    async with fresh_redis() as (server, redis):
        for n in range(1, rounds + 1):
            order = list(trees.items()) if n % 2 else list(reversed(trees.items()))
            for name, (source, calls) in order:
                for variant in ("commit", "arguments only"):
                    seconds = await replay(server, redis, variants(source)[variant], calls)
                    figures.setdefault((name, variant), []).append(seconds / events * 1e6)
            old, new = figures[rev, "commit"][-1], figures["this tree", "commit"][-1]
            ratios.append(new / old)
            print(f"round {n}: commit {rev} {old:.1f} us, this tree {new:.1f} us per entry, "
                  f"ratio {new / old:.2f}", flush=True)  # fmt: skip
    for (name, variant), values in figures.items():
        print(f"{name:>10} {variant:>15}: {statistics.median(values):4.1f} us per entry (median)")
    print(f"redis-server CPU per entry, this tree / {rev}: median {statistics.median(ratios):.2f} "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}, {rounds} rounds)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scriptcost", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rev", help="git revision to compare this tree's script cost with")
    args = parser.parse_args(argv)
    if args.rev:
        uvloop.run(run_against(args.rev, args.events, args.rounds))
    else:
        uvloop.run(run(args.events, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
