"""JSON Schema for every wire format, for producers and consumers outside Python."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .derived import DERIVED, DeadLetterError
from .queries import RunState, StepState
from .responses_events import RESPONSES_EVENT
from .run import Run
from .run_step import RunStep
from .stream_events import INBOUND, RunEvent, RunStepDelta, RunStepDeltaEvent, RunStepEvent

__all__ = ["json_schemas", "write_schemas"]


def json_schemas() -> dict[str, dict[str, Any]]:
    """Each wire format's JSON Schema (validation mode), by name."""
    return {
        "run_step": RunStep.model_json_schema(),
        "run_step_event": RunStepEvent.model_json_schema(),
        "run_step_delta": RunStepDelta.model_json_schema(),
        "run_step_delta_event": RunStepDeltaEvent.model_json_schema(),
        "run": Run.model_json_schema(),
        "run_event": RunEvent.model_json_schema(),
        "inbound": INBOUND.json_schema(),
        "derived_event": DERIVED.json_schema(),
        "dead_letter_error": DeadLetterError.model_json_schema(),
        "responses_event": RESPONSES_EVENT.json_schema(),
        "run_state": RunState.model_json_schema(),
        "step_state": StepState.model_json_schema(),
    }


def write_schemas(directory: Path) -> list[Path]:
    """Write `<name>.schema.json` for each schema into `directory`; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
