"""Full batches: a commit deferred to go out with the next batch, against a real Redis.

The worker plans batch k+1 while Redis runs batch k's commit (see Processor.process). These
tests pin down what that must never change: every entry ends acked with its effects exactly
once, a deferred commit never waits long, and a prediction that does not land (another
worker moved the step meanwhile) is decided again on fresh state.
"""

from __future__ import annotations

import logging
import time

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from service import process
from service.process import FLUSH_AFTER_S, Processor
from service.sample import step
from service.settings import Settings
from service.store import Store
from tests.helpers import drained, fetch, pending, produce, read_json, wait_until


async def _setup(redis: Redis, settings: Settings) -> tuple[Store, Processor]:
    store = Store(redis, settings)
    await store.ensure_group()
    await store.load_scripts()
    return store, Processor(store, settings)


async def _full_batch(
    redis: Redis, settings: Settings, processor: Processor, *payloads: dict[str, object]
) -> None:
    """Produce `payloads`, hand them to `processor` as a full batch, wait until planned."""
    s = settings
    await produce(redis, s, *payloads)
    await processor.process(await fetch(redis, s.source_stream, s.group, s.consumer), more=True)
    await processor.planned()


async def _first_landed(redis: Redis, settings: Settings) -> None:
    """Wait until the first of two full batches is committed (one entry left pending)."""

    async def landed() -> bool:
        return await pending(redis, settings.source_stream, settings.group) == 1

    await wait_until(landed, 5, "the first batch's commit to land")


def _types(events: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [(e["step_id"], e["type"]) for e in events]


async def test_deferred_commit_goes_out_with_the_next_batch(
    redis: Redis, settings: Settings
) -> None:
    _, processor = await _setup(redis, settings)
    s = settings
    await produce(redis, s, step("a", "in_progress"), step("b", "in_progress"))
    first = await fetch(redis, s.source_stream, s.group, s.consumer)
    assert await processor.process(first, more=True) == {}
    await processor.planned()
    assert await pending(redis, s.source_stream, s.group) == 2  # planned, not sent
    # The next batch carries a's end and b's duplicate: both decided on the predicted state.
    await produce(redis, s, step("a", "completed", usage=(10, 5)), step("b", "in_progress"))
    second = await fetch(redis, s.source_stream, s.group, s.consumer)
    assert await processor.process(second) == {}
    assert await drained(redis, s.source_stream, s.group)
    assert _types(await read_json(redis, s.derived_stream)) == [
        ("a", "run_step.started"),
        ("b", "run_step.started"),
        ("a", "run_step.completed"),
        ("a", "run.usage"),
    ]
    assert processor.stats["conflicts"] == 0


async def test_deferred_commit_is_flushed_when_no_batch_follows(
    redis: Redis, settings: Settings
) -> None:
    _, processor = await _setup(redis, settings)
    s = settings
    await produce(redis, s, step("a", "in_progress"))
    started = time.monotonic()
    await processor.process(await fetch(redis, s.source_stream, s.group, s.consumer), more=True)
    await processor.planned()

    async def done() -> bool:
        return await drained(redis, s.source_stream, s.group)

    await wait_until(done, 5, "the deferred commit to be flushed")
    assert time.monotonic() - started < FLUSH_AFTER_S + 1.0
    assert _types(await read_json(redis, s.derived_stream)) == [("a", "run_step.started")]


async def test_flush_sends_a_deferred_commit_at_once(redis: Redis, settings: Settings) -> None:
    _, processor = await _setup(redis, settings)
    s = settings
    await _full_batch(redis, s, processor, step("a", "in_progress"))
    await processor.flush()
    assert await drained(redis, s.source_stream, s.group)
    assert await processor.flush() == {}  # nothing left: a second flush does nothing


async def test_prediction_that_does_not_land_is_decided_again(
    redis: Redis, settings: Settings
) -> None:
    """Another worker finishes step a while a's start waits deferred: a's start conflicts and
    is decided again (a no-op now), and the next batch's a.failed, planned on the predicted
    in_progress state, is planned again: rejected, since a completed first."""
    store, processor = await _setup(redis, settings)
    s = settings
    other = Processor(store, s)
    await _full_batch(redis, s, processor, step("a", "in_progress"))
    await produce(redis, s, step("a", "completed", usage=(10, 5)))
    await other.process(await fetch(redis, s.source_stream, s.group, "other"))
    await produce(redis, s, step("a", "failed"))
    assert await processor.process(await fetch(redis, s.source_stream, s.group, s.consumer)) == {}
    assert await drained(redis, s.source_stream, s.group)
    assert _types(await read_json(redis, s.derived_stream)) == [
        ("a", "run_step.completed"),
        ("a", "run.usage"),
        ("a", "run_step.transition_rejected"),
    ]
    assert processor.stats["conflicts"] >= 1
    assert processor.stats["consumed"] == 2  # planned twice, counted once


async def _conflict(redis: Redis, settings: Settings, processor: Processor) -> None:
    """Make `processor`'s commit of a's start conflict: another worker ends a first."""
    s = settings
    other = Processor(processor.store, s)
    await _full_batch(redis, s, processor, step("a", "in_progress"))
    await produce(redis, s, step("a", "completed", usage=(10, 5)))
    await other.process(await fetch(redis, s.source_stream, s.group, "other"))
    await produce(redis, s, step("b", "in_progress"))
    await processor.process(await fetch(redis, s.source_stream, s.group, s.consumer))
    assert processor.stats["conflicts"] == 1  # a's start: decided again, stale
    assert other.stats["undeferred"] == 0  # its commits never conflicted


async def test_after_a_conflict_a_full_batch_commit_goes_out_when_planned(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conflict says another replica moves this partition's steps: for defer_pause_s, a
    full batch is still planned in the background, but its commit is sent at once, not
    held for the next batch (nor for the flush timer, set out of reach here), so a step's
    state does not wait planned but unsent while the other replica may end it."""
    monkeypatch.setattr(process, "FLUSH_AFTER_S", 60.0)
    _, processor = await _setup(redis, settings)
    s = settings
    await _conflict(redis, s, processor)
    await _full_batch(redis, s, processor, step("c", "in_progress"))

    async def done() -> bool:
        return await drained(redis, s.source_stream, s.group)

    await wait_until(done, 5, "the commit sent when planned to land")
    assert processor.stats["undeferred"] == 1
    assert await processor.flush() == {}  # observes it
    assert _types(await read_json(redis, s.derived_stream))[-1] == ("c", "run_step.started")


async def test_commits_are_deferred_again_when_the_pause_is_over(
    redis: Redis, settings: Settings
) -> None:
    s = settings.model_copy(update={"defer_pause_s": 0.0})
    _, processor = await _setup(redis, s)
    await _conflict(redis, s, processor)
    await _full_batch(redis, s, processor, step("c", "in_progress"))
    assert await pending(redis, s.source_stream, s.group) == 1  # planned, deferred again
    assert processor.stats["undeferred"] == 0
    await processor.flush()
    assert await drained(redis, s.source_stream, s.group)


async def test_a_commit_in_flight_is_observed_with_the_batch_after_next(
    redis: Redis, settings: Settings
) -> None:
    """Two full batches in a row: the first one's commit goes out with the second and is
    observed with the third (or on flush); the second stays planned until then."""
    _, processor = await _setup(redis, settings)
    s = settings
    await _full_batch(redis, s, processor, step("a", "in_progress"))
    await _full_batch(redis, s, processor, step("a", "completed", usage=(10, 5)))
    await _first_landed(redis, s)
    assert await processor.flush() == {}
    assert await drained(redis, s.source_stream, s.group)
    assert _types(await read_json(redis, s.derived_stream)) == [
        ("a", "run_step.started"),
        ("a", "run_step.completed"),
        ("a", "run.usage"),
    ]


async def test_batch_planned_on_a_deferred_commit_that_misses_is_planned_again(
    redis: Redis, settings: Settings
) -> None:
    """Batch 2 (deferred) plans a's completion on batch 1's state; another worker fails a
    before batch 2's commit goes out, so it conflicts and is decided again: rejected. Batch
    3, planned on batch 2's predicted state while batch 2 was in flight, is planned again
    too: its a.cancelled is rejected on the failed state, not the completed one."""
    store, processor = await _setup(redis, settings)
    s = settings
    other = Processor(store, s)
    await _full_batch(redis, s, processor, step("a", "in_progress"))
    await _full_batch(redis, s, processor, step("a", "completed", usage=(10, 5)))
    await _first_landed(redis, s)
    await produce(redis, s, step("a", "failed"))
    await other.process(await fetch(redis, s.source_stream, s.group, "other"))
    await produce(redis, s, step("a", "cancelled"))
    assert await processor.process(await fetch(redis, s.source_stream, s.group, s.consumer)) == {}
    assert await drained(redis, s.source_stream, s.group)
    rejected = [e for e in await read_json(redis, s.derived_stream) if e["step_id"] == "a"]
    assert [(e["type"], e["from_status"], e["to_status"]) for e in rejected] == [
        ("run_step.started", None, "in_progress"),
        ("run_step.failed", "in_progress", "failed"),
        ("run_step.transition_rejected", "failed", "completed"),
        ("run_step.transition_rejected", "failed", "cancelled"),
    ]
    # Only batch 2's commit conflicted: batch 3 was planned again before it was sent.
    assert processor.stats["conflicts"] == 1
    assert processor.stats["consumed"] == 3  # planned again, counted once


async def test_steps_a_replan_no_longer_predicts_are_read_afresh(
    redis: Redis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Another worker starts x and y while batch 1 (x's start) and batch 2 (x.failed, y's
    start) wait. Batch 1 conflicts, so batch 2 is planned again, and y's start is now a
    duplicate: batch 2 no longer predicts y. Batch 3 (y.completed) skipped reading y, as
    batch 2 was to write it; it must read y now, not fall back to one by one."""
    store, processor = await _setup(redis, settings)
    s = settings
    other = Processor(store, s)
    await _full_batch(redis, s, processor, step("x", "in_progress"))
    await produce(redis, s, step("x", "in_progress"))
    await other.process(await fetch(redis, s.source_stream, s.group, "other"))
    await _full_batch(redis, s, processor, step("x", "failed"), step("y", "in_progress"))
    await produce(redis, s, step("y", "in_progress"))
    await other.process(await fetch(redis, s.source_stream, s.group, "other"))
    await produce(redis, s, step("y", "completed", usage=(1, 1)))
    with caplog.at_level(logging.WARNING, logger="runsteps.process"):
        assert (
            await processor.process(await fetch(redis, s.source_stream, s.group, s.consumer)) == {}
        )
    assert "one by one" not in caplog.text
    assert await drained(redis, s.source_stream, s.group)
    assert _types(await read_json(redis, s.derived_stream)) == [
        ("x", "run_step.started"),
        ("y", "run_step.started"),
        ("x", "run_step.failed"),
        ("y", "run_step.completed"),
        ("y", "run.usage"),
    ]


async def test_redis_error_while_planning_in_the_background_leaves_the_batch_pending(
    redis: Redis,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full batch is planned after its handler returned: a Redis error then has no caller
    to go to. It is logged, the batch stays pending, and the processor goes on."""
    store, processor = await _setup(redis, settings)
    s = settings
    await produce(redis, s, step("a", "in_progress"))
    batch = await fetch(redis, s.source_stream, s.group, s.consumer)

    async def down(refs: object) -> None:
        raise RedisConnectionError("Redis is down")

    monkeypatch.setattr(store, "read", down)
    with caplog.at_level(logging.ERROR, logger="runsteps.process"):
        assert await processor.process(batch, more=True) == {}
        await processor.planned()
    assert "a batch of 1 stays pending: ConnectionError: Redis is down" in caplog.text
    assert await pending(redis, s.source_stream, s.group) == 1
    monkeypatch.undo()
    assert await processor.process(batch) == {}  # as the claim loop would hand it back
    assert await drained(redis, s.source_stream, s.group)
    assert _types(await read_json(redis, s.derived_stream)) == [("a", "run_step.started")]
