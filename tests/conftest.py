"""Shared fixtures: a real Redis for the session, fresh stream names per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from service.dev.redis_server import LocalRedis
from service.settings import Settings
from service.storage.client import PartitionClient
from service.storage.pending import Pending
from service.storage.store import Store
from service.worker.process import Processor
from service.worker.telemetry import Telemetry

# The image a testcontainers Redis runs; a mirror's copy or a locally built one where the
# official image cannot be pulled (CI: Debian's redis-server, .ci/base-images).
REDIS_IMAGE = os.environ.get("RUNSTEPS_TEST_REDIS_IMAGE", "redis:7-alpine")
# RUNSTEPS_TEST_REDIS=container: a testcontainers Redis or an error, never the fallback
# (.ci/testcontainers-test proves that path that way).


def _docker_answers() -> bool:
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return False
    try:
        import docker  # type: ignore[import-untyped]  # testcontainers' dependency

        client = docker.from_env(timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception:  # no engine, no socket, no permission: all mean "no Docker"
        return False
    return True


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL if set, else a testcontainers Redis if Docker answers, else a private server."""
    if url := os.environ.get("REDIS_URL"):
        yield url
    elif _docker_answers() or os.environ.get("RUNSTEPS_TEST_REDIS") == "container":
        # The generic container: testcontainers.redis is deprecated (4.15), its replacement
        # lives in the community namespace; Redis needs nothing more than a port and a wait.
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.wait_strategies import LogMessageWaitStrategy

        container = (
            DockerContainer(REDIS_IMAGE)
            .with_exposed_ports(6379)
            .waiting_for(LogMessageWaitStrategy("Ready to accept connections"))
        )
        with container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
    else:
        with LocalRedis() as server:
            yield server.url


@pytest.fixture
def settings(redis_url: str) -> Settings:
    """Settings with stream names and key prefix of this test's own."""
    tag = uuid.uuid4().hex[:10]
    return Settings(
        redis_url=redis_url,
        source_stream=f"t.{tag}.events",
        derived_stream=f"t.{tag}.derived",
        dlq_stream=f"t.{tag}.dlq",
        key_prefix=f"t.{tag}",
        group="runsteps",
        consumer=f"c-{tag}",
        block_ms=50,
        http_port=0,
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A redis-py client, as a non-Python producer or consumer would use the streams."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def conn(redis: Redis, settings: Settings) -> AsyncIterator[PartitionClient]:
    """This test's partition: its consumer group created and the scripts loaded."""
    connection = PartitionClient(redis, settings)
    await connection.ensure_group()
    await connection.load_scripts()
    yield connection
    await connection.aclose()


def make_processor(conn: PartitionClient, settings: Settings | None = None) -> Processor:
    """A processor of `conn`'s partition (with other settings if given)."""
    if settings is not None:
        conn = PartitionClient(conn.redis, settings)
    return Processor(Store(conn), Pending(conn), conn.settings, Telemetry())


@pytest.fixture
def processor(conn: PartitionClient) -> Processor:
    """A processor of this test's partition, as a worker builds it."""
    return make_processor(conn)
