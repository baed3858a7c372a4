"""runsteps worker processes, exactly as deployed: `python -m service worker` plus env."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

from service.settings import Settings

__all__ = ["WorkerProcess", "bench_settings"]

ROOT = Path(__file__).resolve().parents[1]


def bench_settings(redis_url: str, tag: str, **overrides: object) -> Settings:
    """Settings with stream names and key prefix of one scenario; loopback only."""
    values: dict[str, object] = {
        "redis_url": redis_url,
        "source_stream": f"bench.{tag}.events",
        "derived_stream": f"bench.{tag}.derived",
        "dlq_stream": f"bench.{tag}.dlq",
        "key_prefix": f"bench.{tag}",
        "group": "runsteps",
        "consumer": f"bench-{tag}",
        "http_host": "127.0.0.1",
        "http_port": 0,
        "log_format": "text",
        "shutdown_grace_s": 5.0,
        **overrides,
    }
    return Settings.model_validate(values)


class WorkerProcess:
    """One worker subprocess; its log goes to a temporary file, shown if it fails."""

    def __init__(
        self,
        settings: Settings,
        consumer: str,
        root: Path = ROOT,
        *,
        wrapper: tuple[str, ...] = (),
        hash_seed: str | None = None,
    ) -> None:
        """`root`: the source tree to run the worker from (another build's, to compare);
        `wrapper`: a command to run it under (valgrind); `hash_seed`: PYTHONHASHSEED."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTEPS_")}
        for name, value in settings.model_dump().items():
            env[f"RUNSTEPS_{name.upper()}"] = "" if value is None else str(value)  # "": unset
        env["RUNSTEPS_CONSUMER"] = consumer
        if hash_seed is not None:
            env["PYTHONHASHSEED"] = hash_seed
        self.consumer = consumer
        self._text = ""
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115  # closed in stop()
        self.proc = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "service", "worker"],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.proc.pid

    def failure(self) -> str | None:
        """Why the worker is no longer running, or None while it runs."""
        code = self.proc.poll()
        if code is None:
            return None
        return f"worker {self.consumer} exited with {code}:\n{self.log_tail()}"

    def log_tail(self, lines: int = 15) -> str:
        """The last lines the worker logged."""
        if not self._log.closed:
            self._log.seek(0)
            self._text = self._log.read().decode(errors="replace")
        text = self._text
        return "\n".join(text.splitlines()[-lines:])

    def peak_rss_mib(self) -> float:
        """Peak resident set size so far (VmHWM), in MiB; read before the process stops."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmHWM in /proc/{self.pid}/status")

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, wait for the graceful stop, SIGKILL after `timeout_s`; returns the code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self.log_tail()  # keep the log readable after the file is gone
            self._log.close()
        return self.proc.returncode
