"""The run query: bounded pages of a huge run that, followed by cursor, cover every step;
the cost a run's last run.usage reported."""

from __future__ import annotations

from redis.asyncio import Redis

from contracts.derived import Source
from service.core.ops import run_op, step_op
from service.core.prices import bundled_prices
from service.core.reported import ReportedRun
from service.dev.sample import T0
from service.storage.client import PartitionClient
from service.storage.reads import MAX_PAGE, find_run
from service.storage.store import Store
from tests.helpers import PAGE_SLACK, StepDouble, UsageDouble, read_json, seed_big_run

STEPS = 100_000


async def test_huge_run_is_read_in_bounded_pages_that_cover_it(
    conn: PartitionClient, redis: Redis
) -> None:
    """A 100,000-step run comes a page of at most about `limit` (capped at 1000) steps at a
    time, however large the `limit` asked for; following `next_cursor` yields every step."""
    await seed_big_run(redis, conn.keys.run("run_big"), STEPS)
    seen: set[str] = set()
    cursor, pages = "0", 0
    while True:
        page = await find_run([conn], "run_big", cursor, limit=1_000_000)
        assert page is not None
        assert len(page.steps) < MAX_PAGE + PAGE_SLACK
        seen |= {s.step_id for s in page.steps}
        pages += 1
        if page.next_cursor is None:
            break
        assert len(page.steps) >= MAX_PAGE  # only the last page is short
        cursor = page.next_cursor
    assert len(seen) == STEPS
    assert pages >= STEPS // (MAX_PAGE + PAGE_SLACK)


async def test_a_runs_cost_is_what_its_last_usage_reported(
    conn: PartitionClient, redis: Redis
) -> None:
    """A response's own usage is priced with its details (cached input): the run's cost is
    that, not its totals priced all as input; a later run.usage of summed totals (a step
    with usage: today's decoders give Responses items none) replaces it."""
    store, prices = Store(conn), bundled_prices()
    usage = {"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100,
             "input_tokens_details": {"cached_tokens": 800}}  # fmt: skip
    response = ReportedRun("resp_1", None, None, "completed", T0, T0 + 5, usage=usage,
                           totals=(1000, 100, 1100), model="gpt-4o")  # fmt: skip
    step = StepDouble("s1", "resp_1", "completed", None, None, usage=UsageDouble(500, 500, 1000))
    ops = [run_op(b"1-1", response, Source.RESPONSES, prices)]
    ops.append(step_op(b"1-2", step, Source.RESPONSES, T0))
    for n, op in enumerate(ops):
        await store.commit({"resp_1": [op]}, [], [])
        said = [e for e in await read_json(redis, conn.part.derived_stream)
                if e["type"] == "run.usage"][-1]  # fmt: skip
        run = await find_run([conn], "resp_1")
        assert run is not None
        assert (run.cost_usd, run.priced_model) == (said["cost_usd"], said["priced_model"]), n
        assert said["cost_usd"] is not None
