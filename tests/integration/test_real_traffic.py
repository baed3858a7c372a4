"""Real recorded streams (tests/data, sources in SOURCES.md) through a real worker.

Each whole stream is replayed as the SDKs deliver it: in order, then shuffled with every
event twice. Nothing is dead-lettered, every step and run gets one start before its end,
and the derived events of the shuffled replay are those of the ordered one.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from contracts.derived import DERIVED, STEP_END_TYPES
from contracts.responses_producer import ResponsesForwarder
from service.settings import Settings
from service.worker.app import Worker, build_worker
from tests.helpers import apart, read_json, scrape, settle, wait_until

DATA = Path(__file__).resolve().parents[1] / "data"
ASSISTANTS = sorted((DATA / "assistants").glob("*.jsonl"))
RESPONSES = sorted((DATA / "responses").glob("*.jsonl"))


def _assistants(path: Path) -> list[bytes]:
    return [line.encode() for line in path.read_text().splitlines() if line.strip()]


def _responses(path: Path) -> list[bytes]:
    forwarder = ResponsesForwarder()
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [forwarder.entry_data(line) for line in lines]


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    """A worker on this test's streams."""
    w = build_worker(settings)
    await w.start()
    yield w
    await w.stop()


async def _replay(redis: Redis, settings: Settings, entries: list[bytes]) -> list[dict[str, Any]]:
    pipe = redis.pipeline(transaction=False)
    for data in entries:
        pipe.xadd(settings.source_stream, {"data": data})
    await pipe.execute()
    await settle(redis, settings)
    assert await redis.xlen(settings.dlq_stream) == 0
    return await read_json(redis, settings.derived_stream)


def _check_one_start_before_end(events: list[dict[str, Any]]) -> None:
    by_subject: dict[tuple[str, str | None], list[str]] = {}
    for event in events:
        DERIVED.validate_python(event)
        if event["type"] in ("run.usage", "run.requires_action", "run_step.stalled"):
            continue
        by_subject.setdefault((event["run_id"], event.get("step_id")), []).append(event["type"])
    for subject, types in by_subject.items():
        starts = [t for t in types if t.endswith(".started")]
        assert starts == [types[0]], (subject, types)
        ends = [t for t in types[1:] if not t.endswith("transition_rejected")]
        assert len(ends) <= 1, (subject, types)
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids))


async def _in_order_then_shuffled(
    redis: Redis, settings: Settings, entries: list[bytes]
) -> list[dict[str, Any]]:
    events = await _replay(redis, settings, entries)
    _check_one_start_before_end(events)
    # Again on fresh streams: every event twice, shuffled. Same subjects, same ends.
    other = apart(settings, ".2")
    shuffled = entries * 2
    random.Random(3).shuffle(shuffled)
    w = build_worker(other)
    await w.start()
    try:
        again = await _replay(redis, other, shuffled)
        # The domain metrics count each step end published once, those a run's end closed
        # (ended_by_run: the shuffled order makes some) included.
        step_ends = [e for e in again if e["type"] in STEP_END_TYPES.values()]
        calls = sum(len(e["tools"]) for e in step_ends)
        timed = sum(e["duration_s"] is not None for e in step_ends)

        async def counted() -> bool:
            observed = sum(sum(s.counts) for s in w.telemetry.step_seconds.series.values())
            return (sum(w.telemetry.tool_calls.values()), observed) == (calls, timed)

        await wait_until(counted, what="every step end and tool call in the domain metrics")
    finally:
        await w.stop()
    _check_one_start_before_end(again)

    def ends(es: list[dict[str, Any]]) -> Counter[tuple[str, str | None, str]]:
        # A step still open when its run's end arrives takes the run's end (ended_by_run),
        # so its status depends on the order: only that it ended is compared.
        return Counter(
            (e["run_id"], e.get("step_id"), "run_step.ended" if e.get("ended_by_run")
             or by_run.get((e["run_id"], e.get("step_id"))) else e["type"])
            for e in es
            if e["type"].endswith((".completed", ".failed", ".cancelled", ".expired",
                                   ".incomplete")) or e["type"].endswith(".started")
        )  # fmt: skip

    by_run = {(e["run_id"], e.get("step_id")): True for e in events + again
              if e.get("ended_by_run")}  # fmt: skip

    if not any(e["type"].endswith("transition_rejected") for e in events + again):
        assert ends(again) == ends(events)
    return events


@pytest.mark.parametrize("path", ASSISTANTS, ids=lambda p: p.stem)
async def test_recorded_assistants_stream(
    path: Path, worker: Worker, redis: Redis, settings: Settings
) -> None:
    """A recorded Assistants stream: nothing dead-lettered, one start before each end."""
    entries = _assistants(path)
    events = await _in_order_then_shuffled(redis, settings, entries)
    runs = {json.loads(e)["data"]["id"] for e in entries if b'"event":"thread.run.' in e
            and b'"event":"thread.run.step' not in e}  # fmt: skip
    started = {e["run_id"] for e in events if e["type"] == "run.started"}
    assert runs <= started
    assert sum(worker.telemetry.ignored.values()) + len(events) > 0


@pytest.mark.parametrize("path", RESPONSES, ids=lambda p: p.stem)
async def test_recorded_responses_stream(
    path: Path, worker: Worker, redis: Redis, settings: Settings
) -> None:
    """A recorded Responses stream: one run per response, items as steps, usage as reported."""
    entries = _responses(path)
    events = await _in_order_then_shuffled(redis, settings, entries)
    assert all(e["source"] == "responses" for e in events)
    finals = [
        json.loads(e)["response"]
        for e in entries
        if json.loads(e).get("type") in ("response.completed", "response.failed",
                                         "response.incomplete", "response.cancelled")
    ]  # fmt: skip
    for final in finals:
        ended = [e for e in events if e["type"] == f"run.{final['status']}"]
        assert [e["run_id"] for e in ended] == [final["id"]]
        items = {e["step_id"] for e in events if e["type"] == "run_step.started"}
        assert {item["id"] for item in final["output"]} <= items
        if final.get("usage"):
            [usage] = [e for e in events if e["type"] == "run.usage"]
            assert usage["total_tokens"] == final["usage"]["total_tokens"]
            assert ended[0]["usage"]["total_tokens"] == final["usage"]["total_tokens"]


async def test_recorded_azure_cancel_and_service_answered_wait(
    worker: Worker, redis: Redis, settings: Settings
) -> None:
    """Azure's polled runs: a cancel ends the run as cancelled (from cancelling, 1 s after it
    was created, with its zero usage); a wait on an azure_function call that the service
    answers itself publishes run.requires_action once, then the run completes."""
    entries = _assistants(DATA / "assistants" / "azure-agents-python_bare_cancelled_run.jsonl")
    entries += _assistants(
        DATA / "assistants" / "azure-agents-python_bare_azure_function_polled_runs.jsonl"
    )
    events = await _replay(redis, settings, entries)
    by_run: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_run.setdefault(event["run_id"], []).append(event)
    cancelled = by_run["run_dy4ieGXj8pq9AuE799FP02Mc"]
    assert [e["type"] for e in cancelled] == ["run.started", "run.cancelled"]
    assert (cancelled[1]["from_status"], cancelled[1]["occurred_at"]) == ("cancelling", 1736380785)
    assert cancelled[1]["duration_s"] == 1
    assert cancelled[1]["usage"]["total_tokens"] == 0
    answered = by_run["run_cwG7XmkWKizKGlVJk2c1QFS2"]
    assert [e["type"] for e in answered] == ["run.started", "run.requires_action", "run.completed"]
    assert answered[1]["tool_call_ids"] == ["call_mzRYdtmDqSFqZb1HAvUztB8b"]
    assert (answered[2]["from_status"], answered[2]["occurred_at"]) == ("in_progress", 1745383397)


async def test_recorded_openai_incomplete_run_under_completed_event(
    worker: Worker, redis: Redis, settings: Settings
) -> None:
    """OpenAI streamed `thread.run.completed` carrying an `incomplete` run (max_prompt_tokens):
    the run ends as run.incomplete, by its own status, nothing is dead-lettered, and the
    disagreement is counted in runsteps_status_mismatches_total."""
    entries = _assistants(DATA / "assistants" / "ruby-openai_streamed_incomplete_run.jsonl")
    events = await _replay(redis, settings, entries)  # asserts an empty DLQ
    run = [e for e in events if e["type"].startswith("run.") and e["type"] != "run.usage"]
    assert [e["type"] for e in run] == ["run.started", "run.incomplete"]
    ended = run[1]
    assert ended["incomplete_details"] == {"reason": "max_prompt_tokens"}
    assert (ended["from_status"], ended["occurred_at"], ended["duration_s"]) == (
        "in_progress",
        1714433732,
        4,
    )
    assert ended["usage"]["total_tokens"] == 43
    steps = [e["type"] for e in events if e["type"].startswith("run_step.")]
    assert steps == ["run_step.started", "run_step.completed"]
    assert await scrape(worker, "runsteps_status_mismatches_total") == {
        ("thread.run.completed", "incomplete"): 1
    }
    assert set((await scrape(worker, "runsteps_dlq_entries_total")).values()) == {0}
