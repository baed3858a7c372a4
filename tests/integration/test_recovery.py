"""Recovery against a real Redis: claims, delivery cap, hand-back, stalls, TTL, replay."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError

from contracts.derived import Source
from service.core.batch import DeadLetter
from service.core.layout import stall_member
from service.core.ops import Op, step_op
from service.dev.redis_server import LocalRedis
from service.dev.sample import T0, step
from service.settings import Settings
from service.storage.client import PartitionClient
from service.storage.deadletters import replay_dlq
from service.storage.pending import Pending
from service.storage.protocol import Committed
from service.storage.reads import run_state, step_state
from service.storage.replies import keep_duplicate_fields
from service.storage.store import Store
from service.worker.app import build_worker
from service.worker.process import Processor
from service.worker.recovery import Recovery
from service.worker.telemetry import Telemetry
from tests.conftest import make_processor
from tests.helpers import drained, entries, fetch, produce, read_json, wait_until, xadd_raw


class FailingStore(Store):
    """A store whose commit fails for steps named boom*: a bug, not bad input."""

    async def apply(
        self, runs: dict[str, list[Op]], acks: list[bytes], dead: list[DeadLetter]
    ) -> Committed:
        if any(op.field.startswith("@boom") for ops in runs.values() for op in ops):
            raise RuntimeError("injected script failure")
        return await super().apply(runs, acks, dead)


def failing(conn: PartitionClient, s: Settings) -> Processor:
    """A processor whose commits of boom* steps fail."""
    conn = PartitionClient(conn.redis, s)
    return Processor(FailingStore(conn), Pending(conn), s, Telemetry())


async def test_entry_failing_every_delivery_is_dead_lettered(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """An entry whose processing keeps failing goes to the DLQ after the cap, others pass."""
    s = settings.model_copy(update={"claim_idle_ms": 1, "max_deliveries": 3})
    await produce(redis, s, step("boom1", "in_progress"), step("fine1", "in_progress"))
    processor = failing(conn, s)
    failures = await processor.process(await fetch(redis, s.source_stream, s.group, s.consumer))
    assert len(failures) == 1
    recovery = Recovery(processor)

    async def dead_lettered() -> bool:
        await recovery.claim_once()
        return int(await redis.xlen(s.dlq_stream)) == 1

    await wait_until(dead_lettered, 10, "the failing entry to reach the DLQ")
    [(_, dead)] = await entries(redis, s.dlq_stream)
    error = json.loads(dead[b"error"])
    assert error["kind"] == "processing_failed"
    assert error["errors"][0]["attempts"] == 3
    assert "injected script failure" in error["message"]
    assert json.loads(dead[b"data"])["id"] == "boom1"
    assert [e["step_id"] for e in await read_json(redis, s.derived_stream)] == ["fine1"]
    assert await drained(redis, s.source_stream, s.group)
    assert await processor.pending.last_failures([dead[b"source_id"]]) == {}


async def test_restarted_consumer_finishes_its_own_pending(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """Entries a consumer fetched before it died are finished when it starts again."""
    await produce(redis, settings, step("own1", "in_progress"), step("own2", "in_progress"))
    assert len(await fetch(redis, settings.source_stream, settings.group, settings.consumer)) == 2
    worker = build_worker(settings)
    await worker.start()  # same consumer name: a restart
    try:
        assert await drained(redis, settings.source_stream, settings.group)
        assert len(await read_json(redis, settings.derived_stream)) == 2
    finally:
        await worker.stop()


async def test_dead_consumers_entries_are_claimed(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """A live worker claims and finishes the entries a dead consumer held."""
    s = settings.model_copy(update={"claim_idle_ms": 1})
    await produce(redis, s, *[step(f"d{i}", "in_progress") for i in range(1200)])
    assert len(await fetch(redis, s.source_stream, s.group, "dead")) == 1000
    processor = make_processor(conn, s)
    recovery = Recovery(processor)
    await wait_until(lambda: _claimed(recovery), 10, "claims")
    await processor.process(await fetch(redis, s.source_stream, s.group, s.consumer))
    assert await drained(redis, s.source_stream, s.group)
    assert await redis.xlen(s.derived_stream) == 1200


async def _claimed(recovery: Recovery) -> bool:
    return await recovery.claim_once() > 0


async def test_hand_back_makes_entries_claimable_at_once(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """After a graceful hand-back, another consumer claims without waiting the idle time."""
    s = settings.model_copy(update={"claim_idle_ms": 60_000})
    await produce(redis, s, step("h1", "in_progress"), step("h2", "in_progress"))
    await fetch(redis, s.source_stream, s.group, "leaving")
    other = s.model_copy(update={"consumer": "staying"})
    recovery = Recovery(make_processor(PartitionClient(redis, other)))
    assert await recovery.claim_once() == 0  # not idle for 60 s yet
    assert await Pending(conn).hand_back("leaving") == 2
    assert await recovery.claim_once() == 2
    assert await drained(redis, s.source_stream, s.group)


async def test_stalled_step_published_once_across_workers(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """A step in progress past the stall time yields one run_step.stalled, however many scan."""
    s = settings.model_copy(update={"stall_after_s": 1})
    await produce(
        redis,
        s,
        step("slow", "in_progress"),
        step("quick", "in_progress"),
        step("quick", "completed", ended_at=T0 + 1),
    )
    processor = make_processor(conn, s)
    await processor.process(await fetch(redis, s.source_stream, s.group, s.consumer))
    # One commit call started and ended `quick`: it leaves no stall index member.
    assert await redis.zcard(conn.keys.stalls) == 1
    assert await redis.zscore(conn.keys.stalls, stall_member("run_demo", "slow")) is not None
    scanners = [Recovery(make_processor(PartitionClient(redis, s))) for _ in range(4)]
    later = int(time.time()) + 5
    published = await asyncio.gather(*(r.scan_stalls(now=later) for r in scanners))
    assert sum(published) == 1
    stalled = [
        e for e in await read_json(redis, s.derived_stream) if e["type"] == "run_step.stalled"
    ]
    assert [e["step_id"] for e in stalled] == ["slow"]
    assert stalled[0]["stall_after_s"] == 1
    assert await scanners[0].scan_stalls(now=later + 100) == 0


@pytest.mark.parametrize("source", [Source.ASSISTANTS, Source.RESPONSES])
async def test_a_stalled_step_names_its_own_dialect(
    conn: PartitionClient, redis: Redis, settings: Settings, source: Source
) -> None:
    """run_step.stalled carries the source the step came from, from its stored state, even
    for a Responses item whose type is also an Assistants step type."""
    s = settings.model_copy(update={"stall_after_s": 1})
    item = SimpleNamespace(
        id="fc_1", run_id="resp_1", thread_id=None, assistant_id=None, status="in_progress",
        type="tool_calls", created_at=T0, terminal_at=None, usage=None, last_error=None, tools=(),
    )  # fmt: skip
    op = step_op(b"1-1", item, source, int(time.time()) + 1)
    await Store(conn).commit({"resp_1": [op]}, [], [])
    assert (await step_state(conn, "resp_1", "fc_1")).source == source  # type: ignore[union-attr]
    assert await Recovery(make_processor(conn, s)).scan_stalls(now=int(time.time()) + 5) == 1
    events = await read_json(redis, s.derived_stream)
    (stalled,) = [e for e in events if e["type"] == "run_step.stalled"]
    assert stalled["source"] == source


async def test_unreadable_stall_member_is_dropped_not_fatal(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """A stall index member that names no run (an earlier build's format) never stops a scan."""
    s = settings.model_copy(update={"stall_after_s": 1})
    await redis.zadd(conn.keys.stalls, {"step_old": 1, "99:x": 1})
    await produce(redis, s, step("slow", "in_progress"))
    processor = make_processor(conn, s)
    await processor.process(await fetch(redis, s.source_stream, s.group, s.consumer))
    assert await Recovery(processor).scan_stalls(now=int(time.time()) + 5) == 1
    assert await redis.zcard(conn.keys.stalls) == 0


async def test_stale_stall_members_are_pruned_and_never_hide_a_stall(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """600 index members whose step state is gone or ended, all due before a real stalled
    step, are removed by the scan, and the real stall is still published in that scan."""
    s = settings.model_copy(update={"stall_after_s": 1})
    await produce(redis, s, step("slow", "in_progress"), step("ended", "completed", ended_at=T0))
    processor = make_processor(conn, s)
    await processor.process(await fetch(redis, s.source_stream, s.group, s.consumer))
    orphans = {stall_member(f"run_gone{i}", f"step{i}"): 1 for i in range(599)}
    orphans[stall_member("run_demo", "ended")] = 1  # ended, yet left in the index
    await redis.zadd(conn.keys.stalls, orphans)
    assert await Recovery(processor).scan_stalls(now=int(time.time()) + 5) == 1
    stalled = [e["step_id"] for e in await read_json(redis, s.derived_stream)]
    assert stalled[-1] == "slow"
    assert await redis.zcard(conn.keys.stalls) == 0


async def test_terminal_state_expires_and_live_state_does_not(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """A run's state expires RUNSTEPS_STATE_TTL_S after its last step ended; while a step is
    in progress it does not expire, and a run that starts a step again stops expiring."""
    s = settings.model_copy(update={"state_ttl_s": 3600})
    processor = make_processor(conn, s)
    run = conn.keys.run("run_demo")

    async def after(*bodies: dict[str, Any]) -> int:
        await produce(redis, s, *bodies)
        await processor.process(await fetch(redis, s.source_stream, s.group, s.consumer))
        return int(await redis.ttl(run))

    def done(step_id: str) -> dict[str, Any]:
        return step(step_id, "completed", ended_at=T0, usage=(1, 1))

    assert await after(step("t1", "in_progress"), done("t2")) == -1
    assert 3500 < await after(done("t1")) <= 3600
    assert await after(step("t3", "in_progress")) == -1
    assert 3500 < await after(step("t3", "failed", ended_at=T0, error="server_error")) <= 3600
    assert 3500 < await after(step("t3", "cancelled", ended_at=T0)) <= 3600  # rejected
    state = await run_state(conn, "run_demo")
    assert state is not None
    assert state.steps_in_progress == 0


async def test_replay_dlq_resubmits_then_removes(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """replay-dlq puts dead-lettered entries back on the source; fixed, they are processed.
    A DLQ entry whose error field is unreadable is skipped and left in place."""
    s = settings.model_copy(update={"claim_idle_ms": 1, "max_deliveries": 1})
    await produce(redis, s, step("boom2", "in_progress"))
    processor = failing(conn, s)
    await processor.process(await fetch(redis, s.source_stream, s.group, s.consumer))
    recovery = Recovery(processor)

    async def dead_lettered() -> bool:
        await recovery.claim_once()
        return int(await redis.xlen(s.dlq_stream)) == 1

    await wait_until(dead_lettered, 10, "the DLQ entry")
    await redis.xadd(s.dlq_stream, {"data": b"{", "error": json.dumps({"kind": "invalid_json"})})
    await redis.xadd(s.dlq_stream, {"data": b"{", "error": b"not json"})
    await redis.xadd(s.dlq_stream, {"data": b"{", "error": b"[1, 2]"})
    done = await replay_dlq(conn, kind="processing_failed")
    assert (done.replayed, done.unreadable, done.refused) == (1, 2, {})
    assert await redis.xlen(s.dlq_stream) == 3  # the other kind and the unreadable ones stay
    fixed = make_processor(conn, s)  # the bug is fixed
    await fixed.process(await fetch(redis, s.source_stream, s.group, s.consumer))
    assert [e["step_id"] for e in await read_json(redis, s.derived_stream)] == ["boom2"]
    [_, (_, replayed)] = await entries(redis, s.source_stream)
    assert b"replayed_from" in replayed


async def raw_entries(redis_url: str, stream: str) -> list[list[bytes]]:
    """Every entry's field list as Redis answers XRANGE, repeated names included."""
    client = Redis.from_url(redis_url)
    client.set_response_callback("XRANGE", lambda response, **_: response)
    try:
        reply = cast("list[tuple[bytes, list[bytes]]]", await client.xrange(stream))
        return [list(fields) for _, fields in reply]
    finally:
        await client.aclose()


async def test_replay_resubmits_exactly_the_source_fields(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """Replayed, a dead letter becomes its source entry again, field for field: no `data`
    for one that had none, both `data` fields for one that had two; plus `replayed_from`."""
    keep_duplicate_fields(redis)  # as the worker's own reads
    await xadd_raw(redis, settings.source_stream, "payload", "x", "trace", "t1")
    await xadd_raw(redis, settings.source_stream, "data", "{}", "data", "[]", "trace", "t2")
    await make_processor(conn).process(
        await fetch(redis, settings.source_stream, settings.group, "c")
    )
    dead = await entries(redis, settings.dlq_stream)
    kinds = [json.loads(fields[b"error"])["kind"] for _, fields in dead]
    assert kinds == ["missing_data", "invalid_payload"]
    done = await replay_dlq(conn)
    assert (done.replayed, done.unreadable, done.refused) == (2, 0, {})
    assert await redis.xlen(settings.dlq_stream) == 0
    replayed = (await raw_entries(settings.redis_url, settings.source_stream))[2:]
    assert replayed == [
        [b"payload", b"x", b"trace", b"t1", b"replayed_from", dead[0][0]],
        [b"data", b"{}", b"data", b"[]", b"trace", b"t2", b"replayed_from", dead[1][0]],
    ]


@pytest.mark.parametrize(
    ("kind", "fields", "reason"),
    [
        ("missing_data", {"field:data": "{}", "field:x": "1"}, "field:data"),
        ("invalid_json", {"data": "{", "field:data": "{}"}, "field:data"),
        ("missing_data", {"data": "{}", "field:x": "1"}, "missing_data entry with data"),
        ("missing_data", {"data": ""}, "nothing to replay"),
        ("missing_data", {"data": "", "field:replayed_from": "1-0"}, "nothing to replay"),
        ("processing_failed", {"field:x": "1"}, "no data field"),
    ],
)
async def test_replay_refuses_what_no_source_had(
    conn: PartitionClient,
    redis: Redis,
    settings: Settings,
    kind: str,
    fields: dict[str, str],
    reason: str,
) -> None:
    """A DLQ entry saying more than its source can have had (a `field:data`: a source's
    `data` is kept in `data`), or with nothing to re-submit, is refused with the reason and
    left in place; nothing reaches the source stream."""
    error = json.dumps({"kind": kind, "message": "m", "errors": []})
    dlq_entry: dict[Any, Any] = {**fields, "error": error}
    dlq_id = await redis.xadd(settings.dlq_stream, dlq_entry)
    done = await replay_dlq(conn)
    assert done.replayed == 0
    [(why, n)] = done.refused.items()
    assert (why.startswith(reason), n) == (True, 1)
    assert [i for i, _ in await entries(redis, settings.dlq_stream)] == [dlq_id]
    assert await redis.xlen(settings.source_stream) == 0


async def test_worker_survives_redis_restart_and_reports_unready(
    settings: Settings, tmp_path: Path
) -> None:
    """Redis going away flips readiness off; the worker resumes by itself when it returns."""
    durable = ("--appendonly", "yes", "--appendfsync", "always")
    server = LocalRedis(args=durable, data_dir=tmp_path).start()
    s = settings.model_copy(update={"redis_url": server.url, "claim_idle_ms": 200})
    worker = build_worker(s)
    redis = Redis.from_url(server.url)
    try:
        await worker.start()
        assert all((await worker.readiness()).values())
        server.kill()
        assert (await worker.readiness())["redis"] is False
        server = LocalRedis(port=server.port, args=durable, data_dir=tmp_path).start()
        await wait_until(lambda: _ready(worker), 20, "readiness after Redis returned")
        await produce(redis, s, step("after", "in_progress"))
        await wait_until(lambda: _has_derived(redis, s), 20, "processing after Redis came back")
    finally:
        await worker.stop()
        await redis.aclose()
        server.stop()


async def _ready(worker: Any) -> bool:
    return all((await worker.readiness()).values())


async def _has_derived(redis: Redis, s: Settings) -> bool:
    return int(await redis.xlen(s.derived_stream)) > 0


async def _consumers(redis: Redis, s: Settings) -> dict[str, int]:
    """The group's consumers and what each holds pending."""
    rows = await redis.xinfo_consumers(s.source_stream, s.group)
    return {r["name"].decode(): int(r["pending"]) for r in rows}


async def test_dead_consumers_are_removed_only_with_nothing_pending(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """Idle consumers with nothing pending leave the group; one holding entries and the
    caller itself stay."""
    s = settings.model_copy(update={"claim_idle_ms": 1})  # dead after 10 ms idle
    await produce(redis, s, step("s1", "in_progress"))
    assert await fetch(redis, s.source_stream, s.group, "holder")  # fetched, never acked
    for name in ("empty", s.consumer):  # joined, nothing pending
        await redis.xgroup_createconsumer(s.source_stream, s.group, name)
    recovery = Recovery(make_processor(conn, s))

    async def removed() -> bool:
        await recovery.remove_dead_consumers()
        return "empty" not in await _consumers(redis, s)

    await wait_until(removed, what="the empty idle consumer removed")
    assert await _consumers(redis, s) == {"holder": 1, s.consumer: 0}
    assert await recovery.claim_once() == 1  # the holder's entry taken over: it goes too

    async def holder_removed() -> bool:
        await recovery.remove_dead_consumers()
        return "holder" not in await _consumers(redis, s)

    await wait_until(holder_removed, what="the emptied holder removed")
    assert await _consumers(redis, s) == {s.consumer: 0}


async def test_deliveries_refused_by_a_full_redis_do_not_count(settings: Settings) -> None:
    """At maxmemory (noeviction) Redis refuses the commit; claims that fail so do not bring
    entries to the delivery cap: once memory is freed they are processed, not dead-lettered."""
    server = LocalRedis().start()
    redis = Redis.from_url(server.url)
    s = settings.model_copy(
        update={"redis_url": server.url, "claim_idle_ms": 1, "max_deliveries": 2}
    )
    try:
        conn = PartitionClient(redis, s)
        await conn.ensure_group()
        await conn.load_scripts()
        await produce(redis, s, step("m1", "in_progress"), step("m1", "completed", ended_at=T0 + 1))
        await fetch(redis, s.source_stream, s.group, "gone")  # delivered to a consumer that died
        used = int((await redis.info("memory"))["used_memory"])
        await redis.config_set("maxmemory-policy", "noeviction")
        await redis.config_set("maxmemory", str(used // 2))
        recovery = Recovery(make_processor(conn, s))
        refused = 0

        async def refused_again() -> bool:
            nonlocal refused
            try:
                await recovery.claim_once()
            except OutOfMemoryError:
                refused += 1
            return refused >= 2 * s.max_deliveries

        await wait_until(refused_again, 20, "claims refused by a full Redis")
        rows = await redis.xpending_range(s.source_stream, s.group, "-", "+", 10)
        assert [r["times_delivered"] for r in rows] == [1, 1]
        await redis.config_set("maxmemory", "0")

        async def claimed_and_done() -> bool:
            await recovery.claim_once()
            return await drained(redis, s.source_stream, s.group)

        await wait_until(claimed_and_done, 20, "the entries claimed and processed")
        types = [e["type"] for e in await read_json(redis, s.derived_stream)]
        assert types == ["run_step.started", "run_step.completed"]
        assert await redis.xlen(s.dlq_stream) == 0
    finally:
        await redis.aclose()
        server.stop()


async def test_a_step_dated_in_the_future_still_stalls(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """A step whose created_at is ten days ahead (a skewed clock) is reported stalled once
    it has been in progress RUNSTEPS_STALL_AFTER_S since runsteps first saw it."""
    s = settings.model_copy(update={"stall_after_s": 5})
    future = int(time.time()) + 864_000
    await produce(redis, s, step("ahead", "in_progress", run_id="run_ahead", created_at=future))
    processor = make_processor(conn, s)
    await processor.process(await fetch(redis, s.source_stream, s.group, s.consumer))
    recovery = Recovery(processor)
    assert await recovery.scan_stalls(now=int(time.time()) + 1) == 0
    assert await recovery.scan_stalls(now=int(time.time()) + 10) == 1
    [stalled] = [e for e in await read_json(redis, s.derived_stream)
                 if e["type"] == "run_step.stalled"]  # fmt: skip
    assert stalled["step_id"] == "ahead"
    assert stalled["stalled_for_s"] >= 5
