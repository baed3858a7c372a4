"""The `runsteps` command as users run it: demo, inspect, replay-dlq, schema."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from service.dev.redis_server import free_port
from service.dev.sample import T0, step
from service.edge.cli import main
from service.settings import Settings
from service.storage.client import PartitionClient
from service.storage.keys import partitions
from service.storage.reads import MAX_PAGE
from tests.conftest import make_processor
from tests.helpers import PAGE_SLACK, fetch, seed_big_run
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


def _use(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads its settings from RUNSTEPS_* variables, as an operator sets them."""
    for name, value in worker_env(settings, settings.consumer).items():
        if name.startswith("RUNSTEPS_"):
            monkeypatch.setenv(name, value)


async def _process(settings: Settings, *bodies: dict[str, object]) -> None:
    redis = Redis.from_url(settings.redis_url)
    conn = PartitionClient(redis, settings)
    try:
        await conn.ensure_group()
        await conn.load_scripts()
        for body in bodies:
            await redis.xadd(settings.source_stream, {"data": json.dumps(body)})
        entries = await fetch(redis, settings.source_stream, settings.group, "c")
        await make_processor(conn).process(entries)
    finally:
        await redis.aclose()


def test_inspect_step_and_run(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`inspect --run RUN_ID [STEP_ID]` prints a run's (or one step's) state as typed JSON."""
    body = step("i1", "completed", run_id="r-inspect", ended_at=T0 + 2, usage=(3, 4))
    asyncio.run(_process(settings, body))
    _use(settings, monkeypatch)
    assert main(["inspect", "--run", "r-inspect", "i1"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert (one["status"], one["duration_s"], one["created_at"]) == ("completed", 2, T0)
    assert one["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert main(["inspect", "--run", "r-inspect"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["usage"]["total_tokens"] == 7
    assert run["steps_ended"]["completed"] == 1
    assert main(["inspect", "--run", "r-inspect", "nope"]) == 1
    assert "not tracked: step nope of run r-inspect" in capsys.readouterr().err
    assert main(["inspect", "--run", "nope"]) == 1


def test_inspect_prints_one_page_of_a_huge_run(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`inspect --run` of a 100,000-step run prints one page (at most about 1000 steps,
    whatever `--limit` says) and the cursor of the next."""

    async def seed() -> None:
        redis = Redis.from_url(settings.redis_url)
        await seed_big_run(redis, partitions(settings)[0].keys.run("r-big"), 100_000)
        await redis.aclose()

    asyncio.run(seed())
    _use(settings, monkeypatch)
    assert main(["inspect", "--run", "r-big", "--limit", "100000"]) == 0
    page = json.loads(capsys.readouterr().out)
    assert MAX_PAGE <= len(page["steps"]) < MAX_PAGE + PAGE_SLACK
    assert page["next_cursor"] is not None


def test_replay_dlq_command(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`replay-dlq --type KIND` moves matching DLQ entries back to the source stream; one
    that claims a field no source can have had is refused, said, and left in place."""

    async def setup() -> None:
        redis = Redis.from_url(settings.redis_url)
        for kind in ("processing_failed", "processing_failed", "invalid_json"):
            error = json.dumps({"kind": kind, "message": "x", "errors": []})
            await redis.xadd(settings.dlq_stream, {"data": b"{}", "error": error})
        error = json.dumps({"kind": "missing_data", "message": "x", "errors": []})
        forged = {"data": b"", "error": error, "field:data": b"{}", "field:x": b"1"}
        await redis.xadd(settings.dlq_stream, cast("Any", forged))
        await redis.aclose()

    async def lengths() -> tuple[int, int]:
        redis = Redis.from_url(settings.redis_url)
        try:
            return await redis.xlen(settings.dlq_stream), await redis.xlen(settings.source_stream)
        finally:
            await redis.aclose()

    asyncio.run(setup())
    _use(settings, monkeypatch)
    assert main(["replay-dlq", "--type", "processing_failed", "--limit", "1"]) == 0
    assert "re-submitted 1" in capsys.readouterr().out
    assert asyncio.run(lengths()) == (3, 1)
    assert main(["replay-dlq", "--type", "missing_data"]) == 0
    out = capsys.readouterr().out
    assert "re-submitted 0" in out
    assert "refused 1 DLQ entries, left in place (field:data" in out
    assert asyncio.run(lengths()) == (3, 1)


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
