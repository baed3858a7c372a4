"""The query API on real recorded traffic: after a recorded stream, what it answers of each
run and step is what the derived events said last (contract 3, item 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from service.settings import Settings
from service.storage.client import PartitionClient
from service.storage.reads import find_run, find_step
from service.worker.app import build_worker
from tests.integration.test_real_traffic import (
    ASSISTANTS,
    RESPONSES,
    _assistants,
    _replay,
    _responses,
)

RECORDED = [*ASSISTANTS, *RESPONSES]


def _entries(path: Path) -> list[bytes]:
    return _assistants(path) if path.parent.name == "assistants" else _responses(path)


def _last_said(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per run: the tools each of its steps' last event listed, the model its last run event
    named, the cost its last run.usage reported, the budgets it was reported past."""
    runs: dict[str, dict[str, Any]] = {}
    for event in events:
        run = runs.setdefault(
            event["run_id"], {"tools": {}, "model": None, "usage": None, "budgets": []}
        )
        kind = event["type"]
        if kind.startswith("run_step."):
            run["tools"][event["step_id"]] = event["tools"]
        if kind == "run.usage":
            run["usage"] = event
        elif kind == "run.budget_exceeded":
            run["budgets"].append(event["limit"])
        if kind.startswith("run.") and event.get("model") is not None:
            run["model"] = event["model"]
    return runs


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: f"{p.parent.name}-{p.stem}")
async def test_the_query_api_answers_what_the_events_said_last(
    path: Path, redis: Redis, settings: Settings
) -> None:
    """Each step's tools (Assistants streams create a tool step with no calls: they are known
    from its end), each run's model, the cost of its totals and the budgets it passed."""
    own = settings.model_copy(update={"budget_tokens": 1, "budget_steps": 1})
    worker = build_worker(own)
    await worker.start()
    try:
        events = await _replay(redis, own, _entries(path))
    finally:
        await worker.stop()
    conn = PartitionClient(redis, own)
    for run_id, said in _last_said(events).items():
        run = await find_run([conn], run_id, limit=1000)
        assert run is not None, run_id
        assert run.model == said["model"], run_id
        assert sorted(run.budgets_exceeded) == sorted(said["budgets"]), run_id
        usage = said["usage"]
        if usage is not None:
            assert (run.cost_usd, run.priced_model) == (
                usage["cost_usd"], usage["priced_model"]), run_id  # fmt: skip
        listed = {s.step_id: [t.model_dump() for t in s.tools] for s in run.steps}
        for step_id, tools in said["tools"].items():
            assert listed[step_id] == tools, (run_id, step_id)
            step = await find_step([conn], run_id, step_id)
            assert step is not None
            assert [t.model_dump() for t in step.tools] == tools, (run_id, step_id)
