"""Run budgets (RUNSTEPS_BUDGET_*): a run that passes one publishes exactly one
run.budget_exceeded per limit, atomically with the entry that crossed it, whatever the
duplicates or the order; a run that goes quiet past its time budget is found by the scan."""

from __future__ import annotations

import random
from typing import Any

from redis.asyncio import Redis

from contracts.derived import DERIVED
from service.dev.sample import T0, run, step
from service.settings import Settings
from service.storage.client import PartitionClient
from service.storage.reads import run_state
from service.worker.recovery import Recovery
from tests.conftest import make_processor
from tests.helpers import fetch, produce, read_json


def _budget_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for event in events:
        DERIVED.validate_python(event)
    return [e for e in events if e["type"] == "run.budget_exceeded"]


async def _apply(conn: PartitionClient, redis: Redis, s: Settings, *payloads: Any) -> None:
    client = PartitionClient(conn.redis, s)
    await produce(redis, s, *payloads)
    await make_processor(client, s).process(await fetch(redis, s.source_stream, s.group, "c"))


async def test_each_budget_is_reported_once_with_the_entry_that_crossed_it(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """Tokens, steps and usd: one event each, right after the crossing entry's own events."""
    s = settings.model_copy(update={"budget_tokens": 150, "budget_steps": 2, "budget_usd": 0.0005})
    entries = [run("run_demo", "in_progress")]
    for i in range(4):
        entries += [step(f"s{i}", "in_progress"),
                    step(f"s{i}", "completed", ended_at=T0 + 1, usage=(40, 20))]  # fmt: skip
    await _apply(conn, redis, s, *entries)
    await _apply(conn, redis, s, *entries)  # redelivered: nothing more
    events = await read_json(redis, s.derived_stream)
    passed = _budget_events(events)
    assert sorted(e["limit"] for e in passed) == ["steps", "tokens", "usd"]
    by_limit = {e["limit"]: e for e in passed}
    assert (by_limit["steps"]["budget"], by_limit["steps"]["value"]) == (2, 3)
    assert (by_limit["tokens"]["budget"], by_limit["tokens"]["value"]) == (150, 180)
    assert by_limit["usd"]["value"] > 0.0005
    assert by_limit["tokens"]["model"] == "gpt-4o"
    crossing = events.index(by_limit["tokens"])
    assert events[crossing - 1]["type"] == "run.usage"
    assert events[crossing - 1]["total_tokens"] == 180
    tracked = await run_state(PartitionClient(conn.redis, s), "run_demo")
    assert tracked is not None
    assert sorted(tracked.budgets_exceeded) == ["steps", "tokens", "usd"]


async def test_budgets_hold_under_shuffled_duplicates(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """Any order, every entry twice: still one event per limit."""
    s = settings.model_copy(update={"budget_tokens": 100, "budget_steps": 3})
    entries = [run("run_demo", "in_progress")]
    for i in range(6):
        entries += [step(f"s{i}", "in_progress"),
                    step(f"s{i}", "completed", ended_at=T0 + 1, usage=(30, 10))]  # fmt: skip
    entries *= 2
    random.Random(5).shuffle(entries)
    for at in range(0, len(entries), 4):
        await _apply(conn, redis, s, *entries[at : at + 4])
    passed = _budget_events(await read_json(redis, s.derived_stream))
    assert sorted(e["limit"] for e in passed) == ["steps", "tokens"]


async def test_a_run_past_its_time_budget_is_reported_in_progress_and_not_again(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """The scan reports a quiet run past RUNSTEPS_BUDGET_SECONDS once; its later end does
    not report it again; a run that ended in time is never reported."""
    s = settings.model_copy(update={"budget_seconds": 60})
    await _apply(conn, redis, s, run("run_slow", "in_progress"), run("run_fast", "in_progress"),
                 run("run_fast", "completed", ended_at=T0 + 5))  # fmt: skip
    recovery = Recovery(make_processor(PartitionClient(conn.redis, s), s))
    assert await recovery.scan_budgets(now=T0 + 30) == 0
    assert await recovery.scan_budgets(now=T0 + 120) == 1
    assert await recovery.scan_budgets(now=T0 + 500) == 0
    await _apply(conn, redis, s, run("run_slow", "completed", ended_at=T0 + 600))
    passed = _budget_events(await read_json(redis, s.derived_stream))
    assert [(e["run_id"], e["limit"]) for e in passed] == [("run_slow", "seconds")]
    assert passed[0]["source"] == "assistants"
    assert passed[0]["thread_id"] == "thread_demo"


async def test_a_run_that_ends_past_its_time_budget_says_so_with_its_end(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """Never scanned (the scan had not come round): its end reports the duration."""
    s = settings.model_copy(update={"budget_seconds": 60})
    await _apply(conn, redis, s, run("run_long", "in_progress"),
                 run("run_long", "completed", ended_at=T0 + 90))  # fmt: skip
    events = await read_json(redis, s.derived_stream)
    [passed] = _budget_events(events)
    assert (passed["limit"], passed["budget"], passed["value"]) == ("seconds", 60, 91)
    assert events[-1] == passed
    assert events[-2]["type"] == "run.completed"


async def test_no_budget_no_event(conn: PartitionClient, redis: Redis, settings: Settings) -> None:
    """Budgets unset: nothing is reported, however large the run."""
    entries = [run("run_demo", "in_progress")]
    for i in range(30):
        entries += [step(f"s{i}", "completed", ended_at=T0 + 1, usage=(4000, 2000))]
    await _apply(conn, redis, settings, *entries)
    assert _budget_events(await read_json(redis, settings.derived_stream)) == []


async def test_an_unpriced_run_passes_no_usd_budget_and_commits(
    conn: PartitionClient, redis: Redis, settings: Settings
) -> None:
    """A usd budget set and a model with no price: its usage is published unpriced (null
    cost), no usd event, and every entry commits (none left pending, none dead)."""
    s = settings.model_copy(update={"budget_usd": 0.0000001})
    unpriced = run("run_demo", "in_progress")
    unpriced["data"]["model"] = "my-local-llama"
    entries = [unpriced]
    for i in range(3):
        entries += [step(f"s{i}", "completed", ended_at=T0 + 1, usage=(4000, 2000))]
    await _apply(conn, redis, s, *entries)
    events = await read_json(redis, s.derived_stream)
    usage = [e for e in events if e["type"] == "run.usage"]
    assert len(usage) == 3
    assert {(e["model"], e["cost_usd"]) for e in usage} == {("my-local-llama", None)}
    assert _budget_events(events) == []
    assert (await redis.xpending(s.source_stream, s.group))["pending"] == 0
    assert await redis.xlen(s.dlq_stream) == 0
