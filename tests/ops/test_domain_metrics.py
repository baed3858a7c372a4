"""The domain metrics on a worker's /metrics: steps, tool calls, runs, tokens, cost, budgets.

The commit path reports what it committed through the telemetry's typed methods; these
tests call them as it does and read the figures back from a served /metrics.
"""

from __future__ import annotations

from redis.asyncio import Redis

from service.core.prices import Prices, TokenUsage
from service.settings import Settings
from service.worker.app import build_worker
from service.worker.telemetry import BUDGET_LIMITS, MEMO_MAX, OTHER
from tests.ops.test_http import scrape, serving

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value, by name and labels."""
    return samples[(name, tuple(sorted(labels.items())))]


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    """Every value `label` takes on samples called `name`."""
    return {dict(labels)[label] for (n, labels) in samples if n == name}


async def test_steps_tools_runs_tokens_cost_and_budgets_are_exposed(
    redis: Redis, settings: Settings
) -> None:
    """Each telemetry call shows on /metrics with its labels; cost sums to the nano-dollar."""
    worker = build_worker(settings)
    t = worker.telemetry
    weather = ("call_1", "function", "get_weather")
    three = (weather, ("call_2", "code_interpreter", None), ("call_3", "function", "get_weather"))
    t.step_ended("assistants", "completed", "tool_calls", three, 3.0)
    t.step_ended("assistants", "failed", "tool_calls", (weather,), 0.2)
    t.step_ended("responses", "completed", "message", (), 40.0)
    t.step_ended("responses", "completed", "message", (), None)  # no end time: not observed
    # No end time either: its duration is not observed, its tool call is counted.
    t.step_ended("responses", "completed", "web_search_call", (("ws_1", "web_search", None),), None)
    usage = TokenUsage(
        input_tokens=1200, output_tokens=300, cached_input_tokens=200, reasoning_tokens=100
    )
    prices = Prices()
    priced = prices.cost("gpt-4o", None, 1.75e9, usage)
    assert priced is not None
    t.run_ended("assistants", "completed", "gpt-4o", usage, priced.cost_usd)
    t.run_ended("assistants", "completed", "gpt-4o", usage, priced.cost_usd)
    t.run_ended("responses", "failed", None, None, None)
    t.unpriced(None)
    t.unpriced("my-local-llama")
    t.budget_exceeded("usd")

    async with serving(worker) as base:
        m = await scrape(base)

    bucket = "runsteps_step_duration_seconds_bucket"
    fn = {"source": "assistants", "step_type": "tool_calls"}
    assert value(m, bucket, **fn, tool_type="function", le="0.5") == 1
    assert value(m, bucket, **fn, tool_type="code_interpreter+function", le="2.5") == 0
    assert value(m, bucket, **fn, tool_type="code_interpreter+function", le="5.0") == 1
    msg = {"source": "responses", "step_type": "message", "tool_type": "none"}
    assert value(m, bucket, **msg, le="30.0") == 0
    assert value(m, bucket, **msg, le="60.0") == 1
    assert value(m, bucket, **msg, le="+Inf") == 1
    assert value(m, "runsteps_step_duration_seconds_sum", **msg) == 40.0

    calls = "runsteps_tool_calls_ended_total"
    assert value(m, calls, type="function", tool="get_weather", status="completed") == 2
    assert value(m, calls, type="function", tool="get_weather", status="failed") == 1
    assert value(m, calls, type="web_search", tool="web_search", status="completed") == 1
    code = {"type": "code_interpreter", "tool": "code_interpreter", "status": "completed"}
    assert value(m, calls, **code) == 1
    assert label_values(m, "runsteps_step_duration_seconds_count", "step_type") == {
        "tool_calls", "message"
    }  # fmt: skip

    runs = "runsteps_runs_ended_total"
    assert value(m, runs, source="assistants", status="completed", model="gpt-4o") == 2
    assert value(m, runs, source="responses", status="failed", model="unknown") == 1
    tokens = {
        kind: value(m, "runsteps_tokens_total", model="gpt-4o", kind=kind)
        for kind in ("input", "output", "cached_input", "reasoning")
    }
    assert tokens == {"input": 2400, "output": 600, "cached_input": 400, "reasoning": 200}
    assert value(m, "runsteps_cost_usd_total", model="gpt-4o") == 2 * priced.nano_usd / 1e9
    assert label_values(m, "runsteps_cost_usd_total", "model") == {"gpt-4o"}

    assert {
        limit: value(m, "runsteps_budget_exceeded_total", limit=limit) for limit in BUDGET_LIMITS
    } == {"tokens": 0, "usd": 1, "steps": 0, "seconds": 0}
    assert value(m, "runsteps_unpriced_total", model="unknown") == 1
    assert value(m, "runsteps_unpriced_total", model="my-local-llama") == 1


async def test_a_flood_of_unique_names_stays_within_the_label_bound(
    redis: Redis, settings: Settings
) -> None:
    """Past RUNSTEPS_METRICS_MAX_LABELS distinct tools or models, the rest count as `other`;
    so it stays past the labels the counting path remembers (MEMO_MAX)."""
    worker = build_worker(settings.model_copy(update={"metrics_max_labels": 5}))
    t = worker.telemetry
    flood = MEMO_MAX + 1000
    for i in range(flood):
        call = (f"call_{i}", f"type_{i % 7}", f"tool_{i}")
        t.step_ended("responses", "completed", f"item_{i}", (call,), 1.0)
        t.run_ended("responses", "completed", f"model-{i}", TokenUsage(10, 1), 0.001)
        t.unpriced(f"model-{i}")

    async with serving(worker) as base:
        m = await scrape(base)

    for name, label in (
        ("runsteps_tool_calls_ended_total", "tool"),
        ("runsteps_tool_calls_ended_total", "type"),
        ("runsteps_runs_ended_total", "model"),
        ("runsteps_tokens_total", "model"),
        ("runsteps_cost_usd_total", "model"),
        ("runsteps_unpriced_total", "model"),
        ("runsteps_step_duration_seconds_count", "step_type"),
        ("runsteps_step_duration_seconds_count", "tool_type"),
    ):
        values = label_values(m, name, label)
        assert OTHER in values, (name, label)
        assert len(values) == 6, (name, label, sorted(values))  # 5 kept + other
    # Nothing is lost: every call is counted, under its name or under `other`.
    assert sum(n for (k, _), n in m.items() if k == "runsteps_tool_calls_ended_total") == flood
    assert sum(
        n for (k, _), n in m.items() if k == "runsteps_step_duration_seconds_count"
    ) == flood  # fmt: skip
    assert value(m, "runsteps_runs_ended_total", source="responses", status="completed",
                 model=OTHER) == flood - 5  # fmt: skip
    assert value(m, "runsteps_cost_usd_total", model=OTHER) == (flood - 5) / 1000
    assert value(m, "runsteps_unpriced_total", model="model-0") == 1  # the same 5 models kept
