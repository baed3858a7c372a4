"""`python -m bench.export [--events N]`: can one exporter keep up with one worker?

One workload, side by side on the same fresh redis-server: a `runsteps worker` process
drains the pre-filled source stream at full speed (derived events published per second),
then a `runsteps export-otel` process drains the derived stream it left, sending OTLP/HTTP
to a sink in this process that reads each request and answers 200 without decoding it (a
backend's cost is not the exporter's); that twice, one after the other, each in its own
group: with the SDK's OTLP encoder (`RUNSTEPS_EXPORT_ENCODER=sdk`) and with runsteps' own
(`wire`, the default). Printed: derived events published per second by the worker; for
each encoder derived events acked and spans exported per second, both over the worker's
rate (derived acked / derived published >= 1.0: one exporter keeps up with one worker), and
CPU microseconds per derived event and per span; and the two encoders' ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
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

__all__ = ["ENCODERS", "main"]

# The exporter's encoders (RUNSTEPS_EXPORT_ENCODER), each measured on the same derived events.
ENCODERS = ("sdk", "wire")


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
            base = {k: v for k, v in os.environ.items() if not k.startswith(("RUNSTEPS_", "OTEL_"))}
            base |= {  # "": an unset setting, as WorkerProcess passes it
                f"RUNSTEPS_{k.upper()}": "" if v is None else str(v)
                for k, v in s.model_dump().items()
            }
            base["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = (
                f"http://127.0.0.1:{sink.server_port}/v1/traces"
            )
            runs: dict[str, tuple[float, float, float]] = {}
            for encoder in ENCODERS:  # each in its own group: the same derived events
                port, group = free_port(), f"{s.export_group}-{encoder}"
                exporter = _ExporterProcess(base | {
                    "RUNSTEPS_CONSUMER": "bench-exporter",
                    "RUNSTEPS_HTTP_PORT": str(port),
                    "RUNSTEPS_EXPORT_ENCODER": encoder,
                    "RUNSTEPS_EXPORT_GROUP": group,
                })  # fmt: skip
                try:
                    drain = await watch_drain(
                        redis, s.derived_stream, group, total=derived, timeout_s=600,
                        what=f"exporter ({encoder})", failed=exporter.failure,
                        cpu=lambda: {"exporter": cpu_seconds(exporter.proc.pid)},  # noqa: B023
                    )  # fmt: skip
                    spans = await _scrape(port, "runsteps_export_spans_total")
                finally:
                    exporter.stop()
                runs[encoder] = (drain.seconds, drain.cpu_s["exporter"], spans)
    finally:
        sink.shutdown()
        sink.server_close()
    published_rate = derived / tracked.seconds
    figures: dict[str, float] = {
        "source entries": len(workload),
        "derived events": derived,
        "spans": runs["wire"][2],
        "worker: derived events published/s": published_rate,
        "worker CPU us per derived event": tracked.cpu_s["worker"] / derived * 1e6,
    }
    for encoder, (seconds, cpu_s, spans) in runs.items():
        figures |= {
            f"exporter ({encoder}): derived events acked/s": derived / seconds,
            f"exporter ({encoder}): spans exported/s": spans / seconds,
            f"exporter ({encoder}): derived acked/s / derived published/s": (
                derived / seconds / published_rate
            ),
            f"exporter ({encoder}): spans exported/s / derived published/s": (
                spans / seconds / published_rate
            ),
            f"exporter ({encoder}): CPU us per derived event": cpu_s / derived * 1e6,
            f"exporter ({encoder}): CPU us per span": cpu_s / spans * 1e6,
        }
    wire, sdk = runs["wire"], runs["sdk"]
    figures["wire / sdk: derived events acked/s"] = sdk[0] / wire[0]
    figures["wire / sdk: exporter CPU per span"] = (wire[1] / wire[2]) / (sdk[1] / sdk[2])
    return figures


def main(argv: list[str] | None = None) -> int:
    """Entry point: run `--rounds` times, print each round's figures, then their medians."""
    parser = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="source entries")
    parser.add_argument("--rounds", type=int, default=1, help="measurements, each on a fresh "
                        "server: the median of each figure is printed last")  # fmt: skip
    args = parser.parse_args(argv)
    rounds = []
    for index in range(args.rounds):
        rounds.append(asyncio.run(run(args.events)))
        _print(f"round {index + 1}", rounds[-1])
    if args.rounds > 1:
        _print(f"median of {args.rounds}", {
            name: statistics.median(r[name] for r in rounds) for name in rounds[0]
        })  # fmt: skip
    return 0


def _print(title: str, figures: dict[str, float]) -> None:
    print(f"-- {title}")
    width = max(map(len, figures))
    for name, value in figures.items():
        shown = f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
        print(f"{name:<{width}}  {shown:>12}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
