"""The worker against a real Redis: raw XADDs in, derived events and DLQ entries out."""

from __future__ import annotations

import functools
import json
import logging
from collections import Counter
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from contracts.derived import DERIVED, RunUsage
from contracts.partitioning import partition_for
from service.dev.sample import SAMPLE_EXPECTED, T0, sample_entries, step
from service.settings import Settings
from service.storage.client import PartitionClient
from service.storage.keys import partitions
from service.storage.reads import run_state, step_state
from service.worker.app import Worker, build_worker
from service.worker.process import Processor
from tests.conftest import make_processor
from tests.helpers import (
    drained,
    entries,
    fetch,
    pending,
    produce,
    read_json,
    scrape,
    settle,
    wait_until,
)


async def test_sample_run_yields_exact_events(
    worker: Worker, redis: Redis, settings: Settings
) -> None:
    """The demo's sample run yields exactly the expected derived events and DLQ entries."""
    for _, data in sample_entries():
        await redis.xadd(settings.source_stream, {"data": data})
    await settle(redis, settings)
    derived = await read_json(redis, settings.derived_stream)
    counts = Counter(e["type"] for e in derived)
    counts["dlq"] = await redis.xlen(settings.dlq_stream)
    assert counts == Counter(SAMPLE_EXPECTED)
    for event in derived:
        DERIVED.validate_python(event)  # every derived event is a valid contract event
    assert len({e["event_id"] for e in derived}) == len(derived)
    usage = [e for e in derived if e["type"] == "run.usage"]
    assert usage[-1]["total_tokens"] == 120 + 40 + 300 + 25 + 200 + 60 + 80 + 400 + 90
    assert usage[-1]["steps_counted"] == 5
    # Keys in the contract's field order, every time (the totals are appended by Lua).
    assert [list(e) for e in usage] == [list(RunUsage.model_fields)] * len(usage)
    rejected = next(e for e in derived if e["type"] == "run_step.transition_rejected")
    assert (rejected["from_status"], rejected["to_status"]) == ("completed", "failed")


async def test_terminal_event_carries_duration_usage_and_error(
    worker: Worker, redis: Redis, settings: Settings
) -> None:
    """A failed step's event has duration_s, usage and last_error; run.usage follows it."""
    await produce(redis, settings, step("s1", "in_progress", run_id="r1"))
    await produce(
        redis,
        settings,
        step("s1", "failed", run_id="r1", ended_at=T0 + 7, usage=(5, 6), error="server_error"),
    )
    await settle(redis, settings)
    events = await read_json(redis, settings.derived_stream)
    assert [e["type"] for e in events] == ["run_step.started", "run_step.failed", "run.usage"]
    failed = events[1]
    assert failed["from_status"] == "in_progress"
    assert failed["duration_s"] == 7
    assert failed["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    assert failed["last_error"]["code"] == "server_error"
    assert events[2]["total_tokens"] == 11


async def test_step_first_seen_terminal_gets_its_start_first(
    worker: Worker, redis: Redis, settings: Settings
) -> None:
    """A step first seen terminal gets its start, then its end from in_progress; a
    duplicate terminal event and a late in_progress change nothing and emit nothing."""
    done = step("s2", "completed", ended_at=T0 + 1, usage=(1, 1))
    await produce(redis, settings, done, done, step("s2", "in_progress"), done)
    await settle(redis, settings)
    events = await read_json(redis, settings.derived_stream)
    assert [e["type"] for e in events] == ["run_step.started", "run_step.completed", "run.usage"]
    started, completed, _ = events
    assert (started["from_status"], started["to_status"]) == (None, "in_progress")
    assert (started["occurred_at"], started["step_type"]) == (T0, "message_creation")
    assert completed["from_status"] == "in_progress"
    assert worker.conns
    run = await run_state(worker.conns[0], "run_demo")
    assert run is not None
    assert run.usage.total_tokens == 2


async def test_observed_and_implied_starts_have_the_same_event_id(
    worker: Worker, redis: Redis, settings: Settings
) -> None:
    """A start is the same event whether in_progress was seen or implied by the end."""
    await produce(redis, settings, step("seen", "in_progress", run_id="r-a"))
    await produce(redis, settings, step("seen", "completed", run_id="r-b", ended_at=T0 + 1))
    await settle(redis, settings)
    observed, implied = (
        e
        for e in await read_json(redis, settings.derived_stream)
        if e["type"] == "run_step.started"
    )
    assert {k: v for k, v in observed.items() if k not in ("event_id", "run_id")} == {
        k: v for k, v in implied.items() if k not in ("event_id", "run_id")
    }
    # The same step id in two runs: two steps, two ids.
    assert observed["event_id"] != implied["event_id"]


@pytest.mark.parametrize(
    ("payload", "kind", "needle"),
    [
        (b"{nope", "invalid_json", "JSON"),
        (b"\xff\xfe\x00", "invalid_json", "JSON"),
        ({**step("b1", "in_progress"), "created_at": "yesterday"}, "invalid_payload", "created_at"),
        ({**step("b2", "in_progress"), "status": "paused"}, "invalid_payload", "status"),
        (
            {**step("b3", "in_progress"), "metadata": {f"k{i}": "v" for i in range(17)}},
            "invalid_payload",
            "metadata",
        ),
        ({**step("b4", "in_progress"), "metadata": {"k" * 65: "v"}}, "invalid_payload", "metadata"),
        (
            {**step("b5", "in_progress"), "metadata": {"k": "v" * 513}},
            "invalid_payload",
            "metadata",
        ),
        ({"hello": "world"}, "invalid_payload", ""),
    ],
)
async def test_bad_input_goes_to_dlq_with_reason(
    worker: Worker,
    redis: Redis,
    settings: Settings,
    payload: bytes | dict[str, Any],
    kind: str,
    needle: str,
) -> None:
    """Bad input lands on the DLQ untouched, with a reason; the good entry after it is done."""
    await produce(redis, settings, payload, step("good", "in_progress"))
    await settle(redis, settings)
    [(_, entry)] = await entries(redis, settings.dlq_stream)
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    assert entry[b"data"] == raw
    error = json.loads(entry[b"error"])
    assert error["kind"] == kind
    assert needle in json.dumps(error)
    assert entry[b"source_stream"] == settings.source_stream.encode()
    [(source_id, _), _] = await entries(redis, settings.source_stream)
    assert entry[b"source_id"] == source_id
    assert [e["step_id"] for e in await read_json(redis, settings.derived_stream)] == ["good"]


async def test_an_envelope_contradicting_its_step_is_tracked_by_the_step(
    worker: Worker, redis: Redis, settings: Settings
) -> None:
    """A step event whose name implies another status than its step has is tracked by the
    step's own status, not dead-lettered: `completed` naming an in-progress step starts it,
    `in_progress` naming a completed step ends it."""
    await produce(
        redis,
        settings,
        {"event": "thread.run.step.completed", "data": step("m1", "in_progress")},
        {"event": "thread.run.step.in_progress", "data": step("m2", "completed", ended_at=T0 + 4)},
    )
    await settle(redis, settings)
    assert await redis.xlen(settings.dlq_stream) == 0
    types = [(e["step_id"], e["type"]) for e in await read_json(redis, settings.derived_stream)]
    assert [t for t in types if t[0] == "m1"] == [("m1", "run_step.started")]
    assert [t for t in types if t[0] == "m2"] == [
        ("m2", "run_step.started"),
        ("m2", "run_step.completed"),
    ]
    assert await scrape(worker, "runsteps_status_mismatches_total") == {
        ("thread.run.step.completed", "in_progress"): 1,
        ("thread.run.step.in_progress", "completed"): 1,
    }


async def test_missing_data_field_and_oversized_payload(
    worker: Worker, redis: Redis, settings: Settings
) -> None:
    """An entry without `data` keeps its fields in the DLQ; an oversized one is refused."""
    await redis.xadd(settings.source_stream, {"payload": b"x"})
    big = json.dumps({**step("big", "in_progress"), "pad": "x" * settings.max_payload_bytes})
    await redis.xadd(settings.source_stream, {"data": big})
    await settle(redis, settings)
    dead = [f for _, f in await entries(redis, settings.dlq_stream)]
    kinds = [json.loads(f[b"error"])["kind"] for f in dead]
    assert kinds == ["missing_data", "oversized"]
    assert dead[0][b"field:payload"] == b"x"
    assert dead[1][b"data"] == big.encode()


async def test_delta_is_accepted_not_a_status_change(
    worker: Worker, redis: Redis, settings: Settings
) -> None:
    """Deltas (bare and enveloped) are acked and counted, never a derived event or DLQ entry."""
    delta = {"id": "d1", "object": "thread.run.step.delta", "delta": {"step_details": None}}
    await produce(redis, settings, delta, {"event": "thread.run.step.delta", "data": delta})
    await settle(redis, settings)
    assert await redis.xlen(settings.derived_stream) == 0
    assert await redis.xlen(settings.dlq_stream) == 0
    assert worker.telemetry.ignored["thread.run.step.delta"] == 2


async def test_redelivered_entry_is_only_acked(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """An entry processed twice (a claim after a stall) has its effects once."""
    await produce(redis, settings, step("r1", "completed", ended_at=T0 + 1, usage=(2, 3)))
    fetched = await fetch(redis, settings.source_stream, settings.group, "a")
    await make_processor(conn).process(fetched)
    await make_processor(conn).process(fetched)  # the same entry again, as after a claim
    events = await read_json(redis, settings.derived_stream)
    assert [e["type"] for e in events] == ["run_step.started", "run_step.completed", "run.usage"]
    run = await run_state(conn, "run_demo")
    assert run is not None
    assert run.usage.total_tokens == 5


async def test_same_step_many_times_in_one_batch(
    conn: PartitionClient, processor: Processor, redis: Redis, settings: Settings
) -> None:
    """Several events of one step in one batch chain correctly within the batch."""
    await produce(
        redis,
        settings,
        step("c1", "in_progress"),
        step("c1", "in_progress"),
        step("c1", "completed", ended_at=T0 + 2),
        step("c1", "completed", ended_at=T0 + 2),
        step("c1", "cancelled", ended_at=T0 + 3),
        step("c1", "cancelled", ended_at=T0 + 3),
        step("c1", "in_progress"),
    )
    fetched = await fetch(redis, settings.source_stream, settings.group, "a")
    await processor.process(fetched)
    types = [e["type"] for e in await read_json(redis, settings.derived_stream)]
    assert types == ["run_step.started", "run_step.completed", "run_step.transition_rejected"]
    assert await drained(redis, settings.source_stream, settings.group)
    state = await step_state(conn, "run_demo", "c1")
    assert state is not None
    assert (state.status, state.rejected, state.duration_s) == ("completed", ["cancelled"], 2)


async def test_a_pinned_replica_reads_only_its_partitions(
    redis: Redis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """RUNSTEPS_OWN_PARTITIONS=1 of 2: the worker reads, and runs the recovery loop of,
    partition 1 only; partition 0's entry waits, unread, for the replica pinned to it."""
    s = settings.model_copy(update={"partitions": 2, "own_partitions": "1"})
    parts = partitions(s)
    run_of = {partition_for(f"run{i}", 2): f"run{i}" for i in range(20)}
    w = build_worker(s)
    with caplog.at_level(logging.INFO, logger="runsteps.app"):
        await w.start()
    assert "pinned to partitions 1 of 2" in caplog.text
    try:
        for p in (0, 1):
            body = step(f"s{p}", "in_progress", run_id=run_of[p])
            await redis.xadd(parts[p].source_stream, {"data": json.dumps(body)})
        await wait_until(
            functools.partial(drained, redis, parts[1].source_stream, s.group), what="drained"
        )
        assert [e["step_id"] for e in await read_json(redis, parts[1].derived_stream)] == ["s1"]
        assert [r.store.conn.part.index for r in w.recoveries] == [1]
        assert await redis.xlen(parts[0].derived_stream) == 0
        (group,) = await redis.xinfo_groups(parts[0].source_stream)
        assert (group["pending"], group["lag"]) == (0, 1)  # the group exists; none read
    finally:
        await w.stop()


@pytest.mark.parametrize("together", [True, False], ids=["one-batch", "two-batches"])
async def test_a_step_naming_another_thread_is_dead_lettered(
    conn: PartitionClient, redis: Redis, settings: Settings, together: bool
) -> None:
    """A step whose thread or assistant contradicts its run's is not applied and lands in
    the DLQ as identity_mismatch; the run keeps its identity, other steps and runs go on."""
    first = step("s1", "in_progress")
    other_thread = {**step("s2", "in_progress"), "thread_id": "thread_other"}
    other_assistant = {**step("s3", "completed", ended_at=T0 + 1), "assistant_id": "asst_other"}
    fine = [step("s4", "in_progress"), step("x1", "in_progress", run_id="run_other")]
    if together:
        await produce(redis, settings, first, other_thread, other_assistant, *fine)
        await make_processor(conn).process(await fetch(redis, settings.source_stream,
                                                       settings.group, "a"))  # fmt: skip
    else:
        for payload in (first, other_thread, other_assistant, *fine):
            await produce(redis, settings, payload)
            await make_processor(conn).process(await fetch(redis, settings.source_stream,
                                                           settings.group, "a"))  # fmt: skip
    dead = [f for _, f in await entries(redis, settings.dlq_stream)]
    assert [json.loads(f[b"data"])["id"] for f in dead] == ["s2", "s3"]
    assert {json.loads(f[b"error"])["kind"] for f in dead} == {"identity_mismatch"}
    assert "thread_other" in json.loads(dead[0][b"error"])["message"]
    assert await drained(redis, settings.source_stream, settings.group)
    started = [e["step_id"] for e in await read_json(redis, settings.derived_stream)]
    assert started == ["s1", "s4", "x1"]
    assert await step_state(conn, "run_demo", "s2") is None
    run = await run_state(conn, "run_demo")
    assert run is not None
    assert (run.thread_id, run.assistant_id) == ("thread_demo", "asst_demo")


async def test_a_batch_decoded_while_the_last_commits_lands_after_it(
    redis: Redis, settings: Settings
) -> None:
    """The worker decodes a batch while the previous batch's commit runs; commits still go
    one at a time, in order, and the last one is finished before shutdown hands back."""
    w = build_worker(settings)
    await w.on_startup()
    try:
        for status in ("in_progress", "completed", "failed"):
            await produce(redis, settings, step("o1", status, ended_at=T0 + 1))
            await w.handle(0, await fetch(redis, settings.source_stream, settings.group, "c"))
    finally:
        await w.after_shutdown()
    types = [e["type"] for e in await read_json(redis, settings.derived_stream)]
    assert types == ["run_step.started", "run_step.completed", "run_step.transition_rejected"]
    assert await drained(redis, settings.source_stream, settings.group)


def _response_event(status: str, conversation: str, items: int = 0) -> dict[str, Any]:
    output = [{"id": f"msg_{i}", "type": "message", "status": "completed"} for i in range(items)]
    body = {"id": "resp_idm", "object": "response", "created_at": T0, "status": status,
            "conversation": {"id": conversation}, "output": output}  # fmt: skip
    if status == "completed":
        body["completed_at"] = T0 + 3
    return {"type": f"response.{status.replace('in_progress', 'created')}", "response": body}


async def test_a_response_naming_another_conversation_is_held_whole(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """An entry that carries items and their response, naming another conversation than the
    run's, is dead-lettered whole: none of its items is applied either."""
    await produce(
        redis,
        settings,
        _response_event("in_progress", "conv_1"),
        _response_event("completed", "conv_2", items=2),
    )
    await make_processor(conn).process(
        await fetch(redis, settings.source_stream, settings.group, "a")
    )
    types = [e["type"] for e in await read_json(redis, settings.derived_stream)]
    assert types == ["run.started"]
    [(_, dead)] = await entries(redis, settings.dlq_stream)
    assert json.loads(dead[b"error"])["kind"] == "identity_mismatch"
    assert await drained(redis, settings.source_stream, settings.group)


async def test_a_response_with_thousands_of_items_is_applied_once(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """A response closing 4,100 items in one entry (well under the payload limit) is one
    commit that succeeds: each event once, and once again delivered, nothing more."""
    await produce(redis, settings, _response_event("completed", "conv_1", items=4100))
    fetched = await fetch(redis, settings.source_stream, settings.group, "a")
    assert await make_processor(conn).process(fetched) == {}
    assert await make_processor(conn).process(fetched) == {}  # as after a claim
    events = await read_json(redis, settings.derived_stream)
    assert len(events) == 2 * 4100 + 2  # each item's start and end; the run's start and end
    assert max(Counter(e["event_id"] for e in events).values()) == 1
    assert await drained(redis, settings.source_stream, settings.group)


async def test_a_failed_commit_does_not_hold_back_the_next_batch(
    redis: Redis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis failing one batch's commit leaves that batch pending (said in the log) and the
    next batch is committed all the same."""
    w = build_worker(settings)
    await w.on_startup()
    store = w.processors[0].store
    real_apply = store.apply
    calls = 0

    async def flaky(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RedisConnectionError("connection reset")
        return await real_apply(*args)

    store.apply = flaky  # type: ignore[method-assign,assignment]
    try:
        for step_id in ("f1", "f2"):
            await produce(redis, settings, step(step_id, "in_progress"))
            await w.handle(0, await fetch(redis, settings.source_stream, settings.group, "c"))
    finally:
        await w.after_shutdown()
    assert [e["step_id"] for e in await read_json(redis, settings.derived_stream)] == ["f2"]
    assert await pending(redis, settings.source_stream, settings.group) == 1
    assert "stay pending" in caplog.text
