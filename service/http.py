"""HTTP routes on the worker's port: health, readiness (more come with the operations work)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from faststream.asgi import AsgiResponse, Request, get

if TYPE_CHECKING:
    from faststream.asgi.types import ASGIApp

    from .app import Worker

__all__ = ["routes"]


def _json(body: Any, status: int = 200) -> AsgiResponse:
    return AsgiResponse(
        json.dumps(body).encode(), status, headers={"content-type": "application/json"}
    )


def routes(worker: Worker) -> list[tuple[str, ASGIApp]]:
    """The ASGI routes for `worker`."""

    @get
    async def healthz(_: Request) -> AsgiResponse:
        return _json({"status": "alive"})

    @get
    async def readyz(_: Request) -> AsgiResponse:
        checks = await worker.readiness()
        return _json(
            {"ready": all(checks.values()), "checks": checks}, 200 if all(checks.values()) else 503
        )

    return [("/healthz", healthz), ("/readyz", readyz)]
