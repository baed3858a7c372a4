"""The runsteps Grafana dashboard, built with grafanalib: `python deploy/grafana/dashboard.py`.

Writes runsteps.json beside this file (import it in Grafana, or provision it). The committed
JSON is what this script writes (tests/ops/test_alerts.py checks that), and every metric its
queries name is one a worker's /metrics exposes. The gauges come from Redis and every worker
reports the same figures: max by (stream), never sum.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from grafanalib._gen import DashboardEncoder
from grafanalib.core import (
    Dashboard,
    DataSourceInput,
    GridPos,
    RowPanel,
    Stat,
    Target,
    Templating,
    TimeSeries,
)

OUT = Path(__file__).with_name("runsteps.json")
DS = "${DS_PROMETHEUS}"
RATE = "[$__rate_interval]"
HOUR = "[1h]"


def series(
    title: str, exprs: dict[str, str], pos: tuple[int, int, int, int], unit: str = "short"
) -> TimeSeries:
    """A time series panel, one query per legend format."""
    x, y, w, h = pos
    return TimeSeries(
        title=title,
        dataSource=DS,
        targets=[
            Target(expr=expr, legendFormat=legend, refId=chr(ord("A") + i))
            for i, (legend, expr) in enumerate(exprs.items())
        ],
        gridPos=GridPos(h=h, w=w, x=x, y=y),
        unit=unit,
    )


def row(title: str, y: int) -> RowPanel:
    """A row heading the panels below it (not collapsed: they stay on the top level)."""
    return RowPanel(title=title, gridPos=GridPos(h=1, w=24, x=0, y=y))


FAILED_RATIO = (
    f'sum by (tool) (rate(runsteps_tool_calls_ended_total{{status="failed"}}{RATE}))'
    f" / sum by (tool) (rate(runsteps_tool_calls_ended_total{RATE}))"
)


def agents(y: int) -> list[Any]:
    """Two rows on what the agents did: steps and tool calls; runs, tokens, cost, budgets."""
    return [
        row("Agents: steps and tool calls", y),
        series(
            "Step duration p95 by tool type",
            {
                "{{tool_type}}": "histogram_quantile(0.95, sum by (le, tool_type) "
                f"(rate(runsteps_step_duration_seconds_bucket{RATE})))"
            },
            (0, y + 1, 12, 8),
            unit="s",
        ),
        series(
            "Steps ended /s by source and step type",
            {
                "{{source}} {{step_type}}": "sum by (source, step_type) "
                f"(rate(runsteps_step_duration_seconds_count{RATE}))"
            },
            (12, y + 1, 12, 8),
            unit="ops",
        ),
        series(
            "Tool calls ended /s by tool and status",
            {
                "{{tool}} {{status}}": "sum by (tool, status) "
                f"(rate(runsteps_tool_calls_ended_total{RATE}))"
            },
            (0, y + 9, 12, 8),
            unit="ops",
        ),
        series(
            "Failed share of each tool's calls",
            {"{{tool}}": FAILED_RATIO},
            (12, y + 9, 12, 8),
            unit="percentunit",
        ),
        row("Agents: runs, tokens, cost and budgets", y + 17),
        series(
            "Runs ended /s by source and status",
            {
                "{{source}} {{status}}": "sum by (source, status) "
                f"(rate(runsteps_runs_ended_total{RATE}))"
            },
            (0, y + 18, 12, 8),
            unit="ops",
        ),
        series(
            "Runs ended /s by model",
            {"{{model}}": f"sum by (model) (rate(runsteps_runs_ended_total{RATE}))"},
            (12, y + 18, 12, 8),
            unit="ops",
        ),
        series(
            "Tokens /s by model and kind (cached_input is part of input, reasoning of output)",
            {"{{model}} {{kind}}": f"sum by (model, kind) (rate(runsteps_tokens_total{RATE}))"},
            (0, y + 26, 12, 8),
        ),
        series(
            "Cost per hour by model",
            {"{{model}}": f"sum by (model) (increase(runsteps_cost_usd_total{HOUR}))"},
            (12, y + 26, 12, 8),
            unit="currencyUSD",
        ),
        series(
            "Budgets exceeded (per hour) by limit",
            {"{{limit}}": f"sum by (limit) (increase(runsteps_budget_exceeded_total{HOUR}))"},
            (0, y + 34, 12, 8),
        ),
        series(
            "Events without a price (per hour) by model",
            {"{{model}}": f"sum by (model) (increase(runsteps_unpriced_total{HOUR}))"},
            (12, y + 34, 12, 8),
        ),
    ]


def build() -> Dashboard:
    """The dashboard: backlog per partition, throughput, DLQ, latency, stalls, Redis; then
    what the agents did: steps, tool calls, runs, tokens, cost, budgets."""
    return Dashboard(
        title="runsteps",
        uid="runsteps",
        description="runsteps workers: consumer-group backlog, derived events, DLQ, batches",
        tags=["runsteps"],
        timezone="utc",
        inputs=[
            DataSourceInput(
                name="DS_PROMETHEUS",
                label="Prometheus",
                pluginId="prometheus",
                pluginName="Prometheus",
            )
        ],
        templating=Templating(list=[]),
        panels=[
            Stat(
                title="Redis up (min over workers)",
                dataSource=DS,
                targets=[Target(expr="min(runsteps_redis_up)", refId="A")],
                gridPos=GridPos(h=4, w=6, x=0, y=0),
                reduceCalc="last",
            ),
            Stat(
                title="Stalled steps (range)",
                dataSource=DS,
                targets=[
                    Target(
                        expr='sum(increase(runsteps_derived_events_total{type="run_step.stalled"}'
                        "[$__range]))",
                        refId="A",
                    )
                ],
                gridPos=GridPos(h=4, w=6, x=6, y=0),
                reduceCalc="last",
            ),
            series(
                "Consumed entries /s",
                {"consumed": f"sum(rate(runsteps_events_consumed_total{RATE}))"},
                (12, 0, 12, 4),
                unit="ops",
            ),
            series(
                "Lag per partition stream",
                {"{{stream}}": "max by (stream) (runsteps_consumer_group_lag)"},
                (0, 4, 12, 8),
            ),
            series(
                "Pending per partition stream",
                {"{{stream}}": "max by (stream) (runsteps_consumer_group_pending)"},
                (12, 4, 12, 8),
            ),
            series(
                "Derived events /s by type",
                {"{{type}}": f"sum by (type) (rate(runsteps_derived_events_total{RATE}))"},
                (0, 12, 12, 8),
                unit="ops",
            ),
            series(
                "DLQ entries /s by kind",
                {"{{kind}}": f"sum by (kind) (rate(runsteps_dlq_entries_total{RATE}))"},
                (12, 12, 12, 8),
                unit="ops",
            ),
            series(
                "Batch processing time",
                {
                    f"p{q}": f"histogram_quantile(0.{q}, sum by (le) "
                    f"(rate(runsteps_batch_processing_seconds_bucket{RATE})))"
                    for q in (50, 99)
                },
                (0, 20, 12, 8),
                unit="s",
            ),
            series(
                "Error events and processing failures /s",
                {
                    "errors": f"sum(rate(runsteps_error_events_total{RATE}))",
                    "failures": f"sum(rate(runsteps_processing_failures_total{RATE}))",
                },
                (12, 20, 12, 8),
                unit="ops",
            ),
            series(
                "Housekeeping (per hour)",
                {
                    "groups recreated": f"sum(increase(runsteps_groups_recreated_total{HOUR}))",
                    "dead consumers removed": "sum(increase("
                    f"runsteps_consumers_removed_total{HOUR}))",
                    "stall index pruned": f"sum(increase(runsteps_stall_index_pruned_total{HOUR}))",
                },
                (0, 28, 12, 8),
            ),
            series(
                "Source entries trimmed /s",
                {"trimmed": f"sum(rate(runsteps_source_trimmed_total{RATE}))"},
                (12, 28, 12, 8),
                unit="ops",
            ),
            *agents(36),
        ],
    ).auto_panel_ids()


def render() -> str:
    """The dashboard as Grafana's JSON, stable (sorted keys), newline-terminated."""
    data: Any = json.loads(json.dumps(build().to_json_data(), cls=DashboardEncoder))
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
