"""The worker's HTTP port, served by uvicorn in this process against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from redis.asyncio import Redis

from contracts.partitioning import partition_for
from service.dev.redis_server import LocalRedis
from service.dev.sample import T0, step
from service.edge.http import build_app
from service.edge.metrics import Metrics
from service.settings import Settings
from service.storage.keys import partitions
from service.storage.reads import MAX_PAGE
from service.storage.store import Store
from service.worker.app import Worker, build_worker
from tests.helpers import (
    PAGE_SLACK,
    answers,
    drained,
    fetch,
    produce,
    request,
    seed_big_run,
    settle,
    wait_until,
)

DELTA = {
    "event": "thread.run.step.delta",
    "data": {"id": "s1", "object": "thread.run.step.delta", "delta": {"step_details": None}},
}


async def get_json(base: str, path: str) -> tuple[int, Any]:
    """GET `path` and parse the JSON body."""
    status, headers, body = await request(base, path)
    assert headers["content-type"] == "application/json"
    return status, json.loads(body)


async def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics, parsed: (sample name, sorted labels) -> value."""
    status, headers, body = await request(base, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


@contextlib.asynccontextmanager
async def serving(worker: Worker) -> AsyncIterator[str]:
    """The deployable app of `worker` under uvicorn on a free port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(build_app(worker), log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        if task.done():
            task.result()  # surfaces a start-up failure instead of a timeout
        return server.started

    try:
        await wait_until(started, what="uvicorn started")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)
        sock.close()


@pytest.fixture
async def base(settings: Settings) -> AsyncIterator[str]:
    """A running worker app for this test's streams; its base URL."""
    async with serving(build_worker(settings)) as url:
        yield url


async def test_probes_answer_when_running(base: str) -> None:
    """/healthz is 200 and /readyz is 200 with every check true once the worker runs."""
    status, body = await get_json(base, "/healthz")
    assert (status, body) == (200, {"status": "alive"})

    await wait_until(answers(base, "/readyz", 200), what="/readyz 200")
    status, body = await get_json(base, "/readyz")
    assert body == {
        "ready": True,
        "checks": {"redis": True, "consuming": True, "recovery_loop": True},
    }


async def test_metrics_count_what_was_processed(
    base: str, redis: Redis, settings: Settings
) -> None:
    """/metrics counts consumed entries, derived events by type, DLQ entries by kind, batches."""
    await produce(
        redis,
        settings,
        step("s1", "in_progress", run_id="r1"),
        step("s1", "completed", run_id="r1", ended_at=T0 + 3, usage=(2, 3)),
        step("s2", "completed", run_id="r1", ended_at=T0 + 4),
        step("s2", "failed", run_id="r1", ended_at=T0 + 5),
        DELTA,
        b"{nope",
    )
    await settle(redis, settings)
    m = await scrape(base)

    def value(name: str, **labels: str) -> float:
        return m[(name, tuple(sorted(labels.items())))]

    assert value("runsteps_events_consumed_total") == 6
    assert value("runsteps_events_ignored_total", event="thread.run.step.delta") == 1
    assert (
        value("runsteps_derived_events_total", type="run_step.started") == 2
    )  # s2 first seen completed: its start is implied
    assert value("runsteps_derived_events_total", type="run_step.completed") == 2
    assert value("runsteps_derived_events_total", type="run_step.transition_rejected") == 1
    assert value("runsteps_derived_events_total", type="run.usage") == 1
    assert value("runsteps_derived_events_total", type="run_step.stalled") == 0
    assert value("runsteps_transitions_rejected_total") == 1
    assert value("runsteps_decisions_total", outcome="duplicate") == 0
    assert value("runsteps_dlq_entries_total", kind="invalid_json") == 1
    assert value("runsteps_dlq_entries_total", kind="invalid_payload") == 0
    assert value("runsteps_batch_size_sum") == 6
    assert value("runsteps_batch_processing_seconds_count") == value("runsteps_batch_size_count")
    assert value("runsteps_redis_up") == 1
    assert value("runsteps_consumer_group_lag", stream=settings.source_stream) == 0
    assert value("runsteps_consumer_group_pending", stream=settings.source_stream) == 0
    lengths = {
        role: value("runsteps_stream_length", stream=name, role=role)
        for role, name in (
            ("source", settings.source_stream),
            ("derived", settings.derived_stream),
            ("dlq", settings.dlq_stream),
        )
    }
    assert lengths == {
        "source": 6,
        "derived": await redis.xlen(settings.derived_stream),
        "dlq": 1,
    }


async def test_group_gauges_show_lag_then_pending(redis: Redis, settings: Settings) -> None:
    """Lag counts entries not yet delivered to the group; pending those delivered, not acked."""
    worker = build_worker(settings)
    metrics = Metrics(worker.telemetry, lambda: worker.redis, worker.parts, settings.group)
    await worker.on_startup()  # connected, group created; the subscriber does not consume
    try:
        await produce(redis, settings, step("g1", "in_progress"), step("g2", "in_progress"))

        async def gauges() -> tuple[float, float]:
            families = text_string_to_metric_families((await metrics.render()).decode())
            found = {s.name: s.value for f in families for s in f.samples}
            return found["runsteps_consumer_group_lag"], found["runsteps_consumer_group_pending"]

        assert await gauges() == (2, 0)
        assert len(await fetch(redis, settings.source_stream, settings.group, "other")) == 2
        assert await gauges() == (0, 2)
    finally:
        await worker.after_shutdown()


async def test_queries_return_state_or_404(base: str, redis: Redis, settings: Settings) -> None:
    """/runs/<id> and /runs/<id>/steps/<id> return state and usage; unknown ids: 404 JSON."""
    await produce(
        redis,
        settings,
        step("q1", "in_progress", run_id="rq"),
        step("q1", "completed", run_id="rq", ended_at=T0 + 2, usage=(10, 5)),
        step("q2", "completed", run_id="rq", ended_at=T0 + 3, usage=(1, 1)),
    )
    await settle(redis, settings)

    status, body = await get_json(base, "/runs/rq/steps/q1")
    assert status == 200
    assert (body["step_id"], body["status"], body["run_id"]) == ("q1", "completed", "rq")
    status, body = await get_json(base, "/runs/rq")
    assert status == 200
    assert body["usage"]["total_tokens"] == 17
    assert sorted(s["step_id"] for s in body["steps"]) == ["q1", "q2"]
    assert body["steps_in_progress"] == 0

    assert await get_json(base, "/runs/rq/steps/unknown") == (
        404,
        {"error": "step not tracked", "id": "rq/steps/unknown"},
    )
    assert (await get_json(base, "/runs/unknown"))[0] == 404
    assert (await get_json(base, "/runs/"))[0] == 404
    assert (await request(base, "/steps/q1"))[0] == 404  # a step is found under its run
    assert (await request(base, "/runs/rq/steps/q1", method="DELETE"))[0] == 405


TOKEN = "s3cret-token-of-the-query-api"


@pytest.mark.parametrize("source", ["RUNSTEPS_HTTP_TOKEN", "RUNSTEPS_HTTP_TOKEN_FILE"])
async def test_query_api_answers_only_the_bearer_of_the_token(
    redis: Redis, settings: Settings, tmp_path: Path, source: str
) -> None:
    """With a token set (directly or in a file, as a mounted Secret), /runs/... answers 401
    with a Bearer challenge to a request without it or with another, the state to one with
    it; probes and /metrics answer without it."""
    if source == "RUNSTEPS_HTTP_TOKEN":
        s = settings.model_copy(update={"http_token": SecretStr(TOKEN)})
    else:
        (tmp_path / "token").write_text(TOKEN + "\n")  # as `kubectl create secret` may write it
        s = settings.model_copy(update={"http_token_file": str(tmp_path / "token")})
    await produce(redis, s, step("s1", "in_progress", run_id="r1"))
    async with serving(build_worker(s)) as base:
        await settle(redis, s)
        path = "/runs/r1/steps/s1"
        status, headers, _ = await request(base, path)
        assert (status, headers["www-authenticate"]) == (401, 'Bearer realm="runsteps"')
        for wrong in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", "Bearer"):
            status, headers, _ = await request(base, path, headers={"Authorization": wrong})
            assert status == 401, wrong
            assert headers["www-authenticate"].startswith("Bearer"), wrong
        for good in (f"Bearer {TOKEN}", f"bearer  {TOKEN}"):
            status, _, body = await request(base, path, headers={"Authorization": good})
            assert (status, json.loads(body)["status"]) == (200, "in_progress")
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert (await request(base, "/runs/unknown", headers=bearer))[0] == 404
        assert (await request(base, "/runs/r1", method="POST"))[0] == 401
        for open_path in ("/healthz", "/metrics", "/readyz"):
            await wait_until(answers(base, open_path, 200), what=f"{open_path} 200, no token")


async def test_ids_with_spaces_and_unicode_are_queryable(
    base: str, redis: Redis, settings: Settings
) -> None:
    """Any id the decoder accepts can be asked for, URL-encoded (only '/' is refused)."""
    run_id, step_id = "run ü 1", "step %é 1"
    await produce(redis, settings, step(step_id, "in_progress", run_id=run_id))
    await settle(redis, settings)
    status, body = await get_json(base, f"/runs/{quote(run_id)}/steps/{quote(step_id)}")
    assert (status, body["step_id"], body["run_id"]) == (200, step_id, run_id)
    assert (await get_json(base, f"/runs/{quote(run_id)}"))[1]["steps"][0]["step_id"] == step_id


async def test_huge_run_answers_one_bounded_page(
    base: str, redis: Redis, settings: Settings
) -> None:
    """/runs/<id> of a 100,000-step run answers one page: about `limit` steps (at most 1000,
    whatever is asked) and a cursor to the next, which holds other steps."""
    await seed_big_run(redis, partitions(settings)[0].keys.run("run_big"), 100_000)
    status, first = await get_json(base, "/runs/run_big?limit=100000")
    assert status == 200
    assert MAX_PAGE <= len(first["steps"]) < MAX_PAGE + PAGE_SLACK
    status, second = await get_json(base, f"/runs/run_big?cursor={first['next_cursor']}")
    assert status == 200
    assert 100 <= len(second["steps"]) < 100 + PAGE_SLACK  # the default limit
    assert second["next_cursor"] not in (None, first["next_cursor"])
    assert not {s["step_id"] for s in first["steps"]} & {s["step_id"] for s in second["steps"]}


async def test_asyncapi_document_names_the_three_streams(base: str, settings: Settings) -> None:
    """/docs/asyncapi.json: the worker receives from the source, sends to derived and DLQ."""
    status, doc = await get_json(base, "/docs/asyncapi.json")
    assert status == 200
    channels = doc["channels"]
    actions = {
        channels[op["channel"]["$ref"].rsplit("/", 1)[-1]]["address"]: op["action"]
        for op in doc["operations"].values()
    }
    assert actions == {
        settings.source_stream: "receive",
        settings.derived_stream: "send",
        settings.dlq_stream: "send",
    }
    schemas = doc["components"]["schemas"]
    assert {"StepStarted", "StepFinished", "RunUsage", "DeadLetterError"} <= schemas.keys()
    assert {"data", "error", "source_id", "source_stream"} <= set(
        schemas["DeadLetterEntry"]["properties"]
    )
    # FastStream's own page and its "try it out" publisher are not served.
    assert (await request(base, "/docs/asyncapi/try", method="POST"))[0] == 404


async def test_readyz_503_and_metrics_still_answer_when_redis_is_down(
    settings: Settings,
) -> None:
    """With Redis gone /readyz is 503 naming the failed check; /metrics answers, redis_up 0."""
    with LocalRedis() as server:
        own = settings.model_copy(update={"redis_url": server.url, "shutdown_grace_s": 2.0})
        async with serving(build_worker(own)) as url:
            await wait_until(answers(url, "/readyz", 200), what="/readyz 200")
            server.kill()
            await wait_until(answers(url, "/readyz", 503), what="/readyz 503")
            _, body = await get_json(url, "/readyz")
            assert body["ready"] is False
            assert body["checks"]["redis"] is False
            m = await scrape(url)
            assert m[("runsteps_redis_up", ())] == 0
            assert not any(name == "runsteps_consumer_group_lag" for name, _ in m)


async def test_a_batch_retried_entry_by_entry_is_counted_once(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose commit trips a bug is applied again entry by entry: each entry is
    counted once, as consumed, ignored or dead-lettered, not once per attempt."""
    real_apply = Store.apply
    failed: list[int] = []

    async def buggy_once(self: Store, runs: Any, acks: Any, dead: Any) -> Any:
        if not failed and len(acks) + len(dead) + sum(map(len, runs.values())) > 1:
            failed.append(1)
            raise RuntimeError("a bug in this batch")
        return await real_apply(self, runs, acks, dead)

    monkeypatch.setattr(Store, "apply", buggy_once)
    await produce(redis, settings, step("s1", "in_progress", run_id="r1"), DELTA, b"{nope")
    async with serving(build_worker(settings)) as url:
        await settle(redis, settings)
        m = await scrape(url)
    assert failed == [1]
    assert m[("runsteps_events_consumed_total", ())] == 3
    assert m[("runsteps_events_ignored_total", (("event", "thread.run.step.delta"),))] == 1
    assert m[("runsteps_dlq_entries_total", (("kind", "invalid_json"),))] == 1
    assert m[("runsteps_derived_events_total", (("type", "run_step.started"),))] == 1


async def test_partitioned_worker_serves_every_partition(redis: Redis, settings: Settings) -> None:
    """With RUNSTEPS_PARTITIONS=2 queries find steps in any partition; metrics and docs list all."""
    own = settings.model_copy(update={"partitions": 2})
    parts = partitions(own)
    async with serving(build_worker(own)) as url:
        for run_id in ("run_a", "run_b", "run_c", "run_d"):
            part = parts[partition_for(run_id, 2)]
            await redis.xadd(
                part.source_stream,
                {"data": json.dumps(step(f"p_{run_id}", "in_progress", run_id=run_id))},
            )
        for part in parts:
            await wait_until(
                functools.partial(drained, redis, part.source_stream, own.group), what="drained"
            )
        for run_id in ("run_a", "run_b", "run_c", "run_d"):
            status, body = await get_json(url, f"/runs/{run_id}/steps/p_{run_id}")
            assert (status, body["status"]) == (200, "in_progress")
            assert (await get_json(url, f"/runs/{run_id}"))[0] == 200
        m = await scrape(url)
        lengths = {dict(labels)["stream"] for name, labels in m if name == "runsteps_stream_length"}
        every = {s for p in parts for s in (p.source_stream, p.derived_stream, p.dlq_stream)}
        assert lengths == every
        assert sum(v for (name, _), v in m.items() if name == "runsteps_events_consumed_total") == 4
        _, doc = await get_json(url, "/docs/asyncapi.json")
        assert {c["address"] for c in doc["channels"].values()} == every
