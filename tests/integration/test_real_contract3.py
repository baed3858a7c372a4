"""Contract 3 on real recorded traffic: the model, the tools and the cost each derived event
carries are those the recorded payloads hold, read here without the service's own code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from service.core.prices import TokenUsage, bundled_prices
from service.settings import Settings
from service.worker.app import Worker
from tests.integration.test_real_traffic import (
    ASSISTANTS,
    DATA,
    RESPONSES,
    _assistants,
    _replay,
    _responses,
)

DATA_ASSISTANTS, DATA_RESPONSES = DATA / "assistants", DATA / "responses"

RUN_TYPES = ("run.started", "run.requires_action", "run.completed", "run.failed",
             "run.cancelled", "run.expired", "run.incomplete", "run.usage")  # fmt: skip


Calls = frozenset[tuple[str, str, Any]]


def _assistants_truth(entries: list[bytes]) -> tuple[dict[str, set[str]], dict[str, list[Calls]]]:
    """The runs' models, and each step's (id, type, name) tool calls as each of its payloads
    lists them, straight from the JSON."""
    models: dict[str, set[str]] = {}
    tools: dict[str, list[Calls]] = {}
    for raw in entries:
        value = json.loads(raw)
        obj = value.get("data", value)
        if not isinstance(obj, dict):
            continue
        if obj.get("object") == "thread.run" and obj.get("model"):
            models.setdefault(obj["id"], set()).add(obj["model"])
        details = obj.get("step_details") or {}
        if obj.get("object") == "thread.run.step":
            calls = frozenset(
                (
                    call["id"],
                    call["type"],
                    (call.get("function") or {}).get("name", call.get("name")),
                )
                for call in details.get("tool_calls") or []
            )
            tools.setdefault(obj["id"], []).append(calls)
    return models, tools


def _responses_truth(entries: list[bytes]) -> tuple[dict[str, set[str]], dict[str, list[Calls]]]:
    models: dict[str, set[str]] = {}
    tools: dict[str, list[Calls]] = {}
    for raw in entries:
        value = json.loads(raw)
        response = value.get("response")
        items = [value["item"]] if isinstance(value.get("item"), dict) else []
        if isinstance(response, dict):
            if response.get("model"):
                models.setdefault(response["id"], set()).add(response["model"])
            items += response.get("output") or []
        for item in items:
            calls: Calls = frozenset()
            if item.get("type", "").endswith("_call"):
                kind = item["type"].removesuffix("_call").removesuffix("_tool")
                calls = frozenset({(item.get("call_id") or item["id"], kind, item.get("name"))})
            tools.setdefault(item["id"], []).append(calls)
    return models, tools


def _check(
    events: list[dict[str, Any]], models: dict[str, set[str]], tools: dict[str, list[Calls]]
) -> None:
    """Each step event lists the calls one of its step's payloads lists, each run event
    names a model its run's payloads name, and a step whose first payload lists calls
    shows them."""
    for event in events:
        if event["type"].startswith("run_step."):
            calls = frozenset((t["id"], t["type"], t["name"]) for t in event["tools"])
            assert calls in tools[event["step_id"]], event
        if event["type"] in RUN_TYPES and event["run_id"] in models:
            assert event["model"] in models[event["run_id"]], event
    for step_id, each in tools.items():
        if each[0]:
            assert any(e.get("step_id") == step_id and e.get("tools") for e in events), step_id


@pytest.mark.parametrize("path", ASSISTANTS, ids=lambda p: p.stem)
async def test_assistants_events_carry_model_and_tools(
    path: Path, worker: Worker, redis: Redis, settings: Settings
) -> None:
    """Every run event names the run's recorded model; step events list the recorded calls."""
    entries = _assistants(path)
    _check(await _replay(redis, settings, entries), *_assistants_truth(entries))


@pytest.mark.parametrize("path", RESPONSES, ids=lambda p: p.stem)
async def test_responses_events_carry_model_and_tools(
    path: Path, worker: Worker, redis: Redis, settings: Settings
) -> None:
    """Every response event names its model; item events list their recorded call."""
    entries = _responses(path)
    _check(await _replay(redis, settings, entries), *_responses_truth(entries))


def _usage(raw: dict[str, Any]) -> TokenUsage:
    inp = raw.get("prompt_tokens", raw.get("input_tokens", 0))
    out = raw.get("completion_tokens", raw.get("output_tokens", 0))
    cached = raw.get("prompt_token_details") or raw.get("input_tokens_details") or {}
    reasoning = raw.get("completion_tokens_details") or raw.get("output_tokens_details") or {}
    return TokenUsage(
        inp, out, cached.get("cached_tokens", 0), reasoning.get("reasoning_tokens", 0)
    )


async def test_each_recorded_run_with_usage_gets_the_librarys_cost(
    worker: Worker, redis: Redis, settings: Settings
) -> None:
    """A run's end carries what genai-prices computes for its recorded usage and model on
    the day it was created; run.usage of the run's own totals the same."""
    entries = [e for path in ASSISTANTS for e in _assistants(path)]
    entries += [e for path in RESPONSES for e in _responses(path)]
    events = await _replay(redis, settings, entries)
    prices = bundled_prices()
    priced = 0
    for end in (e for e in events if e["type"].startswith("run.") and "steps" in e):
        created = next(e["occurred_at"] for e in events
                       if e["type"] == "run.started" and e["run_id"] == end["run_id"])  # fmt: skip
        expected = None
        if end["usage"] is not None:
            expected = prices.cost(end["model"], None, created, _usage(end["usage"]))
        if expected is None:
            assert (end["cost_usd"], end["priced_model"]) == (None, None), end
            continue
        priced += 1
        assert (end["cost_usd"], end["priced_model"]) == (
            expected.cost_usd, expected.priced_model), end  # fmt: skip
    assert priced >= 10


async def test_the_domain_metrics_count_recorded_runs_and_tool_calls(
    worker: Worker, redis: Redis, settings: Settings
) -> None:
    """Runs ended by model, tool calls by name, step durations and costs are counted from
    what the worker committed, on recorded traffic of both dialects."""
    entries = _assistants(DATA_ASSISTANTS / "openai-dotnet_streaming_tool_call.jsonl")
    entries += _responses(DATA_RESPONSES / "function_call.jsonl")
    await _replay(redis, settings, entries)
    telemetry = worker.telemetry
    ran = {(source, status) for source, status, _ in telemetry.runs_ended}
    assert ("responses", "completed") in ran
    assert any(model != "none" for _, _, model in telemetry.runs_ended)
    tools = {(kind, name) for kind, name, _ in telemetry.tool_calls}
    assert any(kind == "function" for kind, _ in tools)
    assert sum(sum(s.counts) for s in telemetry.step_seconds.series.values()) > 0
    assert sum(telemetry.cost_nano_usd.values()) > 0
