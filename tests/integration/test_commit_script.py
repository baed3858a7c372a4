"""The commit script against a real Redis decides exactly as the pure lifecycle does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis

from contracts.derived import Source
from service.connection import Connection
from service.derive import ReportedRun, run_op, step_op
from service.lifecycle import RUNS, STEPS, Action, decide
from service.sample import T0
from service.store import Store
from tests.helpers import read_json


@dataclass
class _Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass
class _Step:
    """A reported step with just the fields the worker reads."""

    id: str
    run_id: str
    status: str
    thread_id: str | None = "thread_1"
    assistant_id: str | None = "asst_1"
    type: str = "tool_calls"
    created_at: int = T0
    usage: _Usage | None = None
    last_error: Any = None

    @property
    def terminal_at(self) -> int | None:
        return None if self.status == "in_progress" else T0 + 5


def _pairs(codes: dict[str, str]) -> list[tuple[str | None, str]]:
    return [(cur, inc) for cur in [None, *codes] for inc in codes]


async def _commit_step(store: Store, n: int, run_id: str, status: str) -> str:
    op = step_op(f"1-{n}".encode(), _Step("s", run_id, status, usage=_Usage(1, 2, 3)),
                 Source.ASSISTANTS, T0 + 600)  # fmt: skip
    return await store.commit({run_id: [op]}, [], [])


@pytest.mark.parametrize(("current", "incoming"), _pairs(STEPS.codes))
async def test_script_decides_steps_as_decide(
    conn: Connection, current: str | None, incoming: str
) -> None:
    """For every (tracked, incoming) pair the script takes `decide`'s action, and a
    refused status delivered again is not refused twice."""
    store, run_id = Store(conn), f"r-{current}-{incoming}"
    if current is not None:
        await _commit_step(store, 0, run_id, current)
    action = await _commit_step(store, 1, run_id, incoming)
    assert action == decide(STEPS, current, incoming).action
    if action == Action.REJECT:
        assert await _commit_step(store, 2, run_id, incoming) == Action.NOTHING


async def _commit_run(store: Store, n: int, run_id: str, status: str) -> str:
    calls = ["call_1"] if status == "requires_action" else []
    ended = T0 + 9 if RUNS.is_terminal(status) else None
    run = ReportedRun(run_id, "thread_1", "asst_1", status, T0, ended, calls)
    op = run_op(f"1-{n}".encode(), run, Source.ASSISTANTS)
    return await store.commit({run_id: [op]}, [], [])


@pytest.mark.parametrize(("current", "incoming"), _pairs(RUNS.codes))
async def test_script_decides_runs_as_decide(
    conn: Connection, current: str | None, incoming: str
) -> None:
    """For every (tracked, incoming) pair of run statuses the script takes `decide`'s
    action."""
    store, run_id = Store(conn), f"r-{current}-{incoming}"
    if current is not None:
        await _commit_run(store, 0, run_id, current)
    action = await _commit_run(store, 1, run_id, incoming)
    assert action == decide(RUNS, current, incoming).action


async def test_a_round_of_tool_calls_is_published_once(conn: Connection, redis: Redis) -> None:
    """requires_action redelivered after the run moved on does not publish the round again."""
    store = Store(conn)
    for n, status in enumerate(["queued", "requires_action", "in_progress", "requires_action"]):
        await _commit_run(store, n, "r-tools", status)
    types = [e["type"] for e in await read_json(redis, conn.part.derived_stream)]
    assert types == ["run.started", "run.requires_action"]
