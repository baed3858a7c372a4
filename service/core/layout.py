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
from typing import TYPE_CHECKING

from service.core.lifecycle import RUNS, STEPS

if TYPE_CHECKING:
    from service.core.reported import ToolRef

__all__ = [
    "BY_RUN_MARK",
    "ENDED_FIELDS",
    "IN_PROGRESS",
    "SEP",
    "STEP_PREFIX",
    "TOOLS_PREFIX",
    "TOOL_FIELD_SEP",
    "TOOL_SEP",
    "TOTALS",
    "RunField",
    "budget_member",
    "decode_tools",
    "encode_prices",
    "encode_tools",
    "stall_member",
    "step_field",
    "tools_field",
    "totals_cost",
]

STEP_PREFIX = "@"
"""A step's field in its run's hash is this prefix and the step's id."""

TOOLS_PREFIX = "T"
"""A step's tool calls are field `T<step id>` (`encode_tools`), once any entry lists one."""

TOOL_SEP, TOOL_FIELD_SEP = "\x1e", "\x1f"
"""Between a step's kept tool calls, and between a call's type, name and id (`encode_tools`)."""
_FS = TOOL_FIELD_SEP

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
    # "priced_model":...': a response's usage, priced with its details); absent or empty
    # while the totals are its steps' sums, which the read models price at PRICES as the
    # script does.
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


def encode_tools(step_id: str, tools: tuple[ToolRef, ...]) -> str | None:
    """A step's tool calls as its run's hash keeps them: per call its type, name ('' for
    none) and id ('' when it is the step's own, as a Responses item's is), joined by
    TOOL_FIELD_SEP, the calls by TOOL_SEP. One call of a usual name fits Redis's default
    `hash-max-listpack-value` (64 bytes), so its run's hash stays a compact listpack (the
    events' JSON of one call is 85 bytes). None for calls this cannot say exactly (an empty
    name or id, a separator in a value, a type led by '['), and for calls with a '/' or a
    DEL, which the commit script's JSON encoder (cjson) would escape where the events do
    not: those are kept as the events' JSON (core.ops), which readers tell by its '['. The
    commit script reads both back (`tools_json`), byte for byte as the events list them."""
    parts = []
    for id_, type_, name in tools:
        kept = f"{type_}{_FS}{name or ''}{_FS}{'' if id_ == step_id else id_}"
        # A separator in a value, or what cjson (the commit script) escapes and orjson not.
        unsaid = TOOL_SEP in kept or "/" in kept or "\x7f" in kept
        if unsaid or not id_ or name == "" or kept.count(_FS) != 2:
            return None
        parts.append(kept)
    kept = TOOL_SEP.join(parts)
    return None if kept.startswith("[") else kept


def decode_tools(step_id: str, kept: str) -> list[ToolRef]:
    """A step's tool calls as `encode_tools` kept them, or as the events' JSON."""
    if not kept:
        return []
    if kept.startswith("["):
        return [(c["id"], c["type"], c["name"]) for c in json.loads(kept)]
    calls: list[ToolRef] = []
    for call in kept.split(TOOL_SEP):
        type_, name, id_ = call.split(TOOL_FIELD_SEP)
        calls.append((id_ or step_id, type_, name or None))
    return calls


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
