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


def build() -> Dashboard:
    """The dashboard: backlog per partition, throughput, DLQ, latency, stalls, Redis."""
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
        ],
    ).auto_panel_ids()


def render() -> str:
    """The dashboard as Grafana's JSON, stable (sorted keys), newline-terminated."""
    data: Any = json.loads(json.dumps(build().to_json_data(), cls=DashboardEncoder))
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
