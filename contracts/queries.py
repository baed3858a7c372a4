"""What the query API (`GET /runs/...`) and `runsteps inspect` answer: typed JSON."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

from .derived import BudgetLimit, Source, ToolCall

__all__ = ["RunState", "StepState", "TokenTotals", "TokenUsage"]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenUsage(_Answer):
    """A step's tokens, as reported with its terminal status."""

    prompt_tokens: NonNegativeInt
    completion_tokens: NonNegativeInt
    total_tokens: NonNegativeInt


class TokenTotals(TokenUsage):
    """A run's token totals over the steps counted so far."""

    steps_counted: NonNegativeInt


class StepState(_Answer):
    """One step's tracked state."""

    step_id: str
    run_id: str
    thread_id: str | None
    assistant_id: str | None
    status: str = Field(description="in_progress or a terminal status")
    step_type: str | None
    source: Source | None = Field(
        description="the step's dialect: an Assistants run step or a Responses output item"
    )
    created_at: int | float | None
    ended_at: int | float | None = Field(description="null while in progress or unknown")
    duration_s: int | float | None
    usage: TokenUsage | None
    last_error_code: str | None
    rejected: list[str] = Field(description="terminal statuses refused after the first")
    tools: list[ToolCall] = Field(description="the step's tool calls, as last known")


class RunState(_Answer):
    """A run's tracked state and one page of its steps."""

    run_id: str
    thread_id: str | None
    assistant_id: str | None
    status: str | None = Field(description="the run's own status; null if never reported")
    created_at: int | float | None
    ended_at: int | float | None
    duration_s: int | float | None
    usage: TokenTotals
    model: str | None = Field(description="the run's model, once a payload named it")
    cost_usd: float | None = Field(
        description="the cost the run's last run.usage reported: the usage totals at the "
        "run's model's prices (null: unpriced)"
    )
    priced_model: str | None
    budgets_exceeded: list[BudgetLimit] = Field(description="budgets the run has passed")
    steps_in_progress: NonNegativeInt = Field(description="steps in progress (and the run)")
    steps_ended: dict[str, NonNegativeInt] = Field(description="steps ended, by status")
    steps: list[StepState] = Field(description="one page of steps, in no particular order")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: end")
