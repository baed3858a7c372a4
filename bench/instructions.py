"""`python -m bench.instructions REV`: instructions per entry, REV against this tree (valgrind).

On a shared machine a drain's CPU time drifts by tens of percent between runs, so
`bench.compare` needs many rounds to tell a 5% change from noise. Instructions executed do
not drift: under valgrind (`--tool=cachegrind --cache-sim=no`, which only counts) the same
work gives the same count to a few parts in a million. They leave out what instructions do
not show (cache misses, a bigger heap), so they complement `bench.compare`, never replace it.

Two measurements, each tree's in its own processes, with Python's hash seed fixed:
- **worker**: the real worker (`python -m service worker`, REV's tree or this one) drains a
  pre-filled stream of the bench workload under valgrind; a drain of `--events` entries
  less one of a sixth as many, so start-up (imports, price data) cancels out;
- **redis-server**: both trees' commit calls for the same workload (`bench.scriptcost`
  records them, keys and arguments exactly as the worker sends them) replayed against a
  redis-server under valgrind; less a server that only loads the script.

Needs `valgrind` on PATH (Debian: `apt-get install valgrind`). About 10 minutes for the
default 20,000 entries on the 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from redis.asyncio import Redis

from service.dev.redis_server import LocalRedis
from service.settings import Settings

from .compare import worktree
from .infra import BenchError, watch_drain
from .scriptcost import Calls, record
from .workers import ROOT, WorkerProcess, bench_settings
from .workload import build, prefill

__all__ = ["main"]

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


class _Counted:
    """A valgrind command prefix whose instruction count is read once the process ended."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="runsteps-instructions-")
        self.log = Path(self._dir.name) / "valgrind.log"
        self.prefix = (
            "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
            f"--log-file={self.log}",
        )  # fmt: skip

    def count(self) -> int:
        found = _REFS.search(self.log.read_text() if self.log.exists() else "")
        self._dir.cleanup()
        if found is None:
            raise BenchError("valgrind wrote no instruction count (did the process exit?)")
        return int(found.group(1).replace(",", ""))


async def _worker_run(root: Path, events: int) -> int:
    """Instructions of one worker process of `root` draining `events` entries."""
    workload = build(events)
    counted = _Counted()
    server = LocalRedis()
    await asyncio.to_thread(server.start)
    redis = Redis.from_url(server.url)
    try:
        s = bench_settings(server.url, "instructions")
        await prefill(redis, s.source_stream, s.group, workload.payloads)
        worker = WorkerProcess(s, "counted", root, wrapper=counted.prefix, hash_seed="0")
        try:
            await watch_drain(
                redis, s.source_stream, s.group, total=len(workload), timeout_s=3600,
                what="worker under valgrind", failed=worker.failure,
            )  # fmt: skip
        finally:
            worker.stop(timeout_s=600)
    finally:
        await redis.aclose()
        server.stop()
    return counted.count()


async def worker_instructions(root: Path, events: int) -> float:
    """The worker's instructions per entry: a drain of `events` less one of a sixth."""
    small = events // 6
    few, many = await _worker_run(root, small), await _worker_run(root, events)
    return (many - few) / (events - small)


async def _server_run(source: str, calls: Calls) -> int:
    """Instructions of a redis-server that loads `source` and answers `calls`."""
    counted = _Counted()
    server = LocalRedis(wrapper=counted.prefix)
    await asyncio.to_thread(server.start, 120.0)
    redis = Redis.from_url(server.url)
    try:
        sha = await redis.script_load(source)
        defaults = Settings()  # recorded calls ack into the default stream and group
        await redis.xgroup_create(defaults.source_stream, defaults.group, mkstream=True)
        for nkeys, args in calls:
            await redis.evalsha(sha, nkeys, *args)
    finally:
        await redis.aclose()
        await asyncio.to_thread(server.stop, 600.0)
    return counted.count()


async def server_instructions(source: str, calls: Calls, events: int) -> float:
    """redis-server's instructions per entry for `calls`, less loading the script alone."""
    idle, busy = await _server_run(source, []), await _server_run(source, calls)
    return (busy - idle) / events


async def run(rev: str, events: int) -> None:
    """Both measurements for REV and this tree; per entry, and this tree's over REV's."""
    payloads = build(events).payloads
    per: dict[tuple[str, str], float] = {}
    with worktree(rev) as base:
        trees = {rev: base, "this tree": ROOT}
        for name, root in trees.items():
            source, calls = record(payloads, root)
            per[name, "redis-server"] = await server_instructions(source, calls, events)
            print(f"{name}: redis-server {per[name, 'redis-server']:,.0f}", flush=True)
        for name, root in trees.items():
            per[name, "worker"] = await worker_instructions(root, events)
            print(f"{name}: worker {per[name, 'worker']:,.0f}", flush=True)
    for role in ("worker", "redis-server"):
        old, new = per[rev, role], per["this tree", role]
        print(f"{role} instructions per entry: {rev} {old:,.0f}, this tree {new:,.0f}, "
              f"ratio {new / old:.3f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("rev", help="git revision to compare this tree with (e.g. HEAD~1)")
    parser.add_argument("--events", type=int, default=20_000, help="entries per drain")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("bench.instructions needs valgrind on PATH (apt-get install valgrind)")
        return 2
    os.environ.setdefault("PYTHONHASHSEED", "0")
    asyncio.run(run(args.rev, args.events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
