"""The `runsteps` command: worker, export-otel, demo, inspect, replay-dlq, schema."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from service.settings import Settings

if TYPE_CHECKING:
    from service.storage.client import PartitionClient

__all__ = ["main"]


def _runner(choice: str) -> Callable[[Coroutine[Any, Any, None]], None]:
    """What runs the worker's main coroutine: uvloop's loop (less CPU per entry on the hot
    path's socket I/O; bench/README.md has the measurement) or asyncio's own."""
    from service.errors import ConfigError

    if choice == "asyncio":
        return asyncio.run
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("RUNSTEPS_EVENT_LOOP is uvloop, which is not installed") from None
        return asyncio.run
    return uvloop.run


def _few_collections() -> None:
    """Each batch allocates thousands of short-lived objects with no reference cycles; the
    default gen-0 threshold (700) makes the collector rescan them constantly. Measured in
    bench/: about 30% more entries per second with a larger threshold, memory unchanged."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def _settings() -> Settings:
    """Settings from the RUNSTEPS_* variables; an invalid one is a ConfigError naming it."""
    from pydantic import ValidationError

    from service.errors import ConfigError

    try:
        return Settings()
    except ValidationError as exc:
        # One line per command, without the values: RUNSTEPS_REDIS_URL may hold a password.
        problems = [
            (f"RUNSTEPS_{'_'.join(map(str, e['loc'])).upper()}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        ]
        raise ConfigError("; ".join(problems)) from None


def _worker(_: argparse.Namespace) -> int:
    from service.edge.http import build_app
    from service.edge.logs import configure_logging
    from service.errors import ConfigError
    from service.worker.app import build_worker

    settings = _settings()
    configure_logging(settings)
    _few_collections()
    options: dict[str, Any] = {
        "host": settings.http_host,
        "port": settings.http_port,
        "timeout_graceful_shutdown": settings.shutdown_grace_s,
        "log_config": None,  # uvicorn's loggers go to our root handler, in our format
    }
    # uvicorn handles SIGTERM/SIGINT (graceful shutdown), then re-raises the signal once it
    # restored the previous handlers; a no-op handler there makes a clean stop exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    worker = None
    try:
        run = _runner(settings.event_loop)
        worker = build_worker(settings)
        app = build_app(worker)
        level = logging.getLevelNamesMapping()[settings.log_level]
        run(app.run(log_level=level, run_extra_options=options))
    except ConfigError as exc:
        print(f"runsteps worker: configuration error: {exc}", file=sys.stderr)
        return 2
    except SystemExit:
        if worker is not None and worker.aborted:
            return 0  # a stop request before Redis was ever reached: a clean exit
        if worker is None or worker.config_error is None:
            raise
        print(f"runsteps worker: configuration error: {worker.config_error}", file=sys.stderr)
        return 2
    return 0


def _export_otel(_: argparse.Namespace) -> int:
    from service.edge.logs import configure_logging
    from service.errors import ConfigError
    from service.export.main import run_exporter

    settings = _settings()
    configure_logging(settings)
    _few_collections()  # its batches allocate as the worker's do
    try:
        run = _runner(settings.event_loop)
    except ConfigError as exc:
        print(f"runsteps export-otel: configuration error: {exc}", file=sys.stderr)
        return 2
    return run_exporter(settings, run)


def _demo(args: argparse.Namespace) -> int:
    from service.dev.demo import run_demo

    return run_demo(args.redis_url, args.timeout, args.export_otel)


def _connections(settings: Settings) -> tuple[Redis, list[PartitionClient]]:
    from service.storage.client import PartitionClient, connect
    from service.storage.keys import partitions

    redis = connect(settings)
    return redis, [PartitionClient(redis, settings, part) for part in partitions(settings)]


async def _inspect(args: argparse.Namespace) -> int:
    from pydantic import BaseModel

    from service.storage.reads import find_run, find_step

    redis, conns = _connections(_settings())
    found: BaseModel | None
    try:
        if args.step_id:
            found = await find_step(conns, args.run, args.step_id)
        else:
            found = await find_run(conns, args.run, args.cursor, args.limit)
    finally:
        for conn in conns:
            await conn.aclose()
        await redis.aclose()
    if found is None:
        what = f"step {args.step_id} of run {args.run}" if args.step_id else f"run {args.run}"
        print(f"not tracked: {what}", file=sys.stderr)
        return 1
    print(json.dumps(found.model_dump(mode="json"), indent=2))
    return 0


async def _replay_dlq(args: argparse.Namespace) -> int:
    from service.storage.deadletters import Replay, replay_dlq

    redis, conns = _connections(_settings())
    done = Replay()
    try:
        for conn in conns:
            left = None if args.limit is None else args.limit - done.replayed
            if left is not None and left <= 0:
                break
            done.add(await replay_dlq(conn, args.type, left))
            await conn.aclose()
    finally:
        await redis.aclose()
    print(f"re-submitted {done.replayed} dead-lettered entries to their source streams")
    if done.unreadable:
        print(
            f"skipped {done.unreadable} DLQ entries whose error field is unreadable (left in place)"
        )
    if done.refused:
        why = "; ".join(f"{reason}: {n}" for reason, n in sorted(done.refused.items()))
        print(f"refused {done.refused.total()} DLQ entries, left in place ({why})")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from contracts.schema import write_schemas

    for path in write_schemas(Path(args.out)):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `runsteps` console script."""
    parser = argparse.ArgumentParser(prog="runsteps", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="consume the source stream (settings from RUNSTEPS_*)")
    sub.add_parser("export-otel", help="derived events as OpenTelemetry spans over OTLP")
    demo = sub.add_parser("demo", help="private Redis + worker + sample run, events printed")
    demo.add_argument("--redis-url", default=None, help="use this Redis instead of a private one")
    demo.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for events")
    demo.add_argument(
        "--export-otel", action="store_true", help="then send its runs as traces (OTEL_* vars)"
    )
    inspect = sub.add_parser("inspect", help="print a run's (or one of its steps') state")
    inspect.add_argument("--run", required=True, help="the run id: its steps and usage totals")
    inspect.add_argument("step_id", nargs="?", help="only this step of the run")
    inspect.add_argument("--cursor", default="0", help="a run's next page of steps (next_cursor)")
    inspect.add_argument("--limit", type=int, default=100, help="steps per page (at most 1000)")
    replay = sub.add_parser("replay-dlq", help="re-submit dead-lettered entries (after a fix)")
    replay.add_argument("--type", help="only entries of this error kind, e.g. processing_failed")
    replay.add_argument("--limit", type=int, help="at most this many entries")
    schema = sub.add_parser("schema", help="write JSON Schema of inputs and derived events")
    schema.add_argument("--out", default="schema", help="directory to write into")
    args = parser.parse_args(argv)
    from service.errors import ConfigError

    try:
        return _dispatch(parser, args)
    except ConfigError as exc:
        print(f"runsteps {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "worker":
        return _worker(args)
    if args.command == "export-otel":
        return _export_otel(args)
    if args.command == "demo":
        return _demo(args)
    if args.command == "inspect":
        if not (args.step_id or args.run):
            parser.error("inspect needs a STEP_ID or --run RUN_ID")
        return asyncio.run(_inspect(args))
    if args.command == "replay-dlq":
        return asyncio.run(_replay_dlq(args))
    return _schema(args)
