"""Every (kind, action) through the real commit script: the derived stream holds exactly
the events `core.published` declares, and the worker's telemetry counts exactly those."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis

from contracts.derived import DERIVED, Source
from service.core.lifecycle import Action
from service.core.ops import Op, run_op, step_op
from service.core.published import PUBLISHES, Kind, published
from service.core.reported import ReportedRun
from service.dev.sample import T0
from service.storage.client import PartitionClient
from service.worker.telemetry import Telemetry
from tests.conftest import make_processor
from tests.helpers import read_json


@dataclass
class _Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass
class _Step:
    id: str
    run_id: str
    status: str
    usage: _Usage | None = None
    thread_id: str | None = "thread_1"
    assistant_id: str | None = "asst_1"
    type: str = "tool_calls"
    created_at: int = T0
    last_error: Any = None
    tools: tuple[tuple[str, str, str | None], ...] = ()

    @property
    def terminal_at(self) -> int | None:
        return None if self.status == "in_progress" else T0 + 5


def _step(status: str, usage: bool = False, thread: str = "thread_1") -> Op:
    step = _Step("s1", "run_1", status, _Usage(1, 2, 3) if usage else None, thread)
    return step_op(b"1-0", step, Source.ASSISTANTS, T0 + 600)


def _run(status: str, usage: bool = False, calls: tuple[str, ...] = ()) -> Op:
    run = ReportedRun(
        "run_1", "thread_1", "asst_1", status, T0, T0 + 9,
        pending_tool_call_ids=list(calls),
        totals=(4, 5, 9) if usage else None,
    )  # fmt: skip
    return run_op(b"1-0", run, Source.RESPONSES if usage else Source.ASSISTANTS)


# (kind, action, usage?): the ops that set the state up, then the op under test.
CASES: list[tuple[Kind, Action, bool, list[Op], Op]] = [
    (Kind.STEP, Action.START, False, [], _step("in_progress")),
    (Kind.STEP, Action.END, False, [_step("in_progress")], _step("completed")),
    (Kind.STEP, Action.END, True, [_step("in_progress")], _step("failed", usage=True)),
    (Kind.STEP, Action.BEGIN_END, False, [], _step("cancelled")),
    (Kind.STEP, Action.BEGIN_END, True, [], _step("completed", usage=True)),
    (Kind.STEP, Action.REJECT, False, [_step("completed")], _step("failed")),
    (Kind.STEP, Action.DUPLICATE, False, [_step("in_progress")], _step("in_progress")),
    (Kind.STEP, Action.LATE, False, [_step("completed")], _step("in_progress")),
    (Kind.STEP, Action.IDENTITY_MISMATCH, False, [_step("in_progress")],
     _step("completed", thread="thread_other")),
    (Kind.RUN, Action.START, False, [], _run("queued")),
    (Kind.RUN, Action.WAIT_START, False, [], _run("requires_action", calls=("call_1",))),
    (Kind.RUN, Action.MOVE, False, [_run("queued")], _run("in_progress")),
    (Kind.RUN, Action.AWAIT, False, [_run("in_progress")],
     _run("requires_action", calls=("call_1",))),
    (Kind.RUN, Action.MOVE, False,  # a round already published: only the move
     [_run("requires_action", calls=("call_1",)), _run("in_progress")],
     _run("requires_action", calls=("call_1",))),
    (Kind.RUN, Action.END, False, [_run("in_progress")], _run("completed")),
    (Kind.RUN, Action.END, True, [_run("in_progress")], _run("completed", usage=True)),
    (Kind.RUN, Action.BEGIN_END, False, [], _run("failed")),
    (Kind.RUN, Action.BEGIN_END, True, [], _run("incomplete", usage=True)),
    (Kind.RUN, Action.REJECT, False, [_run("completed")], _run("cancelled")),
    (Kind.RUN, Action.DUPLICATE, False, [_run("queued")], _run("queued")),
    (Kind.RUN, Action.LATE, False, [_run("expired")], _run("in_progress")),
]  # fmt: skip


def test_every_declared_pair_is_exercised() -> None:
    """The cases cover every (kind, action) the declaration names, with and without usage."""
    covered = {(kind, action) for kind, action, *_ in CASES}
    assert set(PUBLISHES) <= covered
    assert {a for _, a, *_ in CASES} == set(Action)


@pytest.mark.parametrize(
    ("kind", "action", "usage", "before", "op"),
    CASES,
    ids=[f"{k}-{a.name}{'-usage' if u else ''}" for k, a, u, *_ in CASES],
)
async def test_the_stream_holds_what_the_declaration_says(
    conn: PartitionClient,
    redis: Redis,
    kind: Kind,
    action: Action,
    usage: bool,
    before: list[Op],
    op: Op,
) -> None:
    """The action the script takes publishes exactly the declared events, in order, and the
    telemetry counts exactly those."""
    processor = make_processor(conn)
    store = processor.store
    for n, earlier in enumerate(before):
        earlier.source_id = f"1-{n}".encode()
        await store.apply({"run_1": [earlier]}, [], [])
    seen = len(await read_json(redis, conn.part.derived_stream))
    op.source_id = b"2-0"
    done = (await store.apply({"run_1": [op]}, [], [])).actions
    assert [action for _, action in done] == [action]
    events = (await read_json(redis, conn.part.derived_stream))[seen:]
    for event in events:
        DERIVED.validate_python(event)
    declared = published(kind, action, op.end_type, op.usage != "")
    assert [e["type"] for e in events] == list(declared)
    assert bool(declared) == ((kind, action) in PUBLISHES)
    telemetry = processor.telemetry = Telemetry()
    processor._count(processor.build([]), done)
    assert telemetry.derived == Counter(e["type"] for e in events)
