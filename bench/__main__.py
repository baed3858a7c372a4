"""`python -m bench [all|throughput|latency|micro|recovery]`: run, print, write results."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import uvloop

from service.errors import RedisServerNotFoundError

from . import latency, micro, recovery, throughput
from .infra import BenchError, BenchTimeoutError
from .report import Results
from .workload import build

SCENARIOS = ("all", "throughput", "latency", "micro", "recovery")
RESULTS_MD = Path(__file__).resolve().parent / "results.md"
RECOVERY_BACKLOG = 10_000
MICRO_MAX = 20_000
NOTES = [
    "Rates run from a scenario's first delivery to its last ack (pre-filled stream), so "
    "process and framework start-up are excluded; start-up is measured on its own.",
    "Each scenario runs on its own fresh redis-server on 127.0.0.1 (no persistence).",
    "B and C run inside the benchmark process; A and D are `python -m service worker`. "
    "Both run on uvloop (the worker's default, RUNSTEPS_EVENT_LOOP=auto), so the event loop "
    "is the same on each side of a ratio.",
    "C reads with FastStream's defaults (no COUNT: one XREADGROUP takes every entry) and "
    "handles one message at a time; its per-message access logs are off.",
    "Latency: the producer paces XADDs per 1 ms tick to a worker already running; each "
    "in_progress/completed event is timed to its run_step.* event on the derived stream.",
    "Recovery: consumer `dead` holds every entry pending; runsteps' Recovery.claim_once and "
    "FastStream's min_idle_time subscriber (XAUTOCLAIM COUNT 1 per message) each clear it.",
]


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("scenario", nargs="?", default="all", choices=SCENARIOS)
    parser.add_argument("--events", type=int, default=200_000, help="entries per drain")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20,000 entries")
    parser.add_argument(
        "--cap-rounds",
        type=int,
        default=throughput.CAP_ROUNDS,
        help="rounds of the capped pair A', D' (median ratio reported)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Markdown results file (default: bench/results.md for `all`, none otherwise)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.events = 20_000
    if args.events < 1000:
        parser.error("--events must be at least 1000")
    if args.cap_rounds < 1:
        parser.error("--cap-rounds must be at least 1")
    if args.out is None and args.scenario == "all":
        args.out = RESULTS_MD
    return args


async def _run(args: argparse.Namespace, results: Results) -> None:
    # SIGTERM (e.g. from `timeout`) cancels the run, so every finally stops its worker
    # processes and redis-servers instead of leaving them behind.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    wanted = {args.scenario} if args.scenario != "all" else set(SCENARIOS)
    if "micro" in wanted:
        _say("micro: pure hot path ...")
        results.micro = micro.run(build(min(args.events, MICRO_MAX)))
    if "throughput" in wanted:
        _say(f"building {args.events} entries ...")
        results.throughput = await throughput.run(build(args.events), _say, args.cap_rounds)
    if "latency" in wanted:
        rates = (5000.0,) if args.quick else (1000.0, 5000.0)
        results.latency = await latency.run(rates, 3.0 if args.quick else 10.0, _say)
    if "recovery" in wanted:
        results.recovery = await recovery.run(build(RECOVERY_BACKLOG, seed=6), _say)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios; print the table; write Markdown if asked."""
    args = _args(argv)
    exe = Path(sys.executable)
    with contextlib.suppress(ValueError):  # outside the checkout: keep the absolute path
        exe = exe.relative_to(Path.cwd())
    command = shlex.join([str(exe), "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    results = Results(command=command, started=datetime.now(UTC), notes=NOTES)
    try:
        uvloop.run(_run(args, results))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; processes and servers stopped", file=sys.stderr)
        return 130
    except (BenchError, RedisServerNotFoundError) as exc:
        kind = "timed out" if isinstance(exc, BenchTimeoutError) else "failed"
        print(f"bench {kind}: {exc}", file=sys.stderr)
        return 1
    print(results.text())
    if args.out is not None:
        args.out.write_text(results.markdown())
        _say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
