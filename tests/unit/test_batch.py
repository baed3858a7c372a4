"""The pure batch builder: entries in, ops, acks and dead letters out, with no Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contracts.derived import DERIVED
from service.core.batch import Batch, Partitioning, build_batch
from service.core.layout import step_field
from service.core.published import Kind
from service.dev.sample import T0, responses_entries, sample_entries


def _build(payloads: list[bytes | dict[str, Any]], **kwargs: Any) -> Batch:
    entries = [
        (f"{1_700_000_000_000 + i}-0".encode(), {b"data": p if isinstance(p, bytes) else
                                                  json.dumps(p).encode()})
        for i, p in enumerate(payloads)
    ]  # fmt: skip
    options: dict[str, Any] = {"max_payload_bytes": 1 << 20, "stall_after_s": 60, "now": T0}
    return build_batch(entries, **(options | kwargs))


def _step(status: str, run_id: str = "run_1", **extra: Any) -> dict[str, Any]:
    step = {
        "id": "step_1", "object": "thread.run.step", "created_at": T0, "run_id": run_id,
        "assistant_id": "asst_1", "thread_id": "thread_1", "type": "message_creation",
        "status": status, "cancelled_at": None, "completed_at": None, "expired_at": None,
        "failed_at": None, "last_error": None, "usage": None,
        "step_details": {"type": "message_creation",
                         "message_creation": {"message_id": "msg_1"}},
    }  # fmt: skip
    return step | extra


def test_a_starting_step_becomes_one_op_carrying_its_start() -> None:
    """An in_progress step: one step op with its start event, valid against the contract."""
    batch = _build([_step("in_progress")])
    [op] = batch.runs["run_1"]
    assert (op.kind, op.field, op.status) == (Kind.STEP, step_field("step_1"), "i")
    assert DERIVED.validate_json(op.start_event).type == "run_step.started"
    assert op.deadline == str(T0 + 60)
    assert (batch.acks, batch.dead, batch.failed) == ([], [], {})


def test_a_stall_is_timed_from_when_the_step_was_seen() -> None:
    """A replayed old step's deadline counts from now, not from its creation."""
    [op] = _build([_step("in_progress")], now=T0 + 1000).runs["run_1"]
    assert op.deadline == str(T0 + 1060)


def test_a_step_dated_in_the_future_is_timed_from_now() -> None:
    """A skewed clock's step (created ten days ahead) still stalls after the threshold."""
    [op] = _build([_step("in_progress", created_at=T0 + 864_000)], now=T0).runs["run_1"]
    assert op.deadline == str(T0 + 60)


def test_an_ending_step_carries_its_end_and_usage() -> None:
    """A completed step with usage: its end event, and run.usage without its totals."""
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    [op] = _build([_step("completed", completed_at=T0 + 2, usage=usage)]).runs["run_1"]
    assert DERIVED.validate_json(op.end_event).type == "run_step.completed"
    assert op.usage == "3,4,7"
    assert op.usage_event.startswith(b'{"type":"run.usage"')


def test_the_sample_run_of_each_dialect_builds_ops_for_every_subject() -> None:
    """Both dialects' sample runs give ops of steps and runs, and nothing fails."""
    for entries in (sample_entries(), responses_entries()):
        batch = build_batch(
            [(f"{1_700_000_000_000 + i}-0".encode(), {b"data": data})
                for i, (_, data) in enumerate(entries)],
            max_payload_bytes=1 << 20, stall_after_s=60, now=T0,
        )  # fmt: skip
        assert batch.runs
        assert not batch.failed
        kinds = {op.kind for op in batch.ops()}
        assert kinds == {Kind.STEP, Kind.RUN}


def test_a_run_of_another_partition_is_a_dead_letter() -> None:
    """A producer that writes a run to the wrong partition's stream: wrong_partition."""
    batch = _build([_step("in_progress", run_id=f"run_{i}") for i in range(8)],
                   partitioning=Partitioning(0, 4))  # fmt: skip
    assert batch.dead
    assert {d.kind for d in batch.dead} == {"wrong_partition"}
    assert len(batch.dead) + sum(len(o) for o in batch.runs.values()) == 8


@pytest.mark.parametrize(
    ("payload", "kind"),
    [(b"{not json", "invalid_json"), (b"[]", "invalid_payload")],
)
def test_bad_bytes_are_dead_letters_with_a_reason(payload: bytes, kind: str) -> None:
    """Rejected at decode time, with the kind and a message."""
    [dead] = _build([payload]).dead
    assert dead.kind == kind
    assert json.loads(dead.error)["message"]


def test_ignored_and_error_events_are_acked_and_counted() -> None:
    """A message delta is ignored; an error event is counted and its message kept."""
    batch = _build([
        {"event": "thread.message.delta", "data": {"id": "msg_1"}},
        {"event": "error", "data": {"message": "boom", "code": None}},
    ])  # fmt: skip
    assert len(batch.acks) == 2
    assert batch.ignored == {"thread.message.delta": 1}
    assert (batch.error_events, batch.errors) == (1, ["boom"])


def test_an_entry_whose_decoding_raises_stays_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in decoding one entry fails that entry only: the others still build."""
    from service.core.decode import decode_entry as real

    def flaky(fields: dict[bytes, bytes], *args: Any) -> Any:
        if b"boom" in fields[b"data"]:
            raise RuntimeError("decoder bug")
        return real(fields, *args)

    monkeypatch.setattr("service.core.batch.decode_entry", flaky)
    batch = _build([_step("in_progress", id="boom"), _step("in_progress")])
    assert list(batch.failed.values()) == ["RuntimeError: decoder bug"]
    assert len(batch.runs["run_1"]) == 1
