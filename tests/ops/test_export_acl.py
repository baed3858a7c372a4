"""`runsteps export-otel` as the ACL's `runsteps` user on a 3-master Redis Cluster: every
partition's derived stream exported, refusals dead-lettered in the partition's own slot,
runs' step extents read from their state; no node logs a denial."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from redis.asyncio import Redis, RedisCluster

from service.dev.redis_server import LocalCluster
from service.dev.sample import sample_entries
from service.export.exporter import Exporter
from service.export.ids import trace_id_for
from service.settings import Settings
from service.storage.keys import partitions
from tests.helpers import drained, entries, wait_until
from tests.ops.test_acl import PASSWORDS, _runs_by_partition, acl_cluster
from tests.otlp import OtlpReceiver
from tests.system.workers import start_worker, stop_worker

__all__ = ["acl_cluster"]  # the fixture, shared with test_acl.py


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP receiver on 127.0.0.1."""
    with OtlpReceiver() as running:
        yield running


def _url(port: int, user: str) -> str:
    return f"redis://{user}:{PASSWORDS[user]}@127.0.0.1:{port}/0"


@pytest.mark.system
@pytest.mark.timeout(120)
async def test_exporter_runs_as_runsteps_on_a_cluster(
    acl_cluster: LocalCluster, receiver: OtlpReceiver
) -> None:
    """A run on each of 3 masters: each becomes a trace; a bad derived entry on partition 1
    goes to `runsteps.export.dlq:{1}`; the ACL allows every command the exporter sends."""
    port = acl_cluster.nodes[0].port
    settings = Settings(
        redis_url=_url(port, "runsteps"),
        cluster=True,
        partitions=3,
        block_ms=50,
        http_port=0,
        consumer="acl-export",
    )  # the default stream, group and key names: the ones the ACL file grants
    parts = partitions(settings)
    runs = _runs_by_partition(len(parts))
    admin = cast("Redis", RedisCluster.from_url(_url(port, "admin")))
    producer = cast("Redis", RedisCluster.from_url(_url(port, "producer")))
    exporter = Exporter(settings, OTLPSpanExporter(endpoint=receiver.endpoint, timeout=2))
    worker = start_worker(settings, "acl-cluster")
    try:
        await exporter.start()
        for part, run_id in zip(parts, runs, strict=True):
            for _, data in sample_entries(run_id):
                await producer.xadd(part.source_stream, {"data": data})
        await admin.xadd(parts[1].derived_stream, {"data": b"{nope"})

        async def exported() -> bool:
            assert worker.poll() is None, "the worker exited"
            for part in parts:
                if not await drained(admin, part.source_stream, settings.group):
                    return False
                if not await drained(admin, part.derived_stream, settings.export_group):
                    return False
            return True

        await wait_until(exported, 60, "every partition tracked and exported")
    finally:
        await exporter.stop()
        stderr = stop_worker(worker)
    try:
        assert worker.returncode == 0, stderr
        assert {s.trace_id for s in receiver.received()} == {
            f"{trace_id_for(r):032x}" for r in runs
        }
        roots = [s for s in receiver.received() if not s.parent_id]
        assert len(roots) == 3
        dead = await entries(admin, "runsteps.export.dlq:{1}")
        assert [json.loads(f[b"error"])["kind"] for _, f in dead] == ["invalid_json"]
        for node in acl_cluster.nodes:
            one = Redis(port=node.port, username="admin", password=PASSWORDS["admin"])
            denials = cast("list[dict[str, Any]]", await one.acl_log())
            await one.aclose()
            assert denials == [], f"node {node.port} denied: {denials}"
    finally:
        await admin.aclose()
        await producer.aclose()
