"""Bounds on what the tracker stores, sums and serves: ids, timestamps and token counts.

Each bound exists because a value past it could not be tracked faithfully, and a value that
can only fail because of its bytes must be refused when the entry is decoded:

* ids of runs and steps (Assistants run, step; Responses response, output item) are path
  segments of the query API (`/runs/{run_id}/steps/{step_id}`): non-empty, at most
  `MAX_ID_CHARS` printable characters (a space is one: URL-encoded, it is addressable),
  no '/'. Real ids look like
  `step_abc123`, `run_...`, `resp_...`, `msg_...`, `fc_...`.
* timestamps are unix seconds from 0 to `MAX_EXACT` (2**53-1, the largest integer a double
  holds exactly): durations are differences of two of them, and the commit script's
  numbers are doubles. From `MS_FROM` (10**11) up a time is read as milliseconds and
  floored to seconds: 10**11 seconds is the year 5138, 10**11 milliseconds 1973, and
  Assistants-compatible servers such as astra-assistants-api send milliseconds (some
  fields only: its file_search steps end in seconds). Read as seconds, their durations
  came out 1000 times too long, or negative.
* token counts are at most `MAX_TOKENS` = (2**53-1) // 2**20: the commit script sums a
  run's step counts as doubles, exact up to 2**53-1, so the totals are exact for any run of
  up to 2**20 (1,048,576) counted steps. (No model's context comes near 2**33 tokens.)
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from pydantic import AfterValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

__all__ = [
    "MAX_EXACT",
    "MAX_ID_CHARS",
    "MAX_TOKENS",
    "MS_FROM",
    "NumericTimestamp",
    "Timestamp",
    "TokenCount",
    "TrackedId",
    "id_fault",
]

MAX_EXACT = 2**53 - 1
"""The largest integer a double (the commit script's number) represents exactly."""

MAX_TOKENS = MAX_EXACT >> 20
"""The largest token count of one step or response: 2**20 of them still sum exactly."""

MAX_ID_CHARS = 256
"""The longest run, step, response or item id."""

_Time = TypeVar("_Time", int, float)

MS_FROM = 10**11
"""The smallest timestamp read as milliseconds (see the module's docstring)."""


def id_fault(value: str) -> str | None:
    """Why `value` cannot be a tracked id (beyond its length), or None if it can."""
    if "/" in value:
        return "contains '/'"
    if not value.isprintable():
        return "contains control or other non-printable characters"
    return None


def _check_id(value: str) -> str:
    fault = id_fault(value)
    if fault is not None:
        raise PydanticCustomError(
            "tracked_id_invalid",
            "the id {fault}: the query API (/runs/<run_id>/steps/<step_id>) could not address it",
            {"fault": fault},
        )
    return value


TrackedId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ID_CHARS,
        json_schema_extra={"pattern": r"^[^/\x00-\x1F\x7F]+$"},  # no '/', no control characters
    ),
    AfterValidator(_check_id),
]
"""The id of a tracked run or step: a path segment of the query API."""


def _check_time(value: _Time) -> _Time:
    if not 0 <= value <= MAX_EXACT:  # NaN included
        raise PydanticCustomError(
            "timestamp_out_of_range",
            "a timestamp must be from 0 to {limit} (2**53-1, exact as a double)",
            {"limit": MAX_EXACT},
        )
    return value // 1000 if value >= MS_FROM else value  # milliseconds: floored to seconds


def _check_tokens(value: int) -> int:
    if value > MAX_TOKENS:
        raise PydanticCustomError(
            "token_count_too_large",
            "a token count must be at most {limit} ((2**53-1) >> 20: a run's totals "
            "stay exact for up to 2**20 steps)",
            {"limit": MAX_TOKENS},
        )
    return value


_TIME_SCHEMA = {"minimum": 0, "maximum": MAX_EXACT}

Timestamp = Annotated[int, AfterValidator(_check_time), Field(json_schema_extra=_TIME_SCHEMA)]
"""Unix seconds, exact as a double; from `MS_FROM` up, milliseconds (floored to seconds)."""

NumericTimestamp = Annotated[
    int | float,
    AfterValidator(_check_time),
    WithJsonSchema({"type": "number", **_TIME_SCHEMA}),  # one type: ajv's strict mode asks it
]
"""Unix seconds, integral or not (the Responses API sends either); from `MS_FROM` up,
milliseconds (floored to seconds)."""

TokenCount = Annotated[
    int, Field(ge=0, json_schema_extra={"maximum": MAX_TOKENS}), AfterValidator(_check_tokens)
]
"""A token count: up to 2**20 of them sum exactly as doubles."""
