"""No step outlives its run: a step still in progress when its run ends takes the run's end,
atomically with it, whatever the order, the duplicates or the number of replicas."""

from __future__ import annotations

import random
import re
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from contracts.derived import DERIVED, Source
from service.core.ops import Op, run_op, step_op
from service.core.reported import ReportedRun
from service.dev.sample import T0, run, step
from service.settings import Settings
from service.storage.client import PartitionClient
from service.storage.reads import run_state, step_state
from service.storage.store import Store
from service.worker.app import Worker
from tests.conftest import make_processor
from tests.helpers import StepDouble, fetch, produce, read_json, settle

END = T0 + 30


def _run_end(status: str) -> dict[str, Any]:
    event = run("run_demo", status, ended_at=END)
    event["data"][
        {"cancelled": "cancelled_at", "expired": "expires_at"}.get(status, "failed_at")
    ] = END
    return event


def _by_step(events: list[dict[str, Any]]) -> dict[str | None, list[str]]:
    out: dict[str | None, list[str]] = {}
    for event in events:
        DERIVED.validate_python(event)
        if event["type"] != "run.usage":
            out.setdefault(event.get("step_id"), []).append(event["type"])
    return out


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled", "expired", "incomplete"])
async def test_an_open_step_takes_its_runs_end(
    worker: Worker, redis: Redis, settings: Settings, status: str
) -> None:
    """The open step ends with the run's status, before the run's end, marked ended_by_run;
    the run's step counts include it; the step's own end arriving later is stale."""
    await produce(
        redis, settings,
        run("run_demo", "in_progress"),
        step("open", "in_progress"),
        step("done", "completed", ended_at=T0 + 2),
        _run_end(status),
    )  # fmt: skip
    await settle(redis, settings)
    events = await read_json(redis, settings.derived_stream)
    types = [e["type"] for e in events]
    assert types[-2:] == [f"run_step.{status}", f"run.{status}"]
    closed, ended = events[-2], events[-1]
    assert (closed["step_id"], closed["ended_by_run"]) == ("open", True)
    assert (closed["occurred_at"], closed["duration_s"]) == (END, END - T0)
    assert (closed["thread_id"], closed["assistant_id"]) == ("thread_demo", "asst_demo")
    counts = {"completed": 1, "failed": 0, "cancelled": 0, "expired": 0, "incomplete": 0}
    counts[status] += 1
    assert ended["steps"] == counts
    await produce(redis, settings, step("open", "completed", ended_at=END + 5), _run_end(status))
    await settle(redis, settings)
    assert [e["type"] for e in await read_json(redis, settings.derived_stream)] == types
    state = await step_state(worker.conns[0], "run_demo", "open")
    assert state is not None
    assert (state.status, state.rejected) == (status, [])
    tracked = await run_state(worker.conns[0], "run_demo")
    assert tracked is not None
    assert tracked.steps_in_progress == 0


async def test_a_closed_step_counts_in_the_domain_metrics(
    worker: Worker, redis: Redis, settings: Settings
) -> None:
    """A tool step its run's cancellation closed is counted like a step that ended by
    itself: its duration by step and tool type, its tool call by name and status, and its
    end event among the derived events published."""
    await produce(
        redis, settings,
        run("run_demo", "in_progress"),
        step("call", "in_progress", kind="function"),
        _run_end("cancelled"),
    )  # fmt: skip
    await settle(redis, settings)
    [closed] = [e for e in await read_json(redis, settings.derived_stream) if e.get("step_id")
                and e["type"] == "run_step.cancelled"]  # fmt: skip
    assert closed["ended_by_run"] is True
    t = worker.telemetry
    assert t.tool_calls[("function", "get_weather", "cancelled")] == 1
    labels = ("assistants", "tool_calls", "function")
    assert sum(t.step_seconds.series[labels].counts) == 1
    assert t.step_seconds.series[labels].sum == END - T0
    assert t.derived["run_step.cancelled"] == 1


async def test_a_step_first_seen_after_its_run_ended_ends_with_it(
    worker: Worker, redis: Redis, settings: Settings
) -> None:
    """Out of order: the step's start arrives after its run's end; it starts and takes the
    run's end at once, and never stalls."""
    await produce(redis, settings, run("run_demo", "in_progress"), _run_end("failed"))
    await produce(redis, settings, step("late", "in_progress"))
    await settle(redis, settings)
    events = await read_json(redis, settings.derived_stream)
    assert _by_step(events)["late"] == ["run_step.started", "run_step.failed"]
    assert events[-1]["ended_by_run"] is True
    assert await redis.zcard(worker.conns[0].keys.stalls) == 0


async def test_a_response_ends_items_it_does_not_list(
    worker: Worker, redis: Redis, settings: Settings
) -> None:
    """An item added before a response.failed whose output is empty ends incomplete."""
    response = {"id": "resp_1", "object": "response", "created_at": T0, "status": "in_progress",
                "model": "gpt-4o", "output": []}  # fmt: skip
    item = {"id": "fc_1", "type": "function_call", "status": "in_progress", "call_id": "call_1",
            "name": "lookup", "arguments": ""}  # fmt: skip
    failed = response | {"status": "failed", "error": {"code": "server_error", "message": "x"}}
    await produce(
        redis, settings,
        {"type": "response.created", "response": response},
        {"type": "response.output_item.added", "output_index": 0, "item": item,
         "response_id": "resp_1"},
        {"type": "response.failed", "response": failed},
    )  # fmt: skip
    await settle(redis, settings)
    events = await read_json(redis, settings.derived_stream)
    closed = [e for e in events if e.get("step_id") == "fc_1"][-1]
    assert (closed["type"], closed["ended_by_run"]) == ("run_step.incomplete", True)
    assert closed["tools"] == [{"id": "call_1", "type": "function", "name": "lookup"}]
    assert events[-1]["type"] == "run.failed"
    assert events[-1]["steps"]["incomplete"] == 1


async def test_a_run_ending_with_no_open_step_reads_nothing_more(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """The rule costs nothing for runs whose steps all ended: no HGETALL."""
    await produce(
        redis, settings,
        run("run_demo", "in_progress"),
        step("done", "completed", ended_at=T0 + 2),
        _run_end("completed"),
    )  # fmt: skip
    await redis.config_resetstat()
    await make_processor(conn).process(await fetch(redis, settings.source_stream,
                                                   settings.group, "c"))  # fmt: skip
    stats = await redis.info("commandstats")
    assert "cmdstat_hgetall" not in stats
    assert (await read_json(redis, settings.derived_stream))[-1]["type"] == "run.completed"


async def test_every_order_and_two_replicas_give_one_end_per_step(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """Shuffled, duplicated and applied by two processors in turns: each step ends once,
    the run once, and every step is ended (by itself or by its run)."""
    entries = [run("run_demo", "in_progress"), _run_end("cancelled")]
    for i in range(12):
        entries.append(step(f"s{i}", "in_progress"))
        if i % 3:
            entries.append(step(f"s{i}", "completed", ended_at=T0 + 5))
    entries *= 2
    random.Random(7).shuffle(entries)
    replicas = [make_processor(conn), make_processor(conn)]
    for at in range(0, len(entries), 5):
        await produce(redis, settings, *entries[at : at + 5])
        batch = await fetch(redis, settings.source_stream, settings.group, f"c{at % 2}")
        await replicas[at // 5 % 2].process(batch)
    by_step = _by_step(await read_json(redis, settings.derived_stream))
    for i in range(12):
        types = by_step[f"s{i}"]
        assert types[0] == "run_step.started", types
        assert len(types) == 2, types
    assert by_step[None] == ["run.started", "run.cancelled"]


_CALLS = {
    "one function": (("call_1", "function", "get_weather"),),
    "two calls": (("call_1", "function", "a"), ("call_2", "code_interpreter", None)),
    "the item's own id": (("s1", "web_search", None),),
    "kept as JSON": (("call_1", "function", ""), ("call\x1e2", "x\x1fy", "[n]")),
    "unicode, quotes, controls": (("call_1", "función", 'ünï"co\\de"\t\x01'),),
    "slashes and DEL, kept as JSON": (("call/1", "function", "a/b\x7f"),),
}
_TOOLS = re.compile(rb'"tools":(\[.*?\]),"from_status"')


@pytest.mark.parametrize("calls", list(_CALLS.values()), ids=list(_CALLS))
async def test_a_closed_step_lists_the_calls_its_start_listed(
    conn: PartitionClient, redis: Redis, calls: tuple[tuple[str, str, str | None], ...]
) -> None:
    """The commit script rebuilds a closed step's calls from what its run's hash keeps
    (core.layout.encode_tools): the same calls its start event listed, byte for byte, and
    the query's."""
    store, run_id = Store(conn), "r-tools"
    step_ = StepDouble("s1", run_id, "in_progress", tools=calls)
    await store.commit({run_id: [step_op(b"1-1", step_, Source.ASSISTANTS, T0 + 600)]}, [], [])
    ended = ReportedRun(run_id, "thread_1", "asst_1", "failed", T0, T0 + 9)
    await store.commit({run_id: [run_op(b"1-2", ended, Source.ASSISTANTS)]}, [], [])
    events = await read_json(redis, conn.part.derived_stream)
    started, closed = events[0], next(e for e in events if e.get("ended_by_run"))
    listed = [{"id": i, "type": t, "name": n} for i, t, n in calls]
    assert started["tools"] == closed["tools"] == listed
    entries = cast(
        "list[tuple[bytes, dict[bytes, bytes]]]", await redis.xrange(conn.part.derived_stream)
    )
    raw = [e[b"data"] for _, e in entries]
    as_listed = {m.group(1) for data in raw if (m := _TOOLS.search(data))}
    assert len(as_listed) == 1, as_listed  # the start's, the closed end's: the same bytes
    DERIVED.validate_python(closed)
    kept = await step_state(conn, run_id, "s1")
    assert kept is not None
    assert [t.model_dump() for t in kept.tools] == listed


async def test_a_runs_hash_with_tool_steps_stays_compact(
    conn: PartitionClient, redis: Redis
) -> None:
    """Each value a run's hash keeps for 20 tool steps of the usual shape (one call with an
    API id and name) fits Redis's default hash-max-listpack-value, so the hash is a
    listpack: a fraction of a hashtable's memory."""
    store, run_id = Store(conn), "run_" + "R" * 24
    ops: list[Op] = []
    for n in range(20):
        calls = (("call_" + f"{n:024d}", "function", "get_current_weather"),)
        for status in ("in_progress", "completed"):
            step_ = StepDouble(f"step_{n:024d}", run_id, status, tools=calls)
            ops.append(step_op(f"1-{len(ops)}".encode(), step_, Source.ASSISTANTS, T0 + 600))
    await store.commit({run_id: ops}, [], [])
    key = conn.keys.run(run_id)
    kept = cast("dict[bytes, bytes]", await redis.hgetall(key))
    assert sum(f.startswith(b"T") for f in kept) == 20
    assert max(len(v) for v in kept.values()) <= 64
    config = await redis.config_get("hash-max-listpack-value")
    if int(config["hash-max-listpack-value"] or 0) >= 64:  # Redis's default
        assert await redis.object("encoding", key) == b"listpack"
