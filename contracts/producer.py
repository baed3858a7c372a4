"""Producer helpers: one Assistants stream event -> the `data` bytes of one source entry.

A producer forwards every event of a run's stream, unchanged, as
`{"event": "<name>", "data": <the event's object>}` (`contracts.stream_events` reads it).
These helpers build those bytes from what a producer holds: an openai-python stream event,
or a raw server-sent event. They do no I/O; the caller XADDs the bytes under `DATA_FIELD`.
The envelope is written compactly with `event` first, the form the service decodes fastest.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["DATA_FIELD", "DONE_DATA", "entry_from_sdk_event", "entry_from_sse"]

DATA_FIELD = "data"
"""The stream entry's field that holds the bytes these helpers return."""

DONE_DATA = "[DONE]"
"""The data of the `done` event: the literal text, not JSON, kept as a string."""


def _envelope(event: str, data: Any) -> bytes:
    if not isinstance(event, str) or not event:
        raise TypeError(f"an event name must be a non-empty string, not {event!r}")
    body = {"event": event, "data": data}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def entry_from_sdk_event(event: Any) -> bytes:
    """The entry bytes for an openai-python `AssistantStreamEvent` (or anything shaped like
    one: an `event` name and a `data` pydantic model, or a plain dict, as `data`).

    `data` is written as `data.model_dump(mode="json")`: the object as the API sent it.
    """
    data = event.data
    dump = getattr(data, "model_dump", None)
    return _envelope(event.event, dump(mode="json") if callable(dump) else data)


def entry_from_sse(event: str, data: str) -> bytes:
    """The entry bytes for one server-sent event: its `event:` name and its `data:` text
    (multi-line data joined with newlines, as the SSE format says).

    The data is JSON for every event but `done`, whose `[DONE]` is kept as a string.
    Raises ValueError when another event's data is not JSON.
    """
    if event == "done":
        return _envelope(event, data)
    try:
        parsed = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"data of event {event!r} is not JSON: {exc}") from exc
    return _envelope(event, parsed)
