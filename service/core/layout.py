"""The run hash's layout: every field the Lua scripts and the read models use, declared once.

A run's tracked state lives in one Redis hash per run (`storage.keys.Keys.run`): each step's
state string under `@<step id>`, the run's own under `r`, and the run-wide fields below.
`storage.scripts` generates these names into the header every Lua script loads, and the read
models (`storage.reads`) take them from here, so no script or query spells a field itself.
"""

from __future__ import annotations

import json
import math
from enum import StrEnum

from service.core.lifecycle import RUNS, STEPS

__all__ = [
    "BY_RUN_MARK",
    "ENDED_FIELDS",
    "IN_PROGRESS",
    "SEP",
    "STEP_PREFIX",
    "TOOLS_PREFIX",
    "TOTALS",
    "RunField",
    "budget_member",
    "encode_prices",
    "stall_member",
    "step_field",
    "tools_field",
    "totals_cost",
]

STEP_PREFIX = "@"
"""A step's field in its run's hash is this prefix and the step's id."""

TOOLS_PREFIX = "T"
"""A step's tool calls (as its events list them) are field `T<step id>`, once known."""

BY_RUN_MARK = "*"
"""Leads a step's refused statuses (core.state) once its run's end ended it: its own end,
arriving later, is then stale."""

SEP = "|"
"""Separates the fields of a state string (`core.state`): its status code comes first."""


class RunField(StrEnum):
    """The run-wide fields of a run's hash."""

    STATE = "r"  # the run's own state string (core.state.encode_run_state)
    THREAD = "t"  # the thread (or conversation) id the run was first seen with
    ASSISTANT = "a"  # the assistant (or prompt) id the run was first seen with
    LIVE = "n"  # subjects in progress (steps, and the run itself): 0 lets the hash expire
    ROUNDS = "ra"  # requires_action rounds already published: their keys, comma-separated
    PROMPT = "prompt_tokens"  # token totals over the steps counted (or the response's own)
    COMPLETION = "completion_tokens"
    TOTAL = "total_tokens"
    COUNTED = "steps_counted"  # steps whose usage the totals include
    MODEL = "m"  # the run's model, as JSON (a string), once a payload named it
    # Its prices, nano-dollars per token, and the price table's model that matched (JSON):
    # 'input,cached_input,output,"<model>"' (one field: every field read costs a scan).
    PRICES = "pv"
    STARTED = "ns"  # steps started (for the steps budget)
    EXCEEDED = "bx"  # budgets passed (their limits, comma-separated): each published once
    # The cost fields run.usage of the run's own totals reported ('"cost_usd":...,
    # "priced_model":...': a response's usage, priced with its details); absent while the
    # totals are its steps' sums, which the read models price at PRICES as the script does.
    COST = "uc"


TOTALS = (RunField.PROMPT, RunField.COMPLETION, RunField.TOTAL, RunField.COUNTED)
"""The usage totals, in the order run.usage and the read models report them."""

ENDED_FIELDS: dict[str, str] = {
    status: "k" + STEPS.codes[status]
    for status in ("completed", "failed", "cancelled", "expired", "incomplete")
}
"""Terminal step status -> the field counting the run's steps that ended with it, in the
order `contracts.derived.StepCounts` lists them."""

IN_PROGRESS = STEPS.codes["in_progress"]
"""The code a step's state string starts with while it can stall (runs use the same code)."""
assert RUNS.codes["in_progress"] == IN_PROGRESS


def budget_member(source: str, run_id: str) -> str:
    """A run's member in the seconds-budget index: its dialect's first letter and its id
    (the commit script builds the same)."""
    return f"{source[0]}:{run_id}"


def tools_field(step_id: str) -> str:
    """A step's tool calls' field in its run's hash."""
    return TOOLS_PREFIX + step_id


def encode_prices(input_: float, cached_input: float, output: float, priced_model: str) -> str:
    """A run's prices as `RunField.PRICES` keeps them."""
    return f"{input_!r},{cached_input!r},{output!r},{json.dumps(priced_model)}"


def totals_cost(prices: str, prompt_tokens: float, completion_tokens: float) -> tuple[int, str]:
    """Token totals priced at a run's stored prices (`RunField.PRICES`): nano-dollars and the
    price table's model, as the commit script prices run.usage (totals do not say which
    input was cached, so all input is priced as input)."""
    input_price, _, output_price, priced = prices.split(",", 3)
    nano = float(input_price) * prompt_tokens + float(output_price) * completion_tokens
    return math.floor(nano + 0.5), json.loads(priced)


def step_field(step_id: str) -> str:
    """A step's field in its run's hash."""
    return STEP_PREFIX + step_id


def stall_member(run_id: str, step_id: str) -> str:
    """A step's member in the stall index: its run id (length-prefixed) and its id. The
    commit script builds the same (`stall_member` in the generated header)."""
    return f"{len(run_id)}:{run_id}{step_id}"
