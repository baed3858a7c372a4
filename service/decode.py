"""Raw stream entry -> a run step (or delta) to act on, or a Rejection for the DLQ."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from contracts.derived import DeadLetterError, DeadLetterKind
from contracts.run_step import RunStep
from contracts.stream_events import (
    EVENT_STATUS,
    INBOUND,
    RunStepDelta,
    RunStepDeltaEvent,
    RunStepEvent,
)

from .fastpath import FastStep, decode_fast

__all__ = ["Ignored", "Rejection", "Step", "decode_entry"]

DATA_FIELD = b"data"

Step = RunStep | FastStep
"""A validated run step: the hot path's msgspec struct, or the pydantic model (same fields)."""


@dataclass(frozen=True, slots=True)
class Ignored:
    """An event with no lifecycle meaning (a delta, a message event, ...): acked and counted."""

    event: str  # its event name, the label it is counted under


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an entry cannot be processed; becomes the DLQ entry's `error` field."""

    kind: DeadLetterKind
    message: str
    errors: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        """The DLQ `error` field: kind, message and the validation errors."""
        return DeadLetterError(
            kind=self.kind, message=self.message, errors=self.errors
        ).model_dump_json()


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    # Keep loc/type/msg only: `input` would copy payload contents into the error.
    return [
        {"loc": [str(p) for p in e["loc"]], "type": e["type"], "msg": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]


def decode_entry(fields: dict[bytes, bytes], max_bytes: int) -> Step | Ignored | Rejection:
    """Validate one source entry's `data` field into what the lifecycle acts on.

    Well-formed steps take the msgspec fast path; everything else (deltas, lax or invalid
    input) is validated by the pydantic contracts, which also word every rejection.
    """
    data = fields.get(DATA_FIELD)
    if data is None:
        names = sorted(k.decode("utf-8", "replace") for k in fields)
        return Rejection(DeadLetterKind.MISSING_DATA, f"entry has no 'data' field (has {names})")
    if len(data) > max_bytes:
        return Rejection(
            DeadLetterKind.OVERSIZED,
            f"payload is {len(data)} bytes; the limit is {max_bytes}",
        )
    fast = decode_fast(data)
    if fast is not None:
        return fast
    try:
        parsed = INBOUND.validate_json(data)
    except ValidationError as exc:
        kind = (
            DeadLetterKind.INVALID_JSON
            if any(e["type"] == "json_invalid" for e in exc.errors())
            else DeadLetterKind.INVALID_PAYLOAD
        )
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        return Rejection(kind, f"{where}: {first['msg']}", _errors(exc))
    if isinstance(parsed, RunStep):
        return parsed
    if isinstance(parsed, RunStepEvent):
        implied = EVENT_STATUS[parsed.event]
        if implied is not parsed.data.status:
            return Rejection(
                DeadLetterKind.ENVELOPE_MISMATCH,
                f"event {parsed.event} carries a step with status {parsed.data.status}",
            )
        return parsed.data
    if isinstance(parsed, RunStepDeltaEvent | RunStepDelta):
        return Ignored("thread.run.step.delta")
    raise AssertionError(f"unexpected inbound type {type(parsed)!r}")  # pragma: no cover
