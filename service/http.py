"""HTTP on the worker's port: probes, metrics, the query API and the AsyncAPI document.

FastStream's ASGI app matches routes by exact path, so `/runs/<id>` and
`/runs/<id>/steps/<id>` (the Assistants API's own path shape) are prefix routes, dispatched
by `App` before FastStream's own routes. The AsyncAPI page is rendered here from the
document itself, with no script or stylesheet from anywhere else: FastStream's page loads
its viewer from a CDN, which a locked-down cluster cannot reach.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from faststream.asgi import AsgiFastStream, AsgiResponse, Request, get
from pydantic import BaseModel

from .errors import INFRASTRUCTURE_ERRORS
from .metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from faststream.asgi.types import ASGIApp, Receive, Scope, Send
    from faststream.specification.base import SpecificationFactory

    from .app import Worker
    from .metrics import Metrics

__all__ = ["App", "prefix_routes", "render_asyncapi_html", "routes"]

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
    when unknown. A step's state is kept under its run, so its path names the run."""

    async def fetch(path: str, query: dict[str, str]) -> tuple[str, BaseModel | None]:
        run_id, sep, step_id = path.partition("/steps/")
        if sep and step_id:
            return "step", await worker.step(run_id, step_id)
        limit = int(query["limit"]) if query.get("limit", "").isdigit() else 100
        return "run", await worker.run(run_id, query.get("cursor", "0"), limit)

    return [("/runs/", _lookup("/runs/", fetch))]


Fetch = Callable[[str, dict[str, str]], Awaitable[tuple[str, BaseModel | None]]]


def _lookup(prefix: str, fetch: Fetch) -> ASGIApp:
    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        key = scope["path"][len(prefix) :]
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if scope["method"] not in {"GET", "HEAD"}:
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Prefix routes first, then FastStream's exact routes and lifespan."""
        if scope["type"] == "http":
            for prefix, route in self.prefix_routes:
                if scope["path"].startswith(prefix):
                    await route(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


# -- the AsyncAPI page: server-rendered from the document, self-contained ---------------------

_CSS = """
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:1.2em 2em}header a{color:#9cc3ff}
main{max-width:1100px;margin:0 auto;padding:1em 2em}
article{background:#fff;border:1px solid #d9dde3;border-radius:6px;padding:.8em 1.2em;
margin:1em 0}
h1 small{font-weight:normal;opacity:.7;font-size:.6em}h2{margin:.3em 0}h3{margin:.8em 0 .3em}
code{font:13px ui-monospace,monospace;background:#eef1f5;padding:0 .3em;border-radius:3px}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;border-bottom:1px solid #e4e7eb;padding:.3em .5em;vertical-align:top}
.badge{display:inline-block;font-size:12px;padding:.1em .6em;border-radius:10px;color:#fff;
vertical-align:middle}
.receive{background:#1f7a4d}.send{background:#2f5fb3}.req{color:#b3261e}
nav a{margin-right:1em}dl{display:grid;grid-template-columns:max-content 1fr;gap:0 1em}
dt{font-weight:600}dd{margin:0}
"""

_ACTIONS = {"receive": "consumed by the worker", "send": "published by the worker"}


def _anchor(kind: str, name: str) -> str:
    return f"{kind}-" + re.sub(r"[^A-Za-z0-9_.-]", "-", name)


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _type(schema: Any) -> str:
    """A short HTML rendering of a JSON Schema's type, with links to named schemas."""
    e = html.escape
    if not isinstance(schema, dict) or not schema:
        return "any"
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return f'<a href="#{_anchor("schema", name)}">{e(name)}</a>'
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return " | ".join(_type(s) for s in schema[key])
    if "const" in schema:
        return f"<code>{e(json.dumps(schema['const']))}</code>"
    if "enum" in schema:
        return " | ".join(f"<code>{e(json.dumps(v))}</code>" for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items'))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map of string to {_type(schema['additionalProperties'])}"
    if kind == "string" and "contentSchema" in schema:
        return f"string holding JSON: {_type(schema['contentSchema'])}"
    return e(str(kind))


def _schema_body(schema: dict[str, Any]) -> str:
    """A schema's description and its properties table, or the alternatives it unites."""
    e = html.escape
    parts = []
    if desc := schema.get("description"):
        parts.append(f"<p>{e(desc)}</p>")
    if props := schema.get("properties"):
        required = set(schema.get("required", ()))
        rows = []
        for name, prop in props.items():
            note = e(prop.get("description", ""))
            if "default" in prop:
                note += f" (default <code>{e(json.dumps(prop['default']))}</code>)"
            star = ' <span class="req" title="required">*</span>' if name in required else ""
            rows.append(
                f"<tr><td><code>{e(name)}</code>{star}</td><td>{_type(prop)}</td>"
                f"<td>{note}</td></tr>"
            )
        parts.append(
            "<table><tr><th>field</th><th>type</th><th>about</th></tr>" + "".join(rows) + "</table>"
        )
        if extra := schema.get("patternProperties"):
            names = ", ".join(f"<code>{e(p)}</code>" for p in extra)
            parts.append(f"<p>Also fields matching {names}.</p>")
    elif "oneOf" in schema or "anyOf" in schema:
        how = schema.get("discriminator")
        by = f", told apart by <code>{e(str(how))}</code>" if how else ""
        parts.append(f"<p>One of{by}: {_type(schema)}</p>")
    else:
        parts.append(f"<p>Type: {_type(schema)}</p>")
    return "".join(parts)


def render_asyncapi_html(doc: dict[str, Any]) -> str:
    """The AsyncAPI document as one self-contained HTML page (no scripts, no external assets)."""
    e = html.escape
    info = doc.get("info", {})
    schemas: dict[str, Any] = doc.get("components", {}).get("schemas", {})
    messages: dict[str, Any] = doc.get("components", {}).get("messages", {})
    channels: dict[str, Any] = doc.get("channels", {})
    operations = sorted(
        doc.get("operations", {}).items(), key=lambda kv: (kv[1].get("action") != "receive", kv[0])
    )

    servers = "".join(
        f"<li><code>{e(str(s.get('protocol', '')))}://{e(str(s.get('host', '')))}"
        f"{e(str(s.get('pathname', '')))}</code> ({e(name)})</li>"
        for name, s in doc.get("servers", {}).items()
    )
    nav, sections = [], []
    for op_name, op in operations:
        channel_key = _ref_name(op.get("channel", {}).get("$ref", ""))
        channel = channels.get(channel_key, {})
        address = str(channel.get("address", channel_key))
        action = str(op.get("action", ""))
        anchor = _anchor("channel", op_name)
        nav.append(f'<a href="#{anchor}">{e(address)}</a>')
        binding = channel.get("bindings", {}).get("redis", {})
        facts = "".join(
            f"<dt>{e(k)}</dt><dd><code>{e(str(binding[k]))}</code></dd>"
            for k in ("method", "groupName", "consumerName")
            if k in binding
        )
        payloads = []
        for ref in channel.get("messages", {}).values():
            payload = messages.get(_ref_name(ref.get("$ref", "")), {}).get("payload", {})
            # The payload is usually a reference: show the schema it names right here.
            payload = schemas.get(_ref_name(payload.get("$ref", "")), payload)
            payloads.append(_schema_body(payload))
        sections.append(
            f'<article id="{anchor}"><h2><code>{e(address)}</code> '
            f'<span class="badge {e(action)}">{e(_ACTIONS.get(action, action))}</span></h2>'
            f"<p>{e(channel.get('description', ''))}</p><dl>{facts}</dl>"
            f"<h3>Message payload</h3>{''.join(payloads) or '<p>any</p>'}</article>"
        )
    schema_sections = "".join(
        f'<article id="{_anchor("schema", name)}"><h3>{e(name)}</h3>'
        f"{_schema_body(schema)}</article>"
        for name, schema in sorted(schemas.items(), key=lambda kv: kv[0].lower())
    )
    title = e(str(info.get("title", "AsyncAPI")))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{title} - AsyncAPI</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{title} <small>{e(str(info.get('version', '')))}</small></h1>"
        f"<p>{e(str(info.get('description', '')))}</p>"
        f"<p>AsyncAPI {e(str(doc.get('asyncapi', '')))} - raw document: "
        f'<a href="asyncapi.json">asyncapi.json</a></p></header><main>'
        f"<nav>Streams: {''.join(nav)}</nav><h2>Servers</h2><ul>{servers}</ul>"
        f"<h2>Streams</h2>{''.join(sections)}<h2>Schemas</h2>{schema_sections}"
        "</main></body></html>"
    )
