"""The state strings: what is encoded is what queries decode."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from contracts.derived import Source
from service.core.layout import decode_tools, encode_tools
from service.core.lifecycle import RUNS, STEPS
from service.core.ops import step_op
from service.core.reported import ToolRef
from service.core.state import decode_run_state, decode_state, encode_run_state, encode_state
from tests.helpers import StepDouble

_TIME = st.integers(0, 2**40)
_TEXT = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=30)


@given(
    status=st.sampled_from(sorted(STEPS.codes)),
    created=_TIME,
    took=st.none() | st.integers(0, 10**6),
    step_type=st.sampled_from(["message_creation", "tool_calls", "activities"]) | _TEXT,
    usage=st.none()
    | st.tuples(st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**10)),
    error=st.none() | st.sampled_from(["server_error", "rate_limit_exceeded"]) | _TEXT,
)
def test_step_state_round_trip(
    status: str,
    created: int,
    took: int | None,
    step_type: str,
    usage: tuple[int, int, int] | None,
    error: str | None,
) -> None:
    """Every field comes back, open values (types, error codes) included."""
    ended = None if took is None else created + took
    raw = encode_state(status, created, step_type, ended_at=ended, usage=usage, error_code=error)
    assert raw[0] == STEPS.codes[status]  # the commit script reads the first character
    record = decode_state(raw)
    assert record["s"] == status
    assert record["c"] == str(created)
    assert record["y"] == step_type.replace("|", "/")
    assert record.get("d") == (None if ended is None else str(ended))
    if usage is not None:
        assert (int(record["up"]), int(record["uc"]), int(record["ut"])) == usage
    assert record.get("e") == (None if error is None else error.replace("|", "/"))


def test_common_step_state_is_short() -> None:
    """A finished step's state stays well under Redis's 64-byte listpack limit."""
    raw = encode_state(
        "completed", 1_764_000_000, "tool_calls", ended_at=1_764_000_030, usage=(1200, 345, 1545)
    )
    assert len(raw) < 40


@given(status=st.sampled_from(sorted(RUNS.codes)), created=_TIME, took=st.none() | _TIME)
def test_run_state_round_trip(status: str, created: int, took: int | None) -> None:
    """A run's status and times come back."""
    ended = None if took is None else created + took
    record = decode_run_state(encode_run_state(status, created, ended))
    assert record["s"] == status
    assert record.get("d") == (None if ended is None else str(ended))


def test_refused_statuses_decode() -> None:
    """Refused statuses, one code each as the commit script appends them, read as names."""
    assert decode_state("c|fx|1|m||||||")["x"] == "failed,cancelled"


_ANY = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)
_CALL = st.tuples(
    st.sampled_from(["call_1", "s1", "", "[", "\x1e", "a\x1fb"]) | _ANY,
    st.sampled_from(["function", "mcp", "[x", "", "\x1f"]) | _ANY,
    st.none() | st.sampled_from(["", "get_weather", "\x1e"]) | _ANY,
)


@given(step_id=st.sampled_from(["s1", "call_1", ""]), calls=st.lists(_CALL, max_size=4))
def test_kept_tool_calls_round_trip(step_id: str, calls: list[ToolRef]) -> None:
    """Whatever the ids, types and names (empty, separators, a leading '['), a step's
    calls as the worker has its run's hash keep them come back as they were listed."""
    step = StepDouble(step_id, "run_1", "in_progress", tools=tuple(calls))
    assert decode_tools(step_id, step_op(b"1-1", step, Source.ASSISTANTS, 0).tools) == calls


def test_one_usual_call_fits_a_compact_hash() -> None:
    """One call with an API id and a usual name is kept in at most 64 bytes (Redis's
    default hash-max-listpack-value); a Responses item's own id costs nothing."""
    call = ("call_" + "x" * 24, "function", "get_current_weather")
    kept = encode_tools("step_" + "y" * 24, (call,))
    assert kept is not None
    assert len(kept) <= 64
    item = "ws_" + "z" * 48
    assert encode_tools(item, ((item, "web_search", None),)) == "web_search\x1f\x1f"
