"""The tracked state of a step or a run, as one short string in its run's hash.

A step's state is its field of its run's hash, the run's own is field `r` (core.layout). Both
are one string of '|'-joined fields, the status code first (the commit script reads only
that and, for steps, the refused statuses after it). Every byte is paid once per tracked
step, and a value over 64 bytes would turn its whole run's hash from a compact listpack into
a table, hence one-letter codes for the common values and the end time kept as seconds
after the creation time.
"""

from __future__ import annotations

from collections.abc import Mapping

from service.core.layout import BY_RUN_MARK, SEP
from service.core.lifecycle import RUNS, STEPS

__all__ = [
    "RUN_STATE_FIELDS",
    "STATE_FIELDS",
    "STEP_TYPE_CODES",
    "decode_run_state",
    "decode_state",
    "encode_run_state",
    "encode_state",
    "parse_number",
]

STATE_FIELDS = ("s", "x", "c", "y", "d", "up", "uc", "ut", "e")
"""A step's state: status, refused terminal statuses, created_at, type, ended_at (seconds
after created_at), prompt, completion and total tokens (total left out when it is their
sum), last error code. The type also tells the dialect: an Assistants step's is always a
one-letter code, a Responses item's never is (a one-letter item type gets a '=')."""

ASSISTANTS, RESPONSES = "assistants", "responses"
"""The dialects, as `decode_state` names them (contracts.derived.Source's values)."""

RUN_STATE_FIELDS = ("s", "x", "c", "d")
"""A run's state: status, refused terminal statuses, created_at, ended_at (seconds after
created_at)."""

STEP_TYPE_CODES = {"message_creation": "m", "tool_calls": "t", "activities": "a"}
"""An Assistants step type -> its one-letter code in a state string."""
_STEP_TYPES = STEP_TYPE_CODES
_ERRORS = {"server_error": "s", "rate_limit_exceeded": "r"}


def _inverse(codes: Mapping[str, str]) -> dict[str, str]:
    return {code: name for name, code in codes.items()}


_STEP_STATUS, _RUN_STATUS = STEPS.codes, RUNS.codes
_NAMES = {
    "s": _inverse(_STEP_STATUS),
    "x": _inverse(_STEP_STATUS),
    "y": _inverse(_STEP_TYPES),
    "e": _inverse(_ERRORS),
}


def _open(value: str, codes: Mapping[str, str]) -> str:
    """A value from an open set: its code when it has one, else itself, '|' made safe."""
    code = codes.get(value)
    if code is not None:
        return code
    value = value.replace(SEP, "/")
    # One character could be read as a code: such values, and '='-led ones, get a '='.
    return "=" + value if len(value) == 1 or value.startswith("=") else value


def _number(value: int | float | None) -> str:
    if type(value) is int:  # most times: no float round trip
        return str(value)
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def parse_number(value: str) -> int | float:
    """A number as `_number` wrote it."""
    return float(value) if "." in value or "e" in value else int(value)


def encode_state(
    status: str,
    created_at: int | float,
    step_type: str,
    source: str = ASSISTANTS,
    *,
    ended_at: int | float | None = None,
    usage: tuple[int, int, int] | None = None,
    error_code: str | None = None,
) -> str:
    """One step's state string; no refused statuses (only the commit script adds those)."""
    ended = "" if ended_at is None else _number(ended_at - created_at)
    prompt = completion = total = ""
    if usage is not None:
        prompt, completion = str(usage[0]), str(usage[1])
        total = "" if usage[2] == usage[0] + usage[1] else str(usage[2])
    error = "" if error_code is None else _open(error_code, _ERRORS)
    type_ = _open(step_type, _STEP_TYPES if source == ASSISTANTS else {})
    created = _number(created_at)
    return SEP.join(
        (_STEP_STATUS[status], "", created, type_, ended, prompt, completion, total, error)
    )


def decode_state(raw: str) -> dict[str, str]:
    """The fields of a stored step state string (empty ones left out), values readable,
    and its dialect as "src" when it names a type."""
    values = raw.split(SEP, len(STATE_FIELDS) - 1)
    record: dict[str, str] = {}
    if len(values) > 3 and values[3]:
        record["src"] = ASSISTANTS if values[3] in _NAMES["y"] else RESPONSES
    for name, value in zip(STATE_FIELDS, values, strict=False):
        if not value:
            continue
        names = _NAMES.get(name)
        if name == "x":  # one code per refused status, no separator
            if value.startswith(BY_RUN_MARK):
                record["br"] = "1"  # ended by its run's end
            codes = value.removeprefix(BY_RUN_MARK)
            if codes:
                record[name] = ",".join(_NAMES["x"][v] for v in codes)
        elif value.startswith("="):
            record[name] = value[1:]
        elif names is not None:
            record[name] = names.get(value, value)
        else:
            record[name] = value
    if "c" in record and "d" in record:
        record["d"] = _number(parse_number(record["c"]) + parse_number(record["d"]))
    if "up" in record and "uc" in record and "ut" not in record:
        record["ut"] = str(int(record["up"]) + int(record["uc"]))
    return record


def encode_run_state(
    status: str, created_at: int | float | None, ended_at: int | float | None = None
) -> str:
    """A run's state string."""
    ended = ""
    if ended_at is not None and created_at is not None:
        ended = _number(ended_at - created_at)
    return SEP.join((_RUN_STATUS[status], "", _number(created_at), ended))


def decode_run_state(raw: str) -> dict[str, str]:
    """The fields of a stored run state string (empty ones left out), values readable."""
    values = dict(zip(RUN_STATE_FIELDS, raw.split(SEP, 3), strict=False))
    record = {k: v for k, v in values.items() if v}
    names = _inverse(_RUN_STATUS)
    if "s" in record:
        record["s"] = names.get(record["s"], record["s"])
    if "x" in record:
        record["x"] = ",".join(names[v] for v in record["x"])
    if "c" in record and "d" in record:
        record["d"] = _number(parse_number(record["c"]) + parse_number(record["d"]))
    return record
