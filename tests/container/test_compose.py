"""deploy/compose.yaml run for real: up, one event through, down (docker compose or podman-compose).

The stack runs as written (bridge network, Redis with its ACL users, the worker locked down);
only its variables change: the Redis image (RUNSTEPS_TEST_REDIS_IMAGE), the worker image
(IMAGE), a free host port, and, for a Redis older than 7.2, the ACL file without the one rule
such a server refuses (`+client|setinfo`, see deploy/README.md).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.dev.redis_server import free_port
from service.dev.sample import step
from tests.container.engine import ROOT, Engine, http_status, wait_for

pytestmark = pytest.mark.container

COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
REDIS_IMAGE = os.environ.get("RUNSTEPS_TEST_REDIS_IMAGE", "redis:7.4.6-bookworm")


class Stack:
    """A compose project brought up from deploy/compose.yaml."""

    def __init__(
        self, engine: Engine, project: str, port: int, compose: list[str], env: dict[str, str]
    ) -> None:
        self.engine = engine
        self.project = project
        self.base = f"http://127.0.0.1:{port}"
        self.compose = compose
        self.env = env

    def up(self) -> None:
        """`compose up -d`."""
        self.engine.run_tool([*self.compose, "up", "-d"], env=self.env)

    def down(self, check: bool = True) -> None:
        """`compose down -v`: containers, network and volumes."""
        self.engine.run_tool([*self.compose, "down", "-v"], env=self.env, check=check)

    def containers(self) -> list[str]:
        """Names of the project's containers, running or not."""
        return self.engine.run(
            "ps", "--all", "--format", "{{.Names}}",
            "--filter", f"label=com.docker.compose.project={self.project}",
        ).stdout.split()  # fmt: skip

    def container(self, service: str) -> str:
        """The name of a service's (only) container."""
        names = self.engine.run(
            "ps", "--all", "--format", "{{.Names}}",
            "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
        ).stdout.split()  # fmt: skip
        assert len(names) == 1, names
        return names[0]

    def redis_cli(self, user: str, password: str, *command: str) -> Any:
        """A redis-cli command inside the Redis container, as `user`; its reply as JSON."""
        out = self.engine.run(
            "exec", self.container("redis"),
            "redis-cli", "--json", "--no-auth-warning", "--user", user, "--pass", password,
            *command,
        ).stdout  # fmt: skip
        return json.loads(out)


def compose_command(engine: Engine) -> list[str]:
    """`docker compose` with docker, the podman-compose tool with podman."""
    return ["docker", "compose"] if engine.name == "docker" else ["podman-compose"]


def acl_file_for(engine: Engine, tmp_path: Path) -> Path:
    """The repository's ACL file, less `+client|setinfo` if the Redis image is older than 7.2."""
    version = engine.run("run", "--rm", REDIS_IMAGE, "redis-server", "--version").stdout
    found = re.search(r"v=(\d+)\.(\d+)", version)
    assert found is not None, version
    text = (ROOT / "deploy" / "redis" / "users.acl").read_text()
    if (int(found[1]), int(found[2])) < (7, 2):
        text = text.replace(" +client|setinfo", "")
    path = tmp_path / "users.acl"
    path.write_text(text)
    return path


@pytest.fixture
def stack(engine: Engine, image: str, tmp_path: Path) -> Iterator[Stack]:
    """The compose stack, up; taken down (volumes too) afterwards, whatever happened."""
    project = f"runsteps-test-{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = {
        **os.environ,
        "REDIS_IMAGE": REDIS_IMAGE,
        "IMAGE": image,
        "RUNSTEPS_ACL_FILE": str(acl_file_for(engine, tmp_path)),
        "RUNSTEPS_PUBLISH": f"127.0.0.1:{port}",
    }
    compose = [*compose_command(engine), "-p", project, "-f", str(COMPOSE_FILE)]
    stack = Stack(engine, project, port, compose, env)
    label = f"com.docker.compose.project={project}"
    try:
        stack.up()
        networks = engine.networks(label)
        assert networks, f"compose made no network for project {project}"
        for network in networks:
            engine.check_dns(network)  # the worker finds `redis` by name
        yield stack
    finally:
        stack.down(check=False)
        for network in engine.networks(label):  # podman-compose 1.0's `down` leaves it
            engine.run("network", "rm", network, check=False)


def test_compose_stack_carries_an_event_and_comes_down(engine: Engine, stack: Stack) -> None:
    """up: healthy and ready; a producer's XADD comes out derived; down leaves nothing."""
    wait_for(lambda: http_status(stack.base + "/readyz") == 200, what="worker /readyz 200")
    assert http_status(stack.base + "/healthz") == 200
    if engine.name == "podman":  # Redis's compose healthcheck, run by the engine itself
        engine.run("healthcheck", "run", stack.container("redis"))
    # The worker's compose healthcheck, as written (podman-compose garbles CMD-form ones)
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    check = compose["services"]["worker"]["healthcheck"]["test"]
    assert check[0] == "CMD", check
    engine.run("exec", stack.container("worker"), *check[1:])
    assert engine.run("exec", stack.container("worker"), "id", "-u").stdout.strip() == "10001"

    step_id = f"step_{uuid.uuid4().hex[:8]}"
    data = json.dumps(step(step_id, "in_progress"))
    stack.redis_cli("producer", "change-me-producer", "XADD", "runsteps.events", "*", "data", data)

    def started() -> bool:
        entries = stack.redis_cli(
            "admin", "change-me-admin", "XRANGE", "runsteps.derived", "-", "+"
        )
        events = [json.loads(fields[1]) for _, fields in entries]
        return any(e["type"] == "run_step.started" and e["step_id"] == step_id for e in events)

    wait_for(started, what=f"run_step.started for {step_id}")

    stack.down()
    assert stack.containers() == []
