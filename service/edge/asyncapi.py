"""The AsyncAPI page: server-rendered from the document itself, self-contained.

No script or stylesheet from anywhere else: FastStream's page loads its viewer from a CDN,
which a locked-down cluster cannot reach. `http.py` serves it at /docs/asyncapi.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

__all__ = ["render_asyncapi_html"]

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
