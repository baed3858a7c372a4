"""The fast path stays inside the contract under hostile mutations of recorded traffic.

Every recorded entry of tests/data (both dialects) is mutated at random places: values
replaced by wrong types, huge or negative numbers, floats, nulls, odd strings and nested
junk; fields dropped; junk fields added; bytes no JSON encoder writes spliced in. Whenever
the fast path accepts the result, the pydantic contract accepts it too and reads the same
step (test_fastpath._assert_subset).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.core.fastpath import decode_fast

from .test_fastpath import _assert_subset

DATA = Path(__file__).parents[1] / "data"
RECORDED = [
    json.loads(line)
    for path in sorted(DATA.glob("*/*.jsonl"))
    for line in path.read_bytes().splitlines()
    if line.strip()
]
STEPS = [v for v in RECORDED if decode_fast(json.dumps(v).encode()) is not None]

Path_ = tuple[str | int, ...]

HOSTILE_SCALARS: list[Any] = [
    None,
    True,
    0,
    -1,
    1.0,
    1.5,
    -0.0,
    1e300,
    2**31,
    2**33,
    2**53 - 1,
    2**53,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    "",
    " ",
    "a/b",
    "step_x\n",
    "\u0000",
    "\u2028",
    "\ufeffstep",
    "é" * 300,
    "x" * 257,
    "thread.run.step",
    "completed",
    "in_progress",
    "message_creation",
    "tool_calls",
    "1699063291",
    [],
    {},
    [[[[{"a": [None]}]]]],
    {"type": "message_creation"},
]
HOSTILE_BYTES = [
    b"\xff",  # never valid UTF-8
    b"\xc3",  # a truncated sequence
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xef\xbb\xbf",  # a BOM
    b"\x00",
    b"\x1f",
    b"\\ud800",
    b"\\",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e400",
    b"99999999999999999999999",
    b"01",
    b" x",
    b"]",
    b"}",
    b",",
    b'"',
]
_JUNK = st.recursive(
    st.sampled_from(HOSTILE_SCALARS) | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(value: Any, at: Path_ = ()) -> list[Path_]:
    """Every place inside a JSON value (not the root itself)."""
    if not isinstance(value, dict | list):
        return []
    out: list[Path_] = []
    for key, child in value.items() if isinstance(value, dict) else enumerate(value):
        out.append((*at, key))
        out += _paths(child, (*at, key))
    return out


def _parent(value: Any, path: Path_) -> Any:
    for key in path[:-1]:
        value = value[key]
    return value


@st.composite
def _mutated(draw: st.DrawFn, steps_only: bool) -> bytes:
    bases = STEPS if steps_only else RECORDED
    body = copy.deepcopy(bases[draw(st.integers(0, len(bases) - 1))])
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(body)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _parent(body, path), path[-1]
        action = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        junk = copy.deepcopy(draw(_JUNK))  # mutated later on: never the shared constants
        if action == "replace":
            parent[key] = junk
        elif action == "drop":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = junk
        else:
            parent.append(junk)
    data = json.dumps(body, ensure_ascii=draw(st.booleans())).encode()
    if draw(st.booleans()):  # bytes no JSON encoder writes, spliced in anywhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(HOSTILE_BYTES)) + data[at:]
    return data


_SETTINGS = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))


def test_the_recorded_steps_take_the_fast_path() -> None:
    """The property below means something: recorded steps do reach the fast path."""
    assert len(STEPS) >= 30


@_SETTINGS
@given(data=_mutated(steps_only=True))
def test_mutated_recorded_steps_never_pass_the_fast_path_alone(data: bytes) -> None:
    """A mutated recorded step the fast path accepts is accepted and read alike by pydantic."""
    _assert_subset(data)


@_SETTINGS
@given(data=_mutated(steps_only=False))
def test_mutated_recorded_entries_never_pass_the_fast_path_alone(data: bytes) -> None:
    """The same over every recorded entry of both dialects (runs, deltas, Responses...)."""
    _assert_subset(data)
