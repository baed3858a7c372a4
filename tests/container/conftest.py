"""Fixtures for running the built image for real: the engine, the image, a private Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from service.dev.redis_server import LocalRedis
from tests.container.engine import Engine

IMAGE = os.environ.get("IMAGE", "runsteps:0.3.0")

REPORT: list[str] = []


@pytest.fixture(scope="session")
def engine() -> Engine:
    """docker or podman, whichever answers; the tests fail (never skip) without one."""
    try:
        return Engine.find()
    except AssertionError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def image(engine: Engine) -> str:
    """The image `make image` built (IMAGE, default runsteps:0.3.0)."""
    found = engine.run("image", "inspect", IMAGE, check=False)
    if found.returncode != 0:
        pytest.fail(f"image {IMAGE} not found in {engine.name}: run `make image` first")
    size = int(engine.inspect("image", "inspect", IMAGE)["Size"])
    REPORT.append(f"image {IMAGE}: {size / 1e6:.0f} MB ({size} bytes), engine {engine.name}")
    return IMAGE


@pytest.fixture(scope="module")
def redis_server() -> Iterator[LocalRedis]:
    """A private redis-server on 127.0.0.1, reached by containers on the host's network."""
    with LocalRedis() as server:
        yield server


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the image's size (and the engine) at the end of the run."""
    if REPORT:
        terminalreporter.section("container")
        for line in REPORT:
            terminalreporter.write_line(line)
