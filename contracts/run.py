"""The OpenAI Assistants `thread.run` object: the run's own lifecycle, around its steps.

Only what the lifecycle reads is modelled (ids, status, timestamps, the tool calls a run
waits for, errors, usage, metadata, model); everything else a run carries (instructions,
tools, tool_resources, temperature, truncation_strategy...) is kept as extra fields, so no
producer's or API version's additions ever make a run undecodable.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from .limits import Timestamp, TrackedId
from .run_step import LastError, Metadata, Usage, _ApiModel

__all__ = [
    "RUN_TERMINAL_STATUSES",
    "IncompleteDetails",
    "RequiredAction",
    "RequiredToolCall",
    "Run",
    "RunStatus",
    "SubmitToolOutputs",
]


class RunStatus(StrEnum):
    """Where a run is in its lifecycle."""

    QUEUED = "queued"  # created, waiting for capacity
    IN_PROGRESS = "in_progress"  # the assistant is working (steps are created and run)
    REQUIRES_ACTION = "requires_action"  # waiting for the caller to submit tool outputs
    CANCELLING = "cancelling"  # cancel requested, not yet effective
    CANCELLED = "cancelled"  # cancelled; cancelled_at says when
    FAILED = "failed"  # failed; last_error says why, failed_at when
    COMPLETED = "completed"  # finished normally; completed_at says when
    INCOMPLETE = "incomplete"  # ended early (token limits); incomplete_details says why
    EXPIRED = "expired"  # tool outputs not submitted, or the run ran, past expires_at


RUN_TERMINAL_STATUSES: frozenset[RunStatus] = frozenset(
    {
        RunStatus.CANCELLED,
        RunStatus.FAILED,
        RunStatus.COMPLETED,
        RunStatus.INCOMPLETE,
        RunStatus.EXPIRED,
    }
)


class RequiredToolCall(_ApiModel):
    """A tool call the run waits for; its output is submitted under `id`."""

    id: str
    type: str  # "function" at OpenAI; other producers may add their own


class SubmitToolOutputs(_ApiModel):
    """The tool calls whose outputs the run needs to continue."""

    tool_calls: list[RequiredToolCall]


class RequiredAction(_ApiModel):
    """What a `requires_action` run waits for.

    `type` is "submit_tool_outputs" at OpenAI. Azure AI Agents' "submit_tool_approval" (an
    MCP call waiting for the caller's approval) names its calls the same way, under
    `submit_tool_approval` (recorded in azure-sdk-assets' azure-ai-agents MCP sessions). Any
    other type is kept as sent, with its body as an extra field.
    """

    type: str
    submit_tool_outputs: SubmitToolOutputs | None = None
    submit_tool_approval: SubmitToolOutputs | None = None


class IncompleteDetails(_ApiModel):
    """Why a run is `incomplete` (e.g. "max_completion_tokens", "max_prompt_tokens")."""

    reason: str | None = None


class Run(_ApiModel):
    """An Assistants run, as `GET /threads/{t}/runs/{r}` returns it and as the
    `thread.run.*` streaming events carry it."""

    id: TrackedId
    object: Literal["thread.run"] = "thread.run"
    created_at: Timestamp
    thread_id: str
    assistant_id: str
    status: RunStatus
    required_action: RequiredAction | None = None
    last_error: LastError | None = None
    incomplete_details: IncompleteDetails | None = None
    started_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    cancelled_at: Timestamp | None = None
    failed_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    expired_at: Timestamp | None = None  # not an API field: a producer may add it
    usage: Usage | None = None  # only set once the run is terminal
    metadata: Metadata = None
    model: str | None = None  # the model the run uses (the API always sends it)

    @property
    def ended_at(self) -> int | None:
        """When the run reached its terminal status, or None (not terminal, or no timestamp).

        The API has no `expired_at` on runs: an expired run ended at its deadline,
        `expires_at` (an `expired_at` a producer adds is preferred). An incomplete run
        reports its end in `completed_at`, when it reports one.
        """
        status = self.status
        if status is RunStatus.COMPLETED or status is RunStatus.INCOMPLETE:
            return self.completed_at
        if status is RunStatus.FAILED:
            return self.failed_at
        if status is RunStatus.CANCELLED:
            return self.cancelled_at
        if status is RunStatus.EXPIRED:
            return self.expired_at if self.expired_at is not None else self.expires_at
        return None

    @property
    def pending_tool_call_ids(self) -> tuple[str, ...]:
        """Ids of the tool calls whose outputs (or, for Azure's submit_tool_approval, whose
        approvals) the run waits for, in the API's order.

        Empty unless the run is `requires_action` with one of those two actions. The first id
        names the waiting round: a duplicate of it is not published again.
        """
        action = self.required_action
        if self.status is not RunStatus.REQUIRES_ACTION or action is None:
            return ()
        calls = action.submit_tool_outputs or action.submit_tool_approval
        if calls is None:
            return ()
        return tuple(call.id for call in calls.tool_calls)
