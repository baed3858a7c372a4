"""Producer helpers: an SDK or SSE event becomes entry bytes the service reads back unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

from contracts.producer import DONE_DATA, entry_from_sdk_event, entry_from_sse
from contracts.stream_events import IgnoredEntry, RunEntry, StepEntry, classify_entry
from service.core.fastpath import decode_fast

from .samples import completed

DATA = Path(__file__).parents[1] / "data" / "assistants"
RECORDED = [
    json.loads(line)
    for path in sorted(DATA.glob("*.jsonl"))
    if "_bare_" not in path.name
    for line in path.read_text(encoding="utf-8").splitlines()
]


class _Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _SdkRun(BaseModel):
    """Shaped like openai-python's `Run`: a pydantic model of the API object."""

    id: str
    object: str
    created_at: int
    assistant_id: str
    thread_id: str
    status: str
    completed_at: int | None
    usage: _Usage | None


def test_an_sdk_event_becomes_its_envelope() -> None:
    """An AssistantStreamEvent-like object is written as {"event", "data": model_dump}."""
    run = _SdkRun(
        id="run_1",
        object="thread.run",
        created_at=1,
        assistant_id="asst_1",
        thread_id="thread_1",
        status="completed",
        completed_at=9,
        usage=_Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
    )
    data = entry_from_sdk_event(SimpleNamespace(event="thread.run.completed", data=run))
    assert json.loads(data) == {"event": "thread.run.completed", "data": run.model_dump()}
    got = classify_entry(data)
    assert isinstance(got, RunEntry)
    assert got.run.ended_at == 9
    assert not got.status_mismatch


def test_an_sdk_event_with_plain_data_is_written_as_is() -> None:
    """A dict as `data` needs no model_dump."""
    data = entry_from_sdk_event(SimpleNamespace(event="thread.message.delta", data={"id": "m"}))
    assert data == b'{"event":"thread.message.delta","data":{"id":"m"}}'


def test_a_producer_step_entry_takes_the_fast_path() -> None:
    """The envelope is compact with `event` first, the form the fast path decodes."""
    data = entry_from_sse("thread.run.step.completed", json.dumps(completed()))
    assert data.startswith(b'{"event":')
    assert decode_fast(data) is not None


@pytest.mark.parametrize("entry", RECORDED, ids=range(len(RECORDED)))
def test_a_recorded_sse_event_round_trips(entry: dict[str, Any]) -> None:
    """Every recorded event, given as SSE name and data text, yields the recorded entry."""
    text = entry["data"] if entry["event"] == "done" else json.dumps(entry["data"])
    assert json.loads(entry_from_sse(entry["event"], text)) == entry


def test_done_keeps_its_literal_data() -> None:
    """`done`'s `[DONE]` is not JSON and is kept as a string; the entry is ignored."""
    data = entry_from_sse("done", DONE_DATA)
    assert json.loads(data) == {"event": "done", "data": "[DONE]"}
    assert classify_entry(data) == IgnoredEntry("done")


def test_non_ascii_text_is_written_as_utf8() -> None:
    """Text is kept as UTF-8, not \\u-escaped, and reads back the same."""
    body = completed(metadata={"note": "Grüße, 25°C"})
    data = entry_from_sse("thread.run.step.completed", json.dumps(body))
    assert "Grüße, 25°C".encode() in data
    got = classify_entry(data)
    assert isinstance(got, StepEntry)
    assert got.step.metadata == {"note": "Grüße, 25°C"}


def test_sse_data_that_is_not_json_is_refused() -> None:
    """A non-done event whose data is not JSON raises ValueError naming the event."""
    with pytest.raises(ValueError, match=r"thread\.run\.created"):
        entry_from_sse("thread.run.created", "[DONE]")


@pytest.mark.parametrize("name", ["", None, 3])
def test_an_event_needs_a_name(name: Any) -> None:
    """An empty or non-string event name raises TypeError."""
    with pytest.raises(TypeError):
        entry_from_sdk_event(SimpleNamespace(event=name, data={}))
