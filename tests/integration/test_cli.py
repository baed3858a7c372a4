"""The `runsteps` command as users run it: demo, inspect, replay-dlq, schema."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from redis.asyncio import Redis

from service.cli import main
from service.process import Processor
from service.redis_server import free_port
from service.sample import T0, step
from service.settings import Settings
from service.store import Store
from tests.helpers import fetch
from tests.system.workers import ROOT, worker_env


def runsteps(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m service ARGS` with settings passed as RUNSTEPS_* variables."""
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        env=worker_env(settings, settings.consumer),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_runs_end_to_end() -> None:
    """`runsteps demo` starts its own Redis, prints derived events and DLQ entries, exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "service", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "demo OK" in done.stdout
    assert "run_step.transition_rejected" in done.stdout
    assert "DLQ" in done.stdout


async def test_inspect_step_and_run(redis: Redis, settings: Settings) -> None:
    """`inspect --run RUN_ID [STEP_ID]` prints a run's (or one step's) state as JSON."""
    store = Store(redis, settings)
    await store.ensure_group()
    body = step("i1", "completed", run_id="r-inspect", ended_at=T0 + 2, usage=(3, 4))
    await redis.xadd(settings.source_stream, {"data": json.dumps(body)})
    await Processor(store, settings).process(
        await fetch(redis, settings.source_stream, settings.group, "c")
    )
    one = runsteps(settings, "inspect", "--run", "r-inspect", "i1")
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["status"] == "completed"
    run = runsteps(settings, "inspect", "--run", "r-inspect")
    assert json.loads(run.stdout)["usage"]["total_tokens"] == 7
    missing = runsteps(settings, "inspect", "--run", "r-inspect", "nope")
    assert missing.returncode == 1
    assert "not tracked: step nope of run r-inspect" in missing.stderr
    assert runsteps(settings, "inspect", "--run", "nope").returncode == 1


async def test_replay_dlq_command(redis: Redis, settings: Settings) -> None:
    """`replay-dlq --type KIND` moves matching DLQ entries back to the source stream."""
    for kind in ("processing_failed", "processing_failed", "invalid_json"):
        error = json.dumps({"kind": kind, "message": "x", "errors": []})
        await redis.xadd(settings.dlq_stream, {"data": b"{}", "error": error})
    done = runsteps(settings, "replay-dlq", "--type", "processing_failed", "--limit", "1")
    assert done.returncode == 0, done.stderr
    assert "re-submitted 1" in done.stdout
    assert await redis.xlen(settings.dlq_stream) == 2
    assert await redis.xlen(settings.source_stream) == 1


def test_schema_command_writes_files(tmp_path: Path) -> None:
    """`schema --out DIR` writes JSON Schema for inputs and derived events."""
    assert main(["schema", "--out", str(tmp_path)]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"run_step.schema.json", "derived_event.schema.json"} <= names
    assert json.loads((tmp_path / "inbound.schema.json").read_text())


def test_sigterm_while_waiting_for_redis_exits_promptly(settings: Settings) -> None:
    """A worker that cannot reach Redis at start-up still stops at once on SIGTERM, exit 0."""
    unreachable = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "worker"],
        cwd=ROOT,
        env=worker_env(unreachable, "lonely"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until it is retrying, never on a timer
            if "redis unavailable at start-up" in line:
                break
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - began < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
