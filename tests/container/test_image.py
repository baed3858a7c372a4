"""The built image run for real: locked down as in Kubernetes, against a private Redis.

Host networking (the container's 127.0.0.1 is the host's): the worker reaches the test's
redis-server on loopback and serves HTTP on a free host port.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
from redis import Redis

from service.dev.redis_server import LocalRedis, free_port
from service.dev.sample import step
from tests.container.engine import Engine, has_started, http_status, wait_for

pytestmark = pytest.mark.container

GRACE_S = 20.0  # RUNSTEPS_SHUTDOWN_GRACE_S, as in the ConfigMap and compose file


class Worker:
    """One worker container: its name and HTTP base URL."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.base = f"http://127.0.0.1:{port}"


def start_worker(engine: Engine, image: str, redis_url: str) -> Worker:
    """Run the image as Kubernetes would: read-only root, /tmp a tmpfs, default user."""
    name = f"runsteps-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    engine.run(
        "run", "--detach", "--name", name,
        "--network", "host", "--read-only", "--tmpfs", "/tmp",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--env", f"RUNSTEPS_REDIS_URL={redis_url}",
        "--env", f"RUNSTEPS_HTTP_PORT={port}",
        "--env", "RUNSTEPS_HTTP_HOST=127.0.0.1",
        "--env", f"RUNSTEPS_SHUTDOWN_GRACE_S={GRACE_S}",
        "--env", "RUNSTEPS_LOG_FORMAT=json",
        image,
    )  # fmt: skip
    worker = Worker(name, port)
    wait_for(lambda: http_status(worker.base + "/healthz") == 200, what="/healthz 200")
    return worker


@pytest.fixture(scope="module")
def worker(engine: Engine, image: str, redis_server: LocalRedis) -> Iterator[Worker]:
    """A worker container for the module's read-only checks."""
    w = start_worker(engine, image, redis_server.url)
    yield w
    engine.remove(w.name)


def test_runs_as_uid_10001_on_a_read_only_root(engine: Engine, worker: Worker) -> None:
    """The process runs as 10001:10001; / is read-only, /tmp writable."""
    assert engine.run("exec", worker.name, "id", "-u").stdout.strip() == "10001"
    assert engine.run("exec", worker.name, "id", "-g").stdout.strip() == "10001"
    denied = engine.run("exec", worker.name, "touch", "/written", check=False)
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr
    engine.run("exec", worker.name, "touch", "/tmp/written")
    assert engine.inspect("container", "inspect", worker.name)["HostConfig"]["ReadonlyRootfs"]


def test_health_and_readiness_answer(worker: Worker) -> None:
    """/healthz and /readyz answer 200 once the worker has started against Redis."""
    assert http_status(worker.base + "/healthz") == 200
    wait_for(lambda: http_status(worker.base + "/readyz") == 200, what="/readyz 200")


def test_one_event_in_gives_its_derived_event_out(worker: Worker, redis_server: LocalRedis) -> None:
    """An XADD of a step in progress yields its run_step.started on the derived stream."""
    client = Redis.from_url(redis_server.url)
    try:
        step_id = f"step_{uuid.uuid4().hex[:8]}"
        client.xadd("runsteps.events", {"data": json.dumps(step(step_id, "in_progress"))})
        wait_for(lambda: has_started(client, step_id), what=f"run_step.started for {step_id}")
        assert client.xlen("runsteps.dlq") == 0
    finally:
        client.close()


def test_the_images_own_healthcheck_passes(engine: Engine, image: str, worker: Worker) -> None:
    """The HEALTHCHECK command baked into the image exits 0 inside the running container."""
    found = engine.inspect("image", "inspect", image)
    # docker keeps it in the image config; podman shows it at the top level
    check = (found["Config"].get("Healthcheck") or found["Healthcheck"])["Test"]
    assert check[0] == "CMD", check
    engine.run("exec", worker.name, *check[1:])
    if engine.name == "podman":  # podman runs it the way its health monitor would, too
        engine.run("healthcheck", "run", worker.name)


def test_sigterm_stops_with_exit_0_within_the_grace(
    engine: Engine, image: str, redis_server: LocalRedis
) -> None:
    """`stop` (SIGTERM) ends the worker with exit code 0 well inside its shutdown grace."""
    w = start_worker(engine, image, redis_server.url)
    try:
        began = time.monotonic()
        engine.run("stop", "--time", str(int(GRACE_S + 10)), w.name)
        took = time.monotonic() - began
        state = engine.inspect("container", "inspect", w.name)["State"]
        assert state["ExitCode"] == 0, state
        assert took < GRACE_S, f"stop took {took:.1f}s"
    finally:
        engine.remove(w.name)
