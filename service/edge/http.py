"""HTTP on the worker's port: probes, metrics, the query API and the AsyncAPI document.

FastStream's ASGI app matches routes by exact path, so `/runs/<id>` and
`/runs/<id>/steps/<id>` (the Assistants API's own path shape) are prefix routes, dispatched
by `App` before FastStream's own routes. They show thread ids and usage: with a token set
(RUNSTEPS_HTTP_TOKEN or RUNSTEPS_HTTP_TOKEN_FILE) they answer only requests bearing it,
compared in constant time; probes, /metrics and the AsyncAPI page stay open (orchestrators
and scrapers carry no token). The AsyncAPI page comes from `asyncapi.py`.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from faststream.asgi import AsgiFastStream, AsgiResponse, Request, get
from pydantic import BaseModel

from service.edge.asyncapi import render_asyncapi_html
from service.edge.metrics import CONTENT_TYPE, Metrics
from service.errors import INFRASTRUCTURE_ERRORS
from service.worker.app import Worker

if TYPE_CHECKING:
    from faststream.asgi.types import ASGIApp, Receive, Scope, Send
    from faststream.specification.base import SpecificationFactory


__all__ = ["App", "build_app", "prefix_routes", "routes"]

DOCS_PATH = "/docs/asyncapi"


def _json(body: Any, status: int = 200) -> AsgiResponse:
    return AsgiResponse(
        json.dumps(body).encode(), status, headers={"content-type": "application/json"}
    )


def routes(
    worker: Worker, metrics: Metrics, spec: SpecificationFactory
) -> list[tuple[str, ASGIApp]]:
    """The exact-path routes for `worker`; none of them appears in the AsyncAPI document."""
    docs: dict[str, bytes] = {}  # rendered once: the document cannot change while running

    def document() -> dict[str, bytes]:
        if not docs:
            raw = spec.to_specification().to_jsonable()
            docs["json"] = json.dumps(raw, indent=2).encode()
            docs["html"] = render_asyncapi_html(raw).encode()
        return docs

    @get(include_in_schema=False)
    async def healthz(_: Request) -> AsgiResponse:
        if worker.alive():
            return _json({"status": "alive"})
        # Not consuming for too long and could not recover: let the orchestrator restart it.
        return _json(
            {"status": "stuck", "unhealthy_after_s": worker.settings.unhealthy_after_s}, 503
        )

    @get(include_in_schema=False)
    async def readyz(_: Request) -> AsgiResponse:
        checks = await worker.readiness()
        return _json(
            {"ready": all(checks.values()), "checks": checks}, 200 if all(checks.values()) else 503
        )

    @get(include_in_schema=False)
    async def metrics_text(_: Request) -> AsgiResponse:
        return AsgiResponse(await metrics.render(), 200, headers={"content-type": CONTENT_TYPE})

    @get(include_in_schema=False)
    async def asyncapi_html(_: Request) -> AsgiResponse:
        return AsgiResponse(
            document()["html"], 200, headers={"content-type": "text/html; charset=utf-8"}
        )

    @get(include_in_schema=False)
    async def asyncapi_json(_: Request) -> AsgiResponse:
        return AsgiResponse(document()["json"], 200, headers={"content-type": "application/json"})

    return [
        ("/healthz", healthz),
        ("/readyz", readyz),
        ("/metrics", metrics_text),
        (DOCS_PATH, asyncapi_html),
        (f"{DOCS_PATH}.json", asyncapi_json),
    ]


def prefix_routes(worker: Worker) -> list[tuple[str, ASGIApp]]:
    """`/runs/<run_id>` and `/runs/<run_id>/steps/<step_id>`: tracked state as JSON, 404
    when unknown. A step's state is kept under its run, so its path names the run. With a
    token set (RUNSTEPS_HTTP_TOKEN or its file), only for requests that bear it."""

    async def fetch(path: str, query: dict[str, str]) -> tuple[str, BaseModel | None]:
        run_id, sep, step_id = path.partition("/steps/")
        if sep and step_id:
            return "step", await worker.step(run_id, step_id)
        limit = int(query["limit"]) if query.get("limit", "").isdigit() else 100
        return "run", await worker.run(run_id, query.get("cursor", "0"), limit)

    token = worker.settings.query_token()
    return [("/runs/", _lookup("/runs/", fetch, None if token is None else token.encode()))]


Fetch = Callable[[str, dict[str, str]], Awaitable[tuple[str, BaseModel | None]]]


def _bearer(scope: Scope) -> bytes | None:
    """The token of the request's `Authorization: Bearer <token>` header, if it has one."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"authorization":
            scheme, _, credentials = bytes(value).strip().partition(b" ")
            return credentials.strip() if scheme.lower() == b"bearer" else None
    return None


def _unauthorized(given: bytes | None) -> AsgiResponse:
    # RFC 6750: the scheme and realm; `invalid_token` when one was given and is not it.
    challenge = 'Bearer realm="runsteps"' + ("" if given is None else ', error="invalid_token"')
    return AsgiResponse(
        json.dumps({"error": "unauthorized: send Authorization: Bearer <token>"}).encode(),
        401,
        headers={"content-type": "application/json", "www-authenticate": challenge},
    )


def _lookup(prefix: str, fetch: Fetch, token: bytes | None) -> ASGIApp:
    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        key = scope["path"][len(prefix) :]
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        given = None if token is None else _bearer(scope)
        if token is not None and (given is None or not hmac.compare_digest(given, token)):
            response = _unauthorized(given)
        elif scope["method"] not in {"GET", "HEAD"}:
            response = AsgiResponse(b"Method Not Allowed", 405, headers={"allow": "GET, HEAD"})
        elif not key or key.startswith("/"):
            response = _json({"error": "no run id in the path"}, 404)
        else:
            try:
                what, found = await fetch(key, query)
            except INFRASTRUCTURE_ERRORS:
                response = _json({"error": "redis unavailable"}, 503)
            else:
                response = (
                    _json({"error": f"{what} not tracked", "id": key}, 404)
                    if found is None
                    else _json(found.model_dump(mode="json"))
                )
        await response(scope, receive, send)

    return endpoint


class App(AsgiFastStream):
    """FastStream's ASGI app, plus routes matched by path prefix (its own match exactly)."""

    def __init__(
        self, *brokers: Any, prefix_routes: Sequence[tuple[str, ASGIApp]] = (), **options: Any
    ) -> None:
        super().__init__(*brokers, **options)
        self.prefix_routes = list(prefix_routes)

    async def _start_broker(self) -> None:
        """Nothing to do: the worker's start-up hook started its subscribers already
        (`Worker.start_consuming`), so the app reports itself started only once it consumes.
        FastStream would start the broker after reporting started, where a failure leaves
        the process up with nothing consuming."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Prefix routes first, then FastStream's exact routes and lifespan."""
        if scope["type"] == "http":
            for prefix, route in self.prefix_routes:
                if scope["path"].startswith(prefix):
                    await route(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


def build_app(worker: Worker) -> AsgiFastStream:
    """The deployable ASGI app: the worker plus its HTTP routes on one port."""
    from importlib.metadata import version

    from faststream.specification import AsyncAPI

    metrics = Metrics(worker.telemetry, lambda: worker.redis, worker.parts, worker.settings.group)
    spec = AsyncAPI(
        title="runsteps",
        version=version("runsteps"),
        description="Tracks OpenAI-style run-step lifecycles from a Redis stream and "
        "publishes derived events.",
    )
    return App(
        worker.broker,
        asgi_routes=routes(worker, metrics, spec),
        prefix_routes=prefix_routes(worker),
        specification=spec,
        asyncapi_path=None,  # our own page: FastStream's loads its viewer from a CDN
        logger=logging.getLogger("runsteps.app"),
        on_startup=[worker.on_startup, worker.start_consuming],
        after_startup=[worker.after_startup],
        on_shutdown=[worker.on_shutdown],
        after_shutdown=[worker.after_shutdown],
    )
