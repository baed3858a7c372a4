"""The OpenAI Assistants `thread.run.step` object, field for field as the API names it.

Every model allows unknown fields: a newer API version adding one must never make a step
undecodable, and the extras survive a round trip. What real producers send beyond the OpenAI
reference is tolerated where the lifecycle does not read it: tool calls of other types (Azure
AI Agents' bing_grounding, azure_ai_search, openapi, mcp..., v1's retrieval), error codes
outside the documented ones, Azure AI Agents' `activities` steps (an MCP server's tool list),
and PHP's `[]` for an empty map. What the lifecycle reads (ids,
status, timestamps, usage, metadata limits) stays strict.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from .dispatch import Dispatch, has, has_string
from .limits import Timestamp, TokenCount, TrackedId

__all__ = [
    "TERMINAL_STATUSES",
    "ActivitiesDetails",
    "Activity",
    "CodeInterpreterToolCall",
    "FileSearchToolCall",
    "FunctionToolCall",
    "GenericToolCall",
    "LastError",
    "LastErrorCode",
    "MessageCreationDetails",
    "Metadata",
    "RunStep",
    "StepDetails",
    "StepStatus",
    "StepType",
    "ToolCall",
    "ToolCallsDetails",
    "Usage",
]

METADATA_MAX_KEYS = 16
METADATA_MAX_KEY_CHARS = 64
METADATA_MAX_VALUE_CHARS = 512


class StepStatus(StrEnum):
    """Where a run step is in its lifecycle."""

    IN_PROGRESS = "in_progress"  # the only non-terminal status
    CANCELLED = "cancelled"  # the run was cancelled while the step ran
    FAILED = "failed"  # the step failed; last_error says why
    COMPLETED = "completed"  # the step finished normally
    EXPIRED = "expired"  # the run expired (e.g. tool outputs not submitted in time)
    INCOMPLETE = "incomplete"  # the run ended early (e.g. token limit) with the step unfinished


TERMINAL_STATUSES: frozenset[StepStatus] = frozenset(StepStatus) - {StepStatus.IN_PROGRESS}


class StepType(StrEnum):
    """What a run step does."""

    MESSAGE_CREATION = "message_creation"  # the assistant wrote a message
    TOOL_CALLS = "tool_calls"  # the assistant called one or more tools
    # Azure AI Agents: the service did something on its own (e.g. listed an MCP server's
    # tools) before the model ran; recorded in azure-sdk-assets' azure-ai-agents sessions.
    ACTIVITIES = "activities"


class LastErrorCode(StrEnum):
    """The error codes OpenAI documents for a failed step (a run may also fail with
    "invalid_prompt").

    Documentation only: `LastError.code` keeps any string, because compatible servers send
    others (Azure AI Agents: "tool_user_error", ...) and a failure must still be tracked.
    """

    SERVER_ERROR = "server_error"  # failure on the provider's side
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"  # the organisation hit a rate limit


class _ApiModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class LastError(_ApiModel):
    """The error a failed step (or run) ended with; `code` is usually a `LastErrorCode`."""

    code: str
    message: str


class Usage(_ApiModel):
    """Tokens a step used; only set once the step is terminal (each count <= MAX_TOKENS)."""

    prompt_tokens: TokenCount
    completion_tokens: TokenCount
    total_tokens: TokenCount


class MessageCreation(_ApiModel):
    """The message a message_creation step wrote."""

    message_id: str


class MessageCreationDetails(_ApiModel):
    """step_details of a message_creation step."""

    type: Literal["message_creation"]
    message_creation: MessageCreation


class LogsOutput(_ApiModel):
    """Text the code interpreter printed."""

    type: Literal["logs"]
    logs: str


class ImageFile(_ApiModel):
    """A file the code interpreter produced."""

    file_id: str


class ImageOutput(_ApiModel):
    """An image the code interpreter produced."""

    type: Literal["image"]
    image: ImageFile


CodeInterpreterOutput = Annotated[LogsOutput | ImageOutput, Field(discriminator="type")]


class CodeInterpreter(_ApiModel):
    """The code run and what it produced."""

    input: str
    outputs: list[CodeInterpreterOutput]


class CodeInterpreterToolCall(_ApiModel):
    """A code_interpreter tool call."""

    id: str
    type: Literal["code_interpreter"]
    code_interpreter: CodeInterpreter


class RankingOptions(_ApiModel):
    """How file_search ranked its results."""

    ranker: str
    score_threshold: float


class FileSearchContent(_ApiModel):
    """A piece of a matched file's content."""

    type: Literal["text"]
    text: str


class FileSearchResult(_ApiModel):
    """One file that file_search matched."""

    file_id: str
    file_name: str
    score: float
    content: list[FileSearchContent] | None = None


class FileSearch(_ApiModel):
    """file_search options and results (results only when explicitly requested)."""

    ranking_options: RankingOptions | None = None
    results: list[FileSearchResult] | None = None


def _php_empty_map(value: Any) -> Any:
    # PHP's json_encode writes an empty associative array as `[]`: read it as `{}`.
    return {} if isinstance(value, list) and not value else value


_PHP_EMPTY_MAP: dict[str, Any] = {"type": "array", "maxItems": 0}
"""PHP's `[]` for an empty map, in JSON Schema: where `_php_empty_map` reads it as `{}`."""


class _OrPhpEmptyMap:
    """The JSON Schema side of `_php_empty_map`: the map's schema, or PHP's `[]`."""

    @staticmethod
    def __get_pydantic_json_schema__(
        schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"anyOf": [handler(schema), _PHP_EMPTY_MAP]}


class FileSearchToolCall(_ApiModel):
    """A file_search tool call (`"file_search": []`, PHP's encoding of `{}`, is accepted)."""

    id: str
    type: Literal["file_search"]
    file_search: Annotated[FileSearch, BeforeValidator(_php_empty_map), _OrPhpEmptyMap()]


class FunctionCall(_ApiModel):
    """The function called; output stays null until tool outputs are submitted."""

    name: str
    arguments: str
    output: str | None = None


class FunctionToolCall(_ApiModel):
    """A function tool call."""

    id: str
    type: Literal["function"]
    function: FunctionCall


class GenericToolCall(_ApiModel):
    """A tool call of a type this contract does not model (Azure AI Agents' bing_grounding,
    azure_ai_search, openapi, sharepoint_grounding, fabric_dataagent, mcp...; Assistants v1's
    retrieval; any newer one). Kept as sent: `type` names it and its fields stay as extras."""

    id: str
    type: str


_KNOWN_TOOL_CALLS = frozenset({"code_interpreter", "file_search", "function"})


def _tool_call_kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if not isinstance(kind, str):
        return None
    return kind if kind in _KNOWN_TOOL_CALLS else "other"


# `_tool_call_kind` as JSON Schema, rule for rule, first match wins (contracts.dispatch).
_TOOL_CALL_KIND = Dispatch(
    _tool_call_kind,
    rules=(
        *((has("type", kind), kind) for kind in sorted(_KNOWN_TOOL_CALLS)),
        (has_string("type"), "other"),
    ),
    otherwise=has_string("type"),
)

ToolCall = Annotated[
    Annotated[CodeInterpreterToolCall, Tag("code_interpreter")]
    | Annotated[FileSearchToolCall, Tag("file_search")]
    | Annotated[FunctionToolCall, Tag("function")]
    | Annotated[GenericToolCall, Tag("other")],
    Discriminator(
        _TOOL_CALL_KIND,
        custom_error_type="tool_call_type_missing",
        custom_error_message="a tool call needs a string 'type'",
    ),
]
"""One tool call: the three OpenAI types are validated in full, any other type generically."""


ToolRef = tuple[str, str, str | None]
"""A tool call as derived events name it: (id, type, name)."""


def tool_ref(call: CodeInterpreterToolCall | FileSearchToolCall | FunctionToolCall |
             GenericToolCall) -> ToolRef:  # fmt: skip
    """A tool call's (id, type, name): a function's name, or the `name` any other call
    carries (an MCP call's tool); None when it names none."""
    if isinstance(call, FunctionToolCall):
        return call.id, call.type, call.function.name
    name = (call.model_extra or {}).get("name")
    return call.id, call.type, name if isinstance(name, str) else None


class ToolCallsDetails(_ApiModel):
    """step_details of a tool_calls step."""

    type: Literal["tool_calls"]
    tool_calls: list[ToolCall]


class Activity(_ApiModel):
    """One entry of an activities step (Azure AI Agents' `mcp_list_tools`, ...): kept as sent,
    `type` names it and its fields (a server label, a tool list...) stay as extras."""

    id: str
    type: str


class ActivitiesDetails(_ApiModel):
    """step_details of an activities step (Azure AI Agents); empty while the step runs."""

    type: Literal["activities"]
    activities: list[Activity]


StepDetails = Annotated[
    MessageCreationDetails | ToolCallsDetails | ActivitiesDetails, Field(discriminator="type")
]


def _preview(text: str) -> str:
    # An error message must not copy a huge key into logs and the DLQ.
    return text if len(text) <= 20 else text[:20] + "…"


def _check_metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > METADATA_MAX_KEYS:
        raise PydanticCustomError(
            "metadata_too_many_keys",
            "metadata has {count} keys; at most {limit} are allowed",
            {"count": len(value), "limit": METADATA_MAX_KEYS},
        )
    for key, item in value.items():
        if len(key) > METADATA_MAX_KEY_CHARS:
            raise PydanticCustomError(
                "metadata_key_too_long",
                "metadata key '{key}' is {length} characters; at most {limit}",
                {"key": _preview(key), "length": len(key), "limit": METADATA_MAX_KEY_CHARS},
            )
        if len(item) > METADATA_MAX_VALUE_CHARS:
            raise PydanticCustomError(
                "metadata_value_too_long",
                "metadata value of key '{key}' is {length} characters; at most {limit}",
                {"key": _preview(key), "length": len(item), "limit": METADATA_MAX_VALUE_CHARS},
            )
    return value


_METADATA_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "object",
            "maxProperties": METADATA_MAX_KEYS,
            "propertyNames": {"maxLength": METADATA_MAX_KEY_CHARS},
            "additionalProperties": {"type": "string", "maxLength": METADATA_MAX_VALUE_CHARS},
        },
        _PHP_EMPTY_MAP,
    ]
}

Metadata = (
    Annotated[
        dict[str, str],
        BeforeValidator(_php_empty_map),
        AfterValidator(_check_metadata),
        WithJsonSchema(_METADATA_SCHEMA),
    ]
    | None
)


class RunStep(_ApiModel):
    """One step of an Assistants run, as `GET /threads/{t}/runs/{r}/steps/{s}` returns it."""

    id: TrackedId
    object: Literal["thread.run.step"] = "thread.run.step"
    created_at: Timestamp
    assistant_id: str
    thread_id: str
    run_id: TrackedId
    type: StepType
    status: StepStatus
    step_details: StepDetails
    last_error: LastError | None = None
    expired_at: Timestamp | None = None
    cancelled_at: Timestamp | None = None
    failed_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    expires_at: Timestamp | None = None  # the run's deadline, which the API repeats on its steps
    metadata: Metadata = None
    usage: Usage | None = None

    @field_validator("step_details")
    @classmethod
    def _details_match_type(
        cls,
        details: MessageCreationDetails | ToolCallsDetails | ActivitiesDetails,
        info: ValidationInfo,
    ) -> MessageCreationDetails | ToolCallsDetails | ActivitiesDetails:
        # `type` is validated first (field order); if it failed it is absent and reported.
        declared = info.data.get("type")
        if declared is not None and details.type != declared:
            raise PydanticCustomError(
                "step_details_type_mismatch",
                "step_details.type is '{details}' but the step's type is '{declared}'",
                {"details": details.type, "declared": str(declared)},
            )
        return details

    @property
    def tools(self) -> tuple[ToolRef, ...]:
        """(id, type, name) of each tool call the step holds: the type as sent, the name of a
        function or of any other call that names itself (an MCP tool); () for other steps."""
        details = self.step_details
        if not isinstance(details, ToolCallsDetails):
            return ()
        return tuple(tool_ref(call) for call in details.tool_calls)

    @property
    def terminal_at(self) -> int | None:
        """When the step reached its terminal status, or None (in progress, incomplete).

        An expired step without `expired_at` (the API often leaves it null) expired at its
        run's deadline, `expires_at`.
        """
        return {
            StepStatus.COMPLETED: self.completed_at,
            StepStatus.FAILED: self.failed_at,
            StepStatus.CANCELLED: self.cancelled_at,
            StepStatus.EXPIRED: self.expired_at if self.expired_at is not None else self.expires_at,
        }.get(self.status)
