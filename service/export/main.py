"""`runsteps export-otel`: the exporter and its HTTP port in one process, until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import uvicorn

from service.errors import ConfigError
from service.export.exporter import Exporter
from service.export.http import ExportMetrics, build_app
from service.settings import Settings

__all__ = ["run_exporter"]

log = logging.getLogger("runsteps.export")


class _Server(uvicorn.Server):
    """uvicorn without its signal handling: the exporter stops the server itself, after
    its own loops (uvicorn would re-raise the signal once done, ending the process early)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave SIGTERM and SIGINT to `_serve`."""
        yield


async def _serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    exporter = Exporter(settings)
    metrics = ExportMetrics(exporter)
    config = uvicorn.Config(
        build_app(exporter, metrics),
        host=settings.http_host,
        port=settings.http_port,
        lifespan="off",
        log_config=None,
        access_log=settings.http_access_log,
    )
    server = _Server(config)
    http = asyncio.create_task(server.serve(), name="runsteps-export-http")
    try:
        starting = asyncio.create_task(exporter.start())
        await asyncio.wait({starting, asyncio.create_task(stop.wait())},
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if not starting.done():  # stopped while waiting for Redis
            starting.cancel()
        else:
            starting.result()  # a ConfigError surfaces here
            log.info(
                "exporting derived events of %d partition(s) as group %s (%s encoder)",
                len(exporter.parts),
                settings.export_group,
                exporter.encoding,
            )
            await stop.wait()
    finally:
        await exporter.stop()
        server.should_exit = True
        await http


def run_exporter(
    settings: Settings, run: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
) -> int:
    """Run until SIGTERM/SIGINT on `run`'s event loop (the CLI's: RUNSTEPS_EVENT_LOOP, as
    the worker); the process exit code (2: configuration error)."""
    try:
        run(_serve(settings))
    except ConfigError as exc:
        print(f"runsteps export-otel: configuration error: {exc}", file=sys.stderr)
        return 2
    return 0
