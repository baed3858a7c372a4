"""Read models for the edge (HTTP query API, `runsteps inspect`): reads only.

Nothing on the processing path reads these: they decode the state strings the commit
script writes into the typed answers of `contracts.queries`.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, cast

from contracts.derived import ToolCall
from contracts.partitioning import partition_for
from contracts.queries import RunState, StepState, TokenTotals, TokenUsage
from service.core.layout import (
    ENDED_FIELDS,
    STEP_PREFIX,
    TOTALS,
    RunField,
    decode_tools,
    step_field,
    tools_field,
    totals_cost,
)
from service.core.state import decode_run_state, decode_state, parse_number

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from service.storage.client import PartitionClient
    from service.storage.pending import StreamEntries

__all__ = ["find_run", "find_step", "read_streams", "run_state", "step_state"]

log = logging.getLogger("runsteps.queries")

_USAGE = tuple(f.value for f in TOTALS)
_ENDED = {field: status for status, field in ENDED_FIELDS.items()}
_THREAD, _ASSISTANT, _LIVE = RunField.THREAD.value, RunField.ASSISTANT.value, RunField.LIVE.value
_PRICING = (
    RunField.MODEL.value,
    RunField.PRICES.value,
    RunField.EXCEEDED.value,
    RunField.COST.value,
)
MAX_PAGE = 1000
"""The most steps one answer holds: a run of any size is read in pages."""


def _num(value: str | None) -> int | float | None:
    return parse_number(value) if value else None


def _duration(start: int | float | None, end: int | float | None) -> int | float | None:
    return None if start is None or end is None else end - start


def _step(  # noqa: PLR0917  # one tracked step's fields, as read
    run_id: str,
    step_id: str,
    raw: str,
    thread: str | None,
    assistant: str | None,
    tools: str | None = None,
) -> StepState:
    record = decode_state(raw)
    created, ended = _num(record.get("c")), _num(record.get("d"))
    usage = None
    if "up" in record:
        usage = TokenUsage(
            prompt_tokens=int(record["up"]),
            completion_tokens=int(record.get("uc", 0)),
            total_tokens=int(record.get("ut", 0)),
        )
    return StepState(
        step_id=step_id,
        run_id=run_id,
        thread_id=thread,
        assistant_id=assistant,
        status=record["s"],
        step_type=record.get("y"),
        source=record.get("src"),
        created_at=created,
        ended_at=ended,
        duration_s=_duration(created, ended),
        usage=usage,
        last_error_code=record.get("e"),
        rejected=record["x"].split(",") if "x" in record else [],
        tools=[
            ToolCall(id=id_, type=type_, name=name)
            for id_, type_, name in decode_tools(step_id, tools or "")
        ],
    )


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _json(value: str | None) -> str | None:
    """A string the commit script keeps as JSON (the model), read back."""
    return None if value is None else cast("str", json.loads(value))


async def step_state(conn: PartitionClient, run_id: str, step_id: str) -> StepState | None:
    """A step's tracked state, or None if unknown."""
    raw = cast(
        "list[bytes | None]",
        await conn.redis.hmget(
            conn.keys.run(run_id), step_field(step_id), _THREAD, _ASSISTANT, tools_field(step_id)
        ),
    )
    state, thread, assistant, tools = (_text(r) for r in raw)
    if state is None:
        return None
    return _step(run_id, step_id, state, thread or None, assistant or None, tools)


async def run_state(
    conn: PartitionClient, run_id: str, cursor: str = "0", limit: int = 100
) -> RunState | None:
    """A run's tracked state and up to `limit` of its steps from `cursor`, or None."""
    key = conn.keys.run(run_id)
    fixed = (_THREAD, _ASSISTANT, RunField.STATE.value, _LIVE, *_USAGE, *_ENDED, *_PRICING)
    values = [_text(v) for v in cast("list[bytes | None]", await conn.redis.hmget(key, fixed))]
    got = dict(zip(fixed, values, strict=True))
    limit = max(1, min(limit, MAX_PAGE))
    steps: dict[str, str] = {}
    next_cursor = int(cursor) if cursor.isdigit() else 0
    # HSCAN's COUNT is a hint: ask only for what the page still lacks, stop once it is full
    # and resume from the cursor. A reply can hold a few more (a hash bucket is returned
    # whole; a compact hash, at most hash-max-listpack-entries fields, all at once).
    while len(steps) < limit:
        next_cursor, page = await conn.redis.hscan(
            key, next_cursor, match=STEP_PREFIX + "*", count=limit - len(steps)
        )
        steps.update({k.decode(): v.decode() for k, v in cast("dict[bytes, bytes]", page).items()})
        if next_cursor == 0:
            break
    if not steps and all(v is None for v in values):
        return None
    thread, assistant = got[_THREAD] or None, got[_ASSISTANT] or None
    run = decode_run_state(got[RunField.STATE] or "")
    ids = [name.removeprefix(STEP_PREFIX) for name in sorted(steps)]
    tools = await conn.redis.hmget(key, [tools_field(i) for i in ids]) if ids else []
    usage = TokenTotals(**{k: int(got[k] or 0) for k in _USAGE})
    prices, reported = got[RunField.PRICES], got[RunField.COST]
    cost = priced = None
    if reported:  # the run's own usage, as its run.usage priced it
        fields = json.loads("{" + reported + "}")
        cost, priced = fields["cost_usd"], fields["priced_model"]
    elif prices:
        nano, priced = totals_cost(prices, usage.prompt_tokens, usage.completion_tokens)
        cost = nano / 1e9
    created, ended = _num(run.get("c")), _num(run.get("d"))
    return RunState(
        run_id=run_id,
        thread_id=thread,
        assistant_id=assistant,
        status=run.get("s"),
        created_at=created,
        ended_at=ended,
        duration_s=_duration(created, ended),
        usage=usage,
        model=_json(got[RunField.MODEL]),
        cost_usd=cost,
        priced_model=priced,
        budgets_exceeded=(got[RunField.EXCEEDED] or "").split(",")
        if got[RunField.EXCEEDED]
        else [],
        steps_in_progress=int(got[_LIVE] or 0),
        steps_ended={status: int(got[k] or 0) for k, status in _ENDED.items()},
        steps=[
            _step(run_id, step_id, steps[step_field(step_id)], thread, assistant, _text(t))
            for step_id, t in zip(ids, cast("list[bytes | None]", tools), strict=True)
        ],
        next_cursor=None if next_cursor == 0 else str(next_cursor),
    )


async def find_step(conns: list[PartitionClient], run_id: str, step_id: str) -> StepState | None:
    """A step's tracked state, from the partition its run id maps to."""
    if not conns:
        return None
    return await step_state(conns[partition_for(run_id, len(conns))], run_id, step_id)


async def find_run(
    conns: list[PartitionClient], run_id: str, cursor: str = "0", limit: int = 100
) -> RunState | None:
    """A run's tracked state and a page of steps, from the partition its run id maps to."""
    if not conns:
        return None
    return await run_state(conns[partition_for(run_id, len(conns))], run_id, cursor, limit)


async def read_streams(
    redis: Redis, cursors: dict[str, str], block_ms: int
) -> list[tuple[str, StreamEntries]]:
    """XREAD after each cursor (a plain reader of derived/DLQ streams, as any consumer)."""
    reply = await redis.xread(cast("Any", cursors), block=block_ms)
    return [(name.decode(), entries) for name, entries in cast("Any", reply or [])]
