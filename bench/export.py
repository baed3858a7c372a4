"""`python -m bench.export [--events N]`: can one exporter keep up with one worker?

One workload, side by side on the same fresh redis-server: a `runsteps worker` process
drains the pre-filled source stream at full speed (derived events published per second),
then a `runsteps export-otel` process drains the derived stream it left, sending OTLP/HTTP
to a sink in this process that reads each request and answers 200 without decoding it (a
backend's cost is not the exporter's). Printed: derived events published per second by the
worker, derived events acked and spans exported per second by the exporter, the issue's
ratio (spans exported per second / derived events published per second; >= 1.0: one
exporter keeps up with one worker), and CPU microseconds per derived event and per span.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any

from service.dev.redis_server import free_port

from .infra import cpu_seconds, fresh_redis, watch_drain
from .workers import ROOT, WorkerProcess, bench_settings
from .workload import build, prefill

__all__ = ["main"]


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that reads each request and accepts it, nothing more."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")  # an empty ExportTraceServiceResponse
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _ExporterProcess:
    """`python -m service export-otel` with the scenario's settings, sending to `endpoint`."""

    def __init__(self, env: dict[str, str]) -> None:
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115  # closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "export-otel"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._log,
        )  # fmt: skip

    def failure(self) -> str | None:
        """Why the exporter stopped, or None while it runs."""
        code = self.proc.poll()
        if code is None:
            return None
        self._log.seek(0)
        return f"exporter exited with {code}: {self._log.read().decode(errors='replace')[-2000:]}"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


async def _scrape(port: int, name: str) -> float:
    """A sample's value on the exporter's /metrics."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    body = (await reader.read()).decode()
    writer.close()
    await writer.wait_closed()
    found = re.search(rf"^{name} ([0-9.e+]+)$", body, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"{name} not on the exporter's /metrics")
    return float(found.group(1))


async def run(events: int) -> dict[str, float]:
    """One side-by-side measurement; the figures printed, by name."""
    workload = build(events)
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        async with fresh_redis() as (server, redis):
            s = bench_settings(server.url, "export")
            await prefill(redis, s.source_stream, s.group, workload.payloads)
            assert server.proc is not None
            redis_pid = server.proc.pid
            worker = WorkerProcess(s, "bench-worker")
            try:
                tracked = await watch_drain(
                    redis, s.source_stream, s.group, total=len(workload), timeout_s=600,
                    what="worker", failed=worker.failure,
                    cpu=lambda: {"worker": cpu_seconds(worker.pid)},
                )  # fmt: skip
            finally:
                worker.stop()
            derived = int(await redis.xlen(s.derived_stream))
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNSTEPS_", "OTEL_"))}
            env |= {  # "": an unset setting, as WorkerProcess passes it
                f"RUNSTEPS_{k.upper()}": "" if v is None else str(v)
                for k, v in s.model_dump().items()
            }
            env |= {
                "RUNSTEPS_CONSUMER": "bench-exporter",
                "RUNSTEPS_HTTP_PORT": str(port),
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{sink.server_port}/v1/traces",
            }
            exporter = _ExporterProcess(env)
            try:
                exported = await watch_drain(
                    redis, s.derived_stream, s.export_group, total=derived, timeout_s=600,
                    what="exporter", failed=exporter.failure,
                    cpu=lambda: {"exporter": cpu_seconds(exporter.proc.pid),
                                 "redis": cpu_seconds(redis_pid)},
                )  # fmt: skip
                spans = await _scrape(port, "runsteps_export_spans_total")
            finally:
                exporter.stop()
    finally:
        sink.shutdown()
        sink.server_close()
    published_rate = derived / tracked.seconds
    span_rate = spans / exported.seconds
    return {
        "source entries": len(workload),
        "derived events": derived,
        "spans": spans,
        "worker: derived events published/s": published_rate,
        "exporter: derived events acked/s": derived / exported.seconds,
        "exporter: spans exported/s": span_rate,
        "spans exported/s / derived events published/s": span_rate / published_rate,
        "derived acked/s / derived published/s": (derived / exported.seconds) / published_rate,
        "worker CPU us per derived event": tracked.cpu_s["worker"] / derived * 1e6,
        "exporter CPU us per derived event": exported.cpu_s["exporter"] / derived * 1e6,
        "exporter CPU us per span": exported.cpu_s["exporter"] / spans * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: run once, print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="source entries")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args.events))
    width = max(map(len, figures))
    for name, value in figures.items():
        shown = f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
        print(f"{name:<{width}}  {shown:>12}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
