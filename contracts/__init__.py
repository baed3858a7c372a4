"""Wire contracts of runsteps: pydantic models and enums only, no I/O.

Inputs: the Assistants streaming protocol (`run_step`, `run`, `stream_events`) and the
Responses API's events (`responses`, `responses_events`); producer helpers (`producer`,
`responses_producer`). Outputs: derived events and dead letters (`derived`), query answers
(`queries`). The derived-event contract's version is `CONTRACT_VERSION`.
"""

from __future__ import annotations

from .derived import (
    CONTRACT_VERSION,
    DERIVED,
    AnyDerived,
    DeadLetterEntry,
    DeadLetterError,
    DeadLetterKind,
    DerivedEvent,
    DerivedType,
    RunEvent,
    RunFinished,
    RunRequiresAction,
    RunStarted,
    RunTransitionRejected,
    RunUsage,
    Source,
    StepFinished,
    StepStalled,
    StepStarted,
    TransitionRejected,
    event_id_for,
)
from .partitioning import partition_for, partition_stream
from .producer import entry_from_sdk_event, entry_from_sse
from .queries import RunState, StepState
from .responses import OutputItem, ResponseObject, ResponseStatus, item_phase
from .responses_events import RESPONSES_EVENT, classify_responses_entry
from .responses_producer import ResponsesForwarder, response_entry_data
from .run import Run, RunStatus
from .run_step import (
    TERMINAL_STATUSES,
    GenericToolCall,
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
    RUN_EVENT_STATUS,
    Inbound,
    RunStepDelta,
    RunStepDeltaEvent,
    RunStepEvent,
    StepEventName,
    StreamEventName,
    classify_entry,
)

__all__ = [
    "CONTRACT_VERSION",
    "DERIVED",
    "EVENT_STATUS",
    "INBOUND",
    "RESPONSES_EVENT",
    "RUN_EVENT_STATUS",
    "TERMINAL_STATUSES",
    "AnyDerived",
    "DeadLetterEntry",
    "DeadLetterError",
    "DeadLetterKind",
    "DerivedEvent",
    "DerivedType",
    "GenericToolCall",
    "Inbound",
    "LastError",
    "LastErrorCode",
    "OutputItem",
    "ResponseObject",
    "ResponseStatus",
    "ResponsesForwarder",
    "Run",
    "RunEvent",
    "RunFinished",
    "RunRequiresAction",
    "RunStarted",
    "RunState",
    "RunStatus",
    "RunStep",
    "RunStepDelta",
    "RunStepDeltaEvent",
    "RunStepEvent",
    "RunTransitionRejected",
    "RunUsage",
    "Source",
    "StepDetails",
    "StepEventName",
    "StepFinished",
    "StepStalled",
    "StepStarted",
    "StepState",
    "StepStatus",
    "StepType",
    "StreamEventName",
    "ToolCall",
    "TransitionRejected",
    "Usage",
    "classify_entry",
    "classify_responses_entry",
    "entry_from_sdk_event",
    "entry_from_sse",
    "event_id_for",
    "item_phase",
    "json_schemas",
    "partition_for",
    "partition_stream",
    "response_entry_data",
    "write_schemas",
]
