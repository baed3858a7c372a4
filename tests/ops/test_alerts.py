"""The operators' alert rules and Grafana dashboard, against what a worker really exposes.

Offline: the PrometheusRule holds the rules file's groups, the dashboard JSON is what its
grafanalib script writes, and every metric either names is on a running worker's /metrics.
With Debian's prometheus (marker `prometheus`, `make ops-test`): promtool's unit tests of the
rules, and a real Prometheus scraping a worker sees a DLQ burst fire the DLQ alert.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from service.core.prices import TokenUsage
from service.dev.redis_server import free_port
from service.dev.sample import step
from service.settings import Settings
from service.worker.app import build_worker
from tests.helpers import produce, request, settle, wait_until
from tests.ops.test_http import serving

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "runsteps-rules.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "runsteps.json"
METRIC = re.compile(r"\brunsteps_[a-z_]+\b")
GONE = {"runsteps_undeferred_batches_total"}  # being removed from the worker


def dashboard_module() -> ModuleType:
    """deploy/grafana/dashboard.py, imported from its path."""
    spec = importlib.util.spec_from_file_location("dashboard", ROOT / "deploy/grafana/dashboard.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rule_exprs() -> list[str]:
    """Every alert expression of the rules file."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    """Every query of the dashboard's panels."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def test_prometheusrule_holds_the_rules_files_groups() -> None:
    """The PrometheusRule's spec is exactly the rules file (one source of alerts)."""
    rule = yaml.safe_load((PROMETHEUS / "prometheusrule.yaml").read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


def test_dashboard_json_is_what_its_script_writes() -> None:
    """deploy/grafana/runsteps.json is grafanalib's output of dashboard.py, unedited."""
    assert DASHBOARD.read_text() == dashboard_module().render()


async def test_every_metric_the_rules_and_dashboard_use_is_exposed(
    redis: Redis, settings: Settings
) -> None:
    """Each runsteps_* name in an alert or a panel is a sample name on a worker's /metrics
    (or, for `runsteps_export_*`, on an exporter's)."""
    used = {m for expr in rule_exprs() + dashboard_exprs() for m in METRIC.findall(expr)}
    assert not used & GONE
    worker = build_worker(settings)
    # The domain metrics have samples once a step, a tool call or a run ended: reported as
    # the commit path reports them.
    telemetry = worker.telemetry
    call = ("call_1", "function", "get_weather")
    telemetry.step_ended("assistants", "failed", "tool_calls", (call,), 2.0)
    telemetry.run_ended("assistants", "failed", "gpt-4o", TokenUsage(10, 2), 0.00005)
    telemetry.unpriced("my-local-llama")
    async with serving(worker) as base:
        await produce(redis, settings, step("s1", "in_progress", run_id="r1"), b"{nope")
        await settle(redis, settings)
        status, _, body = await request(base, "/metrics")
    assert status == 200
    exposed = {
        sample.name
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    exposed |= await exporter_samples(settings)  # `runsteps_export_*`: the exporter's own
    assert used - exposed == set(), f"not exposed: {sorted(used - exposed)}"
    assert {
        "runsteps_consumer_group_lag",
        "runsteps_consumer_group_pending",
        "runsteps_derived_events_total",
        "runsteps_dlq_entries_total",
        "runsteps_batch_processing_seconds_bucket",
        "runsteps_redis_up",
    } <= used, "the dashboard shows backlog, throughput, DLQ, latency and Redis"
    assert {
        "runsteps_step_duration_seconds_bucket",
        "runsteps_tool_calls_ended_total",
        "runsteps_runs_ended_total",
        "runsteps_tokens_total",
        "runsteps_cost_usd_total",
        "runsteps_budget_exceeded_total",
        "runsteps_unpriced_total",
    } <= used, "and steps, tool calls, runs, tokens, cost, budgets and unpriced models"


async def exporter_samples(settings: Settings) -> set[str]:
    """The sample names on an exporter's /metrics (`runsteps export-otel`, started)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from service.export.exporter import Exporter
    from service.export.http import ExportMetrics

    exporter = Exporter(settings, OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces"))
    metrics = ExportMetrics(exporter)
    await exporter.start()
    try:
        body = await metrics.render()
    finally:
        await exporter.stop()
    return {
        sample.name
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


# -- with Debian's prometheus -------------------------------------------------------------------


def tool(name: str) -> str:
    """Path of a prometheus binary; fails (never skips) saying how to get it."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: apt-get install prometheus (or bash .ci/ensure-podman)")
    return found


@pytest.mark.prometheus
def test_promtool_unit_tests_of_the_rules_pass() -> None:
    """`promtool check rules` and `promtool test rules` pass on the committed files."""
    promtool = tool("promtool")
    for args in (["check", "rules", RULES.name], ["test", "rules", "runsteps-rules.test.yaml"]):
        done = subprocess.run(
            [promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


class Prometheus:
    """A prometheus server on 127.0.0.1 with the rules file, scraping one target each second."""

    def __init__(self, target: str, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "runsteps", "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.cmd = [
            tool("prometheus"),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]

    async def api(self, path: str) -> Any:
        """GET /api/v1/<path>: its `data`, or None while the server does not answer."""
        try:
            status, _, body = await request(self.base, f"/api/v1/{path}")
        except OSError:
            return None
        return json.loads(body)["data"] if status == 200 else None


@pytest.fixture
async def scraped(settings: Settings, tmp_path: Path) -> AsyncIterator[Prometheus]:
    """A worker serving /metrics and a real Prometheus scraping it, both stopped afterwards."""
    async with serving(build_worker(settings)) as base:
        server = Prometheus(base.removeprefix("http://"), tmp_path)
        proc = await asyncio.create_subprocess_exec(
            *server.cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            yield server
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), timeout=20)


@pytest.mark.prometheus
async def test_a_real_prometheus_fires_the_dlq_alert_on_a_burst(
    scraped: Prometheus, redis: Redis, settings: Settings
) -> None:
    """Scraped each second, a burst of unparsable entries fires RunstepsDLQGrowing by kind."""

    async def target_up() -> bool:
        targets = await scraped.api("targets")
        return bool(targets) and any(t["health"] == "up" for t in targets["activeTargets"])

    async def alerts() -> list[dict[str, Any]]:
        found = await scraped.api("alerts")
        return list(found["alerts"]) if found else []

    await wait_until(target_up, timeout_s=30, what="Prometheus scraping the worker")
    assert await alerts() == [], "quiet before the burst"

    await produce(redis, settings, *[b"{nope"] * 20)
    await settle(redis, settings)

    async def dlq_alert_firing() -> bool:
        return any(
            a["labels"]["alertname"] == "RunstepsDLQGrowing"
            and a["labels"]["kind"] == "invalid_json"
            and a["state"] == "firing"
            for a in await alerts()
        )

    await wait_until(dlq_alert_firing, timeout_s=30, what="RunstepsDLQGrowing firing")
