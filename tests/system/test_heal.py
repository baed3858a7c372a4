"""Self-healing: a lost group or stream, an emptied Redis, start-up at maxmemory, dead
consumers, and liveness when the worker cannot get back to consuming.

Real worker processes against real redis-servers; nobody restarts a worker by hand. Each
backlog is accounted for: every derived event once, none lost, none doubled.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from service.dev.redis_server import LocalRedis, free_port
from service.settings import Settings
from tests.helpers import answers, request, wait_until
from tests.system.load import Load, produce, tally
from tests.system.test_faults import _holds_batch, assert_exact, produce_paced
from tests.system.workers import start_worker, stop_worker, wait_drained, wait_reading

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]


@pytest.fixture
def server() -> Iterator[LocalRedis]:
    """A private redis-server without persistence: these tests empty or fill it."""
    with LocalRedis() as local:
        yield local


@pytest.fixture
async def private(server: LocalRedis) -> AsyncIterator[Redis]:
    """A client of the private server."""
    client = Redis.from_url(server.url)
    yield client
    await client.aclose()


def private_settings(server: LocalRedis, **update: Any) -> Settings:
    """Worker settings for the private server (the consumer is set per worker)."""
    options: dict[str, Any] = {"consumer": "unused", "http_port": 0, "block_ms": 50}
    return Settings(redis_url=server.url, **(options | update))


async def test_group_destroyed_under_load_is_recreated(redis: Redis, settings: Settings) -> None:
    """XGROUP DESTROY mid-load: the group comes back from 0, every event once."""
    load = Load.build(steps=3000, copies=2, seed=21)
    data = load.shuffled()
    w1 = start_worker(settings, "w1")
    producer = asyncio.create_task(produce_paced(redis, settings.source_stream, data, 100))
    try:
        await wait_until(lambda: _derived_at_least(redis, settings, 500), 60, "load under way")
        assert await redis.xgroup_destroy(settings.source_stream, settings.group)
        await producer
        await wait_drained(redis, settings)
        result = await tally(redis, settings.derived_stream, load, len(data))
        assert_exact("consumer group destroyed under load", result)
        assert w1.poll() is None, "the worker exited"
    finally:
        producer.cancel()
        err = stop_worker(w1)
    assert w1.returncode == 0, err


async def test_source_stream_deleted_is_recreated(redis: Redis, settings: Settings) -> None:
    """DEL of the source stream (its group with it): what is produced afterwards is
    processed, and nothing processed before is published again."""
    load = Load.build(steps=2000, copies=2, seed=22)
    data = load.shuffled()
    half = len(data) // 2
    w1 = start_worker(settings, "w1")
    try:
        await produce(redis, settings.source_stream, data[:half])
        await wait_drained(redis, settings)
        assert await redis.delete(settings.source_stream) == 1
        await produce(redis, settings.source_stream, data[half:])
        await wait_drained(redis, settings)
        result = await tally(redis, settings.derived_stream, load, len(data))
        assert_exact("source stream deleted", result)
        assert w1.poll() is None, "the worker exited"
    finally:
        err = stop_worker(w1)
    assert w1.returncode == 0, err


@pytest.mark.parametrize("how", ["flushall", "restart without persistence"])
async def test_redis_emptied_worker_goes_on(server: LocalRedis, how: str) -> None:
    """Redis loses everything (FLUSHALL, or a restart with no persistence): the backlog
    produced afterwards is processed exactly once, by the same worker process."""
    s = private_settings(server)
    before, after = Load.build(800, seed=23, prefix="a"), Load.build(800, seed=24, prefix="b")
    redis = Redis.from_url(server.url)
    w1 = start_worker(s, "w1")
    try:
        await produce(redis, s.source_stream, before.shuffled())
        await wait_drained(redis, s)
        if how == "flushall":
            await redis.flushall()
        else:
            server.kill()
            server.start()
            await redis.connection_pool.disconnect()  # this client's connections died with it
        await produce(redis, s.source_stream, after.shuffled())
        await wait_drained(redis, s)
        result = await tally(redis, s.derived_stream, after, len(after.entries))
        assert_exact(f"redis emptied ({how})", result)
        assert w1.poll() is None, "the worker exited"
    finally:
        err = stop_worker(w1)
        await redis.aclose()
    assert w1.returncode == 0, err


async def test_start_up_at_maxmemory_waits_then_drains(server: LocalRedis, private: Redis) -> None:
    """Started while Redis is full (noeviction): XGROUP CREATE is refused even though the
    group exists; once memory is freed the worker starts and drains the backlog once."""
    s = private_settings(server)
    load = Load.build(steps=1000, copies=2, seed=25)
    data = load.shuffled()
    await private.xgroup_create(s.source_stream, s.group, id="0", mkstream=True)
    await produce(private, s.source_stream, data)  # the backlog a previous worker left
    used = int((await private.info("memory"))["used_memory"])
    await private.config_set("maxmemory-policy", "noeviction")
    await private.config_set("maxmemory", str(used + 8_000_000))  # room for the effects
    await private.setrange("filler", 16_000_000, "x")  # past maxmemory: no write succeeds
    w1 = start_worker(s, "w1")
    try:
        await wait_until(lambda: _refused_for_memory(private), 30, "a write refused (OOM)")
        assert await private.xlen(s.derived_stream) == 0
        assert w1.poll() is None, "the worker gave up"
        await private.delete("filler")
        await wait_drained(private, s)
        result = await tally(private, s.derived_stream, load, len(data))
        assert_exact("start-up at maxmemory, then memory freed", result)
    finally:
        err = stop_worker(w1)
    assert w1.returncode == 0, err


async def _own_pending_deltas(redis: Redis, s: Settings, consumer: str, n: int) -> None:
    """What a previous run of `consumer` left fetched and unacked: `n` message deltas, which
    its next start-up's pass over its own pending entries only acks (Redis allows that at
    maxmemory); a pass long enough for a test to act while it runs."""
    await redis.xgroup_create(s.source_stream, s.group, id="0", mkstream=True)
    await produce(redis, s.source_stream, [_message_delta(f"token {i}") for i in range(n)])
    await redis.xreadgroup(s.group, consumer, {s.source_stream: ">"}, count=n)


async def test_subscriber_refused_at_start_is_retried_until_it_consumes(
    server: LocalRedis, private: Redis
) -> None:
    """Memory fills after the worker's start-up wait passed, before its subscriber starts
    (XGROUP CREATE refused, OOM): the worker retries until it consumes, never a live process
    that reads nothing; once memory is freed the backlog drains once."""
    s = private_settings(server)
    load = Load.build(steps=1000, copies=2, seed=27)
    data = load.shuffled()
    await _own_pending_deltas(private, s, "w1", 30_000)
    await produce(private, s.source_stream, data)  # the backlog nobody has read yet
    used = int((await private.info("memory"))["used_memory"])
    await private.config_set("maxmemory-policy", "noeviction")
    await private.config_set("maxmemory", str(used + 8_000_000))
    w1 = start_worker(s, "w1")
    try:
        held = _consumer_holds_fewer(private, s, "w1", 30_000)
        await wait_until(held, 30, "w1's start-up to work through its own pending entries")
        await private.setrange("filler", 16_000_000, "x")  # past maxmemory from here on
        await wait_until(_group_create_refused(private), 30, "XGROUP CREATE refused (OOM)")
        assert w1.poll() is None, "the worker gave up"
        await private.delete("filler")
        await wait_drained(private, s, timeout_s=60)
        result = await tally(private, s.derived_stream, load, len(data))
        assert_exact("subscriber start refused (OOM), then memory freed", result)
    finally:
        err = stop_worker(w1)
    assert w1.returncode == 0, err


async def test_subscriber_start_failing_for_good_ends_the_process(
    server: LocalRedis, private: Redis
) -> None:
    """A subscriber start no retry can fix (XGROUP CREATE taken from the user's ACL after
    start-up checked it) ends the worker process with a non-zero exit, never a live one
    that consumes nothing."""
    s = private_settings(server)
    await _own_pending_deltas(private, s, "w1", 30_000)
    w1 = start_worker(s, "w1")
    try:
        held = _consumer_holds_fewer(private, s, "w1", 30_000)
        await wait_until(held, 30, "w1's start-up to work through its own pending entries")
        await private.acl_setuser("default", enabled=True, nopass=True, commands=["-xgroup|create"])

        async def exited() -> bool:
            return w1.poll() is not None

        await wait_until(exited, 30, "the worker to exit")
    finally:
        err = stop_worker(w1)
    assert w1.returncode not in (None, 0), err
    assert "NOPERM" in err or "permission" in err, err


async def test_draining_a_backlog_at_maxmemory_lets_producers_write_again(
    server: LocalRedis, private: Redis
) -> None:
    """A backlog filling Redis to near maxmemory (noeviction): the worker trims what every
    group acked regardless of the retention while memory is tight, so it drains the backlog
    and producers can write again; every event once, the early trimming counted."""
    port = free_port()
    s = private_settings(server, http_port=port, claim_idle_ms=2000)
    load = Load.build(steps=6000, copies=2, seed=28)
    data = load.shuffled()
    await private.xgroup_create(s.source_stream, s.group, id="0", mkstream=True)
    await produce(private, s.source_stream, data)
    used = int((await private.info("memory"))["used_memory"])
    await private.config_set("maxmemory-policy", "noeviction")
    # Room for the backlog, not for its effects beside it (derived events, states).
    await private.config_set("maxmemory", str(used + 4_000_000))
    w1 = start_worker(s, "w1")
    try:
        await wait_drained(private, s, timeout_s=90)
        later = Load.build(steps=300, seed=29, prefix="p")
        await produce(private, s.source_stream, later.shuffled())  # refused while memory is full
        await wait_drained(private, s)
        both = Load(seed=0, required=load.required | later.required)
        result = await tally(private, s.derived_stream, both, len(data) + len(later.entries))
        assert_exact("backlog drained at maxmemory, then producers write again", result)
        _, _, body = await request(f"http://127.0.0.1:{port}", "/metrics")
        early = re.search(rb"^runsteps_source_trimmed_early_total (\S+)$", body, re.MULTILINE)
        assert early is not None
        assert float(early.group(1)) > 0
    finally:
        err = stop_worker(w1)
    assert w1.returncode == 0, err
    assert "near maxmemory" in err


async def test_killed_worker_is_removed_from_the_group(redis: Redis, settings: Settings) -> None:
    """kill -9 of a worker holding a batch: the other takes its entries over, then removes
    it from the group (idle, nothing pending); every event once."""
    s = settings.model_copy(update={"claim_idle_ms": 300, "batch_size": 100})
    load = Load.build(steps=1500, copies=2, seed=26)
    data = load.shuffled()
    w1, w2 = start_worker(s, "w1"), start_worker(s, "w2")
    producer: asyncio.Task[None] | None = None
    try:
        # Both reading before the load comes: it takes well under a second to produce, and a
        # worker that joined first could drain it all before the other started.
        await wait_reading(redis, s, "w1", "w2")
        producer = asyncio.create_task(produce_paced(redis, s.source_stream, data, per_tick=50))
        await wait_until(lambda: _holds_batch(redis, s, "w1"), 60, "w1 to hold a batch")
        w1.send_signal(signal.SIGKILL)
        w1.wait()
        await producer
        await wait_drained(redis, s)
        await wait_until(lambda: _consumers_are(redis, s, {"w2"}), 60, "w1 removed")
        result = await tally(redis, s.derived_stream, load, len(data))
        assert_exact("kill -9 worker, then removed from the group", result)
    finally:
        if producer is not None:
            producer.cancel()
        stop_worker(w1)
        err = stop_worker(w2)
    assert w2.returncode == 0, err


async def test_liveness_fails_while_redis_does_not_answer(server: LocalRedis) -> None:
    """Redis unresponsive (SIGSTOP: a hung server or a partition) past
    RUNSTEPS_UNHEALTHY_AFTER_S: /healthz 503, so the pod is restarted; answering again: 200."""
    assert server.proc is not None
    port = free_port()
    s = private_settings(server, http_port=port, unhealthy_after_s=2.0)
    base = f"http://127.0.0.1:{port}"
    w1 = start_worker(s, "w1")
    try:
        await wait_until(_answering(base, "/healthz", 200), 30, "/healthz 200")
        server.proc.send_signal(signal.SIGSTOP)
        await wait_until(_answering(base, "/healthz", 503), 30, "/healthz 503")
        _, _, body = await request(base, "/healthz")
        assert json.loads(body) == {"status": "stuck", "unhealthy_after_s": 2.0}
        server.proc.send_signal(signal.SIGCONT)
        await wait_until(_answering(base, "/healthz", 200), 30, "/healthz 200 again")
        await wait_until(_answering(base, "/readyz", 200), 30, "/readyz 200 again")
    finally:
        server.proc.send_signal(signal.SIGCONT)
        err = stop_worker(w1)
    assert w1.returncode == 0, err


def _answering(base: str, path: str, status: int) -> Any:
    """`answers`, where a refused connection (not listening yet) means not yet."""
    check = answers(base, path, status)

    async def answered() -> bool:
        try:
            return await check()
        except OSError:
            return False

    return answered


async def _derived_at_least(redis: Redis, s: Settings, n: int) -> bool:
    return int(await redis.xlen(s.derived_stream)) >= n


async def _refused_for_memory(redis: Redis) -> bool:
    return "errorstat_OOM" in await redis.info("errorstats")


def _message_delta(text: str) -> bytes:
    """A message delta event: acked, with no lifecycle meaning."""
    delta = {"content": [{"index": 0, "type": "text", "text": {"value": text}}]}
    data = {"id": "msg_1", "object": "thread.message.delta", "delta": delta}
    return json.dumps({"event": "thread.message.delta", "data": data}).encode()


def _consumer_holds_fewer(redis: Redis, s: Settings, consumer: str, n: int) -> Any:
    async def fewer() -> bool:
        rows = await redis.xinfo_consumers(s.source_stream, s.group)
        held = {r["name"].decode(): int(r["pending"]) for r in rows}
        return held.get(consumer, 0) < n

    return fewer


def _group_create_refused(redis: Redis) -> Any:
    """Whether Redis has refused an XGROUP CREATE since this check was made."""
    before: list[int] = []

    async def refused() -> bool:
        stats = await redis.info("commandstats")
        rejected = int(stats.get("cmdstat_xgroup|create", {}).get("rejected_calls", 0))
        if not before:
            before.append(rejected)
        return rejected > before[0]

    return refused


async def _consumers_are(redis: Redis, s: Settings, names: set[str]) -> bool:
    try:
        rows = await redis.xinfo_consumers(s.source_stream, s.group)
    except (ResponseError, RedisConnectionError):
        return False
    return {r["name"].decode() for r in rows} == names
