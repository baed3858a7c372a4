"""`python -m bench.compare REV`: the worker's drain rate at git REV and in this tree, in turns.

On a shared machine absolute rates drift by tens of percent within minutes, so one drain of
each build says little. This drains the same pre-filled workload with REV's worker and this
tree's worker, one after the other (each first in every other round), several rounds, and
prints each round's ratio and their median: the side-by-side measurement a change's claim
rests on. REV's tree is a temporary git worktree; both builds run with this environment's
packages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .throughput import run_workers
from .workers import ROOT
from .workload import build

__all__ = ["main", "worktree"]


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A detached git worktree of `rev`, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="runsteps-compare-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), rev],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            yield tree
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False
            )


async def compare(rev: str, rounds: int, events: int, processes: int, cap: float | None) -> None:
    """Print each round's two drain rates and ratio, then the median ratio."""
    workload = build(events)
    ratios: list[float] = []
    cpu: dict[str, list[float]] = {"consumer": [], "redis": []}  # this tree's / REV's, per event
    with worktree(rev) as base:
        for n in range(1, rounds + 1):
            # Each build first in every other round: a drift within a round (the machine
            # slowing down, a warmer page cache) does not favour one of them every time.
            if n % 2:
                old = await run_workers(workload, processes, "old", cap=cap, root=base)
                new = await run_workers(workload, processes, "new", cap=cap)
            else:
                new = await run_workers(workload, processes, "new", cap=cap)
                old = await run_workers(workload, processes, "old", cap=cap, root=base)
            ratios.append(new.drain.rate / old.drain.rate)
            for role, ratio in cpu.items():
                ratio.append(new.drain.cpu_us(role) / old.drain.cpu_us(role))
            print(
                f"round {n}: {rev} {old.drain.rate:,.0f} ev/s, this tree "
                f"{new.drain.rate:,.0f} ev/s, ratio {ratios[-1]:.2f}; CPU per event, worker "
                f"{old.drain.cpu_us('consumer'):.1f} -> {new.drain.cpu_us('consumer'):.1f} us, "
                f"redis-server {old.drain.cpu_us('redis'):.1f} -> "
                f"{new.drain.cpu_us('redis'):.1f} us",
                flush=True,
            )
    print(
        f"this tree / {rev}: median {statistics.median(ratios):.2f} "
        f"(range {min(ratios):.2f}-{max(ratios):.2f}, {rounds} rounds, {events:,} entries, "
        f"{processes} worker process{'es' if processes > 1 else ''}"
        f"{'' if cap is None else f', each capped at {cap:g} CPU'})"
    )
    print(
        f"CPU per event, this tree / {rev} (median): worker "
        f"{statistics.median(cpu['consumer']):.2f}, redis-server "
        f"{statistics.median(cpu['redis']):.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the comparison."""
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("rev", help="git revision to compare this tree with (e.g. HEAD~1)")
    parser.add_argument("--rounds", type=int, default=3, help="drains of each build")
    parser.add_argument("--events", type=int, default=200_000, help="entries per drain")
    parser.add_argument("--processes", type=int, default=1, help="worker processes per drain")
    parser.add_argument("--cap", type=float, default=None, help="CPUs per worker (cgroup)")
    args = parser.parse_args(argv)
    asyncio.run(compare(args.rev, args.rounds, args.events, args.processes, args.cap))
    return 0


if __name__ == "__main__":
    sys.exit(main())
