"""The commit script against a real Redis decides exactly as the pure lifecycle does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.asyncio import Redis

from contracts.derived import DERIVED, Source, event_id_for
from contracts.limits import MAX_TOKENS
from service.core.lifecycle import RUNS, STEPS, Action, decide
from service.core.ops import run_op, step_op
from service.core.reported import ReportedRun
from service.dev.sample import T0
from service.storage.client import PartitionClient
from service.storage.store import Store
from tests.helpers import StepDouble, UsageDouble, read_json


def _pairs(codes: dict[str, str]) -> list[tuple[str | None, str]]:
    return [(cur, inc) for cur in [None, *codes] for inc in codes]


async def _commit_step(store: Store, n: int, run_id: str, status: str) -> str:
    op = step_op(f"1-{n}".encode(), StepDouble("s", run_id, status, usage=UsageDouble(1, 2, 3)),
                 Source.ASSISTANTS, T0 + 600)  # fmt: skip
    return await store.commit({run_id: [op]}, [], [])


@pytest.mark.parametrize(("current", "incoming"), _pairs(STEPS.codes))
async def test_script_decides_steps_as_decide(
    conn: PartitionClient, current: str | None, incoming: str
) -> None:
    """For every (tracked, incoming) pair the script takes `decide`'s action, and a
    refused status delivered again is not refused twice."""
    store, run_id = Store(conn), f"r-{current}-{incoming}"
    if current is not None:
        await _commit_step(store, 0, run_id, current)
    action = await _commit_step(store, 1, run_id, incoming)
    assert action == decide(STEPS, current, incoming).action
    if action == Action.REJECT:
        assert await _commit_step(store, 2, run_id, incoming) == Action.DUPLICATE


async def _commit_run(store: Store, n: int, run_id: str, status: str) -> str:
    calls = ["call_1"] if status == "requires_action" else []
    ended = T0 + 9 if RUNS.is_terminal(status) else None
    run = ReportedRun(run_id, "thread_1", "asst_1", status, T0, ended, calls)
    op = run_op(f"1-{n}".encode(), run, Source.ASSISTANTS)
    return await store.commit({run_id: [op]}, [], [])


@pytest.mark.parametrize(("current", "incoming"), _pairs(RUNS.codes))
async def test_script_decides_runs_as_decide(
    conn: PartitionClient, current: str | None, incoming: str
) -> None:
    """For every (tracked, incoming) pair of run statuses the script takes `decide`'s
    action."""
    store, run_id = Store(conn), f"r-{current}-{incoming}"
    if current is not None:
        await _commit_run(store, 0, run_id, current)
    action = await _commit_run(store, 1, run_id, incoming)
    assert action == decide(RUNS, current, incoming).action


async def test_a_round_of_tool_calls_is_published_once(conn: PartitionClient, redis: Redis) -> None:
    """requires_action redelivered after the run moved on does not publish the round again."""
    store = Store(conn)
    for n, status in enumerate(["queued", "requires_action", "in_progress", "requires_action"]):
        await _commit_run(store, n, "r-tools", status)
    types = [e["type"] for e in await read_json(redis, conn.part.derived_stream)]
    assert types == ["run.started", "run.requires_action"]


# Ids and a thread that try to break the script's reading of the end event's ids.
_ODD_RUN = 'run "odd",\\"from_status\\":'
_ODD_THREAD = '","from_status":"x","occurred_at":1,'


async def test_the_script_builds_the_start_of_a_step_first_seen_ended(
    conn: PartitionClient, redis: Redis
) -> None:
    """A step first seen ended gets the start an observed in_progress would have published:
    same bytes, same deterministic event_id, even with quotes and JSON-like text in its ids."""
    step = StepDouble('step "1"', _ODD_RUN, "completed", thread_id=_ODD_THREAD)
    op = step_op(b"1-1", step, Source.ASSISTANTS, T0 + 600)
    assert await Store(conn).commit({step.run_id: [op]}, [], []) == Action.BEGIN_END
    observed = step_op(
        b"1-0", StepDouble(step.id, step.run_id, "in_progress", thread_id=_ODD_THREAD),
        Source.ASSISTANTS, T0 + 600,
    )  # fmt: skip
    start, end = await read_json(redis, conn.part.derived_stream)
    assert start == json.loads(observed.start_event)
    assert end["type"] == "run_step.completed"
    assert DERIVED.validate_python(start).event_id == event_id_for(
        step.run_id, step.id, "run_step.started"
    )


async def test_the_script_builds_the_start_of_a_run_first_seen_ended(
    conn: PartitionClient, redis: Redis
) -> None:
    """The same for a run first seen terminal."""
    await _commit_run(Store(conn), 1, _ODD_RUN, "failed")
    start, end = await read_json(redis, conn.part.derived_stream)
    observed = run_op(b"1-0", ReportedRun(_ODD_RUN, "thread_1", "asst_1", "in_progress", T0, None),
                      Source.ASSISTANTS)  # fmt: skip
    assert start == json.loads(observed.start_event)
    assert end["type"] == "run.failed"


@pytest.mark.parametrize("kind", ["step", "run"])
async def test_the_script_builds_a_rejected_second_end(
    conn: PartitionClient, redis: Redis, kind: str
) -> None:
    """A second, different terminal status publishes one transition_rejected in the
    contract's shape, with its deterministic event_id (qualified by the refused status)."""
    store = Store(conn)
    if kind == "step":
        for n, status in enumerate(["completed", "failed"]):
            op = step_op(
                f"1-{n}".encode(), StepDouble("s 1", _ODD_RUN, status, thread_id=_ODD_THREAD),
                Source.ASSISTANTS, T0 + 600,
            )  # fmt: skip
            await store.commit({_ODD_RUN: [op]}, [], [])
    else:
        for n, status in enumerate(["completed", "failed"]):
            await _commit_run(store, n, _ODD_RUN, status)
    rejected = (await read_json(redis, conn.part.derived_stream))[-1]
    DERIVED.validate_python(rejected)
    step_id = "s 1" if kind == "step" else None
    prefix = "run_step" if kind == "step" else "run"
    what: dict[str, Any] = {"tools": []} if kind == "step" else {"model": None}
    assert rejected == {
        "type": f"{prefix}.transition_rejected",
        "event_id": event_id_for(
            _ODD_RUN, step_id or "", f"{prefix}.transition_rejected", "failed"
        ),
        "source": "assistants",
        **({"step_id": step_id} if step_id else {}),
        "run_id": _ODD_RUN,
        "thread_id": _ODD_THREAD if kind == "step" else "thread_1",
        "assistant_id": "asst_1",
        **what,
        "from_status": "completed",
        "to_status": "failed",
        "occurred_at": T0 + 5 if kind == "step" else T0 + 9,
        "reason": f"{kind} is already completed; terminal statuses are final",
    }


async def test_run_totals_are_exact_at_the_bound_and_never_wrap(
    conn: PartitionClient, redis: Redis
) -> None:
    """Counts at the decode bound sum exactly; even past it (counts the decoder would refuse)
    a total is never negative: past 2^53 the script writes them with %.0f, not %d."""
    store = Store(conn)
    for n, (run_id, count) in enumerate([("r-max", MAX_TOKENS)] * 3 + [("r-huge", 2**62)] * 4):
        step = StepDouble(f"s{n}", run_id, "completed", usage=UsageDouble(count, count, 2 * count))
        await store.commit(
            {run_id: [step_op(f"1-{n}".encode(), step, Source.ASSISTANTS, T0)]}, [], []
        )
    usage = [
        e for e in await read_json(redis, conn.part.derived_stream) if e["type"] == "run.usage"
    ]
    assert usage[2]["prompt_tokens"] == 3 * MAX_TOKENS
    assert usage[2]["total_tokens"] == 6 * MAX_TOKENS
    assert all(e["prompt_tokens"] > 0 and e["total_tokens"] > 0 for e in usage)
    assert usage[-1]["prompt_tokens"] >= 2**63


async def test_user_text_like_the_status_placeholder_is_left_alone(
    conn: PartitionClient, redis: Redis
) -> None:
    """Only from_status takes the tracked status: a run id, tool call id or error message
    holding the placeholder text comes out as sent."""
    store, run_id = Store(conn), "run_%FROM%"
    waiting = ReportedRun(run_id, "thread_1", "asst_1", "requires_action", T0, None,
                          ["call_%FROM%"])  # fmt: skip
    failed = ReportedRun(run_id, "thread_1", "asst_1", "failed", T0, T0 + 9,
                         last_error={"code": "server_error", "message": "at %FROM%"})  # fmt: skip
    for n, run in enumerate([waiting, failed]):
        await store.commit({run_id: [run_op(f"1-{n}".encode(), run, Source.ASSISTANTS)]}, [], [])
    events = await read_json(redis, conn.part.derived_stream)
    assert [e["type"] for e in events] == ["run.started", "run.requires_action", "run.failed"]
    assert {e["run_id"] for e in events} == {run_id}
    assert events[1]["tool_call_ids"] == ["call_%FROM%"]
    assert events[2]["last_error"]["message"] == "at %FROM%"
    assert events[2]["from_status"] == "requires_action"


async def test_a_round_naming_no_tool_call_is_published(
    conn: PartitionClient, redis: Redis
) -> None:
    """requires_action without tool call ids still publishes run.requires_action."""
    await _commit_run(Store(conn), 0, "r-empty", "in_progress")
    run = ReportedRun("r-empty", "thread_1", "asst_1", "requires_action", T0, None, [])
    await Store(conn).commit({"r-empty": [run_op(b"1-1", run, Source.ASSISTANTS)]}, [], [])
    types = [e["type"] for e in await read_json(redis, conn.part.derived_stream)]
    assert types == ["run.started", "run.requires_action"]
