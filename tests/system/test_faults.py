"""Faults: kill -9 a worker, kill -9 Redis, SIGTERM, poison, duplicates and reordering.

Each test runs real worker processes against a real redis-server on loopback and accounts
for every derived event: none lost, none doubled, none unexpected.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from pathlib import Path
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from service.core.state import decode_state
from service.dev.redis_server import LocalRedis
from service.dev.sample import step
from service.settings import Settings
from service.worker.app import build_worker
from tests.helpers import apart, entries, wait_until
from tests.system.load import SUMMARIES, Load, produce, run_totals, tally
from tests.system.workers import start_worker, stop_worker, wait_drained

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]


async def consumer_pending(redis: Redis, s: Settings, consumer: str) -> int:
    """Entries a consumer holds fetched and unacked."""
    try:
        rows = await redis.xpending_range(
            s.source_stream, s.group, "-", "+", 1, consumername=consumer
        )
    except ResponseError:  # the group does not exist yet
        return 0
    return len(rows)


async def produce_paced(redis: Redis, stream: str, data: list[bytes], per_tick: int) -> None:
    """A steady producer: `per_tick` entries every 10 ms, retrying while Redis is away."""
    for start in range(0, len(data), per_tick):
        chunk = data[start : start + per_tick]
        while True:
            try:
                await produce(redis, stream, chunk, chunk=per_tick)
                break
            except (RedisConnectionError, ConnectionError, OSError):
                await asyncio.sleep(0.05)  # Redis restarting: retry, as a real producer does
        await asyncio.sleep(0.01)


def assert_exact(name: str, result: Any) -> None:
    """Record the summary line and require zero lost, doubled and unexpected."""
    SUMMARIES.append(result.line(name))
    assert (result.lost, result.doubled, result.unexpected) == (0, 0, 0), result.line(name)


async def test_kill9_worker_mid_batch(redis: Redis, settings: Settings) -> None:
    """kill -9 of a worker holding a fetched batch: a second worker finishes, exactly once."""
    s = settings.model_copy(update={"claim_idle_ms": 1000, "batch_size": 200})
    load = Load.build(steps=7500, copies=2, seed=11)
    data = load.shuffled()
    assert len(data) == 20_000
    w1 = start_worker(s, "w1")
    w2 = None
    producer = asyncio.create_task(produce_paced(redis, s.source_stream, data, per_tick=200))
    try:
        await wait_until(
            lambda: _holds_batch(redis, s, "w1"), 60, "w1 to hold a fetched, unacked batch"
        )
        w1.send_signal(signal.SIGKILL)
        w1.wait()
        w2 = start_worker(s, "w2")
        await producer
        await wait_drained(redis, s)
        result = await tally(redis, s.derived_stream, load, len(data))
        assert_exact("kill -9 worker mid-batch", result)
        assert (await redis.xpending(s.source_stream, s.group))["pending"] == 0
        assert await run_totals(redis, s.key_prefix, list(load.run_totals)) == load.run_totals
    finally:
        producer.cancel()
        stop_worker(w1)
        if w2 is not None:
            stop_worker(w2)


async def _holds_batch(redis: Redis, s: Settings, consumer: str) -> bool:
    return await consumer_pending(redis, s, consumer) > 0


@pytest.mark.parametrize("fsync", ["always", "everysec"])
async def test_redis_kill9_and_restart(tmp_path: Path, fsync: str) -> None:
    """kill -9 of Redis mid-load, restart from its AOF: workers resume, no acked effect lost.

    appendfsync always: every acknowledged write is on disk, so every entry the workers
    acked has its effects. everysec may lose the last second of writes in a crash; a lost
    write is an effect together with its XACK (one script), so the entry is redelivered and
    its effects redone: producers' lost XADDs are the only loss, and we check none of the
    entries that survived lost their effects.
    """
    args = ("--appendonly", "yes", "--appendfsync", fsync)
    server = LocalRedis(args=args, data_dir=tmp_path).start()
    s = Settings(
        redis_url=server.url,
        consumer="unused",
        http_port=0,
        claim_idle_ms=1000,
        block_ms=50,
        batch_size=200,
    )
    redis = Redis.from_url(server.url)
    load = Load.build(steps=3000, copies=2, seed=12)
    data = load.shuffled()
    workers = [start_worker(s, "w1"), start_worker(s, "w2")]
    producer = asyncio.create_task(produce_paced(redis, s.source_stream, data, per_tick=100))
    try:
        await wait_until(lambda: _derived_at_least(redis, s, 500), 60, "load under way")
        server.kill()
        server = LocalRedis(port=server.port, args=args, data_dir=tmp_path).start()
        await producer
        await wait_drained(redis, s)
        # Effects of every surviving entry: recompute expectations from the stream itself.
        surviving = [f[b"data"] for _, f in await entries(redis, s.source_stream)]
        result = await tally(redis, s.derived_stream, load, len(surviving))
        SUMMARIES.append(result.line(f"redis kill -9 + restart (appendfsync {fsync})"))
        assert result.doubled == 0
        assert result.unexpected == 0
        if fsync == "always":
            assert result.lost == 0
        dead = [stop_worker(w) for w in workers if w.poll() is not None]
        assert not dead, "a worker died with Redis:\n" + "\n".join(dead)
    finally:
        producer.cancel()
        errors = [stop_worker(w) for w in workers]
        await redis.aclose()
        server.stop()
    assert [w.returncode for w in workers] == [0, 0], "\n".join(errors)


async def _derived_at_least(redis: Redis, s: Settings, n: int) -> bool:
    try:
        return int(await redis.xlen(s.derived_stream)) >= n
    except RedisConnectionError:
        return False


async def test_sigterm_exits_in_grace_and_strands_nothing(redis: Redis, settings: Settings) -> None:
    """SIGTERM under load: exit 0 within the grace period; its entries are taken at once.

    The claim idle time is 60 s, so anything stranded would hold the drain back a minute;
    the hand-back on shutdown lets the other worker take it on its next pass.
    """
    s = settings.model_copy(
        update={"claim_idle_ms": 60_000, "shutdown_grace_s": 10.0, "batch_size": 200}
    )
    load = Load.build(steps=4000, copies=2, seed=13)
    data = load.shuffled()
    w1, w2 = start_worker(s, "w1"), start_worker(s, "w2")
    try:
        await produce(redis, s.source_stream, data)
        await wait_until(lambda: _holds_batch(redis, s, "w1"), 60, "w1 to hold a batch")
        began = time.monotonic()
        w1.send_signal(signal.SIGTERM)
        await asyncio.to_thread(w1.wait, s.shutdown_grace_s + 5)
        exit_s = time.monotonic() - began
        assert w1.returncode == 0
        assert exit_s < s.shutdown_grace_s + 5
        await wait_drained(redis, s, timeout_s=30)  # far less than the 60 s claim idle time
        result = await tally(redis, s.derived_stream, load, len(data))
        assert_exact(f"SIGTERM under load (exit in {exit_s:.1f}s)", result)
    finally:
        stop_worker(w1)
        stop_worker(w2)


def _fuzz(rnd: random.Random) -> list[tuple[str, bytes]]:
    """Bad entries of every kind the issue names, each labelled."""
    ok = step("fz", "in_progress")
    bad: list[tuple[str, Any]] = [
        *[(f"random bytes {i}", rnd.randbytes(rnd.randint(1, 200))) for i in range(20)],
        *[(f"truncated {i}", json.dumps(ok).encode()[: rnd.randint(1, 100)]) for i in range(10)],
        ("wrong type created_at", {**ok, "created_at": "noon"}),
        ("wrong type usage", {**ok, "usage": {"prompt_tokens": "many"}}),
        ("wrong type step_details", {**ok, "step_details": []}),
        ("2 MiB payload", {**ok, "pad": "x" * (2 * 1024 * 1024)}),
        ("17 metadata keys", {**ok, "metadata": {f"k{i}": "v" for i in range(17)}}),
        ("65-char key", {**ok, "metadata": {"k" * 65: "v"}}),
        ("unknown status", {**ok, "status": "paused"}),
        (
            "huge tool_calls list",
            {
                **ok,
                "type": "tool_calls",
                "step_details": {
                    "type": "tool_calls",
                    "tool_calls": [
                        {
                            "id": f"c{i}",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}", "output": None},
                        }
                        for i in range(20_000)
                    ],
                },
            },
        ),
    ]
    return [(n, v if isinstance(v, bytes) else json.dumps(v).encode()) for n, v in bad]


async def test_poison_fuzz_everything_accounted(redis: Redis, settings: Settings) -> None:
    """Fuzzed bad input among valid events: each bad one in the DLQ, each valid one done."""
    rnd = random.Random(14)
    load = Load.build(steps=1500, copies=1, seed=14)
    bad = _fuzz(rnd)
    mixed = load.shuffled() + [b for _, b in bad]
    rnd.shuffle(mixed)
    w1 = start_worker(settings, "w1")
    try:
        await produce(redis, settings.source_stream, mixed, chunk=50)
        await wait_drained(redis, settings)
        result = await tally(redis, settings.derived_stream, load, len(mixed))
        dlq = [f for _, f in await entries(redis, settings.dlq_stream)]
        SUMMARIES.append(result.line("poison fuzz") + f" dlq={len(dlq)}/{len(bad)}")
        assert result.lost == result.doubled == result.unexpected == 0
        assert sorted(f[b"data"] for f in dlq) == sorted(b for _, b in bad)
        for f in dlq:
            error = json.loads(f[b"error"])
            assert error["kind"] in {"invalid_json", "invalid_payload", "oversized"}
            assert error["message"]
        assert w1.poll() is None, "the worker restarted or died"
    finally:
        err = stop_worker(w1)
    assert w1.returncode == 0, err


async def test_triplicate_shuffled_across_three_consumers(
    redis: Redis, settings: Settings, redis_url: str
) -> None:
    """5,000 events 3x, shuffled, over 3 consumers: same states and events as in-order once."""
    load = Load.build(steps=3750, copies=1, seed=15)
    assert len(load.entries) == 5000
    # Reference: a single in-order delivery through one in-process worker.
    ref = apart(settings, ".ref")
    worker = build_worker(ref)
    await worker.start()
    try:
        await produce(redis, ref.source_stream, load.entries)
        await wait_drained(redis, ref)
    finally:
        await worker.stop()

    tripled = load.entries * 3
    random.Random(15).shuffle(tripled)
    procs = [start_worker(settings, f"w{i}") for i in range(3)]
    try:
        await produce(redis, settings.source_stream, tripled, chunk=100)
        await wait_drained(redis, settings)
    finally:
        errors = [stop_worker(p) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(errors)

    result = await tally(redis, settings.derived_stream, load, len(tripled))
    assert_exact("3x shuffled over 3 consumers", result)
    shuffled_events = await _events(redis, settings.derived_stream)
    in_order_events = await _events(redis, ref.derived_stream)
    # Everything but run_step.started (present only if in_progress arrived first) and the
    # running totals inside run.usage (cumulative in arrival order) is identical.
    assert _stable(shuffled_events) == _stable(in_order_events)
    runs = list(load.run_totals)
    assert await run_totals(redis, settings.key_prefix, runs) == await run_totals(
        redis, ref.key_prefix, runs
    )
    refs = sorted({(json.loads(d)["run_id"], json.loads(d)["id"]) for d in load.entries})
    statuses = await _statuses(redis, settings.key_prefix, refs)
    assert None not in statuses  # every step is tracked: the comparison means something
    assert statuses == await _statuses(redis, ref.key_prefix, refs)


async def _events(redis: Redis, stream: str) -> list[dict[str, Any]]:
    return [json.loads(f[b"data"]) for _, f in await entries(redis, stream)]


def _stable(events: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (e["event_id"], e["type"], e["to_status"])
        for e in events
        if e["type"] != "run_step.started"
    }


async def _statuses(redis: Redis, prefix: str, refs: list[tuple[str, str]]) -> list[str | None]:
    """Each step's tracked status, read from its run's hash as the store keeps it."""
    pipe = redis.pipeline(transaction=False)
    for run_id, step_id in refs:
        pipe.hget(f"{prefix}:run:{run_id}", f"@{step_id}")
    states = cast("list[bytes | None]", await pipe.execute())
    return [None if raw is None else decode_state(raw.decode())["s"] for raw in states]
