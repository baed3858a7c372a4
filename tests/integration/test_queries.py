"""The run query on a huge run: bounded pages that, followed by cursor, cover every step."""

from __future__ import annotations

from redis.asyncio import Redis

from service.storage.client import PartitionClient
from service.storage.reads import MAX_PAGE, find_run
from tests.helpers import PAGE_SLACK, seed_big_run

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
