"""Wire contracts of runsteps: pydantic models and enums only, no I/O."""

from __future__ import annotations

from .derived import (
    DERIVED,
    AnyDerived,
    DeadLetterError,
    DeadLetterKind,
    DerivedEvent,
    DerivedType,
    RunUsage,
    StepFinished,
    StepStalled,
    StepStarted,
    TransitionRejected,
    event_id_for,
)
from .partitioning import partition_for, partition_stream
from .run_step import (
    TERMINAL_STATUSES,
    LastError,
    LastErrorCode,
    RunStep,
    StepDetails,
    StepStatus,
    StepType,
    ToolCall,
    Usage,
)
from .schema import json_schemas, write_schemas
from .stream_events import (
    EVENT_STATUS,
    INBOUND,
    Inbound,
    RunStepDelta,
    RunStepDeltaEvent,
    RunStepEvent,
    StepEventName,
)

__all__ = [
    "DERIVED",
    "EVENT_STATUS",
    "INBOUND",
    "TERMINAL_STATUSES",
    "AnyDerived",
    "DeadLetterError",
    "DeadLetterKind",
    "DerivedEvent",
    "DerivedType",
    "Inbound",
    "LastError",
    "LastErrorCode",
    "RunStep",
    "RunStepDelta",
    "RunStepDeltaEvent",
    "RunStepEvent",
    "RunUsage",
    "StepDetails",
    "StepEventName",
    "StepFinished",
    "StepStalled",
    "StepStarted",
    "StepStatus",
    "StepType",
    "ToolCall",
    "TransitionRejected",
    "Usage",
    "event_id_for",
    "json_schemas",
    "partition_for",
    "partition_stream",
    "write_schemas",
]
