"""Producer side of the Responses dialect: a streaming event in, a source entry's `data` out.

The API sends no response id on item and delta events, so the producer adds a top-level
`response_id` to every event that carries no `response` object. No I/O here: the caller writes
the bytes (e.g. with `XADD`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["ResponsesForwarder", "event_payload", "response_entry_data"]


def _sse_data(text: str) -> str:
    """The JSON of one event given as its data text or as a whole SSE frame."""
    stripped = text.strip()
    if stripped.startswith("{"):
        return stripped
    lines = [line[5:].removeprefix(" ") for line in text.splitlines() if line.startswith("data:")]
    if not lines:
        raise ValueError("expected an event's JSON or an SSE frame with 'data:' lines")
    return "\n".join(lines)


def event_payload(event: object) -> dict[str, Any]:
    """An SDK event as the JSON object the API sent.

    Accepts a pydantic model (openai-python's events: dumped in JSON mode, by alias, with only
    the fields that were set, which for a parsed event is what the wire carried), a mapping, or
    the raw SSE data text (str or bytes; a whole `event:`/`data:` frame is accepted too).
    """
    payload: object
    if isinstance(event, bytes | bytearray):
        payload = json.loads(_sse_data(bytes(event).decode()))
    elif isinstance(event, str):
        payload = json.loads(_sse_data(event))
    elif isinstance(event, Mapping):
        payload = dict(event)
    elif callable(dump := getattr(event, "model_dump", None)):
        payload = dump(mode="json", by_alias=True, exclude_unset=True)
    else:
        raise TypeError(f"cannot read a streaming event from {type(event).__name__}")
    if not isinstance(payload, dict):
        raise ValueError("a streaming event is a JSON object")
    return payload


def response_entry_data(event: object, response_id: str | None = None) -> bytes:
    """The entry `data` for one event, with `response_id` added where the event needs it.

    `response_id` is added only when the event has no `response` object and no `response_id`
    of its own; with `response_id=None` nothing is added (an `error` before any response).
    """
    payload = event_payload(event)
    if (
        response_id is not None
        and not isinstance(payload.get("response"), dict)
        and "response_id" not in payload
    ):
        payload["response_id"] = response_id
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


class ResponsesForwarder:
    """Keeps the current response id across one stream and turns each event into entry data.

    The id is taken from every event that carries a `response` object (`response.created` is
    the first), so later item and delta events get it. A stream resumed with `starting_after`
    may begin with deltas: pass the id you resumed.

    Example (producer side; redis-py, openai-python)::

        forwarder = ResponsesForwarder()
        stream = client.responses.create(model="gpt-4o-mini", input="Hello", stream=True)
        for event in stream:
            redis.xadd("runsteps.events", {"data": forwarder.entry_data(event)})

        # resuming a background response after the event numbered 41
        forwarder = ResponsesForwarder(response_id=response_id)
        for event in client.responses.retrieve(response_id, stream=True, starting_after=41):
            redis.xadd("runsteps.events", {"data": forwarder.entry_data(event)})
    """

    def __init__(self, response_id: str | None = None) -> None:
        self.response_id = response_id

    def entry_data(self, event: object) -> bytes:
        """The entry `data` for the next event of the stream."""
        payload = event_payload(event)
        response = payload.get("response")
        if isinstance(response, dict) and isinstance(response.get("id"), str):
            self.response_id = response["id"]
        return response_entry_data(payload, self.response_id)
