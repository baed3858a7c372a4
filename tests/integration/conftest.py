"""Fixtures the worker-level integration tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.settings import Settings
from service.worker.app import Worker, build_worker


@pytest.fixture(params=[2.0, 0.0], ids=["linger", "no-linger"])
async def worker(settings: Settings, request: pytest.FixtureRequest) -> AsyncIterator[Worker]:
    """A worker consuming this test's streams, in this process (with and without linger)."""
    w = build_worker(settings.model_copy(update={"linger_ms": request.param}))
    await w.start()
    yield w
    await w.stop()
